// XEP-0049 Private XML Storage (v1.2): §2.3 get/set of arbitrary XML keyed by the namespace of the
// fragment's root, §3 error conditions, §4 only the account itself may read or write its data.
// Each namespace is one document in the KeyValStore (store 'private', key = the namespace); a set
// may carry several children, and children sharing a namespace are stored together (§2.3 "an IQ set
// or result MAY contain multiple elements qualified by the same namespace").
//
// Error choices:
//  - another account's data: forbidden (§3).
//  - no child, or a child in no namespace / jabber:client / jabber:server / jabber:iq:private:
//    not-acceptable (§2.3 MUST; the "Bad Format" of the get example is the legacy 406 code, which
//    is not-acceptable in RFC 6120 terms).
//  - a get naming more than one namespace: bad-request (§2.3 "MUST NOT query for more than one").
//  - a document larger than limits.privateItemBytes: not-acceptable (modify), with a text.
//  - more than limits.privateStorageItems namespaces: resource-constraint (cancel: retrying won't help).
import { Element, parse } from 'ltx';
import { z } from 'zod';
import { defineModule } from '../core/module.js';
import type { HookMap } from '../core/hooks.js';
import { serializer } from '../core/serializer.js';
import { standalone } from '../xmpp/stanza.js';
import { StanzaError, stanzaError } from '../xmpp/errors.js';
import { NS } from '../xmpp/ns.js';
import type { Jid } from '../xmpp/jid.js';

declare module '../core/hooks.js' {
  interface HookMap {
    /** A get of one namespace: a module keeping it elsewhere (XEP-0411 bookmarks) sets `result` and returns HANDLED. */
    'private.get': { user: Jid; ns: string; result: Element[] | null };
    /** A set of one namespace (already size-checked): a module keeping it elsewhere stores it and returns HANDLED; a StanzaError refuses. */
    'private.set': { user: Jid; ns: string; fragments: Element[] };
  }
}

const STORE = 'private';
const RESERVED = new Set<string>(['', NS.CLIENT, NS.SERVER, NS.PRIVATE]);
const MAX_NS_LENGTH = 1024;

export default defineModule({
  name: 'private',
  xeps: ['0049'],
  options: z.object({}).strict(),
  setup(ctx) {
    const kv = ctx.storage.keyval;
    const { privateStorageItems: maxItems, privateItemBytes: maxBytes } = ctx.config.limits;
    const serial = serializer();

    ctx.iq(
      'get',
      NS.PRIVATE,
      'query',
      async (req) => {
        if (!req.self) throw stanzaError('forbidden', 'private XML belongs to its account only');
        const children = req.payload.getChildElements();
        if (children.length === 0) throw stanzaError('not-acceptable', 'name the namespace to retrieve');
        if (children.length > 1) throw stanzaError('bad-request', 'one namespace per request');
        const wanted = children[0] as Element;
        const ns = namespaceOf(wanted);
        const q = new Element('query', { xmlns: NS.PRIVATE });
        const taken: HookMap['private.get'] = { user: req.to.toBare(), ns, result: null };
        if ((await ctx.fire('private.get', taken)) && taken.result) {
          for (const el of taken.result) q.cnode(el);
          return q;
        }
        const stored = await kv.get(req.to.bare, STORE, ns);
        if (stored === null) {
          // Nothing stored: echo the (empty) element that was asked for (§2.3).
          q.cnode(new Element(wanted.name, standalone(wanted).attrs));
          return q;
        }
        try {
          for (const el of parse(stored).getChildElements()) q.cnode(el);
        } catch (err) {
          ctx.log.warn({ err, user: req.to.bare, ns }, 'unreadable private XML');
          q.cnode(new Element(wanted.name, standalone(wanted).attrs));
        }
        return q;
      },
      'account',
    );

    ctx.iq(
      'set',
      NS.PRIVATE,
      'query',
      async (req) => {
        if (!req.self) throw stanzaError('forbidden', 'private XML belongs to its account only');
        const children = req.payload.getChildElements();
        if (children.length === 0) throw stanzaError('not-acceptable', 'nothing to store');
        // Group by namespace; validate everything before writing anything.
        const docs = new Map<string, Element>();
        for (const child of children) {
          const ns = namespaceOf(child);
          let doc = docs.get(ns);
          if (!doc) {
            // A wrapper holds one or more fragments of one namespace; it is never sent to clients.
            doc = new Element('private', { xmlns: NS.PRIVATE });
            docs.set(ns, doc);
          }
          doc.cnode(standalone(child));
        }
        const values = new Map<string, string>();
        for (const [ns, doc] of docs) {
          const xml = doc.toString();
          if (Buffer.byteLength(xml, 'utf8') > maxBytes) {
            throw stanzaError('not-acceptable', `private XML for ${ns} is larger than ${maxBytes} bytes`);
          }
          values.set(ns, xml);
        }
        for (const [ns, doc] of docs) {
          if (await ctx.fire('private.set', { user: req.to.toBare(), ns, fragments: doc.getChildElements() })) values.delete(ns);
        }
        const user = req.to.bare;
        await serial(user, async () => {
          let fresh = 0;
          for (const ns of values.keys()) if ((await kv.get(user, STORE, ns)) === null) fresh++;
          if (fresh > 0 && (await kv.count(user, STORE)) + fresh > maxItems) {
            throw new StanzaError('cancel', 'resource-constraint', `private storage is limited to ${maxItems} namespaces`);
          }
          for (const [ns, xml] of values) await kv.set(user, STORE, ns, xml);
        });
        return undefined;
      },
      'account',
    );
  },
});

/** The namespace a fragment is stored under; throws not-acceptable for reserved or missing ones. */
function namespaceOf(el: Element): string {
  const ns = el.getNS() ?? '';
  if (RESERVED.has(ns)) throw stanzaError('not-acceptable', 'the fragment needs its own namespace');
  if (ns.length > MAX_NS_LENGTH) throw stanzaError('not-acceptable', 'namespace too long');
  return ns;
}
