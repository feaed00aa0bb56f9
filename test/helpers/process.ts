// Runs the real `parley` CLI (bin/parley) as child processes.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const PARLEY_BIN = resolve(import.meta.dirname, '../../bin/parley');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], opts: { cwd?: string; input?: string; env?: Record<string, string> } = {}): Promise<CliResult> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(PARLEY_BIN, args, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolveRun({ code, stdout, stderr }));
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
  });
}

/**
 * A temp directory with a parley.yaml whose listeners use random loopback ports (the SOCKS5 proxy
 * too: its default 7777 would collide between test files running at once).
 */
export function tempConfig(extra = ''): { dir: string; config: string } {
  const dir = mkdtempSync(join(tmpdir(), 'parley-e2e-'));
  const config = join(dir, 'parley.yaml');
  extra = /^modules:\n/m.test(extra) ? extra.replace(/^modules:\n/m, 'modules:\n  proxy65: { port: 0 }\n') : `${extra}modules:\n  proxy65: { port: 0 }\n`;
  writeFileSync(
    config,
    `hosts: [localhost]\ndataDir: ${join(dir, 'data')}\nlisten:\n  address: 127.0.0.1\n  c2s: 0\n  c2sDirectTls: 0\nhttp:\n  address: 127.0.0.1\n  port: 0\n  tlsPort: 0\nlog:\n  level: warn\n${extra}`,
  );
  return { dir, config };
}

export interface ServerProcess {
  child: ChildProcess;
  c2sPort: number;
  directTlsPort: number;
  output(): string;
}

/** Starts `parley start` and resolves once it printed its ports. */
export function startServerProcess(config: string | undefined, cwd?: string): Promise<ServerProcess> {
  return new Promise((resolveStart, reject) => {
    const child = spawn(PARLEY_BIN, config ? ['--config', config, 'start'] : ['start'], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const onData = (d: Buffer) => {
      out += d.toString();
      const starttls = /\(STARTTLS\): \S+ port (\d+)/.exec(out);
      const direct = /\(direct TLS\): \S+ port (\d+)/.exec(out);
      if (starttls && direct) {
        clearTimeout(timer);
        resolveStart({ child, c2sPort: Number(starttls[1]), directTlsPort: Number(direct[1]), output: () => out });
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.on('exit', (code) => reject(new Error(`parley exited (${code}) before listening:\n${out}`)));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`parley did not start in time:\n${out}`));
    }, 20_000);
  });
}

export function waitExit(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((r) => child.once('exit', (code) => r(code)));
}
