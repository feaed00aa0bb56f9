// A client-to-server session (RFC 6120 §4-§7): stream negotiation (STARTTLS, SASL, resource
// binding, legacy session), then stanza intake for the bound session. Transport-agnostic: TCP,
// the mux link, BOSH and WebSocket all drive the same code through the Transport interface.
import { randomBytes } from 'node:crypto';
import { Element } from 'ltx';
import { StreamParser, type StreamParserHandlers } from '../xmpp/parser.js';
import { StreamError, StanzaError, stanzaError } from '../xmpp/errors.js';
import { Jid, JidError } from '../xmpp/jid.js';
import { NS } from '../xmpp/ns.js';
import { errorReply, iqResult } from '../xmpp/stanza.js';
import type { SaslContext, SaslServerSession } from '../auth/sasl/types.js';
import { addressKey, type Transport, type TransportEvents } from './transport.js';
import type { Server } from './server.js';
import type { Logger } from './logger.js';
import { TokenBucket } from './bucket.js';

declare module './hooks.js' {
  interface HookMap {
    /** A stanza received before authentication (e.g. XEP-0077 registration); unhandled ones end the stream. */
    'c2s.preauth': { session: C2SSession; stanza: Element };
    /** A top-level non-stanza element after authentication, bound or not yet (XEP-0198, XEP-0352 ...). */
    'c2s.nonza': { session: C2SSession; element: Element };
    /** A stanza from a bound client, after `from` stamping, before routing. */
    'c2s.stanza': { session: C2SSession; stanza: Element };
    /** A resource was bound. */
    'session.bound': { session: C2SSession };
    /** A bound session ended (already removed from the registry). */
    'session.closed': { session: C2SSession; reason: string };
    /** XEP-0198: the session lost its connection and waits for resumption (still bound, sends are queued). */
    'session.hibernated': { session: C2SSession };
    /** XEP-0198: a hibernated session was resumed on a new connection. */
    'session.resumed': { session: C2SSession };
    /** XEP-0198: a stanza was queued for a hibernated session (XEP-0357 push notifies here). */
    'session.held': { session: C2SSession; stanza: Element };
  }
  interface FoldMap {
    /** Stream features offered at a negotiation stage; modules append children. */
    'c2s.features': { session: C2SSession; features: Element; stage: 'pre-tls' | 'pre-auth' | 'post-auth' };
    /** Every stanza written to a client passes here (sync); return null to hold it back. */
    'c2s.send': { session: C2SSession; stanza: Element | null };
  }
}

export type SessionState = 'connected' | 'stream-opened' | 'tls' | 'authenticated' | 'bound' | 'closed';

const STREAM_CLOSE = '</stream:stream>';
/** XEP-0440 SASL Channel-Binding Type Capability. */
const NS_SASL_CB = 'urn:xmpp:sasl-cb:0';

export class C2SSession implements TransportEvents, StreamParserHandlers {
  readonly id = randomBytes(12).toString('base64url');
  state: SessionState = 'connected';
  host = '';
  username = '';
  /** The credential (XMPP token id) this session logged in with, when it was a token (issue 9). */
  credential: string | undefined;
  jid: Jid | null = null;
  /** Initial presence sent and not yet unavailable. */
  available = false;
  priority = 0;
  /** Last broadcast presence (available), re-serialized. */
  presence: Element | null = null;
  /** The client requested the roster (RFC 6121 §2.1.6 "interested resource"). */
  interested = false;
  /** Full JIDs this session sent directed presence to (RFC 6121 §4.6). */
  readonly directed = new Set<string>();
  /** Module-private per-session state. */
  readonly data = new Map<string | symbol, unknown>();
  readonly createdAt = Date.now();
  lastActivity = Date.now();

  /**
   * Stanzas (message, presence, iq) received on this bound stream, modulo 2^32; XEP-0198 counts
   * its `h` from the value at `<enable/>`.
   */
  stanzasIn = 0;
  /**
   * XEP-0198: how long the session waits for resumption when its connection drops (0: it ends at
   * once). Set by the stream-management module when the client enables resumption.
   */
  resumeTimeoutMs = 0;
  /** The connection dropped and the session waits for resumption: still bound and available; writes are dropped. */
  hibernated = false;
  private hibernateTimer: NodeJS.Timeout | null = null;

  private parser: StreamParser;
  private headerSent = false;
  private sasl: SaslServerSession | null = null;
  private saslMechanism = '';
  private authFailures = 0;
  private negotiationTimer: NodeJS.Timeout | null = null;
  private queue: Element[] = [];
  private processing = false;
  private readonly bytesBucket: TokenBucket;
  private readonly stanzaBucket: TokenBucket;
  private throttleTimer: NodeJS.Timeout | null = null;
  private paused = false;
  private pingPending: string | null = null;
  readonly log: Logger;
  /** The connection; replaced when a hibernated session is resumed on a new one (XEP-0198). */
  transport: Transport;

  constructor(
    readonly server: Server,
    transport: Transport,
  ) {
    this.transport = transport;
    const limits = server.config.limits;
    this.log = server.log.child(
      transport.reportedBy ? { session: this.id, addr: transport.remoteAddress, via: transport.reportedBy } : { session: this.id, addr: transport.remoteAddress },
    );
    this.parser = this.newParser();
    this.bytesBucket = new TokenBucket(limits.bytesPerSecond, limits.burstBytes);
    this.stanzaBucket = new TokenBucket(limits.stanzasPerSecond, limits.burstStanzas);
    transport.setHandlers(this);
    this.negotiationTimer = setTimeout(() => {
      this.fail(new StreamError('connection-timeout', 'negotiation took too long'));
    }, limits.negotiationTimeoutMs);
    this.negotiationTimer.unref();
  }

  get closed(): boolean {
    return this.state === 'closed';
  }

  get remoteAddress(): string {
    return this.transport.remoteAddress;
  }

  /** The key of this connection's address for quotas and login bans (see addressKey in transport.ts). */
  get addressKey(): string {
    return addressKey(this.transport);
  }

  get secure(): boolean {
    return this.transport.secure;
  }

  /**
   * How far an unauthenticated connection got (the server closes the least advanced one when an
   * address's quota is full): one point each for TLS on, a stream opened and SASL under way; 4
   * once logged in.
   */
  get negotiationProgress(): number {
    if (this.authenticated) return 4;
    return (this.transport.secure ? 1 : 0) + (this.state === 'connected' ? 0 : 1) + (this.sasl ? 1 : 0);
  }

  get authenticated(): boolean {
    return this.state === 'authenticated' || this.state === 'bound';
  }

  private newParser(): StreamParser {
    const l = this.server.config.limits;
    return new StreamParser(
      this,
      { maxStanzaBytes: l.maxStanzaBytes, maxDepth: l.maxDepth, maxAttributes: l.maxAttributes },
    );
  }

  // ---- input ------------------------------------------------------------------------------

  // The session is its transport's and parser's event sink (methods, not per-session closures: a
  // few hundred bytes per connection).

  /** @internal transport event */
  onTransportData(chunk: Buffer): void {
    if (this.state === 'closed') return;
    this.lastActivity = Date.now();
    // Flood control: sustained bytes/s with a burst; over budget, stop reading for the deficit.
    const wait = this.bytesBucket.take(chunk.length);
    if (wait > 0) this.throttle(wait);
    this.parser.write(chunk);
  }

  private throttle(ms: number): void {
    if (this.throttleTimer || this.state === 'closed') return;
    this.setPaused(true);
    this.throttleTimer = setTimeout(() => {
      this.throttleTimer = null;
      this.setPaused(false);
    }, Math.min(ms, 10_000));
    this.throttleTimer.unref();
  }

  private setPaused(p: boolean): void {
    const want = p || this.throttleTimer !== null || this.queue.length > 64;
    if (want === this.paused) return;
    this.paused = want;
    if (want) this.transport.pause();
    else this.transport.resume();
  }

  /** @internal parser event */
  onStreamStart(attrs: Record<string, string>, info: { name: string; ns: string; defaultNs: string }): void {
    // RFC 6120 §4.9.1.3: a stream error before our header still needs a header first.
    const to = attrs.to;
    if (info.defaultNs !== NS.CLIENT) {
      this.fail(new StreamError('invalid-namespace', 'default namespace must be jabber:client'));
      return;
    }
    if (!to) {
      this.fail(new StreamError('improper-addressing', "stream header lacks 'to'"));
      return;
    }
    let host: string;
    try {
      host = Jid.parse(to).domain;
    } catch {
      this.fail(new StreamError('host-unknown'));
      return;
    }
    if (!this.server.isLocalHost(host) || (this.host && host !== this.host)) {
      this.host ||= host;
      this.fail(new StreamError('host-unknown'));
      return;
    }
    this.host = host;
    const version = attrs.version;
    if (!version || !/^1\.\d+$/.test(version)) {
      this.fail(new StreamError('unsupported-version', 'XMPP 1.0 streams only'));
      return;
    }
    this.sendHeader(attrs.from);
    if (this.state === 'connected') this.state = 'stream-opened';
    void this.sendFeatures();
  }

  private sendHeader(clientFrom?: string): void {
    const from = this.host || this.server.hostNames()[0] || 'localhost';
    let to = '';
    if (clientFrom) {
      const j = Jid.tryParse(clientFrom);
      if (j) to = ` to='${escapeAttr(j.full)}'`;
    }
    this.transport.write(
      `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='${randomBytes(12).toString('base64url')}' from='${escapeAttr(from)}'${to} version='1.0' xml:lang='en'>`,
    );
    this.headerSent = true;
  }

  private async sendFeatures(): Promise<void> {
    const features = new Element('stream:features');
    let stage: 'pre-tls' | 'pre-auth' | 'post-auth';
    const tlsRequired = this.server.config.tls.required;
    if (!this.authenticated) {
      if (!this.secure && this.transport.canStartTls) {
        const st = features.c('starttls', { xmlns: NS.TLS });
        if (tlsRequired) st.c('required');
      }
      if (!this.secure && tlsRequired && this.transport.canStartTls) {
        stage = 'pre-tls';
      } else {
        stage = 'pre-auth';
        const mechs = features.c('mechanisms', { xmlns: NS.SASL });
        for (const m of this.server.saslMechanisms(this)) mechs.c('mechanism').t(m.name);
        // XEP-0440: which channel-binding types the -PLUS mechanisms accept on this connection
        // (tls-exporter only on TLS 1.3), so that clients need not guess.
        const cbTypes = this.transport.channelBindingTypes();
        if (cbTypes.length) {
          const cb = features.c('sasl-channel-binding', { xmlns: NS_SASL_CB });
          for (const type of cbTypes) cb.c('channel-binding', { type });
        }
      }
    } else {
      stage = 'post-auth';
      features.c('bind', { xmlns: NS.BIND });
      features.c('session', { xmlns: NS.SESSION }).c('optional');
    }
    await this.server.hooks.fold('c2s.features', { session: this, features, stage });
    this.write(features.toString());
  }

  /** @internal parser event */
  onStreamEnd(): void {
    this.close('client closed the stream');
  }

  /** Top-level elements, processed strictly in order. */
  /** @internal parser event */
  onStanza(el: Element): void {
    if (this.state === 'closed') return;
    // TLS and SASL negotiation are handled synchronously so that the parser reset (stream restart)
    // happens before any further buffered byte is parsed.
    if (!this.authenticated) {
      this.negotiate(el);
      return;
    }
    this.queue.push(el);
    if (this.queue.length > 64) this.setPaused(true);
    if (!this.processing) void this.drainQueue();
  }

  private async drainQueue(): Promise<void> {
    this.processing = true;
    try {
      while (this.queue.length && this.state !== 'closed') {
        if (this.state === 'bound') {
          // Flood control: stanzas are taken from the bucket as they are processed (one read can
          // carry hundreds); over budget, stop reading and wait for the deficit.
          const wait = this.stanzaBucket.take(1);
          if (wait > 0) {
            this.throttle(wait);
            await sleep(wait);
            if (this.closed) return;
          }
        }
        const el = this.queue.shift() as Element;
        try {
          await this.handleAuthenticated(el);
        } catch (err) {
          if (err instanceof StreamError) {
            this.fail(err);
            return;
          }
          if (err instanceof StanzaError) {
            this.bounce(el, err);
            continue;
          }
          this.log.error({ err }, 'stanza handling failed');
          if (el.name === 'iq' || el.name === 'message' || el.name === 'presence') {
            try {
              this.bounce(el, stanzaError('internal-server-error'));
            } catch (e) {
              this.log.error({ err: e }, 'could not bounce');
            }
          }
        }
        if (this.paused && this.queue.length <= 16) this.setPaused(false);
      }
    } finally {
      this.processing = false;
    }
  }

  // ---- negotiation (pre-auth) ---------------------------------------------------------------

  private negotiate(el: Element): void {
    const name = el.name;
    const ns = el.attrs.xmlns;
    if (name === 'starttls' && ns === NS.TLS) return void this.onStartTls();
    if (ns === NS.SASL && (name === 'auth' || name === 'response' || name === 'abort')) {
      // SASL steps are async (PBKDF2, storage); chain them so they run one at a time, in order.
      this.preauthChain = this.preauthChain.then(() =>
        this.onSasl(el).catch((err) => {
          this.log.error({ err }, 'SASL failure');
          this.fail(new StreamError('internal-server-error'));
        }),
      );
      return;
    }
    if (this.server.config.tls.required && !this.secure && this.transport.canStartTls) {
      this.fail(new StreamError('policy-violation', 'STARTTLS is required'));
      return;
    }
    if (name === 'iq') {
      // Pre-auth iq (XEP-0077 registration); queued to keep order with async handlers.
      this.processPreauth(el);
      return;
    }
    this.fail(new StreamError('not-authorized'));
  }

  private preauthChain: Promise<void> = Promise.resolve();

  private preauthPending = 0;

  private processPreauth(el: Element): void {
    // Pre-auth requests are few (registration); a client piling them up is misbehaving.
    if (++this.preauthPending > 8) {
      this.fail(new StreamError('policy-violation', 'too many requests before authentication'));
      return;
    }
    this.preauthChain = this.preauthChain.then(async () => {
      this.preauthPending--;
      if (this.state === 'closed') return;
      try {
        const handled = await this.server.hooks.fire('c2s.preauth', { session: this, stanza: el });
        if (!handled) this.fail(new StreamError('not-authorized'));
      } catch (err) {
        if (err instanceof StanzaError) this.write(errorReply(el, err).toString());
        else this.fail(new StreamError('internal-server-error'));
      }
    });
  }

  private onStartTls(): void {
    if (this.secure || !this.transport.canStartTls || this.sasl) {
      this.write(`<failure xmlns='${NS.TLS}'/>`);
      this.close('starttls refused');
      return;
    }
    // Stream restart: anything the client sent after <starttls/> in plaintext is discarded.
    this.parser.reset();
    this.headerSent = false;
    this.state = 'tls';
    this.transport.startTls(this.host, `<proceed xmlns='${NS.TLS}'/>`).then(
      () => {
        this.log.debug('TLS established');
      },
      (err: Error) => {
        this.log.info({ err: err.message }, 'TLS handshake failed');
        this.destroy('tls handshake failed');
      },
    );
  }

  private async onSasl(el: Element): Promise<void> {
    if (this.server.config.tls.required && !this.secure && this.transport.canStartTls) {
      this.saslFailure('encryption-required', 'STARTTLS first');
      return;
    }
    if (el.name === 'abort') {
      this.sasl = null;
      this.saslFailure('aborted');
      return;
    }
    if (el.name === 'auth') {
      if (this.sasl) {
        this.saslFailure('malformed-request', 'authentication already in progress');
        this.sasl = null;
        return;
      }
      this.saslMechanism = ''; // a new exchange: a refusal before a mechanism is chosen is counted under "none"
      const throttle = this.server.throttle.check(this.addressKey);
      if (!throttle.allowed) {
        this.saslFailure('temporary-auth-failure', this.server.throttle.refusalText(throttle));
        return;
      }
      const mechName = el.attrs.mechanism ?? '';
      const mech = this.server.saslMechanisms(this).find((m) => m.name === mechName);
      if (!mech) {
        this.saslFailure('invalid-mechanism');
        return;
      }
      this.saslMechanism = mechName;
      this.sasl = mech.start(this.saslContext());
    } else if (!this.sasl) {
      this.saslFailure('malformed-request', 'no authentication in progress');
      return;
    }
    const text = el.getText().trim();
    let input: Buffer;
    if (text === '' || text === '=') input = Buffer.alloc(0);
    else if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text) || text.length % 4 !== 0) {
      this.sasl = null;
      this.saslFailure('incorrect-encoding');
      return;
    } else input = Buffer.from(text, 'base64');
    const session = this.sasl;
    const step = await session.step(input);
    if (this.state === 'closed' || this.sasl !== session) return;
    if (step.kind === 'challenge') {
      this.write(`<challenge xmlns='${NS.SASL}'>${step.data.length ? step.data.toString('base64') : '='}</challenge>`);
      return;
    }
    this.sasl = null;
    const throttle = this.server.throttle;
    const addr = this.addressKey;
    if (step.kind === 'failure') {
      const account = step.username ? (Jid.tryParse(`${step.username}@${this.host}`)?.bare ?? undefined) : undefined;
      this.log.info({ mechanism: this.saslMechanism, condition: step.condition, account }, 'authentication failed');
      if (!step.wrongCredentials) {
        // Not a guess (channel binding, malformed, directory down): answered at once, not counted.
        this.saslFailure(step.condition, step.text);
        return;
      }
      const banned = throttle.check(addr, account);
      const delay = throttle.delayFor(addr, account, true);
      if (banned.allowed) throttle.fail(addr, account);
      if (delay > 0) await sleep(delay);
      if (this.closed) return;
      if (!banned.allowed) this.saslFailure('temporary-auth-failure', throttle.refusalText(banned));
      else this.saslFailure(step.condition, step.text);
      return;
    }
    // success
    let jid: Jid;
    try {
      jid = Jid.of(step.username, this.host);
    } catch {
      this.saslFailure('not-authorized');
      return;
    }
    // The verdict for an account with recent failures waits, success too (a quick answer would
    // tell a guesser it was right); a banned (account, address) pair is refused even now.
    const delay = throttle.delayFor(addr, jid.bare, false);
    if (delay > 0) {
      await sleep(delay);
      if (this.closed) return;
    }
    const banned = throttle.check(addr, jid.bare);
    if (!banned.allowed) {
      this.saslFailure('temporary-auth-failure', throttle.refusalText(banned));
      return;
    }
    throttle.succeed(addr, jid.bare);
    this.username = jid.local;
    this.credential = step.credential;
    this.state = 'authenticated';
    this.server.preAuthDone(this);
    const data = step.data?.length ? step.data.toString('base64') : '';
    this.write(`<success xmlns='${NS.SASL}'>${data}</success>`);
    this.log.info({ user: jid.bare, mechanism: this.saslMechanism }, 'authenticated');
    this.parser.reset();
    this.headerSent = false;
  }

  private saslFailure(condition: string, text?: string): void {
    const t = text ? `<text xml:lang='en'>${escapeText(text)}</text>` : '';
    this.write(`<failure xmlns='${NS.SASL}'><${condition}/>${t}</failure>`);
    if (condition !== 'aborted') this.server.stats.authFailure(this.saslMechanism, condition);
    if (condition !== 'aborted' && ++this.authFailures >= 5) {
      this.fail(new StreamError('policy-violation', 'too many authentication attempts'));
    }
  }

  private saslContext(): SaslContext {
    const t = this.transport;
    const host = this.host;
    return {
      host,
      secure: t.secure,
      channelBindingTypes: t.channelBindingTypes(),
      channelBinding: (type) => t.channelBinding(type),
      getScram: (username, hash) => this.server.auth.getScram(username, host, hash),
      verifyPassword: (username, password) => this.server.auth.verifyPassword(username, host, password),
      verifyToken: (token) => this.server.auth.verifyToken(token, host),
      oauthDiscovery: this.server.auth.oauthDiscovery(host),
      serverSecret: this.server.secret,
    };
  }

  // ---- authenticated -------------------------------------------------------------------------

  private async handleAuthenticated(el: Element): Promise<void> {
    if (this.state === 'authenticated') {
      if (el.name === 'iq' && el.attrs.type === 'set') {
        const bind = el.getChild('bind', NS.BIND);
        if (bind) return this.onBind(el, bind);
      }
      // Nonzas before binding (XEP-0198 <resume/>).
      if (el.name !== 'iq' && el.name !== 'message' && el.name !== 'presence' && (await this.server.hooks.fire('c2s.nonza', { session: this, element: el }))) {
        return;
      }
      throw new StreamError('not-authorized', 'bind a resource first');
    }
    const name = el.name;
    if (name === 'message' || name === 'presence' || name === 'iq') {
      this.stanzasIn = (this.stanzasIn + 1) >>> 0;
      this.server.stats.stanzaIn(name); // plain integers, read by /metrics at scrape time
    } else {
      const handled = await this.server.hooks.fire('c2s.nonza', { session: this, element: el });
      if (!handled) throw new StreamError('unsupported-stanza-type');
      return;
    }
    const jid = this.jid as Jid;
    // RFC 6120 §8.1.2.1: the server stamps 'from'; a client-supplied one must be the full JID (or the bare JID).
    const from = el.attrs.from;
    if (from !== undefined && from !== jid.full) {
      const parsed = Jid.tryParse(from);
      if (!parsed || (parsed.full !== jid.full && parsed.full !== jid.bare)) throw new StreamError('invalid-from');
    }
    el.attrs.from = jid.full;
    if (el.attrs.to !== undefined) {
      const to = Jid.tryParse(el.attrs.to);
      if (!to) {
        this.bounce(el, stanzaError('jid-malformed'));
        return;
      }
      el.attrs.to = to.full;
    }
    if (name === 'iq') {
      const type = el.attrs.type;
      if (type !== 'get' && type !== 'set' && type !== 'result' && type !== 'error') {
        this.bounce(el, stanzaError('bad-request', 'invalid iq type'));
        return;
      }
      if (el.attrs.id === undefined) {
        if (type === 'get' || type === 'set') this.bounce(el, stanzaError('bad-request', 'iq without id'));
        return;
      }
      if (type === 'set' && el.getChild('session', NS.SESSION) && (!el.attrs.to || el.attrs.to === this.host)) {
        this.send(iqResult(el)); // legacy session establishment (RFC 3921), accepted as a no-op
        return;
      }
      if (type === 'result' && this.pingPending !== null && el.attrs.id === this.pingPending && (!el.attrs.to || el.attrs.to === this.host)) {
        this.pingPending = null;
        return;
      }
    }
    this.server.sanitizeInbound(el);
    const handled = await this.server.hooks.fire('c2s.stanza', { session: this, stanza: el });
    if (handled) return;
    if (el.attrs.to === undefined) {
      if (name === 'presence') return; // broadcast presence is the presence module's job
      // RFC 6120 §10.3: no 'to' means the account itself.
      el.attrs.to = jid.bare;
    }
    await this.server.route(el, this);
  }

  private async onBind(iq: Element, bind: Element): Promise<void> {
    const requested = bind.getChildText('resource')?.trim();
    let resource: string;
    try {
      resource = requested ? Jid.of(this.username, this.host, requested).resource : '';
    } catch (e) {
      if (e instanceof JidError) return this.sendBindError(iq, stanzaError('bad-request', 'invalid resource'));
      throw e;
    }
    if (!resource) resource = `parley-${randomBytes(6).toString('hex')}`;
    const jid = Jid.of(this.username, this.host, resource);
    const existing = this.server.sessions.get(jid);
    const limit = this.server.config.limits.resourcesPerAccount;
    const count = this.server.sessions.count(jid.bare) - (existing ? 1 : 0);
    if (count >= limit) {
      return this.sendBindError(iq, new StanzaError('wait', 'resource-constraint', 'too many resources for this account'));
    }
    if (existing) {
      if (this.server.config.sessions.conflict === 'refuse') {
        return this.sendBindError(iq, stanzaError('conflict', 'resource in use'));
      }
      existing.fail(new StreamError('conflict', 'replaced by new connection'));
    }
    this.jid = jid;
    this.state = 'bound';
    if (this.negotiationTimer) clearTimeout(this.negotiationTimer);
    this.negotiationTimer = null;
    this.server.sessions.add(this);
    const res = new Element('bind', { xmlns: NS.BIND });
    res.c('jid').t(jid.full);
    const reply = new Element('iq', { type: 'result', id: iq.attrs.id });
    reply.cnode(res);
    this.write(reply.toString());
    this.log.info({ jid: jid.full }, 'resource bound');
    await this.server.hooks.fire('session.bound', { session: this });
  }

  private sendBindError(iq: Element, err: StanzaError): void {
    const reply = new Element('iq', { type: 'error', id: iq.attrs.id });
    reply.cnode(err.toElement());
    this.write(reply.toString());
  }

  // ---- output ------------------------------------------------------------------------------

  /** Sends a stanza to this client (through the c2s.send filters). */
  send(stanza: Element): void {
    if (this.state === 'closed') return;
    const out = this.server.hooks.foldSync('c2s.send', { session: this, stanza }).stanza;
    if (!out) return;
    this.server.stats.stanzaOut(out.name);
    this.write(out.toString());
  }

  /** Writes raw serialized XML, enforcing the output buffer cap. */
  write(data: string): void {
    if (this.state === 'closed' || this.hibernated) return;
    // Checked before writing: what is already queued is what the client has not read, so one large
    // stanza to a client that keeps up never trips the cap, while a client that stopped reading does.
    if (this.transport.bufferedBytes > this.server.config.limits.outputBufferBytes) {
      this.log.warn('client not reading; output buffer exceeded');
      this.destroy('output buffer exceeded');
      return;
    }
    this.transport.write(data);
  }

  bounce(stanza: Element, err: StanzaError): void {
    if (stanza.attrs.type === 'error') return;
    const reply = errorReply(stanza, err);
    if (this.jid) reply.attrs.to = this.jid.full;
    this.send(reply);
  }

  /** XEP-0199: the server pings an idle client; an unanswered ping closes the session. */
  pingIfIdle(now: number, idleMs: number, timeoutMs: number): void {
    if (this.state !== 'bound' || this.hibernated) return;
    if (this.pingPending !== null) {
      if (now - this.lastActivity > timeoutMs) this.fail(new StreamError('connection-timeout', 'no answer to ping'));
      return;
    }
    if (now - this.lastActivity < idleMs) return;
    this.pingPending = `ping-${randomBytes(6).toString('hex')}`;
    this.lastActivity = now;
    // Through send(): XEP-0198 counts it like any other stanza.
    const ping = new Element('iq', { type: 'get', id: this.pingPending, from: this.host, to: (this.jid as Jid).full });
    ping.c('ping', { xmlns: NS.PING });
    this.send(ping);
  }

  // ---- closing -----------------------------------------------------------------------------

  /** Sends a stream error and closes. */
  fail(err: StreamError): void {
    if (this.state === 'closed') return;
    if (!this.headerSent) this.sendHeader();
    this.log.info({ condition: err.condition, text: err.text }, 'stream error');
    this.transport.write(`${err.toElement().toString()}${STREAM_CLOSE}`);
    this.finish(`stream error: ${err.condition}`);
    this.transport.close();
  }

  /** Closes the stream gracefully. */
  close(reason = 'closed'): void {
    if (this.state === 'closed') return;
    if (!this.headerSent) this.sendHeader();
    this.transport.write(STREAM_CLOSE);
    this.finish(reason);
    this.transport.close();
  }

  private destroy(reason: string): void {
    if (this.state === 'closed') return;
    this.finish(reason);
    this.transport.destroy();
  }

  /** @internal transport event */
  onTransportDrain(): void {}

  /** @internal parser event */
  onStreamError(err: StreamError): void {
    this.fail(err);
  }

  /** @internal transport event */
  onTransportClose(reason = 'connection closed'): void {
    if (this.state === 'bound' && this.resumeTimeoutMs > 0) this.hibernate(reason);
    else this.finish(reason);
  }

  // ---- XEP-0198 hibernation and resumption ---------------------------------------------------

  /** The connection dropped without a stream close: stay bound and available, wait for resumption. */
  private hibernate(reason: string): void {
    if (this.hibernated) return;
    this.hibernated = true;
    this.pingPending = null;
    this.server.connectionHibernated(this);
    this.log.info({ reason, waitMs: this.resumeTimeoutMs }, 'session hibernated');
    this.hibernateTimer = setTimeout(() => this.finish('not resumed in time'), this.resumeTimeoutMs);
    this.hibernateTimer.unref();
    void this.server.hooks.fire('session.hibernated', { session: this }).catch((err) => {
      this.log.error({ err }, 'session.hibernated hook failed');
    });
  }

  /**
   * XEP-0198 resumption: this session continues on `fresh`'s connection (a new stream that has just
   * authenticated as the same account) and `fresh` ends without any event. If this session's own
   * connection is still open (the client noticed the drop before we did), it is dropped. `first`
   * runs before anything else is written or processed (the `<resumed/>` answer and the
   * retransmission of unacknowledged stanzas); then `session.resumed` fires, and then the stanzas
   * the client pipelined after its `<resume/>` are processed here, in order.
   */
  takeOver(fresh: C2SSession, first: () => void): void {
    if (this.state !== 'bound' || fresh === this) throw new Error('takeOver: session is not bound');
    if (this.hibernateTimer) clearTimeout(this.hibernateTimer);
    this.hibernateTimer = null;
    const previous = this.transport;
    this.transport = fresh.transport;
    this.transport.setHandlers(this);
    this.parser = fresh.parser;
    this.parser.setHandlers(this);
    if (!this.hibernated) {
      previous.setHandlers(DETACHED);
      previous.destroy();
    }
    this.hibernated = false;
    this.server.connectionTakenOver(fresh, this, previous);
    this.headerSent = true;
    this.lastActivity = Date.now();
    this.pingPending = null;
    this.paused = fresh.paused;
    const pipelined = fresh.queue.splice(0);
    fresh.state = 'closed';
    if (fresh.negotiationTimer) clearTimeout(fresh.negotiationTimer);
    if (fresh.throttleTimer) clearTimeout(fresh.throttleTimer);
    fresh.negotiationTimer = fresh.throttleTimer = null;
    this.log.info({ addr: this.transport.remoteAddress }, 'session resumed');
    first();
    this.queue.push(...pipelined);
    // Modules see the resumption (CSI turns active again) before the pipelined stanzas are handled.
    const idle = !this.processing;
    this.processing = true;
    void this.server.hooks
      .fire('session.resumed', { session: this })
      .catch((err) => this.log.error({ err }, 'session.resumed hook failed'))
      .finally(() => {
        if (!idle) return; // the drain loop that was running picks the queue up
        this.processing = false;
        if (this.queue.length && this.state !== 'closed') void this.drainQueue();
      });
  }

  private finish(reason: string): void {
    if (this.state === 'closed') return;
    const wasBound = this.state === 'bound';
    const wasAuthenticated = this.authenticated;
    this.state = 'closed';
    this.hibernated = false;
    this.queue.length = 0;
    if (this.hibernateTimer) clearTimeout(this.hibernateTimer);
    this.hibernateTimer = null;
    if (this.negotiationTimer) clearTimeout(this.negotiationTimer);
    if (this.throttleTimer) clearTimeout(this.throttleTimer);
    this.negotiationTimer = this.throttleTimer = null;
    this.server.connectionClosed(this, wasAuthenticated);
    if (wasBound) {
      this.server.sessions.remove(this);
      this.log.info({ reason }, 'session closed');
      void this.server.hooks.fire('session.closed', { session: this, reason }).catch((err) => {
        this.log.error({ err }, 'session.closed hook failed');
      });
    }
  }
}

function escapeAttr(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Events of a connection nobody listens to any more (the one a resumed session left behind). */
const DETACHED: TransportEvents = {
  onTransportData() {},
  onTransportClose() {},
  onTransportDrain() {},
};

function escapeText(s: string): string {
  return s.replace(/[&<>]/g, (c) => `&#${c.charCodeAt(0)};`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}


declare module './hooks.js' {
  interface HookMap {
    /** A session sent its initial presence (XEP-0160 offline delivery, pending subscription requests). */
    'presence.initial': { session: C2SSession };
  }
}

