// `parley token` (issue 9): the CLI issues an XMPP token into the database (no server needed),
// lists it without the secret, and revokes it; a server started on that database logs the user in
// with the token over SASL OAUTHBEARER, and refuses it once revoked. Bad input exits 2.
import { rmSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { RawClient, startTlsOAuthBearer } from '../helpers/raw.js';
import { runCli, startServerProcess, tempConfig, waitExit, type ServerProcess } from '../helpers/process.js';

process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

describe('parley token', () => {
  const { dir, config } = tempConfig('mux:\n  count: 0\n');
  let server: ServerProcess | undefined;
  const clients: RawClient[] = [];
  afterAll(async () => {
    for (const c of clients) c.destroy();
    if (server) {
      server.child.kill('SIGTERM');
      await waitExit(server.child);
    }
    rmSync(dir, { recursive: true, force: true });
  });
  const cli = (...args: string[]) => runCli(['--config', config, ...args]);

  /** First SASL answer to an OAUTHBEARER login with `token` over STARTTLS. */
  async function login(token: string): Promise<string> {
    const c = await RawClient.connect(server!.c2sPort);
    clients.push(c);
    return startTlsOAuthBearer(c, token);
  }

  // A dozen CLI processes (about 1.5 s each on tsx) and a server: more than the default timeout.
  it('issues, lists and revokes tokens', { timeout: 120_000 }, async () => {
    expect((await cli('user', 'add', 'bob@localhost', '-p', 'secret-password')).code).toBe(0);

    // Refusals: unknown account, other host, lifetime over the maximum, neither id nor --all.
    const [unknown, otherHost, tooLong, noId] = await Promise.all([
      cli('token', 'issue', 'nobody@localhost'),
      cli('token', 'issue', 'bob@elsewhere.example'),
      cli('token', 'issue', 'bob@localhost', '--lifetime', '86401'),
      cli('token', 'revoke'),
    ]);
    expect([unknown.code, unknown.stderr]).toEqual([2, 'parley: no account nobody@localhost\n']);
    expect([otherHost.code, otherHost.stderr]).toEqual([2, expect.stringMatching(/elsewhere\.example is not a host/)]);
    expect([tooLong.code, tooLong.stderr]).toEqual([2, expect.stringMatching(/lifetime must be/)]);
    expect(noId.code).toBe(2);

    const before = Date.now();
    let r = await cli('token', 'issue', 'bob@localhost', '--lifetime', '600', '--label', 'laptop');
    const after = Date.now();
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const token = /^token: (\S+)$/m.exec(r.stdout)?.[1] as string;
    const id = /^id: (tok-\S+)$/m.exec(r.stdout)?.[1] as string;
    const expires = Date.parse(/^expires: (\S+)$/m.exec(r.stdout)?.[1] as string);
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(id).toBeTruthy();
    // 600 s after it was issued, i.e. while the command ran (to the second).
    expect(expires).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000 + 600_000);
    expect(expires).toBeLessThanOrEqual(after + 600_000);
    const second = /^id: (tok-\S+)$/m.exec((await cli('token', 'issue', 'bob@localhost')).stdout)?.[1] as string;

    r = await cli('token', 'list', 'bob@localhost');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${id}  valid  expires \\S+  for localhost  "laptop"$`, 'm'));
    expect(r.stdout).toContain(second);
    expect(r.stdout).not.toContain(token);

    server = await startServerProcess(config);
    expect(await login(token)).toBe('success');

    r = await cli('token', 'revoke', id);
    expect([r.code, r.stdout]).toEqual([0, `revoked ${id}\n`]);
    expect((await cli('token', 'revoke', id)).code).toBe(2); // only once
    expect(await login(token)).toBe('challenge'); // RFC 7628 error response
    expect((await cli('token', 'list', 'bob@localhost')).stdout).toMatch(new RegExp(`^${id}  revoked `, 'm'));

    r = await cli('token', 'revoke', '--all', 'bob@localhost');
    expect(r.stdout).toBe('revoked 1 token of bob@localhost\n');
  });
});
