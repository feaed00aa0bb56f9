// XEP-0402 PEP Native Bookmarks (v1.2) with XEP-0411 (v1.0) compatibility for XEP-0048 clients that
// use XEP-0049 private storage. The XEP-0402 node (urn:xmpp:bookmarks:1, one item per conference,
// item id = room JID, whitelist access) lives in PEP; this module only bridges:
//  - XEP-0411 §3 / XEP-0402 §4 "compat": a private-storage read of storage:bookmarks is built from
//    the PEP node, and a private-storage write updates the node (publish changed conferences,
//    retract removed ones), so PEP subscribers are notified as for a XEP-0402 client;
//  - announces urn:xmpp:bookmarks:1#compat on the account.
// XEP-0048 <url/> bookmarks have no XEP-0402 form; they are kept in private storage beside the node
// and merged back into reads. Per-conference <extensions/> written by XEP-0402 clients survive a
// XEP-0048 rewrite. Not done: the #compat-pep bridge (XEP-0048 through the PEP node storage:bookmarks).
import { Element, parse } from 'ltx';
import { z } from 'zod';
import { HANDLED } from '../core/hooks.js';
import { defineModule } from '../core/module.js';
import { stanzaError } from '../xmpp/errors.js';
import { Jid } from '../xmpp/jid.js';
import type { PubsubItem } from '../storage/types.js';

const NS_BOOKMARKS = 'urn:xmpp:bookmarks:1';
const NS_LEGACY = 'storage:bookmarks';
/** KeyVal store/key for what XEP-0402 cannot hold (URL bookmarks). */
const KV_STORE = 'bookmarks';
const KV_EXTRA = 'legacy-extra';
/** XEP-0402 §3 publish-options, used when the bridge creates the node. */
const NODE_OPTIONS: Record<string, string> = {
  'pubsub#persist_items': 'true',
  'pubsub#max_items': 'max',
  'pubsub#send_last_published_item': 'never',
  'pubsub#access_model': 'whitelist',
};

export default defineModule({
  name: 'bookmarks',
  xeps: ['0402', '0411', '0048'],
  options: z.object({}).strict(),
  setup(ctx) {
    ctx.addFeature(`${NS_BOOKMARKS}#compat`, 'account');
    const pubsub = ctx.storage.pubsub;
    const kv = ctx.storage.keyval;

    ctx.hook('private.get', async (ev) => {
      if (ev.ns !== NS_LEGACY) return;
      const storage = new Element('storage', { xmlns: NS_LEGACY });
      for (const it of await pubsub.getItems(ev.user.bare, NS_BOOKMARKS)) {
        const legacy = toLegacy(it);
        if (legacy) storage.cnode(legacy);
      }
      const extra = await kv.get(ev.user.bare, KV_STORE, KV_EXTRA);
      if (extra) {
        try {
          for (const el of parse(extra).getChildElements()) storage.cnode(el);
        } catch (err) {
          ctx.log.warn({ err }, 'unreadable legacy bookmark extras');
        }
      }
      ev.result = [storage];
      return HANDLED;
    });

    ctx.hook('private.set', async (ev) => {
      if (ev.ns !== NS_LEGACY) return;
      const wanted = new Map<string, Element>();
      const extra = new Element('storage', { xmlns: NS_LEGACY });
      for (const storage of ev.fragments) {
        if (storage.name !== 'storage') throw stanzaError('not-acceptable', 'storage:bookmarks data goes in <storage/>');
        for (const el of storage.getChildElements()) {
          if (el.name !== 'conference') {
            extra.cnode(el);
            continue;
          }
          const room = Jid.tryParse(el.attrs.jid);
          if (!room) throw stanzaError('not-acceptable', `invalid conference JID ${el.attrs.jid ?? ''}`);
          wanted.set(room.bare, el);
        }
      }
      const user = ev.user;
      const current = new Map((await pubsub.getItems(user.bare, NS_BOOKMARKS)).map((it) => [it.id, it]));
      let nodeExists = (await pubsub.getNode(user.bare, NS_BOOKMARKS)) !== null;
      for (const [room, legacy] of wanted) {
        const old = current.get(room);
        const conference = toNative(legacy, old);
        if (old && old.payload === conference.toString()) continue;
        const item = new Element('item', { id: room });
        item.cnode(conference);
        const options = nodeExists ? undefined : NODE_OPTIONS;
        if (!(await ctx.fire('pep.publish', { owner: user, node: NS_BOOKMARKS, item, options }))) return; // no PEP: plain private storage
        nodeExists = true;
      }
      for (const id of current.keys()) {
        if (wanted.has(id)) continue;
        if (!(await ctx.fire('pep.retract', { owner: user, node: NS_BOOKMARKS, id, notify: true }))) return;
      }
      if (extra.children.length) await kv.set(user.bare, KV_STORE, KV_EXTRA, extra.toString());
      else await kv.delete(user.bare, KV_STORE, KV_EXTRA);
      return HANDLED;
    });
  },
});

/** XEP-0402 item -> XEP-0048 <conference/> (XEP-0411 §3 mapping). */
function toLegacy(it: PubsubItem): Element | null {
  let c: Element;
  try {
    c = parse(it.payload);
  } catch {
    return null;
  }
  if (c.name !== 'conference' || c.attrs.xmlns !== NS_BOOKMARKS) return null;
  const out = new Element('conference', { jid: it.id, name: c.attrs.name, autojoin: isTrue(c.attrs.autojoin) ? 'true' : 'false' });
  const nick = c.getChildText('nick');
  if (nick !== null) out.c('nick').t(nick);
  const password = c.getChildText('password');
  if (password !== null) out.c('password').t(password);
  return out;
}

/** XEP-0048 <conference/> -> XEP-0402 payload, keeping the extensions of the item it replaces. */
function toNative(legacy: Element, old: PubsubItem | undefined): Element {
  const c = new Element('conference', { xmlns: NS_BOOKMARKS, name: legacy.attrs.name, autojoin: isTrue(legacy.attrs.autojoin) ? 'true' : undefined });
  const nick = legacy.getChildText('nick');
  if (nick) c.c('nick').t(nick);
  const password = legacy.getChildText('password');
  if (password) c.c('password').t(password);
  if (old) {
    try {
      const ext = parse(old.payload).getChild('extensions');
      if (ext) c.cnode(ext);
    } catch {
      /* nothing to keep from an unreadable item */
    }
  }
  return c;
}

function isTrue(v: string | undefined): boolean {
  return v === 'true' || v === '1';
}
