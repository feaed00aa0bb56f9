// XEP-0077 In-Band Registration (v2.4): §3.1 registration before authentication (§3.1.1 "Registration
// with a Server"), §3.2 cancelling a registration, §3.3 password change, §4 data-form extensibility,
// §8 the stream feature, §10 disco. Off by default: `hosts[].registration.enabled` turns account
// creation and cancellation on per host; password changes are always available to a logged-in user.
//
// Decisions:
//  - pre-auth iq (hook c2s.preauth): a jabber:iq:register query is always answered, never ends the
//    stream; with registration off it gets service-unavailable (§3.1 MUST).
//  - creation: missing username/password -> not-acceptable (§3.1 MUST); password shorter than
//    minPasswordLength -> not-acceptable; username that is not a valid, canonical (PRECIS-mapped)
//    localpart -> jid-malformed (a non-canonical one could not log in as typed); taken -> conflict;
//    more than `maxPerAddress` accounts per IP per window -> not-acceptable, type wait (§3.1.1).
//  - password change: needs <username/> and a non-empty <password/> (else bad-request, password kept,
//    §3.3); another account's username -> forbidden; unencrypted stream -> not-authorized (§3.3);
//    a user without the `settings.save` right (settings.acl, Sun's sysSaveUserSettings) -> forbidden,
//    logged with the deciding rule.
//  - <remove/>: only child (else bad-request); not-allowed where registration is off; subscriptions
//    are cancelled, the account and all its data deleted, then every session of the account ends
//    with a not-authorized stream error after the result is sent (§3.2).
//  - error replies never echo the request payload (it carries passwords, §3.3).
//  - LDAP hosts (issue 8): creation writes the user's entry into the directory (taken -> conflict,
//    directory down -> internal-server-error, type wait); password change and <remove/> get
//    not-allowed: the directory is the system of record, Parley holds no password to change.
import { Element } from 'ltx';
import { z } from 'zod';
import { formatRule } from '../core/acl.js';
import { defineModule, type IqRequest } from '../core/module.js';
import { HANDLED } from '../core/hooks.js';
import type { C2SSession } from '../core/session.js';
import { AccountError, AccountService, DirectoryUnavailableError } from '../auth/index.js';
import { DirectoryConflictError } from '../core/directory.js';
import { StanzaError, StreamError, stanzaError } from '../xmpp/errors.js';
import { Jid } from '../xmpp/jid.js';
import { NS } from '../xmpp/ns.js';
import { iqPayload } from '../xmpp/stanza.js';

declare module '../core/hooks.js' {
  interface HookMap {
    /** An account was created in-band (XEP-0077). */
    'account.created': { jid: string };
    /** An account and all its data were deleted; modules drop what they cache about it. */
    'account.removed': { jid: string };
  }
}

const FORM_TYPE = 'jabber:iq:register';

export default defineModule({
  name: 'register',
  xeps: ['0077'],
  options: z
    .object({
      maxPerAddress: z.number().int().min(1).default(5).describe('Accounts one IP address may create per window'),
      windowSeconds: z.number().int().min(1).default(3600).describe('Length of the account-creation rate-limit window'),
      instructions: z.string().default('Choose a username and password for use with this server.').describe('Text shown to registering users'),
    })
    .strict(),
  setup(ctx) {
    const accounts = new AccountService(ctx.storage, ctx.config.auth.scramIterations);
    const opts = ctx.options;
    const windowMs = opts.windowSeconds * 1000;
    const createdBy = new Map<string, number[]>(); // IP address -> creation times

    const hostConfig = (domain: string) => ctx.config.hosts.find((h) => h.domain === domain);
    const enabled = (domain: string) => hostConfig(domain)?.registration.enabled === true;
    const minLength = (domain: string) => hostConfig(domain)?.registration.minPasswordLength ?? 8;

    // §8: advertise only where account creation is possible.
    ctx.fold('c2s.features', (ev) => {
      if (ev.stage === 'pre-auth' && enabled(ev.session.host)) ev.features.c('register', { xmlns: NS.REGISTER_FEATURE });
      return ev;
    });

    // ---- §3.1 / §3.1.1 before authentication ---------------------------------------------------

    ctx.hook('c2s.preauth', async ({ session, stanza }) => {
      if (stanza.name !== 'iq') return;
      const query = stanza.getChildElements().find((c) => c.name === 'query' && c.attrs.xmlns === NS.REGISTER);
      if (!query) return;
      const type = stanza.attrs.type;
      if (type === 'result' || type === 'error') return HANDLED;
      try {
        if (type !== 'get' && type !== 'set') throw stanzaError('bad-request', 'invalid iq type');
        if (stanza.attrs.id === undefined) throw stanzaError('bad-request', 'iq without id');
        const to = stanza.attrs.to;
        if (to !== undefined && Jid.tryParse(to)?.full !== session.host) throw stanzaError('service-unavailable');
        if (iqPayload(stanza) !== query) throw stanzaError('bad-request', 'an iq carries exactly one payload');
        if (!enabled(session.host)) throw stanzaError('service-unavailable', 'in-band registration is disabled');
        if (type === 'get') {
          writeIq(session, stanza, 'result', registrationForm());
        } else {
          await createAccount(session, query);
          writeIq(session, stanza, 'result');
        }
      } catch (err) {
        const e = err instanceof StanzaError ? err : stanzaError('internal-server-error');
        if (!(err instanceof StanzaError)) ctx.log.error({ err }, 'in-band registration failed');
        writeIq(session, stanza, 'error', undefined, e);
      }
      return HANDLED;
    });

    function registrationForm(): Element {
      const q = new Element('query', { xmlns: NS.REGISTER });
      q.c('instructions').t(opts.instructions);
      q.c('username');
      q.c('password');
      // §4: the same fields as a data form, for clients that prefer x:data.
      const x = q.c('x', { xmlns: NS.DATA_FORMS, type: 'form' });
      x.c('title').t('Account registration');
      x.c('instructions').t(opts.instructions);
      x.c('field', { type: 'hidden', var: 'FORM_TYPE' }).c('value').t(FORM_TYPE);
      x.c('field', { type: 'text-single', label: 'Username', var: 'username' }).c('required');
      x.c('field', { type: 'text-private', label: 'Password', var: 'password' }).c('required');
      return q;
    }

    async function createAccount(session: C2SSession, query: Element): Promise<void> {
      const host = session.host;
      if (query.getChild('remove')) throw stanzaError('unexpected-request', 'log in to cancel a registration');
      const { username, password } = readFields(query);
      if (!username || !password) throw stanzaError('not-acceptable', 'username and password are required');
      let jid: Jid;
      try {
        jid = Jid.of(username, host);
      } catch {
        throw stanzaError('jid-malformed', 'invalid username');
      }
      if (jid.local !== username) throw stanzaError('jid-malformed', `usernames are case-folded: use '${jid.local}'`);
      const min = minLength(host);
      if ([...password].length < min) throw stanzaError('not-acceptable', `passwords need at least ${min} characters`);
      const release = reserve(session.remoteAddress);
      if (!release) throw new StanzaError('wait', 'not-acceptable', 'too many accounts created from this address; try later');
      // An LDAP host registers into its directory (issue 8): the entry is the account.
      const dir = ctx.directory(host);
      try {
        if (dir) await dir.createUser(jid.local, password);
        else await accounts.create(jid.bare, password);
      } catch (err) {
        release();
        if (err instanceof AccountError || err instanceof DirectoryConflictError) throw stanzaError('conflict', 'username already taken');
        if (err instanceof DirectoryUnavailableError) throw new StanzaError('wait', 'internal-server-error', 'the directory is unreachable; try later');
        throw err;
      }
      ctx.invalidateAccount(jid.bare);
      ctx.log.info({ user: jid.bare, addr: session.remoteAddress }, 'account registered in-band');
      await ctx.fire('account.created', { jid: jid.bare });
    }

    /** Takes one slot of the per-address creation budget; returns its release, or null when spent. */
    function reserve(addr: string): (() => void) | null {
      const now = Date.now();
      if (createdBy.size > 10_000) {
        for (const [a, times] of createdBy) if (!times.some((t) => t > now - windowMs)) createdBy.delete(a);
      }
      const times = (createdBy.get(addr) ?? []).filter((t) => t > now - windowMs);
      createdBy.set(addr, times);
      if (times.length >= opts.maxPerAddress) return null;
      times.push(now);
      return () => {
        const i = times.indexOf(now);
        if (i !== -1) times.splice(i, 1);
      };
    }

    // ---- authenticated: §3.1 (registered), §3.2 remove, §3.3 password change -------------------

    /** The requester's own account, addressed via its bare JID or its own server's domain. */
    function ownAccount(req: IqRequest): Jid | null {
      if (req.to.local) return req.self ? req.to.toBare() : null;
      if (!req.from.local || req.from.domain !== req.to.domain || !req.session) return null;
      return req.from.toBare();
    }

    ctx.iq(
      'get',
      NS.REGISTER,
      'query',
      (req) => {
        const user = ownAccount(req);
        if (!user) throw stanzaError('service-unavailable');
        const q = new Element('query', { xmlns: NS.REGISTER });
        q.c('registered');
        q.c('instructions').t('You are registered. Send a username and a new password to change your password.');
        q.c('username').t(user.local);
        q.c('password');
        return q;
      },
      'both',
    );

    ctx.iq(
      'set',
      NS.REGISTER,
      'query',
      async (req) => {
        try {
          const user = ownAccount(req);
          if (!user) throw stanzaError('service-unavailable');
          const children = req.payload.getChildElements();
          if (children.some((c) => c.name === 'remove')) {
            if (children.length !== 1) throw stanzaError('bad-request', '<remove/> must be the only child');
            if (!enabled(user.domain)) throw stanzaError('not-allowed', 'accounts cannot be cancelled in-band here');
            // The directory is the system of record for an LDAP host: its administrators remove entries.
            if (ctx.directory(user.domain)) throw stanzaError('not-allowed', 'accounts of this host are removed in the directory');
            await removeAccount(user);
            return undefined;
          }
          await changePassword(req, user);
          return undefined;
        } catch (err) {
          // Error replies carry the payload back; never with a password in it.
          req.payload.children = [];
          throw err;
        }
      },
      'both',
    );

    async function changePassword(req: IqRequest, user: Jid): Promise<void> {
      const { username, password } = readFields(req.payload);
      if (username === undefined || password === undefined) throw stanzaError('bad-request', 'username and password are required');
      if (!password) throw stanzaError('bad-request', 'empty password: the password is unchanged');
      if (!sameAccount(username, user)) throw stanzaError('forbidden', 'you can only change your own password');
      if (!ctx.acl.allows('settings.save', user)) {
        ctx.log.info({ user: user.bare, right: 'settings.save', rule: formatRule(ctx.acl.explain('settings.save', user)) }, 'password change refused: no right');
        throw stanzaError('forbidden', 'you may not change your settings');
      }
      if (req.session && !req.session.secure) throw stanzaError('not-authorized', 'the stream is not encrypted');
      // Parley holds no password of a directory user (issue 8): it is changed with the directory's own tools.
      if (ctx.directory(user.domain)) throw stanzaError('not-allowed', 'passwords of this host are kept in the directory; change yours there');
      const min = minLength(user.domain);
      if ([...password].length < min) throw stanzaError('not-acceptable', `passwords need at least ${min} characters`);
      try {
        await accounts.setPassword(user.bare, password);
      } catch (err) {
        if (err instanceof AccountError) throw stanzaError('registration-required');
        throw err;
      }
      ctx.log.info({ user: user.bare }, 'password changed in-band');
    }

    async function removeAccount(user: Jid): Promise<void> {
      const bare = user.bare;
      // §3.2: cancel the subscriptions in the roster first (RFC 6121 §2.5.2), while the account exists.
      const available = ctx.sessions.available(bare);
      for (const item of (await ctx.storage.roster.get(bare)).items) {
        if (item.subscription === 'from' || item.subscription === 'both') {
          for (const s of available) await send(new Element('presence', { type: 'unavailable', from: s.jid?.full, to: item.jid }));
          await send(new Element('presence', { type: 'unsubscribed', from: bare, to: item.jid }));
        }
        if (item.subscription === 'to' || item.subscription === 'both' || item.ask) {
          await send(new Element('presence', { type: 'unsubscribe', from: bare, to: item.jid }));
        }
      }
      try {
        await accounts.remove(bare);
      } catch (err) {
        if (err instanceof AccountError) throw stanzaError('registration-required');
        throw err;
      }
      ctx.invalidateAccount(bare);
      ctx.log.info({ user: bare }, 'account removed in-band');
      await ctx.fire('account.removed', { jid: bare });
      // After the iq result has been written (the dispatcher sends it when this handler returns).
      setImmediate(() => {
        for (const s of ctx.sessions.resources(bare)) s.fail(new StreamError('not-authorized', 'account removed'));
      });
    }

    async function send(el: Element): Promise<void> {
      try {
        await ctx.route(el);
      } catch (err) {
        ctx.log.warn({ err }, 'register: presence routing failed');
      }
    }
  },
});

/** Username/password from a submitted data form (§4, takes precedence) or the legacy fields. */
function readFields(query: Element): { username?: string; password?: string } {
  const form = query.getChildElements().find((c) => c.name === 'x' && c.attrs.xmlns === NS.DATA_FORMS && c.attrs.type === 'submit');
  if (form) {
    const value = (name: string) => {
      const field = form.getChildElements().find((f) => f.name === 'field' && f.attrs.var === name);
      return field ? (field.getChildText('value') ?? '') : undefined;
    };
    return { username: value('username'), password: value('password') };
  }
  return { username: query.getChildText('username') ?? undefined, password: query.getChildText('password') ?? undefined };
}

/** Whether a submitted username (a localpart, or a bare JID as in §3.3's form example) names `user`. */
function sameAccount(username: string, user: Jid): boolean {
  try {
    const j = username.includes('@') ? Jid.parse(username) : Jid.of(username, user.domain);
    return j.isBare && j.bare === user.bare;
  } catch {
    return false;
  }
}

/** Writes an iq reply on a not-yet-authenticated stream (no addresses: the client has no JID yet). */
function writeIq(session: C2SSession, req: Element, type: 'result' | 'error', payload?: Element, err?: StanzaError): void {
  const iq = new Element('iq', { type, id: req.attrs.id });
  if (payload) iq.cnode(payload);
  if (err) iq.cnode(err.toElement());
  session.write(iq.toString());
}
