// A raw-socket XMPP test client (node:net + node:tls, no XMPP library) for negative tests: it sends
// exactly the bytes it is given, records everything the server sends back as text, and can walk a
// stream through STARTTLS, SASL PLAIN and resource binding so that attacks can start from an
// authenticated session.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { startTestServer, type TestServer } from './server.js';

export const NS_STREAMS = 'urn:ietf:params:xml:ns:xmpp-streams';
export const NS_TLS = 'urn:ietf:params:xml:ns:xmpp-tls';
export const NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl';
export const NS_BIND = 'urn:ietf:params:xml:ns:xmpp-bind';

/** The initial stream header a client sends (RFC 6120 §4.7). */
export function streamHeader(to = 'localhost', opts: { xmlDecl?: boolean; attrs?: string } = {}): string {
  const decl = opts.xmlDecl === false ? '' : "<?xml version='1.0'?>";
  return `${decl}<stream:stream to='${to}' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'${opts.attrs ? ` ${opts.attrs}` : ''}>`;
}

/** base64(authzid NUL authcid NUL password), RFC 4616. */
export function plainPayload(user: string, password: string, authzid = ''): string {
  return Buffer.from(`${authzid}\u0000${user}\u0000${password}`, 'utf8').toString('base64');
}

export function plainAuth(user: string, password: string, authzid = ''): string {
  return `<auth xmlns='${NS_SASL}' mechanism='PLAIN'>${plainPayload(user, password, authzid)}</auth>`;
}

/**
 * base64 of an RFC 7628 §3.1 OAUTHBEARER initial client response: the gs2-header (`a=authzid` only
 * when one is given, written as is: no =2C/=3D escaping), then optional host and port pairs and the
 * auth pair, each followed by %x01, and the final %x01.
 */
export function oauthBearerPayload(token: string, authzid?: string, pairs: { host?: string; port?: number } = {}): string {
  const gs2 = `n,${authzid === undefined ? '' : `a=${authzid}`},`;
  const kv = `${pairs.host === undefined ? '' : `host=${pairs.host}\u0001`}${pairs.port === undefined ? '' : `port=${pairs.port}\u0001`}`;
  return Buffer.from(`${gs2}\u0001${kv}auth=Bearer ${token}\u0001\u0001`, 'utf8').toString('base64');
}

export function pingIq(id: string, to = 'localhost'): string {
  return `<iq type='get' to='${to}' id='${id}'><ping xmlns='urn:xmpp:ping'/></iq>`;
}

/** The defined condition of the first <stream:error/> in `text` (RFC 6120 §4.9.3), if any. */
export function parseStreamError(text: string): string | undefined {
  const m = /<stream:error\b[^>]*>([\s\S]*?)<\/stream:error>/.exec(text);
  if (!m) return undefined;
  const re = /<([A-Za-z][\w.-]*)\b([^>]*)>/g;
  for (let c = re.exec(m[1] as string); c; c = re.exec(m[1] as string)) {
    const [, name, attrs] = c;
    if (name === 'text') continue;
    if (new RegExp(`xmlns=(['"])${NS_STREAMS.replace(/[.:]/g, '\\$&')}\\1`).test(attrs as string)) return name;
  }
  return undefined;
}

/** The <text/> of the first stream error, if any. */
export function parseStreamErrorText(text: string): string | undefined {
  const m = /<stream:error\b[^>]*>[\s\S]*?<text\b[^>]*>([\s\S]*?)<\/text>[\s\S]*?<\/stream:error>/.exec(text);
  return m?.[1];
}

export interface LoginOptions {
  /** Resource to request; the server picks one when omitted. */
  resource?: string;
  /** PLAIN authzid (default: empty). */
  authzid?: string;
  /** Send initial presence after binding (needed to receive messages to the bare JID). */
  presence?: boolean;
  /** Stream `to` (default 'localhost'). */
  domain?: string;
  timeoutMs?: number;
}

export interface ConnectOptions {
  host?: string;
  /** Connect with TLS from the first byte (XEP-0368 direct TLS port). */
  directTls?: boolean;
  tls?: tls.ConnectionOptions;
  /** Local address to connect from (e.g. 127.0.0.2: another client address on loopback). */
  localAddress?: string;
}

type Waiter = () => void;

export class RawClient {
  socket: net.Socket | tls.TLSSocket;
  /** Everything received so far, decoded as UTF-8 (invalid bytes become U+FFFD). */
  text = '';
  /** Bytes received so far. */
  bytesReceived = 0;
  /** Where the next waitFor() starts searching by default. */
  cursor = 0;
  /** Socket errors seen (EPIPE/ECONNRESET after the server closes are normal in negative tests). */
  readonly errors: Error[] = [];
  /** The bound full JID after login(). */
  jid = '';
  isClosed = false;
  secure = false;
  private decoder = new TextDecoder('utf-8');
  private waiters = new Set<Waiter>();
  private ids = 0;

  private constructor(socket: net.Socket | tls.TLSSocket, secure: boolean) {
    this.socket = socket;
    this.secure = secure;
    this.attach(socket);
  }

  /** Opens a TCP (or direct TLS) connection. Resolves once connected. */
  static connect(port: number, opts: ConnectOptions = {}): Promise<RawClient> {
    const host = opts.host ?? '127.0.0.1';
    return new Promise((resolve, reject) => {
      const sock = opts.directTls
        ? tls.connect({ port, host, servername: 'localhost', rejectUnauthorized: false, ...(opts.localAddress ? ({ localAddress: opts.localAddress } as tls.ConnectionOptions) : {}), ...opts.tls })
        : net.connect({ port, host, localAddress: opts.localAddress });
      const onError = (err: Error) => reject(err);
      sock.once('error', onError);
      sock.once(opts.directTls ? 'secureConnect' : 'connect', () => {
        sock.off('error', onError);
        if (!opts.directTls) (sock as net.Socket).setNoDelay(true);
        resolve(new RawClient(sock, !!opts.directTls));
      });
    });
  }

  /** connect() + login(). */
  static async login(port: number, user: string, password: string, opts: LoginOptions & ConnectOptions = {}): Promise<RawClient> {
    const c = await RawClient.connect(port, opts);
    try {
      await c.login(user, password, opts);
    } catch (err) {
      c.destroy();
      throw err;
    }
    return c;
  }

  private attach(sock: net.Socket): void {
    sock.on('data', (chunk: Buffer) => {
      if (sock !== this.socket) return;
      this.bytesReceived += chunk.length;
      this.text += this.decoder.decode(chunk, { stream: true });
      this.notify();
    });
    sock.on('error', (err) => {
      this.errors.push(err);
    });
    sock.on('close', () => {
      if (sock !== this.socket) return;
      this.isClosed = true;
      this.notify();
    });
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /** A fresh id for iq stanzas. */
  nextId(prefix = 'raw'): string {
    return `${prefix}-${++this.ids}-${randomBytes(3).toString('hex')}`;
  }

  /** Writes bytes as-is; resolves when handed to the kernel (or at once if the socket is gone). Never rejects. */
  send(data: string | Uint8Array): Promise<void> {
    return new Promise((resolve) => {
      const s = this.socket;
      if (s.destroyed || !s.writable) {
        resolve();
        return;
      }
      s.write(data, (err) => {
        if (err) this.errors.push(err);
        resolve();
      });
    });
  }

  /** The text received after `since` (default: the cursor). */
  textSince(since = this.cursor): string {
    return this.text.slice(since);
  }

  /** Current end of the received text, to pass as `since` later. */
  mark(): number {
    return this.text.length;
  }

  /**
   * Waits until the received text after `since` (default: the cursor) matches `re`; advances the
   * cursor past the match. Rejects on timeout, or when the connection closes without a match.
   */
  waitFor(re: RegExp, timeoutMs = 5000, since = this.cursor): Promise<RegExpExecArray> {
    const flags = re.flags.replace(/[gy]/g, '');
    const rx = new RegExp(re.source, flags);
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const m = rx.exec(this.text.slice(since));
        if (m) {
          const end = since + m.index + m[0].length;
          if (end > this.cursor) this.cursor = end;
          done();
          resolve(m);
          return true;
        }
        if (this.isClosed) {
          done();
          reject(new Error(`connection closed while waiting for ${re}; received after ${since}: ${this.describe(since)}`));
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${re}; received after ${since}: ${this.describe(since)}`));
      }, timeoutMs);
      const waiter = () => {
        check();
      };
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
      };
      if (!check()) this.waiters.add(waiter);
    });
  }

  private describe(since: number): string {
    const t = this.text.slice(since);
    return t.length > 2000 ? `${t.slice(0, 1000)} ...[${t.length - 2000} chars]... ${t.slice(-1000)}` : JSON.stringify(t);
  }

  /** Resolves when the server has closed the connection (the socket is fully closed); rejects on timeout. */
  closed(timeoutMs = 5000): Promise<void> {
    if (this.isClosed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`connection still open after ${timeoutMs} ms; received: ${this.describe(0)}`));
      }, timeoutMs);
      const waiter = () => {
        if (!this.isClosed) return;
        clearTimeout(timer);
        this.waiters.delete(waiter);
        resolve();
      };
      this.waiters.add(waiter);
    });
  }

  /** The condition of the stream error received so far, if any. */
  streamError(): string | undefined {
    return parseStreamError(this.text);
  }

  /** Waits for a complete <stream:error/> and returns its condition. */
  async waitStreamError(timeoutMs = 5000): Promise<string> {
    await this.waitFor(/<\/stream:error>/, timeoutMs, 0);
    return parseStreamError(this.text) ?? '(no defined condition)';
  }

  /**
   * The usual negative-test ending: a stream error with its condition, then the server closes the
   * stream and the connection. Returns the condition.
   */
  async expectStreamErrorAndClose(timeoutMs = 5000): Promise<string> {
    const cond = await this.waitStreamError(timeoutMs);
    await this.closed(timeoutMs);
    return cond;
  }

  /** Sends a stream header and waits for the server's <stream:features/>; returns the features XML. */
  async openStream(to = 'localhost', timeoutMs = 5000): Promise<string> {
    const since = this.mark();
    await this.send(streamHeader(to));
    const m = await this.waitFor(/<stream:features\b[^>]*(?:\/>|>[\s\S]*?<\/stream:features>)/, timeoutMs, since);
    return m[0];
  }

  /** STARTTLS (RFC 6120 §5): <starttls/>, wait for <proceed/>, then the TLS handshake on the same socket. */
  async startTls(opts: tls.ConnectionOptions = {}, timeoutMs = 5000): Promise<void> {
    const since = this.mark();
    await this.send(`<starttls xmlns='${NS_TLS}'/>`);
    await this.waitFor(/<proceed\b[^>]*\/>|<proceed\b[^>]*>\s*<\/proceed>/, timeoutMs, since);
    await this.upgradeTls(opts, timeoutMs);
  }

  /** Runs the TLS client handshake on the current (plain) socket; rejects if it fails. */
  upgradeTls(opts: tls.ConnectionOptions = {}, timeoutMs = 5000): Promise<void> {
    const raw = this.socket as net.Socket;
    raw.removeAllListeners('data');
    this.decoder = new TextDecoder('utf-8');
    const t = tls.connect({ socket: raw, servername: 'localhost', rejectUnauthorized: false, ...opts });
    this.socket = t;
    this.attach(t);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error('TLS handshake timed out'));
      }, timeoutMs);
      const onSecure = () => {
        cleanup();
        this.secure = true;
        resolve();
      };
      const onError = (err: Error) => {
        cleanup();
        reject(err);
      };
      const onClose = () => {
        cleanup();
        reject(new Error('connection closed during the TLS handshake'));
      };
      const cleanup = () => {
        clearTimeout(timer);
        t.off('secureConnect', onSecure);
        t.off('error', onError);
        t.off('close', onClose);
      };
      t.once('secureConnect', onSecure);
      t.once('error', onError);
      t.once('close', onClose);
    });
  }

  /** SASL PLAIN; resolves true on <success/>, false on <failure/> (the failure XML is in `lastFailure`). */
  async authPlain(user: string, password: string, authzid = '', timeoutMs = 10_000): Promise<boolean> {
    const since = this.mark();
    await this.send(plainAuth(user, password, authzid));
    const m = await this.waitFor(/<success\b[^>]*(?:\/>|>[\s\S]*?<\/success>)|<failure\b[^>]*(?:\/>|>[\s\S]*?<\/failure>)/, timeoutMs, since);
    if (m[0].startsWith('<success')) return true;
    this.lastFailure = m[0];
    return false;
  }

  /** The last SASL <failure/> element received by authPlain(). */
  lastFailure = '';

  /** The defined condition of a SASL <failure/> (e.g. 'not-authorized'). */
  static saslCondition(failureXml: string): string | undefined {
    const inner = /^<failure\b[^>]*>([\s\S]*)<\/failure>$/.exec(failureXml)?.[1] ?? '';
    const m = /<([A-Za-z][\w-]*)\b/.exec(inner.replace(/<text\b[\s\S]*?<\/text>/g, ''));
    return m?.[1];
  }

  /**
   * Negotiates up to resource binding (STARTTLS when offered, SASL PLAIN, stream restart) and
   * resolves the post-authentication features, e.g. before a XEP-0198 <resume/>.
   */
  async authenticate(user: string, password: string, timeoutMs = 10_000): Promise<string> {
    const f = await this.openStream('localhost', timeoutMs);
    if (f.includes(NS_TLS) && !this.secure) await this.startTls({}, timeoutMs);
    await this.openStream('localhost', timeoutMs);
    if (!(await this.authPlain(user, password, '', timeoutMs))) throw new Error(`authentication failed: ${this.lastFailure}`);
    return this.openStream('localhost', timeoutMs);
  }

  /** Sends a bind request; resolves the whole <iq/> reply. */
  async bind(resource?: string, timeoutMs = 5000): Promise<string> {
    const id = this.nextId('bind');
    const res = resource ? `<resource>${resource}</resource>` : '';
    await this.send(`<iq type='set' id='${id}'><bind xmlns='${NS_BIND}'>${res}</bind></iq>`);
    const m = await this.waitFor(iqReplyPattern(id), timeoutMs, 0);
    return m[0];
  }

  /**
   * The full negotiation over STARTTLS: stream header, <starttls/>, TLS, stream header, SASL PLAIN,
   * stream restart, resource binding (and initial presence if asked). Throws on any failure.
   */
  async login(user: string, password: string, opts: LoginOptions = {}): Promise<string> {
    const domain = opts.domain ?? 'localhost';
    const timeoutMs = opts.timeoutMs ?? 10_000;
    if (!this.secure) {
      const f = await this.openStream(domain, timeoutMs);
      if (!f.includes(NS_TLS)) throw new Error(`no STARTTLS offered: ${f}`);
      await this.startTls({}, timeoutMs);
    }
    const f2 = await this.openStream(domain, timeoutMs);
    if (!/<mechanism>PLAIN<\/mechanism>/.test(f2)) throw new Error(`PLAIN not offered: ${f2}`);
    if (!(await this.authPlain(user, password, opts.authzid ?? '', timeoutMs))) throw new Error(`authentication failed: ${this.lastFailure}`);
    const f3 = await this.openStream(domain, timeoutMs);
    if (!f3.includes(NS_BIND)) throw new Error(`no bind feature: ${f3}`);
    const reply = await this.bind(opts.resource, timeoutMs);
    const jid = /<jid>([^<]+)<\/jid>/.exec(reply)?.[1];
    if (!/type=['"]result['"]/.test(reply) || !jid) throw new Error(`bind failed: ${reply}`);
    this.jid = jid;
    if (opts.presence) await this.send('<presence/>');
    return jid;
  }

  /** XEP-0199 ping to the server; resolves the round trip in ms, rejects on timeout or an error reply. */
  async ping(timeoutMs = 5000, to = 'localhost'): Promise<number> {
    const id = this.nextId('ping');
    const t0 = performance.now();
    await this.send(pingIq(id, to));
    const m = await this.waitFor(iqReplyPattern(id), timeoutMs, 0);
    if (!/^<iq\b[^>]*\btype=['"]result['"]/.test(m[0])) throw new Error(`ping failed: ${m[0]}`);
    return performance.now() - t0;
  }

  /** Stops reading from the socket (the kernel buffers fill and the server's writes back up). */
  pauseReading(): void {
    this.socket.pause();
  }

  resumeReading(): void {
    this.socket.resume();
  }

  /** Closes the stream politely (no wait). */
  end(): void {
    if (this.isClosed || this.socket.destroyed) return;
    try {
      this.socket.end('</stream:stream>');
    } catch {
      /* already gone */
    }
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Matches the complete <iq/> with the given id (result or error), whatever the attribute order. */
/**
 * On a fresh connection: STARTTLS, then SASL OAUTHBEARER with `token` (no authzid); resolves the
 * name of the server's first SASL answer: 'success', 'challenge' or 'failure'.
 */
export async function startTlsOAuthBearer(c: RawClient, token: string, timeoutMs = 10_000): Promise<string> {
  await c.openStream();
  await c.startTls();
  await c.openStream();
  const since = c.mark();
  await c.send(`<auth xmlns='${NS_SASL}' mechanism='OAUTHBEARER'>${oauthBearerPayload(token)}</auth>`);
  return (await c.waitFor(/<(success|challenge|failure)\b/, timeoutMs, since))[1] as string;
}

export function iqReplyPattern(id: string): RegExp {
  const q = escapeRe(id);
  return new RegExp(`<iq\\b[^>]*\\bid=(['"])${q}\\1[^>]*(?:/>|>[\\s\\S]*?</iq>)`);
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Matches one complete, non-empty <name>...</name> element whose content contains `marker`
 * (a self-closing <name/> never starts a match, and a match never spans two elements).
 */
export function elementWith(name: string, marker: string): RegExp {
  const n = escapeRe(name);
  return new RegExp(`<${n}(?:\\s[^>]*)?(?<!/)>(?:(?!</${n}>)[\\s\\S])*?${escapeRe(marker)}[\\s\\S]*?</${n}>`);
}

/** Polls `cond` every 20 ms until it is true; rejects after timeoutMs. */
export async function waitUntil(cond: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

let barriers = 0;

/**
 * The end of a negative test on raw sockets ("X never reaches `recipient`"), instead of a sleep:
 * after the action that must not produce X, `sender` sends a message to `recipient`'s full JID
 * through the server, and this resolves when `recipient` has received it. The server handles each
 * session's stanzas one at a time, in order (routing included), and writes to each connection in
 * order, so whatever `sender`'s earlier stanzas caused on the way to `recipient` is in
 * `recipient.text` by then. The message has no body: it is not archived, copied or stored offline.
 *
 * With no `recipient`: a ping to the server on `sender`'s own session ("the server sent me nothing
 * back"): the pong is written after whatever the server wrote while handling earlier stanzas.
 */
export async function barrier(sender: RawClient, recipient?: RawClient, timeoutMs = 5000): Promise<void> {
  if (!recipient || recipient === sender) {
    await sender.ping(timeoutMs);
    return;
  }
  const token = `BARRIER-${++barriers}-${randomBytes(4).toString('hex').toUpperCase()}`;
  const since = recipient.mark();
  await sender.send(`<message to='${recipient.jid}' id='${token}'><barrier xmlns='urn:parley:test:barrier' token='${token}'/></message>`);
  await recipient.waitFor(new RegExp(`<message\\b[^>]*\\bid=(['"])${token}\\1`), timeoutMs, since);
}

/**
 * Proves the server still serves other sessions: `a` gets a ping answer, and a chat message from `a`
 * reaches `b` (both logged in, `b` with initial presence sent).
 */
export async function assertServing(a: RawClient, b: RawClient, timeoutMs = 5000): Promise<void> {
  await a.ping(timeoutMs);
  const token = `alive-${randomBytes(6).toString('hex')}`;
  const bare = b.jid.split('/')[0] as string;
  const since = b.mark();
  await a.send(`<message to='${bare}' type='chat' id='${token}'><body>${token}</body></message>`);
  await b.waitFor(elementWith('message', `<body>${token}</body>`), timeoutMs, since);
}

/**
 * The server most attack tests share: users alice, bob (both logged in as 'canary', available) and
 * mallory (the attacker); `assertServing(alice, bob)` after each attack shows others still served.
 */
export async function startAttackServer(overrides: Parameters<typeof startTestServer>[0] = {}): Promise<{ srv: TestServer; port: number; alice: RawClient; bob: RawClient }> {
  const srv = await startTestServer(overrides);
  const port = srv.ports.c2s as number;
  for (const u of ['alice', 'bob', 'mallory']) await srv.addUser(u);
  const alice = await RawClient.login(port, 'alice', 'secret-password', { resource: 'canary', presence: true });
  const bob = await RawClient.login(port, 'bob', 'secret-password', { resource: 'canary', presence: true });
  return { srv, port, alice, bob };
}

export async function stopAttackServer(f: { srv?: TestServer; alice?: RawClient; bob?: RawClient }): Promise<void> {
  f.alice?.destroy();
  f.bob?.destroy();
  await f.srv?.close();
}
