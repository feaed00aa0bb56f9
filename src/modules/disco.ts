// XEP-0030 service discovery for the server and for accounts, and XEP-0115 entity capabilities of
// the server (advertised in stream features so clients can cache our disco#info).
import { Element } from 'ltx';
import { z } from 'zod';
import { defineModule } from '../core/module.js';
import { stanzaError } from '../xmpp/errors.js';
import { NS } from '../xmpp/ns.js';

declare module '../core/hooks.js' {
  interface HookMap {
    /** disco#items of a local host (components, services); handlers append <item/> children. */
    'disco.server-items': { host: string; node: string | undefined; items: Element[] };
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
        // An account: visible to itself and to contacts with a presence subscription (XEP-0030 §6).
        if (!req.self) {
          const item = await ctx.storage.roster.getItem(req.to.bare, req.from.bare);
          if (!item || (item.subscription !== 'from' && item.subscription !== 'both')) throw stanzaError('service-unavailable');
        }
        if (node) throw stanzaError('item-not-found');
        const q = new Element('query', { xmlns: NS.DISCO_INFO });
        q.c('identity', { category: 'account', type: 'registered' });
        for (const f of registry.features('account', ctx.iqNamespaces('account'))) q.c('feature', { var: f });
        return q;
      }
      const features = registry.features('server', ctx.iqNamespaces('server'));
      const ver = registry.capsVer(features);
      if (node && node !== `${CAPS_NODE}#${ver}`) throw stanzaError('item-not-found');
      const q = new Element('query', { xmlns: NS.DISCO_INFO, node });
      for (const id of registry.identities) q.c('identity', { category: id.category, type: id.type, name: id.name });
      for (const f of features) q.c('feature', { var: f });
      return q;
    }, 'both');

    ctx.iq('get', NS.DISCO_ITEMS, 'query', async (req) => {
      const node = req.payload.attrs.node;
      const q = new Element('query', { xmlns: NS.DISCO_ITEMS, node });
      if (req.to.local) {
        if (!req.self) {
          const item = await ctx.storage.roster.getItem(req.to.bare, req.from.bare);
          if (!item || (item.subscription !== 'from' && item.subscription !== 'both')) throw stanzaError('service-unavailable');
        }
        return q; // PEP nodes are listed by the PEP module once it exists
      }
      const ev = await ctx.foldValue('disco.server-items', { host: req.to.domain, node, items: [] });
      if (!node) for (const i of ctx.options.extraItems) q.c('item', { jid: i.jid, name: i.name });
      for (const i of ev.items) q.cnode(i);
      return q;
    }, 'both');

    ctx.fold('c2s.features', (ev) => {
      const registry = ctx.discoRegistry();
      const ver = registry.capsVer(registry.features('server', ctx.iqNamespaces('server')));
      ev.features.c('c', { xmlns: NS.CAPS, hash: 'sha-1', node: CAPS_NODE, ver });
      return ev;
    });
  },
});

export const CAPS_NODE = 'https://parley.im/caps';
