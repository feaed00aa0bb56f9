// PROXY protocol (HAProxy, "The PROXY protocol" versions 1 and 2): a TCP load balancer in front of
// Parley prefixes each connection with a header naming the real client address. Used by the
// client listeners of the server (src/transports/tcp.ts) and of the muxes (src/mux/index.ts),
// only for connections from configured trusted addresses (issue 15 §2): anyone else could claim
// any address and dodge the per-address limits.
//
// An own parser rather than a package: proxy-protocol-js (the maintained one) parses a complete
// buffer only, does not check the declared length against the bytes given and reads missing bytes
// as undefined. Here headers may arrive split across TCP segments, every length is checked, and
// the bytes after the header are handed back untouched (they are the client's stream or TLS).
import net from 'node:net';
import { addressInList, compileAddressList, normalizeAddress } from './addresses.js';

/** v2 signature (spec §2.2): 12 bytes no text protocol can start with. */
export const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
/** Spec §2.1: a v1 line is at most 107 bytes with its CRLF. */
const V1_MAX = 107;
/** v2 headers (fixed part, addresses, TLVs) larger than this are refused; HAProxy's own are < 600. */
const V2_MAX = 4096;

export interface ProxyHeader {
  version: 1 | 2;
  /** PROXY: relayed connection; LOCAL: the proxy's own (health check): use the socket's address. */
  command: 'PROXY' | 'LOCAL';
  /** Real client, when the header carries an IP source (TCP over IPv4/IPv6). */
  source?: { address: string; port: number };
  destination?: { address: string; port: number };
}

export class ProxyHeaderError extends Error {
  override name = 'ProxyHeaderError';
}

/** Could `buf` be the beginning of a v1 or v2 header? (Needs at least 1 byte.) */
export function startsLikeProxyHeader(buf: Buffer): boolean {
  const n = Math.min(buf.length, V2_SIGNATURE.length);
  if (buf.subarray(0, n).equals(V2_SIGNATURE.subarray(0, n))) return true;
  const m = Math.min(buf.length, V1_PREFIX.length);
  return buf.subarray(0, m).equals(V1_PREFIX.subarray(0, m));
}

/**
 * Parses a header at the start of `buf`: the header and its length, or null when more bytes are
 * needed. Throws ProxyHeaderError when the bytes are not a valid header.
 */
export function parseProxyHeader(buf: Buffer): { header: ProxyHeader; length: number } | null {
  if (buf.length === 0) return null;
  if (!startsLikeProxyHeader(buf)) throw new ProxyHeaderError('not a PROXY protocol header');
  if (buf[0] === 0x0d) return parseV2(buf);
  return parseV1(buf);
}

function parseV2(buf: Buffer): { header: ProxyHeader; length: number } | null {
  if (buf.length < 16) return null;
  const verCmd = buf[12] as number;
  const famProto = buf[13] as number;
  const len = buf.readUInt16BE(14);
  if (verCmd >> 4 !== 2) throw new ProxyHeaderError(`unsupported version ${verCmd >> 4}`);
  const cmd = verCmd & 0x0f;
  if (cmd > 1) throw new ProxyHeaderError(`unknown command ${cmd}`);
  if (16 + len > V2_MAX) throw new ProxyHeaderError(`header of ${16 + len} bytes is too large`);
  if (buf.length < 16 + len) return null;
  const length = 16 + len;
  // LOCAL (§2.2): the proxy speaks for itself; the address block is ignored whatever it says.
  if (cmd === 0) return { header: { version: 2, command: 'LOCAL' }, length };
  const family = famProto >> 4;
  const proto = famProto & 0x0f;
  if (family > 3) throw new ProxyHeaderError(`unknown address family ${family}`);
  if (proto > 2) throw new ProxyHeaderError(`unknown transport protocol ${proto}`);
  // UNSPEC (or AF_UNIX) carries no IP address: the connection is used with its socket address.
  if (family === 0 || family === 3 || proto === 0) {
    if (family === 3 && len < 216) throw new ProxyHeaderError('address block too short for AF_UNIX');
    return { header: { version: 2, command: 'PROXY' }, length };
  }
  if (proto === 2) throw new ProxyHeaderError('a datagram (UDP) header on a stream connection');
  const body = buf.subarray(16, length);
  // Source address, destination address, source port, destination port (§2.2).
  const [size, text, name] = family === 1 ? [4, ipv4, 'IPv4'] : [16, ipv6, 'IPv6'];
  if (len < 2 * size + 4) throw new ProxyHeaderError(`address block too short for TCP over ${name}`);
  return {
    header: {
      version: 2,
      command: 'PROXY',
      source: { address: text(body.subarray(0, size)), port: body.readUInt16BE(2 * size) },
      destination: { address: text(body.subarray(size, 2 * size)), port: body.readUInt16BE(2 * size + 2) },
    },
    length,
  };
}

function ipv4(b: Buffer): string {
  return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
}

function ipv6(b: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  return canonicalIpv6(groups.join(':'));
}

/**
 * One spelling per IPv6 address, whichever header carried it: the URL parser's serializer (RFC 5952
 * compression, lower case), then IPv4-mapped addresses as plain IPv4 like the listeners report them.
 */
function canonicalIpv6(text: string): string {
  const canonical = new URL(`http://[${text}]/`).hostname.slice(1, -1);
  return normalizeAddress(canonical.replace(/^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/, (_m, hi: string, lo: string) => {
    const h = parseInt(hi, 16);
    const l = parseInt(lo, 16);
    return `::ffff:${h >> 8}.${h & 0xff}.${l >> 8}.${l & 0xff}`;
  }));
}

function parseV1(buf: Buffer): { header: ProxyHeader; length: number } | null {
  const end = buf.indexOf('\r\n', 0, 'latin1');
  if (end < 0) {
    if (buf.length >= V1_MAX) throw new ProxyHeaderError('v1 header without CRLF within 107 bytes');
    return null;
  }
  if (end + 2 > V1_MAX) throw new ProxyHeaderError('v1 header longer than 107 bytes');
  const line = buf.toString('latin1', 0, end);
  const parts = line.split(' ');
  const length = end + 2;
  if (parts[1] === 'UNKNOWN') return { header: { version: 1, command: 'PROXY' }, length };
  if (parts.length !== 6) throw new ProxyHeaderError('malformed v1 header');
  const [, proto, src = '', dst = '', sport = '', dport = ''] = parts;
  const family = proto === 'TCP4' ? 4 : proto === 'TCP6' ? 6 : 0;
  if (family === 0) throw new ProxyHeaderError(`unknown v1 protocol ${proto}`);
  // A zone id (fe80::1%eth0) names an interface of the balancer, not a client: refused.
  if (src.includes('%') || dst.includes('%')) throw new ProxyHeaderError('v1 address with a zone id');
  if (net.isIP(src) !== family || net.isIP(dst) !== family) throw new ProxyHeaderError('v1 address does not match its protocol');
  const addr = (a: string) => (family === 6 ? canonicalIpv6(a) : normalizeAddress(a));
  const port = (p: string) => {
    if (!/^(?:0|[1-9]\d{0,4})$/.test(p) || Number(p) > 65535) throw new ProxyHeaderError(`bad v1 port ${JSON.stringify(p)}`);
    return Number(p);
  };
  return {
    header: { version: 1, command: 'PROXY', source: { address: addr(src), port: port(sport) }, destination: { address: addr(dst), port: port(dport) } },
    length,
  };
}

// ---- on a socket ----------------------------------------------------------------------------------

export interface ProxyProtocolOptions {
  trusted: readonly string[];
  required: boolean;
  timeoutMs: number;
}

/** The client's address and port as the session should see them. */
export interface PeerAddress {
  address: string;
  port: number | undefined;
  /** The header that supplied them, if any. */
  header?: ProxyHeader;
}

/**
 * Connections of trusted proxies waiting for their header, per gate; the oldest is closed for a
 * newcomer. A balancer sends its header with the first segment, so only a flood waits here.
 */
export const MAX_GATE_WAITING = 1024;

export interface ProxyGate {
  /**
   * Whether the socket comes from a trusted proxy. Only those go through `read`; any other
   * connection is handed on at once (so the per-address limits count it like any other), behind
   * an UntrustedHeaderFilter.
   */
  trusts(sock: net.Socket): boolean;
  /**
   * Reads a trusted proxy's header: resolves the real peer address, or rejects (the caller destroys
   * the socket) when a required header is missing, malformed or late, or when the socket is closed
   * while waiting. Bytes after the header are unshifted back into the socket, which is left paused:
   * the caller attaches its reader (or wraps it in TLS) and resumes.
   */
  read(sock: net.Socket): Promise<PeerAddress>;
  /** Sockets waiting for their header now. */
  readonly waiting: number;
  /** Closes every socket waiting for its header (its `read` rejects). */
  destroyAll(): void;
}

export function proxyGate(opts: ProxyProtocolOptions, maxWaiting = MAX_GATE_WAITING): ProxyGate {
  const trusted = compileAddressList(opts.trusted);
  /** Waiting sockets, oldest first, with what ends their wait. */
  const waiting = new Map<net.Socket, (err: Error) => void>();
  const peerOf = (sock: net.Socket): PeerAddress => ({ address: normalizeAddress(sock.remoteAddress ?? 'unknown'), port: sock.remotePort });
  return {
    trusts: (sock) => addressInList(trusted, peerOf(sock).address),
    read(sock) {
      const socketPeer = peerOf(sock);
      if (waiting.size >= maxWaiting) {
        const [oldest, abort] = waiting.entries().next().value as [net.Socket, (err: Error) => void];
        waiting.delete(oldest);
        abort(new ProxyHeaderError(`more than ${maxWaiting} connections waiting for a PROXY protocol header: the oldest is closed`));
      }
      const header = readHeader(sock, opts.timeoutMs, opts.required ? 'required' : 'optional', (abort) => waiting.set(sock, abort));
      const done = () => waiting.delete(sock);
      header.then(done, done);
      return header.then((r) => {
        if (!r) return socketPeer;
        if (r.command === 'LOCAL' || !r.source) return { ...socketPeer, header: r };
        return { address: r.source.address, port: r.source.port, header: r };
      });
    },
    get waiting() {
      return waiting.size;
    },
    destroyAll() {
      for (const [sock, abort] of [...waiting]) {
        waiting.delete(sock);
        abort(new ProxyHeaderError('listener closing'));
      }
    },
  };
}

/**
 * The first bytes of a connection from an untrusted address: passed on unchanged, unless the stream
 * starts with a PROXY protocol header (nobody else may claim an address), which `push` refuses with
 * a ProxyHeaderError. While the first bytes cannot tell yet ("PRO", "\r\n\r\n"), at most 11 bytes
 * are held back; after that the filter is a no-op. No timer: a silent client is left to the
 * stream's own deadline, and the connection already counts against the per-address limits.
 */
export class UntrustedHeaderFilter {
  private held: Buffer | null = Buffer.alloc(0);

  /** The bytes to pass on now (possibly none). Throws ProxyHeaderError for a header. */
  push(chunk: Buffer): Buffer {
    if (this.held === null) return chunk;
    const buf = this.held.length ? Buffer.concat([this.held, chunk]) : chunk;
    if (!startsLikeProxyHeader(buf)) {
      this.held = null;
      return buf;
    }
    // "PROXY " in full, or the v2 signature up to its NUL byte (no XML stream holds one): refused.
    if ((buf[0] !== 0x0d && buf.length >= V1_PREFIX.length) || (buf[0] === 0x0d && buf.length >= 5)) {
      this.held = null;
      throw new ProxyHeaderError('PROXY protocol header from an untrusted address');
    }
    this.held = buf;
    return Buffer.alloc(0);
  }
}

function readHeader(sock: net.Socket, timeoutMs: number, mode: 'required' | 'optional', onAbort: (abort: (err: Error) => void) => void): Promise<ProxyHeader | null> {
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    let settled = false;
    const finish = (err: Error | null, header: ProxyHeader | null, rest: Buffer) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('close', onClose);
      sock.pause();
      if (err) {
        reject(err);
        return;
      }
      if (rest.length) sock.unshift(rest);
      resolve(header);
    };
    const onData = (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      // Does the stream start with a header at all? Decided on the first bytes that can tell.
      if (!startsLikeProxyHeader(buf)) {
        if (mode === 'required') finish(new ProxyHeaderError('a trusted proxy connected without a PROXY protocol header'), null, buf);
        else finish(null, null, buf);
        return;
      }
      let parsed: ReturnType<typeof parseProxyHeader>;
      try {
        parsed = parseProxyHeader(buf);
      } catch (err) {
        finish(err as Error, null, buf);
        return;
      }
      if (parsed) finish(null, parsed.header, buf.subarray(parsed.length));
    };
    const onClose = () => finish(new ProxyHeaderError('connection closed before the PROXY protocol header'), null, buf);
    // timeoutMs: a trusted proxy that must send a header, or has begun one, and has not finished it
    // in time is cut off; with required: false, a trusted connection silent that long goes on
    // without a header (to the stream's own deadline).
    const timer = setTimeout(() => {
      if (mode === 'required' || buf.length) finish(new ProxyHeaderError('PROXY protocol header timeout'), null, buf);
      else finish(null, null, buf);
    }, timeoutMs);
    timer.unref();
    onAbort((err) => {
      finish(err, null, buf);
      sock.destroy();
    });
    sock.on('data', onData);
    sock.once('close', onClose);
    sock.resume();
  });
}

/**
 * How a listener takes a connection under `listen.proxyProtocol` (or without it, `gate` null): a
 * trusted balancer's waits in the gate for its header, then `start(peer)`; anyone else starts at
 * once behind an UntrustedHeaderFilter (so the per-address limits count it); a refused or late
 * header calls `refused` (the socket is destroyed). One path for the server's ports and the muxes'.
 */
export function admitThrough(
  gate: ProxyGate | null,
  sock: net.Socket,
  start: (peer: PeerAddress | undefined, filter: UntrustedHeaderFilter | null) => void,
  refused: (err: Error) => void,
): void {
  if (!gate) return start(undefined, null);
  if (!gate.trusts(sock)) return start(undefined, new UntrustedHeaderFilter());
  gate.read(sock).then(
    (peer) => {
      if (!sock.destroyed) start(peer, null);
    },
    (err: Error) => {
      refused(err);
      sock.destroy();
    },
  );
}
