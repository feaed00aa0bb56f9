// The mux link alone (issue 15 §5): what TLS on the link costs per frame, without the server and
// the clients around it. One process holds both ends of a loopback link, plaintext TCP and then
// TLS (the server's kind of certificate: EC P-256, TLS 1.3), and measures
//   - throughput: DATA frames of --bytes payload (a chat message is ~300) written as fast as the
//     link takes them, with the mux's write coalescing, decoded by the real FrameDecoder;
//   - CPU µs per frame (both ends: encryption + decryption with TLS) from process.cpuUsage();
//   - latency: one frame out, one back (PING/PONG-like), --pings round trips, p50/p99.
// `node --import tsx bench/mux-link.ts [--frames N] [--bytes N] [--pings N]`. The end-to-end cost
// (server, mux, clients) is `bench/c2s.ts --compare-link`.
import net from 'node:net';
import tls from 'node:tls';
import { parseArgs } from 'node:util';
import { generate } from 'selfsigned';
import { writeCoalesced } from '../src/core/cork.js';
import { TLS_BASE_OPTIONS } from '../src/core/tls.js';
import { FrameDecoder, FrameType, encodeFrame } from '../src/xmpp/muxframe.js';

const { values: opt } = parseArgs({
  options: {
    frames: { type: 'string', default: '400000' },
    bytes: { type: 'string', default: '300' },
    pings: { type: 'string', default: '5000' },
  },
});
const FRAMES = Number(opt.frames);
const BYTES = Number(opt.bytes);
const PINGS = Number(opt.pings);

interface Pair {
  a: net.Socket;
  b: net.Socket;
  close(): void;
}

async function plainPair(): Promise<Pair> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((r) => srv.once('connection', r));
  const a = net.connect(port, '127.0.0.1');
  await new Promise<void>((r) => a.once('connect', () => r()));
  const b = await accepted;
  for (const s of [a, b]) s.setNoDelay(true);
  return { a, b, close: () => (a.destroy(), b.destroy(), srv.close()) };
}

async function tlsPair(): Promise<Pair> {
  const pems = await generate([{ name: 'commonName', value: 'localhost' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }] }],
  });
  const srv = tls.createServer({ cert: pems.cert, key: pems.private, ...TLS_BASE_OPTIONS });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  const accepted = new Promise<tls.TLSSocket>((r) => srv.once('secureConnection', r));
  const a = tls.connect({ port, host: '127.0.0.1', servername: 'localhost', ca: pems.cert, ...TLS_BASE_OPTIONS });
  await new Promise<void>((r) => a.once('secureConnect', () => r()));
  const b = await accepted;
  for (const s of [a, b]) s.setNoDelay(true);
  return { a, b, close: () => (a.destroy(), b.destroy(), srv.close()) };
}

async function throughput(p: Pair): Promise<{ perSecond: number; cpuUsPerFrame: number; mbPerSecond: number }> {
  const payload = Buffer.alloc(BYTES, 0x61);
  let received = 0;
  const done = new Promise<void>((resolve) => {
    const dec = new FrameDecoder(() => {
      if (++received === FRAMES) resolve();
    });
    p.b.on('data', (c: Buffer) => dec.push(c));
  });
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let sent = 0;
  const pump = () => {
    // Like the mux: many small writes per event-loop turn, coalesced, paused on back-pressure.
    while (sent < FRAMES) {
      sent++;
      if (!writeCoalesced(p.a, encodeFrame(FrameType.DATA, sent & 0xffff, payload)) && p.a.writableLength > 4 * 1024 * 1024) {
        p.a.once('drain', pump);
        return;
      }
      if (sent % 64 === 0) {
        setImmediate(pump);
        return;
      }
    }
  };
  pump();
  await done;
  const secs = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  p.b.removeAllListeners('data');
  return { perSecond: FRAMES / secs, cpuUsPerFrame: (cpu.user + cpu.system) / FRAMES, mbPerSecond: (FRAMES * (BYTES + 9)) / secs / 1e6 };
}

async function latency(p: Pair): Promise<{ p50: number; p99: number }> {
  const payload = Buffer.alloc(BYTES, 0x62);
  const times: number[] = [];
  // b echoes each frame back to a; a sends the next one when the echo is back.
  const echo = new FrameDecoder((_t, id, pl) => p.b.write(encodeFrame(FrameType.DATA, id, pl)));
  p.b.on('data', (c: Buffer) => echo.push(c));
  let back: (() => void) | null = null;
  const dec = new FrameDecoder(() => back?.());
  p.a.on('data', (c: Buffer) => dec.push(c));
  for (let i = 0; i < PINGS; i++) {
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      back = resolve;
      p.a.write(encodeFrame(FrameType.DATA, 1, payload));
    });
    times.push(performance.now() - t0);
  }
  times.sort((x, y) => x - y);
  return { p50: (times[Math.floor(times.length * 0.5)] as number) * 1000, p99: (times[Math.floor(times.length * 0.99)] as number) * 1000 };
}

async function main() {
  const rows: string[][] = [];
  for (const [name, make] of [
    ['plaintext (loopback)', plainPair],
    ['TLS 1.3 (P-256, AES-GCM)', tlsPair],
  ] as const) {
    const p = await make();
    await throughput(p); // warm-up
    const t = await throughput(p);
    const l = await latency(p);
    p.close();
    rows.push([name, t.perSecond.toFixed(0), t.mbPerSecond.toFixed(1), t.cpuUsPerFrame.toFixed(2), `${l.p50.toFixed(0)} / ${l.p99.toFixed(0)}`]);
    console.error(`${name}: ${t.perSecond.toFixed(0)} frames/s, ${t.cpuUsPerFrame.toFixed(2)} µs CPU/frame, rtt p50 ${l.p50.toFixed(0)} µs`);
  }
  console.log(`mux link alone: ${FRAMES} DATA frames of ${BYTES} bytes, ${PINGS} round trips; load average ${(await import('node:os')).loadavg()[0]?.toFixed(2)}\n`);
  console.log('| link | frames/s | MB/s | CPU µs per frame (both ends) | round trip µs p50 / p99 |');
  console.log('|---|---:|---:|---:|---:|');
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
