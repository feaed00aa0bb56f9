// The definition of done, proved with standard third-party XMPP clients from Debian's
// archive against the real `parley start` (TLS required; by default clients reach it through its
// embedded multiplexor, which terminates TLS): a new user adds accounts with the CLI, connects two
// standard clients, subscribes, chats, goes offline and gets the messages later.
//
//  - go-sendxmpp (Go, go-xmpp library): sends over STARTTLS and over direct TLS (XEP-0368),
//    trusting the generated certificate through SSL_CERT_FILE (real verification; a control run
//    without it must fail), and receives in `--listen` mode; `-d` prints the raw XML it receives.
//  - profanity (ncurses, libstrophe), driven through tmux send-keys/capture-pane: SCRAM login over
//    STARTTLS with `tls.policy=trust`, and over direct TLS (`tls.policy=legacy`) accepting the
//    self-signed certificate when asked (`/tls always`), mutual subscription with /sub, chat both
//    ways, and offline delivery with a <delay/>. Its DEBUG log holds every stanza it received.
//
// The packages are installed by scripts/test.sh (npm test) when missing; a missing binary fails.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, startServerProcess, waitExit, type ServerProcess } from '../helpers/process.js';
import { elementWith, sleep } from '../helpers/raw.js';

/** Absolute path of `name` on PATH (or the usual Debian locations); throws a clear error if absent. */
function requireBinary(name: string, pkg: string): string {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/bin', '/usr/local/bin'];
  for (const d of dirs) {
    if (d && existsSync(join(d, name))) return join(d, name);
  }
  throw new Error(
    `${name} is not installed (Debian package '${pkg}'): run \`apt-get install -y ${pkg}\` as root, or \`npm test\`, whose scripts/test.sh installs it`,
  );
}

async function waitFor<T>(what: string, probe: () => T | undefined | null | false, timeoutMs: number, describeState: () => string): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${describeState()}`);
    await sleep(50);
  }
}

// ---- the server ---------------------------------------------------------------------------------

interface LogRecord {
  level: number;
  msg: string;
  [k: string]: unknown;
}

function serverRecords(srv: ServerProcess): LogRecord[] {
  const out: LogRecord[] = [];
  for (const line of srv.output().split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as LogRecord);
    } catch {
      /* a line still being written */
    }
  }
  return out;
}

/** The server-side session id of a bound full JID (from the "resource bound" log record). */
function sessionOf(srv: ServerProcess, jid: string): string | undefined {
  return serverRecords(srv).find((r) => r.msg === 'resource bound' && r.jid === jid)?.session as string | undefined;
}

async function waitSessionClosed(srv: ServerProcess, jid: string): Promise<void> {
  const id = await waitFor(`the server session of ${jid}`, () => sessionOf(srv, jid), 5000, () => srv.output());
  await waitFor(`the server to close the session of ${jid}`, () => serverRecords(srv).some((r) => r.session === id && r.msg === 'session closed'), 5000, () => srv.output());
}

// ---- go-sendxmpp ----------------------------------------------------------------------------------

interface GoSendOpts {
  user: string;
  password: string;
  port: number;
  directTls: boolean;
  /** 'ca': SSL_CERT_FILE = the server certificate; 'none': system trust store only. */
  trust: 'ca' | 'none';
}

class GoSendxmpp {
  constructor(
    readonly bin: string,
    readonly home: string,
    readonly cert: string,
  ) {}

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
  send(o: GoSendOpts, to: string, text: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const { args, env } = this.argsEnv(o);
    return new Promise((resolve, reject) => {
      const child = spawn(this.bin, [...args, to], { env, stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      child.on('error', reject);
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr });
      });
      child.stdin.end(`${text}\n`);
    });
  }

  /** `--listen`: prints received messages on stdout ("<stamp> <from>: <body>"), raw XML on stderr (-d). */
  listen(o: GoSendOpts): GoListener {
    const { args, env } = this.argsEnv(o);
    const child = spawn(this.bin, [...args, '--listen'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    return new GoListener(child);
  }
}

class GoListener {
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

// ---- profanity in tmux ------------------------------------------------------------------------------

class Profanity {
  readonly home: string;
  readonly socket: string;
  readonly jid: string;
  private run = 0;
  logPath = '';

  constructor(
    readonly bin: string,
    readonly tmux: string,
    root: string,
    readonly local: string,
    password: string,
    port: number,
    tlsPolicy: 'trust' | 'legacy',
  ) {
    this.home = join(root, `profanity-${local}`);
    this.socket = join(root, `tmux-${local}.sock`);
    this.jid = `${local}@localhost`;
    const data = join(this.home, 'data', 'profanity');
    const config = join(this.home, 'config', 'profanity');
    mkdirSync(data, { recursive: true });
    mkdirSync(config, { recursive: true });
    const accounts = join(data, 'accounts');
    writeFileSync(
      accounts,
      `[${this.jid}]\nenabled=true\njid=${this.jid}\nserver=127.0.0.1\nport=${port}\nresource=prof\npassword=${password}\ntls.policy=${tlsPolicy}\n`,
    );
    chmodSync(accounts, 0o600);
    writeFileSync(join(config, 'profrc'), '[notifications]\nmessage=false\nroom=false\ninvite=false\nsub=false\n');
  }

  private tmuxCmd(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      execFile(this.tmux, ['-f', '/dev/null', '-S', this.socket, ...args], { timeout: 5000 }, (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code as number) : 1) : 0;
        resolve({ code, stdout, stderr });
      });
    });
  }

  /** Starts profanity (auto-connect to the account) in a detached tmux session, with a DEBUG log. */
  async start(): Promise<void> {
    this.run++;
    this.logPath = join(this.home, `debug-${this.run}.log`);
    const r = await this.tmuxCmd([
      'new-session', '-d', '-s', this.local, '-x', '220', '-y', '60',
      'env', `HOME=${this.home}`, `XDG_DATA_HOME=${join(this.home, 'data')}`, `XDG_CONFIG_HOME=${join(this.home, 'config')}`,
      this.bin, '-a', this.jid, '-l', 'DEBUG', '-f', this.logPath,
    ]);
    if (r.code !== 0) throw new Error(`tmux new-session failed: ${r.stderr}`);
  }

  async keys(line: string): Promise<void> {
    const a = await this.tmuxCmd(['send-keys', '-t', this.local, '-l', line]);
    const b = await this.tmuxCmd(['send-keys', '-t', this.local, 'Enter']);
    if (a.code !== 0 || b.code !== 0) throw new Error(`tmux send-keys to ${this.local} failed: ${a.stderr}${b.stderr}`);
  }

  private lastScreen = '';
  async screen(): Promise<string> {
    const r = await this.tmuxCmd(['capture-pane', '-p', '-J', '-S', '-300', '-t', this.local]);
    if (r.code === 0) this.lastScreen = r.stdout;
    return this.lastScreen;
  }

  log(): string {
    return existsSync(this.logPath) ? readFileSync(this.logPath, 'utf8') : '';
  }

  describe(): string {
    const log = this.log();
    return `profanity ${this.jid} screen:\n${this.lastScreen.replace(/\s+\n/g, '\n')}\ndebug log (tail):\n${log.slice(-4000)}`;
  }

  async waitScreen(re: RegExp, timeoutMs = 10_000): Promise<string> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.screen();
      const m = re.exec(s);
      if (m) return m[0];
      if (Date.now() > end) throw new Error(`timed out waiting for ${re} on ${this.jid}'s profanity screen\n${this.describe()}`);
      await sleep(100);
    }
  }

  async waitLog(re: RegExp, timeoutMs = 10_000): Promise<string> {
    return waitFor(`${re} in ${this.jid}'s profanity debug log`, () => re.exec(this.log())?.[0], timeoutMs, () => this.describe());
  }

  async running(): Promise<boolean> {
    return (await this.tmuxCmd(['has-session', '-t', this.local])).code === 0;
  }

  /** /quit, then waits for profanity (and so the tmux session) to end. */
  async quit(): Promise<void> {
    await this.keys('/quit');
    const end = Date.now() + 10_000;
    while (await this.running()) {
      if (Date.now() > end) throw new Error(`profanity ${this.jid} did not quit\n${this.describe()}`);
      await sleep(100);
    }
  }

  async kill(): Promise<void> {
    await this.tmuxCmd(['kill-server']);
  }
}

// ---- the tests --------------------------------------------------------------------------------------

describe('standard XMPP clients from Debian against parley start', () => {
  const dir = mkdtempSync(join(tmpdir(), 'parley-stdclients-'));
  const configPath = join(dir, 'parley.yaml');
  let srv: ServerProcess | null = null;
  let cert = '';
  const listeners: GoListener[] = [];
  const profs: Profanity[] = [];

  beforeAll(async () => {
    writeFileSync(
      configPath,
      `hosts: [localhost]\ndataDir: ${join(dir, 'data')}\nlisten:\n  address: 127.0.0.1\n  c2s: 0\n  c2sDirectTls: 0\nhttp:\n  address: 127.0.0.1\n  port: 0\n  tlsPort: 0\ntls:\n  required: true\nlog:\n  level: info\n`,
    );
    srv = await startServerProcess(configPath);
    cert = join(dir, 'data', 'tls', 'cert.pem');
    expect(existsSync(cert)).toBe(true);
    // A new user's first steps: accounts are created with the CLI while the server runs.
    for (const [u, pw] of [['alice', 'alice-Secret-1'], ['bob', 'bob-Secret-2'], ['carol', 'carol-Secret-3'], ['dave', 'dave-Secret-4']]) {
      const r = await runCli(['--config', configPath, 'user', 'add', `${u}@localhost`, '--password', pw as string]);
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe(`created ${u}@localhost\n`);
    }
  });

  afterAll(async () => {
    for (const l of listeners) await l.stop().catch(() => {});
    for (const p of profs) await p.kill().catch(() => {});
    if (srv && srv.child.exitCode === null) {
      srv.child.kill('SIGTERM');
      await waitExit(srv.child);
    }
    rmSync(dir, { recursive: true, force: true });
  });

  /** The server log holds no warning or error (pino level >= 40). */
  function expectCleanServerLog(): void {
    const s = srv as ServerProcess;
    const bad = serverRecords(s).filter((r) => r.level >= 40);
    expect(bad, `server log warnings/errors:\n${bad.map((r) => JSON.stringify(r)).join('\n')}`).toEqual([]);
  }

  it('go-sendxmpp: STARTTLS and direct TLS with the generated certificate, chat to an online user, offline delivery with delay', async () => {
    const bin = requireBinary('go-sendxmpp', 'go-sendxmpp');
    const s = srv as ServerProcess;
    const home = join(dir, 'go-home');
    mkdirSync(home, { recursive: true });
    const go = new GoSendxmpp(bin, home, cert);
    const alice = { user: 'alice@localhost', password: 'alice-Secret-1', trust: 'ca' as const };
    const bob = { user: 'bob@localhost', password: 'bob-Secret-2', trust: 'ca' as const };

    // Control: without being given the certificate, the client refuses the self-signed server,
    // so the successful runs below really verified it.
    const untrusted = await go.send({ ...alice, port: s.c2sPort, directTls: false, trust: 'none' }, 'bob@localhost', 'never sent');
    expect(untrusted.code).not.toBe(0);
    expect(untrusted.stderr).toMatch(/certificate signed by unknown authority/);

    // Bob listens over direct TLS; Alice sends over STARTTLS.
    const bobOnline = go.listen({ ...bob, port: s.directTlsPort, directTls: true });
    listeners.push(bobOnline);
    const bobJid = await bobOnline.online('bob@localhost');
    // A few separate logins: go-sendxmpp starts its TLS handshake the instant it reads <proceed/>,
    // which once raced the mux's switch to TLS (the handshake then stalled).
    for (let i = 0; i < 4; i++) {
      const live = `live-${i}-${Date.now().toString(36)} héllo ✓`;
      const sent = await go.send({ ...alice, port: s.c2sPort, directTls: false }, 'bob@localhost', live);
      expect(sent.code, sent.stderr).toBe(0);
      expect(sent.stderr).toContain("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
      expect(sent.stderr).toContain("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>");
      expect(sent.stderr).toMatch(/<jid>alice@localhost\/[^<]+<\/jid>/);
      const liveLine = await waitFor(
        'the live message at bob',
        () => new RegExp(`^(\\S+) alice@localhost: ${live}$`, 'm').exec(bobOnline.stdout),
        10_000,
        () => bobOnline.describe(),
      );
      expect(liveLine[1]).toMatch(/^\d{4}-\d\d-\d\dT/);
      const liveXml = elementWith('message', `<body>${live}</body>`).exec(bobOnline.stderr)?.[0] ?? '';
      expect(liveXml).toContain('from="alice@localhost/');
      expect(liveXml).not.toContain('urn:xmpp:delay'); // delivered live, not from storage
    }

    // Bob goes offline; Alice sends over direct TLS; Bob gets it at his next login, with a delay.
    await bobOnline.stop();
    await waitSessionClosed(s, bobJid);
    const later = `later-${Date.now().toString(36)}`;
    const sent2 = await go.send({ ...alice, port: s.directTlsPort, directTls: true }, 'bob@localhost', later);
    expect(sent2.code, sent2.stderr).toBe(0);
    expect(sent2.stderr).toMatch(/<jid>alice@localhost\/[^<]+<\/jid>/);
    expect(sent2.stderr).not.toContain('<proceed'); // TLS from the first byte, no STARTTLS

    const bobBack = go.listen({ ...bob, port: s.c2sPort, directTls: false });
    listeners.push(bobBack);
    await bobBack.online('bob@localhost');
    const laterLine = await waitFor(
      'the offline message at bob',
      () => new RegExp(`^(\\S+) alice@localhost: ${later}$`, 'm').exec(bobBack.stdout),
      10_000,
      () => bobBack.describe(),
    );
    const laterXml = elementWith('message', `<body>${later}</body>`).exec(bobBack.stderr)?.[0] ?? '';
    const stamp = /<delay xmlns="urn:xmpp:delay" from="localhost" stamp="([^"]+)"/.exec(laterXml)?.[1];
    expect(stamp, bobBack.describe()).toBeDefined();
    // go-sendxmpp prints the delay's stamp as the message time (sent while Bob was away).
    expect(Date.parse(laterLine[1] as string)).toBe(Date.parse(stamp as string));
    expect(bobBack.stdout).not.toContain('never sent');
    await bobBack.stop();

    // Server side: each login was authenticated over TLS, and nothing went wrong.
    const auths = serverRecords(s).filter((r) => r.msg === 'authenticated').map((r) => r.user);
    expect(auths.filter((u) => u === 'alice@localhost').length).toBe(5);
    expect(auths.filter((u) => u === 'bob@localhost').length).toBe(2);
    expectCleanServerLog();
  }, 30_000);

  it('profanity: SCRAM login over STARTTLS and direct TLS, mutual subscription, chat, offline delivery', async () => {
    const bin = requireBinary('profanity', 'profanity');
    const tmux = requireBinary('tmux', 'tmux');
    const s = srv as ServerProcess;
    // Carol: STARTTLS, the client's own "trust this server's certificate" policy.
    const carol = new Profanity(bin, tmux, dir, 'carol', 'carol-Secret-3', s.c2sPort, 'trust');
    // Dave: direct TLS (XEP-0368, profanity's "legacy" policy), accepting the certificate when asked.
    const dave = new Profanity(bin, tmux, dir, 'dave', 'dave-Secret-4', s.directTlsPort, 'legacy');
    profs.push(carol, dave);

    await carol.start();
    await carol.waitScreen(/carol@localhost\/prof logged in successfully, online/);
    await dave.start();
    await dave.waitScreen(/Use '\/tls always' to accept this certificate permanently/);
    await dave.keys('/tls always');
    await dave.waitScreen(/dave@localhost\/prof logged in successfully, online/);
    for (const p of [carol, dave]) {
      const mech = serverRecords(s).find((r) => r.msg === 'authenticated' && r.user === p.jid)?.mechanism;
      expect(mech, `${p.jid} SASL mechanism`).toMatch(/^SCRAM-SHA-/);
    }

    // Subscription both ways (RFC 6121 §3), each side approving the other's request.
    await carol.keys('/sub request dave@localhost');
    await carol.waitScreen(/Sent subscription request to dave@localhost/);
    await dave.waitScreen(/Received authorization request from carol@localhost/);
    await dave.keys('/sub allow carol@localhost');
    await carol.waitScreen(/Subscription received from dave@localhost/);
    await carol.waitScreen(/dave@localhost \(prof\) is online/);
    await dave.keys('/sub request carol@localhost');
    await carol.waitScreen(/Received authorization request from dave@localhost/);
    await carol.keys('/sub allow dave@localhost');
    await dave.waitScreen(/Subscription received from carol@localhost/);
    await dave.waitScreen(/carol@localhost \(prof\) is online/);
    await carol.keys('/sub show dave@localhost');
    await carol.waitScreen(/dave@localhost subscription status: both/);
    await dave.keys('/sub show carol@localhost');
    await dave.waitScreen(/carol@localhost subscription status: both/);
    await carol.waitLog(/RECV: <iq[^>]*type="set"[^>]*><query xmlns="jabber:iq:roster"[^>]*><item [^>]*jid="dave@localhost"[^>]*subscription="both"/);

    // Chat both ways while both are online.
    const hi = `hi-dave-${Date.now().toString(36)}`;
    await carol.keys(`/msg dave@localhost ${hi}`);
    const got = await dave.waitLog(elementWith('message', `<body>${hi}</body>`));
    expect(got).toContain('from="carol@localhost/prof"');
    expect(got).not.toContain('urn:xmpp:delay');
    const back = `hi-carol-${Date.now().toString(36)}`;
    await dave.keys(`/msg carol@localhost ${back}`);
    expect(await carol.waitLog(elementWith('message', `<body>${back}</body>`))).toContain('from="dave@localhost/prof"');

    // Dave quits; Carol sees him go offline and writes; Dave gets it with a delay when he returns
    // (the certificate was accepted permanently, so this login needs no prompt).
    await dave.quit();
    await waitSessionClosed(s, 'dave@localhost/prof');
    await carol.waitLog(/RECV: <presence[^>]*type="unavailable"[^>]*from="dave@localhost\/prof"|RECV: <presence[^>]*from="dave@localhost\/prof"[^>]*type="unavailable"/);
    const note = `while-you-were-away-${Date.now().toString(36)}`;
    await carol.keys(`/msg dave@localhost ${note}`);
    await carol.waitScreen(new RegExp(`me: ${note}`));
    // A session's stanzas are processed in order: once the server answers Carol's ping, the message
    // was stored.
    // (The reply is shown in the console window, not in the chat window on screen: read the log.)
    await carol.keys('/ping');
    const pingId = /id="([^"]+)"/.exec(await carol.waitLog(/SENT: <iq id="[^"]+" type="get"><ping xmlns="urn:xmpp:ping"\/>/))?.[1] as string;
    await carol.waitLog(new RegExp(`RECV: <iq id="${pingId}"[^>]*type="result"`));
    await dave.start();
    await dave.waitScreen(/dave@localhost\/prof logged in successfully, online/);
    const stored = await dave.waitLog(elementWith('message', `<body>${note}</body>`));
    expect(stored).toContain('from="carol@localhost/prof"');
    expect(stored).toMatch(/<delay xmlns="urn:xmpp:delay"[^>]*from="localhost"/);
    await dave.waitScreen(/<< chat message: carol@localhost\/prof/);

    await carol.quit();
    await dave.quit();
    expectCleanServerLog();
  }, 30_000);
});
