// A raw XMPP client over node:net / node:tls for integration tests that need to see the wire:
// stream headers and features, STARTTLS, SASL (PLAIN, and a from-scratch RFC 5802 SCRAM client
// with channel binding: tls-exporter per RFC 9266, tls-server-end-point and tls-unique per RFC 5929), resource
// binding, and clients that deliberately misbehave (ignore pings, vanish without </stream>).
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import net from 'node:net';
import { StringDecoder } from 'node:string_decoder';
import tls from 'node:tls';
import { Element } from 'ltx';
import { SaxesParser } from 'saxes';

export const NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl';
export const NS_TLS = 'urn:ietf:params:xml:ns:xmpp-tls';
export const NS_BIND = 'urn:ietf:params:xml:ns:xmpp-bind';
export const NS_STREAMS = 'urn:ietf:params:xml:ns:xmpp-streams';
export const NS_STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';

export type ChannelBindingType = 'tls-exporter' | 'tls-server-end-point' | 'tls-unique';
export type ScramMechanism = 'SCRAM-SHA-1' | 'SCRAM-SHA-256' | 'SCRAM-SHA-1-PLUS' | 'SCRAM-SHA-256-PLUS';

export interface RawConnectOptions {
  port: number;
  host?: string;
  /** Stream 'to' and TLS SNI; default 'localhost'. */
  domain?: string;
  /** XEP-0368: TLS from the first byte. */
  directTls?: boolean;
  /** Negotiate STARTTLS when offered (default true). */
  starttls?: boolean;
  /** Cap the client's TLS version (e.g. 'TLSv1.2' to make tls-exporter unavailable). */
  maxVersion?: tls.SecureVersion;
  timeoutMs?: number;
}

export interface ScramOptions {
  mechanism: ScramMechanism;
  username: string;
  password: string;
  /** Channel binding type for -PLUS mechanisms. */
  cbType?: ChannelBindingType;
  /** gs2 flag for non-PLUS mechanisms ('n' = client does not support binding, 'y' = thinks the server does not). */
  gs2Flag?: 'n' | 'y';
  /** Replace the channel-binding data (to prove the server checks it). */
  cbDataOverride?: Buffer;
}

export type SaslResult =
  | { ok: true; serverSignatureValid: boolean; additional: string }
  | { ok: false; condition: string; text: string | undefined; element: Element };

function stanzaText(el: Element | undefined): string | undefined {
  return el ? el.getText() : undefined;
}

/** RFC 5802 §5.1 saslname: ',' and '=' are escaped. */
function saslname(s: string): string {
  return s.replace(/=/g, '=3D').replace(/,/g, '=2C');
}

export class RawXmppClient {
  socket: net.Socket;
  tlsSocket: tls.TLSSocket | null = null;
  /** The latest <stream:features/>. */
  features: Element | null = null;
  /** Attributes of the latest server stream header. */
  streamAttrs: Record<string, string> = {};
  /** Every top-level element received, in order. */
  readonly received: Element[] = [];
  /** The server closed the stream (</stream:stream>). */
  streamClosed = false;
  /** The socket is closed. */
  socketClosed = false;
  readonly domain: string;
  jid = '';
  private readonly timeoutMs: number;
  private parser!: SaxesParser;
  private decoder = new StringDecoder('utf8');
  private stack: Element[] = [];
  private readonly taken = new Set<Element>();
  private waiters: { pred: (el: Element) => boolean; resolve: (el: Element) => void }[] = [];
  private headerWaiters: (() => void)[] = [];
  private closeWaiters: (() => void)[] = [];
  private idCounter = 0;
  private readonly onData = (chunk: Buffer) => {
    if (this.parserFailed) return;
    this.parser.write(this.decoder.write(chunk));
  };
  private parserFailed = false;

  private constructor(socket: net.Socket, domain: string, timeoutMs: number) {
    this.socket = socket;
    this.domain = domain;
    this.timeoutMs = timeoutMs;
    this.resetParser();
    this.attach(socket);
  }

  /** Connects, opens the stream and (unless told not to) negotiates STARTTLS. */
  static async connect(opts: RawConnectOptions): Promise<RawXmppClient> {
    const host = opts.host ?? '127.0.0.1';
    const domain = opts.domain ?? 'localhost';
    const timeoutMs = opts.timeoutMs ?? 5000;
    let socket: net.Socket;
    if (opts.directTls) {
      const t = tls.connect({ host, port: opts.port, servername: domain, rejectUnauthorized: false, maxVersion: opts.maxVersion });
      await onceOrError(t, 'secureConnect', timeoutMs);
      socket = t;
    } else {
      socket = net.connect({ host, port: opts.port });
      await onceOrError(socket, 'connect', timeoutMs);
    }
    const c = new RawXmppClient(socket, domain, timeoutMs);
    if (opts.directTls) c.tlsSocket = socket as tls.TLSSocket;
    await c.openStream();
    if (!opts.directTls && opts.starttls !== false && c.features?.getChild('starttls', NS_TLS)) {
      await c.startTls(opts.maxVersion);
    }
    return c;
  }

  private attach(sock: net.Socket): void {
    sock.on('data', this.onData);
    sock.on('error', () => {});
    sock.on('close', () => {
      if (sock !== this.socket) return;
      this.socketClosed = true;
      for (const w of this.closeWaiters.splice(0)) w();
    });
  }

  private resetParser(): void {
    this.stack = [];
    this.decoder = new StringDecoder('utf8');
    const p = new SaxesParser({ xmlns: false, position: false });
    p.on('opentag', (tag) => {
      const attrs = tag.attributes as Record<string, string>;
      if (!this.streamOpen) {
        this.streamOpen = true;
        this.streamAttrs = { ...attrs };
        for (const w of this.headerWaiters.splice(0)) w();
        return;
      }
      const el = new Element(tag.name, { ...attrs });
      const parent = this.stack[this.stack.length - 1];
      if (parent) parent.cnode(el);
      this.stack.push(el);
    });
    p.on('text', (t) => {
      const top = this.stack[this.stack.length - 1];
      if (top) top.t(t);
    });
    p.on('closetag', () => {
      const el = this.stack.pop();
      if (!el) {
        this.streamClosed = true;
        return;
      }
      if (this.stack.length === 0) {
        el.parent = null;
        this.onElement(el);
      }
    });
    p.on('error', () => {
      this.parserFailed = true;
    });
    this.parser = p;
    this.parserFailed = false;
    this.streamOpen = false;
  }

  private streamOpen = false;

  private onElement(el: Element): void {
    if (el.name === 'stream:features') this.features = el;
    this.received.push(el);
    for (let i = 0; i < this.waiters.length; i++) {
      const w = this.waiters[i];
      if (w?.pred(el)) {
        this.waiters.splice(i, 1);
        this.taken.add(el);
        w.resolve(el);
        return;
      }
    }
  }

  /** Resolves the next element (already received and not yet taken, or future) matching `pred`. */
  next(pred: (el: Element) => boolean, timeoutMs = this.timeoutMs): Promise<Element> {
    const already = this.received.find((el) => !this.taken.has(el) && pred(el));
    if (already) {
      this.taken.add(already);
      return Promise.resolve(already);
    }
    return new Promise((resolve, reject) => {
      const w = {
        pred,
        resolve: (el: Element) => {
          clearTimeout(t);
          resolve(el);
        },
      };
      const t = setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i !== -1) this.waiters.splice(i, 1);
        reject(new Error(`raw client: timed out; received:\n${this.received.map(String).join('\n')}`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  /** Resolves when the socket closes (rejects on timeout). */
  waitClosed(timeoutMs = this.timeoutMs): Promise<void> {
    if (this.socketClosed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('raw client: socket still open')), timeoutMs);
      this.closeWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  write(data: string | Element): void {
    if (this.socket.destroyed) return;
    this.socket.write(typeof data === 'string' ? data : data.toString());
  }

  /** Sends a stream header and waits for the server's header and features. */
  async openStream(): Promise<Element> {
    this.features = null;
    const header = new Promise<void>((resolve) => this.headerWaiters.push(resolve));
    this.write(
      `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='${this.domain}' version='1.0'>`,
    );
    await withTimeout(header, this.timeoutMs, 'stream header');
    return this.next((el) => el.name === 'stream:features');
  }

  /** Stream restart after SASL success (RFC 6120 §6.4.6). */
  restart(): Promise<Element> {
    this.resetParser();
    return this.openStream();
  }

  async startTls(maxVersion?: tls.SecureVersion): Promise<void> {
    this.write(`<starttls xmlns='${NS_TLS}'/>`);
    const proceed = await this.next((el) => el.attrs.xmlns === NS_TLS);
    if (proceed.name !== 'proceed') throw new Error(`STARTTLS refused: ${proceed}`);
    const raw = this.socket;
    raw.off('data', this.onData);
    const t = tls.connect({ socket: raw, servername: this.domain, rejectUnauthorized: false, maxVersion });
    await onceOrError(t, 'secureConnect', this.timeoutMs);
    this.socket = t;
    this.tlsSocket = t;
    this.attach(t);
    this.resetParser();
    await this.openStream();
  }

  mechanisms(): string[] {
    return (this.features?.getChild('mechanisms', NS_SASL)?.getChildren('mechanism') ?? []).map((m) => m.getText());
  }

  /** Channel-binding data as the client computes it. */
  channelBinding(type: ChannelBindingType): Buffer {
    const t = this.tlsSocket;
    if (!t) throw new Error('no TLS');
    if (type === 'tls-exporter') return t.exportKeyingMaterial(32, 'EXPORTER-Channel-Binding', Buffer.alloc(0));
    // RFC 5929 §3.1: the first Finished of the handshake, the client's own in a full handshake
    // (what OpenSSL-based clients such as Python's ssl compute, on TLS 1.3 too).
    if (type === 'tls-unique') return (t.isSessionReused() ? t.getPeerFinished() : t.getFinished()) ?? Buffer.alloc(0);
    // RFC 5929 §4.1: hash of the server's certificate with its signature's hash function (SHA-256
    // for the test's ECDSA-with-SHA256 certificate; SHA-256 is also the floor for MD5/SHA-1).
    return createHash('sha256').update(t.getPeerCertificate().raw).digest();
  }

  private async saslOutcome(): Promise<Element> {
    return this.next((el) => el.attrs.xmlns === NS_SASL && (el.name === 'success' || el.name === 'failure' || el.name === 'challenge'));
  }

  private failure(el: Element): SaslResult {
    const cond = el.getChildElements().find((c) => c.name !== 'text');
    return { ok: false, condition: cond?.name ?? '', text: stanzaText(el.getChild('text')), element: el };
  }

  async plain(username: string, password: string, authzid = ''): Promise<SaslResult> {
    const msg = Buffer.from(`${authzid}\u0000${username}\u0000${password}`, 'utf8').toString('base64');
    this.write(`<auth xmlns='${NS_SASL}' mechanism='PLAIN'>${msg}</auth>`);
    const el = await this.saslOutcome();
    if (el.name === 'success') return { ok: true, serverSignatureValid: true, additional: el.getText() };
    if (el.name === 'failure') return this.failure(el);
    throw new Error(`unexpected ${el}`);
  }

  /** RFC 5802 client side; verifies the server signature on success. */
  async scram(o: ScramOptions): Promise<SaslResult> {
    const plus = o.mechanism.endsWith('-PLUS');
    const hash = o.mechanism.startsWith('SCRAM-SHA-256') ? 'sha256' : 'sha1';
    const keyLen = hash === 'sha256' ? 32 : 20;
    const cnonce = randomBytes(18).toString('base64');
    const gs2 = plus ? `p=${o.cbType ?? 'tls-exporter'},,` : `${o.gs2Flag ?? 'n'},,`;
    const firstBare = `n=${saslname(o.username)},r=${cnonce}`;
    this.write(`<auth xmlns='${NS_SASL}' mechanism='${o.mechanism}'>${Buffer.from(gs2 + firstBare).toString('base64')}</auth>`);
    const ch = await this.saslOutcome();
    if (ch.name === 'failure') return this.failure(ch);
    if (ch.name !== 'challenge') throw new Error(`expected challenge, got ${ch}`);
    const serverFirst = Buffer.from(ch.getText(), 'base64').toString('utf8');
    const attrs = new Map(serverFirst.split(',').map((kv) => [kv.slice(0, 1), kv.slice(2)] as const));
    const nonce = attrs.get('r') ?? '';
    if (!nonce.startsWith(cnonce) || nonce.length <= cnonce.length) throw new Error(`bad server nonce in ${serverFirst}`);
    const salt = Buffer.from(attrs.get('s') ?? '', 'base64');
    const iterations = Number(attrs.get('i'));
    const salted = pbkdf2Sync(o.password, salt, iterations, keyLen, hash);
    const clientKey = createHmac(hash, salted).update('Client Key').digest();
    const storedKey = createHash(hash).update(clientKey).digest();
    const cbData = plus ? (o.cbDataOverride ?? this.channelBinding(o.cbType ?? 'tls-exporter')) : Buffer.alloc(0);
    const cbind = Buffer.concat([Buffer.from(gs2, 'utf8'), cbData]).toString('base64');
    const withoutProof = `c=${cbind},r=${nonce}`;
    const authMessage = `${firstBare},${serverFirst},${withoutProof}`;
    const clientSig = createHmac(hash, storedKey).update(authMessage).digest();
    const proof = Buffer.alloc(keyLen);
    for (let i = 0; i < keyLen; i++) proof[i] = (clientKey[i] as number) ^ (clientSig[i] as number);
    const final = `${withoutProof},p=${proof.toString('base64')}`;
    this.write(`<response xmlns='${NS_SASL}'>${Buffer.from(final).toString('base64')}</response>`);
    const out = await this.saslOutcome();
    if (out.name === 'failure') return this.failure(out);
    if (out.name !== 'success') throw new Error(`expected success, got ${out}`);
    const serverFinal = Buffer.from(out.getText(), 'base64').toString('utf8');
    const serverKey = createHmac(hash, salted).update('Server Key').digest();
    const expected = createHmac(hash, serverKey).update(authMessage).digest('base64');
    return { ok: true, serverSignatureValid: serverFinal === `v=${expected}`, additional: serverFinal };
  }

  /** Binds a resource (or lets the server pick one); resolves the full JID. */
  async bind(resource?: string): Promise<string> {
    const id = this.nextId('bind');
    const res = resource ? `<resource>${resource}</resource>` : '';
    this.write(`<iq type='set' id='${id}'><bind xmlns='${NS_BIND}'>${res}</bind></iq>`);
    const reply = await this.next((el) => el.name === 'iq' && el.attrs.id === id);
    if (reply.attrs.type !== 'result') throw new Error(`bind failed: ${reply}`);
    this.jid = reply.getChild('bind', NS_BIND)?.getChildText('jid') ?? '';
    return this.jid;
  }

  /** PLAIN (or the given SCRAM) + stream restart + bind. */
  async login(username: string, password: string, resource?: string, mechanism: 'PLAIN' | ScramMechanism = 'PLAIN'): Promise<string> {
    const r = mechanism === 'PLAIN' ? await this.plain(username, password) : await this.scram({ mechanism, username, password });
    if (!r.ok) throw new Error(`authentication failed: ${r.condition}`);
    await this.restart();
    return this.bind(resource);
  }

  nextId(prefix = 'raw'): string {
    return `${prefix}-${++this.idCounter}-${randomBytes(3).toString('hex')}`;
  }

  /** Sends an iq (an id is added when missing) and resolves its result or error. */
  async iq(el: Element): Promise<Element> {
    el.attrs.id ??= this.nextId();
    const id = el.attrs.id;
    this.write(el);
    return this.next((r) => r.name === 'iq' && r.attrs.id === id && (r.attrs.type === 'result' || r.attrs.type === 'error'));
  }

  /** Closes the stream politely. */
  async close(): Promise<void> {
    if (this.socketClosed) return;
    this.write('</stream:stream>');
    this.socket.end();
    await this.waitClosed(2000).catch(() => this.socket.destroy());
  }

  /** Drops the TCP connection without closing the stream. */
  destroy(): void {
    this.socket.destroy();
  }
}

function onceOrError(emitter: net.Socket, event: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      cleanup();
      reject(new Error(`timeout waiting for ${event}`));
    }, timeoutMs);
    const ok = () => {
      cleanup();
      resolve();
    };
    const bad = (err: Error) => {
      cleanup();
      reject(err);
    };
    const cleanup = () => {
      clearTimeout(t);
      emitter.off(event, ok);
      emitter.off('error', bad);
    };
    emitter.once(event, ok);
    emitter.once('error', bad);
  });
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timeout waiting for ${what}`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

/** The error condition element name of an error stanza (RFC 6120 §8.3). */
export function errorCondition(el: Element): string | undefined {
  const err = el.getChild('error');
  return err?.getChildElements().find((c) => c.attrs.xmlns === NS_STANZAS && c.name !== 'text')?.name;
}
