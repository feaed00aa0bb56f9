// c2s benchmark, with and without the multiplexor (issue 3, "Benchmark"). Provisions N users in
// SQLite, starts `bin/parley start` as a child process with a temporary configuration, logs N raw
// socket clients in (SASL PLAIN; with --tls after STARTTLS, accepting the self-signed certificate),
// then S of them send 1:1 chat messages to random online users for D seconds, each with at most W
// messages in flight. Measured per scenario:
//   - idle connections: RSS per connection in the server and in each mux (/proc/<pid>/status VmRSS,
//     before and after the logins);
//   - login rate (logins/s, p50/p99 login time) and CPU per login of the server and the muxes;
//   - 1:1 throughput (delivered msg/s) and latency percentiles;
//   - CPU (/proc/<pid>/stat utime+stime) of the server and the muxes per 1,000 delivered messages,
//     write syscalls per message (/proc/<pid>/io syscw), the load generator's own CPU, and the CPU
//     other processes on the machine used meanwhile (/proc/stat), so a noisy run is visible.
// See bench/README.md for how to run it. The full comparative harness is issue 4.
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { join, relative, resolve } from 'node:path';
import tls from 'node:tls';
import { parseArgs } from 'node:util';
import { AccountService } from '../src/auth/index.js';
import { validateConfig } from '../src/core/config.js';
import { openStorage } from '../src/storage/index.js';
import { NCPU, type ProcSample, hasTaskset, loadAvg, machineBusy, ownCpu as genCpu, pct, procSample, sleep } from './load/proc.js';

const USAGE = `usage: node --import tsx bench/c2s.ts [options]
  --users N         users logged in (idle connections), >= senders   [1000]
  --senders N       clients sending 1:1 messages                     [500]
  --seconds N       measured throughput window                       [8]
  --warmup N        unmeasured seconds of traffic before the window  [1]
  --window N        messages in flight per sender                    [4]
  --concurrency N   logins in progress at once                       [50]
  --tls             STARTTLS before SASL (server keeps tls.required)
  --mux N           multiplexor processes (0 = parley start --no-mux) [1]
  --compare         run no mux / 1 mux / 2 muxes, each plain and TLS, print one table and
                    write it to bench/results/mux-<date>.md (or --out)
  --muxes LIST      mux counts for --compare                         [0,1,2]
  --link-tls        the muxes' link to the server over TLS (mux.linkTls: on; default: plaintext loopback)
  --compare-link    run --mux N (default 1) with a plaintext loopback link, then with a TLS link, print
                    one table and write it to bench/results/mux-link-<date>.md (or --out)
  --no-archive      modules.mam: false (the per-message archive write otherwise dominates the server)
  --pin             re-exec the generator under taskset -c <last core>; server and muxes get all cores
  --max-load X      --compare waits (up to --wait-load s) until the 1-min load average is <= X [1.5]
  --wait-load N                                                      [240]
  --retries N       --compare reruns a scenario (keeping the quieter run) while other processes
                    used more than 10% of the machine during its window  [2]
  --profile DIR     perf record server and muxes (node --perf-basic-prof) over the measured window
                    into DIR and print their top functions
  --out FILE        results file for --compare`;

const { values: opt } = parseArgs({
  options: {
    users: { type: 'string', default: '1000' },
    senders: { type: 'string', default: '500' },
    seconds: { type: 'string', default: '8' },
    warmup: { type: 'string', default: '1' },
    window: { type: 'string', default: '4' },
    concurrency: { type: 'string', default: '50' },
    tls: { type: 'boolean', default: false },
    mux: { type: 'string', default: '1' },
    compare: { type: 'boolean', default: false },
    muxes: { type: 'string', default: '0,1,2' },
    'link-tls': { type: 'boolean', default: false },
    'compare-link': { type: 'boolean', default: false },
    'no-archive': { type: 'boolean', default: false },
    pin: { type: 'boolean', default: false },
    'max-load': { type: 'string', default: '1.5' },
    'wait-load': { type: 'string', default: '240' },
    retries: { type: 'string', default: '2' },
    profile: { type: 'string' },
    out: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
  strict: true,
});
if (opt.help) {
  console.log(USAGE);
  process.exit(0);
}

const USERS = Number(opt.users);
const SENDERS = Number(opt.senders);
const SECONDS = Number(opt.seconds);
const WARMUP = Number(opt.warmup);
const WINDOW = Number(opt.window);
const CONCURRENCY = Number(opt.concurrency);
const RETRIES = Number(opt.retries);
if (![USERS, SENDERS, SECONDS, WARMUP, WINDOW, CONCURRENCY].every((n) => Number.isFinite(n) && n >= 0) || SENDERS > USERS || USERS < 2) {
  console.error(`bad options (users >= senders, users >= 2)\n${USAGE}`);
  process.exit(2);
}

const ROOT = resolve(import.meta.dirname, '..');
const BIN = join(ROOT, 'bin/parley');

// ---- pinning: re-exec under taskset before doing anything else ----------------------------------

if (opt.pin && !process.env.PARLEY_BENCH_PINNED) {
  if (hasTaskset() && NCPU > 1) {
    const core = String(NCPU - 1);
    const r = spawnSync('taskset', ['-c', core, process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
      stdio: 'inherit',
      env: { ...process.env, PARLEY_BENCH_PINNED: core },
    });
    process.exit(r.status ?? 1);
  }
  console.error('--pin: taskset not available (or one core); running unpinned');
}
const PINNED = process.env.PARLEY_BENCH_PINNED ?? null;

// ---- the raw client ---------------------------------------------------------------------------------

const HEADER = `<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`;
const BODY_RE = /<body>t:(\d+):(\d+)<\/body>/g;

class RawClient {
  sock: net.Socket;
  buf = '';
  waiters: { re: RegExp; resolve: (m: RegExpExecArray) => void }[] = [];
  /** Set for the throughput phase: called with (sender index, send stamp in µs). */
  onMessage: ((sender: number, stamp: number) => void) | null = null;
  closed = false;

  constructor(port: number) {
    this.sock = net.connect({ port, host: '127.0.0.1' });
    this.sock.setNoDelay(true);
    this.attach(this.sock);
  }

  private attach(sock: net.Socket): void {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.onData(d));
    sock.on('error', () => {});
    sock.on('close', () => {
      if (sock === this.sock) this.closed = true;
    });
  }

  private onData(d: string): void {
    this.buf += d;
    const cb = this.onMessage;
    if (cb) {
      BODY_RE.lastIndex = 0;
      let last = 0;
      for (let m = BODY_RE.exec(this.buf); m; m = BODY_RE.exec(this.buf)) {
        cb(Number(m[1]), Number(m[2]));
        last = BODY_RE.lastIndex;
      }
      if (last) this.buf = this.buf.slice(last);
      if (this.buf.length > 65536) this.buf = this.buf.slice(-4096);
      return;
    }
    for (let i = 0; i < this.waiters.length; i++) {
      const w = this.waiters[i] as (typeof this.waiters)[number];
      const m = w.re.exec(this.buf);
      if (m) {
        this.buf = this.buf.slice(m.index + m[0].length);
        this.waiters.splice(i, 1);
        i--;
        w.resolve(m);
      }
    }
  }

  wait(re: RegExp): Promise<RegExpExecArray> {
    const m = re.exec(this.buf);
    if (m) {
      this.buf = this.buf.slice(m.index + m[0].length);
      return Promise.resolve(m);
    }
    return new Promise((r) => this.waiters.push({ re, resolve: r }));
  }

  write(s: string): void {
    this.sock.write(s);
  }

  private startTls(): Promise<void> {
    const raw = this.sock;
    raw.removeAllListeners('data');
    raw.removeAllListeners('close');
    this.buf = '';
    const t = tls.connect({ socket: raw, servername: 'localhost', rejectUnauthorized: false });
    this.sock = t;
    this.attach(t);
    return new Promise((resolve, reject) => {
      t.once('secureConnect', () => resolve());
      t.once('error', reject);
    });
  }

  async login(user: string, password: string, useTls: boolean): Promise<string> {
    this.write(HEADER);
    await this.wait(/<\/stream:features>/);
    if (useTls) {
      this.write(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`);
      await this.wait(/<proceed[^>]*\/>|<proceed[^>]*>\s*<\/proceed>/);
      await this.startTls();
      this.write(HEADER);
      await this.wait(/<\/stream:features>/);
    }
    this.write(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0${user}\0${password}`).toString('base64')}</auth>`);
    const r = await this.wait(/<success[^>]*\/>|<success[^>]*>[^<]*<\/success>|<failure[\s\S]*?<\/failure>/);
    if (r[0].startsWith('<failure')) throw new Error(`login of ${user} failed: ${r[0]}`);
    this.write(HEADER);
    await this.wait(/<\/stream:features>/);
    this.write(`<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bench</resource></bind></iq>`);
    const m = await this.wait(/<jid>([^<]+)<\/jid>/);
    this.write(`<presence/>`);
    return m[1] as string;
  }

  destroy(): void {
    this.sock.destroy();
  }
}

// ---- one scenario -----------------------------------------------------------------------------------

interface Scenario {
  mux: number;
  tls: boolean;
  /** The muxes' link to the server over TLS (issue 15 §5). */
  linkTls?: boolean;
}

interface Result {
  scenario: Scenario;
  muxPids: number[];
  logins: number;
  loginSeconds: number;
  loginP50: number;
  loginP99: number;
  loginServerCpu: number;
  loginMuxCpu: number;
  loginGenCpu: number;
  rssServerBefore: number;
  rssServerAfter: number;
  rssMuxBefore: number[];
  rssMuxAfter: number[];
  sent: number;
  delivered: number;
  lost: number;
  elapsed: number;
  latency: { p50: number; p95: number; p99: number; max: number };
  serverCpu: number;
  muxCpu: number;
  genCpu: number;
  otherCpu: number;
  serverSyscw: number;
  muxSyscw: number;
  serverSyscr: number;
  muxSyscr: number;
}

function label(s: Scenario): string {
  return `${s.mux === 0 ? 'no mux' : `${s.mux} mux${s.mux > 1 ? 'es' : ''}`}, ${s.tls ? 'TLS' : 'plain'}${s.mux > 0 && (opt['compare-link'] || s.linkTls) ? (s.linkTls ? ', TLS link' : ', plaintext link') : ''}`;
}

async function provision(dir: string): Promise<void> {
  const cfg = validateConfig({ dataDir: `${dir}/data` });
  mkdirSync(`${dir}/data`, { recursive: true });
  const storage = await openStorage({ type: 'sqlite', path: cfg.storage.type === 'sqlite' ? (cfg.storage.path as string) : '' });
  const accounts = new AccountService(storage);
  const t0 = Date.now();
  await Promise.all(Array.from({ length: USERS }, (_, i) => accounts.create(`u${i}@localhost`, 'pw')));
  await storage.close();
  console.error(`provisioned ${USERS} users in ${Date.now() - t0} ms`);
}

async function runScenario(template: string, s: Scenario): Promise<Result> {
  const dir = mkdtempSync(join(os.tmpdir(), 'parley-bench-'));
  cpSync(join(template, 'data'), join(dir, 'data'), { recursive: true });
  const cfgText = [
    'hosts: [localhost]',
    `dataDir: ${dir}/data`,
    'listen: { address: 127.0.0.1, c2s: 0, c2sDirectTls: null }',
    'http: { port: null, tlsPort: null }',
    s.tls ? 'tls: { required: true }' : 'tls: { required: false }',
    `auth: { allowPlainWithoutTls: ${!s.tls}, maxFailuresPerAddress: 1000000, maxFailuresPerPair: 1000000 }`,
    `mux: { count: ${s.mux}${s.linkTls ? ', linkTls: on' : ''} }`,
    'log: { level: warn }',
    ...(opt['no-archive'] ? ['modules: { mam: false }'] : []),
    'limits: { connectionsPerAddress: 100000, preAuthPerAddress: 100000, stanzasPerSecond: 100000, burstStanzas: 100000, bytesPerSecond: 100000000, burstBytes: 100000000, idlePingSeconds: 0 }',
    '',
  ].join('\n');
  writeFileSync(join(dir, 'parley.yaml'), cfgText);

  const args = ['--config', join(dir, 'parley.yaml'), 'start', ...(s.mux === 0 ? ['--no-mux'] : [])];
  const env = { ...process.env };
  // --profile: JIT symbol maps (/tmp/perf-<pid>.map) so `perf` can name JavaScript frames; the
  // muxes inherit the environment.
  if (opt.profile) env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? ''} --perf-basic-prof`.trim();
  // A pinned generator's children inherit its affinity: give the server (and its muxes) every core.
  const child = PINNED
    ? spawn('taskset', ['-c', `0-${NCPU - 1}`, BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env })
    : spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-8192);
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  let muxPids: number[] = [];
  try {
    const banner = await new Promise<{ port: number; muxPids: number[] }>((res, rej) => {
      let out = '';
      const timer = setTimeout(() => rej(new Error(`server did not start:\n${out}\n${stderr}`)), 30_000);
      child.once('exit', (code) => rej(new Error(`server exited (${code}):\n${out}\n${stderr}`)));
      child.stdout.on('data', (d) => {
        out += d;
        if (!/Add a user:/.test(out)) return;
        clearTimeout(timer);
        const port = /\(STARTTLS\): \S+ port (\d+)/.exec(out);
        const pids = /\(pids ([\d, ]+)\)/.exec(out);
        if (!port) return rej(new Error(`no client port in the banner:\n${out}`));
        res({ port: Number(port[1]), muxPids: pids ? (pids[1] as string).split(',').map((p) => Number(p.trim())) : [] });
      });
    });
    const pid = child.pid as number;
    const { port } = banner;
    muxPids = banner.muxPids;
    if (muxPids.length !== s.mux) throw new Error(`expected ${s.mux} mux pids, banner shows ${muxPids.join(', ') || 'none'}`);
    const muxSample = () => muxPids.map(procSample);
    const sum = (xs: ProcSample[], k: keyof ProcSample) => xs.reduce((a, x) => a + x[k], 0);

    await sleep(1000);
    const before = procSample(pid);
    const muxBefore = muxSample();

    // ---- logins -------------------------------------------------------------------------------
    const clients: RawClient[] = [];
    const loginTimes = new Float64Array(USERS);
    const genL0 = genCpu();
    const tl = performance.now();
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < USERS; i = next++) {
        const c = new RawClient(port);
        const t = performance.now();
        await c.login(`u${i}`, 'pw', s.tls);
        loginTimes[i] = performance.now() - t;
        clients[i] = c;
      }
    };
    let watchdog: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(Array.from({ length: Math.min(CONCURRENCY, USERS) }, worker)),
      new Promise((_, rej) => {
        watchdog = setTimeout(() => rej(new Error(`logins stuck at ${clients.filter(Boolean).length}/${USERS}`)), 120_000);
      }),
    ]);
    clearTimeout(watchdog);
    const loginSeconds = (performance.now() - tl) / 1000;
    const afterLoginCpu = procSample(pid);
    const muxAfterLoginCpu = muxSample();
    const loginGenCpu = genCpu() - genL0;
    loginTimes.sort();

    // ---- idle ---------------------------------------------------------------------------------
    await sleep(1500);
    const idle = procSample(pid);
    const muxIdle = muxSample();

    // ---- 1:1 throughput -----------------------------------------------------------------------
    // Window accounting: each message body carries its sender's index, so delivery decrements that
    // sender's counter; senders with room are refilled once per event-loop turn (one write each).
    const outstanding = new Int32Array(SENDERS);
    const dirty: number[] = [];
    const isDirty = new Uint8Array(SENDERS);
    let flushScheduled = false;
    let running = true;
    let measuring = false;
    let sent = 0;
    let received = 0;
    let delivered = 0;
    const latencies: number[] = [];
    const pump = (i: number) => {
      const room = WINDOW - (outstanding[i] as number);
      if (!running || room <= 0) return;
      const stamp = Math.round(performance.now() * 1000);
      let out = '';
      for (let k = 0; k < room; k++) {
        let to = Math.floor(Math.random() * USERS);
        if (to === i) to = (to + 1) % USERS;
        out += `<message to='u${to}@localhost' type='chat'><body>t:${i}:${stamp}</body></message>`;
      }
      outstanding[i] = WINDOW;
      sent += room;
      (clients[i] as RawClient).write(out);
    };
    const flush = () => {
      flushScheduled = false;
      const list = dirty.splice(0);
      for (const i of list) {
        isDirty[i] = 0;
        pump(i);
      }
    };
    const onMessage = (sender: number, stamp: number) => {
      received++;
      if (measuring) {
        delivered++;
        latencies.push(performance.now() - stamp / 1000);
      }
      if (sender >= SENDERS) return;
      outstanding[sender] = (outstanding[sender] as number) - 1;
      if (!isDirty[sender]) {
        isDirty[sender] = 1;
        dirty.push(sender);
      }
      if (!flushScheduled) {
        flushScheduled = true;
        setImmediate(flush);
      }
    };
    for (const c of clients) {
      c.buf = '';
      c.onMessage = onMessage;
    }
    for (let i = 0; i < SENDERS; i++) pump(i);
    await sleep(WARMUP * 1000);
    const t0 = { srv: procSample(pid), mux: muxSample(), gen: genCpu(), machine: machineBusy(), at: performance.now() };
    measuring = true;
    const perf = opt.profile ? startPerf(opt.profile, s, [pid, ...muxPids]) : null;
    await sleep(SECONDS * 1000);
    measuring = false;
    await perf?.stop();
    const t1 = { srv: procSample(pid), mux: muxSample(), gen: genCpu(), machine: machineBusy(), at: performance.now() };
    running = false;
    // Let what is in flight arrive, so that losses show.
    for (let k = 0; k < 50 && received < sent; k++) await sleep(100);
    const dead = clients.filter((c) => c.closed).length;
    if (dead) console.error(`warning: ${dead} clients were disconnected during the run`);

    const lat = Float64Array.from(latencies).sort();
    const serverCpu = t1.srv.cpu - t0.srv.cpu;
    const muxCpu = sum(t1.mux, 'cpu') - sum(t0.mux, 'cpu');
    const genCpuUsed = t1.gen - t0.gen;
    const result: Result = {
      scenario: s,
      muxPids,
      logins: USERS,
      loginSeconds,
      loginP50: pct(loginTimes, 50),
      loginP99: pct(loginTimes, 99),
      loginServerCpu: afterLoginCpu.cpu - before.cpu,
      loginMuxCpu: sum(muxAfterLoginCpu, 'cpu') - sum(muxBefore, 'cpu'),
      loginGenCpu,
      rssServerBefore: before.rss,
      rssServerAfter: idle.rss,
      rssMuxBefore: muxBefore.map((m) => m.rss),
      rssMuxAfter: muxIdle.map((m) => m.rss),
      sent,
      delivered,
      lost: sent - received,
      elapsed: (t1.at - t0.at) / 1000,
      latency: { p50: pct(lat, 50), p95: pct(lat, 95), p99: pct(lat, 99), max: lat.at(-1) ?? Number.NaN },
      serverCpu,
      muxCpu,
      genCpu: genCpuUsed,
      otherCpu: Math.max(0, t1.machine - t0.machine - serverCpu - muxCpu - genCpuUsed),
      serverSyscw: t1.srv.syscw - t0.srv.syscw,
      muxSyscw: sum(t1.mux, 'syscw') - sum(t0.mux, 'syscw'),
      serverSyscr: t1.srv.syscr - t0.srv.syscr,
      muxSyscr: sum(t1.mux, 'syscr') - sum(t0.mux, 'syscr'),
    };
    for (const c of clients) c.destroy();
    return result;
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
    // The muxes leave with their server; one that did not is ours to clean up.
    const alive = (p: number) => {
      try {
        process.kill(p, 0);
        return true;
      } catch {
        return false;
      }
    };
    for (const m of muxPids) {
      for (let k = 0; k < 20 && alive(m); k++) await sleep(100);
      if (alive(m)) process.kill(m, 'SIGKILL');
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- reporting --------------------------------------------------------------------------------------

const f0 = (n: number) => (Number.isFinite(n) ? n.toFixed(0) : '–');
const f1 = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '–');
const f2 = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : '–');
const MiB = 1048576;

function rows(): [string, (r: Result) => string][] {
  const perK = (cpu: number, r: Result) => (cpu * 1e6) / Math.max(1, r.delivered); // ms per 1,000 messages
  return [
    ['**idle connections**', () => ''],
    ['server RSS before → after login (MiB)', (r) => `${f1(r.rssServerBefore / MiB)} → ${f1(r.rssServerAfter / MiB)}`],
    ['server RSS per connection (KiB)', (r) => f1((r.rssServerAfter - r.rssServerBefore) / r.logins / 1024)],
    [
      'mux RSS per connection, each mux (KiB)',
      (r) => (r.muxPids.length ? r.rssMuxAfter.map((a, i) => f1((a - (r.rssMuxBefore[i] ?? 0)) / (r.logins / r.muxPids.length) / 1024)).join(' / ') : '–'),
    ],
    ['mux RSS after login, each mux (MiB)', (r) => (r.muxPids.length ? r.rssMuxAfter.map((a) => f1(a / MiB)).join(' / ') : '–')],
    ['**logins**', () => ''],
    ['logins/s', (r) => f0(r.logins / r.loginSeconds)],
    ['login ms p50 / p99', (r) => `${f1(r.loginP50)} / ${f1(r.loginP99)}`],
    ['server CPU ms per login', (r) => f2((r.loginServerCpu * 1000) / r.logins)],
    ['mux CPU ms per login (all muxes)', (r) => (r.muxPids.length ? f2((r.loginMuxCpu * 1000) / r.logins) : '–')],
    ['generator CPU ms per login', (r) => f2((r.loginGenCpu * 1000) / r.logins)],
    ['**1:1 messages**', () => ''],
    ['delivered msg/s', (r) => f0(r.delivered / r.elapsed)],
    ['latency ms p50 / p95 / p99 / max', (r) => `${f1(r.latency.p50)} / ${f1(r.latency.p95)} / ${f1(r.latency.p99)} / ${f1(r.latency.max)}`],
    ['lost (sent − received)', (r) => String(r.lost)],
    ['server CPU s (cores busy)', (r) => `${f2(r.serverCpu)} (${f2(r.serverCpu / r.elapsed)})`],
    ['server CPU ms / 1,000 msgs', (r) => f1(perK(r.serverCpu, r))],
    ['mux CPU ms / 1,000 msgs (all muxes)', (r) => (r.muxPids.length ? f1(perK(r.muxCpu, r)) : '–')],
    ['total CPU ms / 1,000 msgs (server+muxes)', (r) => f1(perK(r.serverCpu + r.muxCpu, r))],
    ['server / mux write syscalls per msg', (r) => `${f2(r.serverSyscw / Math.max(1, r.delivered))} / ${r.muxPids.length ? f2(r.muxSyscw / Math.max(1, r.delivered)) : '–'}`],
    ['server / mux read syscalls per msg', (r) => `${f2(r.serverSyscr / Math.max(1, r.delivered))} / ${r.muxPids.length ? f2(r.muxSyscr / Math.max(1, r.delivered)) : '–'}`],
    ['generator CPU (cores busy)', (r) => `${f2(r.genCpu)} s (${f2(r.genCpu / r.elapsed)})`],
    ['other CPU s: other processes, irq, steal (noise)', (r) => f2(r.otherCpu)],
  ];
}

function table(results: Result[]): string {
  const head = `| metric | ${results.map((r) => label(r.scenario)).join(' | ')} |`;
  const sep = `|---|${results.map(() => '---:').join('|')}|`;
  const body = rows().map(([k, fn]) => `| ${k} | ${results.map(fn).join(' | ')} |`);
  return [head, sep, ...body].join('\n');
}

function machineInfo(): string {
  const model = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  const affinity = /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '?';
  return [
    `- machine: ${NCPU} CPUs (nproc), ${model}, ${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB RAM, ${os.type()} ${os.release()}`,
    `- Node ${process.version}; generator ${PINNED ? `pinned with taskset to CPU ${PINNED}` : 'not pinned'} (allowed CPUs ${affinity}); server and muxes on all CPUs`,
    `- ${USERS} users logged in, ${SENDERS} senders × window ${WINDOW}, ${WARMUP} s warm-up + ${SECONDS} s measured, login concurrency ${CONCURRENCY}; SASL PLAIN (SCRAM-stored secrets, PBKDF2 per login)`,
  ].join('\n');
}

async function waitQuiet(waitSeconds = Number(opt['wait-load'])): Promise<string> {
  const max = Number(opt['max-load']);
  const deadline = Date.now() + waitSeconds * 1000;
  for (;;) {
    const l = loadAvg();
    if (l <= max) return `1-min load average ${l.toFixed(2)} at start`;
    if (Date.now() > deadline) return `1-min load average ${l.toFixed(2)} at start (waited ${waitSeconds} s for <= ${max}; ran anyway)`;
    console.error(`load average ${l.toFixed(2)} > ${max}; waiting`);
    await sleep(20_000);
  }
}

// ---- profiles (perf) -------------------------------------------------------------------------------

const perfReports: string[] = [];

/** perf record of the server and mux pids over the measured window; the report is kept for the end. */
function startPerf(dir: string, s: Scenario, pids: number[]): { stop(): Promise<void> } {
  mkdirSync(dir, { recursive: true });
  const file = resolve(dir, `${s.mux}mux-${s.tls ? 'tls' : 'plain'}.perf.data`);
  const rec = spawn('perf', ['record', '-F', '997', '-g', '-o', file, '-p', pids.join(',')], { stdio: 'ignore' });
  const done = new Promise<void>((r) => {
    rec.once('exit', () => r());
    rec.once('error', () => r());
  });
  const names = new Map<number, string>();
  return {
    async stop() {
      // Threads (GC helpers, the libuv pool running PBKDF2) are reported under their process.
      pids.forEach((p, i) => {
        const who = i === 0 ? 'server' : `mux ${i}`;
        names.set(p, who);
        try {
          for (const t of readdirSync(`/proc/${p}/task`)) names.set(Number(t), who);
        } catch {
          /* gone */
        }
      });
      rec.kill('SIGINT');
      await done;
      const report = (sort: string) =>
        (
          spawnSync('perf', ['report', '-i', file, '--no-children', '--sort', sort, '-g', 'none', '--stdio', '--percent-limit', '0.05'], {
            encoding: 'utf8',
            maxBuffer: 256 * 1024 * 1024,
          }).stdout ?? ''
        )
          .split('\n')
          .flatMap((l) => {
            const m = /^\s+([\d.]+)%\s+(\d+):\S+\s+(.*?)\s*$/.exec(l);
            return m ? [{ pct: Number(m[1]), who: names.get(Number(m[2])) ?? 'other', what: (m[3] as string).replace(/\s+/g, ' ') }] : [];
          });
      const byDso = new Map<string, Map<string, number>>();
      for (const r of report('pid,dso')) {
        const cat = r.what.startsWith('[kernel') ? 'kernel' : r.what.startsWith('[JIT]') ? 'JIT (JavaScript)' : 'node, libc, V8 builtins';
        const m = byDso.get(r.who) ?? new Map<string, number>();
        m.set(cat, (m.get(cat) ?? 0) + r.pct);
        byDso.set(r.who, m);
      }
      const bySym = new Map<string, Map<string, number>>();
      for (const r of report('pid,sym')) {
        const sym = r.what.replace(/file:\/\/\S*?\/(src|node_modules)\//, '$1/');
        const m = bySym.get(r.who) ?? new Map<string, number>();
        m.set(sym, (m.get(sym) ?? 0) + r.pct);
        bySym.set(r.who, m);
      }
      const out = [`### ${label(s)}: perf, measured window, % of all samples (${file})`];
      for (const who of new Set(names.values())) {
        const d = byDso.get(who);
        if (!d) continue;
        const total = [...d.values()].reduce((a, b) => a + b, 0);
        out.push(`${who}: ${total.toFixed(1)}% — ${[...d].map(([k, v]) => `${k} ${v.toFixed(1)}%`).join(', ')}`);
        for (const [sym, v] of [...(bySym.get(who) ?? [])].sort((a, b) => b[1] - a[1]).slice(0, 12)) out.push(`    ${v.toFixed(2).padStart(6)}%  ${sym}`);
      }
      perfReports.push(out.join('\n'));
      // The JIT maps (/tmp/perf-<pid>.map) stay, so `perf report -i <file> -G` can still name frames.
    },
  };
}

// ---- main -------------------------------------------------------------------------------------------

async function main() {
  const template = mkdtempSync(join(os.tmpdir(), 'parley-bench-users-'));
  try {
    const comparing = opt.compare || opt['compare-link'];
    const quiet = comparing ? await waitQuiet() : `1-min load average ${loadAvg().toFixed(2)} at start`;
    await provision(template);
    const scenarios: Scenario[] = opt['compare-link']
      ? [false, true].map((linkTls) => ({ mux: Math.max(1, Number(opt.mux)), tls: opt.tls, linkTls }))
      : opt.compare
        ? opt.muxes.split(',').flatMap((m) => [false, true].map((t) => ({ mux: Number(m), tls: t })))
        : [{ mux: Number(opt.mux), tls: opt.tls, linkTls: opt['link-tls'] }];
    const results: Result[] = [];
    const tStart = Date.now();
    for (const s of scenarios) {
      console.error(`--- ${label(s)}`);
      let r = await runScenario(template, s);
      // Someone else used more than a tenth of the machine during the window: wait and run again.
      for (let k = 0; comparing && k < RETRIES && r.otherCpu > 0.1 * NCPU * r.elapsed; k++) {
        console.error(`    noisy (${f2(r.otherCpu)} s of other CPU); waiting for a quiet machine and running it again`);
        await waitQuiet(60);
        const again = await runScenario(template, s);
        if (again.otherCpu < r.otherCpu) r = again;
      }
      console.error(
        `    ${f0(r.logins / r.loginSeconds)} logins/s, ${f0(r.delivered / r.elapsed)} msg/s, server ${f1((r.serverCpu * 1e6) / r.delivered)} + mux ${f1((r.muxCpu * 1e6) / r.delivered)} ms CPU / 1k msgs`,
      );
      results.push(r);
    }
    const endLoad = `1-min load average ${loadAvg().toFixed(2)} at the end; whole run ${((Date.now() - tStart) / 1000).toFixed(0)} s`;
    const md = table(results);
    console.log(md);
    if (comparing || opt.out) {
      const date = new Date().toISOString().slice(0, 10);
      const file = resolve(opt.out ?? join(ROOT, 'bench/results', `${opt['compare-link'] ? 'mux-link' : 'mux'}-${date}.md`));
      mkdirSync(resolve(file, '..'), { recursive: true });
      const cmd = `node --import tsx bench/c2s.ts ${process.argv.slice(2).join(' ')}`.trim();
      const text = [`# c2s with and without the multiplexor — ${new Date().toISOString()}`, '', machineInfo(), `- ${quiet}; ${endLoad}`, `- command: \`${cmd}\``, '', md, ''].join('\n');
      writeFileSync(file, text);
      console.error(`results written to ${relative(process.cwd(), file)}`);
    }
    if (perfReports.length) console.log(`\n${perfReports.join('\n\n')}`);
  } finally {
    rmSync(template, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
