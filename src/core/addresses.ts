// IP address helpers shared by the listeners, the mux link and the multiplexor: loopback checks
// (a mux link off loopback must be encrypted, docs/mux-protocol.md) and address/CIDR lists
// (trusted PROXY protocol senders, metrics scrapers).
import net from 'node:net';

/** `::ffff:10.0.0.1` -> `10.0.0.1`: IPv4 clients of a dual-stack listener look like IPv4. */
export function normalizeAddress(a: string): string {
  return a.startsWith('::ffff:') && net.isIPv4(a.slice(7)) ? a.slice(7) : a;
}

/**
 * True for 127.0.0.0/8, ::1 (and their IPv4-mapped forms) and the name `localhost`. Any other
 * name, and the wildcards `0.0.0.0` / `::` (every interface), are not loopback.
 */
export function isLoopback(hostOrAddress: string): boolean {
  const a = normalizeAddress(hostOrAddress.trim().toLowerCase().replace(/^\[|\]$/g, ''));
  if (a === 'localhost' || a === 'localhost.') return true;
  if (net.isIPv4(a)) return a.startsWith('127.');
  if (net.isIPv6(a)) return LOOPBACK6.check(a, 'ipv6');
  return false;
}

/** `unix:/run/parley/mux.sock` -> `/run/parley/mux.sock`; null for anything else. */
export function unixSocketPath(address: string): string | null {
  return address.startsWith('unix:') && address.length > 5 ? address.slice(5) : null;
}

/** A link that never leaves the machine: loopback or a Unix domain socket (`unix:/path`). */
export function isLocalLink(address: string): boolean {
  return unixSocketPath(address) !== null || isLoopback(address);
}

const LOOPBACK6 = new net.BlockList();
LOOPBACK6.addAddress('::1', 'ipv6');

/** An IPv4/IPv6 address, or one with a /prefix length valid for its family (allow lists). */
export function isAddressOrCidr(v: string): boolean {
  const [addr = '', prefix, extra] = v.split('/');
  const family = net.isIP(addr);
  if (family === 0 || extra !== undefined) return false;
  if (prefix === undefined) return true;
  return /^\d{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128);
}

/** A list of addresses and CIDR ranges (entries checked with isAddressOrCidr beforehand). */
export function compileAddressList(entries: readonly string[]): net.BlockList {
  const list = new net.BlockList();
  for (const e of entries) {
    const [addr = '', prefix] = e.split('/');
    const family = net.isIPv6(addr) ? 'ipv6' : 'ipv4';
    if (prefix === undefined) list.addAddress(addr, family);
    else list.addSubnet(addr, Number(prefix), family);
  }
  return list;
}

export function addressInList(list: net.BlockList, address: string): boolean {
  const a = normalizeAddress(address);
  const family = net.isIP(a);
  if (family === 0) return false;
  return list.check(a, family === 6 ? 'ipv6' : 'ipv4');
}

/**
 * The network an address stands for when counting clients: an IPv4 address (IPv4-mapped included)
 * as is; IPv6 by its /64, since one subscriber usually holds a whole /64 (billions of addresses).
 */
export function networkKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1] as string;
  if (net.isIPv6(address)) {
    // Expand "::" to get the first four groups.
    const [head = '', tail = ''] = address.split('::');
    const h = head ? head.split(':') : [];
    const t = address.includes('::') ? (tail ? tail.split(':') : []) : [];
    const groups = [...h, ...Array(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
    return `${groups.slice(0, 4).map((g) => (parseInt(g, 16) || 0).toString(16)).join(':')}::/64`;
  }
  return address;
}
