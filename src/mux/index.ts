// The multiplexor (docs/mux-protocol.md): holds client TCP connections and their TLS, and forwards
// raw bytes to exactly one server over one authenticated link. It never parses XMPP and never
// authenticates anyone. If the server goes away, its clients are closed (with a stream error when
// the server had opened a stream) and the link is re-established with backoff.
import { X509Certificate, randomBytes } from 'node:crypto';
import net from 'node:net';
import { TLSSocket } from 'node:tls';
import { isLocalLink, normalizeAddress } from '../core/addresses.js';
import type { ResolvedConfig } from '../core/config.js';
import { admitThrough, proxyGate, type PeerAddress, type UntrustedHeaderFilter } from '../core/proxy-protocol.js';
import { writeCoalesced } from '../core/cork.js';
import type { Logger } from '../core/logger.js';
import { channelBindingData, channelBindingTypesFor, loadTlsMaterial, TLS_BASE_OPTIONS, type TlsMaterial } from '../core/tls.js';
import { FrameDecoder, FrameType, authProof, encodeFrame, encodeJson, parseJson, proofMatches } from '../xmpp/muxframe.js';
import { certificateNames, linkTlsFromConfig, openLink, type LinkTlsClient } from './link-tls.js';

export interface MuxOptions {
  config: Readonly<ResolvedConfig>;
  /** The server's link listener. */
  link: { host: string; port: number };
  /**
   * TLS on the link (docs/mux-protocol.md, "Link security"): default from config.mux.server (on
   * unless the server is on loopback); 'off' for the embedded muxes' loopback link.
   */
  linkTls?: LinkTlsClient | 'off';
  secret: Buffer;
  name: string;
  log: Logger;
  /**
   * Client listeners (default: config.listen), or 'ipc': the parent process (`parley start`) owns
   * the listening sockets and hands each accepted connection to this process over IPC.
   */
  listen?: { address: string; c2s: number | null; c2sDirectTls: number | null } | 'ipc';
}

export interface RunningMux {
  ports: { c2s: number | null; c2sDirectTls: number | null };
  readonly linkUp: boolean;
  readonly connections: number;
  /** Resolves when the link is (re-)established. */
  waitLink(): Promise<void>;
  stop(): Promise<void>;
}

/** Bytes queued towards one client before the mux reports its backlog to the server. */
const BACKLOG_STEP = 64 * 1024;
/** Bytes the link may queue towards the server before client reads are paused. */
const LINK_HIGH_WATER = 4 * 1024 * 1024;
const KEEPALIVE_MS = 10_000;
const DEAD_AFTER_MS = 35_000;
const HANDSHAKE_TIMEOUT_MS = 30_000;
const STREAM_SHUTDOWN =
  "<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>";

interface ClientConn {
  id: number;
  raw: net.Socket;
  sock: net.Socket; // raw or its TLSSocket
  serverPaused: boolean;
  /** The server has written to this client (a stream is open). */
  streamOpen: boolean;
  tlsPending: boolean;
  reportedBacklog: number;
  closed: boolean;
}

export async function runMux(opts: MuxOptions): Promise<RunningMux> {
  const { config, log } = opts;
  // The link settings first: a missing mux.server.ca / fingerprint must fail here, with its clear
  // error, before loadTlsMaterial generates this mux's own CA into dataDir/tls/ca.pem (which the
  // default `ca` would then wrongly take for the server's).
  const linkTls = opts.linkTls === 'off' ? null : (opts.linkTls ?? linkTlsFromConfig(config, opts.link.host));
  const material: TlsMaterial = await loadTlsMaterial(config);
  const listen = opts.listen ?? config.listen;
  const maxBacklog = config.limits.outputBufferBytes * 2 + 1024 * 1024;
  if (!linkTls && !isLocalLink(opts.link.host)) {
    if (!config.mux.insecure) {
      throw new Error(`refusing a plaintext link to ${opts.link.host}, which is not a loopback address: it would carry every client's decrypted traffic in the clear (set mux.server.tls: on, or mux.insecure: true)`);
    }
    log.warn({ server: opts.link.host }, 'INSECURE: plaintext link to a non-loopback server (mux.insecure): client traffic, passwords included, crosses the network in the clear');
  }
  // auth: certificate: a server verified by its certificate (CA or pin) needs no AUTH_OK proof
  // (the mux may not even share its secret). Anything less, a plaintext link above all, must prove
  // the secret: otherwise an impostor on the link's address would get every client.
  const linkVerified = !!linkTls && (!!linkTls.ca || !!linkTls.fingerprint);
  const checkServerProof = !(linkVerified && config.mux.auth === 'certificate');
  const name = linkName(opts.name, config.mux.auth, linkTls, log);
  const gate = config.listen.proxyProtocol ? proxyGate(config.listen.proxyProtocol) : null;
  const conns = new Map<number, ClientConn>();
  let nextId = 1;
  let link: net.Socket | null = null;
  let linkReady = false;
  let linkPaused = false;
  let stopping = false;
  let backoff = 250;
  let linkWaiters: (() => void)[] = [];
  let reconnectTimer: NodeJS.Timeout | null = null;
  /** The newest link socket, possibly still connecting or authenticating (stop() closes it too). */
  let connecting: net.Socket | null = null;
  const listeners: net.Server[] = [];

  // ---- the link ------------------------------------------------------------------------------

  function sendLink(frame: Buffer): void {
    if (!link || !linkReady) return;
    const ok = writeCoalesced(link, frame);
    if (!ok && link.writableLength > LINK_HIGH_WATER && !linkPaused) {
      // A slow server link pauses reading from every client until it drains.
      linkPaused = true;
      for (const c of conns.values()) c.sock.pause();
    }
  }

  function connectLink(): void {
    if (stopping) return;
    // Frames flow only once the link is verified: TCP connect on loopback, or the TLS handshake
    // and the server certificate check.
    let ready = false;
    const sock = openLink(
      opts.link.host,
      opts.link.port,
      linkTls,
      config.mux.insecure,
      () => {
        ready = true;
        if (pendingData.length) for (const c of pendingData.splice(0)) onLinkData(c);
      },
      (why) => log.error({ server: `${opts.link.host}:${opts.link.port}` }, `link refused: ${why}`),
    );
    const pendingData: Buffer[] = [];
    connecting = sock;
    sock.setNoDelay(true);
    const nonce = randomBytes(32).toString('base64');
    let lastSeen = Date.now();
    let authed = false;
    const keepalive = setInterval(() => {
      if (Date.now() - lastSeen > DEAD_AFTER_MS) {
        log.warn('server link silent; reconnecting');
        sock.destroy();
        return;
      }
      if (authed) sock.write(encodeFrame(FrameType.PING, 0));
      if (authed) sock.write(encodeJson(FrameType.STATS, 0, stats()));
    }, KEEPALIVE_MS);
    keepalive.unref();
    const decoder = new FrameDecoder((type, id, payload) => {
      if (!authed) {
        if (type === FrameType.HELLO) {
          const hello = parseJson<{ nonce?: string }>(payload);
          const serverNonce = String(hello.nonce ?? '');
          (sock as net.Socket & { serverNonce?: string }).serverNonce = serverNonce;
          sock.write(encodeJson(FrameType.AUTH, 0, { name, nonce, proof: authProof(opts.secret, 'parley-mux-auth', serverNonce, nonce, name).toString('base64') }));
          return;
        }
        if (type === FrameType.AUTH_OK) {
          const serverNonce = (sock as net.Socket & { serverNonce?: string }).serverNonce ?? '';
          const { proof } = parseJson<{ proof?: string }>(payload);
          if (checkServerProof && !proofMatches(authProof(opts.secret, 'parley-server-auth', nonce, serverNonce), proof)) {
            log.error('server failed to prove the shared secret; dropping link');
            sock.destroy();
            return;
          }
          authed = true;
          link = sock;
          linkReady = true;
          backoff = 250;
          log.info({ server: `${opts.link.host}:${opts.link.port}` }, 'link to server up');
          sock.write(encodeJson(FrameType.STATS, 0, stats()));
          const w = linkWaiters;
          linkWaiters = [];
          for (const fn of w) fn();
          return;
        }
        log.error({ type }, 'unexpected frame before authentication');
        sock.destroy();
        return;
      }
      onServerFrame(type, id, payload);
    });
    const onLinkData = (chunk: Buffer) => {
      lastSeen = Date.now();
      try {
        decoder.push(chunk);
      } catch (err) {
        log.error({ err: (err as Error).message }, 'bad frame from server; dropping link');
        sock.destroy();
      }
    };
    sock.on('data', (chunk: Buffer) => {
      if (ready) onLinkData(chunk);
      else pendingData.push(chunk);
    });
    sock.on('drain', () => {
      if (linkPaused && sock === link) {
        linkPaused = false;
        for (const c of conns.values()) if (!c.serverPaused && !c.tlsPending) c.sock.resume();
      }
    });
    let reached = false;
    sock.once('connect', () => {
      reached = true;
    });
    sock.on('error', (err) => {
      if (authed) return;
      // Reached the server but the TLS handshake or its certificate failed: say so loudly.
      if (reached && linkTls) log.error({ server: `${opts.link.host}:${opts.link.port}`, err: err.message }, 'TLS link to the server failed (certificate not trusted? mux.server.ca or .fingerprint must be the server\'s)');
      else log.debug({ err: err.message }, 'cannot reach server');
    });
    sock.on('close', () => {
      clearInterval(keepalive);
      if (sock === link) {
        link = null;
        linkReady = false;
        linkPaused = false;
        log.warn({ clients: conns.size }, 'link to server lost; closing clients');
        for (const c of [...conns.values()]) closeClient(c, true, c.streamOpen);
      }
      scheduleReconnect();
    });
  }

  function scheduleReconnect(): void {
    if (stopping || reconnectTimer) return;
    const delay = backoff;
    backoff = Math.min(backoff * 2, 10_000);
    reconnectTimer = setTimeout(() => {
      reconnectTimer = null;
      connectLink();
    }, delay);
    reconnectTimer.unref();
  }

  function stats() {
    const mem = process.memoryUsage();
    const cpu = process.cpuUsage();
    return { name, pid: process.pid, connections: conns.size, rss: mem.rss, cpu: (cpu.user + cpu.system) / 1e6, ports };
  }

  function onServerFrame(type: number, id: number, payload: Buffer): void {
    switch (type) {
      case FrameType.PING:
        sendLink(encodeFrame(FrameType.PONG, 0));
        return;
      case FrameType.PONG:
        return;
    }
    const c = conns.get(id);
    if (!c) return; // already gone; the CLOSE we sent crosses this frame
    switch (type) {
      case FrameType.DATA:
        c.streamOpen = true;
        writeCoalesced(c.sock, payload);
        checkBacklog(c);
        return;
      case FrameType.CLOSE: {
        const { graceful } = parseJson<{ graceful?: boolean }>(payload);
        conns.delete(c.id);
        c.closed = true;
        if (graceful) {
          c.sock.end();
          setTimeout(() => c.sock.destroy(), 5000).unref();
        } else c.sock.destroy();
        return;
      }
      case FrameType.STARTTLS: {
        const st = parseJson<{ servername?: string; proceed?: string }>(payload);
        startTls(c, st.servername, st.proceed ?? '');
        return;
      }
      case FrameType.PAUSE:
        c.serverPaused = true;
        c.sock.pause();
        return;
      case FrameType.RESUME:
        c.serverPaused = false;
        if (!linkPaused && !c.tlsPending) c.sock.resume();
        return;
    }
  }

  // ---- clients -------------------------------------------------------------------------------

  function allocId(): number {
    for (;;) {
      const id = nextId;
      nextId = nextId >= 0xffffffff ? 1 : nextId + 1;
      if (!conns.has(id)) return id;
    }
  }

  function checkBacklog(c: ClientConn): void {
    const pending = c.sock.writableLength;
    if (pending > maxBacklog) {
      // The server would have cut this client off already; this is the mux's own memory bound.
      log.warn({ conn: c.id }, 'client not reading; dropping it');
      closeClient(c, true, false);
      return;
    }
    if (Math.abs(pending - c.reportedBacklog) >= BACKLOG_STEP || (pending === 0 && c.reportedBacklog !== 0)) {
      c.reportedBacklog = pending;
      sendLink(encodeJson(FrameType.BACKLOG, c.id, { bytes: pending }));
    }
  }

  function closeClient(c: ClientConn, notifyServer: boolean, sayShutdown: boolean): void {
    if (c.closed) return;
    c.closed = true;
    conns.delete(c.id);
    if (notifyServer) sendLink(encodeJson(FrameType.CLOSE, c.id, { reason: 'closed by mux' }));
    if (sayShutdown && !c.tlsPending) {
      c.sock.end(STREAM_SHUTDOWN);
      setTimeout(() => c.sock.destroy(), 2000).unref();
    } else c.sock.destroy();
  }

  function attach(c: ClientConn, sock: net.Socket, headerFilter: UntrustedHeaderFilter | null = null): void {
    let filter = headerFilter;
    sock.on('data', (chunk: Buffer) => {
      if (c.sock !== sock || c.closed || c.tlsPending) return;
      if (filter) {
        try {
          chunk = filter.push(chunk);
        } catch (err) {
          log.info({ addr: normalizeAddress(sock.remoteAddress ?? 'unknown'), reason: (err as Error).message }, 'connection refused: PROXY protocol');
          closeClient(c, true, false);
          return;
        }
        if (!chunk.length) return;
        filter = null;
      }
      sendLink(encodeFrame(FrameType.DATA, c.id, chunk));
    });
    sock.on('drain', () => {
      if (c.sock === sock && !c.closed) checkBacklog(c);
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      if (c.sock !== sock || c.closed) return;
      c.closed = true;
      conns.delete(c.id);
      sendLink(encodeJson(FrameType.CLOSE, c.id, { reason: 'client disconnected' }));
    });
  }

  function wrapTls(raw: net.Socket): TLSSocket {
    const tls = new TLSSocket(raw, {
      isServer: true,
      secureContext: material.defaultContext,
      SNICallback: (name, cb) => cb(null, material.contextFor(name)),
      ...TLS_BASE_OPTIONS,
    });
    const timer = setTimeout(() => tls.destroy(), HANDSHAKE_TIMEOUT_MS);
    timer.unref();
    tls.once('secure', () => clearTimeout(timer));
    tls.once('close', () => clearTimeout(timer));
    return tls;
  }

  function cbData(tls: TLSSocket): { protocol: string | null; cb: Record<string, string> } {
    // The same data, computed the same way, as a direct connection's (core/tls.ts).
    const protocol = tls.getProtocol();
    const cb: Record<string, string> = {};
    for (const type of channelBindingTypesFor(protocol)) {
      const data = channelBindingData(tls, type);
      if (data) cb[type] = data.toString('base64');
    }
    return { protocol, cb };
  }

  function startTls(c: ClientConn, _servername: string | undefined, proceed: string): void {
    if (c.sock !== c.raw) {
      closeClient(c, true, false);
      return;
    }
    // The server's last plaintext bytes (<proceed/>) come inside the STARTTLS frame, so writing
    // them and wrapping the socket happen in one step: the client's ClientHello, sent as soon as
    // it reads them, can only reach the TLS layer. Plaintext the client pipelined after
    // <starttls/> also goes to the TLS layer, where it fails the handshake.
    if (proceed) c.raw.write(proceed);
    c.tlsPending = true;
    const tls = wrapTls(c.raw);
    c.sock = tls;
    attach(c, tls);
    tls.once('secure', () => {
      if (c.closed) return;
      c.tlsPending = false;
      sendLink(encodeJson(FrameType.TLS_OK, c.id, cbData(tls)));
      if (c.serverPaused || linkPaused) tls.pause();
    });
  }

  function accept(raw: net.Socket, directTls: boolean, localPort: number): void {
    raw.on('error', () => {});
    if (!linkReady) {
      // No server behind us: refuse rather than hold a client we cannot serve.
      raw.destroy();
      return;
    }
    // PROXY protocol (listen.proxyProtocol): the real client address goes to the server in OPEN;
    // only trusted balancers wait for their header (core/proxy-protocol.ts admitThrough).
    admitThrough(
      gate,
      raw,
      (peer, filter) => {
        // A header that arrived after stop() began, or after the link went down, opens nothing.
        if (stopping || !linkReady) raw.destroy();
        else start(raw, directTls, localPort, peer, filter);
      },
      (err) => {
        if (!stopping) log.info({ addr: normalizeAddress(raw.remoteAddress ?? 'unknown'), reason: err.message }, 'connection refused: PROXY protocol');
      },
    );
  }

  function start(raw: net.Socket, directTls: boolean, localPort: number, peer: PeerAddress | undefined, filter: UntrustedHeaderFilter | null): void {
    raw.setNoDelay(true);
    raw.setKeepAlive(true, 60_000);
    const remoteAddress = peer?.address ?? normalizeAddress(raw.remoteAddress ?? 'unknown');
    const c: ClientConn = { id: allocId(), raw, sock: raw, serverPaused: false, streamOpen: false, tlsPending: false, reportedBacklog: 0, closed: false };
    conns.set(c.id, c);
    const open = { remoteAddress, remotePort: peer ? peer.port : raw.remotePort, localPort, starttls: true };
    if (!directTls) {
      attach(c, raw, filter);
      sendLink(encodeJson(FrameType.OPEN, c.id, { ...open, tls: false }));
      if (linkPaused) raw.pause();
      else if (peer) raw.resume(); // the PROXY gate left it paused
      return;
    }
    // Direct TLS (XEP-0368): terminate here, open the connection on the server once secure.
    c.tlsPending = true;
    const tls = wrapTls(raw);
    c.sock = tls;
    attach(c, tls);
    tls.once('secure', () => {
      if (c.closed) return;
      c.tlsPending = false;
      const { protocol, cb } = cbData(tls);
      sendLink(encodeJson(FrameType.OPEN, c.id, { ...open, tls: true, protocol, cb }));
      if (linkPaused) tls.pause();
    });
    tls.once('close', () => {
      if (c.tlsPending && !c.closed) {
        c.closed = true;
        conns.delete(c.id);
      }
    });
  }

  async function listenOn(address: string, port: number, directTls: boolean): Promise<number> {
    const srv = net.createServer((raw) => accept(raw, directTls, (srv.address() as net.AddressInfo).port));
    srv.maxConnections = 1_000_000;
    listeners.push(srv);
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen({ port, host: address }, () => {
        srv.off('error', reject);
        resolve();
      });
    });
    return (srv.address() as net.AddressInfo).port;
  }

  const ports: RunningMux['ports'] = { c2s: null, c2sDirectTls: null };
  connectLink();
  const onIpc = (msg: unknown, handle: unknown) => {
    const m = msg as { type?: string; directTls?: boolean; localPort?: number };
    if (m?.type === 'parley:conn' && handle instanceof net.Socket) accept(handle, !!m.directTls, Number(m.localPort) || 0);
  };
  if (listen === 'ipc') {
    process.on('message', onIpc);
  } else {
    if (listen.c2s !== null) ports.c2s = await listenOn(listen.address, listen.c2s, false);
    if (listen.c2sDirectTls !== null) ports.c2sDirectTls = await listenOn(listen.address, listen.c2sDirectTls, true);
  }

  return {
    ports,
    get linkUp() {
      return linkReady;
    },
    get connections() {
      return conns.size;
    },
    waitLink() {
      if (linkReady) return Promise.resolve();
      return new Promise((r) => linkWaiters.push(r));
    },
    async stop() {
      stopping = true;
      if (reconnectTimer) clearTimeout(reconnectTimer);
      process.off('message', onIpc);
      const closed = listeners.map((l) => new Promise<void>((r) => l.close(() => r())));
      // Sockets still waiting for their PROXY header would keep the listeners open (and, resolved
      // later, be OPENed on the server): closed now.
      gate?.destroyAll(); // their waits are refused, which destroys them
      for (const c of [...conns.values()]) closeClient(c, true, c.streamOpen);
      await Promise.all(closed);
      link?.end();
      link?.destroy();
      connecting?.destroy();
    },
  };
}

/**
 * The name this mux announces. With a client certificate (mux.auth: certificate or
 * secret+certificate) the server accepts only a name the certificate carries (its CN or a DNS
 * subjectAltName): the given name if it is one of them, else the certificate's CN (or first DNS name).
 */
function linkName(given: string, auth: ResolvedConfig['mux']['auth'], t: LinkTlsClient | null, log: Logger): string {
  if (auth === 'secret' || !t?.cert) return given;
  let names: string[];
  try {
    names = certificateNames(new X509Certificate(t.cert));
  } catch {
    return given;
  }
  if (names.length === 0 || names.includes(given)) return given;
  const name = names[0] as string;
  log.info({ given, name }, 'mux name taken from the client certificate (the server accepts only a name it carries)');
  return name;
}
