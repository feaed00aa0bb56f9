// XEP-0163 Personal Eventing Protocol (v1.2) on every account's bare JID, over the XEP-0060 engine
// in ./engine.ts: §3 identity pubsub/pep and features, §4.1 publish with auto-create, §4.2
// implicit subscriptions (contacts with a from/both subscription, and the owner's own resources),
// §4.3 notifications filtered by XEP-0115 "+notify" features (§4.3.1 caps resolution with a
// verified per-hash cache), §4.3.3 last published item on presence and on new interest, §4.4
// access models presence (default), open and whitelist (owner only); XEP-0060 §7.1.5
// publish-options, enough for XEP-0384 OMEMO (open device lists and bundles), XEP-0084 avatars,
// XEP-0172 nicknames and XEP-0402 bookmarks.
//
// Interest (which full JIDs want which nodes of which account) is learnt from presence and kept in
// memory: contacts' available presence reaching the account (route.user) and the owner's own
// broadcasts (c2s.stanza). After a restart it is rebuilt as presence flows again (the owner's login
// probes its contacts).
//
// Disco: the pubsub/pep identity, the node list and node disco#info/#items go into the account's
// disco answers through the disco module's disco.account-info / disco.account-items folds.
import { randomBytes } from 'node:crypto';
import { clone, Element } from 'ltx';
import { z } from 'zod';
import { HANDLED } from '../../core/hooks.js';
import { defineModule } from '../../core/module.js';
import { StanzaError } from '../../xmpp/errors.js';
import type { Jid } from '../../xmpp/jid.js';
import { delayElement } from '../../xmpp/stanza.js';
import { CapsCache, capsOf, NS_DISCO_INFO, type CapsRef } from './caps.js';
import { type NodeConfig, NS_PUBSUB, NS_PUBSUB_OWNER, pubsubError } from './config.js';
import { PubsubEngine } from './engine.js';

const NOTIFY = '+notify';
const CAPS_TIMEOUT_MS = 10_000;

declare module '../../core/hooks.js' {
  interface HookMap {
    /**
     * Publish one <item/> to `owner`'s PEP node as the owner (XEP-0411 bridges); `options` are
     * XEP-0060 publish-options (var -> value). Throws StanzaError like an iq publish would.
     */
    'pep.publish': { owner: Jid; node: string; item: Element; options?: Record<string, string> };
    /** Retract one item from `owner`'s PEP node as the owner; throws StanzaError (item-not-found...). */
    'pep.retract': { owner: Jid; node: string; id: string; notify?: boolean };
    /**
     * The owner published `item` (with its final `id`) through an iq (XEP-0398 conversion listens);
     * not fired for pep.publish, so a module's own publish cannot come back to it.
     */
    'pep.published': { owner: Jid; node: string; id: string; item: Element };
  }
}

const FEATURES = [
  'access-open',
  'access-presence',
  'access-whitelist',
  'auto-create',
  'auto-subscribe',
  'config-node',
  'create-and-configure',
  'create-nodes',
  'delete-items',
  'delete-nodes',
  'filtered-notifications',
  'item-ids',
  'last-published',
  'multi-items',
  'persistent-items',
  'presence-notifications',
  'publish',
  'publish-options',
  'purge-nodes',
  'retract-items',
  'retrieve-affiliations',
  'retrieve-default',
  'retrieve-items',
  'retrieve-subscriptions',
].map((f) => `${NS_PUBSUB}#${f}`);

export default defineModule({
  name: 'pep',
  xeps: ['0163', '0060', '0115'],
  options: z
    .object({
      maxNodes: z.number().int().min(1).default(256).describe('Most PEP nodes per account'),
      maxItems: z.number().int().min(1).default(1000).describe('Most items per node (what pubsub#max_items=max means)'),
      maxPayloadBytes: z.number().int().min(256).default(128 * 1024).describe('Largest item payload in bytes'),
      capsCacheSize: z.number().int().min(1).default(5000).describe('Verified XEP-0115 hashes remembered'),
    })
    .strict(),
  setup(ctx) {
    const opts = ctx.options;
    const roster = ctx.storage.roster;
    const caps = new CapsCache(opts.capsCacheSize);
    /** owner bare -> interested full JID -> nodes it announced +notify for. */
    const interests = new Map<string, Map<string, Set<string>>>();
    /** owner bare \0 full JID -> presence generation, so a late caps answer cannot revive a gone resource. */
    const generation = new Map<string, number>();

    async function contactAccess(owner: string, contact: string, config: NodeConfig): Promise<StanzaError | null> {
      if (owner === contact || config.accessModel === 'open') return null;
      if (config.accessModel === 'whitelist') return pubsubError('not-allowed', 'closed-node', 'only the owner may access this node');
      const item = await roster.getItem(owner, contact);
      if (item && (item.subscription === 'from' || item.subscription === 'both')) return null;
      return pubsubError('not-authorized', 'presence-subscription-required', 'a presence subscription to the owner is required');
    }

    const send = async (el: Element) => {
      try {
        await ctx.route(el);
      } catch (err) {
        ctx.log.warn({ err }, 'PEP notification not delivered');
      }
    };

    const headline = (owner: string, to: string, event: Element): Element => {
      const msg = new Element('message', { from: owner, to, type: 'headline', id: randomBytes(8).toString('hex') });
      msg.cnode(event); // cnode returns the child, hence the separate statement
      return msg;
    };

    const engine = new PubsubEngine(ctx.storage.pubsub, { maxNodes: opts.maxNodes, maxItems: opts.maxItems, maxPayloadBytes: opts.maxPayloadBytes }, {
      isOwner: (service, who) => service.bare === who.bare,
      checkAccess: (service, config, who) => contactAccess(service.bare, who.bare, config),
      async broadcast(service, node, config, event) {
        const targets = interests.get(service.bare);
        if (!targets) return;
        const allowed = new Map<string, boolean>();
        for (const [full, nodes] of targets) {
          if (!nodes.has(node)) continue;
          const bare = full.slice(0, full.indexOf('/'));
          let ok = allowed.get(bare);
          if (ok === undefined) {
            ok = (await contactAccess(service.bare, bare, config)) === null;
            allowed.set(bare, ok);
          }
          if (ok) await send(headline(service.bare, full, clone(event)));
        }
      },
    });

    // ---- disco (XEP-0163 §3, XEP-0060 §5) ---------------------------------------------------------

    ctx.addIdentity({ category: 'pubsub', type: 'pep' });
    for (const f of FEATURES) ctx.addFeature(f, 'both');

    for (const type of ['get', 'set'] as const) {
      for (const ns of [NS_PUBSUB, NS_PUBSUB_OWNER]) {
        ctx.iq(
          type,
          ns,
          'pubsub',
          async (req) => {
            const res = await engine.handle(req.to.toBare(), req.from, type, req.payload);
            const publish = type === 'set' && ns === NS_PUBSUB ? req.payload.getChild('publish') : undefined;
            const item = publish?.getChild('item');
            const id = res?.getChild('publish')?.getChild('item')?.attrs.id as string | undefined;
            if (publish && item && id) await ctx.fire('pep.published', { owner: req.to.toBare(), node: String(publish.attrs.node), id, item });
            return res;
          },
          'account',
        );
      }
    }

    // Disco of the account (the disco module checks who may see the account; node visibility is
    // the node's access model, XEP-0060 §5.4-5.5).
    ctx.fold('disco.account-info', async (ev) => {
      if (!ev.node) {
        ev.query.c('identity', { category: 'pubsub', type: 'pep' });
        return ev;
      }
      const n = await engine.node(ev.owner, ev.node);
      if (!n || (await contactAccess(ev.owner.bare, ev.from.bare, n.config))) return ev;
      ev.query.c('identity', { category: 'pubsub', type: 'leaf' });
      ev.query.c('feature', { var: NS_PUBSUB });
      ev.found = true;
      return ev;
    });

    ctx.fold('disco.account-items', async (ev) => {
      const owner = ev.owner;
      if (!ev.node) {
        for (const n of await engine.nodes(owner)) {
          if ((await contactAccess(owner.bare, ev.from.bare, n.config)) === null) ev.query.c('item', { jid: owner.bare, node: n.name, name: n.config.title || undefined });
        }
        return ev;
      }
      const n = await engine.node(owner, ev.node);
      if (!n || (await contactAccess(owner.bare, ev.from.bare, n.config))) return ev;
      for (const it of await ctx.storage.pubsub.getItems(owner.bare, ev.node)) ev.query.c('item', { jid: owner.bare, name: it.id });
      ev.found = true;
      return ev;
    });

    // ---- interest from presence (XEP-0163 §4.3) ---------------------------------------------------

    function forget(owner: string, full: string): void {
      const key = `${owner}\u0000${full}`;
      generation.delete(key);
      const m = interests.get(owner);
      if (!m) return;
      m.delete(full);
      if (m.size === 0) interests.delete(owner);
    }

    async function queryCaps(owner: Jid, full: Jid, ref: CapsRef): Promise<Element> {
      const iq = new Element('iq', { type: 'get', from: owner.bare, to: full.full });
      iq.c('query', { xmlns: NS_DISCO_INFO, node: `${ref.node}#${ref.ver}` });
      const res = await ctx.request(iq, CAPS_TIMEOUT_MS);
      const q = res.getChild('query', NS_DISCO_INFO);
      if (!q) throw new Error('disco#info result without a query');
      return q;
    }

    /** Records what `full` (a contact's or the owner's resource) is interested in, from its presence. */
    async function observe(owner: Jid, full: Jid, presence: Element): Promise<void> {
      const key = `${owner.bare}\u0000${full.full}`;
      const gen = (generation.get(key) ?? 0) + 1;
      generation.set(key, gen);
      const ref = capsOf(presence);
      let features: Set<string> | null = null;
      if (ref) {
        try {
          features = caps.get(ref) ?? (await caps.resolve(ref, () => queryCaps(owner, full, ref)));
        } catch (err) {
          ctx.log.debug({ err, jid: full.full }, 'caps not resolved');
        }
      }
      if (generation.get(key) !== gen) return; // a newer presence (or unavailable) came meanwhile
      const nodes = new Set<string>();
      for (const f of features ?? []) if (f.endsWith(NOTIFY) && f.length > NOTIFY.length) nodes.add(f.slice(0, -NOTIFY.length));
      let m = interests.get(owner.bare);
      const before = m?.get(full.full);
      if (nodes.size === 0) {
        m?.delete(full.full);
        if (m && m.size === 0) interests.delete(owner.bare);
        return;
      }
      if (!m) interests.set(owner.bare, (m = new Map()));
      m.set(full.full, nodes);
      const fresh = [...nodes].filter((n) => !before?.has(n));
      if (fresh.length) await sendLast(owner, full, fresh);
    }

    /** XEP-0163 §4.3.3 / XEP-0060 §12.3: the last item of each node, to one newly interested resource. */
    async function sendLast(owner: Jid, full: Jid, nodes: string[]): Promise<void> {
      const existing = new Map((await engine.nodes(owner)).map((n) => [n.name, n]));
      for (const name of nodes) {
        const n = existing.get(name);
        if (!n || n.config.sendLast === 'never' || !n.config.deliverNotifications) continue;
        if (await contactAccess(owner.bare, full.bare, n.config)) continue;
        const last = await engine.lastItem(owner, name);
        if (!last) continue;
        const msg = headline(owner.bare, full.full, engine.itemsEvent(name, [last], n.config));
        msg.cnode(delayElement(owner.bare, new Date(last.updatedAt)));
        await send(msg);
      }
    }

    const observeLater = (owner: Jid, full: Jid, presence: Element) => {
      // Not awaited: resolving caps takes a round trip, and presence delivery must not wait for it.
      void observe(owner, full, presence).catch((err) => ctx.log.warn({ err }, 'PEP presence handling failed'));
    };

    ctx.hook(
      'route.user',
      async ({ stanza, to, from }) => {
        if (stanza.name !== 'presence' || !from?.resource || from.bare === to.bare) return;
        const type = stanza.attrs.type;
        if (type === undefined) observeLater(to.toBare(), from, stanza);
        else if (type === 'unavailable' || type === 'error') forget(to.bare, from.full);
      },
      20,
    );

    ctx.hook(
      'c2s.stanza',
      ({ session, stanza }) => {
        if (stanza.name !== 'presence' || stanza.attrs.to !== undefined || !session.jid) return;
        const type = stanza.attrs.type;
        if (type === undefined) observeLater(session.jid.toBare(), session.jid, stanza);
        else if (type === 'unavailable') forget(session.jid.bare, session.jid.full);
        return undefined;
      },
      5,
    );

    ctx.hook('session.closed', ({ session }) => {
      if (session.jid) forget(session.jid.bare, session.jid.full);
      return undefined;
    });

    // ---- bridges for other modules (XEP-0411) ---------------------------------------------------

    ctx.hook('pep.publish', async (ev) => {
      const options = new Map(Object.entries(ev.options ?? {}).map(([k, v]) => [k, [v]]));
      await engine.publish(ev.owner.toBare(), ev.owner, ev.node, ev.item, options);
      return HANDLED;
    });

    ctx.hook('pep.retract', async (ev) => {
      await engine.retract(ev.owner.toBare(), ev.owner, ev.node, ev.id, ev.notify);
      return HANDLED;
    });
  },
});

