// Runs the embedded multiplexors of `parley start`: N child processes, each with its own link to
// this server. The server process owns the client listening sockets (so N muxes can share the
// ports on Node 20, which has no SO_REUSEPORT) but never reads from them: each accepted socket is
// handed, unread, to a mux over IPC, round-robin. A mux that dies is restarted; only its own
// clients are affected.
import { fork, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import type net from 'node:net';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { ResolvedConfig } from '../core/config.js';
import type { Logger } from '../core/logger.js';

interface Child {
  name: string;
  proc: ChildProcess;
  ready: boolean;
}

export class MuxSupervisor {
  private readonly children: (Child | null)[] = [];
  private rr = 0;
  private stopping = false;
  private readyWaiters: (() => void)[] = [];

  constructor(
    private readonly opts: {
      config: Readonly<ResolvedConfig>;
      /** The server's link listener; `fingerprint`: TLS, pinned to the server's certificate (else a plaintext loopback link). */
      link: { host: string; port: number; fingerprint?: string };
      count: number;
      log: Logger;
    },
  ) {}

  /** Starts the muxes; resolves when every one has its link up. */
  async start(timeoutMs = 30_000): Promise<void> {
    for (let i = 0; i < this.opts.count; i++) this.spawn(i);
    const deadline = Date.now() + timeoutMs;
    while (this.readyCount() < this.opts.count) {
      if (Date.now() > deadline) throw new Error(`only ${this.readyCount()} of ${this.opts.count} muxes came up`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 200);
        this.readyWaiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  readyCount(): number {
    return this.children.filter((c) => c?.ready).length;
  }

  pids(): number[] {
    return this.children.flatMap((c) => (c?.proc.pid ? [c.proc.pid] : []));
  }

  private spawn(i: number): void {
    const name = `mux-${i + 1}`;
    const require = createRequire(import.meta.url);
    const loader = pathToFileURL(require.resolve('tsx')).href;
    const entry = fileURLToPath(new URL('./mux-child.ts', import.meta.url));
    const proc = fork(entry, [], {
      // PARLEY_NODE_ARGS (see bin/parley): extra node options, e.g. to profile the muxes too.
      execArgv: [...(process.env.PARLEY_NODE_ARGS ?? '').split(' ').filter(Boolean), '--import', loader],
      env: {
        ...process.env,
        PARLEY_MUX_CONFIG: JSON.stringify(this.opts.config),
        PARLEY_MUX_LINK: `${this.opts.link.host}:${this.opts.link.port}`,
        PARLEY_MUX_LINK_TLS: this.opts.link.fingerprint ?? '',
        PARLEY_MUX_NAME: name,
      },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const child: Child = { name, proc, ready: false };
    this.children[i] = child;
    proc.on('message', (m: unknown) => {
      const msg = m as { type?: string };
      if (msg?.type === 'parley:ready') {
        child.ready = true;
        const w = this.readyWaiters;
        this.readyWaiters = [];
        for (const fn of w) fn();
      } else if (msg?.type === 'parley:link-down') child.ready = false;
    });
    proc.on('error', (err) => this.opts.log.error({ err, mux: name }, 'mux process error'));
    proc.on('exit', (code, signal) => {
      child.ready = false;
      if (this.children[i] === child) this.children[i] = null;
      if (this.stopping) return;
      this.opts.log.warn({ mux: name, code, signal }, 'mux exited; restarting it');
      setTimeout(() => {
        if (!this.stopping && this.children[i] === null) this.spawn(i);
      }, 500).unref();
    });
  }

  /** Hands an accepted (paused, unread) client socket to the next ready mux. */
  dispatch(sock: net.Socket, directTls: boolean, localPort: number): void {
    const ready = this.children.filter((c): c is Child => !!c?.ready && c.proc.connected);
    if (!ready.length) {
      sock.destroy();
      return;
    }
    const child = ready[this.rr++ % ready.length] as Child;
    try {
      child.proc.send({ type: 'parley:conn', directTls, localPort }, sock, { keepOpen: false }, (err) => {
        if (err) sock.destroy();
      });
    } catch {
      sock.destroy();
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const exits = this.children.map((c) => {
      if (!c || c.proc.exitCode !== null || c.proc.signalCode !== null) return Promise.resolve();
      return new Promise<void>((r) => {
        const t = setTimeout(() => {
          c.proc.kill('SIGKILL');
          r();
        }, 5000);
        c.proc.once('exit', () => {
          clearTimeout(t);
          r();
        });
        c.proc.kill('SIGTERM');
      });
    });
    await Promise.all(exits);
  }
}
