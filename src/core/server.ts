// The server kernel: hosts, sessions, routing (RFC 6121 §8), iq dispatch, modules and connection
// accounting. Listeners live in src/transports and hand connections to `acceptConnection`.
import { randomBytes } from 'node:crypto';
import type { BlockList } from 'node:net';
import type { Element } from 'ltx';
import { StanzaError, StreamError, stanzaError } from '../xmpp/errors.js';
import { Jid } from '../xmpp/jid.js';
import { NS } from '../xmpp/ns.js';
import { errorReply, iqResult } from '../xmpp/stanza.js';
import type { Storage } from '../storage/types.js';
import type { UserDirectory } from './directory.js';
import { withDirectoryRosters } from '../auth/ldap/roster-store.js';
import { AccountService, directoriesFor, type LdapDirectory, LoginThrottle, saslMechanisms, type SaslMechanism, TokenService } from '../auth/index.js';
import type { ResolvedConfig } from './config.js';
import { every } from './every.js';
import { addressInList, compileAddressList } from './addresses.js';
import { HookBus } from './hooks.js';
import type { Logger } from './logger.js';
import { IqDispatcher } from './iq.js';
import { DiscoRegistry } from './disco.js';
import { HttpRoutes } from './http.js';
import { DefaultAccessControl, formatRule, type AccessControl } from './acl.js';
import { SessionRegistry } from './sessions.js';
import { ServerStats } from './stats.js';
import { C2SSession } from './session.js';
import { addressKey, type Transport } from './transport.js';
import type { ModuleContext, ModuleDefinition, ModuleHost, ServiceHandler, ServiceOptions } from './module.js';

declare module './hooks.js' {
  interface HookMap {
    /** The server is stopping; sessions are still open (say goodbye: e.g. XEP-0045 status 332). */
    'server.stopping': { reason: string };
    /** A stanza to an account of a local host, before the RFC 6121 §8.5 delivery rules (blocking, subscriptions, probes). */
    'route.user': { stanza: Element; to: Jid; from: Jid | null };
    /** A message/presence addressed to a local host itself. */
    'route.server': { stanza: Element; to: Jid; from: Jid | null };
    /** A stanza for a domain that is not a local host (components, federation). */
    'route.remote': { stanza: Element; to: Jid; from: Jid | null };
    /**
     * A message for an account with no available resource: store it (XEP-0160) or throw StanzaError.
     * `redelivery`: it comes from Server.redeliver (XEP-0198: written to a session that ended
     * without acknowledging it), so it was already seen by the hooks of its first delivery.
     */
    'message.offline': { stanza: Element; to: Jid; redelivery?: boolean };
    /**
     * A message (any type but error and groupchat) addressed to a local account, after blocking and
     * before delivery to its sessions or offline storage (XEP-0313 archives it and adds its
     * XEP-0359 stanza-id here). Handlers may add children; a thrown StanzaError refuses the message.
     */
    'message.inbound': { stanza: Element; to: Jid; from: Jid | null };
  }
  interface FoldMap {
    /**
     * Synchronous: `stanza` was just written to these local sessions of `to.bare` (XEP-0280 copies
     * it to the account's other carbons-enabled sessions). Not fired when it went offline.
     */
    'message.delivered': { stanza: Element; to: Jid; sessions: C2SSession[] };
  }
}

export interface ServerOptions {
  config: Readonly<ResolvedConfig>;
  storage: Storage;
  log: Logger;
  /** Server-wide secret (fake SCRAM salts, tokens); persisted by the caller. */
  secret: Buffer;
  modules: ModuleDefinition[];
}

export class Server implements ModuleHost {
  readonly config: Readonly<ResolvedConfig>;
  readonly storage: Storage;
  readonly log: Logger;
  readonly hooks: HookBus;
  readonly sessions = new SessionRegistry();
  readonly iqs: IqDispatcher;
  readonly disco = new DiscoRegistry();
  /** Rights of users (replaced by the access-control-file implementation when it is configured). */
  acl: AccessControl = new DefaultAccessControl((d) => this.isLocalHost(d));
  /** HTTP routes modules add to the web container. */
  readonly http = new HttpRoutes();
  readonly auth: AccountService;
  readonly throttle: LoginThrottle;
  readonly secret: Buffer;
  /** Hot-path counters (stanzas, auth failures) that /metrics reads at scrape time. */
  readonly stats = new ServerStats();
  private readonly hosts: Set<string>;
  private readonly mechanisms: SaslMechanism[];
  private readonly pending = new Map<string, { resolve: (el: Element) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private readonly unloaders: (() => void | Promise<void>)[] = [];
  /** Per client address: open connections, and the unauthenticated ones among them (oldest first). */
  private readonly connections = new Map<string, { total: number; preAuth: Set<C2SSession> }>();
  /** limits.trustedNetworks: their addresses get the trusted quotas. */
  private readonly trustedNetworks: BlockList;
  private readonly allConnections = new Set<C2SSession>();
  /** Bound sessions without a connection, waiting for XEP-0198 resumption. */
  private readonly hibernating = new Set<C2SSession>();
  /** Services hosted inside the server, by domain (`<subdomain>.<local host>`). */
  private readonly services = new Map<string, { host: string; name: string; handle: ServiceHandler; opts: ServiceOptions }>();
  private sweepTimer: NodeJS.Timeout | null = null;
  private readonly moduleDefs: ModuleDefinition[];
  private readonly accountCache = new Map<string, { exists: boolean; at: number }>();

  constructor(opts: ServerOptions) {
    this.config = opts.config;
    this.log = opts.log;
    this.secret = opts.secret;
    this.hooks = new HookBus(opts.log);
    this.iqs = new IqDispatcher(opts.log);
    this.hosts = new Set(opts.config.hosts.map((h) => h.domain));
    const directories = directoriesFor(opts.config, opts.log);
    const tokens = new TokenService(opts.storage.tokens, opts.config.auth.tokens);
    this.auth = new AccountService(opts.storage, opts.config.auth.scramIterations, directories, tokens);
    // Hosts with `ldap.roster: directory` keep contact lists in their directory, for every feature.
    this.storage = withDirectoryRosters(opts.storage, opts.config, (h) => directories.get(h), opts.log);
    this.trustedNetworks = compileAddressList(opts.config.limits.trustedNetworks);
    const ban = opts.config.auth.banSeconds * 1000;
    this.throttle = new LoginThrottle({
      perAddress: { maxFailures: opts.config.auth.maxFailuresPerAddress, windowMs: ban, banMs: ban },
      trustedPerAddress: { maxFailures: opts.config.auth.trustedMaxFailuresPerAddress, windowMs: ban, banMs: ban },
      perPair: { maxFailures: opts.config.auth.maxFailuresPerPair, windowMs: ban, banMs: ban },
      // Keys of addresses a remote mux reported carry its name (addressKey), so they are not
      // addresses and never match.
      isTrusted: (key) => addressInList(this.trustedNetworks, key),
    });
    this.moduleDefs = opts.modules;
    // Unknown users are shown the same iteration count as real ones (no account enumeration).
    const n = opts.config.auth.scramIterations;
    this.mechanisms = saslMechanisms({ scram: { iterations: { 'SHA-1': n, 'SHA-256': n } }, oauthbearer: !!this.auth.tokens });
  }

  // ---- lifecycle ---------------------------------------------------------------------------

  async start(): Promise<void> {
    for (const def of this.moduleDefs) {
      const raw = this.config.modules[def.name];
      if (raw === false) continue;
      const parsed = def.options.safeParse(raw === true || raw === undefined ? {} : raw);
      if (!parsed.success) {
        throw new Error(`modules.${def.name}: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
      }
      await def.setup(this.contextFor(def.name, parsed.data));
    }
    const l = this.config.limits;
    if (l.idlePingSeconds > 0) {
      const every = Math.max(1000, Math.min(10_000, (l.idlePingSeconds * 1000) / 4));
      this.sweepTimer = setInterval(() => this.sweep(), every);
      this.sweepTimer.unref();
    }
    // Issue 8: "accounts disabled in the directory cannot keep sessions after the cache expires".
    for (const h of this.config.hosts) {
      const dir = this.auth.directory(h.domain);
      if (dir && h.ldap) this.timers.push(every(Math.max(1000, h.ldap.cache.ttlSeconds * 1000), 'directory session check', () => this.checkDirectoryUsers(h.domain, dir), this.log));
    }
    this.timers.push(every(this.config.auth.recheckSeconds * 1000, 'account and token check', () => this.checkRemovals(), this.log));
    // Expired XMPP tokens are useless; drop their rows hourly (verification ignores them anyway).
    const tokens = this.auth.tokens;
    if (tokens) this.timers.push(every(3_600_000, 'token purge', async () => void (await tokens.purge()), this.log));
  }

  async stop(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    for (const stop of this.timers) stop();
    // Bounded: a module that hangs here must not keep the server from stopping.
    await Promise.race([this.hooks.fire('server.stopping', { reason: 'server shutting down' }), new Promise((r) => setTimeout(r, 2000).unref())]).catch(
      (err: unknown) => this.log.error({ err }, 'server.stopping handler failed'),
    );
    for (const s of [...this.allConnections, ...this.hibernating]) s.close('server shutting down');
    for (const fn of this.unloaders.reverse()) {
      try {
        await fn();
      } catch (err) {
        this.log.error({ err }, 'module unload failed');
      }
    }
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new Error('server stopping'));
    }
    this.pending.clear();
    await this.auth.close();
  }

  /** Stops the core's periodic tasks (see every()). */
  private readonly timers: (() => void)[] = [];

  /** Bound sessions, connected or hibernating (XEP-0198), that are not closed. */
  private liveSessions(): C2SSession[] {
    return [...new Set([...this.allConnections, ...this.hibernating])].filter((s) => s.state !== 'closed' && !!s.jid?.local);
  }

  /**
   * Ends sessions whose account or credential is gone (RFC 6120 §4.9.3.12 not-authorized): one
   * place for directory checks, removals elsewhere and revoked tokens. Resolves how many ended.
   */
  private endSessions(sessions: Iterable<C2SSession>, reason: string, why: string): number {
    let n = 0;
    for (const s of sessions) {
      this.log.info({ user: s.jid?.bare, reason }, why);
      s.fail(new StreamError('not-authorized', reason));
      n++;
    }
    return n;
  }

  /**
   * Accounts removed and tokens revoked by another process (`parley user remove`, `parley token
   * revoke`, `parley sso logout`, another node) end the sessions that depend on them here too,
   * every auth.recheckSeconds; this process's own removals and revocations end them at once.
   * Directory hosts are checked against their directory instead (checkDirectoryUsers).
   */
  private async checkRemovals(): Promise<void> {
    const live = this.liveSessions();
    const users = [...new Set(live.filter((s) => !this.auth.directory(s.host)).map((s) => (s.jid as Jid).bare))];
    if (users.length) {
      const gone = new Set(await this.storage.accounts.missingAmong(users));
      for (const bare of gone) this.invalidateAccount(bare);
      this.endSessions(live.filter((s) => gone.has((s.jid as Jid).bare)), 'account removed', 'account removed elsewhere: session closed');
    }
    const ids = [...new Set(live.map((s) => s.credential).filter((c): c is string => c !== undefined))];
    if (ids.length && this.auth.tokens) this.endSessionsWithCredentials(await this.auth.tokens.revokedAmong(ids), 'token revoked');
  }

  /**
   * Issue 9: a sign-out (or the IdP's single logout) revoked these XMPP tokens; the sessions that
   * logged in with them end too. Resolves how many ended.
   */
  endSessionsWithCredentials(ids: readonly string[], reason = 'signed out'): number {
    if (!ids.length) return 0;
    const wanted = new Set(ids);
    return this.endSessions(
      this.liveSessions().filter((s) => s.credential !== undefined && wanted.has(s.credential)),
      reason,
      'session ended: its token was revoked',
    );
  }

  /**
   * Every cache ttl (at least 1 s), the bound users of each LDAP host are looked up again (through
   * the cache); one the directory no longer has, or the user filter now excludes, loses its
   * sessions. An unreachable directory ends nothing.
   */
  private async checkDirectoryUsers(host: string, dir: LdapDirectory): Promise<void> {
    const byUser = new Map<string, C2SSession[]>();
    for (const s of this.liveSessions()) {
      if (s.host !== host) continue;
      const local = s.jid?.local as string;
      byUser.set(local, [...(byUser.get(local) ?? []), s]);
    }
    for (const [local, list] of byUser) {
      try {
        if (await dir.findUser(local)) continue;
      } catch (err) {
        this.log.warn({ host, err: (err as Error).message }, 'directory unreachable: sessions kept');
        return;
      }
      this.endSessions(list, 'account disabled in the directory', 'account gone from the directory or disabled: session closed');
    }
  }

  private sweep(): void {
    const l = this.config.limits;
    const now = Date.now();
    for (const s of this.sessions.all()) s.pingIfIdle(now, l.idlePingSeconds * 1000, l.pingTimeoutSeconds * 1000);
  }

  private contextFor<O>(name: string, options: O): ModuleContext<O> {
    const log = this.log.child({ module: name });
    const undo = (fn: () => void | Promise<void>) => this.unloaders.push(fn);
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the acl getter must see later replacements
    const server = this;
    return {
      name,
      options,
      config: this.config,
      storage: this.storage,
      sessions: this.sessions,
      log,
      isLocalHost: (d) => this.isLocalHost(d),
      hostNames: () => this.hostNames(),
      route: (st) => this.route(st),
      request: (iq, t, onRouted) => this.request(iq, t, onRouted),
      accountExists: (b) => this.accountExists(b),
      invalidateAccount: (b) => this.invalidateAccount(b),
      directory: (h) => this.directory(h),
      redeliver: (stanza) => this.redeliver(stanza),
      get acl() {
        return server.acl;
      },
      addFeature: (ns, target) => undo(this.disco.addFeature(ns, target)),
      httpRoute: (method, path, handler) => undo(this.http.add({ method, path, handler, owner: name })),
      service: (subdomain, serviceName, handle, opts = {}) => {
        const domains = new Map(this.hostNames().map((h) => [`${subdomain}.${h}`, h]));
        for (const [domain, host] of domains) {
          if (this.services.has(domain)) throw new Error(`service ${domain} is already hosted by another module`);
          this.services.set(domain, { host, name: serviceName, handle, opts });
          undo(() => void this.services.delete(domain));
        }
        return domains;
      },
      servicesOf: (host) => [...this.services].filter(([, s]) => s.host === host).map(([jid, s]) => ({ jid, name: s.name, entitlement: s.opts.entitlement })),
      addIdentity: (id) => undo(this.disco.addIdentity(id)),
      iq: (type, ns, elName, handler, target = 'server') => undo(this.iqs.register(type, ns, elName, handler, target, name)),
      hook: (hook, fn, priority) => undo(this.hooks.on(hook, fn, priority, name)),
      fold: (hook, fn, priority) => undo(this.hooks.onFold(hook, fn, priority, name)),
      onUnload: (fn) => undo(fn),
      every: (intervalMs, what, task, o = {}) => undo(every(intervalMs, what, task, log, o)),
      discoRegistry: () => this.disco,
      iqNamespaces: (target) => this.iqs.namespaces(target),
      fire: (hook, ev) => this.hooks.fire(hook, ev),
      foldValue: (hook, v) => this.hooks.fold(hook, v),
    };
  }

  // ---- hosts and accounts ------------------------------------------------------------------

  isLocalHost(domain: string): boolean {
    return this.hosts.has(domain);
  }

  hostNames(): string[] {
    return [...this.hosts];
  }

  hostConfig(domain: string) {
    return this.config.hosts.find((h) => h.domain === domain);
  }

  async accountExists(bare: string): Promise<boolean> {
    const now = Date.now();
    const hit = this.accountCache.get(bare);
    if (hit && now - hit.at < 5000) return hit.exists;
    const exists = await this.auth.exists(bare);
    if (this.accountCache.size > 10_000) this.accountCache.clear();
    this.accountCache.set(bare, { exists, at: now });
    return exists;
  }

  directory(host: string): UserDirectory | undefined {
    return this.auth.directory(host);
  }

  /** Forget a cached account lookup (after create/remove). */
  invalidateAccount(bare: string): void {
    this.accountCache.delete(bare);
  }

  saslMechanisms(session: C2SSession): SaslMechanism[] {
    const ctx = { secure: session.secure, channelBindingTypes: session.transport.channelBindingTypes() };
    const opts = { allowPlainWithoutTls: this.config.auth.allowPlainWithoutTls };
    const scram = this.auth.supportsScram(session.host);
    // Issue 9 login modes: `sso` hosts take only tokens (OAUTHBEARER), `password` hosts only
    // passwords. Unknown hosts (before the stream names one) get the default, both.
    const login = this.hostConfig(session.host)?.login ?? 'sso-or-password';
    // Directory hosts have no SCRAM secrets; a token names its user, so OAUTHBEARER works there too.
    return this.mechanisms.filter((m) => {
      if (!m.available(ctx, opts)) return false;
      if (m.name === 'OAUTHBEARER') return login !== 'password';
      if (login === 'sso') return false;
      return scram || m.name === 'PLAIN';
    });
  }

  // ---- connections ---------------------------------------------------------------------------

  /**
   * Takes a new client connection. Over the per-address total, the newcomer gets a stream error
   * (`policy-violation`, with text) and null is returned. When the address's unauthenticated
   * quota is full, its least advanced unauthenticated connection (the oldest among equals) is
   * closed instead of refusing the newcomer: a slowloris or a connection storm from an office's
   * address cannot keep the office's users out, since a real client moves on to TLS and SASL in
   * milliseconds while a stalled one stays at the start. Logged-in sessions never count against
   * the unauthenticated quota.
   */
  acceptConnection(transport: Transport): C2SSession | null {
    const addr = addressKey(transport);
    const c = this.connections.get(addr) ?? { total: 0, preAuth: new Set<C2SSession>() };
    const l = this.config.limits;
    // An address a remote mux reports is not believed to be in a trusted network.
    const trusted = !transport.reportedBy && addressInList(this.trustedNetworks, transport.remoteAddress);
    const maxTotal = trusted ? l.trustedConnectionsPerAddress : l.connectionsPerAddress;
    const maxPreAuth = trusted ? l.trustedPreAuthPerAddress : l.preAuthPerAddress;
    const session = new C2SSession(this, transport);
    if (c.total >= maxTotal && c.preAuth.size < maxPreAuth) {
      this.log.warn({ addr, limit: maxTotal }, 'connection refused: per-address limit');
      session.fail(new StreamError('policy-violation', 'too many connections from your address'));
      return null;
    }
    if (c.preAuth.size >= maxPreAuth) {
      // Full (or at the total with room only for an unauthenticated one): make room.
      const victim = leastAdvanced(c.preAuth);
      if (victim) {
        // debug: under a slowloris this happens for every connection (parley_preauth_evicted_total counts them).
        this.log.debug({ addr, victim: victim.id, limit: maxPreAuth }, 'unauthenticated connection closed to admit a newer one');
        this.stats.preAuthEvicted++;
        victim.fail(new StreamError('policy-violation', 'too many unauthenticated connections from your address'));
      }
    }
    c.total++;
    c.preAuth.add(session);
    this.connections.set(addr, c);
    this.allConnections.add(session);
    return session;
  }

  /** Called by the session when SASL succeeds. */
  preAuthDone(session: C2SSession): void {
    this.connections.get(session.addressKey)?.preAuth.delete(session);
  }

  /** XEP-0198: a bound session lost its connection and waits for resumption. */
  connectionHibernated(session: C2SSession): void {
    this.connectionClosed(session, true);
    this.hibernating.add(session);
  }

  /**
   * XEP-0198: `resumed` continues on `fresh`'s connection; `fresh` is gone. `previous` is the
   * connection `resumed` had, if it was still counted (not yet hibernated).
   */
  connectionTakenOver(fresh: C2SSession, resumed: C2SSession, previous: Transport): void {
    if (!this.hibernating.delete(resumed) && this.allConnections.delete(resumed)) {
      // Its old connection was still counted: it is dropped now.
      const c = this.connections.get(addressKey(previous));
      if (c && --c.total <= 0) this.connections.delete(addressKey(previous));
    }
    // The new connection stays counted under its address, now on behalf of the resumed session.
    this.allConnections.delete(fresh);
    this.allConnections.add(resumed);
  }

  /** Called by the session when it ends. */
  connectionClosed(session: C2SSession, _wasAuthenticated: boolean): void {
    this.hibernating.delete(session);
    if (!this.allConnections.delete(session)) return;
    const c = this.connections.get(session.addressKey);
    if (!c) return;
    c.total--;
    c.preAuth.delete(session);
    if (c.total <= 0) this.connections.delete(session.addressKey);
  }

  get connectionCount(): number {
    return this.allConnections.size;
  }

  /** Removes what clients must not forge: server-added stanza-id/occupant-id and server delays (HARDENING.md). */
  sanitizeInbound(el: Element): void {
    if (el.name !== 'message' && el.name !== 'presence') return;
    // A stanza-id or delay "by"/"from" this server or any of its accounts (the sender's own
    // included) can only be a forgery coming from a client.
    el.children = el.children.filter((c) => {
      if (typeof c === 'string') return true;
      const ns = c.attrs.xmlns;
      if (c.name === 'stanza-id' && ns === NS.STANZA_ID) return !onLocalHost(this, c.attrs.by);
      if (c.name === 'occupant-id' && ns === NS.OCCUPANT_ID) return false;
      if (c.name === 'delay' && ns === NS.DELAY) return !onLocalHost(this, c.attrs.from);
      return true;
    });
  }

  // ---- routing (RFC 6121 §8) -------------------------------------------------------------------

  /** Routes a stanza carrying from/to. `origin` is the local session that sent it, if any. */
  async route(stanza: Element, origin?: C2SSession): Promise<void> {
    const to = Jid.tryParse(stanza.attrs.to);
    const from = Jid.tryParse(stanza.attrs.from);
    if (!to) {
      this.bounce(stanza, stanzaError('jid-malformed'), origin);
      return;
    }
    try {
      if (!this.isLocalHost(to.domain)) {
        const service = this.services.get(to.domain);
        if (service) {
          this.checkEntitlement(service, stanza, from, to);
          return await service.handle({ stanza, to, from, host: service.host });
        }
        // Issue 9: talking to other domains is the `federation` entitlement (checked before any
        // remote path, so a future s2s or gateway module inherits it).
        if (from?.local && this.isLocalHost(from.domain) && stanza.attrs.type !== 'error' && stanza.attrs.type !== 'result' && !this.acl.entitled('federation', from)) {
          this.log.info({ user: from.bare, service: 'federation', to: to.domain, rule: formatRule(this.acl.explain('federation', from)) }, 'remote stanza refused: no entitlement');
          throw stanzaError('forbidden');
        }
        if (await this.hooks.fire('route.remote', { stanza, to, from })) return;
        this.bounce(stanza, stanzaError('remote-server-not-found'), origin);
        return;
      }
      if (!to.local) return await this.toServer(stanza, to, from, origin);
      return await this.toUser(stanza, to, from, origin);
    } catch (err) {
      if (err instanceof StanzaError) {
        this.bounce(stanza, err, origin);
        return;
      }
      throw err;
    }
  }

  /**
   * Issue 9: a local user without the service's entitlement is refused at the door, in one place
   * for every gated service. Replies, errors and leaving (unavailable presence) still pass, so a
   * user who loses the entitlement is not stuck half inside a room.
   */
  private checkEntitlement(service: { name: string; opts: ServiceOptions }, stanza: Element, from: Jid | null, to: Jid): void {
    const { entitlement, gate = true } = service.opts;
    if (!entitlement || !gate || !from?.local || !this.isLocalHost(from.domain)) return;
    const type = stanza.attrs.type;
    if (type === 'error' || type === 'result' || (stanza.name === 'presence' && type === 'unavailable')) return;
    if (this.acl.entitled(entitlement, from)) return;
    const why = this.acl.explain(entitlement, from);
    this.log.info({ user: from.bare, service: entitlement, to: to.domain, rule: formatRule(why) }, 'service refused: no entitlement');
    throw stanzaError('forbidden');
  }

  /** Answers a stanza with an error (never answers an error). */
  bounce(stanza: Element, err: StanzaError, origin?: C2SSession): void {
    if (stanza.attrs.type === 'error') return;
    const reply = errorReply(stanza, err);
    if (origin && reply.attrs.to === origin.jid?.full) {
      origin.send(reply);
      return;
    }
    if (!reply.attrs.to) return;
    void this.route(reply).catch((e) => this.log.error({ err: e }, 'bounce failed'));
  }

  private async toServer(stanza: Element, to: Jid, from: Jid | null, origin?: C2SSession): Promise<void> {
    if (to.resource && stanza.name === 'iq' && (stanza.attrs.type === 'get' || stanza.attrs.type === 'set')) {
      throw stanzaError('service-unavailable');
    }
    if (stanza.name === 'iq') return this.handleIq(stanza, to, from, 'server', origin);
    if (await this.hooks.fire('route.server', { stanza, to, from })) return;
    // RFC 6120 §10.4.1: a message to the server itself that nobody handles gets service-unavailable; presence is ignored.
    if (stanza.name === 'message') throw stanzaError('service-unavailable');
  }

  private async handleIq(stanza: Element, to: Jid, from: Jid | null, target: 'server' | 'account', origin?: C2SSession): Promise<void> {
    const type = stanza.attrs.type;
    if (type === 'result' || type === 'error') {
      const key = `${to.bare}\u0000${stanza.attrs.id}`;
      const p = this.pending.get(key);
      if (p && (!from || stanza.attrs.from)) {
        this.pending.delete(key);
        clearTimeout(p.timer);
        if (type === 'result') p.resolve(stanza);
        else p.reject(errorFromStanza(stanza));
      }
      return;
    }
    if (!from) throw stanzaError('bad-request');
    const self = target === 'account' && from.bare === to.bare;
    const payload = await this.iqs.dispatch({ stanza, from, to, session: origin, self }, target);
    const reply = iqResult(stanza, payload);
    if (origin && reply.attrs.to === origin.jid?.full) origin.send(reply);
    else await this.route(reply);
  }

  private async toUser(stanza: Element, to: Jid, from: Jid | null, origin?: C2SSession): Promise<void> {
    if (await this.hooks.fire('route.user', { stanza, to, from })) return;
    const name = stanza.name;
    const type = stanza.attrs.type;
    if (name === 'iq') {
      if (to.resource) {
        const s = this.sessions.get(to);
        if (s) return s.send(stanza);
        if (type === 'get' || type === 'set') throw stanzaError('service-unavailable');
        return;
      }
      if (!(await this.accountExists(to.bare)) && !this.sessions.count(to.bare)) {
        if (type === 'get' || type === 'set') throw stanzaError('service-unavailable');
        return;
      }
      return this.handleIq(stanza, to, from, 'account', origin);
    }
    if (name === 'presence') {
      // Subscription types and probes were taken by the roster module in route.user.
      if (to.resource) {
        const s = this.sessions.get(to);
        if (s && (type === undefined || type === 'unavailable' || type === 'error')) s.send(stanza);
        return;
      }
      if (type === undefined || type === 'unavailable' || type === 'error') {
        for (const s of this.sessions.available(to.bare)) s.send(stanza);
      }
      return;
    }
    if (name === 'message') return this.deliverMessage(stanza, to, from);
    // Any other top-level element is not routable.
    throw stanzaError('bad-request');
  }

  private async deliverMessage(stanza: Element, to: Jid, from: Jid | null): Promise<void> {
    const type = stanza.attrs.type ?? 'normal';
    // Errors go to the exact resource only; groupchat to an account is never delivered (RFC 6121
    // §8.5.2.1.1, §8.5.3.2.1), except to a full JID (a room's occupant).
    if (type !== 'error' && type !== 'groupchat' && this.hooks.has('message.inbound')) {
      await this.hooks.fire('message.inbound', { stanza, to, from });
    }
    if (to.resource) {
      const s = this.sessions.get(to);
      if (s) return this.deliverTo(stanza, to, [s]);
      // RFC 6121 §8.5.3.2.1: no such resource.
      if (type === 'headline' || type === 'error') return;
      // Only chat is handled as if sent to the bare JID; normal (and unknown types, treated as
      // normal per §5.2.2) and groupchat are "S/E" in Table 1: we return service-unavailable.
      if (type !== 'chat') throw stanzaError('service-unavailable');
    }
    if (type === 'error') return;
    if (type === 'groupchat') throw stanzaError('service-unavailable');
    const available = this.sessions.available(to.bare).filter((s) => s.priority >= 0);
    if (available.length) return this.deliverTo(stanza, to, type === 'headline' ? available : highestPriority(available));
    if (!(await this.accountExists(to.bare))) throw stanzaError('service-unavailable');
    if (type === 'headline') {
      await this.hooks.fire('message.offline', { stanza, to });
      return;
    }
    if (!(await this.hooks.fire('message.offline', { stanza, to }))) {
      // No offline storage: RFC 6121 §8.5.2.2.1 lets the server return service-unavailable.
      throw stanzaError('service-unavailable');
    }
  }

  private deliverTo(stanza: Element, to: Jid, sessions: C2SSession[]): void {
    for (const s of sessions) s.send(stanza);
    if (this.hooks.has('message.delivered')) this.hooks.foldSync('message.delivered', { stanza, to, sessions });
  }

  /**
   * XEP-0198: a message written to a session that ended without acknowledging it. It goes to the
   * account's other available sessions (highest priority), else to offline storage, else back to
   * the sender as undeliverable; message.inbound and message.delivered are not fired again (it was
   * archived and carbon-copied on its first delivery).
   */
  async redeliver(stanza: Element): Promise<void> {
    const to = Jid.tryParse(stanza.attrs.to);
    const type = stanza.attrs.type ?? 'normal';
    if (!to || type === 'error' || type === 'groupchat') return;
    const available = this.sessions.available(to.bare).filter((s) => s.priority >= 0);
    if (available.length) {
      for (const s of highestPriority(available)) s.send(stanza);
      return;
    }
    try {
      const bare = Jid.parse(to.bare);
      if (!(await this.hooks.fire('message.offline', { stanza, to: bare, redelivery: true })) && type !== 'headline') {
        this.bounce(stanza, stanzaError('service-unavailable'));
      }
    } catch (err) {
      if (!(err instanceof StanzaError)) throw err;
      this.bounce(stanza, err);
    }
  }

  /** Sends an iq from the server and resolves its result. */
  request(iq: Element, timeoutMs = 30_000, onRouted?: () => void): Promise<Element> {
    if (!iq.attrs.id) iq.attrs.id = randomBytes(8).toString('hex');
    const from = Jid.tryParse(iq.attrs.from);
    if (!from) return Promise.reject(new Error('request needs a from address'));
    const key = `${from.bare}\u0000${iq.attrs.id}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(key);
        reject(stanzaError('remote-server-timeout'));
      }, timeoutMs);
      timer.unref();
      this.pending.set(key, { resolve, reject, timer });
      this.route(iq).then(
        () => onRouted?.(),
        (err) => {
          clearTimeout(timer);
          this.pending.delete(key);
          reject(err);
        },
      );
    });
  }
}

/** RFC 6121 §8.5.2.1.1: normal and chat messages go to every resource sharing the highest priority. */
function highestPriority(sessions: C2SSession[]): C2SSession[] {
  let max = Number.NEGATIVE_INFINITY;
  for (const s of sessions) if (s.priority > max) max = s.priority;
  return sessions.filter((s) => s.priority === max);
}

function onLocalHost(server: Server, jid: string | undefined): boolean {
  const j = Jid.tryParse(jid);
  return !!j && server.isLocalHost(j.domain);
}

function errorFromStanza(stanza: Element): StanzaError {
  const err = stanza.getChild('error');
  const cond = err?.getChildElements().find((c) => c.attrs.xmlns === NS.STANZAS)?.name ?? 'undefined-condition';
  return new StanzaError((err?.attrs.type as StanzaError['type']) ?? 'cancel', cond as StanzaError['condition']);
}

/** The unauthenticated connection that got least far in its negotiation (the oldest among equals). */
function leastAdvanced(sessions: Set<C2SSession>): C2SSession | undefined {
  let best: C2SSession | undefined;
  let bestProgress = Number.POSITIVE_INFINITY;
  // A Set iterates in insertion order: the first with the lowest progress is the oldest of those.
  for (const s of sessions) {
    const p = s.negotiationProgress;
    if (p < bestProgress) {
      best = s;
      bestProgress = p;
      if (p === 0) break;
    }
  }
  return best;
}

