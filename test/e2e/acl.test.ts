// Access control files (issue 7) in a real server: the rules a running server hands to modules
// (server.acl, what ctx.acl returns), reload on change, and `parley reload` against `parley start`.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { AclReloadReport, FileAccessControl } from '../../src/auth/index.js';
import { startParley } from '../../src/cli/app.js';
import { validateConfig } from '../../src/core/config.js';
import { silentLogger } from '../../src/core/logger.js';
import { Jid } from '../../src/xmpp/jid.js';
import { runCli, startServerProcess, tempConfig, waitExit } from '../helpers/process.js';
import { startTestServer } from '../helpers/server.js';

const J = (s: string) => Jid.parse(s);

describe('access control files in a running server', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  function aclDir(files: Record<string, string>): string {
    const dir = mkdtempSync(join(tmpdir(), 'parley-acl-e2e-'));
    dirs.push(dir);
    for (const [name, text] of Object.entries(files)) {
      if (name.includes('/')) mkdirSync(join(dir, name.split('/')[0] ?? ''), { recursive: true });
      writeFileSync(join(dir, name), text);
    }
    return dir;
  }

  it('hands the file rules to modules: one user may create rooms, another is refused', async () => {
    const dir = aclDir({
      'rooms.acl': 'allow @planners\n',
      'alerts.acl': 'allow alice@localhost\n',
      'rooms/board@conference.localhost.acl': 'MANAGE alice@localhost\nREAD *@localhost\n',
    });
    const srv = await startTestServer({ acl: { directory: dir, groups: { planners: ['alice@localhost'] } } });
    try {
      const alice = J(`${await srv.addUser('alice')}/phone`);
      const bob = J(await srv.addUser('bob'));
      expect(srv.server.acl).toBe(srv.acl);
      expect(srv.server.acl.allows('room.create', alice)).toBe(true);
      expect(srv.server.acl.allows('room.create', bob)).toBe(false);
      expect(srv.server.acl.allows('alert.send', alice)).toBe(true);
      expect(srv.server.acl.allows('alert.send', bob)).toBe(false);
      expect(srv.server.acl.allows('poll.create', bob)).toBe(true); // no polls.acl: the default
      expect(srv.server.acl.venue('room', 'board@conference.localhost', alice)).toBe('MANAGE');
      expect(srv.server.acl.venue('room', 'board@conference.localhost', bob)).toBe('READ');

      // Changing a file is picked up without a signal (fs.watch, debounced).
      const reloaded = new Promise<AclReloadReport>((resolve) => {
        const off = (srv.acl as FileAccessControl).onReload((r) => {
          off();
          resolve(r);
        });
      });
      writeFileSync(join(dir, 'rooms.acl'), 'allow bob@localhost\n');
      expect((await reloaded).reason).toBe('change');
      expect(srv.server.acl.allows('room.create', bob)).toBe(true);
      expect(srv.server.acl.allows('room.create', alice)).toBe(false);
    } finally {
      await srv.close();
    }
  });

  it('refuses to start with a malformed file, naming file and line', async () => {
    const dir = aclDir({ 'admins.acl': '# admins\nallow root@localhost\nallow root@localhost/desk\n' });
    // startParley itself (not the test helper): a failed start must leave nothing behind but dataDir.
    const config = validateConfig({ hosts: ['localhost'], dataDir: join(dir, 'data'), listen: { address: '127.0.0.1', c2s: 0, c2sDirectTls: 0 }, http: { port: null, tlsPort: null }, mux: { count: 0 }, modules: { proxy65: { port: 0 } }, acl: { directory: dir } });
    await expect(startParley(config, { log: silentLogger() })).rejects.toThrow(/admins\.acl:3: .*expected a bare JID/);
  });

  it('`parley reload` makes `parley start` re-read the files and prints the rules per file', async () => {
    const { dir, config } = tempConfig(`acl:\n  directory: acl\n  watch: false\n  groups:\n    staff: [alice@localhost]\n`);
    dirs.push(dir);
    const c = ['--config', config];
    const acl = join(dir, 'acl');
    mkdirSync(join(acl, 'channels'), { recursive: true });
    writeFileSync(join(acl, 'rooms.acl'), 'allow @staff\n');
    writeFileSync(join(acl, 'channels', 'news.acl'), 'MANAGE alice@localhost\nREAD *\n');

    const notRunning = await runCli([...c, 'reload']);
    expect(notRunning.code).toBe(3);
    expect(notRunning.stdout).toContain('not running');

    const srv = await startServerProcess(config);
    try {
      const first = await runCli([...c, 'reload']);
      expect(first.stderr).toBe('');
      expect(first.code).toBe(0);
      expect(first.stdout).toContain(`access control files in ${acl} (reload 2, SIGHUP)`);
      expect(first.stdout).toContain('  channels/news.acl: 2 rules\n');
      expect(first.stdout).toContain('  rooms.acl: 1 rule\n');

      // A new rule is applied.
      writeFileSync(join(acl, 'rooms.acl'), 'allow @staff\nallow bob@localhost\ndeny *\n');
      writeFileSync(join(acl, 'alerts.acl'), 'allow alice@localhost\n');
      const second = await runCli([...c, 'reload']);
      expect(second.code).toBe(0);
      expect(second.stdout).toContain('  rooms.acl: 3 rules\n');
      expect(second.stdout).toContain('  alerts.acl: 1 rule\n');

      // A malformed file: reported with file and line, exit 1, its previous rules stay.
      writeFileSync(join(acl, 'rooms.acl'), 'allow @staff\nallow bob@localhost carol@\n');
      const bad = await runCli([...c, 'reload']);
      expect(bad.code).toBe(1);
      expect(bad.stdout).toContain('  rooms.acl: ERROR, previous rules kept (3 rules)\n');
      expect(bad.stdout).toContain('error: rooms.acl:2: invalid JID "carol@"');
      expect(bad.stdout).toContain('  alerts.acl: 1 rule\n');
      // check-config finds the same problem before a restart would.
      const check = await runCli([...c, 'check-config']);
      expect(check.code).toBe(2);
      expect(check.stderr).toContain('rooms.acl:2: invalid JID "carol@"');

      writeFileSync(join(acl, 'rooms.acl'), 'allow bob@localhost\n');
      const fixed = await runCli([...c, 'reload']);
      expect(fixed.code).toBe(0);
      expect(fixed.stdout).toContain('  rooms.acl: 1 rule\n');
      expect(fixed.stdout).not.toContain('error:');
      // SIGHUP did not stop the server.
      expect((await runCli([...c, 'status'])).stdout).toContain('parley is running');
    } finally {
      srv.child.kill('SIGTERM');
      await waitExit(srv.child);
    }
    // Eight CLI processes (tsx start-up each) and a server: slower than the default test timeout.
  }, 120_000);
});
