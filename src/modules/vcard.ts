// XEP-0054 vcard-temp (v1.3): §3.1 retrieving one's vCard, §3.2 updating it, §3.3 viewing another
// user's vCard, §4 disco feature. The vCard is stored whole in the KeyValStore (store 'vcard', key
// ''); there are no partial updates (§3.2), and an empty <vCard/> set deletes it.
//
// Error choices (documented here because the XEP leaves some open):
//  - own vCard missing: an empty <vCard/> result (§3.1 allows it; item-not-found is not used).
//  - another user's vCard missing, or no such user: service-unavailable in both cases (§3.3 MUST, so
//    that vCard lookups cannot be used to harvest accounts; the core answers for unknown accounts).
//  - set to another user's JID: forbidden (§3.2); set to a server domain: not-allowed.
//  - a document larger than limits.privateItemBytes: not-acceptable (modify), with a text.
//  - the server domain's own vCard: an empty <vCard/>.
//  - hosts with `accounts: ldap`: a directory user's vCard comes from the directory (see
//    vcard-directory.ts); setting it is not-allowed (the directory is the system of record) unless
//    hosts.*.ldap.vcard.localEdits stores it here, the directory's elements taking precedence.
//  - a user without the `settings.save` right (settings.acl, Sun's sysSaveUserSettings): setting
//    their vCard is forbidden, logged with the deciding rule; reading it is not affected.
import { Element, parse } from 'ltx';
import { z } from 'zod';
import { formatRule } from '../core/acl.js';
import { defineModule } from '../core/module.js';
import { standalone } from '../xmpp/stanza.js';
import { stanzaError } from '../xmpp/errors.js';
import { NS } from '../xmpp/ns.js';
import { HANDLED } from '../core/hooks.js';
import type { Jid } from '../xmpp/jid.js';
import { directoryVcards, mergeVcards } from './vcard-directory.js';

declare module '../core/hooks.js' {
  interface HookMap {
    /** A client replaced its own vCard (already stored); `vcard` is null when it was deleted. */
    'vcard.changed': { user: Jid; previous: Element | null; vcard: Element | null };
    /**
     * Server-side access for other modules (XEP-0398 conversion): sets `vcard` to the stored vCard
     * and, with `update`, stores what it returns (null deletes, undefined leaves it). Does not fire
     * vcard.changed, so a conversion cannot trigger the reverse one. Throws not-acceptable when too large.
     */
    'vcard.edit': { user: Jid; update?: (current: Element | null) => Element | null | undefined; vcard?: Element | null; unavailable?: boolean };
  }
}

const STORE = 'vcard';
const KEY = '';

export default defineModule({
  name: 'vcard',
  xeps: ['0054'],
  options: z.object({}).strict(),
  setup(ctx) {
    const kv = ctx.storage.keyval;
    const maxBytes = ctx.config.limits.privateItemBytes;

    // §4: the server advertises vcard-temp; accounts get it through the iq namespaces.
    ctx.addFeature(NS.VCARD, 'server');

    const load = async (bare: string): Promise<Element | null> => {
      const stored = await kv.get(bare, STORE, KEY);
      if (stored === null) return null;
      try {
        return parse(stored);
      } catch (err) {
        ctx.log.warn({ err, user: bare }, 'unreadable stored vCard');
        return null;
      }
    };

    const directory = directoryVcards(ctx);

    ctx.hook('vcard.edit', async (ev) => {
      // On an outage the event says so (never a veto of the stanza that asked: avatars reads
      // vCards while handling presence, and must not take "unreadable" for "no photo").
      let fromDir: Element | null;
      try {
        fromDir = await directory.lookup(ev.user);
      } catch (err) {
        ctx.log.warn({ err: (err as Error).message, user: ev.user.bare }, 'directory vCard unavailable');
        ev.unavailable = true;
        return HANDLED;
      }
      if (fromDir && !directory.localEdits(ev.user.domain)) {
        ev.vcard = fromDir; // updates (PEP avatar conversion) do not reach the directory
        return HANDLED;
      }
      const current = await load(ev.user.bare);
      const next = ev.update ? ev.update(current) : undefined;
      if (next === undefined) {
        ev.vcard = current;
      } else if (next === null || next.getChildElements().length === 0) {
        await kv.delete(ev.user.bare, STORE, KEY);
        ev.vcard = null;
      } else {
        const xml = standalone(next).toString();
        if (Buffer.byteLength(xml, 'utf8') > maxBytes) throw stanzaError('not-acceptable', `vCard larger than ${maxBytes} bytes`);
        await kv.set(ev.user.bare, STORE, KEY, xml);
        ev.vcard = next;
      }
      if (fromDir) ev.vcard = mergeVcards(fromDir, ev.vcard ?? null);
      return HANDLED;
    });

    ctx.iq(
      'get',
      NS.VCARD,
      'vCard',
      async (req) => {
        if (!req.to.local) return new Element('vCard', { xmlns: NS.VCARD });
        const fromDir = await directory.lookup(req.to);
        if (fromDir) return directory.localEdits(req.to.domain) ? mergeVcards(fromDir, await load(req.to.bare)) : fromDir;
        const stored = await kv.get(req.to.bare, STORE, KEY);
        if (stored !== null) {
          try {
            return parse(stored);
          } catch (err) {
            ctx.log.warn({ err, user: req.to.bare }, 'unreadable stored vCard');
          }
        }
        // §3.1: one's own missing vCard is an empty element; §3.3: someone else's is service-unavailable.
        if (req.self) return new Element('vCard', { xmlns: NS.VCARD });
        throw stanzaError('service-unavailable');
      },
      'both',
    );

    ctx.iq(
      'set',
      NS.VCARD,
      'vCard',
      async (req) => {
        if (!req.to.local) throw stanzaError('not-allowed', 'the server vCard cannot be set in-band');
        if (!req.self) throw stanzaError('forbidden', 'only your own vCard can be set');
        const user = req.to.toBare();
        if (!ctx.acl.allows('settings.save', user)) {
          ctx.log.info({ user: user.bare, right: 'settings.save', rule: formatRule(ctx.acl.explain('settings.save', user)) }, 'vCard change refused: no right');
          throw stanzaError('forbidden', 'you may not change your settings');
        }
        if (directory.covers(req.to.domain) && !directory.localEdits(req.to.domain)) {
          throw stanzaError('not-allowed', 'vCards on this host come from the user directory');
        }
        const previous = await load(req.to.bare);
        if (req.payload.getChildElements().length === 0) {
          await kv.delete(req.to.bare, STORE, KEY);
          await ctx.fire('vcard.changed', { user: req.to.toBare(), previous, vcard: null });
          return undefined;
        }
        const xml = standalone(req.payload).toString();
        if (Buffer.byteLength(xml, 'utf8') > maxBytes) {
          throw stanzaError('not-acceptable', `vCard larger than ${maxBytes} bytes`);
        }
        await kv.set(req.to.bare, STORE, KEY, xml);
        await ctx.fire('vcard.changed', { user: req.to.toBare(), previous, vcard: req.payload });
        return undefined;
      },
      'both',
    );
  },
});
