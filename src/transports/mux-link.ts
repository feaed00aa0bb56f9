// Server side of the mux link (docs/mux-protocol.md): authenticates each multiplexor with a
// challenge over a shared secret, then turns its OPEN/DATA/CLOSE frames into Transports for the
// ordinary session code. TLS lives in the mux: STARTTLS is delegated to it and channel-binding
// data comes back with TLS_OK. When a link dies, exactly that mux's sessions end.
import { randomBytes } from 'node:crypto';
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import type { ChannelBindingType } from '../core/transport.js';
import { isLocalLink, isLoopback, unixSocketPath } from '../core/addresses.js';
import { writeCoalesced } from '../core/cork.js';
import { TLS_BASE_OPTIONS, channelBindingTypesFor } from '../core/tls.js';
import type { Logger } from '../core/logger.js';
import type { Server } from '../core/server.js';
import type { Transport, TransportEvents } from '../core/transport.js';
import { FrameDecoder, FrameError, FrameType, MAX_FRAME_PAYLOAD, authProof, encodeFrame, encodeJson, parseJson, proofMatches } from '../xmpp/muxframe.js';

/** Channel-binding data reported by the mux, base64. */
export interface CbData {
  'tls-exporter'?: string;
  'tls-server-end-point'?: string;
  'tls-unique'?: string;
}

export interface OpenInfo {
  remoteAddress: string;
  remotePort?: number;
  localPort: number;
  /** TLS is already on (direct TLS port). */
  tls: boolean;
  /** The mux can upgrade this connection with STARTTLS. */
  starttls: boolean;
  protocol?: string;
  cb?: CbData;
}

export interface MuxStats {
  name: string;
  pid?: number;
  connections: number;
  rss?: number;
  cpu?: number;
  ports?: { c2s: number | null; c2sDirectTls: number | null };
}

/** Issue 16 §5: before authentication a link gets a few seconds, small frames, and company of few others. */
const AUTH_TIMEOUT_MS = 5_000;
/** HELLO/AUTH are a few hundred bytes: a larger frame before AUTH_OK is an attack. */
const PREAUTH_MAX_FRAME = 4096;
/**
 * Link connections not yet authenticated, counted from the raw TCP connection (so a TLS handshake
 * in progress counts too): at most this many at once; the oldest goes when a new one comes.
 */
export const MAX_PENDING_LINKS = 64;
/** Repeated warnings (failed TLS handshakes, evicted pending links): at most one per this period. */
const WARN_EVERY_MS = 5_000;
const KEEPALIVE_MS = 10_000;
const DEAD_AFTER_MS = 35_000;
/** Bytes queued towards a mux that stopped reading before the link is dropped. */
const MAX_LINK_BACKLOG = 64 * 1024 * 1024;
/** Client bytes held for a paused connection (in flight when PAUSE was sent). */
const MAX_HELD_BYTES = 8 * 1024 * 1024;

class MuxTransport implements Transport {
  readonly kind = 'mux' as const;
  private events: TransportEvents | null = null;
  private closed = false;
  private tlsPending: { resolve: () => void; reject: (e: Error) => void } | null = null;
  secure: boolean;
  backlog = 0;
  private cb: CbData;
  private protocol: string | undefined;

  constructor(
    private readonly link: MuxLink,
    readonly id: number,
    private readonly info: OpenInfo,
  ) {
    this.secure = info.tls;
    this.cb = info.cb ?? {};
    this.protocol = info.protocol;
  }

  get remoteAddress(): string {
    return this.info.remoteAddress;
  }

  get reportedBy(): string | undefined {
    return this.link.vouches ? undefined : `mux:${this.link.name}`;
  }

  get localPort(): number {
    return this.info.localPort;
  }

  get canStartTls(): boolean {
    return !this.secure && this.info.starttls && this.tlsPending === null;
  }

  get bufferedBytes(): number {
    return this.backlog;
  }

  setHandlers(events: TransportEvents): void {
    this.events = events;
  }

  write(data: string): void {
    if (this.closed) return;
    this.link.send(encodeFrame(FrameType.DATA, this.id, data));
  }

  startTls(servername: string, proceed: string): Promise<void> {
    if (!this.canStartTls) return Promise.reject(new Error('TLS not available'));
    this.link.send(encodeJson(FrameType.STARTTLS, this.id, { servername, proceed }));
    return new Promise((resolve, reject) => {
      this.tlsPending = { resolve, reject };
    });
  }

  channelBindingTypes(): ChannelBindingType[] {
    if (!this.secure) return [];
    // Same order as a direct connection; a type the mux did not report (an older mux) is left out.
    return channelBindingTypesFor(this.protocol ?? null).filter((t) => !!this.cb[t]);
  }

  channelBinding(type: ChannelBindingType): Buffer | null {
    if (!this.secure) return null;
    const v = this.cb[type];
    return v ? Buffer.from(v, 'base64') : null;
  }

  // Like a paused socket: the mux stops reading from the client, and what was already in flight
  // is held here until resume, so the session sees the same back-pressure as on direct TCP.
  private paused = false;
  private held: Buffer[] = [];
  private heldBytes = 0;

  pause(): void {
    if (this.closed || this.paused) return;
    this.paused = true;
    this.link.send(encodeFrame(FrameType.PAUSE, this.id));
  }

  resume(): void {
    if (this.closed || !this.paused) return;
    this.paused = false;
    const held = this.held;
    this.held = [];
    this.heldBytes = 0;
    for (const chunk of held) {
      if (this.paused || this.closed) {
        this.held.push(chunk);
        this.heldBytes += chunk.length;
        continue;
      }
      this.events?.onTransportData(chunk);
    }
    if (!this.paused && !this.closed) this.link.send(encodeFrame(FrameType.RESUME, this.id));
  }

  close(): void {
    this.end(true, 'closed by server');
  }

  destroy(): void {
    this.end(false, 'destroyed by server');
  }

  private end(graceful: boolean, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.link.send(encodeJson(FrameType.CLOSE, this.id, { reason, graceful }));
    this.link.forget(this.id);
    this.failTls(new Error('closed'));
  }

  // ---- from the link ----

  onData(data: Buffer): void {
    // Bytes between <proceed/> and the end of the handshake are discarded (RFC 6120 §5.4.3.3).
    if (this.closed || this.tlsPending) return;
    if (this.paused) {
      this.held.push(data);
      this.heldBytes += data.length;
      // The mux stops reading on PAUSE; only what was in flight can arrive. More is a broken mux.
      if (this.heldBytes > MAX_HELD_BYTES) this.destroy();
      return;
    }
    this.events?.onTransportData(data);
  }

  onTlsOk(info: { protocol?: string; cb?: CbData }): void {
    if (!this.tlsPending) return;
    this.secure = true;
    this.protocol = info.protocol;
    this.cb = info.cb ?? {};
    const p = this.tlsPending;
    this.tlsPending = null;
    p.resolve();
  }

  onRemoteClose(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.failTls(new Error(reason));
    this.events?.onTransportClose(reason);
  }

  private failTls(err: Error): void {
    const p = this.tlsPending;
    this.tlsPending = null;
    p?.reject(err);
  }
}

export class MuxLink {
  name = '(unauthenticated)';
  authenticated = false;
  /**
   * A mux on this machine (loopback or a Unix socket: the embedded ones, or one the administrator
   * runs here) is trusted like the server's own sockets; the addresses a mux on another host
   * reports count only for that mux's connections (Transport.reportedBy).
   */
  readonly vouches: boolean;
  readonly conns = new Map<number, MuxTransport>();
  stats: MuxStats | null = null;
  readonly connectedAt = Date.now();
  lastSeen = Date.now();
  private readonly nonce = randomBytes(32).toString('base64');
  private readonly decoder: FrameDecoder;
  private closed = false;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly log: Logger;

  constructor(
    private readonly owner: MuxLinkServer,
    readonly socket: net.Socket,
    /** What this link's mux must prove (its listener's setting). */
    private readonly auth: MuxAuthMode = 'secret',
    /** Called once the mux has authenticated (it no longer counts as pending). */
    private readonly onAuthenticated: () => void = () => {},
  ) {
    this.log = owner.log.child({ mux: socket.remoteAddress });
    const local = socket.remoteAddress === undefined || isLoopback(socket.remoteAddress);
    this.vouches = owner.reportedAddresses === 'trusted' || (owner.reportedAddresses === 'auto' && local);
    socket.setNoDelay(true);
    this.decoder = new FrameDecoder((type, conn, payload) => this.onFrame(type, conn, payload), PREAUTH_MAX_FRAME);
    socket.on('data', (chunk: Buffer) => {
      this.lastSeen = Date.now();
      try {
        this.decoder.push(chunk);
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'bad frame from mux; dropping link');
        this.close();
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => this.onClosed());
    this.send(encodeJson(FrameType.HELLO, 0, { nonce: this.nonce, version: 1 }));
    this.timers.push(
      setTimeout(() => {
        if (!this.authenticated) {
          this.log.warn('mux did not authenticate in time');
          this.close();
        }
      }, owner.authTimeoutMs),
    );
    this.timers.push(
      setInterval(() => {
        if (Date.now() - this.lastSeen > DEAD_AFTER_MS) {
          this.log.warn({ name: this.name }, 'mux link silent; dropping it');
          this.close();
          return;
        }
        if (this.authenticated) this.send(encodeFrame(FrameType.PING, 0));
      }, KEEPALIVE_MS),
    );
    for (const t of this.timers) t.unref();
  }

  send(frame: Buffer): void {
    if (this.closed) return;
    writeCoalesced(this.socket, frame);
    if (this.socket.writableLength > MAX_LINK_BACKLOG) {
      this.log.warn({ name: this.name }, 'mux not reading its link; dropping it');
      this.close();
    }
  }

  forget(id: number): void {
    this.conns.delete(id);
  }

  close(): void {
    if (this.closed) return;
    this.socket.destroy();
  }

  private onFrame(type: number, conn: number, payload: Buffer): void {
    if (!this.authenticated) {
      if (type !== FrameType.AUTH) throw new FrameError('expected AUTH');
      const auth = parseJson<{ name?: string; nonce?: string; proof?: string }>(payload);
      const name = typeof auth.name === 'string' ? auth.name.slice(0, 64) : '';
      const muxNonce = typeof auth.nonce === 'string' ? auth.nonce : '';
      const expected = authProof(this.owner.secret, 'parley-mux-auth', this.nonce, muxNonce, name);
      // auth: certificate: the TLS layer has verified the mux's client certificate (linkClientCa,
      // rejectUnauthorized) before any frame; the proof is then not required.
      const mode = this.auth;
      const certOk = (this.socket as TLSSocket).authorized === true;
      const secretOk = proofMatches(expected, auth.proof);
      const ok = mode === 'secret' ? secretOk : mode === 'certificate' ? certOk : secretOk && certOk;
      if (!name || muxNonce.length < 16 || !ok) {
        this.log.warn({ auth: mode }, 'mux link refused: bad credentials');
        this.close();
        return;
      }
      // With a client certificate the name is the certificate's, not a claim (issue: a mux could
      // otherwise pass for a colleague in logs, `parley status` and scoped quotas).
      if (mode !== 'secret') {
        const names = peerCertificateNames(this.socket as TLSSocket);
        if (!names.includes(name)) {
          this.log.warn({ name, certificate: names }, 'mux link refused: its name is not one of its certificate\'s (CN or DNS subjectAltName)');
          this.close();
          return;
        }
      }
      // One link per name: the first stays, a second one is refused.
      if ([...this.owner.links].some((l) => l !== this && l.name === name)) {
        this.log.warn({ name }, 'mux link refused: a mux of that name is already linked');
        this.close();
        return;
      }
      this.authenticated = true;
      this.name = name;
      this.onAuthenticated();
      this.decoder.maxPayload = MAX_FRAME_PAYLOAD;
      this.send(encodeJson(FrameType.AUTH_OK, 0, { proof: authProof(this.owner.secret, 'parley-server-auth', muxNonce, this.nonce).toString('base64') }));
      this.owner.linkUp(this);
      this.log.info({ name, tls: this.socket instanceof tls.TLSSocket ? this.socket.getProtocol() : 'off', vouches: this.vouches }, 'mux link up');
      return;
    }
    switch (type) {
      case FrameType.DATA:
        this.conns.get(conn)?.onData(payload);
        return;
      case FrameType.OPEN: {
        if (this.conns.has(conn)) throw new FrameError(`connection ${conn} already open`);
        const info = parseJson<OpenInfo>(payload);
        if (typeof info.remoteAddress !== 'string' || typeof info.localPort !== 'number') throw new FrameError('bad OPEN');
        // Every address a mux reports is logged with the mux's name (issue 16 §9).
        this.log.debug({ name: this.name, addr: info.remoteAddress, conn }, 'client connection reported');
        const t = new MuxTransport(this, conn, {
          remoteAddress: info.remoteAddress,
          remotePort: info.remotePort,
          localPort: info.localPort,
          tls: !!info.tls,
          starttls: !!info.starttls,
          protocol: info.protocol,
          cb: info.cb,
        });
        this.conns.set(conn, t);
        if (!this.owner.server.acceptConnection(t)) t.destroy();
        return;
      }
      case FrameType.CLOSE: {
        const t = this.conns.get(conn);
        if (!t) return;
        this.conns.delete(conn);
        const { reason } = parseJson<{ reason?: string }>(payload);
        t.onRemoteClose(typeof reason === 'string' ? reason.slice(0, 200) : 'closed by client');
        return;
      }
      case FrameType.TLS_OK:
        this.conns.get(conn)?.onTlsOk(parseJson(payload));
        return;
      case FrameType.BACKLOG: {
        const t = this.conns.get(conn);
        if (t) {
          const { bytes } = parseJson<{ bytes?: number }>(payload);
          t.backlog = typeof bytes === 'number' && bytes >= 0 ? bytes : 0;
        }
        return;
      }
      case FrameType.PING:
        this.send(encodeFrame(FrameType.PONG, 0));
        return;
      case FrameType.PONG:
        return;
      case FrameType.STATS:
        this.stats = { ...parseJson<MuxStats>(payload), name: this.name };
        return;
      default:
        throw new FrameError(`unexpected frame type ${type} from mux`);
    }
  }

  private onClosed(): void {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    const conns = [...this.conns.values()];
    this.conns.clear();
    for (const t of conns) t.onRemoteClose('mux link lost');
    this.owner.linkDown(this);
    if (this.authenticated) this.log.warn({ name: this.name, sessions: conns.length }, 'mux link down');
  }
}

/** The names a link's client certificate carries: its CN, then its DNS subjectAltNames. */
function peerCertificateNames(sock: TLSSocket): string[] {
  if (!(sock instanceof tls.TLSSocket)) return [];
  const cert = sock.getPeerCertificate();
  if (!cert || !cert.subject) return [];
  const names: string[] = [];
  const cn = cert.subject.CN as string | string[] | undefined;
  for (const n of Array.isArray(cn) ? cn : cn ? [cn] : []) names.push(n);
  for (const part of (cert.subjectaltname ?? '').split(', ')) if (part.startsWith('DNS:')) names.push(part.slice(4));
  return names;
}

/** How a link listener protects its links (docs/mux-protocol.md, "Link security"). */
export interface LinkListenOptions {
  /**
   * TLS with the server's default certificate and key (PEM; no SNI: a mux checks one name), and
   * the CA of mux client certificates; or null: plaintext.
   */
  tls: { cert: string | Buffer; key: string | Buffer; clientCa?: string | Buffer } | null;
  /** Allow plaintext on a non-loopback address (mux.insecure). */
  insecure?: boolean;
  /** What muxes on this listener must prove (default: the server's mux.auth). */
  auth?: MuxAuthMode;
}

export type MuxAuthMode = 'secret' | 'certificate' | 'secret+certificate';

/** Longest a TLS handshake on the link listener may take. */
const LINK_HANDSHAKE_MS = 10_000;

export class MuxLinkServer {
  readonly links = new Set<MuxLink>();
  private readonly all = new Set<MuxLink>();
  private readonly listeners: net.Server[] = [];
  readonly log: Logger;
  /** How long a new link has to authenticate (tests shorten it). */
  authTimeoutMs = AUTH_TIMEOUT_MS;
  /** Raw connections not yet authenticated (TLS handshake or waiting for AUTH), oldest first. */
  private readonly pending = new Set<net.Socket>();
  /** Counters behind the rate-limited warnings. */
  tlsFailures = 0;
  evicted = 0;
  private readonly lastWarn = new Map<string, { at: number; count: number }>();

  constructor(
    readonly server: Server,
    readonly secret: Buffer,
    /** mux.auth: what a mux must prove (the secret, a client certificate, or both). */
    readonly auth: MuxAuthMode = 'secret',
    /** mux.reportedAddresses: whose reported client addresses count on every path (see MuxLink.vouches). */
    readonly reportedAddresses: 'auto' | 'trusted' | 'scoped' = 'auto',
  ) {
    this.log = server.log.child({ component: 'mux-link' });
  }

  /**
   * Listens for mux links. Plaintext is refused on a non-loopback address unless `insecure` (the
   * link carries every client's decrypted bytes); a certificate-authenticated link needs TLS with
   * a client CA. May be called more than once (the embedded muxes' loopback listener).
   */
  listen(address: string, port: number, opts: LinkListenOptions = { tls: null }): Promise<net.AddressInfo> {
    const plain = opts.tls === null;
    const path = unixSocketPath(address);
    if (plain && !isLocalLink(address)) {
      if (!opts.insecure) {
        return Promise.reject(new Error(`refusing a plaintext mux link listener on ${address}, which is not a loopback address: it would carry every client's decrypted traffic in the clear (set mux.linkTls: on, or mux.insecure: true)`));
      }
      this.log.warn({ address, port }, 'INSECURE: mux link listener without TLS on a non-loopback address (mux.insecure): client traffic, passwords included, crosses the network in the clear');
    }
    const auth = opts.auth ?? this.auth;
    if (auth !== 'secret' && (plain || !opts.tls?.clientCa)) {
      return Promise.reject(new Error(`mux.auth: ${auth} needs a TLS link listener with mux.linkClientCa`));
    }
    // Issue 16 §5: a bounded number of link connections may be waiting (in the TLS handshake or
    // for AUTH), counted from the raw connection; the oldest makes room for a newcomer.
    const onConnection = (raw: net.Socket) => {
      raw.on('error', () => {});
      if (this.pending.size >= MAX_PENDING_LINKS) {
        const oldest = this.pending.values().next().value as net.Socket;
        this.pending.delete(oldest);
        this.evicted++;
        this.warnLimited('evict', { addr: raw.remoteAddress, waiting: MAX_PENDING_LINKS }, 'too many mux link connections waiting to authenticate: closing the oldest');
        oldest.destroy();
      }
      this.pending.add(raw);
      raw.once('close', () => this.pending.delete(raw));
    };
    const accept = (sock: net.Socket) => {
      // tls.Server wraps the raw socket it reported in 'connection' (a plaintext server hands it on as is).
      const raw = (sock as net.Socket & { _parent?: net.Socket })._parent ?? sock;
      if (!this.pending.has(raw)) {
        // Closed for a newcomer during its handshake: gone already, or going.
        sock.destroy();
        return;
      }
      // Defence in depth: a plaintext link must really arrive on a loopback address.
      if (plain && !opts.insecure && !path && !isLoopback(sock.localAddress ?? '')) {
        this.log.warn({ local: sock.localAddress }, 'plaintext mux link on a non-loopback address refused');
        sock.destroy();
        return;
      }
      const link = new MuxLink(this, sock, auth, () => this.pending.delete(raw));
      // Every link, authenticated or not, so that close() need not wait for the auth timeout.
      this.all.add(link);
      sock.once('close', () => this.all.delete(link));
    };
    let srv: net.Server;
    if (opts.tls) {
      const t = opts.tls;
      const clientCa = t.clientCa;
      srv = tls.createServer(
        {
          // tls.Server builds its default context from cert/key (it has no secureContext option).
          cert: t.cert,
          key: t.key,
          requestCert: !!clientCa,
          rejectUnauthorized: !!clientCa,
          ca: clientCa,
          handshakeTimeout: LINK_HANDSHAKE_MS,
          ...TLS_BASE_OPTIONS,
        },
        accept,
      );
      srv.on('tlsClientError', (err, sock) => {
        this.tlsFailures++;
        this.warnLimited('tls', { addr: sock.remoteAddress, err: err.message }, 'mux link TLS handshake failed');
      });
    } else {
      srv = net.createServer(accept);
    }
    // 'connection' comes first, before 'secureConnection' (TLS) or the connection listener (plain).
    srv.prependListener('connection', onConnection);
    this.listeners.push(srv);
    if (path) {
      // A Unix socket left by a previous run (never any other kind of file) is replaced.
      try {
        if (lstatSync(path).isSocket()) unlinkSync(path);
      } catch {
        /* absent */
      }
    }
    return new Promise((resolve, reject) => {
      srv.once('error', reject);
      const done = () => {
        srv.off('error', reject);
        if (!path) {
          resolve(srv.address() as net.AddressInfo);
          return;
        }
        // Only this user's processes may reach the link (the secret or certificate is still required).
        chmodSync(path, 0o600);
        resolve({ address, port: 0, family: 'unix' });
      };
      if (path) srv.listen({ path }, done);
      else srv.listen({ host: address, port }, done);
    });
  }

  /** Pending raw link connections now (tests). */
  get pendingLinks(): number {
    return this.pending.size;
  }

  /** A warning an attacker could repeat at will: at most one per WARN_EVERY_MS, with how many were folded into it. */
  private warnLimited(key: string, fields: Record<string, unknown>, msg: string): void {
    const now = Date.now();
    const w = this.lastWarn.get(key) ?? { at: 0, count: 0 };
    w.count++;
    if (now - w.at >= WARN_EVERY_MS) {
      this.log.warn({ ...fields, count: w.count }, msg);
      w.at = now;
      w.count = 0;
    }
    this.lastWarn.set(key, w);
  }

  linkUp(link: MuxLink): void {
    this.links.add(link);
  }

  linkDown(link: MuxLink): void {
    this.links.delete(link);
  }

  /** Per-mux view for `parley status`. */
  status(): { name: string; connections: number; since: string; lastSeenMsAgo: number; stats: MuxStats | null }[] {
    const now = Date.now();
    return [...this.links].map((l) => ({
      name: l.name,
      connections: l.conns.size,
      since: new Date(l.connectedAt).toISOString(),
      lastSeenMsAgo: now - l.lastSeen,
      stats: l.stats,
    }));
  }

  async close(): Promise<void> {
    const closed = Promise.all(this.listeners.map((srv) => new Promise<void>((r) => srv.close(() => r()))));
    for (const l of [...this.all]) l.close(); // authenticated links are in `all` too
    await closed;
  }
}
