// The wall-clock side of the limits the tests check by order and outcome only (issue 15 §6):
// flood throttling (test/hardening/flood.test.ts), the negotiation deadline
// (negotiation-timeout.test.ts), the billion-laughs refusal (xml-restricted.test.ts) and BOSH
// wait/pause (test/transports/bosh.test.ts). Prints numbers; asserts nothing.
// Run: node --import tsx bench/limits.ts [rounds]
import { randomInt } from 'node:crypto';
import { RawClient, pingIq, streamHeader } from '../test/helpers/raw.js';
import { startTestServer, type TestServer } from '../test/helpers/server.js';

const ROUNDS = Number(process.argv[2] ?? 3);

function stats(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  const med = s[Math.floor(s.length / 2)] ?? NaN;
  return `median ${med.toFixed(0)} ms (min ${(s[0] ?? NaN).toFixed(0)}, max ${(s[s.length - 1] ?? NaN).toFixed(0)})`;
}

function count(c: RawClient, re: RegExp): number {
  return c.text.match(new RegExp(re.source, 'g'))?.length ?? 0;
}

/** Time until `n` matches of `re` are in c.text, and how many there were after `earlyMs`. */
async function until(c: RawClient, re: RegExp, n: number, earlyMs: number): Promise<{ ms: number; early: number }> {
  const t0 = performance.now();
  let early = -1;
  for (;;) {
    const t = performance.now() - t0;
    const k = count(c, re);
    if (early < 0 && t >= earlyMs) early = k;
    if (k >= n) return { ms: t, early: early < 0 ? k : early };
    if (t > 30_000 || c.isClosed) throw new Error(`only ${k} of ${n} after ${t.toFixed(0)} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function flood(): Promise<void> {
  const RATE = 100;
  const BURST = 20;
  const BYTES = 16_384;
  const srv = await startTestServer({ limits: { stanzasPerSecond: RATE, burstStanzas: BURST, bytesPerSecond: BYTES, burstBytes: BYTES } });
  try {
    const port = srv.ports.c2s as number;
    for (const u of ['alice', 'mallory']) await srv.addUser(u);
    const alice = await RawClient.login(port, 'alice', 'secret-password', { resource: 'canary', presence: true });
    const N = 200;
    const stanzaTimes: number[] = [];
    const earlies: number[] = [];
    const rtts: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const c = await RawClient.login(port, 'mallory', 'secret-password');
      await new Promise((res) => setTimeout(res, 300)); // let the login's bytes drain from the bucket
      const answer = /<iq\b[^>]*\bid=["']f\d+["'][^>]*type=["']result["']|<iq\b[^>]*type=["']result["'][^>]*\bid=["']f\d+["']/;
      let text = '';
      for (let i = 0; i < N; i++) text += pingIq(`f${i}`);
      const done = until(c, answer, N, 150);
      await c.send(text);
      for (let i = 0; i < 5; i++) rtts.push(await alice.ping(5000));
      const { ms, early } = await done;
      stanzaTimes.push(ms);
      earlies.push(early);
      c.destroy();
    }
    console.log(`stanza flood: ${N} pings at ${RATE}/s, burst ${BURST} (ideal ${(((N - BURST) / RATE) * 1000).toFixed(0)} ms): all answered ${stats(stanzaTimes)}; answered in the first 150 ms: ${earlies.join(', ')}`);

    const byteTimes: number[] = [];
    const M = 12;
    for (let r = 0; r < ROUNDS; r++) {
      const c = await RawClient.login(port, 'mallory', 'secret-password');
      await new Promise((res) => setTimeout(res, 1500)); // a full bucket again
      let text = '';
      for (let i = 0; i < M; i++) text += `<message to='mallory@localhost' type='headline'><body>${'x'.repeat(4000)}</body></message>${pingIq(`b${i}`)}`;
      const answer = /<iq\b[^>]*\bid=["']b\d+["'][^>]*type=["']result["']|<iq\b[^>]*type=["']result["'][^>]*\bid=["']b\d+["']/;
      const done = until(c, answer, M, 150);
      await c.send(text);
      for (let i = 0; i < 5; i++) rtts.push(await alice.ping(5000));
      byteTimes.push((await done).ms);
      c.destroy();
      if (r === 0) console.log(`byte flood: ${text.length} bytes at ${BYTES} B/s, burst ${BYTES} (ideal ${(((text.length - BYTES) / BYTES) * 1000).toFixed(0)} ms)`);
    }
    console.log(`byte flood: all read and answered ${stats(byteTimes)}`);
    console.log(`another session's ping during the floods: ${stats(rtts)}`);
    alice.destroy();
  } finally {
    await srv.close();
  }
}

async function negotiation(): Promise<void> {
  const DEADLINE = 1500;
  const srv = await startTestServer({ limits: { negotiationTimeoutMs: DEADLINE } });
  try {
    const port = srv.ports.c2s as number;
    const idle: number[] = [];
    const header: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const t0 = performance.now();
      const a = await RawClient.connect(port);
      const b = await RawClient.connect(port);
      await b.openStream();
      await a.expectStreamErrorAndClose(DEADLINE + 5000);
      idle.push(performance.now() - t0);
      await b.expectStreamErrorAndClose(DEADLINE + 5000);
      header.push(performance.now() - t0);
    }
    console.log(`negotiation deadline ${DEADLINE} ms: idle connection closed after ${stats(idle)}; after a stream header ${stats(header)}`);
  } finally {
    await srv.close();
  }
}

async function billionLaughs(srv: TestServer): Promise<void> {
  let decl = '<!ENTITY lol0 "lol">';
  for (let i = 1; i < 10; i++) decl += `<!ENTITY lol${i} "${`&lol${i - 1};`.repeat(10)}">`;
  const times: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const c = await RawClient.connect(srv.ports.c2s as number);
    const t0 = performance.now();
    await c.send(`<?xml version='1.0'?><!DOCTYPE lolz [${decl}]>${streamHeader('localhost', { xmlDecl: false })}<message>&lol9;</message>`);
    await c.expectStreamErrorAndClose();
    times.push(performance.now() - t0);
  }
  console.log(`billion laughs: restricted-xml and closed after ${stats(times)}`);
}

async function bosh(srv: TestServer): Promise<void> {
  const url = `http://127.0.0.1:${srv.ports.http}/http-bind`;
  const HB = 'http://jabber.org/protocol/httpbind';
  const post = async (body: string) => (await fetch(url, { method: 'POST', body, headers: { 'Content-Type': 'text/xml; charset=utf-8' } })).text();
  const hold: number[] = [];
  const pause: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    let rid = randomInt(1, 2 ** 40);
    const created = await post(`<body rid='${rid}' to='localhost' wait='1' hold='1' ver='1.11' xmlns='${HB}' xmlns:xmpp='urn:xmpp:xbosh'/>`);
    const sid = /sid=['"]([^'"]+)['"]/.exec(created)?.[1] as string;
    let t0 = performance.now();
    await post(`<body rid='${++rid}' sid='${sid}' xmlns='${HB}'/>`);
    hold.push(performance.now() - t0);
    t0 = performance.now();
    await post(`<body rid='${rid + 1}' sid='${sid}' pause='3' xmlns='${HB}'/>`);
    pause.push(performance.now() - t0);
  }
  console.log(`BOSH: an empty request with wait='1' answered after ${stats(hold)}; a pause request answered after ${stats(pause)}`);
}

await flood();
await negotiation();
const srv = await startTestServer({ http: { address: '127.0.0.1', port: 0, tlsPort: 0, bosh: { maxWait: 2, maxInactivity: 2, maxPause: 5, polling: 1 } } });
try {
  await billionLaughs(srv);
  await bosh(srv);
} finally {
  await srv.close();
}
process.exit(0);
