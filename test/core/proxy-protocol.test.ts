// PROXY protocol parser and listener gate (src/core/proxy-protocol.ts): headers built by another
// implementation (proxy-protocol-js) parse to the same addresses, whole or split byte by byte;
// malformed, oversized and truncated headers are refused; LOCAL keeps the socket's address; the
// gate on real loopback sockets believes only trusted senders and hands back the bytes after it;
// untrusted senders never wait in it (a header from them is refused by UntrustedHeaderFilter), and
// the sockets waiting in it are capped.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { isLoopback, addressInList, compileAddressList } from '../../src/core/addresses.js';
import { parseProxyHeader, proxyGate, ProxyHeaderError, UntrustedHeaderFilter, V2_SIGNATURE, type PeerAddress } from '../../src/core/proxy-protocol.js';
import { proxyV1, proxyV2, proxyV2Local } from '../helpers/proxy.js';

const STREAM = Buffer.from("<?xml version='1.0'?><stream:stream to='localhost'>");

describe('parseProxyHeader', () => {
  it('v2 TCP over IPv4: source and destination, and the length of exactly the header', () => {
    const h = proxyV2('203.0.113.7', 51234, '198.51.100.1', 5222);
    const r = parseProxyHeader(Buffer.concat([h, STREAM]));
    expect(r?.length).toBe(h.length);
    expect(r?.header).toEqual({ version: 2, command: 'PROXY', source: { address: '203.0.113.7', port: 51234 }, destination: { address: '198.51.100.1', port: 5222 } });
  });

  it('v2 TCP over IPv6, in canonical (compressed) form; an IPv4-mapped source reads as IPv4', () => {
    const r = parseProxyHeader(proxyV2('2001:db8:0:0:0:0:0:7', 40000, '2001:db8::1', 5223));
    expect(r?.header.source).toEqual({ address: '2001:db8::7', port: 40000 });
    expect(r?.header.destination?.address).toBe('2001:db8::1');
    const mapped = parseProxyHeader(proxyV2('::ffff:c000:0201', 1, '::1', 2));
    expect(mapped?.header.source?.address).toBe('192.0.2.1');
  });

  it('v2 with TLVs after the addresses: skipped, the header ends after them', () => {
    const tlv = Buffer.from([0x04, 0x00, 0x03, 0x61, 0x62, 0x63]); // PP2_TYPE_NOOP "abc"
    const h = proxyV2('10.1.2.3', 1000, '10.0.0.1', 5222, { tlv });
    const r = parseProxyHeader(Buffer.concat([h, STREAM]));
    expect(r?.length).toBe(h.length);
    expect(r?.header.source?.address).toBe('10.1.2.3');
  });

  it('v2 LOCAL (health check): no address, whatever the address block says', () => {
    expect(parseProxyHeader(proxyV2Local())?.header).toEqual({ version: 2, command: 'LOCAL' });
    expect(parseProxyHeader(proxyV2('10.1.2.3', 1, '10.0.0.1', 2, { local: true }))?.header).toEqual({ version: 2, command: 'LOCAL' });
  });

  it('v1 TCP4, TCP6 and UNKNOWN', () => {
    const h = proxyV1('192.0.2.9', 3333, '192.0.2.1', 5222);
    const r = parseProxyHeader(Buffer.concat([h, STREAM]));
    expect(r?.length).toBe(h.length);
    expect(r?.header.source).toEqual({ address: '192.0.2.9', port: 3333 });
    expect(parseProxyHeader(proxyV1('2001:db8::9', 1, '2001:db8::1', 2))?.header.source?.address).toBe('2001:db8::9');
    expect(parseProxyHeader(Buffer.from('PROXY UNKNOWN\r\n'))?.header).toEqual({ version: 1, command: 'PROXY' });
  });

  it('a header split anywhere needs more bytes (null) until it is complete', () => {
    for (const h of [proxyV2('203.0.113.7', 1, '198.51.100.1', 2), proxyV2('2001:db8::7', 1, '2001:db8::1', 2), proxyV1('192.0.2.9', 1, '192.0.2.1', 2)]) {
      for (let n = 1; n < h.length; n++) expect(parseProxyHeader(h.subarray(0, n)), `${n} of ${h.length}`).toBeNull();
      expect(parseProxyHeader(h)?.length).toBe(h.length);
    }
  });

  it('malformed headers throw ProxyHeaderError', () => {
    const good = proxyV2('203.0.113.7', 1, '198.51.100.1', 2);
    const bad = (mutate: (b: Buffer) => void) => {
      const b = Buffer.from(good);
      mutate(b);
      return () => parseProxyHeader(b);
    };
    expect(() => parseProxyHeader(STREAM)).toThrow(ProxyHeaderError); // not a header at all
    expect(bad((b) => (b[12] = 0x11))).toThrow(/version/); // version 1 in a binary header
    expect(bad((b) => (b[12] = 0x22))).toThrow(/command/);
    expect(bad((b) => (b[13] = 0x51))).toThrow(/family/);
    expect(bad((b) => (b[13] = 0x12))).toThrow(/datagram/); // UDP on a stream listener
    expect(bad((b) => b.writeUInt16BE(4, 14))).toThrow(/too short/); // IPv4 needs 12 bytes
    expect(bad((b) => b.writeUInt16BE(0xfff0, 14))).toThrow(/too large/);
    expect(() => parseProxyHeader(Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n'))).toThrow(ProxyHeaderError);
    expect(() => parseProxyHeader(Buffer.from('PROXY TCP4 1.2.3.4 ::1 1 2\r\n'))).toThrow(/match/);
    expect(() => parseProxyHeader(Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n'))).toThrow(/port/);
    expect(() => parseProxyHeader(Buffer.from(`PROXY TCP4 ${'1'.repeat(120)}`))).toThrow(/107/);
    expect(() => parseProxyHeader(Buffer.concat([V2_SIGNATURE.subarray(0, 5), Buffer.from('x')]))).toThrow(ProxyHeaderError);
  });

  it('v1 TCP6 addresses in the same canonical form as v2; zone ids refused', () => {
    const v1 = parseProxyHeader(Buffer.from('PROXY TCP6 2001:DB8:0:0::7 2001:0db8::0001 40000 5222\r\n'));
    expect(v1?.header.source?.address).toBe('2001:db8::7');
    expect(v1?.header.destination?.address).toBe('2001:db8::1');
    expect(v1?.header.source?.address).toBe(parseProxyHeader(proxyV2('2001:db8::7', 1, '::1', 2))?.header.source?.address);
    expect(parseProxyHeader(Buffer.from('PROXY TCP6 ::ffff:192.0.2.5 ::1 1 2\r\n'))?.header.source?.address).toBe('192.0.2.5');
    expect(() => parseProxyHeader(Buffer.from('PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n'))).toThrow(/zone/);
    expect(() => parseProxyHeader(Buffer.from('PROXY TCP6 ::1 fe80::2%1 1 2\r\n'))).toThrow(/zone/);
  });
});

describe('UntrustedHeaderFilter (connections from untrusted addresses)', () => {
  const run = (chunks: Buffer[]) => {
    const f = new UntrustedHeaderFilter();
    let out = '';
    try {
      for (const c of chunks) out += f.push(c).toString('latin1');
    } catch (err) {
      return { error: (err as Error).message, out };
    }
    return { out };
  };

  it('a v1 or v2 header is refused, whole or in pieces, before any byte is passed on', () => {
    const v2 = Buffer.concat([proxyV2('203.0.113.7', 1, '198.51.100.1', 2), STREAM]);
    const v1 = Buffer.concat([proxyV1('203.0.113.7', 1, '198.51.100.1', 2), STREAM]);
    for (const h of [v2, v1]) {
      expect(run([h]).error).toMatch(/untrusted/);
      const pieces = run([...h.subarray(0, 12)].map((b) => Buffer.from([b])));
      expect(pieces.error).toMatch(/untrusted/);
      expect(pieces.out).toBe('');
    }
  });

  it('a stream passes unchanged, also one starting with line breaks; after the first bytes the filter is a no-op', () => {
    expect(run([STREAM])).toEqual({ out: STREAM.toString() });
    expect(run([Buffer.from('\r\n'), STREAM])).toEqual({ out: `\r\n${STREAM.toString()}` });
    expect(run([Buffer.from('<'), Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n')]).error).toBeUndefined();
  });
});

describe('addresses', () => {
  it('loopback: 127/8, ::1, mapped, localhost; not the wildcards or other addresses', () => {
    for (const a of ['127.0.0.1', '127.9.8.7', '::1', '::ffff:127.0.0.1', 'localhost', '[::1]']) expect(isLoopback(a), a).toBe(true);
    for (const a of ['0.0.0.0', '::', '10.0.0.1', '192.0.2.1', '2001:db8::1', 'mux.example.com', '128.0.0.1']) expect(isLoopback(a), a).toBe(false);
  });

  it('address lists match IPv4 clients of a dual-stack listener', () => {
    const l = compileAddressList(['10.0.0.0/8', '2001:db8::/32']);
    expect(addressInList(l, '10.2.3.4')).toBe(true);
    expect(addressInList(l, '::ffff:10.2.3.4')).toBe(true);
    expect(addressInList(l, '2001:db8::5')).toBe(true);
    expect(addressInList(l, '11.0.0.1')).toBe(false);
  });
});

describe('proxyGate on loopback sockets', () => {
  const cleanup: (() => void)[] = [];
  afterEach(() => {
    for (const f of cleanup.splice(0)) f();
  });

  /**
   * A listener running the gate as tcp.ts does (trusted senders through `read`, others at once
   * behind the filter); resolves each connection's outcome and the bytes read after the header.
   */
  async function gateServer(opts: Parameters<typeof proxyGate>[0], maxWaiting?: number) {
    const gate = proxyGate(opts, maxWaiting);
    const outcomes: Promise<{ peer?: PeerAddress; error?: string; rest: string; waited: boolean }>[] = [];
    const srv = net.createServer((sock) => {
      if (!gate.trusts(sock)) {
        const filter = new UntrustedHeaderFilter();
        outcomes.push(
          new Promise((resolve) => {
            let rest = '';
            sock.on('data', (d: Buffer) => {
              try {
                rest += filter.push(d).toString();
              } catch (err) {
                sock.destroy();
                resolve({ error: (err as Error).message, rest: '', waited: false });
                return;
              }
              if (rest.length >= STREAM.length) resolve({ peer: { address: sock.remoteAddress ?? '', port: sock.remotePort }, rest, waited: false });
            });
          }),
        );
        return;
      }
      outcomes.push(
        gate.read(sock).then(
          (peer) =>
            new Promise((resolve) => {
              let rest = '';
              sock.on('data', (d) => {
                rest += d;
                if (rest.length >= STREAM.length) resolve({ peer, rest, waited: true });
              });
              sock.resume();
            }),
          (err: Error) => {
            sock.destroy();
            return { error: err.message, rest: '', waited: true };
          },
        ),
      );
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    cleanup.push(() => srv.close());
    const port = (srv.address() as net.AddressInfo).port;
    return {
      gate,
      /** The outcome of the oldest connection not yet looked at. */
      async next() {
        while (!outcomes.length) await new Promise((r) => setTimeout(r, 5));
        return outcomes.shift() as (typeof outcomes)[number];
      },
      /** Connects without sending anything. */
      async silent() {
        const c = net.connect(port, '127.0.0.1');
        c.on('error', () => {});
        cleanup.push(() => c.destroy());
        await new Promise<void>((r) => c.once('connect', () => r()));
        return c;
      },
      async send(chunks: Buffer[], gapMs = 0) {
        const c = net.connect(port, '127.0.0.1');
        c.on('error', () => {});
        cleanup.push(() => c.destroy());
        await new Promise<void>((r) => c.once('connect', () => r()));
        c.setNoDelay(true);
        for (const ch of chunks) {
          c.write(ch);
          if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
        }
        while (!outcomes.length) await new Promise((r) => setTimeout(r, 5));
        return outcomes.shift() as (typeof outcomes)[number];
      },
    };
  }

  it('trusted sender: the forwarded address, and the stream after the header intact, even split into single bytes', async () => {
    const s = await gateServer({ trusted: ['127.0.0.0/8'], required: true, timeoutMs: 3000 });
    const h = proxyV2('203.0.113.7', 51234, '198.51.100.1', 5222);
    const whole = await s.send([Buffer.concat([h, STREAM])]);
    expect(whole.peer?.address).toBe('203.0.113.7');
    expect(whole.peer?.port).toBe(51234);
    expect(whole.rest).toBe(STREAM.toString());
    const bytes = [...Buffer.concat([h, STREAM])].map((b) => Buffer.from([b]));
    const split = await s.send(bytes, 1);
    expect(split.peer?.address).toBe('203.0.113.7');
    expect(split.rest).toBe(STREAM.toString());
  });

  it('trusted sender: header in several segments with pauses between them', async () => {
    const s = await gateServer({ trusted: ['127.0.0.1'], required: true, timeoutMs: 3000 });
    const h = proxyV2('2001:db8::7', 40000, '2001:db8::1', 5222);
    const o = await s.send([h.subarray(0, 3), h.subarray(3, 14), h.subarray(14, 20), Buffer.concat([h.subarray(20), STREAM])], 20);
    expect(o.peer?.address).toBe('2001:db8::7');
    expect(o.rest).toBe(STREAM.toString());
  });

  it('LOCAL keeps the socket address; v1 works too', async () => {
    const s = await gateServer({ trusted: ['127.0.0.1'], required: true, timeoutMs: 3000 });
    const local = await s.send([Buffer.concat([proxyV2Local(), STREAM])]);
    expect(local.peer?.address).toBe('127.0.0.1');
    const v1 = await s.send([Buffer.concat([proxyV1('192.0.2.9', 3333, '192.0.2.1', 5222), STREAM])]);
    expect(v1.peer?.address).toBe('192.0.2.9');
  });

  it('trusted sender without the required header, malformed header, or too slow: refused', async () => {
    const s = await gateServer({ trusted: ['127.0.0.1'], required: true, timeoutMs: 300 });
    expect((await s.send([STREAM])).error).toMatch(/without a PROXY protocol header/);
    const bad = Buffer.from(proxyV2('203.0.113.7', 1, '198.51.100.1', 2));
    bad[13] = 0x12;
    expect((await s.send([bad])).error).toMatch(/datagram/);
    const h = proxyV2('203.0.113.7', 1, '198.51.100.1', 2);
    expect((await s.send([h.subarray(0, 10)])).error).toMatch(/timeout/);
    expect((await s.send([])).error).toMatch(/timeout/);
  });

  it('optional header from a trusted sender: with or without', async () => {
    const s = await gateServer({ trusted: ['127.0.0.1'], required: false, timeoutMs: 3000 });
    expect((await s.send([STREAM])).peer?.address).toBe('127.0.0.1');
    expect((await s.send([Buffer.concat([proxyV2('203.0.113.8', 1, '198.51.100.1', 2), STREAM])])).peer?.address).toBe('203.0.113.8');
  });

  it('untrusted sender: a header (v2 or v1) closes the connection; a plain stream passes with the socket address', async () => {
    const s = await gateServer({ trusted: ['10.0.0.0/8'], required: true, timeoutMs: 3000 });
    expect((await s.send([Buffer.concat([proxyV2('203.0.113.7', 1, '198.51.100.1', 2), STREAM])])).error).toMatch(/untrusted/);
    expect((await s.send([proxyV1('203.0.113.7', 1, '198.51.100.1', 2)])).error).toMatch(/untrusted/);
    // The signature arriving in pieces is still recognised.
    const h = proxyV2('203.0.113.7', 1, '198.51.100.1', 2);
    expect((await s.send([h.subarray(0, 2), h.subarray(2, 7), h.subarray(7)], 20)).error).toMatch(/untrusted/);
    const plain = await s.send([STREAM]);
    expect(plain.peer?.address).toBe('127.0.0.1');
    expect(plain.rest).toBe(STREAM.toString());
    expect(plain.waited).toBe(false);
  });

  it('untrusted senders never wait in the gate, however many (review: 1,900 sockets held from one address)', async () => {
    const s = await gateServer({ trusted: ['10.0.0.0/8'], required: true, timeoutMs: 60_000 });
    const socks = await Promise.all(Array.from({ length: 50 }, () => s.silent()));
    await new Promise((r) => setTimeout(r, 50));
    expect(socks.length).toBe(50);
    expect(s.gate.waiting).toBe(0);
  });

  it('at most maxWaiting trusted sockets wait for their header: the oldest is closed for a newcomer; destroyAll closes the rest', async () => {
    const s = await gateServer({ trusted: ['127.0.0.1'], required: true, timeoutMs: 60_000 }, 3);
    const first = await s.silent();
    const firstClosed = new Promise<void>((r) => first.once('close', () => r()));
    for (let i = 0; i < 3; i++) await s.silent();
    expect((await s.next()).error).toMatch(/more than 3 connections waiting for a PROXY protocol header/);
    await firstClosed;
    await waitFor(() => s.gate.waiting === 3);
    s.gate.destroyAll();
    expect(s.gate.waiting).toBe(0);
  });
});

async function waitFor(cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}
