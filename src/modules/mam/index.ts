// XEP-0313 Message Archive Management (v1.1, namespace urn:xmpp:mam:2 and urn:xmpp:mam:2#extended)
// for users' 1:1 archives:
//  - §3 archiving at routing time: outgoing messages in `c2s.stanza` (the sender's archive, after
//    XEP-0191 blocking at priority 100 has vetoed blocked ones), incoming ones in `message.inbound`
//    (the recipient's archive, after blocking); §3 + XEP-0359 §4 <stanza-id by=archive/> on the
//    delivered copy, with forged ones (a `by` on one of our hosts) stripped. An outgoing message
//    goes to its recipient without the sender's stanza-id (§3: the contact cannot read that
//    archive), but its XEP-0280 sent carbons carry it (§3 SHOULD), through the carbons.sent fold;
//    hence archiving at priority 60, before the carbons module copies at 50.
//  - §5 business rules (user archives): type chat/normal with a <body/> (or a <store/> hint or an
//    end-to-end encrypted payload, which carry no body but are conversation); never error, headline,
//    groupchat, XEP-0334 <no-store/>/<no-permanent-store/>, nor bodiless chat states and receipts
//    (they would crowd out the conversation in every page). Messages to self are stored once.
//  - §5 (prefs) preferences: default always/roster/never with always/never JID lists.
//  - §4 queries: form with/start/end/withtext, #extended before-id/after-id/ids, XEP-0059 RSM paging
//    in both directions (<before/> empty = last page), <flip-page/>, §4.1.1 form discovery, fin with
//    complete; §6 archive metadata.
//  - Retention (purge older than N days, on an unref'd timer) and a per-user cap (the oldest go).
// A storage failure while archiving never loses the message (the archive is a copy): it is delivered
// without a stanza-id and the failure logged. A failed query answers internal-server-error.
import { randomBytes } from 'node:crypto';
import { Element, parse } from 'ltx';
import { defineModule } from '../../core/module.js';
import { StanzaError, stanzaError } from '../../xmpp/errors.js';
import { Jid } from '../../xmpp/jid.js';
import { standalone } from '../../xmpp/stanza.js';
import type { ArchiveDefault, ArchivePrefs } from '../../storage/types.js';
import { mamOptions } from './options.js';
import { NS_MAM, finElement, metadataElement, parseQuery, queryForm, resultMessage } from '../../xmpp/mam.js';

export const NS_MAM_EXTENDED = 'urn:xmpp:mam:2#extended';
const NS_SID = 'urn:xmpp:sid:0';
const NS_HINTS = 'urn:xmpp:hints';
const NS_CLIENT = 'jabber:client';
/** End-to-end encrypted payloads (OMEMO legacy and 2, OX, legacy OpenPGP): conversation without a body. */
const ENCRYPTED = new Set(['eu.siacs.conversations.axolotl', 'urn:xmpp:omemo:2', 'urn:xmpp:openpgp:0', 'jabber:x:encrypted']);
const PREFS_TTL_MS = 60_000;
const PREFS_CACHE_MAX = 10_000;

/** §5 user archives: which messages are conversation worth keeping. */
export function archivable(stanza: Element): boolean {
  if (stanza.name !== 'message') return false;
  const type = stanza.attrs.type ?? 'normal';
  if (type !== 'chat' && type !== 'normal') return false;
  let worth = false;
  for (const c of stanza.getChildElements()) {
    const ns = c.attrs.xmlns as string | undefined;
    if (ns === NS_HINTS && (c.name === 'no-store' || c.name === 'no-permanent-store')) return false;
    if (c.name === 'body' && (ns === undefined || ns === NS_CLIENT)) worth = true;
    else if (ns === NS_HINTS && c.name === 'store') worth = true;
    else if (ns !== undefined && ENCRYPTED.has(ns)) worth = true;
  }
  return worth;
}

function bodyText(stanza: Element): string | null {
  const bodies = stanza.getChildElements().filter((c) => c.name === 'body' && (c.attrs.xmlns === undefined || c.attrs.xmlns === NS_CLIENT));
  return bodies.length ? bodies.map((b) => b.getText()).join('\n') : null;
}

/** XEP-0082 DateTime with milliseconds. */

export default defineModule({
  name: 'mam',
  xeps: ['0313', '0359', '0059'],
  options: mamOptions,
  setup(ctx) {
    const opts = ctx.options;
    const store = ctx.storage.archive;
    const limits = { defaultPageSize: Math.min(opts.defaultPageSize, opts.maxPageSize), maxPageSize: opts.maxPageSize };

    // §7 determining support: on the account (the archive's JID). The iq namespace registered below
    // adds urn:xmpp:mam:2 too; both are listed explicitly for clarity.
    ctx.addFeature(NS_MAM, 'account');
    ctx.addFeature(NS_MAM_EXTENDED, 'account');

    // ---- preferences ---------------------------------------------------------------------------

    const prefsCache = new Map<string, { prefs: ArchivePrefs; at: number }>();
    const defaults = (): ArchivePrefs => ({ default: opts.defaultPrefs, always: [], never: [] });

    async function prefsOf(user: string): Promise<ArchivePrefs> {
      const hit = prefsCache.get(user);
      if (hit && Date.now() - hit.at < PREFS_TTL_MS) return hit.prefs;
      const prefs = (await store.getPrefs(user)) ?? defaults();
      if (prefsCache.size >= PREFS_CACHE_MAX) prefsCache.clear();
      prefsCache.set(user, { prefs, at: Date.now() });
      return prefs;
    }

    ctx.hook('account.removed', ({ jid }) => {
      prefsCache.delete(jid);
      return undefined;
    });

    async function shouldArchive(user: string, peer: Jid): Promise<boolean> {
      const p = await prefsOf(user);
      const listed = (list: string[]) => list.includes(peer.full) || list.includes(peer.bare);
      if (listed(p.never)) return false;
      if (listed(p.always)) return true;
      if (p.default === 'always') return true;
      if (p.default === 'never') return false;
      // 'roster': the contact is in the user's roster (notes to self count as known).
      return peer.bare === user || (await ctx.storage.roster.getItem(user, peer.bare)) !== null;
    }

    function prefsElement(p: ArchivePrefs): Element {
      const el = new Element('prefs', { xmlns: NS_MAM, default: p.default });
      const always = el.c('always');
      for (const j of p.always) always.c('jid').t(j);
      const never = el.c('never');
      for (const j of p.never) never.c('jid').t(j);
      return el;
    }

    function parseList(el: Element | undefined): string[] {
      const out = new Set<string>();
      for (const j of el?.getChildren('jid') ?? []) {
        const jid = Jid.tryParse(j.getText().trim());
        if (!jid) throw stanzaError('jid-malformed', 'invalid JID in prefs');
        out.add(jid.full);
      }
      return [...out];
    }

    ctx.iq(
      'get',
      NS_MAM,
      'prefs',
      async (req) => {
        if (!req.self) throw stanzaError('forbidden');
        try {
          return prefsElement(await prefsOf(req.to.bare));
        } catch (err) {
          ctx.log.error({ err, user: req.to.bare }, 'mam: reading prefs failed');
          throw stanzaError('internal-server-error');
        }
      },
      'account',
    );

    ctx.iq(
      'set',
      NS_MAM,
      'prefs',
      async (req) => {
        if (!req.self) throw stanzaError('forbidden');
        const def = req.payload.attrs.default as string | undefined;
        if (def !== 'always' && def !== 'never' && def !== 'roster') {
          throw stanzaError('bad-request', "default must be 'always', 'never' or 'roster'");
        }
        const always = parseList(req.payload.getChild('always'));
        const never = parseList(req.payload.getChild('never'));
        if (always.some((j) => never.includes(j))) throw stanzaError('bad-request', 'a JID cannot be in both lists');
        if (always.length + never.length > opts.maxPrefsJids) {
          throw new StanzaError('cancel', 'resource-constraint', `at most ${opts.maxPrefsJids} JIDs in the lists`);
        }
        const prefs: ArchivePrefs = { default: def as ArchiveDefault, always, never };
        const user = req.to.bare;
        try {
          await store.setPrefs(user, prefs);
        } catch (err) {
          ctx.log.error({ err, user }, 'mam: saving prefs failed');
          throw stanzaError('internal-server-error');
        }
        prefsCache.set(user, { prefs, at: Date.now() });
        return prefsElement(prefs);
      },
      'account',
    );

    // ---- archiving -----------------------------------------------------------------------------

    /** Stores a copy in `user`'s archive; resolves its UID, or null when not archived (prefs, failure). */
    async function archive(user: string, peer: Jid, direction: 'in' | 'out', stanza: Element): Promise<string | null> {
      try {
        if (!(await shouldArchive(user, peer))) return null;
        const id = randomBytes(12).toString('base64url');
        await store.append(
          user,
          {
            id,
            withBare: peer.bare,
            withFull: peer.full,
            direction,
            stamp: Date.now(),
            stanza: standalone(stanza).toString(),
            body: bodyText(stanza),
          },
          opts.maxPerUser,
        );
        return id;
      } catch (err) {
        // The archive is a copy: the message still goes out, without a stanza-id.
        ctx.log.error({ err, user }, 'mam: archiving failed; message delivered without an archive copy');
        return null;
      }
    }

    /** XEP-0359 §4: a stanza-id claiming to come from one of our hosts was not added by us. */
    function stripForged(stanza: Element): void {
      stanza.children = stanza.children.filter((c) => {
        if (typeof c === 'string' || c.name !== 'stanza-id' || c.attrs.xmlns !== NS_SID) return true;
        const by = Jid.tryParse(c.attrs.by as string | undefined);
        return !by || !ctx.isLocalHost(by.domain);
      });
    }

    /** Outgoing messages archived, with their UID, for the sender's carbons (the element is the key: weak). */
    const sentIds = new WeakMap<Element, string>();

    // Outgoing: below blocking (100), so a message to a blocked JID never reaches the archive;
    // above the carbons module's sent copies (50), so the copies can carry the archive id.
    ctx.hook(
      'c2s.stanza',
      async ({ session, stanza }) => {
        const me = session.jid;
        if (!me || stanza.name !== 'message' || !archivable(stanza)) return undefined;
        const to = Jid.tryParse(stanza.attrs.to as string | undefined);
        // No 'to' or to the account itself: archived once, on arrival, as an incoming message.
        if (!to || to.bare === me.bare) return undefined;
        if (!to.local && ctx.isLocalHost(to.domain)) return undefined; // to the server itself
        // No stanza-id on the outgoing message: the contact has no access to this archive (§3).
        const id = await archive(me.bare, to, 'out', stanza);
        if (id) sentIds.set(stanza, id);
        return undefined;
      },
      60,
    );

    // §3: "servers SHOULD include the element as a child of the forwarded message when using XEP-0280".
    ctx.fold('carbons.sent', (ev) => {
      const id = sentIds.get(ev.original);
      const me = ev.session.jid;
      if (id && me) ev.copy.c('stanza-id', { xmlns: NS_SID, by: me.bare, id });
      return ev;
    });

    ctx.hook('message.inbound', async ({ stanza, to, from }) => {
      stripForged(stanza);
      if (!archivable(stanza)) return undefined;
      // Messages the router will refuse are not archived (§5: only what was accepted for delivery):
      // non-chat to a missing resource, or to an account that does not exist.
      if (to.resource && stanza.attrs.type !== 'chat' && !ctx.sessions.get(to)) return undefined;
      if (!(await ctx.accountExists(to.bare))) return undefined;
      const peer = from ?? Jid.of('', to.domain);
      const id = await archive(to.bare, peer, 'in', stanza);
      if (id) stanza.c('stanza-id', { xmlns: NS_SID, by: to.bare, id });
      return undefined;
    });

    // ---- queries (§4) --------------------------------------------------------------------------

    ctx.iq('get', NS_MAM, 'query', (req) => {
      if (!req.self) throw stanzaError('forbidden');
      return queryForm();
    }, 'account');

    ctx.iq(
      'set',
      NS_MAM,
      'query',
      async (req) => {
        if (!req.self) throw stanzaError('forbidden');
        const user = req.to.bare;
        const { query, queryid, flip } = parseQuery(req.payload, limits);
        let page;
        try {
          page = await store.query(user, query);
        } catch (err) {
          ctx.log.error({ err, user }, 'mam: query failed');
          throw stanzaError('internal-server-error');
        }
        if (page === null) throw stanzaError('item-not-found', 'no message with that id in the archive');

        // Every result goes out before the iq result (§4): session.send writes in order.
        const items = flip ? [...page.items].reverse() : page.items;
        for (const item of items) {
          let inner: Element;
          try {
            inner = parse(item.stanza);
          } catch (err) {
            ctx.log.warn({ err, user, id: item.id }, 'mam: unreadable archived message skipped');
            continue;
          }
          inner.attrs.xmlns = NS_CLIENT;
          const msg = resultMessage({ from: user, to: req.from.full, queryid, id: item.id, stamp: item.stamp, stanza: inner });
          if (req.session) req.session.send(msg);
          else await ctx.route(msg);
        }

        return finElement(page);
      },
      'account',
    );

    // §6 archive metadata (part of #extended).
    ctx.iq(
      'get',
      NS_MAM,
      'metadata',
      async (req) => {
        if (!req.self) throw stanzaError('forbidden');
        let bounds;
        try {
          bounds = await store.bounds(req.to.bare);
        } catch (err) {
          ctx.log.error({ err, user: req.to.bare }, 'mam: metadata failed');
          throw stanzaError('internal-server-error');
        }
        return metadataElement(bounds);
      },
      'account',
    );

    // ---- retention -----------------------------------------------------------------------------

    if (opts.retentionDays > 0) {
      ctx.every(
        opts.purgeIntervalSeconds * 1000,
        'mam: retention purge',
        async () => {
          // Only the hosts' user archives: rooms (muc, archive.retentionDays) keep their own retention.
          const n = await store.purge(Date.now() - opts.retentionDays * 86_400_000, ctx.hostNames());
          if (n > 0) ctx.log.info({ purged: n }, 'mam: expired messages purged');
        },
        { atStart: true },
      );
    }
  },
});
