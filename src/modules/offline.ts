// XEP-0160 offline messages: chat/normal messages with content for an account without an available
// resource are committed to storage (with a XEP-0203 delay) before the sender's next stanza is
// processed, and delivered when the account sends initial presence with a non-negative priority.
// Per-user quota: the sender gets resource-constraint. A failed write reaches the sender as an error.
// After a successful write, `offline.stored` tells the modules that act on messages waiting for the
// user (XEP-0357 push), so nothing is announced for a message storage refused.
import { clone, parse, type Element } from 'ltx';
import { z } from 'zod';
import { defineModule } from '../core/module.js';
import { HANDLED } from '../core/hooks.js';
import { StanzaError } from '../xmpp/errors.js';
import type { Jid } from '../xmpp/jid.js';
import { delayElement } from '../xmpp/stanza.js';

declare module '../core/hooks.js' {
  interface HookMap {
    /**
     * A message was committed to `to`'s offline storage. `stanza` is the routed message (the very
     * element message.offline carried, not the stored copy with its delay); `redelivery` as on
     * message.offline. Fired without waiting: handlers cannot hold up or refuse the message.
     */
    'offline.stored': { stanza: Element; to: Jid; redelivery: boolean };
  }
}

const HINTS = 'urn:xmpp:hints';
/** Payloads worth storing even without a body (XEP-0160 §3 leaves this to the server). */
const STORE_PAYLOADS = new Set(['jabber:x:conference', 'jabber:x:oob', 'urn:xmpp:jingle-message:0', 'http://jabber.org/protocol/muc#user', 'urn:xmpp:receipts', 'eu.siacs.conversations.axolotl', 'urn:xmpp:omemo:2']);

export default defineModule({
  name: 'offline',
  xeps: ['0160', '0203'],
  options: z.object({}).strict(),
  setup(ctx) {
    ctx.addFeature('msgoffline');
    const quota = ctx.config.limits.offlineQuota;

    ctx.hook('message.offline', async ({ stanza, to, redelivery }) => {
      const type = stanza.attrs.type ?? 'normal';
      if (type !== 'normal' && type !== 'chat') return HANDLED; // headline, groupchat, error: not stored
      const children = stanza.getChildElements();
      if (children.some((c) => c.attrs.xmlns === HINTS && c.name === 'no-store')) return HANDLED;
      const worth = children.some(
        (c) => c.name === 'body' || c.name === 'subject' || STORE_PAYLOADS.has(c.attrs.xmlns ?? '') || (c.attrs.xmlns === HINTS && c.name === 'store'),
      );
      if (!worth) return HANDLED; // chat states and the like are dropped silently
      const stamp = new Date();
      const copy = clone(stanza);
      copy.cnode(delayElement(to.domain, stamp, 'Offline Storage'));
      let id: number | null;
      try {
        id = await ctx.storage.offline.push(to.bare, copy.toString(), stamp.getTime(), quota);
      } catch (err) {
        ctx.log.error({ err, user: to.bare }, 'offline storage write failed');
        throw new StanzaError('wait', 'internal-server-error', 'the message could not be stored');
      }
      if (id === null) throw new StanzaError('wait', 'resource-constraint', 'offline storage for this user is full');
      // Awaited: handlers (push notifications) only start what they do, e.g. route a publish, and do
      // not wait for anyone's answer; so once the sender's stanza is handled, its consequences are
      // on their way, in order with what the sender does next.
      await ctx.fire('offline.stored', { stanza, to, redelivery: redelivery === true }).catch((err: unknown) => ctx.log.error({ err, user: to.bare }, 'offline.stored hook failed'));
      return HANDLED;
    });

    ctx.hook('presence.initial', async ({ session }) => {
      if (session.priority < 0 || !session.jid) return;
      const user = session.jid.bare;
      const messages = await ctx.storage.offline.list(user, quota);
      if (!messages.length) return;
      const delivered: number[] = [];
      for (const m of messages) {
        if (session.state === 'closed') break;
        try {
          const el = parse(m.stanza);
          el.attrs.to = session.jid.full;
          session.send(el);
        } catch (err) {
          ctx.log.warn({ err, user }, 'dropping unreadable offline message');
        }
        delivered.push(m.id);
      }
      await ctx.storage.offline.remove(user, delivered);
    });
  },
});
