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
//
// Migration: a storage:bookmarks document written through XEP-0049 before this bridge existed is
// still in the private module's store, where nothing reads it any more. At login (session.bound,
// so a XEP-0402 client's first retrieval already sees them) and before every bridged read or
// write, its conferences are published to the node (a room already there is left as the node has
// it), anything else goes beside the node like URL bookmarks, and the document is deleted, so it
// is migrated once. Without PEP the document stays and private storage keeps serving it.
import { Element, parse } from 'ltx';
import { z } from 'zod';
import { HANDLED } from '../core/hooks.js';
import { defineModule } from '../core/module.js';
import { serializer } from '../core/serializer.js';
import { StanzaError, stanzaError } from '../xmpp/errors.js';
import { Jid } from '../xmpp/jid.js';
import type { PubsubItem } from '../storage/types.js';

const NS_BOOKMARKS = 'urn:xmpp:bookmarks:1';
const NS_LEGACY = 'storage:bookmarks';
/** KeyVal store/key for what XEP-0402 cannot hold (URL bookmarks). */
const KV_STORE = 'bookmarks';
const KV_EXTRA = 'legacy-extra';
/** Where the private module (src/modules/private.ts) keeps XEP-0049 documents: store, key = namespace. */
const PRIVATE_STORE = 'private';
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
    // Two logins at once must not both migrate the same document.
    const serial = serializer();

    /**
     * Moves a pre-bridge XEP-0049 storage:bookmarks document into the XEP-0402 node (see the banner).
     * Resolves false when there is no PEP to move it to (the document then stays where it is).
     */
    function migrate(user: Jid): Promise<boolean> {
      return serial(user.bare, async () => {
        const raw = await kv.get(user.bare, PRIVATE_STORE, NS_LEGACY);
        if (raw === null) return true;
        let doc: Element;
        try {
          doc = parse(raw);
        } catch (err) {
          // Left in place: deleting what cannot be read would lose it for good.
          ctx.log.warn({ err, user: user.bare }, 'unreadable legacy bookmarks document not migrated');
          return true;
        }
        const extra: Element[] = [];
        const present = new Set((await pubsub.getItems(user.bare, NS_BOOKMARKS)).map((it) => it.id));
        let nodeExists = (await pubsub.getNode(user.bare, NS_BOOKMARKS)) !== null;
        let moved = 0;
        // XEP-0048 puts everything in <storage/>; anything else in the namespace was never a bookmark.
        for (const storage of doc.getChildElements().filter((c) => c.name === 'storage')) {
          for (const el of storage.getChildElements()) {
            const room = el.name === 'conference' ? Jid.tryParse(el.attrs.jid) : null;
            if (!room) {
              extra.push(el);
              continue;
            }
            if (present.has(room.bare)) continue;
            const item = new Element('item', { id: room.bare });
            item.cnode(toNative(el, undefined));
            const options = nodeExists ? undefined : NODE_OPTIONS;
            try {
              if (!(await ctx.fire('pep.publish', { owner: user, node: NS_BOOKMARKS, item, options }))) return false;
            } catch (err) {
              if (!(err instanceof StanzaError)) throw err;
              // Refused by PEP (size, node limits): kept beside the node so XEP-0048 reads still show it.
              ctx.log.warn({ err, user: user.bare, room: room.bare }, 'legacy bookmark not migrated to PEP');
              extra.push(el);
              continue;
            }
            present.add(room.bare);
            nodeExists = true;
            moved++;
          }
        }
        if (extra.length) {
          const merged = new Element('storage', { xmlns: NS_LEGACY });
          const seen = new Set<string>();
          let kept: Element[] = [];
          const old = await kv.get(user.bare, KV_STORE, KV_EXTRA);
          if (old) {
            try {
              kept = parse(old).getChildElements();
            } catch (err) {
              ctx.log.warn({ err, user: user.bare }, 'unreadable legacy bookmark extras replaced');
            }
          }
          for (const el of [...kept, ...extra]) {
            const key = el.toString();
            if (seen.has(key)) continue;
            seen.add(key);
            merged.cnode(el);
          }
          await kv.set(user.bare, KV_STORE, KV_EXTRA, merged.toString());
        }
        await kv.delete(user.bare, PRIVATE_STORE, NS_LEGACY);
        ctx.log.info({ user: user.bare, conferences: moved, kept: extra.length }, 'legacy bookmarks migrated to PEP');
        return true;
      });
    }

    ctx.hook('session.bound', async ({ session }) => {
      if (session.jid) await migrate(session.jid.toBare());
      return undefined;
    });

    ctx.hook('private.get', async (ev) => {
      if (ev.ns !== NS_LEGACY) return;
      // No PEP to migrate to: the private module serves the document it holds.
      if (!(await migrate(ev.user))) return;
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
      // First, so that a conference this write leaves out is retracted, not resurrected later.
      if (!(await migrate(user))) return;
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
