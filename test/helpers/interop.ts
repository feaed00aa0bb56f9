// Driving real third-party XMPP clients against the real server (test/interop, test/e2e): finding
// their binaries, waiting with a clear failure, tmux for terminal clients, child processes that
// speak a line protocol, the server's JSON log, a `parley start` + standalone `parley mux` pair
// so that one server is reached both directly and through a multiplexor, and a TCP relay that can
// cut live connections to make clients resume their streams (XEP-0198).
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import type { Element } from 'ltx';
import { freePort } from './browser.js';
import { connect, xml, type TestClient } from './client.js';
import { AccountService } from '../../src/auth/index.js';
import { openConfiguredStorage } from '../../src/cli/app.js';
import { loadConfig } from '../../src/core/config.js';
import { builtinModules } from '../../src/modules/index.js';
import { PARLEY_BIN, startServerProcess, waitExit, type ServerProcess } from './process.js';

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Absolute path of `name` on PATH (or the usual Debian locations); throws a clear error naming the package if absent. */
export function requireBinary(name: string, pkg: string): string {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/bin', '/usr/local/bin', '/usr/sbin'];
  for (const d of dirs) {
    if (d && existsSync(join(d, name))) return join(d, name);
  }
  throw new Error(
    `${name} is not installed (Debian package '${pkg}'): run \`apt-get install -y ${pkg}\` as root, or \`npm test\`, whose scripts/test.sh installs it`,
  );
}

/** Debian's Python (not a pyenv or venv one), which sees the python3-* packages. */
export const SYSTEM_PYTHON = '/usr/bin/python3';

/** Throws a clear error naming the Debian package when Debian's Python cannot import `module`. */
export async function requirePythonModule(module: string, pkg: string): Promise<string> {
  if (!existsSync(SYSTEM_PYTHON)) throw new Error(`${SYSTEM_PYTHON} is missing (Debian package 'python3')`);
  const r = await run(SYSTEM_PYTHON, ['-c', `import ${module}; print(getattr(${module}, '__version__', ''))`], { timeoutMs: 20_000 });
  if (r.code !== 0) {
    throw new Error(`Python module ${module} is not installed (Debian package '${pkg}'): run \`apt-get install -y ${pkg}\` as root, or \`npm test\`\n${r.stderr}`);
  }
  return r.stdout.trim();
}

/** Polls `probe` until it returns a truthy value; on timeout throws with `what` and the state described. */
export async function waitFor<T>(what: string, probe: () => T | undefined | null | false, timeoutMs: number, describeState: () => string): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${describeState()}`);
    await sleep(50);
  }
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end (killed after timeoutMs); never rejects for a non-zero exit. */
export function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number; cwd?: string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      stderr += `\n[killed after ${opts.timeoutMs ?? 20_000} ms]`;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 20_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** A temp directory removed by the returned function. */
export function tempDir(prefix: string): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

// ---- long-running client processes that print JSON lines ----------------------------------------

/**
 * A client process (a small script around a client library) that prints one JSON object per
 * line on stdout for what happens ({"event": "online", ...}) and reads commands on stdin.
 */
export class JsonLinesProcess {
  stdout = '';
  stderr = '';
  exited = false;
  exitCode: number | null = null;
  readonly events: Record<string, unknown>[] = [];
  /** More state for failure messages (the server's log, say). */
  context: () => string = () => '';
  private taken = new Set<Record<string, unknown>>();

  constructor(
    readonly label: string,
    readonly child: ChildProcess,
  ) {
    child.stdout?.on('data', (d: Buffer) => {
      this.stdout += d.toString();
      const lines = this.stdout.split('\n');
      this.stdout = lines.pop() ?? '';
      for (const line of lines) {
        this.stderr += `[stdout] ${line}\n`;
        if (!line.startsWith('{')) continue;
        try {
          this.events.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          /* not ours */
        }
      }
    });
    child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    child.on('exit', (code) => {
      this.exited = true;
      this.exitCode = code;
    });
  }

  static spawn(label: string, cmd: string, args: string[], env?: NodeJS.ProcessEnv): JsonLinesProcess {
    return new JsonLinesProcess(label, spawn(cmd, args, { env: env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] }));
  }

  describe(): string {
    return `${this.label} (${this.exited ? `exited ${this.exitCode}` : 'running'}) output:\n${this.stderr.slice(-12_000)}${this.stdout}\n${this.context()}`;
  }

  /** The next not yet taken event matching `pred` (it may have arrived already). */
  async event(what: string, pred: (e: Record<string, unknown>) => boolean, timeoutMs = 15_000): Promise<Record<string, unknown>> {
    const e = await waitFor(
      `${what} from ${this.label}`,
      () => {
        const found = this.events.find((ev) => !this.taken.has(ev) && pred(ev));
        if (found) return found;
        if (this.exited) throw new Error(`${this.label} exited (${this.exitCode}) before ${what}\n${this.describe()}`);
        return undefined;
      },
      timeoutMs,
      () => this.describe(),
    );
    this.taken.add(e);
    return e;
  }

  command(obj: Record<string, unknown>): void {
    this.child.stdin?.write(`${JSON.stringify(obj)}\n`);
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await waitExit(this.child);
    clearTimeout(t);
  }
}

// ---- terminal clients in tmux ---------------------------------------------------------------------

/** One terminal program in its own tmux server (own socket), read through capture-pane. */
export class TmuxSession {
  private lastScreen = '';
  readonly tmux: string;

  constructor(
    readonly socket: string,
    readonly name: string,
    /** Extra state for failure messages (a client's debug log, say). */
    readonly extra: () => string = () => '',
  ) {
    this.tmux = requireBinary('tmux', 'tmux');
  }

  private cmd(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      execFile(this.tmux, ['-f', '/dev/null', '-S', this.socket, ...args], { timeout: 5000 }, (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code as number) : 1) : 0;
        resolve({ code, stdout, stderr });
      });
    });
  }

  /** Starts `argv` (with `env` set through env(1)) in a detached 220x60 session. */
  async start(argv: string[], env: Record<string, string> = {}): Promise<void> {
    const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    const r = await this.cmd(['new-session', '-d', '-s', this.name, '-x', '220', '-y', '60', 'env', ...envArgs, ...argv]);
    if (r.code !== 0) throw new Error(`tmux new-session failed: ${r.stderr}`);
    // Keep the pane after the program exits, so that its last words can be read.
    await this.cmd(['set-option', '-t', this.name, 'remain-on-exit', 'on']);
  }

  /** Types `line` literally, then Enter. */
  async keys(line: string): Promise<void> {
    const a = await this.cmd(['send-keys', '-t', this.name, '-l', line]);
    const b = await this.cmd(['send-keys', '-t', this.name, 'Enter']);
    if (a.code !== 0 || b.code !== 0) throw new Error(`tmux send-keys to ${this.name} failed: ${a.stderr}${b.stderr}\n${this.describe()}`);
  }

  /** Sends tmux key names (Enter, Escape, C-x, Tab, ...). */
  async key(...names: string[]): Promise<void> {
    const r = await this.cmd(['send-keys', '-t', this.name, ...names]);
    if (r.code !== 0) throw new Error(`tmux send-keys ${names.join(' ')} to ${this.name} failed: ${r.stderr}`);
  }

  async screen(): Promise<string> {
    const r = await this.cmd(['capture-pane', '-p', '-J', '-S', '-300', '-t', this.name]);
    if (r.code === 0) this.lastScreen = r.stdout;
    return this.lastScreen;
  }

  describe(): string {
    const lines = this.lastScreen.replace(/\s+\n/g, '\n').trimEnd().split('\n');
    return `${this.name} screen (last 40 lines):\n${lines.slice(-40).join('\n')}\n${this.extra()}`;
  }

  async waitScreen(re: RegExp, timeoutMs = 15_000, what?: string): Promise<string> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.screen();
      const m = re.exec(s);
      if (m) return m[0];
      if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what ?? re} on the ${this.name} screen\n${this.describe()}`);
      await sleep(100);
    }
  }

  /** The program is still running (the pane is kept after it exits: remain-on-exit). */
  async running(): Promise<boolean> {
    const r = await this.cmd(['display-message', '-p', '-t', this.name, '#{pane_dead}']);
    return r.code === 0 && r.stdout.trim() === '0';
  }

  async waitExit(timeoutMs = 10_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (await this.running()) {
      if (Date.now() > end) throw new Error(`${this.name} did not exit\n${this.describe()}`);
      await sleep(100);
    }
  }

  async kill(): Promise<void> {
    await this.cmd(['kill-server']);
  }
}

// ---- the server's log ------------------------------------------------------------------------------

export interface LogRecord {
  level: number;
  msg: string;
  [k: string]: unknown;
}

export function parseLog(text: string): LogRecord[] {
  const out: LogRecord[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as LogRecord);
    } catch {
      /* a line still being written */
    }
  }
  return out;
}

export function serverRecords(srv: ServerProcess): LogRecord[] {
  return parseLog(srv.output());
}

/** The server-side session id of a bound full JID (from the "resource bound" log record). */
export function sessionOf(srv: ServerProcess, jid: string): string | undefined {
  return serverRecords(srv).find((r) => r.msg === 'resource bound' && r.jid === jid)?.session as string | undefined;
}

export async function waitSessionClosed(srv: ServerProcess, jid: string): Promise<void> {
  const id = await waitFor(`the server session of ${jid}`, () => sessionOf(srv, jid), 5000, () => srv.output());
  await waitFor(`the server to close the session of ${jid}`, () => serverRecords(srv).some((r) => r.session === id && r.msg === 'session closed'), 5000, () => srv.output());
}

// ---- one server, reached directly and through a multiplexor -----------------------------------------

export type Path = 'direct' | 'mux';
export type TlsMode = 'starttls' | 'directtls';
export const PATHS: readonly Path[] = ['direct', 'mux'];
export const TLS_MODES: readonly TlsMode[] = ['starttls', 'directtls'];
/** Every (path, TLS mode) pair: the interop matrix of one client. */
export const COMBOS: readonly [Path, TlsMode][] = PATHS.flatMap((path) => TLS_MODES.map((mode) => [path, mode] as [Path, TlsMode]));

/** The accounts of a file: the counterpart `peer`, and `<prefix>-<path>-<mode>` for every combination and prefix. */
export function comboUsers(...prefixes: string[]): Record<string, string> {
  const users: Record<string, string> = { peer: 'peer-Secret-0' };
  for (const prefix of prefixes) for (const [path, mode] of COMBOS) users[`${prefix}-${path}-${mode}`] = `pw-${prefix}-${path}-${mode}-1`;
  return users;
}

/**
 * `parley start --no-mux` (clients reach the server process itself) with its mux link on a fixed
 * loopback port, and one standalone `parley mux` process with the same configuration and data
 * directory (so the same link secret and certificate): the same server reached both ways.
 */
export class InteropServer {
  readonly users = new Map<string, string>();
  private constructor(
    readonly dir: string,
    readonly config: string,
    readonly server: ServerProcess,
    readonly mux: { child: ChildProcess; output(): string },
    readonly ports: Record<Path, Record<TlsMode, number>>,
    readonly http: { port: number; tlsPort: number },
  ) {}

  /** Creates `users` (local part → password) in the data directory, then starts the server and the mux. */
  static async start(prefix: string, users: Record<string, string>, extraYaml = ''): Promise<InteropServer> {
    const dir = mkdtempSync(join(tmpdir(), `parley-interop-${prefix}-`));
    const config = join(dir, 'parley.yaml');
    const linkPort = await freePort();
    writeFileSync(
      config,
      [
        'hosts: [localhost]',
        `dataDir: ${join(dir, 'data')}`,
        'listen: { address: 127.0.0.1, c2s: 0, c2sDirectTls: 0 }',
        'http: { address: 127.0.0.1, plainAddress: 127.0.0.1, port: 0, tlsPort: 0 }',
        'tls: { required: true }',
        `mux: { count: 0, linkAddress: 127.0.0.1, linkPort: ${linkPort}, server: { host: 127.0.0.1, port: ${linkPort} } }`,
        'log: { level: info }',
        // Its own SOCKS5 proxy port, so that files run in parallel.
        'modules: { proxy65: { port: 0 } }',
        // Default login throttle: every client comes from 127.0.0.1, like an office behind NAT
        // (issue 15 §2), and none of them may be locked out by another's failed negotiation.
        extraYaml,
      ].join('\n'),
    );
    // The accounts are written before the server starts, as `parley user add` does (AccountService
    // on the configured storage), in this process: eight CLI processes at once cost seconds on 2 cores.
    // Like the CLI, with umask 077: the data directory stays private (the server warns otherwise).
    const cfg = loadConfig(config, { modules: builtinModules });
    const umask = process.umask(0o077);
    try {
      mkdirSync(cfg.dataDir, { recursive: true, mode: 0o700 });
      const storage = await openConfiguredStorage(cfg);
      const accounts = new AccountService(storage, cfg.auth.scramIterations, new Map());
      try {
        for (const [local, pw] of Object.entries(users)) await accounts.create(`${local}@localhost`, pw);
      } finally {
        await accounts.close();
        await storage.close();
      }
    } finally {
      process.umask(umask);
    }
    const server = await startServerProcess(config);
    let muxOut = '';
    const muxChild = spawn(PARLEY_BIN, ['--config', config, 'mux', '--name', `interop-${prefix}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    muxChild.stdout.on('data', (d) => (muxOut += d));
    muxChild.stderr.on('data', (d) => (muxOut += d));
    const stopBoth = async () => {
      for (const child of [muxChild, server.child]) {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGKILL');
          await waitExit(child);
        }
      }
    };
    try {
      const muxPorts = await waitFor(
        'the standalone parley mux to listen',
        () => {
          if (muxChild.exitCode !== null) throw new Error(`parley mux exited (${muxChild.exitCode}):\n${muxOut}`);
          const m = /client ports STARTTLS (\d+), direct TLS (\d+)/.exec(muxOut);
          return m ? { starttls: Number(m[1]), directtls: Number(m[2]) } : undefined;
        },
        20_000,
        () => `${muxOut}\n${server.output()}`,
      );
      const out = server.output();
      const http = Number(/web container \(HTTP\): \S+ port (\d+)/.exec(out)?.[1]);
      const https = Number(/web container \(HTTPS\): \S+ port (\d+)/.exec(out)?.[1]);
      const srv = new InteropServer(
        dir,
        config,
        server,
        { child: muxChild, output: () => muxOut },
        { direct: { starttls: server.c2sPort, directtls: server.directTlsPort }, mux: muxPorts },
        { port: http, tlsPort: https },
      );
      for (const [local, pw] of Object.entries(users)) srv.users.set(local, pw);
      // Clients are accepted once the mux's link to the server is up.
      await waitFor('the link of the standalone mux to the server', () => muxOut.includes('link to server up'), 10_000, () => srv.describe());
      return srv;
    } catch (e) {
      // Nothing is left running when the start fails.
      await stopBoth();
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
  }

  /** The server's trust anchor to give clients: the local CA when the server made one, else its self-signed certificate. */
  get trustAnchor(): string {
    for (const p of ['ca.pem', 'ca-cert.pem', 'ca.crt']) {
      const f = join(this.dir, 'data', 'tls', p);
      if (existsSync(f)) return f;
    }
    return this.certPath;
  }

  get certPath(): string {
    return join(this.dir, 'data', 'tls', 'cert.pem');
  }

  records(): LogRecord[] {
    return parseLog(this.server.output());
  }

  describe(): string {
    return `server log (tail):\n${this.server.output().slice(-8000)}\nmux log (tail):\n${this.mux.output().slice(-3000)}`;
  }

  /** The SASL mechanism of the newest successful login of `bare`. */
  async mechanismOf(bare: string): Promise<string> {
    const rec = await waitFor(`the server's "authenticated" record for ${bare}`, () => this.records().filter((r) => r.msg === 'authenticated' && r.user === bare).pop(), 5000, () => this.describe());
    return String(rec.mechanism);
  }

  /** Records at warning level or above (pino level >= 40). */
  problems(): LogRecord[] {
    return this.records().filter((r) => r.level >= 40);
  }

  /** Throws with the records when the server logged a warning or an error. */
  expectCleanLog(): void {
    const bad = this.problems();
    if (bad.length) throw new Error(`the server logged ${bad.length} warning(s)/error(s):\n${bad.map((r) => JSON.stringify(r)).join('\n')}`);
  }

  async stop(): Promise<void> {
    // INTEROP_REPORT=1: print which SASL mechanism each user's client chose (for docs/interop.md).
    if (process.env.INTEROP_REPORT) {
      const chosen = this.records()
        .filter((r) => r.msg === 'authenticated')
        .map((r) => `${String(r.user).replace(/@localhost$/, '')}=${String(r.mechanism)}`);
      process.stdout.write(`[interop ${this.dir}] ${[...new Set(chosen)].join(' ')}\n`);
      for (const r of this.problems()) process.stdout.write(`[interop ${this.dir}] server ${r.level >= 50 ? 'error' : 'warning'}: ${JSON.stringify(r)}\n`);
    }
    for (const child of [this.mux.child, this.server.child]) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await waitExit(child);
        clearTimeout(t);
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---- a relay that can cut live connections ---------------------------------------------------------

/**
 * A loopback TCP relay in front of a port. `cut()` destroys every connection relayed so far (both
 * sides, as a network failure would), so the client sees its stream drop without a closing
 * </stream:stream> and may resume it (XEP-0198) through the relay again.
 */
export class CutRelay {
  private pairs = new Set<[net.Socket, net.Socket]>();
  private server: net.Server;
  port = 0;
  accepted = 0;

  private constructor(readonly target: number) {
    this.server = net.createServer((client) => {
      this.accepted++;
      const upstream = net.connect(target, '127.0.0.1');
      const pair: [net.Socket, net.Socket] = [client, upstream];
      this.pairs.add(pair);
      client.pipe(upstream);
      upstream.pipe(client);
      const end = () => {
        client.destroy();
        upstream.destroy();
        this.pairs.delete(pair);
      };
      client.on('error', end);
      upstream.on('error', end);
      client.on('close', end);
      upstream.on('close', end);
    });
  }

  static async start(target: number): Promise<CutRelay> {
    const r = new CutRelay(target);
    await new Promise<void>((resolve) => r.server.listen(0, '127.0.0.1', resolve));
    r.port = (r.server.address() as net.AddressInfo).port;
    return r;
  }

  /** Live relayed connections. */
  get live(): number {
    return this.pairs.size;
  }

  cut(): number {
    const n = this.pairs.size;
    for (const [a, b] of this.pairs) {
      a.resetAndDestroy();
      b.resetAndDestroy();
    }
    this.pairs.clear();
    return n;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

// ---- the counterpart: @xmpp/client ---------------------------------------------------------------

/**
 * The other user of each conversation: @xmpp/client (test/helpers/client.ts) over STARTTLS to the
 * server process, available (initial presence sent) so that messages to its bare JID reach it.
 */
export async function connectPeer(srv: InteropServer, local: string): Promise<TestClient> {
  // The counterpart does not verify the test certificate (the client under test does).
  process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
  const password = srv.users.get(local);
  if (!password) throw new Error(`no such test user ${local}`);
  const c = await connect({ port: srv.ports.direct.starttls, username: local, password, resource: 'peer' });
  await c.send(xml('presence', {}, xml('priority', {}, '1')));
  return c;
}

export function chat(to: string, body: string): Element {
  return xml('message', { to, type: 'chat', id: `m-${Math.random().toString(36).slice(2)}` }, xml('body', {}, body));
}

/** Waits for a chat message with `body` at the peer; returns its from. */
export async function peerGot(peer: TestClient, body: string, describe: () => string, timeoutMs = 15_000): Promise<Element> {
  try {
    return await peer.waitFor((el) => el.is('message') && el.getChildText('body') === body, timeoutMs);
  } catch (e) {
    throw new Error(`the peer ${peer.jid} did not receive "${body}" within ${timeoutMs} ms\n${describe()}\n${(e as Error).message.slice(0, 3000)}`, { cause: e });
  }
}

/** A body unique to this run and step (with non-ASCII text, which every client must carry). */
export function uniqueBody(step: string): string {
  return `${step}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)} héllo ✓`;
}

// ---- go-sendxmpp (Go, go-xmpp library) -------------------------------------------------------------

export interface GoSendOpts {
  user: string;
  password: string;
  port: number;
  directTls: boolean;
  /** 'ca': SSL_CERT_FILE = the server's trust anchor; 'none': the system trust store only. */
  trust: 'ca' | 'none';
}

/** go-sendxmpp: `-d` prints the raw XML it receives on stderr. */
export class GoSendxmpp {
  readonly bin: string;
  constructor(
    readonly home: string,
    readonly cert: string,
  ) {
    this.bin = requireBinary('go-sendxmpp', 'go-sendxmpp');
  }

  private argsEnv(o: GoSendOpts): { args: string[]; env: NodeJS.ProcessEnv } {
    const args = ['-d', '--timeout', '10', '-u', o.user, '-p', o.password, '-j', `127.0.0.1:${o.port}`];
    if (o.directTls) args.push('-t');
    const env: NodeJS.ProcessEnv = { ...process.env, HOME: this.home };
    delete env.SSL_CERT_DIR;
    if (o.trust === 'ca') env.SSL_CERT_FILE = this.cert;
    else delete env.SSL_CERT_FILE;
    return { args, env };
  }

  /** Sends one message (stdin) and exits. */
  send(o: GoSendOpts, to: string, text: string): Promise<RunResult> {
    const { args, env } = this.argsEnv(o);
    return run(this.bin, [...args, to], { env, input: `${text}\n`, timeoutMs: 15_000 });
  }

  /** `--listen`: prints received messages on stdout ("<stamp> <from>: <body>"), raw XML on stderr (-d). */
  listen(o: GoSendOpts): GoListener {
    const { args, env } = this.argsEnv(o);
    const child = spawn(this.bin, [...args, '--listen'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    return new GoListener(child);
  }
}

export class GoListener {
  stdout = '';
  stderr = '';
  exited = false;
  constructor(readonly child: ChildProcess) {
    child.stdout?.on('data', (d) => (this.stdout += d));
    child.stderr?.on('data', (d) => (this.stderr += d));
    child.on('exit', () => (this.exited = true));
  }

  describe(): string {
    return `go-sendxmpp --listen stdout:\n${this.stdout}\nstderr (-d):\n${this.stderr}`;
  }

  /** Waits until the client has bound a resource and its initial presence came back; returns its full JID. */
  async online(bare: string): Promise<string> {
    return waitFor(
      `${bare} to be online in go-sendxmpp`,
      () => {
        if (this.exited) throw new Error(`go-sendxmpp exited early\n${this.describe()}`);
        const jid = new RegExp(`<jid>(${bare.replace(/[.]/g, '\\.')}/[^<]+)</jid>`).exec(this.stderr)?.[1];
        return jid && this.stderr.includes(`<presence from="${jid}" to="${jid}"`) ? jid : undefined;
      },
      10_000,
      () => this.describe(),
    );
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    this.child.kill('SIGTERM');
    await waitExit(this.child);
  }
}

// ---- profanity (libstrophe) in tmux -----------------------------------------------------------------

/** profanity with its own HOME, an account file (auto-connect) and a DEBUG log of every stanza. */
export class Profanity {
  readonly home: string;
  readonly jid: string;
  readonly tmux: TmuxSession;
  readonly bin: string;
  private run = 0;
  logPath = '';

  constructor(
    root: string,
    readonly local: string,
    password: string,
    port: number,
    tlsPolicy: 'trust' | 'legacy' | 'force',
    opts: { resource?: string } = {},
  ) {
    this.bin = requireBinary('profanity', 'profanity');
    this.home = join(root, `profanity-${local}`);
    this.jid = `${local}@localhost`;
    const data = join(this.home, 'data', 'profanity');
    const config = join(this.home, 'config', 'profanity');
    mkdirSync(data, { recursive: true });
    mkdirSync(config, { recursive: true });
    const accounts = join(data, 'accounts');
    writeFileSync(
      accounts,
      `[${this.jid}]\nenabled=true\njid=${this.jid}\nserver=127.0.0.1\nport=${port}\nresource=${opts.resource ?? 'prof'}\npassword=${password}\ntls.policy=${tlsPolicy}\n`,
    );
    chmodSync(accounts, 0o600);
    writeFileSync(join(config, 'profrc'), '[notifications]\nmessage=false\nroom=false\ninvite=false\nsub=false\n');
    this.tmux = new TmuxSession(join(root, `tmux-prof-${local}.sock`), `prof-${local}`, () => `debug log (tail):\n${this.log().slice(-4000)}`);
  }

  /** Starts profanity (auto-connect to the account) in a detached tmux session, with a DEBUG log. */
  async start(): Promise<void> {
    this.run++;
    this.logPath = join(this.home, `debug-${this.run}.log`);
    if (this.run > 1) await this.tmux.kill();
    await this.tmux.start([this.bin, '-a', this.jid, '-l', 'DEBUG', '-f', this.logPath], {
      HOME: this.home,
      XDG_DATA_HOME: join(this.home, 'data'),
      XDG_CONFIG_HOME: join(this.home, 'config'),
    });
  }

  keys(line: string): Promise<void> {
    return this.tmux.keys(line);
  }

  log(): string {
    return existsSync(this.logPath) ? readFileSync(this.logPath, 'utf8') : '';
  }

  describe(): string {
    return `profanity ${this.jid}: ${this.tmux.describe()}`;
  }

  waitScreen(re: RegExp, timeoutMs = 10_000): Promise<string> {
    return this.tmux.waitScreen(re, timeoutMs);
  }

  waitLog(re: RegExp, timeoutMs = 10_000): Promise<string> {
    return waitFor(`${re} in ${this.jid}'s profanity debug log`, () => re.exec(this.log())?.[0], timeoutMs, () => this.describe());
  }

  /** /quit, then waits for profanity to end. */
  async quit(): Promise<void> {
    await this.keys('/quit');
    await this.tmux.waitExit(10_000);
  }

  kill(): Promise<void> {
    return this.tmux.kill();
  }
}
