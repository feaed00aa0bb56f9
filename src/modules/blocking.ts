// XEP-0191 Blocking Command (v1.3): §3.1 disco feature, §3.2 blocklist retrieval, §3.3 block
// (pushes, unavailable presence, inbound/outbound enforcement), §3.4-3.5 unblock and unblock-all
// (pushes, current presence), §5 JID matching (consistent with XEP-0016: full JID, bare JID, domain).
//
// Enforcement, as §3.3 lays it out:
//  - inbound from a blocked JID (hook route.user, priority 100: before the roster's presence rules at
//    10 and before routing reaches offline storage): presence is dropped silently; iq get/set gets
//    service-unavailable, other iqs are dropped; messages get service-unavailable (the SHOULD),
//    except error/groupchat/headline messages, which are dropped (no error loops, no MUC kicks).
//  - outbound from the user to a blocked JID (hook c2s.stanza, priority 100): not routed; the sender
//    gets not-acceptable with <blocked xmlns='urn:xmpp:blocking:errors'/>.
//  - presence broadcasts and probes skip blocked contacts (fold roster.broadcast-targets).
//  - a user's own resources are never blocked from each other (§6 note), nor is the user's server.
// Error choices: invalid JID -> jid-malformed; item without jid -> bad-request; more than
// limits.blocklistSize entries -> resource-constraint (cancel: retrying won't help).
import { randomBytes } from 'node:crypto';
import { clone, Element } from 'ltx';
import { z } from 'zod';
import { defineModule } from '../core/module.js';
import { HANDLED } from '../core/hooks.js';
import { serializer } from '../core/serializer.js';
import type { C2SSession } from '../core/session.js';
import { StanzaError, stanzaError } from '../xmpp/errors.js';
import { Jid } from '../xmpp/jid.js';
import { NS } from '../xmpp/ns.js';
import type { Subscription } from '../storage/types.js';

/** Session flag: the resource retrieved the blocklist, so it gets pushes (§3.3). */
const INTERESTED = Symbol('blocking.interested');
const CACHE_TTL_MS = 60_000;
const CACHE_MAX = 10_000;

interface BlockList {
  /** Normalized JIDs as stored: full, bare or domain (or domain/resource). */
  all: Set<string>;
  /** Bare JIDs that have at least one full-JID entry (user@domain/resource). */
  fullBares: Set<string>;
  at: number;
}

export default defineModule({
  name: 'blocking',
  xeps: ['0191'],
  options: z.object({}).strict(),
  setup(ctx) {
    const store = ctx.storage.blocks;
    const limit = ctx.config.limits.blocklistSize;
    const cache = new Map<string, BlockList>();
    // Bumped on every change so that a load racing with a write cannot cache the old list.
    const generation = new Map<string, number>();
    const serial = serializer();

    // §3.1: discovered on the server; account features cover disco#info to the bare JID.
    ctx.addFeature(NS.BLOCKING, 'both');

    function remember(user: string, jids: Iterable<string>): BlockList {
      const list = makeList(jids);
      cache.delete(user);
      if (cache.size >= CACHE_MAX) {
        const oldest = cache.keys().next().value;
        if (oldest !== undefined) cache.delete(oldest);
      }
      cache.set(user, list);
      return list;
    }

    async function load(user: string): Promise<BlockList> {
      const hit = cache.get(user);
      if (hit && Date.now() - hit.at < CACHE_TTL_MS) return hit;
      const gen = generation.get(user) ?? 0;
      const jids = await store.list(user);
      if ((generation.get(user) ?? 0) !== gen) return makeList(jids);
      return remember(user, jids);
    }

    function changed(user: string, jids: Iterable<string>): BlockList {
      generation.set(user, (generation.get(user) ?? 0) + 1);
      if (generation.size > CACHE_MAX) generation.clear();
      return remember(user, jids);
    }

    ctx.hook('account.removed', ({ jid }) => {
      generation.set(jid, (generation.get(jid) ?? 0) + 1);
      cache.delete(jid);
      return undefined;
    });

    // ---- §3.2 retrieval ----------------------------------------------------------------------

    ctx.iq(
      'get',
      NS.BLOCKING,
      'blocklist',
      async (req) => {
        if (!req.self) throw stanzaError('forbidden');
        req.session?.data.set(INTERESTED, true);
        const list = await load(req.to.bare);
        const out = new Element('blocklist', { xmlns: NS.BLOCKING });
        for (const jid of [...list.all].sort()) out.c('item', { jid });
        return out;
      },
      'account',
    );

    // ---- §3.3 block --------------------------------------------------------------------------

    ctx.iq(
      'set',
      NS.BLOCKING,
      'block',
      async (req) => {
        if (!req.self) throw stanzaError('forbidden');
        const jids = parseItems(req.payload);
        if (jids.length === 0) throw stanzaError('bad-request', 'block at least one JID');
        const user = req.to.toBare();
        const added = await serial(user.bare, async () => {
          const current = await load(user.bare);
          const fresh = jids.filter((j) => !current.all.has(j));
          if (current.all.size + fresh.length > limit) {
            throw new StanzaError('cancel', 'resource-constraint', `the block list is limited to ${limit} entries`);
          }
          if (fresh.length) {
            await store.add(user.bare, fresh);
            changed(user.bare, [...current.all, ...fresh]);
          }
          return fresh;
        });
        push(user, 'block', jids);
        if (added.length) await sendUnavailableTo(user, makeList(added));
        return undefined;
      },
      'account',
    );

    // ---- §3.4 / §3.5 unblock -----------------------------------------------------------------

    ctx.iq(
      'set',
      NS.BLOCKING,
      'unblock',
      async (req) => {
        if (!req.self) throw stanzaError('forbidden');
        const jids = parseItems(req.payload);
        const user = req.to.toBare();
        const removed = await serial(user.bare, async () => {
          const current = await load(user.bare);
          if (jids.length === 0) {
            await store.clear(user.bare);
            changed(user.bare, []);
            return [...current.all];
          }
          const gone = jids.filter((j) => current.all.has(j));
          if (gone.length) {
            await store.remove(user.bare, gone);
            const left = new Set(current.all);
            for (const j of gone) left.delete(j);
            changed(user.bare, left);
          }
          return gone;
        });
        push(user, 'unblock', jids);
        if (removed.length) await sendCurrentPresenceTo(user, makeList(removed));
        return undefined;
      },
      'account',
    );

    /** Block/unblock push (§3.3, §3.4, §3.5) to every resource that retrieved the blocklist. */
    function push(user: Jid, kind: 'block' | 'unblock', jids: string[]): void {
      for (const s of ctx.sessions.resources(user.bare)) {
        if (!s.data.get(INTERESTED) || !s.jid) continue;
        const iq = new Element('iq', { type: 'set', id: `block-push-${randomBytes(6).toString('hex')}`, to: s.jid.full });
        const el = iq.c(kind, { xmlns: NS.BLOCKING });
        for (const jid of jids) el.c('item', { jid });
        s.send(iq);
      }
    }

    // ---- presence side effects ---------------------------------------------------------------

    /** Contacts (bare JIDs, or full JIDs for full-JID entries) with one of `subs` that `list` matches. */
    async function matchingContacts(user: Jid, list: BlockList, subs: Subscription[]): Promise<string[]> {
      const out: string[] = [];
      for (const item of (await ctx.storage.roster.get(user.bare)).items) {
        if (!subs.includes(item.subscription)) continue;
        const contact = Jid.tryParse(item.jid);
        if (!contact) continue;
        if (matches(list, contact)) out.push(contact.bare);
        else if (list.fullBares.has(contact.bare)) {
          for (const j of list.all) if (j.startsWith(`${contact.bare}/`)) out.push(j);
        }
      }
      return out;
    }

    /** §3.3: a newly blocked JID that was receiving our presence gets unavailable from each resource. */
    async function sendUnavailableTo(user: Jid, blocked: BlockList): Promise<void> {
      const sessions = ctx.sessions.resources(user.bare);
      const hasAvailable = sessions.some((s) => s.available);
      const recipients = hasAvailable ? await matchingContacts(user, blocked, ['from', 'both']) : [];
      const perSession = new Map<C2SSession, Set<string>>();
      for (const s of sessions) {
        // Broadcast presence reaches subscribed contacts only from available resources.
        const to = new Set(s.available ? recipients : []);
        // Directed presence (RFC 6121 §4.6) counts as "receiving presence" too; it ends here.
        for (const d of [...s.directed]) {
          const j = Jid.tryParse(d);
          if (j && matches(blocked, j)) {
            to.add(d);
            s.directed.delete(d);
          }
        }
        perSession.set(s, to);
      }
      for (const [s, to] of perSession) {
        for (const r of to) await send(new Element('presence', { type: 'unavailable', from: s.jid?.full, to: r }));
      }
    }

    /** §3.4: unblocked contacts with a subscription get our current presence; we probe theirs. */
    async function sendCurrentPresenceTo(user: Jid, unblocked: BlockList): Promise<void> {
      const available = ctx.sessions.available(user.bare);
      if (available.length) {
        // A contact may still be covered by another entry (e.g. its domain).
        const current = await load(user.bare);
        const stillBlocked = (c: string) => {
          const j = Jid.tryParse(c);
          return !j || matches(current, j);
        };
        for (const contact of await matchingContacts(user, unblocked, ['from', 'both'])) {
          if (stillBlocked(contact)) continue;
          for (const s of available) {
            if (!s.presence || !s.jid) continue;
            const p = clone(s.presence);
            p.attrs.from = s.jid.full;
            p.attrs.to = contact;
            await send(p);
          }
        }
        // Their presence was dropped while blocked: ask for it again (RFC 6121 §4.3).
        const probe = new Set((await matchingContacts(user, unblocked, ['to', 'both'])).filter((c) => !stillBlocked(c)).map((c) => c.split('/')[0] as string));
        for (const contact of probe) await send(new Element('presence', { type: 'probe', from: user.bare, to: contact }));
      }
    }

    async function send(el: Element): Promise<void> {
      try {
        await ctx.route(el);
      } catch (err) {
        ctx.log.warn({ err }, 'blocking: presence routing failed');
      }
    }

    // ---- enforcement ---------------------------------------------------------------------------

    /** The user's own server (bare domain) is never blocked: it answers the user's own requests. */
    const isOwnServer = (j: Jid, user: Jid) => !j.local && !j.resource && j.domain === user.domain;

    ctx.hook(
      'route.user',
      async ({ stanza, to, from }) => {
        if (!from || from.bare === to.bare || isOwnServer(from, to)) return;
        const list = await load(to.bare);
        if (!matches(list, from)) return;
        const type = stanza.attrs.type;
        if (stanza.name === 'iq') {
          if (type === 'get' || type === 'set') throw stanzaError('service-unavailable');
          return HANDLED;
        }
        if (stanza.name === 'message') {
          if (type === 'error' || type === 'groupchat' || type === 'headline') return HANDLED;
          throw stanzaError('service-unavailable');
        }
        return HANDLED; // presence of any kind: no answer, no error
      },
      100,
    );

    ctx.hook(
      'c2s.stanza',
      async ({ session, stanza }) => {
        const me = session.jid;
        const to = Jid.tryParse(stanza.attrs.to);
        if (!me || !to || to.bare === me.bare || isOwnServer(to, me)) return;
        const list = await load(me.bare);
        if (!matches(list, to)) return;
        if (stanza.attrs.type !== 'error') {
          session.bounce(stanza, new StanzaError('cancel', 'not-acceptable', undefined, new Element('blocked', { xmlns: NS.BLOCKING_ERRORS })));
        }
        return HANDLED;
      },
      100,
    );

    ctx.fold('roster.broadcast-targets', async (ev) => {
      const list = await load(ev.user.bare);
      if (list.all.size === 0) return ev;
      for (const t of [...ev.targets]) {
        const j = Jid.tryParse(t);
        if (!j) continue;
        if (matches(list, j)) {
          ev.targets.delete(t);
        } else if (j.isBare && list.fullBares.has(j.bare)) {
          // Only some resources are blocked: address the others one by one.
          ev.targets.delete(t);
          for (const s of ctx.sessions.available(j.bare)) if (s.jid && !list.all.has(s.jid.full)) ev.targets.add(s.jid.full);
        }
      }
      return ev;
    });
  },
});

/** §5 matching: the full JID, the bare JID, or the domain. */
function matches(list: BlockList, jid: Jid): boolean {
  const all = list.all;
  return all.size > 0 && (all.has(jid.full) || all.has(jid.bare) || all.has(jid.domain));
}

function makeList(jids: Iterable<string>): BlockList {
  const all = new Set(jids);
  const fullBares = new Set<string>();
  for (const j of all) {
    const slash = j.indexOf('/');
    if (slash !== -1 && j.lastIndexOf('@', slash) !== -1) fullBares.add(j.slice(0, slash));
  }
  return { all, fullBares, at: Date.now() };
}

/** The normalized JIDs of <item jid=.../> children (deduplicated, in order). */
function parseItems(payload: Element): string[] {
  const out = new Set<string>();
  for (const item of payload.getChildElements()) {
    if (item.name !== 'item') continue;
    const raw = item.attrs.jid;
    if (raw === undefined) throw stanzaError('bad-request', 'item without jid');
    const jid = Jid.tryParse(raw);
    if (!jid) throw stanzaError('jid-malformed', 'invalid JID in item');
    out.add(jid.full);
  }
  return [...out];
}
