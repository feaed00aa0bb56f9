// XEP-0357 Push Notifications (urn:xmpp:push:0, v0.4.1): "Discovering Support" (feature on the
// account), "Enabling Notifications" (jid + node + optional pubsub#publish-options form; the same
// jid+node again replaces the earlier options), "Disabling Notifications" (one node, or every node
// of a service), "Publishing Notifications" (a pubsub publish of <notification/> with the
// urn:xmpp:push:summary form, plus the publish options; an error reply disables that jid+node),
// "Remote Disabling of Notifications" (an affiliation-none notice from the service disables it),
// "Security Considerations" (no message body unless the operator allows it).
// An app server on a domain this server does not host is refused at enable time with
// feature-not-implemented until server-to-server federation exists (it could never be reached).
//
// What warrants a notification (the XEP leaves it to the server): a chat or normal message with a
// body, an encrypted payload or a call proposal (XEP-0353) that either was committed to offline
// storage (hook offline.stored, fired by the offline module after a successful write: a message
// storage refused, over quota or on a write failure, announces nothing) or is held for a session
// waiting for XEP-0198 resumption (hook session.held). A held message that the session never
// acknowledged goes to offline storage when the hibernation ends (a redelivery): it was notified
// when held, so it is neither counted nor notified again. Chat states, receipts, headlines and
// groupchat messages do not wake a phone.
//
// message-count counts the messages notified since the user was last online (reset when a session
// sends initial presence or is resumed). Notifications are rate-limited per registration: within
// `minIntervalMs` of the last one, further messages are folded into one trailing notification that
// carries the updated count, so the app server is not flooded and the last message is not lost.
import { randomBytes } from 'node:crypto';
import { Element } from 'ltx';
import { z } from 'zod';
import { defineModule } from '../core/module.js';
import { serializer } from '../core/serializer.js';
import { StanzaError, stanzaError } from '../xmpp/errors.js';
import { Jid } from '../xmpp/jid.js';

export const NS_PUSH = 'urn:xmpp:push:0';
const NS_PUBSUB = 'http://jabber.org/protocol/pubsub';
const NS_XDATA = 'jabber:x:data';
const FORM_SUMMARY = 'urn:xmpp:push:summary';
const FORM_PUBLISH_OPTIONS = 'http://jabber.org/protocol/pubsub#publish-options';
/** Payloads that make a body-less message worth a notification (encrypted chats, calls). */
const NOTIFY_PAYLOADS = new Set(['eu.siacs.conversations.axolotl', 'urn:xmpp:omemo:2', 'urn:xmpp:openpgp:0', 'jabber:x:encrypted']);
const NS_JINGLE_MESSAGE = 'urn:xmpp:jingle-message:0';

const STORE = 'push';
const KEY = 'registrations';
/** Bounds on what a client may store through the publish-options form. */
const MAX_FIELDS = 16;
const MAX_VALUES = 8;
const MAX_VALUE_CHARS = 1024;
const MAX_NODE_CHARS = 1024;
/** Bounds on in-memory state (users with pending counts, rate-limit entries). */
const MAX_TRACKED = 50_000;

const optionsSchema = z
  .object({
    maxRegistrations: z.number().int().min(1).max(100).default(10).describe('Most push registrations (app server jid + node) one account may hold.'),
    minIntervalMs: z.number().int().min(0).max(3_600_000).default(10_000).describe('Least time between two notifications to one registration (0 disables the rate limit).'),
    includeSender: z.boolean().default(true).describe('Include last-message-sender (the sender\'s JID) in the summary form.'),
    includeBody: z.boolean().default(false).describe('Include last-message-body; off by default, since bodies then pass through third parties.'),
    maxBodyChars: z.number().int().min(1).max(4096).default(256).describe('Longest body included, in characters (longer ones are cut).'),
    notifyFrom: z.enum(['account', 'server']).default('account').describe('Notifications come from the user\'s bare JID (\'account\', as Prosody does) or the server\'s domain (XEP-0357 v0.3+ examples).'),
    timeoutMs: z.number().int().min(1000).max(120_000).default(30_000).describe('How long to wait for the app server\'s answer, in ms.'),
  })
  .strict();

interface FormField {
  var: string;
  values: string[];
}

/** One enabled push service, as stored (JSON) in keyval store 'push'. */
interface Registration {
  /** Random id: a late error reply must not remove a registration re-enabled meanwhile. */
  id: string;
  jid: string;
  node: string;
  /** Fields of the client's publish-options form (FORM_TYPE included), rebuilt on each publish. */
  options?: FormField[];
  since: number;
}

interface Pending {
  count: number;
  sender?: string;
  body?: string;
}

const registrationSchema = z.object({
  id: z.string(),
  jid: z.string(),
  node: z.string(),
  options: z.array(z.object({ var: z.string(), values: z.array(z.string()) })).optional(),
  since: z.number(),
});

function field(name: string, value: string, type?: string): Element {
  const f = new Element('field', type ? { var: name, type } : { var: name });
  f.c('value').t(value);
  return f;
}

/** Validates the client's publish-options form and keeps only var/values (nothing else is echoed). */
function parsePublishOptions(x: Element): FormField[] {
  if (x.attrs.type !== 'submit') throw stanzaError('bad-request', 'publish options must be a submitted form');
  const fields: FormField[] = [];
  let formType: string | undefined;
  for (const f of x.getChildElements()) {
    if (f.name !== 'field') continue;
    const name = f.attrs.var;
    if (!name || name.length > 256) throw stanzaError('bad-request', 'every field needs a var');
    const values = f.getChildElements().filter((v) => v.name === 'value').map((v) => v.getText());
    if (values.length > MAX_VALUES || values.some((v) => v.length > MAX_VALUE_CHARS)) throw stanzaError('bad-request', 'publish options too large');
    if (name === 'FORM_TYPE') formType = values[0];
    if (fields.some((e) => e.var === name)) throw stanzaError('bad-request', `duplicate field ${name}`);
    fields.push({ var: name, values });
  }
  if (formType !== FORM_PUBLISH_OPTIONS) throw stanzaError('bad-request', `the form's FORM_TYPE must be ${FORM_PUBLISH_OPTIONS}`);
  if (fields.length > MAX_FIELDS) throw stanzaError('bad-request', 'too many publish options');
  return fields;
}

function worthNotifying(stanza: Element): boolean {
  if (stanza.name !== 'message') return false;
  const type = stanza.attrs.type ?? 'normal';
  if (type !== 'chat' && type !== 'normal') return false;
  return stanza.getChildElements().some(
    (c) => c.name === 'body' || NOTIFY_PAYLOADS.has(c.attrs.xmlns ?? '') || (c.attrs.xmlns === NS_JINGLE_MESSAGE && c.name === 'propose'),
  );
}

export default defineModule({
  name: 'push',
  xeps: ['0357'],
  options: optionsSchema,
  setup(ctx) {
    const opts = ctx.options;
    const serial = serializer();
    /** Per user: messages notified since the user was last online, and the latest one. */
    const pending = new Map<string, Pending>();
    /** Per registration (`user \0 id`): when the last notification went out. */
    const lastSent = new Map<string, number>();
    /** Per registration: the trailing notification waiting for the rate limit. */
    const trailing = new Map<string, NodeJS.Timeout>();
    /**
     * Messages notified through session.held. XEP-0198 redelivers the very element that was held
     * (its unacked queue keeps it), so identity tells a redelivery already announced from one that
     * was written to a live session and never announced. Weak: gone with the message.
     */
    const notifiedHeld = new WeakSet<Element>();

    ctx.addFeature(NS_PUSH, 'account');

    async function load(user: string): Promise<Registration[]> {
      const raw = await ctx.storage.keyval.get(user, STORE, KEY);
      if (!raw) return [];
      try {
        const parsed = z.array(registrationSchema).safeParse(JSON.parse(raw));
        if (parsed.success) return parsed.data;
      } catch {
        /* fall through */
      }
      ctx.log.warn({ user }, 'ignoring unreadable push registrations');
      return [];
    }

    async function save(user: string, regs: Registration[]): Promise<void> {
      if (regs.length) await ctx.storage.keyval.set(user, STORE, KEY, JSON.stringify(regs));
      else await ctx.storage.keyval.delete(user, STORE, KEY);
    }

    /** Removes the registrations `drop` selects, under the user's lock; resolves how many went. */
    function remove(user: string, drop: (r: Registration) => boolean): Promise<number> {
      return serial(user, async () => {
        const regs = await load(user);
        const keep = regs.filter((r) => !drop(r));
        if (keep.length === regs.length) return 0;
        await save(user, keep);
        for (const r of regs) if (drop(r)) forget(user, r.id);
        return regs.length - keep.length;
      });
    }

    function forget(user: string, id: string): void {
      const key = `${user}\u0000${id}`;
      lastSent.delete(key);
      const t = trailing.get(key);
      if (t) clearTimeout(t);
      trailing.delete(key);
    }

    function cap<K, V>(map: Map<K, V>): void {
      // Oldest first (insertion order); dropping one only loses a count or a rate-limit timestamp.
      while (map.size >= MAX_TRACKED) {
        const oldest = map.keys().next();
        if (oldest.done) break;
        map.delete(oldest.value);
      }
    }

    function notification(user: string, reg: Registration, p: Pending): Element {
      const from = opts.notifyFrom === 'server' ? (Jid.tryParse(user)?.domain ?? user) : user;
      const iq = new Element('iq', { type: 'set', from, to: reg.jid, id: randomBytes(9).toString('base64url') });
      const pubsub = iq.c('pubsub', { xmlns: NS_PUBSUB });
      const x = pubsub.c('publish', { node: reg.node }).c('item').c('notification', { xmlns: NS_PUSH }).c('x', { xmlns: NS_XDATA, type: 'submit' });
      x.cnode(field('FORM_TYPE', FORM_SUMMARY, 'hidden'));
      x.cnode(field('message-count', String(p.count)));
      if (opts.includeSender && p.sender) x.cnode(field('last-message-sender', p.sender));
      if (opts.includeBody && p.body) x.cnode(field('last-message-body', p.body));
      if (reg.options) {
        const po = pubsub.c('publish-options').c('x', { xmlns: NS_XDATA, type: 'submit' });
        for (const f of reg.options) {
          const fe = po.c('field', f.var === 'FORM_TYPE' ? { var: f.var, type: 'hidden' } : { var: f.var });
          for (const v of f.values) fe.c('value').t(v);
        }
      }
      return iq;
    }

    /** Sends the notification; resolves once it is routed (the app server's answer is handled later). */
    async function publish(user: string, reg: Registration): Promise<void> {
      const p = pending.get(user);
      if (!p) return; // the user came online meanwhile
      lastSent.delete(`${user}\u0000${reg.id}`);
      cap(lastSent);
      lastSent.set(`${user}\u0000${reg.id}`, Date.now());
      let routed: () => void = () => {};
      const sent = new Promise<void>((r) => (routed = r));
      const answer = answered(user, reg, ctx.request(notification(user, reg, p), opts.timeoutMs, routed));
      await Promise.race([sent, answer]);
    }

    async function answered(user: string, reg: Registration, reply: Promise<Element>): Promise<void> {
      try {
        await reply;
      } catch (err) {
        // "If a publish request is returned with an IQ-error, then the server SHOULD consider the
        // particular JID and node combination to be disabled." A timeout, a 'wait' error or an
        // unreachable server is not the app server's refusal: keep it and try again next time.
        if (err instanceof StanzaError && err.type !== 'wait' && err.condition !== 'remote-server-not-found') {
          const n = await remove(user, (r) => r.id === reg.id);
          if (n) ctx.log.info({ user, service: reg.jid, condition: err.condition }, 'push service refused a notification; registration disabled');
        } else {
          ctx.log.warn({ user, service: reg.jid, err }, 'push notification failed');
        }
      }
    }

    /** Publishes now (resolving once routed) or arms the trailing notification of the interval. */
    async function schedule(user: string, reg: Registration): Promise<void> {
      const key = `${user}\u0000${reg.id}`;
      const last = lastSent.get(key);
      const now = Date.now();
      if (last === undefined || opts.minIntervalMs === 0 || now - last >= opts.minIntervalMs) {
        await publish(user, reg);
        return;
      }
      if (trailing.has(key)) return; // it will carry this message's count too
      const t = setTimeout(() => {
        trailing.delete(key);
        // Re-read: the registration may have been disabled or replaced meanwhile.
        void load(user)
          .then((regs) => {
            const current = regs.find((r) => r.id === reg.id);
            if (current) return publish(user, current);
          })
          .catch((err: unknown) => ctx.log.error({ err, user }, 'push notification failed'));
      }, last + opts.minIntervalMs - now);
      t.unref();
      trailing.set(key, t);
    }

    async function notify(user: string, stanza: Element): Promise<void> {
      if (!worthNotifying(stanza)) return;
      const regs = await load(user);
      if (!regs.length) return;
      const p = pending.get(user) ?? { count: 0 };
      pending.delete(user); // re-insert: keeps the map ordered by last activity for cap()
      cap(pending);
      p.count++;
      p.sender = stanza.attrs.from;
      const body = stanza.getChildText('body');
      p.body = body ? body.slice(0, opts.maxBodyChars) : undefined;
      pending.set(user, p);
      await Promise.all(regs.map((reg) => schedule(user, reg)));
    }

    function online(user: string): void {
      if (!pending.delete(user)) return;
      for (const key of [...trailing.keys()]) {
        if (!key.startsWith(`${user}\u0000`)) continue;
        clearTimeout(trailing.get(key));
        trailing.delete(key);
      }
    }

    // Awaited until the publish is routed, never for the app server's answer (a slow app server
    // delays nobody): the sender's next stanza comes after the notification it caused.
    ctx.hook('offline.stored', async ({ stanza, to, redelivery }) => {
      if (redelivery && notifiedHeld.has(stanza)) return undefined;
      await notify(to.bare, stanza).catch((err: unknown) => ctx.log.error({ err, user: to.bare }, 'push notification failed'));
      return undefined;
    });

    ctx.hook('session.held', async ({ session, stanza }) => {
      const user = session.jid?.bare;
      if (!user) return undefined;
      notifiedHeld.add(stanza);
      await notify(user, stanza).catch((err: unknown) => ctx.log.error({ err, user }, 'push notification failed'));
      return undefined;
    });

    ctx.hook('presence.initial', ({ session }) => {
      if (session.jid) online(session.jid.bare);
      return undefined;
    });
    ctx.hook('session.resumed', ({ session }) => {
      if (session.jid) online(session.jid.bare);
      return undefined;
    });

    // "Remote Disabling of Notifications": the service took away the user's affiliation.
    ctx.hook('message.inbound', async ({ stanza, to, from }) => {
      const ps = stanza.getChild('pubsub', NS_PUBSUB);
      if (!ps || !from || to.resource) return undefined;
      const node = ps.attrs.node;
      const gone = ps.getChildElements().some((a) => a.name === 'affiliation' && a.attrs.affiliation === 'none' && Jid.tryParse(a.attrs.jid)?.bare === to.bare);
      if (!node || !gone) return undefined;
      const n = await remove(to.bare, (r) => r.node === node && Jid.tryParse(r.jid)?.full === from.full);
      if (n) ctx.log.info({ user: to.bare, service: from.full }, 'push service withdrew; registration disabled');
      return undefined;
    });

    ctx.onUnload(() => {
      for (const t of trailing.values()) clearTimeout(t);
      trailing.clear();
    });

    /** Enable/disable are the account owner's business only. */
    function owner(req: { self: boolean; from: Jid }): string {
      if (!req.self) throw stanzaError('forbidden');
      return req.from.bare;
    }

    function serviceJid(attr: string | undefined): string {
      if (!attr) throw stanzaError('bad-request', "the 'jid' attribute is required");
      const jid = Jid.tryParse(attr);
      if (!jid) throw stanzaError('jid-malformed', "invalid 'jid'");
      return jid.full;
    }

    /**
     * Whether notifications to this app server can be delivered: it is on a host of this server
     * (an account, e.g. a push bridge logged in as a user) or a service hosted under one. Until
     * server-to-server federation exists, a remote app server would be accepted and then never
     * reached, so the client is told now and can fall back (issue 15).
     */
    function reachable(jid: string): boolean {
      const domain = (Jid.tryParse(jid) as Jid).domain;
      if (ctx.isLocalHost(domain)) return true;
      return ctx.hostNames().some((h) => ctx.servicesOf(h).some((s) => s.jid === domain));
    }

    ctx.iq(
      'set',
      NS_PUSH,
      'enable',
      async (req) => {
        const user = owner(req);
        const jid = serviceJid(req.payload.attrs.jid);
        const node = req.payload.attrs.node;
        // The XEP says SHOULD, but a pubsub publish cannot go without a node.
        if (!node) throw stanzaError('bad-request', "the 'node' attribute is required");
        if (node.length > MAX_NODE_CHARS) throw stanzaError('bad-request', 'node too long');
        const forms = req.payload.getChildElements().filter((c) => c.name === 'x' && c.attrs.xmlns === NS_XDATA);
        if (forms.length > 1) throw stanzaError('bad-request', 'at most one publish-options form');
        const form = forms[0];
        const options = form ? parsePublishOptions(form) : undefined;
        if (!reachable(jid)) {
          throw new StanzaError('cancel', 'feature-not-implemented', 'remote push services need server-to-server federation, which this server does not have yet: use an app server on this server');
        }
        await serial(user, async () => {
          const regs = await load(user);
          const old = regs.find((r) => r.jid === jid && r.node === node);
          const rest = regs.filter((r) => r !== old);
          if (rest.length >= opts.maxRegistrations) throw new StanzaError('cancel', 'resource-constraint', 'too many push registrations');
          if (old) forget(user, old.id);
          const reg: Registration = { id: randomBytes(9).toString('base64url'), jid, node, since: Date.now() };
          if (options) reg.options = options;
          rest.push(reg);
          await save(user, rest);
        });
        return undefined;
      },
      'account',
    );

    ctx.iq(
      'set',
      NS_PUSH,
      'disable',
      async (req) => {
        const user = owner(req);
        const jid = serviceJid(req.payload.attrs.jid);
        const node = req.payload.attrs.node;
        await remove(user, (r) => r.jid === jid && (node === undefined || r.node === node));
        return undefined;
      },
      'account',
    );
  },
});
