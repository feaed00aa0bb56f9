// TCP client listeners: port 5222 with STARTTLS (RFC 6120 §5) and 5223 with direct TLS (XEP-0368).
// Each accepted socket becomes a Transport handed to the server's session code.
import net from 'node:net';
import { TLSSocket } from 'node:tls';
import type { ChannelBindingType } from '../core/transport.js';
import type { Transport, TransportEvents } from '../core/transport.js';
import { writeCoalesced } from '../core/cork.js';
import type { TlsMaterial } from '../core/tls.js';
import { TLS_BASE_OPTIONS, channelBindingData, channelBindingTypesFor } from '../core/tls.js';
import type { Server } from '../core/server.js';
import { normalizeAddress } from '../core/addresses.js';
import { admitThrough, proxyGate, type PeerAddress, type ProxyProtocolOptions, type UntrustedHeaderFilter } from '../core/proxy-protocol.js';

export class TcpTransport implements Transport {
  readonly kind = 'tcp' as const;
  private socket: net.Socket | TLSSocket;
  private events: TransportEvents | null = null;
  private closed = false;
  private tls: TLSSocket | null = null;
  readonly remoteAddress: string;
  readonly localPort: number;

  constructor(
    raw: net.Socket,
    private readonly material: TlsMaterial | null,
    directTls: boolean,
    private readonly handshakeTimeoutMs = 30_000,
    /** The client's address from a PROXY protocol header (the socket was read up to its end and paused). */
    peer?: PeerAddress,
    /** An untrusted peer on a PROXY protocol listener: a stream starting with a header is closed. */
    private headerFilter: UntrustedHeaderFilter | null = null,
  ) {
    this.remoteAddress = peer?.address ?? normalizeAddress(raw.remoteAddress ?? 'unknown');
    this.localPort = raw.localPort ?? 0;
    raw.setNoDelay(true);
    raw.setKeepAlive(true, 60_000);
    this.socket = raw;
    if (directTls) {
      if (!material) throw new Error('direct TLS needs TLS material');
      this.socket = this.wrap(raw, undefined);
      // A PROXY header here reaches the TLS layer, which fails the handshake.
      this.headerFilter = null;
    }
    this.attach(this.socket);
    if (peer) raw.resume();
  }

  private wrap(raw: net.Socket, _servername: string | undefined): TLSSocket {
    const material = this.material as TlsMaterial;
    const tls = new TLSSocket(raw, {
      isServer: true,
      secureContext: material.defaultContext,
      SNICallback: (name, cb) => cb(null, material.contextFor(name)),
      ...TLS_BASE_OPTIONS,
    });
    this.tls = tls;
    const timer = setTimeout(() => tls.destroy(new Error('TLS handshake timeout')), this.handshakeTimeoutMs);
    timer.unref();
    tls.once('secure', () => {
      clearTimeout(timer);
      this.tlsReady = true;
    });
    tls.once('close', () => clearTimeout(timer));
    return tls;
  }

  private attach(sock: net.Socket): void {
    sock.on('data', (chunk: Buffer) => {
      if (this.socket !== sock) return;
      if (this.headerFilter) {
        try {
          chunk = this.headerFilter.push(chunk);
        } catch {
          this.destroy(); // without a word: nobody but a trusted balancer may claim an address
          return;
        }
        if (!chunk.length) return;
        this.headerFilter = null;
      }
      this.events?.onTransportData(chunk);
    });
    sock.on('drain', () => this.events?.onTransportDrain());
    sock.on('error', () => {
      /* reported through close */
    });
    sock.on('close', () => {
      if (this.socket !== sock) return;
      this.closed = true;
      this.events?.onTransportClose('connection closed');
    });
  }

  /** TLS handshake completed. */
  private tlsReady = false;

  get secure(): boolean {
    return this.tlsReady;
  }

  get canStartTls(): boolean {
    return this.material !== null && this.tls === null;
  }

  get bufferedBytes(): number {
    return this.socket.writableLength;
  }

  setHandlers(events: TransportEvents): void {
    this.events = events;
  }

  write(data: string): void {
    if (this.closed || this.socket.destroyed) return;
    writeCoalesced(this.socket, data);
  }

  startTls(_servername: string, proceed: string): Promise<void> {
    if (!this.canStartTls) return Promise.reject(new Error('TLS not available'));
    const raw = this.socket as net.Socket;
    if (proceed) raw.write(proceed);
    return new Promise((resolve, reject) => {
      // Wait for <proceed/> to be flushed before handing the socket to TLS; the old socket's data
      // events are ignored from now on (pre-TLS bytes are discarded).
      const tls = this.wrap(raw, _servername);
      this.socket = tls;
      this.attach(tls);
      tls.once('secure', () => resolve());
      tls.once('error', (err) => reject(err));
      tls.once('close', () => reject(new Error('closed during TLS handshake')));
    });
  }

  channelBindingTypes(): ChannelBindingType[] {
    if (!this.secure || !this.tls) return [];
    return channelBindingTypesFor(this.tls.getProtocol());
  }

  channelBinding(type: ChannelBindingType): Buffer | null {
    if (!this.secure || !this.tls) return null;
    return channelBindingData(this.tls, type);
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.end();
    // A peer that never closes its side must not keep the socket forever.
    setTimeout(() => this.socket.destroy(), 5000).unref();
  }

  destroy(): void {
    this.closed = true;
    this.socket.destroy();
  }
}

export interface ListenOptions {
  port: number;
  address: string;
  directTls: boolean;
  /** PROXY protocol from trusted load balancers (config listen.proxyProtocol). */
  proxyProtocol?: ProxyProtocolOptions;
}

/** Starts a client listener; resolves the bound port. */
export type C2SListener = net.Server & { destroyAll(): void };

export function listenC2S(server: Server, material: TlsMaterial | null, opts: ListenOptions): Promise<C2SListener> {
  const sockets = new Set<net.Socket>();
  const gate = opts.proxyProtocol ? proxyGate(opts.proxyProtocol) : null;
  const srv = net.createServer({ pauseOnConnect: false }, (sock) => {
    sock.on('error', () => {});
    sockets.add(sock);
    sock.once('close', () => sockets.delete(sock));
    admitThrough(
      gate,
      sock,
      (peer, filter) => start(sock, peer, filter),
      (err) => server.log.info({ addr: normalizeAddress(sock.remoteAddress ?? 'unknown'), reason: err.message }, 'connection refused: PROXY protocol'),
    );
  });
  const start = (sock: net.Socket, peer: PeerAddress | undefined, filter: UntrustedHeaderFilter | null) => {
    let transport: TcpTransport;
    try {
      transport = new TcpTransport(sock, material, opts.directTls, undefined, peer, filter);
    } catch (err) {
      server.log.error({ err }, 'cannot set up connection');
      sock.destroy();
      return;
    }
    const session = server.acceptConnection(transport);
    if (!session) {
      transport.destroy();
    }
  };
  srv.maxConnections = 1_000_000;
  (srv as C2SListener).destroyAll = () => {
    gate?.destroyAll();
    for (const s of sockets) s.destroy();
  };
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen({ port: opts.port, host: opts.address }, () => {
      srv.off('error', reject);
      resolve(srv as C2SListener);
    });
  });
}
