// Load generator coordinator: forks K workers (bench/load/worker.ts), gives each a contiguous block
// of users, runs the phases in lockstep (login, join, traffic with warm-up / measured window /
// drain, logout) and merges the workers' results. During the measured window it samples the CPU of
// the target's server and mux processes and of the whole machine from /proc, at the same instants
// (on the shared clock) at which the workers count deliveries.
import { type ChildProcess, fork } from 'node:child_process';
import { join } from 'node:path';
import { type Mechanism, nowUs } from './client.js';
import { type HistData, merge, newHist } from './hist.js';
import { machineBusy, ownCpu, procSample, setAffinity, sumCpu } from './proc.js';
import type { Command, JoinResult, LoginResult, Reply, TrafficCmd, TrafficResult } from './protocol.js';

export interface GeneratorOptions {
  host: string;
  port: number;
  domain: string;
  password: string;
  /** Users u0 .. u<users-1>. */
  users: number;
  /** Worker processes. */
  workers: number;
  /** Block sizes are multiples of this (rooms stay inside one worker). */
  align?: number;
  /** Pin the workers to these CPUs (taskset list), or null. */
  pin: string | null;
  log?: (s: string) => void;
}

export interface LoginSummary {
  ok: number;
  failed: number;
  firstError: string;
  seconds: number;
  perSecond: number;
  hist: HistData; // µs
  /** CPU seconds during the login phase. */
  serverCpu: number;
  muxCpu: number;
  genCpu: number;
}

export interface TrafficSpec {
  kind: TrafficCmd['kind'];
  /** Global sender indices, and for each the deliveries one stanza should cause. */
  senders: number[];
  expect: number[];
  rooms?: string[];
  mode: 'window' | 'rate';
  window: number;
  /** Total stanzas per second (rate mode), split over workers by their share of senders. */
  rate: number;
  warmupMs: number;
  measureMs: number;
  drainMs: number;
  countSelf: boolean;
}

export interface TrafficSummary {
  sent: number;
  expected: number;
  received: number;
  lost: number;
  dup: number;
  foreign: number;
  delivered: number;
  /** Measured window, seconds (planned, the one deliveries are counted in). */
  seconds: number;
  perSecond: number;
  hist: HistData;
  serverCpu: number;
  muxCpu: number;
  genCpu: number;
  /** CPU of everything else on the machine during the window (noise), seconds. */
  otherCpu: number;
  /** Seconds between the coordinator's two CPU samples (close to `seconds`). */
  cpuSeconds: number;
  serverSyscw: number;
  errors: number;
  disconnected: number;
  firstError: string;
  drainMs: number;
}

interface Worker {
  child: ChildProcess;
  pid: number;
  lo: number;
  hi: number;
  pending: Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>;
  exited: Promise<void>;
}

/** Contiguous blocks [lo, hi) of users, one per worker, sizes multiples of `align` (the last takes the rest). */
export function splitBlocks(users: number, workers: number, align = 1): [number, number][] {
  const units = Math.floor(users / align);
  const k = Math.max(1, Math.min(workers, units));
  const blocks: [number, number][] = [];
  let lo = 0;
  for (let w = 0; w < k; w++) {
    const u = Math.floor(units / k) + (w < units % k ? 1 : 0);
    const hi = w === k - 1 ? users : lo + u * align;
    blocks.push([lo, hi]);
    lo = hi;
  }
  return blocks;
}

const WORKER = join(import.meta.dirname, 'worker.ts');
let resourceSerial = 0;

export class LoadGenerator {
  private seq = 0;
  private constructor(
    readonly opts: GeneratorOptions,
    private readonly workers: Worker[],
  ) {}

  /** Splits users into blocks (multiples of `align`) and starts one worker per non-empty block. */
  static async start(o: GeneratorOptions): Promise<LoadGenerator> {
    const blocks = splitBlocks(o.users, o.workers, o.align ?? 1);
    const workers = blocks.map(([lo, hi]) => {
      const child = fork(WORKER, [], {
        execArgv: ['--import', 'tsx'],
        serialization: 'advanced',
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      const w: Worker = {
        child,
        pid: child.pid as number,
        lo,
        hi,
        pending: new Map(),
        exited: new Promise<void>((r) => child.once('exit', () => r())),
      };
      child.on('message', (m: Reply) => {
        const p = w.pending.get(m.id);
        if (!p) return;
        w.pending.delete(m.id);
        if (m.ok) p.resolve(m.result);
        else p.reject(new Error(`worker ${w.pid}: ${m.error}`));
      });
      child.once('exit', (code, sig) => {
        for (const p of w.pending.values()) p.reject(new Error(`worker ${w.pid} exited (${code ?? sig})`));
        w.pending.clear();
      });
      return w;
    });
    const gen = new LoadGenerator(o, workers);
    try {
      await Promise.all(
        workers.map((w, i) => {
          if (o.pin && !setAffinity(w.pid, o.pin)) o.log?.(`could not pin worker ${w.pid} to CPU ${o.pin}`);
          return gen.call(w, { op: 'init', worker: i, host: o.host, port: o.port, domain: o.domain, password: o.password, lo: w.lo, hi: w.hi });
        }),
      );
    } catch (e) {
      await gen.close();
      throw e;
    }
    return gen;
  }

  get pids(): number[] {
    return this.workers.map((w) => w.pid);
  }

  /** [lo, hi) of each worker. */
  get blocks(): [number, number][] {
    return this.workers.map((w) => [w.lo, w.hi]);
  }

  private call<T>(w: Worker, cmd: Command): Promise<T> {
    const id = ++this.seq;
    return new Promise<T>((resolve, reject) => {
      w.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      w.child.send({ id, cmd }, (err) => {
        if (err) {
          w.pending.delete(id);
          reject(err);
        }
      });
    });
  }

  private all<T>(mk: (w: Worker, i: number) => Command): Promise<T[]> {
    return Promise.all(this.workers.map((w, i) => this.call<T>(w, mk(w, i))));
  }

  /** Logs every user in; `concurrency` logins in progress at once over all workers. */
  async login(
    o: { mech: Mechanism; tls: boolean; concurrency: number; rosterGet?: boolean; presence?: boolean; timeoutMs?: number },
    server: number[],
    mux: number[],
  ): Promise<LoginSummary> {
    const resource = `b${++resourceSerial}`;
    const per = Math.max(1, Math.ceil(o.concurrency / this.workers.length));
    const s0 = sumCpu(server);
    const m0 = sumCpu(mux);
    const g0 = sumCpu(this.pids);
    const rs = await this.all<LoginResult>(() => ({
      op: 'login',
      mech: o.mech,
      tls: o.tls,
      concurrency: per,
      resource,
      rosterGet: o.rosterGet ?? true,
      presence: o.presence ?? true,
      timeoutMs: o.timeoutMs ?? 60_000,
    }));
    const hist = newHist();
    for (const r of rs) merge(hist, r.hist);
    const ok = rs.reduce((a, r) => a + r.ok, 0);
    const seconds = (Math.max(...rs.map((r) => r.t1)) - Math.min(...rs.map((r) => r.t0))) / 1e6;
    return {
      ok,
      failed: rs.reduce((a, r) => a + r.failed, 0),
      firstError: rs.find((r) => r.firstError)?.firstError ?? '',
      seconds,
      perSecond: ok / seconds,
      hist,
      serverCpu: sumCpu(server) - s0,
      muxCpu: sumCpu(mux) - m0,
      genCpu: sumCpu(this.pids) - g0,
    };
  }

  /** Joins rooms; each room's members must belong to one worker. */
  async join(rooms: { room: string; members: number[] }[], concurrency: number): Promise<JoinResult> {
    const per = Math.max(1, Math.ceil(concurrency / this.workers.length));
    const rs = await this.all<JoinResult>((w) => ({
      op: 'join',
      rooms: rooms.filter((r) => (r.members[0] as number) >= w.lo && (r.members[0] as number) < w.hi),
      concurrency: per,
    }));
    return {
      joined: rs.reduce((a, r) => a + r.joined, 0),
      failed: rs.reduce((a, r) => a + r.failed, 0),
      created: rs.reduce((a, r) => a + r.created, 0),
      firstError: rs.find((r) => r.firstError)?.firstError ?? '',
      seconds: Math.max(...rs.map((r) => r.seconds)),
    };
  }

  /**
   * Runs traffic: all workers start at the same instant, warm up, then deliveries are counted in
   * the measured window while the coordinator samples CPU at its edges; then workers drain.
   */
  async traffic(spec: TrafficSpec, server: number[], mux: number[]): Promise<TrafficSummary> {
    const startAt = nowUs() + 300_000;
    const measureFrom = startAt + spec.warmupMs * 1000;
    const measureTo = measureFrom + spec.measureMs * 1000;
    const totalSenders = spec.senders.length;
    const sample = () => ({
      server: server.map(procSample),
      mux: sumCpu(mux),
      machine: machineBusy(),
      coord: ownCpu(),
      at: performance.now(),
    });
    type Sample = ReturnType<typeof sample>;
    // CPU samples at the window's edges; a worker may answer before the second timer fired (timers
    // run late, the drain may be instant), so the results wait for both samples.
    const timers: NodeJS.Timeout[] = [];
    const at = (us: number) =>
      new Promise<Sample>((res) => {
        timers.push(setTimeout(() => res(sample()), Math.max(0, (us - nowUs()) / 1000)));
      });
    const pa = at(measureFrom);
    const pb = at(measureTo);
    let rs: TrafficResult[];
    try {
      rs = await this.all<TrafficResult>((w) => {
        const idx = spec.senders.flatMap((s, i) => (s >= w.lo && s < w.hi ? [i] : []));
        return {
          op: 'traffic',
          kind: spec.kind,
          senders: idx.map((i) => spec.senders[i] as number),
          expect: idx.map((i) => spec.expect[i] as number),
          rooms: spec.rooms ? idx.map((i) => (spec.rooms as string[])[i] as string) : undefined,
          mode: spec.mode,
          window: spec.window,
          rate: totalSenders ? (spec.rate * idx.length) / totalSenders : 0,
          startAt,
          measureFrom,
          measureTo,
          drainMs: spec.drainMs,
          countSelf: spec.countSelf,
        };
      });
    } catch (e) {
      for (const t of timers) clearTimeout(t);
      throw e;
    }
    const [s0, s1] = await Promise.all([pa, pb]);
    const hist = newHist();
    for (const r of rs) merge(hist, r.hist);
    const sum = (k: keyof TrafficResult) => rs.reduce((acc, r) => acc + (r[k] as number), 0);
    const serverCpu = s1.server.reduce((x, p) => x + p.cpu, 0) - s0.server.reduce((x, p) => x + p.cpu, 0);
    const muxCpu = s1.mux - s0.mux;
    const genCpu = sum('cpu') + (s1.coord - s0.coord);
    const seconds = spec.measureMs / 1000;
    return {
      sent: sum('sent'),
      expected: sum('expected'),
      received: sum('received'),
      lost: sum('lost'),
      dup: sum('dup'),
      foreign: sum('foreign'),
      delivered: sum('delivered'),
      seconds,
      perSecond: sum('delivered') / seconds,
      hist,
      serverCpu,
      muxCpu,
      genCpu,
      otherCpu: Math.max(0, s1.machine - s0.machine - serverCpu - muxCpu - genCpu),
      cpuSeconds: (s1.at - s0.at) / 1000,
      serverSyscw: s1.server.reduce((x, p) => x + p.syscw, 0) - s0.server.reduce((x, p) => x + p.syscw, 0),
      errors: sum('errors'),
      disconnected: sum('disconnected'),
      firstError: rs.find((r) => r.firstError)?.firstError ?? '',
      drainMs: Math.max(...rs.map((r) => r.drainMs)),
    };
  }

  /** Ends every session (</stream:stream>) and waits for the sockets to close. */
  async logout(): Promise<number> {
    const n = await this.all<number>(() => ({ op: 'logout' }));
    return n.reduce((a, b) => a + b, 0);
  }

  /** Closes the sessions and stops the workers. */
  async close(): Promise<void> {
    await Promise.race([this.logout().catch(() => 0), new Promise((r) => setTimeout(r, 5000))]);
    for (const w of this.workers) {
      if (w.child.connected) w.child.send({ id: 0, cmd: { op: 'exit' } }, () => {});
    }
    const t = setTimeout(() => {
      for (const w of this.workers) if (w.child.exitCode === null) w.child.kill('SIGKILL');
    }, 3000);
    await Promise.all(this.workers.map((w) => w.exited));
    clearTimeout(t);
  }
}
