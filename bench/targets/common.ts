// Shared plumbing of the benchmark targets: SCRAM secrets (derived once per process and reused by
// every target), rosters, running a server as a child process (its own process group, an
// unprivileged user when we are root), killing its whole process tree, readiness (TCP accept and a
// real SASL PLAIN login) and installing Debian packages.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHmac, createHash, pbkdf2, randomBytes } from 'node:crypto';
import { chownSync, closeSync, existsSync, openSync, readdirSync, readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import type { Target, TargetOptions } from './types.js';

/** What the factories here return: a Target plus how long provisioning took and where the log is. */
export interface TargetInfo extends Target {
  /** Wall time of creating the accounts and rosters (ms), SCRAM derivation included. */
  provisionMs: number;
  logFile: string;
}

export const PASSWORD = 'pw';
/** PBKDF2 iterations for every server: Parley's default and ejabberd's fixed SCRAM count. */
export const ITERATIONS = 4096;

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---- SCRAM secrets ---------------------------------------------------------------------------------

export type Hash = 'SHA-1' | 'SHA-256';

export interface Secret {
  /** The salt as stored: 32 ASCII hex characters, used as the raw salt bytes. */
  salt: string;
  iterations: number;
  storedKey: Buffer;
  serverKey: Buffer;
}

const pbkdf2Async = promisify(pbkdf2);
const cache: Record<Hash, Map<string, Promise<Secret>>> = { 'SHA-1': new Map(), 'SHA-256': new Map() };

function derive(hash: Hash): Promise<Secret> {
  const alg = hash === 'SHA-1' ? 'sha1' : 'sha256';
  const salt = randomBytes(16).toString('hex');
  return pbkdf2Async(PASSWORD, salt, ITERATIONS, hash === 'SHA-1' ? 20 : 32, alg).then((salted) => {
    const clientKey = createHmac(alg, salted).update('Client Key').digest();
    return {
      salt,
      iterations: ITERATIONS,
      storedKey: createHash(alg).update(clientKey).digest(),
      serverKey: createHmac(alg, salted).update('Server Key').digest(),
    };
  });
}

/**
 * SCRAM secrets of password 'pw' for u0..u{n-1}, each user with its own salt. Derived once per
 * process (PBKDF2 on libuv's thread pool) and reused by every target started afterwards, so only the
 * first target of a run pays for the key derivation.
 */
export async function userSecrets(n: number, hash: Hash): Promise<Secret[]> {
  const m = cache[hash];
  const out: Promise<Secret>[] = [];
  for (let i = 0; i < n; i++) {
    const u = `u${i}`;
    let p = m.get(u);
    if (!p) {
      p = derive(hash);
      m.set(u, p);
    }
    out.push(p);
  }
  return Promise.all(out);
}

// ---- rosters -------------------------------------------------------------------------------------------

/**
 * The rosters to provision, as bare JID → contacts' bare JIDs. Accepts usernames ('u3') or bare
 * JIDs as keys and contacts, drops self-contacts and makes every pair mutual: if a lists b, b lists a.
 */
export function normalizeRosters(rosters: Map<string, string[]> | undefined, domain: string): Map<string, string[]> {
  const out = new Map<string, Set<string>>();
  if (!rosters) return new Map();
  const bare = (s: string) => (s.includes('@') ? s.toLowerCase() : `${s.toLowerCase()}@${domain}`);
  const add = (a: string, b: string) => {
    let s = out.get(a);
    if (!s) out.set(a, (s = new Set()));
    s.add(b);
  };
  for (const [user, contacts] of rosters) {
    const u = bare(user);
    for (const c of contacts) {
      const j = bare(c);
      if (j === u) continue;
      add(u, j);
      add(j, u);
    }
  }
  return new Map([...out].map(([k, v]) => [k, [...v]]));
}

// ---- users and privileges ------------------------------------------------------------------------------

export const isRoot = () => process.getuid?.() === 0;

export interface RunAs {
  uid: number;
  gid: number;
  user: string;
}

/** When we are root: the uid/gid of a system user to run a server as (it must exist); else null. */
export function runAsUser(user: string): RunAs | null {
  if (!isRoot()) return null;
  const id = (flag: string) => {
    const r = spawnSync('id', [flag, user], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`no system user ${user}: ${r.stderr.trim()}`);
    return Number(r.stdout.trim());
  };
  return { uid: id('-u'), gid: id('-g'), user };
}

/** chown -R to the server's user (no-op when not root). */
export function chownTree(path: string, as: RunAs | null): void {
  if (!as) return;
  chownSync(path, as.uid, as.gid);
  if (!statSync(path).isDirectory()) return;
  for (const e of readdirSync(path)) chownTree(join(path, e), as);
}

// ---- Debian packages -------------------------------------------------------------------------------

/** Whether dpkg has the package installed. */
function dpkgInstalled(pkg: string): boolean {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Status}', pkg], { encoding: 'utf8' });
  return r.status === 0 && /install ok installed/.test(r.stdout);
}

const stoppedServices = new Set<string>();

/**
 * Makes sure a Debian package's system service is neither running nor enabled: Debian starts it on
 * install, and it would hold 5222, 5269, 5280 and compete for the CPU. The targets never use it
 * (they run their own processes on other ports). Once per process and service; a running daemon is
 * stopped through the service manager, or by the pid in its pid file if that did not work.
 */
export function stopSystemService(service: string, pidFile: string): void {
  if (stoppedServices.has(service) || !isRoot()) return;
  stoppedServices.add(service);
  const q = { stdio: 'ignore' as const, timeout: 120_000 };
  const running = () => {
    const pid = readPid(pidFile);
    return pid !== null && alive(pid) ? pid : null;
  };
  const was = running();
  if (was) console.error(`stopping the system ${service} service (pid ${was}): the benchmark runs its own ${service} processes`);
  if (existsSync('/run/systemd/system')) {
    spawnSync('systemctl', ['stop', service], q);
    spawnSync('systemctl', ['disable', service], q);
  } else {
    if (was) spawnSync('service', [service, 'stop'], q);
    spawnSync('update-rc.d', [service, 'disable'], q);
  }
  const pid = running();
  if (pid) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      /* gone */
    }
  }
}

function readPid(file: string): number | null {
  try {
    const n = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

/**
 * Installs Debian packages that are missing: `apt-get install -y` when we are root (after an
 * `apt-get update` if the package is unknown), else a loud error. Then stops and disables the
 * system services the packages come with (Debian starts them on install).
 */
export function ensureDebianPackages(pkgs: { pkg: string; service: string; pidFile: string }[]): void {
  const missing = pkgs.filter((p) => !dpkgInstalled(p.pkg)).map((p) => p.pkg);
  if (missing.length) {
    if (!isRoot()) {
      throw new Error(`${missing.join(', ')} not installed and we are not root: run \`sudo apt-get install -y ${missing.join(' ')}\` first`);
    }
    console.error(`installing ${missing.join(', ')} with apt-get ...`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    const install = () => spawnSync('apt-get', ['install', '-y', ...missing], { encoding: 'utf8', env, timeout: 900_000 });
    let r = install();
    if (r.status !== 0 && /Unable to locate package|has no installation candidate/.test(r.stderr)) {
      spawnSync('apt-get', ['update'], { stdio: 'ignore', env, timeout: 600_000 });
      r = install();
    }
    if (r.status !== 0) throw new Error(`apt-get install -y ${missing.join(' ')} failed (${r.status}):\n${(r.stdout + r.stderr).slice(-3000)}`);
    const still = missing.filter((p) => !dpkgInstalled(p));
    if (still.length) throw new Error(`apt-get install succeeded but ${still.join(', ')} is still not installed`);
  }
  for (const p of pkgs) stopSystemService(p.service, p.pidFile);
}

// ---- processes ---------------------------------------------------------------------------------------

function statFields(pid: number): string[] | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** Start time of a process (clock ticks since boot): with the pid it identifies the process. */
function startTime(pid: number): string | null {
  return statFields(pid)?.[19] ?? null;
}

export function alive(pid: number): boolean {
  const f = statFields(pid);
  return f !== null && f[0] !== 'Z' && f[0] !== 'X';
}

/** The pid and all its descendants (from /proc/<pid>/stat ppid). */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const e of readdirSync('/proc')) {
    const pid = Number(e);
    if (!Number.isInteger(pid)) continue;
    const f = statFields(pid);
    if (!f) continue;
    const ppid = Number(f[1]);
    let l = children.get(ppid);
    if (!l) children.set(ppid, (l = []));
    l.push(pid);
  }
  const out: number[] = [];
  const walk = (p: number) => {
    out.push(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  if (alive(root)) walk(root);
  return out;
}

export function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

/** Whether something accepts TCP connections on 127.0.0.1:port. */
export function portOpen(port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(timeoutMs, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** Whether 127.0.0.1:port can be bound right now. */
export function portBindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** A free ephemeral TCP port on loopback. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export function tail(file: string, lines = 40): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return `(no ${file})`;
  }
}

/**
 * A server running as our child process: its own process group, stdout and stderr appended to a
 * log file, optionally as another user. stop() ends the whole process tree (SIGTERM, then SIGKILL
 * after a grace period), including descendants that left the group, and waits until the ports are
 * free again.
 */
export class ServerProcess {
  readonly child: ChildProcess;
  readonly logFile: string;
  private readonly known = new Map<number, string>(); // pid -> start time
  exitCode: number | null = null;
  exited = false;
  private readonly exitP: Promise<void>;

  constructor(
    readonly name: string,
    cmd: string,
    args: string[],
    o: { cwd: string; env?: NodeJS.ProcessEnv; as?: RunAs | null; logFile: string },
  ) {
    this.logFile = o.logFile;
    const fd = openSync(o.logFile, 'a');
    try {
      this.child = spawn(cmd, args, {
        cwd: o.cwd,
        env: o.env ?? process.env,
        detached: true, // own process group: stop() signals the group
        stdio: ['ignore', fd, fd],
        ...(o.as ? { uid: o.as.uid, gid: o.as.gid } : {}),
      });
    } finally {
      closeSync(fd);
    }
    this.exitP = new Promise((r) => {
      this.child.once('exit', (code, sig) => {
        this.exited = true;
        this.exitCode = code ?? (sig ? 128 : -1);
        r();
      });
      this.child.once('error', () => {
        this.exited = true;
        r();
      });
    });
    if (this.child.pid) this.remember();
  }

  get pid(): number {
    return this.child.pid as number;
  }

  /** Records the current process tree, so descendants that detach later are still stopped. */
  remember(): number[] {
    const tree = this.child.pid ? processTree(this.child.pid) : [];
    for (const p of tree) {
      const st = startTime(p);
      if (st) this.known.set(p, st);
    }
    return tree;
  }

  private liveKnown(): number[] {
    return [...this.known].filter(([p, st]) => alive(p) && startTime(p) === st).map(([p]) => p);
  }

  private signalAll(sig: NodeJS.Signals): void {
    // The group outlives its leader while any member is left (and its id is not reused meanwhile).
    if (this.child.pid) {
      try {
        process.kill(-this.child.pid, sig);
      } catch {
        /* group gone */
      }
    }
    for (const p of this.liveKnown()) {
      try {
        process.kill(p, sig);
      } catch {
        /* gone */
      }
    }
  }

  /**
   * Ends the process tree: SIGTERM to the main process (a graceful shutdown, which ends its own
   * helpers), then SIGTERM and, after a grace period, SIGKILL to whatever is left of the process
   * group and of the descendants seen. Resolves when nothing of it is left and the ports are free.
   */
  async stop(ports: number[] = [], graceMs = 8000): Promise<void> {
    this.remember();
    if (!this.exited) {
      try {
        process.kill(this.pid, 'SIGTERM');
      } catch {
        /* gone */
      }
      await Promise.race([this.exitP, sleep(graceMs)]);
    }
    const rest = async (ms: number) => {
      const t = Date.now() + ms;
      while (Date.now() < t && (!this.exited || this.liveKnown().length)) await sleep(50);
      return this.exited && !this.liveKnown().length;
    };
    if (!(await rest(0))) {
      this.signalAll('SIGTERM');
      if (!(await rest(2000))) {
        this.signalAll('SIGKILL');
        await rest(3000);
      }
    }
    const left = this.liveKnown();
    if (left.length) throw new Error(`${this.name}: processes still alive after SIGKILL: ${left.join(', ')}`);
    for (const port of ports) {
      const t = Date.now() + 10_000;
      while (!(await portBindable(port))) {
        if (Date.now() > t) throw new Error(`${this.name}: port ${port} still in use after stop`);
        await sleep(100);
      }
    }
  }
}

// ---- a minimal raw XMPP client (readiness and the smoke test) ---------------------------------------

const NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl';

export class RawXmpp {
  private sock: net.Socket;
  private buf = '';
  private waiters: { re: RegExp; resolve: (m: RegExpExecArray) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }[] = [];
  closed = false;
  jid = '';

  private constructor(
    sock: net.Socket,
    readonly domain: string,
  ) {
    this.sock = sock;
    this.attach(sock);
  }

  static connect(port: number, domain: string, timeoutMs = 5000): Promise<RawXmpp> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port });
      const t = setTimeout(() => {
        s.destroy();
        reject(new Error(`connect to port ${port} timed out`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(t);
        s.setNoDelay(true);
        resolve(new RawXmpp(s, domain));
      });
      s.once('error', (e) => {
        clearTimeout(t);
        reject(e);
      });
    });
  }

  private attach(sock: net.Socket): void {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.buf += d;
      this.check();
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      if (sock !== this.sock) return;
      this.closed = true;
      for (const w of this.waiters.splice(0)) {
        clearTimeout(w.timer);
        w.reject(new Error(`connection closed while waiting for ${w.re}; received: ${this.buf.slice(-400)}`));
      }
    });
  }

  private check(): void {
    for (let i = 0; i < this.waiters.length; i++) {
      const w = this.waiters[i] as (typeof this.waiters)[number];
      const m = w.re.exec(this.buf);
      if (!m) continue;
      this.buf = this.buf.slice(m.index + m[0].length);
      this.waiters.splice(i, 1);
      i = -1;
      clearTimeout(w.timer);
      w.resolve(m);
    }
  }

  /** Waits for the regular expression to match what was received (and consumes up to the match). */
  wait(re: RegExp, timeoutMs = 10_000): Promise<RegExpExecArray> {
    const m = re.exec(this.buf);
    if (m) {
      this.buf = this.buf.slice(m.index + m[0].length);
      return Promise.resolve(m);
    }
    if (this.closed) return Promise.reject(new Error(`connection closed; waiting for ${re}; received: ${this.buf.slice(-400)}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.timer !== timer);
        reject(new Error(`timed out waiting for ${re}; received: ${this.buf.slice(-600) || '(nothing)'}`));
      }, timeoutMs);
      this.waiters.push({ re, resolve, reject, timer });
    });
  }

  write(s: string): void {
    this.sock.write(s);
  }

  private header(): string {
    return `<?xml version='1.0'?><stream:stream to='${this.domain}' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`;
  }

  private async startTls(): Promise<void> {
    const raw = this.sock;
    raw.removeAllListeners('data');
    raw.removeAllListeners('close');
    this.buf = '';
    const t = tls.connect({ socket: raw, servername: this.domain, rejectUnauthorized: false });
    this.sock = t;
    this.attach(t);
    await new Promise<void>((resolve, reject) => {
      t.once('secureConnect', () => resolve());
      t.once('error', reject);
    });
  }

  /** Stream, (STARTTLS,) SASL PLAIN, stream restart, bind. Returns the stream features seen before SASL. */
  async login(user: string, password: string, o: { tls?: boolean; resource?: string; timeoutMs?: number } = {}): Promise<string> {
    const to = o.timeoutMs ?? 10_000;
    this.write(this.header());
    let features = (await this.wait(/<stream:features[\s\S]*?<\/stream:features>/, to))[0];
    if (o.tls) {
      if (!/<starttls/.test(features)) throw new Error(`no STARTTLS offered: ${features}`);
      this.write(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`);
      await this.wait(/<proceed[^>]*\/>|<proceed[^>]*>\s*<\/proceed>/, to);
      await this.startTls();
      this.write(this.header());
      features = (await this.wait(/<stream:features[\s\S]*?<\/stream:features>/, to))[0];
    }
    if (!/<mechanism>PLAIN<\/mechanism>/.test(features)) throw new Error(`PLAIN not offered${o.tls ? ' after STARTTLS' : ''}: ${features}`);
    this.write(`<auth xmlns='${NS_SASL}' mechanism='PLAIN'>${Buffer.from(`\0${user}\0${password}`).toString('base64')}</auth>`);
    const r = await this.wait(/<success[^>]*\/>|<success[^>]*>[^<]*<\/success>|<failure[\s\S]*?<\/failure>/, to);
    if (r[0].startsWith('<failure')) throw new Error(`login of ${user} failed: ${r[0]}`);
    this.write(this.header());
    const bound = (await this.wait(/<stream:features[\s\S]*?<\/stream:features>/, to))[0];
    this.write(`<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>${o.resource ?? 'bench'}</resource></bind></iq>`);
    this.jid = (await this.wait(/<jid>([^<]+)<\/jid>/, to))[1] as string;
    // RFC 3921 session establishment, where a server still advertises it.
    if (/urn:ietf:params:xml:ns:xmpp-session/.test(bound)) {
      this.write(`<iq type='set' id='sess1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>`);
      await this.wait(/<iq[^>]*id=['"]sess1['"][^>]*(\/>|>[\s\S]*?<\/iq>)/, to);
    }
    return features;
  }

  close(): void {
    if (!this.closed) {
      try {
        this.sock.write('</stream:stream>');
      } catch {
        /* closed */
      }
    }
    this.sock.destroy();
  }
}

/**
 * Readiness: the port accepts TCP connections and u0 logs in with SASL PLAIN. Fails early if the
 * server exits, and with the log tail after the deadline.
 */
export async function waitReady(srv: ServerProcess, opts: TargetOptions, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'the port never accepted a connection';
  while (Date.now() < deadline) {
    if (srv.exited) throw new Error(`${srv.name} exited (code ${srv.exitCode}) before it was ready; ${srv.logFile}:\n${tail(srv.logFile)}`);
    if (await portOpen(opts.port, 500)) {
      try {
        const c = await RawXmpp.connect(opts.port, opts.domain);
        try {
          await c.login('u0', PASSWORD, { timeoutMs: Math.max(1000, Math.min(10_000, deadline - Date.now())) });
          srv.remember();
          return;
        } finally {
          c.close();
        }
      } catch (err) {
        last = `login of u0 failed: ${(err as Error).message}`;
      }
    }
    await sleep(200);
  }
  throw new Error(`${srv.name} not ready after ${timeoutMs / 1000} s on port ${opts.port} (${last}); ${srv.logFile}:\n${tail(srv.logFile)}`);
}

/** A self-signed certificate (EC P-256, like Parley's generated one) for the domain and its subdomains. */
export function selfSignedCert(dir: string, domain: string): { cert: string; key: string } {
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  const r = spawnSync(
    'openssl',
    [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '30',
      '-subj', `/CN=${domain}`, '-addext', `subjectAltName=DNS:${domain},DNS:*.${domain}`,
      '-keyout', key, '-out', cert,
    ],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`openssl req failed: ${r.stderr}`);
  return { cert, key };
}
