// The `parley` command line: user management, check-config, status, and start with defaults.
import { rmSync, writeFileSync, mkdtempSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { connect, xml } from '../helpers/client.js';
import { runCli, startServerProcess, tempConfig, waitExit } from '../helpers/process.js';

process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

describe('parley CLI', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('adds, lists, changes the password of and removes users', async () => {
    const { dir, config } = tempConfig();
    dirs.push(dir);
    const c = ['--config', config];
    expect((await runCli([...c, 'user', 'add', 'Carol@localhost', '--password', 'first-pass'])).stdout).toBe('created carol@localhost\n');
    // Password from standard input.
    const viaStdin = await runCli([...c, 'user', 'add', 'dave@localhost'], { input: 'stdin-pass\n' });
    expect(viaStdin.code).toBe(0);
    const dup = await runCli([...c, 'user', 'add', 'carol@localhost', '--password', 'x']);
    expect(dup.code).toBe(2);
    expect(dup.stderr).toContain('already exists');
    const badHost = await runCli([...c, 'user', 'add', 'eve@elsewhere.example', '--password', 'x']);
    expect(badHost.code).toBe(2);
    expect(badHost.stderr).toContain('not a host');
    const badJid = await runCli([...c, 'user', 'add', 'no way@localhost', '--password', 'x']);
    expect(badJid.code).toBe(2);
    expect((await runCli([...c, 'user', 'list'])).stdout).toBe('carol@localhost\ndave@localhost\n');

    // The stored secrets are SCRAM, never the password.
    const db = readFileSync(join(dir, 'data', 'parley.sqlite'));
    expect(db.includes(Buffer.from('first-pass'))).toBe(false);

    const srv = await startServerProcess(config);
    try {
      const carol = await connect({ port: srv.c2sPort, username: 'carol', password: 'first-pass' });
      await carol.stop();
      const dave = await connect({ port: srv.c2sPort, username: 'dave', password: 'stdin-pass', mechanism: 'PLAIN' });
      await dave.stop();
      expect((await runCli([...c, 'user', 'passwd', 'carol@localhost', '--password', 'second-pass'])).code).toBe(0);
      await expect(connect({ port: srv.c2sPort, username: 'carol', password: 'first-pass' })).rejects.toThrow();
      const again = await connect({ port: srv.c2sPort, username: 'carol', password: 'second-pass' });
      await again.stop();

      const status = await runCli([...c, 'status']);
      expect(status.code).toBe(0);
      expect(status.stdout).toContain('parley is running');
      expect(status.stdout).toContain(String(srv.c2sPort));
    } finally {
      srv.child.kill('SIGTERM');
      await waitExit(srv.child);
    }
    const stopped = await runCli([...c, 'status']);
    expect(stopped.code).toBe(3);
    expect(stopped.stdout).toContain('not running');

    expect((await runCli([...c, 'user', 'remove', 'carol@localhost'])).stdout).toBe('removed carol@localhost\n');
    expect((await runCli([...c, 'user', 'remove', 'carol@localhost'])).code).toBe(2);
    expect((await runCli([...c, 'user', 'list'])).stdout).toBe('dave@localhost\n');
  }, 60_000);

  it('check-config reports every error with its path', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-cfg-'));
    dirs.push(dir);
    const file = join(dir, 'parley.yaml');
    writeFileSync(
      file,
      'hosts:\n  - domain: example.com\n    registration: { enabled: yes-please }\nlisten:\n  c2s: 70000\nlimits:\n  maxStanzaBytes: 10\nstorage:\n  type: mongodb\nmodules:\n  roster: { versioning: 3 }\n  nosuchmodule: {}\n',
    );
    const r = await runCli(['--config', file, 'check-config']);
    expect(r.code).toBe(2);
    for (const path of ['hosts.0.registration.enabled', 'listen.c2s', 'limits.maxStanzaBytes', 'storage']) expect(r.stderr).toContain(path);
    writeFileSync(file, 'hosts: [example.com]\nmodules:\n  roster: { versioning: 3 }\n  nosuchmodule: {}\n');
    const m = await runCli(['--config', file, 'check-config']);
    expect(m.code).toBe(2);
    expect(m.stderr).toContain('modules.roster.versioning');
    expect(m.stderr).toContain('modules.nosuchmodule: unknown module');
    writeFileSync(file, 'hosts: [example.com, example.org]\n');
    const ok = await runCli(['--config', file, 'check-config']);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain('example.com, example.org');
    const missing = await runCli(['--config', join(dir, 'nope.yaml'), 'check-config']);
    expect(missing.code).toBe(2);
  });

  it('starts with embedded defaults when there is no parley.yaml, keeping its certificate', async () => {
    // An empty working directory and no configuration file: localhost, 5222 + 5223, SQLite and a
    // generated certificate in ./data. (Needs ports 5222/5223 free on this machine.)
    const dir = mkdtempSync(join(tmpdir(), 'parley-default-'));
    dirs.push(dir);
    const first = await startServerProcess(undefined, dir);
    expect(first.c2sPort).toBe(5222);
    expect(first.directTlsPort).toBe(5223);
    expect(first.output()).toContain('Parley is running for localhost');
    expect(first.output()).toContain('user add');
    const cert = readFileSync(join(dir, 'data', 'tls', 'cert.pem'), 'utf8');
    expect(existsSync(join(dir, 'data', 'parley.sqlite'))).toBe(true);
    first.child.kill('SIGTERM');
    await waitExit(first.child);
    const second = await startServerProcess(undefined, dir);
    expect(readFileSync(join(dir, 'data', 'tls', 'cert.pem'), 'utf8')).toBe(cert);
    expect((await runCli(['user', 'add', 'frank@localhost', '--password', 'frank-pass'], { cwd: dir })).code).toBe(0);
    for (const directTls of [false, true]) {
      const frank = await connect({ port: directTls ? 5223 : 5222, username: 'frank', password: 'frank-pass', directTls });
      const pong = await frank.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
      expect(pong.attrs.type).toBe('result');
      await frank.stop();
    }
    second.child.kill('SIGTERM');
    expect(await waitExit(second.child)).toBe(0);
  }, 60_000);
});
