// The workloads of issue 4 (W1-W7), each a function of a running target that returns the cells of
// its rows in the comparison table. Sizes follow the issue and scale with --scale; every workload
// stays under two minutes at scale 1 with a 20 s window.
import { type Mechanism, XmppClient } from './client.js';
import { LoadGenerator, type LoginSummary, type TrafficSpec, type TrafficSummary, splitBlocks } from './coordinator.js';
import { percentile } from './hist.js';
import { NCPU, procSample, sleep } from './proc.js';
import type { Target, TargetOptions } from '../targets/types.js';

export interface Sizes {
  w1Users: number;
  w2Logins: number;
  w3Users: number;
  w3Senders: number;
  w3Window: number;
  w4Users: number;
  w4Senders: number;
  w4Rate: number;
  w5Users: number;
  w5Roster: number;
  w5Senders: number;
  w5Window: number;
  w6Rooms: number;
  w6Occupants: number;
  w6SendersPerRoom: number;
  w6Window: number;
  w7Logins: number;
  w7Users: number;
  w7Senders: number;
}

/** Issue 4's sizes times `scale` (roster size, occupants per room and windows do not scale). */
export function defaultSizes(scale: number): Sizes {
  const s = (n: number, min = 2) => Math.max(min, Math.round(n * scale));
  return {
    w1Users: s(5000),
    w2Logins: s(2000),
    w3Users: s(1000),
    w3Senders: s(100),
    w3Window: 16,
    w4Users: s(1000),
    w4Senders: s(100),
    w4Rate: s(2000, 10),
    w5Users: s(1000, 21),
    w5Roster: 20,
    w5Senders: s(100),
    w5Window: 2,
    w6Rooms: s(50, 1),
    w6Occupants: 40,
    w6SendersPerRoom: 2,
    w6Window: 2,
    w7Logins: s(2000),
    w7Users: s(1000),
    w7Senders: s(100),
  };
}

export interface BenchContext {
  sizes: Sizes;
  /** Measured window and warm-up of the traffic workloads, seconds. */
  seconds: number;
  warmup: number;
  workers: number;
  pin: string | null;
  /** Logins in progress at once (W1, W3-W6, the W3 part of W7); the login storms use `stormConcurrency`. */
  concurrency: number;
  stormConcurrency: number;
  drainMs: number;
  domain: string;
  muc: string;
  password: string;
  log: (s: string) => void;
}

export type Cells = Record<string, string>;

export interface WorkloadResult {
  cells: Cells;
  /** Share of the machine other processes used during the measured window(s), 0-1. */
  noise: number;
  raw: Record<string, unknown>;
}

export interface Workload {
  id: string;
  title(ctx: BenchContext): string;
  rows: [string, string][];
  options(ctx: BenchContext): Omit<TargetOptions, 'dir' | 'port' | 'domain'>;
  run(t: Target, ctx: BenchContext): Promise<WorkloadResult>;
}

// ---- formatting ---------------------------------------------------------------------------------------

const nf = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
export const int = (n: number) => (Number.isFinite(n) ? nf.format(Math.round(n)) : '–');
export const f1 = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '–');
export const f2 = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : '–');
/** Milliseconds from µs, with sensible precision. */
export function ms(us: number): string {
  if (!Number.isFinite(us)) return '–';
  const v = us / 1000;
  return v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0);
}
const MiB = 1048576;

// ---- helpers --------------------------------------------------------------------------------------------

/** `n` indices spread evenly over 0..users-1. */
function spread(users: number, n: number): number[] {
  return Array.from({ length: Math.min(n, users) }, (_, j) => Math.floor((j * users) / Math.min(n, users)));
}

async function withGenerator<T>(t: Target, ctx: BenchContext, users: number, align: number, fn: (g: LoadGenerator) => Promise<T>): Promise<T> {
  const g = await LoadGenerator.start({
    host: '127.0.0.1',
    port: t.port,
    domain: t.domain,
    password: ctx.password,
    users,
    workers: ctx.workers,
    align,
    pin: ctx.pin,
    log: ctx.log,
  });
  try {
    return await fn(g);
  } finally {
    await g.close();
  }
}

async function login(g: LoadGenerator, t: Target, o: { mech: Mechanism; tls: boolean; concurrency: number }, need: number, ctx: BenchContext): Promise<LoginSummary> {
  const r = await g.login(o, t.serverPids(), t.muxPids());
  ctx.log(`    ${r.ok} logins (${o.mech}${o.tls ? ', STARTTLS' : ''}) in ${r.seconds.toFixed(1)} s: ${int(r.perSecond)}/s, p99 ${ms(percentile(r.hist, 99))} ms${r.failed ? `; ${r.failed} FAILED: ${r.firstError}` : ''}`);
  if (r.ok < need) throw new Error(`${r.failed} of ${r.ok + r.failed} logins failed: ${r.firstError.slice(0, 300)}`);
  return r;
}

function loginCells(p: string, r: LoginSummary, muxes: number): Cells {
  const per = (cpu: number) => f2((cpu * 1000) / Math.max(1, r.ok));
  return {
    [`${p}.rate`]: `${int(r.perSecond)}${r.failed ? ` (${int(r.failed)} failed)` : ''}`,
    [`${p}.ms`]: `${ms(percentile(r.hist, 50))} / ${ms(percentile(r.hist, 99))}`,
    [`${p}.cpu`]: `${per(r.serverCpu)}${muxes ? ` + ${per(r.muxCpu)}` : ''}`,
    [`${p}.gen`]: per(r.genCpu),
  };
}

function loginRows(p: string, what: string): [string, string][] {
  return [
    [`${p}.rate`, `${what} logins/s`],
    [`${p}.ms`, `${what} login ms p50 / p99`],
    [`${p}.cpu`, `${what} CPU ms per login: server (+ mux)`],
    [`${p}.gen`, `${what} generator CPU ms per login`],
  ];
}

async function traffic(g: LoadGenerator, t: Target, spec: Omit<TrafficSpec, 'warmupMs' | 'measureMs' | 'drainMs'>, ctx: BenchContext): Promise<TrafficSummary> {
  const r = await g.traffic({ ...spec, warmupMs: ctx.warmup * 1000, measureMs: ctx.seconds * 1000, drainMs: ctx.drainMs }, t.serverPids(), t.muxPids());
  ctx.log(
    `    ${spec.kind}: ${int(r.perSecond)}/s delivered, p50/p99 ${ms(percentile(r.hist, 50))}/${ms(percentile(r.hist, 99))} ms, sent ${r.sent} expected ${r.expected} received ${r.received} lost ${r.lost} dup ${r.dup} foreign ${r.foreign} errors ${r.errors} disconnected ${r.disconnected}; server ${f2(r.serverCpu)} s mux ${f2(r.muxCpu)} s gen ${f2(r.genCpu)} s other ${f2(r.otherCpu)} s${r.firstError ? `; first error: ${r.firstError.slice(0, 200)}` : ''}`,
  );
  return r;
}

function trafficRows(p: string, what: string): [string, string][] {
  return [
    [`${p}.rate`, `delivered ${what}/s`],
    [`${p}.lat`, 'latency ms p50 / p95 / p99 / max'],
    [`${p}.lost`, 'lost (expected − received, per stanza id)'],
    [`${p}.cores`, 'server (+ mux) CPU, cores busy'],
    [`${p}.per`, 'CPU µs per delivered stanza: server (+ mux) = total'],
    [`${p}.gen`, 'generator CPU, cores busy'],
    [`${p}.noise`, 'other CPU on the machine (noise), s'],
  ];
}

function trafficCells(p: string, r: TrafficSummary, muxes: number): Cells {
  const us = (cpu: number) => f1((cpu * 1e6) / Math.max(1, r.delivered));
  const extra = [r.dup ? `${int(r.dup)} dup` : '', r.errors ? `${int(r.errors)} errors` : '', r.disconnected ? `${int(r.disconnected)} disconnected` : '', r.foreign ? `${int(r.foreign)} misrouted` : '']
    .filter(Boolean)
    .join(', ');
  const cs = r.cpuSeconds;
  return {
    [`${p}.rate`]: int(r.perSecond),
    [`${p}.lat`]: [50, 95, 99, 100].map((q) => ms(percentile(r.hist, q))).join(' / '),
    [`${p}.lost`]: `${int(r.lost)} of ${int(r.expected)}${extra ? ` (${extra})` : ''}`,
    [`${p}.cores`]: `${f2(r.serverCpu / cs)}${muxes ? ` + ${f2(r.muxCpu / cs)}` : ''}`,
    [`${p}.per`]: muxes ? `${us(r.serverCpu)} + ${us(r.muxCpu)} = ${us(r.serverCpu + r.muxCpu)}` : us(r.serverCpu),
    [`${p}.gen`]: f2(r.genCpu / cs),
    [`${p}.noise`]: f2(r.otherCpu),
  };
}

const noiseOf = (r: TrafficSummary) => r.otherCpu / (NCPU * r.cpuSeconds);

function rssOf(pids: number[]): number[] {
  return pids.map((p) => procSample(p).rss);
}

// ---- the workloads ----------------------------------------------------------------------------------------

const W1: Workload = {
  id: 'W1',
  title: (c) => `W1 idle: ${int(c.sizes.w1Users)} sessions (PLAIN, roster get, presence)`,
  rows: [
    ['w1.sessions', 'sessions logged in'],
    ['w1.rss', 'server RSS before → after login, MiB (each server process)'],
    ['w1.per', 'server KiB per session (each server process)'],
    ['w1.mux', 'mux KiB per session (each mux)'],
  ],
  options: (c) => ({ users: c.sizes.w1Users, tls: false }),
  async run(t, ctx) {
    const n = ctx.sizes.w1Users;
    await sleep(1000);
    const srv0 = rssOf(t.serverPids());
    const mux0 = rssOf(t.muxPids());
    return withGenerator(t, ctx, n, 1, async (g) => {
      const r = await login(g, t, { mech: 'PLAIN', tls: false, concurrency: ctx.concurrency }, n, ctx);
      await sleep(2000);
      const srv1 = rssOf(t.serverPids());
      const mux1 = rssOf(t.muxPids());
      const perMux = r.ok / Math.max(1, mux1.length);
      return {
        cells: {
          'w1.sessions': int(r.ok),
          'w1.rss': srv0.map((b, i) => `${f1(b / MiB)} → ${f1((srv1[i] ?? 0) / MiB)}`).join(' / '),
          'w1.per': srv0.map((b, i) => f1(((srv1[i] ?? 0) - b) / r.ok / 1024)).join(' / '),
          'w1.mux': mux1.length ? mux1.map((a, i) => f1((a - (mux0[i] ?? 0)) / perMux / 1024)).join(' / ') : '–',
        },
        noise: 0,
        raw: { login: r, srv0, srv1, mux0, mux1 },
      };
    });
  },
};

const W2: Workload = {
  id: 'W2',
  title: (c) => `W2 login storm: ${int(c.sizes.w2Logins)} logins, ${c.stormConcurrency} at once`,
  rows: [...loginRows('w2.plain', 'PLAIN'), ...loginRows('w2.scram', 'SCRAM-SHA-1')],
  options: (c) => ({ users: c.sizes.w2Logins, tls: false }),
  async run(t, ctx) {
    const n = ctx.sizes.w2Logins;
    const cells: Cells = {};
    const raw: Record<string, unknown> = {};
    for (const mech of ['PLAIN', 'SCRAM-SHA-1'] as const) {
      const p = mech === 'PLAIN' ? 'w2.plain' : 'w2.scram';
      await withGenerator(t, ctx, n, 1, async (g) => {
        const r = await login(g, t, { mech, tls: false, concurrency: ctx.stormConcurrency }, 0, ctx);
        Object.assign(cells, loginCells(p, r, t.muxPids().length));
        raw[mech] = r;
      });
      await sleep(500);
    }
    return { cells, noise: 0, raw };
  },
};

function chatSpec(users: number, senders: number, window: number): Omit<TrafficSpec, 'warmupMs' | 'measureMs' | 'drainMs'> {
  const s = spread(users, senders);
  return { kind: 'chat', senders: s, expect: s.map(() => 1), mode: 'window', window, rate: 0, countSelf: true };
}

const W3: Workload = {
  id: 'W3',
  title: (c) => `W3 1:1 throughput: ${int(c.sizes.w3Users)} users, ${int(c.sizes.w3Senders)} senders × window ${c.sizes.w3Window}, ${c.seconds} s`,
  rows: trafficRows('w3', 'msgs'),
  options: (c) => ({ users: c.sizes.w3Users, tls: false }),
  async run(t, ctx) {
    const { w3Users: n, w3Senders, w3Window } = ctx.sizes;
    return withGenerator(t, ctx, n, 1, async (g) => {
      await login(g, t, { mech: 'PLAIN', tls: false, concurrency: ctx.concurrency }, n, ctx);
      await sleep(500);
      const r = await traffic(g, t, chatSpec(n, w3Senders, w3Window), ctx);
      return { cells: trafficCells('w3', r, t.muxPids().length), noise: noiseOf(r), raw: { traffic: r } };
    });
  },
};

const W4: Workload = {
  id: 'W4',
  title: (c) => `W4 latency at fixed load: ${int(c.sizes.w4Users)} users, ${int(c.sizes.w4Rate)} msgs/s from ${int(c.sizes.w4Senders)} senders, ${c.seconds} s`,
  rows: trafficRows('w4', 'msgs'),
  options: (c) => ({ users: c.sizes.w4Users, tls: false }),
  async run(t, ctx) {
    const { w4Users: n, w4Senders, w4Rate } = ctx.sizes;
    return withGenerator(t, ctx, n, 1, async (g) => {
      await login(g, t, { mech: 'PLAIN', tls: false, concurrency: ctx.concurrency }, n, ctx);
      await sleep(500);
      const r = await traffic(g, t, { ...chatSpec(n, w4Senders, 0), mode: 'rate', rate: w4Rate }, ctx);
      return { cells: trafficCells('w4', r, t.muxPids().length), noise: noiseOf(r), raw: { traffic: r } };
    });
  },
};

/**
 * Mutual rosters (bare JIDs): inside each worker's block of users, user i has the R/2 users before and after
 * it (wrapping around the block) as contacts, so every user has exactly R contacts and every
 * presence broadcast stays inside one worker.
 */
export function ringRosters(users: number, roster: number, workers: number, domain: string): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const [lo, hi] of splitBlocks(users, workers, 1)) {
    const b = hi - lo;
    const half = Math.min(Math.floor(roster / 2), Math.floor((b - 1) / 2));
    for (let i = lo; i < hi; i++) {
      const c: string[] = [];
      for (let d = 1; d <= half; d++) c.push(`u${lo + ((i - lo + d) % b)}@${domain}`, `u${lo + ((i - lo - d + b) % b)}@${domain}`);
      m.set(`u${i}@${domain}`, c);
    }
  }
  return m;
}

const W5: Workload = {
  id: 'W5',
  title: (c) =>
    `W5 presence fan-out: ${int(c.sizes.w5Users)} users, mutual rosters of ${c.sizes.w5Roster}, ${int(c.sizes.w5Senders)} users changing presence × window ${c.sizes.w5Window}, ${c.seconds} s`,
  rows: trafficRows('w5', 'presence stanzas'),
  options: (c) => ({ users: c.sizes.w5Users, tls: false, rosters: ringRosters(c.sizes.w5Users, c.sizes.w5Roster, c.workers, c.domain) }),
  async run(t, ctx) {
    const { w5Users: n, w5Senders, w5Window, w5Roster } = ctx.sizes;
    const rosters = ringRosters(n, w5Roster, ctx.workers, t.domain);
    return withGenerator(t, ctx, n, 1, async (g) => {
      await login(g, t, { mech: 'PLAIN', tls: false, concurrency: ctx.concurrency }, n, ctx);
      await sleep(1000);
      const senders = spread(n, w5Senders);
      const r = await traffic(
        g,
        t,
        { kind: 'presence', senders, expect: senders.map((s) => rosters.get(`u${s}@${t.domain}`)?.length ?? 0), mode: 'window', window: w5Window, rate: 0, countSelf: false },
        ctx,
      );
      return { cells: trafficCells('w5', r, t.muxPids().length), noise: noiseOf(r), raw: { traffic: r } };
    });
  },
};

/** Asks the target for disco#info of the MUC service as user u0: null if it is a MUC service, else why not. */
async function probeMuc(t: Target, ctx: BenchContext): Promise<string | null> {
  const c = new XmppClient(0, '127.0.0.1', t.port);
  try {
    await c.login({
      host: '127.0.0.1',
      port: t.port,
      domain: t.domain,
      user: 'u0',
      password: ctx.password,
      tls: false,
      mech: 'PLAIN',
      resource: 'probe',
      rosterGet: false,
      presence: false,
      timeoutMs: 10_000,
    });
    const info = await c.discoInfo(ctx.muc);
    if (info.error) return info.error;
    return info.features.includes('http://jabber.org/protocol/muc') ? null : 'no muc feature';
  } finally {
    await c.close(500);
  }
}

const W6: Workload = {
  id: 'W6',
  title: (c) =>
    `W6 MUC fan-out: ${int(c.sizes.w6Rooms)} rooms × ${c.sizes.w6Occupants} occupants, ${c.sizes.w6SendersPerRoom} senders per room × window ${c.sizes.w6Window}, ${c.seconds} s`,
  rows: [['w6.join', 'joins/s (room creation, occupants)'], ...trafficRows('w6', 'groupchat stanzas')],
  options: (c) => ({ users: c.sizes.w6Rooms * c.sizes.w6Occupants, tls: false, muc: c.muc }),
  async run(t, ctx) {
    const { w6Rooms, w6Occupants: occ, w6SendersPerRoom, w6Window } = ctx.sizes;
    const why = await probeMuc(t, ctx);
    if (why !== null) {
      const msg = t.name.startsWith('parley') ? 'not implemented (issue 7)' : `no MUC service at ${ctx.muc} (${why})`;
      ctx.log(`    ${msg}`);
      return { cells: Object.fromEntries(W6.rows.map(([k], i) => [k, i === 0 ? msg : '–'])), noise: 0, raw: { muc: why } };
    }
    const n = w6Rooms * occ;
    const rooms = Array.from({ length: w6Rooms }, (_, r) => ({
      room: `room${r}@${ctx.muc}`,
      members: Array.from({ length: occ }, (_, j) => r * occ + j),
    }));
    return withGenerator(t, ctx, n, occ, async (g) => {
      await login(g, t, { mech: 'PLAIN', tls: false, concurrency: ctx.concurrency }, n, ctx);
      const j = await g.join(rooms, ctx.concurrency);
      ctx.log(`    ${j.joined} joins (${j.created} rooms created) in ${j.seconds.toFixed(1)} s${j.failed ? `; ${j.failed} FAILED: ${j.firstError}` : ''}`);
      if (j.failed) throw new Error(`${j.failed} joins failed: ${j.firstError.slice(0, 300)}`);
      await sleep(500);
      const senders = rooms.flatMap((r) => r.members.slice(0, w6SendersPerRoom));
      const r = await traffic(
        g,
        t,
        {
          kind: 'groupchat',
          senders,
          expect: senders.map(() => occ),
          rooms: senders.map((s) => (rooms[Math.floor(s / occ)] as { room: string }).room),
          mode: 'window',
          window: w6Window,
          rate: 0,
          countSelf: true,
        },
        ctx,
      );
      return {
        cells: { 'w6.join': int(j.joined / j.seconds), ...trafficCells('w6', r, t.muxPids().length) },
        noise: noiseOf(r),
        raw: { join: j, traffic: r },
      };
    });
  },
};

const W7: Workload = {
  id: 'W7',
  title: (c) =>
    `W7 TLS (STARTTLS): W2 with ${int(c.sizes.w7Logins)} logins, then W3 with ${int(c.sizes.w7Users)} users, ${int(c.sizes.w7Senders)} senders × window ${c.sizes.w3Window}`,
  rows: [...loginRows('w7.login', 'TLS + PLAIN'), ...trafficRows('w7', 'msgs over TLS')],
  options: (c) => ({ users: Math.max(c.sizes.w7Logins, c.sizes.w7Users), tls: true }),
  async run(t, ctx) {
    const { w7Logins, w7Users: n, w7Senders, w3Window } = ctx.sizes;
    const cells: Cells = {};
    await withGenerator(t, ctx, w7Logins, 1, async (g) => {
      const r = await login(g, t, { mech: 'PLAIN', tls: true, concurrency: ctx.stormConcurrency }, 0, ctx);
      Object.assign(cells, loginCells('w7.login', r, t.muxPids().length));
    });
    await sleep(500);
    return withGenerator(t, ctx, n, 1, async (g) => {
      await login(g, t, { mech: 'PLAIN', tls: true, concurrency: ctx.concurrency }, n, ctx);
      await sleep(500);
      const r = await traffic(g, t, chatSpec(n, w7Senders, w3Window), ctx);
      return { cells: { ...cells, ...trafficCells('w7', r, t.muxPids().length) }, noise: noiseOf(r), raw: { traffic: r } };
    });
  },
};

export const WORKLOADS: Workload[] = [W1, W2, W3, W4, W5, W6, W7];

/** The no-op sink run: W3's traffic against the echo sink (bench/load/sink.ts). */
export const SINK: Workload = {
  id: 'sink',
  title: () => 'generator against the no-op sink',
  rows: trafficRows('w3', 'msgs'),
  options: W3.options,
  run: W3.run,
};
