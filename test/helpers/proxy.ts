// PROXY protocol headers for tests, built by an independent implementation (proxy-protocol-js)
// rather than by Parley's own parser's author: v2 (binary) and v1 (text).
import net from 'node:net';
import {
  Command,
  INETProtocol,
  IPv4Address,
  IPv4ProxyAddress,
  IPv6Address,
  IPv6ProxyAddress,
  Peer,
  TransportProtocol,
  UnspecProxyAddress,
  V1ProxyProtocol,
  V2ProxyProtocol,
} from 'proxy-protocol-js';

function v6bytes(a: string): number[] {
  // Expand "::" and read eight 16-bit groups.
  const [head = '', tail = ''] = a.split('::');
  const h = head ? head.split(':') : [];
  const t = a.includes('::') ? (tail ? tail.split(':') : []) : [];
  const groups = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t].map((g) => parseInt(g, 16));
  return groups.flatMap((g) => [g >> 8, g & 0xff]);
}

/** A v2 PROXY header for TCP from src to dst (IPv4 or IPv6), or LOCAL. */
export function proxyV2(src: string, srcPort: number, dst: string, dstPort: number, opts: { local?: boolean; tlv?: Buffer } = {}): Buffer {
  const command = opts.local ? Command.LOCAL : Command.PROXY;
  const addr = net.isIPv6(src)
    ? new IPv6ProxyAddress(IPv6Address.createFrom(v6bytes(src)), srcPort, IPv6Address.createFrom(v6bytes(dst)), dstPort)
    : new IPv4ProxyAddress(IPv4Address.createFrom(src.split('.').map(Number)), srcPort, IPv4Address.createFrom(dst.split('.').map(Number)), dstPort);
  const built = Buffer.from(new V2ProxyProtocol(command, TransportProtocol.STREAM, addr).build());
  if (!opts.tlv) return built;
  // TLVs count in the header length (the library's length covers the addresses only).
  const out = Buffer.concat([built, opts.tlv]);
  out.writeUInt16BE(out.readUInt16BE(14) + opts.tlv.length, 14);
  return out;
}

/** A v2 LOCAL header with an UNSPEC address block (a load balancer's health check). */
export function proxyV2Local(): Buffer {
  return Buffer.from(new V2ProxyProtocol(Command.LOCAL, TransportProtocol.UNSPEC, new UnspecProxyAddress()).build());
}

export function proxyV1(src: string, srcPort: number, dst: string, dstPort: number): Buffer {
  const proto = net.isIPv6(src) ? INETProtocol.TCP6 : INETProtocol.TCP4;
  return Buffer.from(new V1ProxyProtocol(proto, new Peer(src, srcPort), new Peer(dst, dstPort)).build(), 'latin1');
}
