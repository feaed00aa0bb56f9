// Side-by-side benchmark of issue 4: Parley (with and without the mux), Prosody and ejabberd on
// this machine, one after the other, through the same raw-socket load generator (bench/load/).
// For each target and workload a fresh target is started on a free loopback port in a fresh
// directory, the workload runs, the target stops. One run against a no-op echo sink shows what the
// generator itself can do. Prints one Markdown table, writes it to bench/results/ and into README's
// performance section. `npm run bench -- --help` lists the options; see bench/README.md.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startSink } from './load/sink.js';
import { NCPU, allowedCpus, hasTaskset, loadAvg, machineLine, waitQuiet } from './load/proc.js';
import type { Target, TargetFactory } from './targets/types.js';
import { FACTORIES, TARGET_NAMES, type TargetName } from './load/targets.js';
import { type BenchContext, type Cells, SINK, type Sizes, WORKLOADS, type Workload, defaultSizes } from './load/workloads.js';

const USAGE = `usage: npm run bench -- [options]        (node --import tsx bench/run.ts [options])
  --targets LIST     in this order, from ${TARGET_NAMES.join(',')}      [all]
  --workloads LIST   W1..W7                                              [W1,W2,W3,W4,W5,W6,W7]
  --scale X          multiply users, senders, rates and rooms (0.2 for a quick run)   [1]
  --seconds N        measured window of the traffic workloads            [20]
  --warmup N         unmeasured traffic before the window                [2, 1 below 10 s]
  --workers K        load generator processes                            [1]
  --pin              pin the generator's workers to the last CPU (taskset); targets keep every CPU
  --concurrency N    logins in progress at once (W1, W3-W6)              [100]
  --storm-concurrency N   logins in progress at once in the login storms (W2, W7)   [200]
  --drain N          seconds to wait for messages in flight after the window   [10]
  --set KEY=VALUE    override a size, e.g. --set w3Window=32 --set w4Rate=5000 (repeatable; see bench/README.md)
  --no-sink          skip the run against the no-op sink
  --max-load X       quiet machine: 1-min load average at most X ...     [${(NCPU * 0.75).toFixed(2)}]
  --max-busy X       ... or at most X cores busy over 1 s (/proc/stat)   [0.3]
  --wait-load N      wait at most N s for a quiet machine, then run anyway   [120]
  --retries N        rerun a workload whose window had other processes using > 10% of the machine   [1]
  --out FILE         results file     [bench/results/compare-<date>.md, -scale<X> appended when X != 1]
  --no-readme        do not replace the table in README.md
  --domain D         [localhost]`;

const { values: opt } = parseArgs({
  options: {
    targets: { type: 'string', default: TARGET_NAMES.join(',') },
    workloads: { type: 'string', default: WORKLOADS.map((w) => w.id).join(',') },
    scale: { type: 'string', default: '1' },
    seconds: { type: 'string', default: '20' },
    warmup: { type: 'string' },
    workers: { type: 'string', default: '1' },
    pin: { type: 'boolean', default: false },
    concurrency: { type: 'string', default: '100' },
    'storm-concurrency': { type: 'string', default: '200' },
    drain: { type: 'string', default: '10' },
    set: { type: 'string', multiple: true, default: [] },
    'no-sink': { type: 'boolean', default: false },
    'max-load': { type: 'string', default: String(NCPU * 0.75) },
    'max-busy': { type: 'string', default: '0.3' },
    'wait-load': { type: 'string', default: '120' },
    retries: { type: 'string', default: '1' },
    out: { type: 'string' },
    'no-readme': { type: 'boolean', default: false },
    domain: { type: 'string', default: 'localhost' },
    help: { type: 'boolean', default: false },
  },
  strict: true,
});
if (opt.help) {
  console.log(USAGE);
  process.exit(0);
}

const ROOT = resolve(import.meta.dirname, '..');
const log = (s: string) => console.error(s);

function fail(msg: string): never {
  console.error(`${msg}\n\n${USAGE}`);
  process.exit(2);
}

const scale = Number(opt.scale);
const seconds = Number(opt.seconds);
const warmup = opt.warmup !== undefined ? Number(opt.warmup) : seconds < 10 ? 1 : 2;
const workers = Number(opt.workers);
const retries = Number(opt.retries);
for (const [k, v] of Object.entries({ scale, seconds, warmup, workers, retries })) {
  if (!Number.isFinite(v) || v < 0 || ((k === 'scale' || k === 'seconds' || k === 'workers') && v <= 0)) fail(`bad --${k}`);
}
const targetNames = opt.targets.split(',').map((s) => s.trim()) as TargetName[];
for (const n of targetNames) if (!TARGET_NAMES.includes(n)) fail(`unknown target ${n}`);
const workloads = opt.workloads.split(',').map((id) => WORKLOADS.find((w) => w.id.toLowerCase() === id.trim().toLowerCase()) ?? fail(`unknown workload ${id}`));

const sizes: Sizes = defaultSizes(scale);
for (const kv of opt.set) {
  const [k, v] = kv.split('=') as [keyof Sizes, string];
  if (!(k in sizes) || !(Number(v) > 0)) fail(`bad --set ${kv} (keys: ${Object.keys(sizes).join(', ')})`);
  sizes[k] = Number(v);
}

let pin: string | null = null;
if (opt.pin) {
  if (hasTaskset() && NCPU > 1) pin = String(NCPU - 1);
  else log('--pin: taskset not available (or one CPU); the generator runs unpinned');
}

const ctx: BenchContext = {
  sizes,
  seconds,
  warmup,
  workers,
  pin,
  concurrency: Number(opt.concurrency),
  stormConcurrency: Number(opt['storm-concurrency']),
  drainMs: Number(opt.drain) * 1000,
  domain: opt.domain,
  muc: `conference.${opt.domain}`,
  password: 'pw',
  log,
};

// ---- running ----------------------------------------------------------------------------------------

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => res(port));
    });
  });
}

interface Column {
  key: string;
  label: string;
  version: string;
  cells: Cells;
}

const quietLog: string[] = [];

// Ctrl-C / kill: stop the target that is running (it runs in its own process group) before leaving.
let current: Target | null = null;
let currentDir = '';
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    log(`${sig}: stopping ${current?.name ?? 'nothing'} and leaving`);
    const t = setTimeout(() => process.exit(130), 15_000);
    void (current?.stop() ?? Promise.resolve()).finally(() => {
      clearTimeout(t);
      if (currentDir) rmSync(currentDir, { recursive: true, force: true });
      process.exit(130);
    });
  });
}

/** Starts a fresh target, runs one workload (again if the window was noisy), stops the target. */
async function runOne(col: Column, factory: TargetFactory, w: Workload): Promise<void> {
  let best: { cells: Cells; noise: number } | null = null;
  for (let attempt = 0; attempt <= retries; attempt++) {
    const quiet = await waitQuiet({ maxLoad: Number(opt['max-load']), maxBusy: Number(opt['max-busy']), waitSeconds: Number(opt['wait-load']), log });
    quietLog.push(`${col.key} ${w.id}${attempt ? ` (run ${attempt + 1})` : ''}: ${quiet}`);
    const dir = mkdtempSync(join(os.tmpdir(), `bench-${col.key}-${w.id}-`));
    currentDir = dir;
    const t0 = Date.now();
    let t: Target | null = null;
    try {
      const port = await freePort();
      t = await factory({ dir, port, domain: ctx.domain, ...w.options(ctx) });
      current = t;
      col.label = t.name;
      col.version = t.version;
      log(`  ${w.id} on ${t.name} (port ${t.port}, server pids ${t.serverPids().join(',')}${t.muxPids().length ? `, mux pids ${t.muxPids().join(',')}` : ''}) — ${quiet}`);
      const r = await w.run(t, ctx);
      if (!best || r.noise < best.noise) best = r;
    } catch (e) {
      const msg = ((e as Error).message ?? String(e)).split('\n')[0]?.slice(0, 160) ?? '';
      log(`  ${w.id} on ${col.key} FAILED: ${(e as Error).stack ?? e}`);
      best = { cells: Object.fromEntries(w.rows.map(([k], i) => [k, i === 0 ? `failed: ${msg.replaceAll('|', '\\|')}` : '–'])), noise: 0 };
      break;
    } finally {
      if (t) await t.stop().catch((e) => log(`  stopping ${t?.name} failed: ${e}`));
      current = null;
      rmSync(dir, { recursive: true, force: true });
      log(`  ${w.id} on ${col.key}: ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    }
    if (best.noise <= 0.1) break;
    if (attempt < retries) log(`  ${w.id}: other processes used ${(best.noise * 100).toFixed(0)}% of the machine during the window; running it again`);
  }
  Object.assign(col.cells, best?.cells ?? {});
}

// ---- reporting ----------------------------------------------------------------------------------------

function table(cols: Column[], sink: Column | null): string {
  const all = sink ? [...cols, sink] : cols;
  const esc = (s: string) => s.replaceAll('|', '\\|');
  const out = [`| metric | ${all.map((c) => esc(c.label)).join(' | ')} |`, `|---|${all.map(() => '---:').join('|')}|`];
  for (const w of workloads) {
    out.push(`| **${esc(w.title(ctx))}** |${all.map(() => ' ').join('|')}|`);
    for (const [k, label] of w.rows) {
      out.push(`| ${esc(label)} | ${all.map((c) => esc(c.cells[k] ?? (c === sink ? ' ' : '–'))).join(' | ')} |`);
    }
  }
  return out.join('\n');
}

function gitRev(): string {
  const r = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : 'unknown';
}

function updateReadme(block: string): void {
  const file = join(ROOT, 'README.md');
  const text = readFileSync(file, 'utf8');
  const start = '<!-- bench:start -->';
  const end = '<!-- bench:end -->';
  const inner = `${start}\n${block}\n${end}`;
  let next: string;
  const a = text.indexOf(start);
  const b = text.indexOf(end);
  if (a >= 0 && b > a) next = text.slice(0, a) + inner + text.slice(b + end.length);
  else {
    const h = /^## Performance[^\n]*\n/m.exec(text);
    if (!h) {
      log('README.md has no "## Performance" section; not updated');
      return;
    }
    const at = h.index + h[0].length;
    next = `${text.slice(0, at)}\n${inner}\n${text.slice(at)}`;
  }
  writeFileSync(file, next);
  log('README.md performance table updated');
}

// ---- main ----------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const started = new Date();
  const tStart = Date.now();
  const load0 = loadAvg();
  log(`bench: targets ${targetNames.join(', ')}; workloads ${workloads.map((w) => w.id).join(', ')}; scale ${scale}, ${seconds} s windows; ${workers} worker(s)${pin ? `, pinned to CPU ${pin}` : ''}`);

  let sink: Column | null = null;
  if (!opt['no-sink'] && workloads.some((w) => w.id === 'W3')) {
    log('--- no-op sink (generator alone)');
    sink = { key: 'sink', label: 'no-op sink (generator alone)', version: '', cells: {} };
    await runOne(sink, startSink, SINK);
  }

  const cols: Column[] = [];
  for (const name of targetNames) {
    const col: Column = { key: name, label: name, version: '', cells: {} };
    cols.push(col);
    log(`--- ${name}`);
    const factory = FACTORIES[name];
    for (const w of workloads) await runOne(col, factory, w);
  }

  const md = table(cols, sink);
  const elapsed = (Date.now() - tStart) / 1000;
  const date = started.toISOString().slice(0, 10);
  const cmd = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
  const versions = cols.map((c) => `  - ${c.label}: ${c.version || '–'}`).join('\n');
  const s = sizes;
  const about = [
    `- date: ${started.toISOString()}; whole run ${Math.round(elapsed / 60)} min (${Math.round(elapsed)} s); Parley at ${gitRev()}`,
    `- machine: ${machineLine()}`,
    `- command: \`${cmd}\``,
    `- versions:\n${versions}`,
    `- generator: ${workers} worker process(es) on raw sockets (bench/load/), ${pin ? `pinned with taskset to CPU ${pin}` : `not pinned (allowed CPUs ${allowedCpus()})`}; targets on all CPUs; every target started fresh for every workload on a loopback port`,
    `- scale ${scale}: W1 ${s.w1Users} sessions; W2 ${s.w2Logins} logins; W3 ${s.w3Users} users / ${s.w3Senders} senders × window ${s.w3Window}; W4 ${s.w4Users} users / ${s.w4Rate} msgs/s; W5 ${s.w5Users} users, rosters of ${s.w5Roster}, ${s.w5Senders} senders × window ${s.w5Window}; W6 ${s.w6Rooms} × ${s.w6Occupants}, ${s.w6SendersPerRoom} senders/room × window ${s.w6Window}; W7 ${s.w7Logins} logins, ${s.w7Users} users / ${s.w7Senders} senders; windows ${seconds} s after ${warmup} s warm-up`,
    `- load average ${load0.toFixed(2)} at the start, ${loadAvg().toFixed(2)} at the end`,
  ].join('\n');
  const notes = [
    'Notes: latency is from the send stamp in the body to receipt, both taken by the generator on one clock. Lost counts every expected',
    'delivery (per stanza id: 1 per chat message, one per roster contact per presence change, one per occupant per groupchat message) that',
    'did not arrive within the drain time after the window. CPU is utime+stime from /proc/<pid>/stat over the measured window; CPU µs per',
    'stanza divides it by the stanzas delivered in the window. "Generator CPU" near 1.0 core means the generator, not the server, was the',
    'limit (compare with the no-op sink column). Memory per session: VmRSS after the logins (2 s idle) minus before, ÷ sessions.',
  ].join('\n');
  console.log(md);

  const file = resolve(opt.out ?? join(ROOT, 'bench/results', `compare-${date}${scale !== 1 ? `-scale${scale}` : ''}.md`));
  mkdirSync(resolve(file, '..'), { recursive: true });
  writeFileSync(
    file,
    [`# Parley, Prosody and ejabberd side by side — ${date}`, '', about, '', md, '', notes, '', '<details><summary>quiet-machine checks</summary>', '', ...quietLog.map((q) => `- ${q}`), '', '</details>', ''].join('\n'),
  );
  log(`results written to ${relative(process.cwd(), file)} (${Math.round(elapsed)} s)`);

  if (!opt['no-readme']) {
    const block = [
      `Side by side (issue 4), \`${cmd}\` on ${date}: ${machineLine()}; generator ${pin ? 'pinned to one CPU' : 'not pinned'}, scale ${scale}, ${seconds} s windows. Versions: ${cols.map((c) => `${c.label} — ${c.version || '–'}`).join('; ')}. Details in \`${relative(ROOT, file)}\`.`,
      '',
      md,
    ].join('\n');
    updateReadme(block);
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
