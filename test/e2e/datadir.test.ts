// Issue 16 §1: the data directory (SCRAM keys, the archive, tokens, web sessions) is private to the
// server's user: created 0700 with every file 0600 by the real `parley` command (umask 077), an
// existing one with open modes is made private at start with a log line, and `parley check-config`
// warns about one that others can read.
import { chmodSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, startServerProcess, tempConfig, waitExit } from '../helpers/process.js';
import { RawClient } from '../helpers/raw.js';

/** Every path under `dir` (itself included) with its permission bits. */
function modes(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  const walk = (p: string) => {
    const st = statSync(p);
    out.set(p, st.mode & 0o777);
    if (st.isDirectory()) for (const n of readdirSync(p)) walk(join(p, n));
  };
  walk(dir);
  return out;
}

function openTo(others: Map<string, number>): string[] {
  return [...others].filter(([, m]) => (m & 0o077) !== 0).map(([p, m]) => `${p} ${m.toString(8)}`);
}

describe('a private data directory', () => {
  it('a fresh start creates it 0700 with every file 0600 (database, -wal/-shm, secrets, keys, certificates)', async () => {
    const { dir, config } = tempConfig();
    const data = join(dir, 'data');
    expect(await runCli(['--config', config, 'user', 'add', 'alice@localhost'], { env: { PARLEY_PASSWORD: 'secret-password' } })).toMatchObject({ code: 0 });
    const srv = await startServerProcess(config);
    try {
      // A login writes to the database (and so to its WAL) while the server runs.
      const c = await RawClient.login(srv.c2sPort, 'alice', 'secret-password');
      await c.ping();
      c.destroy();
      const m = modes(data);
      expect([...m.keys()].map((p) => p.slice(data.length))).toEqual(expect.arrayContaining(['', '/parley.sqlite', '/parley.sqlite-wal', '/secret.key', '/tls/key.pem']));
      expect(openTo(m)).toEqual([]);
      expect(m.get(data)).toBe(0o700);
      expect(m.get(join(data, 'parley.sqlite'))).toBe(0o600);
    } finally {
      srv.child.kill('SIGTERM');
      await waitExit(srv.child);
    }
  });

  it('an existing data directory that others can read is made private at start, with a log line; check-config warns before', async () => {
    const { dir, config } = tempConfig();
    const data = join(dir, 'data');
    mkdirSync(data, { mode: 0o755 });
    chmodSync(data, 0o755);
    writeFileSync(join(data, 'old-export.txt'), 'archived messages', { mode: 0o644 });
    chmodSync(join(data, 'old-export.txt'), 0o644);
    const check = await runCli(['--config', config, 'check-config']);
    expect(check.code).toBe(0);
    expect(check.stderr).toMatch(/warning: dataDir: 2 path\(s\) other local users can read/);
    expect(check.stderr).toContain('old-export.txt (644)');
    const srv = await startServerProcess(config);
    try {
      expect(openTo(modes(data))).toEqual([]);
      expect(srv.output()).toContain('data directory was readable by other local users: made private');
    } finally {
      srv.child.kill('SIGTERM');
      await waitExit(srv.child);
    }
    expect((await runCli(['--config', config, 'check-config'])).stderr).not.toContain('warning');
  });
});
