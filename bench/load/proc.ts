// /proc sampling, quiet-machine checks and CPU pinning, shared by bench/c2s.ts and bench/run.ts.
// Linux only: CPU time is utime+stime of all threads of a process (/proc/<pid>/stat, in USER_HZ
// ticks), memory is VmRSS (/proc/<pid>/status), machine busy time comes from /proc/stat.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';

export const CLK = 100; // USER_HZ
export const NCPU = os.cpus().length;

export interface ProcSample {
  cpu: number; // seconds, utime+stime of all threads
  rss: number; // bytes
  syscw: number;
  syscr: number;
}

export function procSample(pid: number): ProcSample {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cpu = (Number(f[11]) + Number(f[12])) / CLK;
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) * 1024;
    let syscw = 0;
    let syscr = 0;
    try {
      const io = readFileSync(`/proc/${pid}/io`, 'utf8');
      syscw = Number(/syscw:\s+(\d+)/.exec(io)?.[1] ?? 0);
      syscr = Number(/syscr:\s+(\d+)/.exec(io)?.[1] ?? 0);
    } catch {
      /* /proc/<pid>/io may be unreadable */
    }
    return { cpu, rss, syscw, syscr };
  } catch {
    return { cpu: 0, rss: 0, syscw: 0, syscr: 0 };
  }
}

/** CPU seconds (utime+stime) of one process, 0 if it is gone. */
export function procCpu(pid: number): number {
  return procSample(pid).cpu;
}

export function sumCpu(pids: number[]): number {
  let s = 0;
  for (const p of pids) s += procSample(p).cpu;
  return s;
}

/** Busy CPU seconds of the whole machine (all cores) from /proc/stat. */
export function machineBusy(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] as string;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal guest guest_nice (guest is included in user)
  const busy = (v[0] ?? 0) + (v[1] ?? 0) + (v[2] ?? 0) + (v[5] ?? 0) + (v[6] ?? 0) + (v[7] ?? 0);
  return busy / CLK;
}

export function loadAvg(): number {
  return Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
}

export function ownCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function pct(sorted: Float64Array, p: number): number {
  if (!sorted.length) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// ---- pinning ------------------------------------------------------------------------------------

export function hasTaskset(): boolean {
  return spawnSync('taskset', ['-V'], { stdio: 'ignore' }).status === 0;
}

/** Sets the CPU affinity of every thread of `pid` (taskset -a -p -c). False if that failed. */
export function setAffinity(pid: number, cpus: string): boolean {
  return spawnSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' }).status === 0;
}

/** The CPUs this process may run on (Cpus_allowed_list). */
export function allowedCpus(pid: number | 'self' = 'self'): string {
  try {
    return /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? '?';
  } catch {
    return '?';
  }
}

// ---- quiet machine --------------------------------------------------------------------------------

/**
 * Busy cores of the machine over `ms`, not counting the processes in `exclude` (the target under
 * test, which may still be settling). 0 = idle, NCPU = every core busy.
 */
export async function busyCores(ms: number, exclude: number[] = []): Promise<number> {
  const m0 = machineBusy();
  const e0 = sumCpu(exclude);
  const t0 = performance.now();
  await sleep(ms);
  const m1 = machineBusy();
  const e1 = sumCpu(exclude);
  return Math.max(0, m1 - m0 - (e1 - e0)) / ((performance.now() - t0) / 1000);
}

export interface QuietOptions {
  /** Wait until the 1-minute load average is at most this ... */
  maxLoad: number;
  /** ... or until the machine, minus `exclude`, was at most this many cores busy over 1 s. */
  maxBusy: number;
  /** Give up after this many seconds and run anyway (saying so). */
  waitSeconds: number;
  exclude?: number[];
  log?: (s: string) => void;
}

/**
 * Waits for a quiet machine. The 1-minute load average lags (our own previous workload keeps it
 * up for a minute), so a machine that is idle right now (measured over 1 s from /proc/stat) also
 * counts as quiet. Returns a line for the results file.
 */
export async function waitQuiet(o: QuietOptions): Promise<string> {
  const deadline = Date.now() + o.waitSeconds * 1000;
  for (let first = true; ; first = false) {
    const l = loadAvg();
    const busy = await busyCores(1000, o.exclude);
    const what = `load average ${l.toFixed(2)}, ${busy.toFixed(2)} cores busy`;
    if (l <= o.maxLoad || busy <= o.maxBusy) return first ? what : `${what} (after waiting)`;
    if (Date.now() > deadline) return `${what} (waited ${o.waitSeconds} s for a quiet machine; ran anyway)`;
    o.log?.(`machine busy (${what}); waiting`);
    await sleep(3000);
  }
}

// ---- description ------------------------------------------------------------------------------------

export function machineLine(): string {
  let model = os.cpus()[0]?.model ?? 'unknown';
  try {
    model = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? model;
  } catch {
    /* not Linux */
  }
  let distro = '';
  try {
    distro = /PRETTY_NAME="?([^"\n]*)/.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? '';
  } catch {
    /* none */
  }
  return `${NCPU} CPUs (nproc), ${model}, ${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB RAM, ${distro ? `${distro}, ` : ''}${os.type()} ${os.release()}, Node ${process.version}`;
}
