// Room archives: XEP-0313 Message Archive Management (v1.1) on the room's bare JID.
//  - §3.3.2 (archives_muc) the archive is exposed on the room JID; §3.5 (archives_id) and XEP-0359
//    §4: the broadcast message carries <stanza-id by=room/> with the archive UID, and a stanza-id a
//    client claimed for the room is removed first.
//  - §5.1.2 (MUC archives): groupchat messages with a <body/> are stored once, as the room
//    broadcast them (from room/nick); not subject changes (like Prosody's mod_muc_mam), not private
//    messages, not what the room rejected (no voice, rate, not an occupant: this runs after those
//    checks), not XEP-0334 no-store hints. Results are forwarded without 'to', with the sender's
//    real JID (muc#user <item jid/>) only for someone who may see real JIDs. Access: whoever may
//    enter the room now; members-only rooms their members; outcasts never.
//  - §4 queries with the user archive's parser (src/xmpp/mam.ts), §4.1.1 form discovery, §6 metadata.
//  - XEP-0045 §7.2.15 discussion history: a persistent room whose in-memory history is empty (after
//    a restart) refills it from the archive on the first join, so history survives restarts.
//  - Retention: the room archives' own age limit (ArchiveStore.purgeOwner per room, on an unref'd
//    timer) and a per-room cap; the archive goes with the room (destroyed or disposed).
import { randomBytes } from 'node:crypto';
import { clone, Element, parse } from 'ltx';
import { z } from 'zod';
import type { ModuleContext } from '../../core/module.js';
import { StanzaError, stanzaError } from '../../xmpp/errors.js';
import type { Jid } from '../../xmpp/jid.js';
import { NS_MAM, finElement, metadataElement, parseQuery, queryForm, resultMessage } from '../../xmpp/mam.js';
import { NS } from '../../xmpp/ns.js';
import { AFF_RANK, type Affiliation, type Room } from './room.js';

const NS_MAM_EXTENDED = 'urn:xmpp:mam:2#extended';
const NS_MUC_USER = 'http://jabber.org/protocol/muc#user';
const NS_HINTS = 'urn:xmpp:hints';
const NS_CLIENT = 'jabber:client';

export const mucArchiveOptions = z
  .object({
    enabled: z.boolean().default(true).describe('New rooms keep an archive (muc#roomconfig_enablearchiving) that occupants query with XEP-0313'),
    retentionDays: z.number().min(0).default(0).describe('Delete room messages older than this many days; 0 keeps them'),
    purgeIntervalSeconds: z.number().min(0.05).default(3600).describe('How often expired room messages are purged (when retentionDays > 0)'),
    maxPerRoom: z.number().int().min(0).default(10_000).describe('Per-room cap: beyond it the oldest messages are deleted; 0 = no cap'),
    defaultPageSize: z.number().int().min(1).default(50).describe('Page size of a room archive query without RSM <max/>'),
    maxPageSize: z.number().int().min(1).default(250).describe('Largest page a room archive query gets'),
  })
  .strict()
  .default({ enabled: true, retentionDays: 0, purgeIntervalSeconds: 3600, maxPerRoom: 10_000, defaultPageSize: 50, maxPageSize: 250 })
  .describe('Room archives (XEP-0313 on the room JID) and history across restarts');

export type MucArchiveOptions = z.infer<typeof mucArchiveOptions>;

export interface RoomArchiveHost {
  /** The affiliation that governs a real bare JID, and whether an access file holds it to the visitor role. */
  rightsOf(room: Room, bare: string): { aff: Affiliation; visitor: boolean };
  /** Every room the service holds (for the retention purge). */
  rooms(): Iterable<Room>;
}

/** XEP-0082 DateTime with milliseconds. */

function bodyText(m: Element): string | null {
  const bodies = m.getChildElements().filter((c) => c.name === 'body' && (c.attrs.xmlns === undefined || c.attrs.xmlns === NS_CLIENT));
  return bodies.length ? bodies.map((b) => b.getText()).join('\n') : null;
}

/** §5.1.2: a message with a body, unless the sender asked for it not to be stored (XEP-0334). */
function worthArchiving(m: Element): boolean {
  for (const c of m.getChildElements()) {
    if (c.attrs.xmlns === NS_HINTS && (c.name === 'no-store' || c.name === 'no-permanent-store')) return false;
  }
  return bodyText(m) !== null;
}

const withoutMucUser = (m: Element): void => {
  m.children = m.children.filter((c) => typeof c === 'string' || c.attrs.xmlns !== NS_MUC_USER);
};

export function roomArchive(ctx: Pick<ModuleContext, 'storage' | 'route' | 'log' | 'onUnload' | 'every'>, opts: MucArchiveOptions, host: RoomArchiveHost) {
  const store = ctx.storage.archive;
  const limits = { defaultPageSize: Math.min(opts.defaultPageSize, opts.maxPageSize), maxPageSize: opts.maxPageSize };
  /** Rooms whose history was already refilled (or found not to need it). */
  const hydrated = new WeakSet<Room>();

  const enabled = (room: Room): boolean => room.config.enableArchiving;

  /** §5.1.2: whoever may enter the room now, and its occupants. */
  function mayRead(room: Room, from: Jid): boolean {
    if (room.byJid.has(from.full)) return true;
    if (room.locked) return false;
    const r = host.rightsOf(room, from.bare);
    if (r.aff === 'outcast') return false;
    if (room.config.membersOnly && AFF_RANK[r.aff] < AFF_RANK.member && !r.visitor) return false;
    // Entering a password-protected room takes the password, which a query cannot carry.
    if (room.config.passwordProtected && AFF_RANK[r.aff] < AFF_RANK.member) return false;
    return true;
  }

  /** XEP-0045 §7.2.3/§7.2.4 rules for real JIDs, for someone who may not be in the room. */
  function seesJids(room: Room, from: Jid): boolean {
    if (room.config.whois === 'anyone') return true;
    const occ = room.byJid.get(from.full);
    if (occ) return room.seesJids(occ);
    return AFF_RANK[host.rightsOf(room, from.bare).aff] >= AFF_RANK.admin;
  }

  return {
    /**
     * Runs on a groupchat message the room accepted, before it is broadcast: removes a stanza-id a
     * client claimed for this room, then (when the room archives) stores a copy and adds the room's
     * stanza-id to `out`. A storage failure never loses the message: it goes out without a stanza-id.
     */
    async record(room: Room, sender: Jid, out: Element): Promise<void> {
      out.children = out.children.filter((c) => typeof c === 'string' || c.name !== 'stanza-id' || c.attrs.xmlns !== NS.STANZA_ID || c.attrs.by !== room.jid);
      if (!enabled(room) || !worthArchiving(out)) return;
      const id = randomBytes(12).toString('base64url');
      const copy = clone(out);
      delete copy.attrs.to;
      // §5.1.2: any <x/> the sender put there goes; the real JID is kept for those who may see it.
      withoutMucUser(copy);
      copy.c('stanza-id', { xmlns: NS.STANZA_ID, by: room.jid, id });
      copy.c('x', { xmlns: NS_MUC_USER }).c('item', { jid: sender.full });
      try {
        await store.append(
          room.jid,
          { id, withBare: room.jid, withFull: String(out.attrs.from), direction: 'in', stamp: Date.now(), stanza: copy.toString(), body: bodyText(out) },
          opts.maxPerRoom,
        );
      } catch (err) {
        ctx.log.error({ err, room: room.jid }, 'muc: archiving failed; message delivered without an archive copy');
        return;
      }
      out.c('stanza-id', { xmlns: NS.STANZA_ID, by: room.jid, id });
    },

    /**
     * XEP-0045 §7.2.15 after a restart: a persistent room's history is empty in memory, so the
     * last messages come from the archive (once per loaded room, before the first join's history).
     */
    async hydrate(room: Room, maxHistory: number): Promise<void> {
      if (hydrated.has(room)) return;
      hydrated.add(room);
      const n = Math.min(room.config.historyLength, maxHistory);
      if (!room.config.persistent || !enabled(room) || room.history.length > 0 || n <= 0) return;
      let page;
      try {
        page = await store.query(room.jid, { max: n, before: '' });
      } catch (err) {
        ctx.log.error({ err, room: room.jid }, 'muc: reading the room archive for history failed');
        return;
      }
      if (room.history.length > 0) return;
      for (const item of page?.items ?? []) {
        let m: Element;
        try {
          m = parse(item.stanza);
        } catch {
          continue;
        }
        if (m.name !== 'message') continue;
        withoutMucUser(m); // the stored real JID is not for joiners
        delete m.attrs.xmlns;
        room.history.push({ stanza: m, at: item.stamp, chars: String(m).length });
      }
    },

    /** Deletes a room's archive (the room was destroyed or went with its last occupant). */
    async clear(roomJid: string): Promise<void> {
      try {
        await store.clear(roomJid);
      } catch (err) {
        ctx.log.error({ err, room: roomJid }, 'muc: clearing the room archive failed');
      }
    },

    /** §7 determining support: disco#info features of a room that archives (inserted before its forms). */
    extendInfo(room: Room, q: Element): void {
      if (!enabled(room)) return;
      const at = q.children.findIndex((c) => typeof c !== 'string' && c.name === 'x');
      const features = [NS_MAM, NS_MAM_EXTENDED, NS.STANZA_ID].map((v) => {
        const f = new Element('feature', { var: v });
        f.parent = q;
        return f;
      });
      q.children.splice(at === -1 ? q.children.length : at, 0, ...features);
    },

    /** An urn:xmpp:mam:2 iq to the room JID. */
    async iq(room: Room, type: 'get' | 'set', payload: Element, from: Jid): Promise<Element | undefined> {
      if (room.locked && room.creator !== from.bare) throw new StanzaError('cancel', 'item-not-found');
      if (!enabled(room)) throw stanzaError('service-unavailable', 'this room keeps no archive');
      if (!mayRead(room, from)) throw new StanzaError('auth', 'forbidden', 'you may not read this room’s archive');
      if (payload.name === 'query' && type === 'get') return queryForm();
      if (payload.name === 'metadata' && type === 'get') {
        return metadataElement(await store.bounds(room.jid));
      }
      if (payload.name !== 'query' || type !== 'set') throw stanzaError('service-unavailable');
      const { query, queryid, flip } = parseQuery(payload, limits);
      let page;
      try {
        page = await store.query(room.jid, query);
      } catch (err) {
        ctx.log.error({ err, room: room.jid }, 'muc: archive query failed');
        throw stanzaError('internal-server-error');
      }
      if (page === null) throw stanzaError('item-not-found', 'no message with that id in the archive');
      const jids = seesJids(room, from);
      // Every result goes out before the iq result (§4): each is routed (and so queued) in turn.
      for (const item of flip ? [...page.items].reverse() : page.items) {
        let inner: Element;
        try {
          inner = parse(item.stanza);
        } catch (err) {
          ctx.log.warn({ err, room: room.jid, id: item.id }, 'muc: unreadable archived message skipped');
          continue;
        }
        const real = inner.getChild('x', NS_MUC_USER)?.getChild('item')?.attrs.jid as string | undefined;
        withoutMucUser(inner);
        if (jids && real) inner.c('x', { xmlns: NS_MUC_USER }).c('item', { jid: real });
        inner.attrs.xmlns = NS_CLIENT;
        delete inner.attrs.to;
        await ctx.route(resultMessage({ from: room.jid, to: from.full, queryid, id: item.id, stamp: item.stamp, stanza: inner }));
      }
      return finElement(page);
    },

    /** Retention (§3.2 archives_deletion: only the oldest go): each room's own archive, on an unref'd timer. */
    startRetention(): void {
      if (opts.retentionDays <= 0) return;
      ctx.every(
        opts.purgeIntervalSeconds * 1000,
        'muc: room archive retention purge',
        async () => {
          const cutoff = Date.now() - opts.retentionDays * 86_400_000;
          let n = 0;
          for (const room of [...host.rooms()]) n += await store.purgeOwner(room.jid, cutoff);
          if (n > 0) ctx.log.info({ purged: n }, 'muc: expired room messages purged');
        },
        { atStart: true },
      );
    },
  };
}

export type RoomArchive = ReturnType<typeof roomArchive>;
