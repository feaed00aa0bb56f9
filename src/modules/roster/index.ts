// Rosters and presence (RFC 6121 §2-§4): roster get/set/push with versioning, the subscription
// state machine with pre-approval, presence broadcast, probes, directed presence, and the
// unavailable broadcast when a session ends. One module because the roster is the state that the
// presence rules read and write.
import { randomBytes } from 'node:crypto';
import { clone, Element, parse } from 'ltx';
import { z } from 'zod';
import { defineModule } from '../../core/module.js';
import { HANDLED } from '../../core/hooks.js';
import type { C2SSession } from '../../core/session.js';
import { stanzaError } from '../../xmpp/errors.js';
import { Jid } from '../../xmpp/jid.js';
import { NS } from '../../xmpp/ns.js';
import { delayElement } from '../../xmpp/stanza.js';
import type { RosterItem, Subscription } from '../../storage/types.js';
import { mergeShared, sharedRoster } from './shared.js';

declare module '../../core/hooks.js' {
  interface FoldMap {
    /** The contacts (bare JIDs) a user's presence broadcast goes to; modules may remove some (blocking). */
    'roster.broadcast-targets': { user: Jid; targets: Set<string> };
  }
  interface HookMap {
    /**
     * A roster item was stored or removed (`subscription: 'remove'`): features that grant access by
     * presence subscription (news channels' presence access model) re-check what `contact` may see.
     */
    'roster.changed': { user: string; contact: string; subscription: Subscription | 'remove' };
  }
}

const SUB_TYPES = new Set(['subscribe', 'subscribed', 'unsubscribe', 'unsubscribed']);
const MAX_NAME = 1024;
const MAX_GROUPS = 64;

export default defineModule({
  name: 'roster',
  xeps: [],
  options: z
    .object({
      versioning: z.boolean().default(true).describe('Offer roster versioning (RFC 6121 §2.6)'),
    })
    .strict(),
  setup(ctx) {
    // The database, or for `ldap.roster: directory` hosts the directory (the server swaps the store, issue 8).
    const storage = ctx.storage.roster;
    const limits = ctx.config.limits;
    const lastUnavailable = new Map<string, Element>(); // bare JID -> last unavailable presence (for probes)
    const shared = sharedRoster(ctx); // directory hosts' shared roster groups (issue 8)

    ctx.fold('c2s.features', (ev) => {
      if (ev.stage === 'post-auth') {
        if (ctx.options.versioning) ev.features.c('ver', { xmlns: NS.ROSTER_VER });
        ev.features.c('sub', { xmlns: NS.PRE_APPROVAL });
      }
      return ev;
    });

    // ---- roster iq ----------------------------------------------------------------------------

    ctx.iq(
      'get',
      NS.ROSTER,
      'query',
      async (req) => {
        if (!req.self) throw stanzaError('forbidden');
        if (req.session) req.session.interested = true;
        const roster = mergeShared(await storage.get(req.from.bare), await shared.items(req.from.toBare()));
        const ver = req.payload.attrs.ver;
        if (ctx.options.versioning && ver !== undefined && ver === roster.version) return undefined;
        const q = new Element('query', { xmlns: NS.ROSTER, ver: ctx.options.versioning ? roster.version : undefined });
        for (const item of roster.items) q.cnode(itemElement(item));
        return q;
      },
      'account',
    );

    ctx.iq(
      'set',
      NS.ROSTER,
      'query',
      async (req) => {
        if (!req.self) throw stanzaError('forbidden');
        const items = req.payload.getChildren('item');
        if (items.length !== 1) throw stanzaError('bad-request', 'exactly one item');
        const el = items[0] as Element;
        const contact = Jid.tryParse(el.attrs.jid);
        if (!contact) throw stanzaError('bad-request', 'invalid jid');
        if (!contact.isBare) throw stanzaError('bad-request', 'roster items are bare JIDs');
        const user = req.from.toBare();
        if (contact.bare === user.bare) throw stanzaError('not-allowed', 'cannot add yourself');
        if (el.attrs.subscription === 'remove') {
          if (await shared.isShared(user, contact.bare)) throw stanzaError('not-allowed', 'a shared group contact: membership is decided in the directory');
          await removeContact(user, contact);
          return undefined;
        }
        // RFC 6121 §2.1.2.5: in a roster set the server MUST ignore any other 'subscription' value.
        const name = el.attrs.name;
        if (name !== undefined && name.length > MAX_NAME) throw stanzaError('not-acceptable', 'name too long');
        const groups: string[] = [];
        for (const g of el.getChildren('group')) {
          const t = g.getText();
          if (!t) throw stanzaError('not-acceptable', 'empty group name');
          if (t.length > MAX_NAME) throw stanzaError('not-acceptable', 'group name too long');
          if (groups.includes(t)) throw stanzaError('bad-request', 'duplicate group');
          groups.push(t);
        }
        if (groups.length > MAX_GROUPS) throw stanzaError('not-acceptable', 'too many groups');
        const existing = await storage.getItem(user.bare, contact.bare);
        if (!existing && (await storage.count(user.bare)) >= limits.rosterSize) {
          throw stanzaError('not-allowed', `roster is limited to ${limits.rosterSize} items`);
        }
        const item: RosterItem = existing
          ? { ...existing, name: name || undefined, groups }
          : { jid: contact.bare, name: name || undefined, subscription: 'none', ask: false, approved: false, groups };
        await save(user, item);
        return undefined;
      },
      'account',
    );

    async function save(user: Jid, item: RosterItem): Promise<void> {
      const ver = await storage.setItem(user.bare, item);
      // A shared group contact shows as `both` whatever is stored (as in a roster get).
      const shown = (await shared.isShared(user, item.jid)) ? { ...item, subscription: 'both' as const, ask: false } : item;
      push(user, itemElement(shown), ver);
      await ctx.fire('roster.changed', { user: user.bare, contact: item.jid, subscription: item.subscription });
    }

    /** Roster push (RFC 6121 §2.1.6) to every interested resource. */
    function push(user: Jid, item: Element, ver: string): void {
      for (const s of ctx.sessions.resources(user.bare)) {
        if (!s.interested) continue;
        const iq = new Element('iq', { type: 'set', id: `push-${randomBytes(6).toString('hex')}`, to: s.jid?.full });
        iq.c('query', { xmlns: NS.ROSTER, ver: ctx.options.versioning ? ver : undefined }).cnode(clone(item));
        s.send(iq);
      }
    }

    async function removeContact(user: Jid, contact: Jid): Promise<void> {
      const item = await storage.getItem(user.bare, contact.bare);
      if (!item) throw stanzaError('item-not-found');
      const ver = await storage.removeItem(user.bare, contact.bare);
      await storage.removePendingIn(user.bare, contact.bare);
      if (ver !== null) push(user, new Element('item', { jid: contact.bare, subscription: 'remove' }), ver);
      await ctx.fire('roster.changed', { user: user.bare, contact: contact.bare, subscription: 'remove' });
      // RFC 6121 §2.5.2: cancel both directions.
      if (item.subscription === 'to' || item.subscription === 'both' || item.ask) {
        await send(presence(user.bare, contact.bare, 'unsubscribe'));
      }
      if (item.subscription === 'from' || item.subscription === 'both') {
        // §3.2.2: unavailable while the contact is still subscribed, then the cancellation.
        await sendUnavailableFrom(user, contact.bare);
        await send(presence(user.bare, contact.bare, 'unsubscribed'));
      }
    }

    // ---- outbound presence (from a local client) --------------------------------------------

    ctx.hook('c2s.stanza', async ({ session, stanza }) => {
      if (stanza.name !== 'presence') return;
      const type = stanza.attrs.type;
      const user = (session.jid as Jid).toBare();
      if (stanza.attrs.to === undefined) {
        if (type === undefined) {
          await broadcastAvailable(session, stanza);
          return HANDLED;
        }
        if (type === 'unavailable') {
          await broadcastUnavailable(session, stanza);
          return HANDLED;
        }
        if (type === 'error' || type === 'probe' || SUB_TYPES.has(type)) return HANDLED; // meaningless without 'to'
        throw stanzaError('bad-request', 'unknown presence type');
      }
      const to = Jid.tryParse(stanza.attrs.to);
      if (!to) throw stanzaError('jid-malformed');
      if (type !== undefined && SUB_TYPES.has(type)) {
        await outboundSubscription(user, to.toBare(), type, stanza);
        return HANDLED;
      }
      if (type === 'probe') {
        // Clients don't probe (RFC 6121 §4.3); the server does it for them.
        return HANDLED;
      }
      if (type === undefined || type === 'unavailable') {
        // Directed presence (RFC 6121 §4.6): remember it unless the contact gets our broadcasts anyway.
        const item = await storage.getItem(user.bare, to.bare);
        const subscribed = item && (item.subscription === 'from' || item.subscription === 'both');
        if (!subscribed && to.bare !== user.bare) {
          if (type === undefined) session.directed.add(to.full);
          else session.directed.delete(to.full);
        }
        return; // routed normally
      }
      if (type === 'error') return;
      throw stanzaError('bad-request', 'unknown presence type');
    });

    async function outboundSubscription(user: Jid, contact: Jid, type: string, original: Element): Promise<void> {
      if (contact.bare === user.bare) return;
      // Shared group contacts are subscribed both ways by the directory: cancelling is ignored.
      if ((type === 'unsubscribe' || type === 'unsubscribed') && (await shared.isShared(user, contact.bare))) return;
      // RFC 6121 §3.1.2: stamp the bare JID on outbound subscription stanzas.
      const out = presence(user.bare, contact.bare, type);
      for (const c of original.getChildElements()) out.cnode(clone(c));
      let item = await storage.getItem(user.bare, contact.bare);
      const fresh: RosterItem = { jid: contact.bare, subscription: 'none', ask: false, approved: false, groups: [] };
      switch (type) {
        case 'subscribe': {
          if (!item && (await storage.count(user.bare)) >= limits.rosterSize) throw stanzaError('not-allowed', 'roster full');
          item ??= fresh;
          if (item.subscription === 'none' || item.subscription === 'from') {
            if (!item.ask) await save(user, { ...item, ask: true });
          }
          await send(out);
          return;
        }
        case 'subscribed': {
          const pending = (await storage.listPendingIn(user.bare)).some((p) => p.contact === contact.bare);
          if (item && (item.subscription === 'from' || item.subscription === 'both')) return;
          if (pending) {
            item ??= fresh;
            await save(user, { ...item, subscription: item.subscription === 'to' ? 'both' : 'from', approved: false });
            await storage.removePendingIn(user.bare, contact.bare);
            await send(out);
            await sendCurrentPresence(user, contact.bare);
            return;
          }
          // Pre-approval (RFC 6121 §3.4): remember it, route nothing.
          if (!item && (await storage.count(user.bare)) >= limits.rosterSize) throw stanzaError('not-allowed', 'roster full');
          item ??= fresh;
          if (!item.approved) await save(user, { ...item, approved: true });
          return;
        }
        case 'unsubscribe': {
          if (item && (item.subscription === 'to' || item.subscription === 'both' || item.ask)) {
            await save(user, { ...item, subscription: item.subscription === 'both' ? 'from' : item.subscription === 'to' ? 'none' : item.subscription, ask: false });
          }
          await send(out);
          return;
        }
        case 'unsubscribed': {
          const pending = (await storage.listPendingIn(user.bare)).some((p) => p.contact === contact.bare);
          if (pending) await storage.removePendingIn(user.bare, contact.bare);
          if (item && (item.subscription === 'from' || item.subscription === 'both')) {
            await save(user, { ...item, subscription: item.subscription === 'both' ? 'to' : 'none', approved: false });
            // RFC 6121 §3.2.2: unavailable from every resource while the contact is still subscribed, then the cancellation.
            await sendUnavailableFrom(user, contact.bare);
            await send(out);
            return;
          }
          if (item?.approved) await save(user, { ...item, approved: false });
          // RFC 6121 §3.2.2 #1-#2 / Appendix A.2.4: only a denial of a pending request is routed;
          // cancelling a pre-approval (or nothing at all) MUST NOT / SHOULD NOT be.
          if (pending) await send(out);
          return;
        }
      }
    }

    // ---- inbound presence (to a local account) ------------------------------------------------

    ctx.hook('route.user', async ({ stanza, to, from }) => {
      if (stanza.name !== 'presence' || !from) return;
      const type = stanza.attrs.type;
      if (type === 'probe') {
        await answerProbe(to.toBare(), from);
        return HANDLED;
      }
      if (type === undefined || !SUB_TYPES.has(type)) return;
      await inboundSubscription(to.toBare(), from.toBare(), type, stanza);
      return HANDLED;
    }, 10);

    async function inboundSubscription(user: Jid, contact: Jid, type: string, stanza: Element): Promise<void> {
      if (!(await ctx.accountExists(user.bare))) {
        // RFC 6121 §3.1.3: no such user: answer a subscribe with unsubscribed.
        if (type === 'subscribe') await send(presence(user.bare, contact.bare, 'unsubscribed'));
        return;
      }
      const item = await storage.getItem(user.bare, contact.bare);
      const deliver = () => {
        const out = new Element('presence', { from: contact.bare, to: user.bare, type, id: stanza.attrs.id });
        for (const c of stanza.getChildElements()) out.cnode(clone(c));
        for (const s of ctx.sessions.available(user.bare)) s.send(out);
        return out;
      };
      switch (type) {
        case 'subscribe': {
          // Already subscribed, or a shared group contact (subscribed by the directory): approve at once.
          if ((item && (item.subscription === 'from' || item.subscription === 'both')) || (await shared.isShared(user, contact.bare))) {
            await send(presence(user.bare, contact.bare, 'subscribed'));
            return;
          }
          if (item?.approved) {
            await save(user, { ...item, subscription: item.subscription === 'to' ? 'both' : 'from', approved: false });
            await send(presence(user.bare, contact.bare, 'subscribed'));
            await sendCurrentPresence(user, contact.bare);
            return;
          }
          // Keep it until answered; deliver now to available resources and again at next login.
          // A repeat while one is already pending is stored (the last one wins) but not delivered
          // again (RFC 6121 Appendix A.3.1: "None + Pending In" / "To + Pending In" -> S.N.).
          const already = (await storage.listPendingIn(user.bare)).some((p) => p.contact === contact.bare);
          const out = new Element('presence', { from: contact.bare, to: user.bare, type: 'subscribe', id: stanza.attrs.id });
          for (const c of stanza.getChildElements()) out.cnode(clone(c));
          await storage.addPendingIn(user.bare, contact.bare, out.toString());
          if (!already) deliver();
          return;
        }
        case 'subscribed': {
          if (!item?.ask || item.subscription === 'to' || item.subscription === 'both') return;
          // RFC 6121 §3.1.6: deliver the approval before the roster push.
          deliver();
          await save(user, { ...item, subscription: item.subscription === 'from' ? 'both' : 'to', ask: false });
          return;
        }
        case 'unsubscribe': {
          await storage.removePendingIn(user.bare, contact.bare);
          if (!item || (item.subscription !== 'from' && item.subscription !== 'both')) return;
          // RFC 6121 §3.3.3: deliver the unsubscribe before the roster push.
          deliver();
          await save(user, { ...item, subscription: item.subscription === 'both' ? 'to' : 'none', approved: false });
          await sendUnavailableFrom(user, contact.bare);
          return;
        }
        case 'unsubscribed': {
          if (!item || (item.subscription !== 'to' && item.subscription !== 'both' && !item.ask)) return;
          const next: Subscription = item.subscription === 'both' ? 'from' : item.subscription === 'to' ? 'none' : item.subscription;
          // RFC 6121 §3.2.3: deliver the cancellation before the roster push.
          deliver();
          await save(user, { ...item, subscription: next, ask: false });
          return;
        }
      }
    }

    async function answerProbe(user: Jid, prober: Jid): Promise<void> {
      if (!(await ctx.accountExists(user.bare))) {
        await send(presence(user.bare, prober.bare, 'unsubscribed'));
        return;
      }
      const item = await storage.getItem(user.bare, prober.bare);
      const subscribed = (item && (item.subscription === 'from' || item.subscription === 'both')) || (await shared.isShared(user, prober.bare));
      if (!subscribed) {
        // RFC 6121 §4.3.2: reveal nothing to entities without a subscription.
        await send(presence(user.bare, prober.bare, 'unsubscribed'));
        return;
      }
      const available = ctx.sessions.available(user.bare);
      if (!available.length) {
        const last = lastUnavailable.get(user.bare);
        const out = last ? clone(last) : new Element('presence', { from: user.bare, type: 'unavailable' });
        out.attrs.to = prober.full;
        await send(out);
        return;
      }
      for (const s of available) {
        if (!s.presence) continue;
        const p = clone(s.presence);
        p.attrs.from = s.jid?.full as string;
        p.attrs.to = prober.full;
        await send(p);
      }
    }

    // ---- broadcast ------------------------------------------------------------------------------

    async function targets(user: Jid, subs: Subscription[]): Promise<Set<string>> {
      const roster = await storage.get(user.bare);
      const set = new Set<string>();
      for (const i of roster.items) if (subs.includes(i.subscription)) set.add(i.jid);
      for (const jid of (await shared.items(user)).keys()) set.add(jid); // shared groups: both ways
      const ev = await ctx.foldValue('roster.broadcast-targets', { user, targets: set });
      return ev.targets;
    }

    async function broadcastAvailable(session: C2SSession, stanza: Element): Promise<void> {
      const jid = session.jid as Jid;
      const user = jid.toBare();
      const prioText = stanza.getChildText('priority');
      let priority = 0;
      if (prioText !== null) {
        const n = Number(prioText.trim());
        if (!Number.isInteger(n) || n < -128 || n > 127) throw stanzaError('bad-request', 'priority must be an integer in -128..127');
        priority = n;
      }
      const initial = !session.available;
      const clean = new Element('presence', { from: jid.full });
      for (const c of stanza.getChildElements()) clean.cnode(clone(c));
      session.priority = priority;
      session.presence = clean;
      session.available = true;
      lastUnavailable.delete(user.bare);
      const to = await targets(user, ['from', 'both']);
      for (const contact of to) await send(withTo(clean, contact));
      // The user's own resources, including this one (RFC 6121 §4.2.2).
      for (const s of ctx.sessions.available(user.bare)) s.send(withTo(clean, s.jid?.full as string));
      if (initial) {
        for (const s of ctx.sessions.available(user.bare)) {
          if (s !== session && s.presence) session.send(withTo(s.presence, jid.full, s.jid?.full));
        }
        // Probe contacts we are subscribed to (RFC 6121 §4.2.2).
        const probeTo = await targets(user, ['to', 'both']);
        for (const contact of probeTo) await send(new Element('presence', { type: 'probe', from: user.bare, to: contact }));
        for (const p of await storage.listPendingIn(user.bare)) {
          try {
            const el = parse(p.stanza);
            el.attrs.to = user.bare;
            session.send(el);
          } catch (err) {
            ctx.log.warn({ err }, 'bad stored subscription request');
          }
        }
        await ctx.fire('presence.initial', { session });
      }
      // RFC 6121 §4.6.2 #2: directed-presence recipients are not included in later broadcasts of
      // available presence (only the final unavailable goes to them).
    }

    async function broadcastUnavailable(session: C2SSession, stanza: Element | null): Promise<void> {
      if (!session.available) {
        // Not available: still close directed presence (RFC 6121 §4.6.3), with the exit status
        // (XEP-0045 §7.14: a room shows it to the other occupants).
        const out = new Element('presence', { type: 'unavailable', from: session.jid?.full });
        if (stanza) for (const c of stanza.getChildElements()) if (c.name === 'status') out.cnode(clone(c));
        for (const d of session.directed) await send(withTo(out, d));
        session.directed.clear();
        return;
      }
      const jid = session.jid as Jid;
      const user = jid.toBare();
      const out = new Element('presence', { type: 'unavailable', from: jid.full });
      if (stanza) for (const c of stanza.getChildElements()) if (c.name === 'status') out.cnode(clone(c));
      session.available = false;
      session.presence = null;
      const to = await targets(user, ['from', 'both']);
      for (const d of session.directed) to.add(d);
      session.directed.clear();
      for (const contact of to) await send(withTo(out, contact));
      for (const s of ctx.sessions.available(user.bare)) s.send(withTo(out, s.jid?.full as string));
      if (session.state !== 'closed') session.send(withTo(out, jid.full));
      if (!ctx.sessions.available(user.bare).length) {
        const last = clone(out);
        last.attrs.from = user.bare;
        last.cnode(delayElement(user.domain, new Date()));
        lastUnavailable.set(user.bare, last);
        if (lastUnavailable.size > 100_000) lastUnavailable.clear();
      }
    }

    ctx.hook('session.closed', async ({ session }) => {
      await broadcastUnavailable(session, null);
    });

    /** Sends the user's current presence (every available resource) to a contact (after approval). */
    async function sendCurrentPresence(user: Jid, contact: string): Promise<void> {
      for (const s of ctx.sessions.available(user.bare)) if (s.presence) await send(withTo(s.presence, contact, s.jid?.full));
    }

    async function sendUnavailableFrom(user: Jid, contact: string): Promise<void> {
      for (const s of ctx.sessions.available(user.bare)) {
        await send(new Element('presence', { type: 'unavailable', from: s.jid?.full, to: contact }));
      }
    }

    async function send(el: Element): Promise<void> {
      try {
        await ctx.route(el);
      } catch (err) {
        ctx.log.warn({ err }, 'presence routing failed');
      }
    }
  },
});

function presence(from: string, to: string, type: string): Element {
  return new Element('presence', { from, to, type });
}

function withTo(el: Element, to: string, from?: string): Element {
  const c = clone(el);
  c.attrs.to = to;
  if (from) c.attrs.from = from;
  return c;
}

function itemElement(item: RosterItem): Element {
  const el = new Element('item', { jid: item.jid, name: item.name, subscription: item.subscription, ask: item.ask ? 'subscribe' : undefined, approved: item.approved ? 'true' : undefined });
  for (const g of item.groups) el.c('group').t(g);
  return el;
}
