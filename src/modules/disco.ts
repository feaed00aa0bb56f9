// XEP-0030 service discovery for the server and for accounts, and XEP-0115 entity capabilities of
// the server (advertised in stream features so clients can cache our disco#info).
import { Element } from 'ltx';
import { z } from 'zod';
import { defineModule } from '../core/module.js';
import { stanzaError } from '../xmpp/errors.js';
import type { Jid } from '../xmpp/jid.js';
import { NS } from '../xmpp/ns.js';

declare module '../core/hooks.js' {
  interface FoldMap {
    /**
     * disco#items of a local host (components, services); handlers append <item/> children. `from`
     * is the requester (XEP-0050 lists only the commands it may run).
     */
    'disco.server-items': { host: string; node: string | undefined; items: Element[]; from: Jid };
    /**
     * disco#info of a node of a local host other than the caps node (XEP-0050 command nodes): a
     * folder that knows the node fills `query` and sets `found`; nobody did: item-not-found.
     */
    'disco.server-node-info': { host: string; node: string; from: Jid; query: Element; found: boolean };
    /**
     * disco#info of an account. Without `node` the requester may see the account (itself or a
     * contact with a from/both subscription) and `query` already holds the account identity and
     * features: folders add identities (PEP). With `node`, the visibility is the folder's own
     * (XEP-0060 node access): one that knows the node fills `query` and sets `found`.
     */
    'disco.account-info': { owner: Jid; from: Jid; node: string | undefined; query: Element; found: boolean };
    /** disco#items of an account, same rules as disco.account-info (PEP lists its nodes, or a node's items). */
    'disco.account-items': { owner: Jid; from: Jid; node: string | undefined; query: Element; found: boolean };
  }
}

export default defineModule({
  name: 'disco',
  xeps: ['0030', '0115'],
  options: z
    .object({
      extraItems: z.array(z.object({ jid: z.string(), name: z.string().optional() }).strict()).default([]).describe('Extra items listed in disco#items of every host'),
    })
    .strict(),
  setup(ctx) {
    ctx.addFeature(NS.DISCO_ITEMS, 'both');
    ctx.addFeature(NS.CAPS, 'server');

    ctx.iq('get', NS.DISCO_INFO, 'query', async (req) => {
      const node = req.payload.attrs.node;
      const registry = ctx.discoRegistry();
      if (req.to.local) {
        const q = new Element('query', { xmlns: NS.DISCO_INFO, node });
        if (node) return accountNode('disco.account-info', req.to, req.from, node, q);
        await mayDiscover(req.to, req.from, req.self);
        q.c('identity', { category: 'account', type: 'registered' });
        for (const f of registry.features('account', ctx.iqNamespaces('account'))) q.c('feature', { var: f });
        return (await ctx.foldValue('disco.account-info', { owner: req.to.toBare(), from: req.from, node, query: q, found: true })).query;
      }
      const features = registry.features('server', ctx.iqNamespaces('server'));
      const ver = registry.capsVer(features);
      if (node && node !== `${CAPS_NODE}#${ver}`) {
        const q = new Element('query', { xmlns: NS.DISCO_INFO, node });
        const ev = await ctx.foldValue('disco.server-node-info', { host: req.to.domain, node, from: req.from, query: q, found: false });
        if (!ev.found) throw stanzaError('item-not-found');
        return ev.query;
      }
      const q = new Element('query', { xmlns: NS.DISCO_INFO, node });
      for (const id of registry.identities) q.c('identity', { category: id.category, type: id.type, name: id.name });
      for (const f of features) q.c('feature', { var: f });
      return q;
    }, 'both');

    ctx.iq('get', NS.DISCO_ITEMS, 'query', async (req) => {
      const node = req.payload.attrs.node;
      const q = new Element('query', { xmlns: NS.DISCO_ITEMS, node });
      if (req.to.local) {
        if (node) return accountNode('disco.account-items', req.to, req.from, node, q);
        await mayDiscover(req.to, req.from, req.self);
        return (await ctx.foldValue('disco.account-items', { owner: req.to.toBare(), from: req.from, node, query: q, found: true })).query;
      }
      const ev = await ctx.foldValue('disco.server-items', { host: req.to.domain, node, items: [], from: req.from });
      if (!node) {
        // Issue 9: a service the requester is not entitled to is not listed for them.
        for (const sv of ctx.servicesOf(req.to.domain)) {
          if (sv.entitlement && !ctx.acl.entitled(sv.entitlement, req.from)) continue;
          q.c('item', { jid: sv.jid, name: sv.name });
        }
        for (const i of ctx.options.extraItems) q.c('item', { jid: i.jid, name: i.name });
      }
      for (const i of ev.items) q.cnode(i);
      return q;
    }, 'both');

    /** An account is visible to itself and to contacts with a presence subscription (XEP-0030 §6). */
    async function mayDiscover(owner: Jid, from: Jid, self: boolean): Promise<void> {
      if (self) return;
      const item = await ctx.storage.roster.getItem(owner.bare, from.bare);
      if (!item || (item.subscription !== 'from' && item.subscription !== 'both')) throw stanzaError('service-unavailable');
    }

    async function accountNode(hook: 'disco.account-info' | 'disco.account-items', owner: Jid, from: Jid, node: string, query: Element): Promise<Element> {
      const ev = await ctx.foldValue(hook, { owner: owner.toBare(), from, node, query, found: false });
      if (!ev.found) throw stanzaError('item-not-found');
      return ev.query;
    }

    ctx.fold('c2s.features', (ev) => {
      const registry = ctx.discoRegistry();
      const ver = registry.capsVer(registry.features('server', ctx.iqNamespaces('server')));
      ev.features.c('c', { xmlns: NS.CAPS, hash: 'sha-1', node: CAPS_NODE, ver });
      return ev;
    });
  },
});

export const CAPS_NODE = 'https://parley.im/caps';
