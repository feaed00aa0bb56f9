// `parley sso` (issue 9): the administrator's view of single sign-on in the database: identities
// bound to an account (and unbinding one, e.g. after the IdP re-created a person with a new
// subject), browser sessions, and ending them all with their XMPP tokens revoked.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TokenService } from '../../src/auth/tokens.js';
import { openSqlite } from '../../src/storage/sqlite.js';
import { runCli, tempConfig } from '../helpers/process.js';

describe('parley sso', () => {
  const sso = 'sso:\n  baseUrl: https://chat.example\n  providers:\n    - { type: oidc, name: corp, host: localhost, issuer: "http://127.0.0.1:9/", clientId: parley, allowHttp: true }\n';
  const { dir, config } = tempConfig(`mux:\n  count: 0\n${sso}`);
  // Conferences for the IdP group "staff" only.
  mkdirSync(join(dir, 'acl', 'services'), { recursive: true });
  writeFileSync(join(dir, 'acl', 'services', 'conferences.acl'), 'allow @staff\n');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const cli = (...args: string[]) => runCli(['--config', config, ...args]);

  it('lists and unbinds identities, lists and ends browser sessions', { timeout: 120_000 }, async () => {
    expect((await cli('user', 'add', 'bob@localhost', '-p', 'secret-password')).code).toBe(0);
    // What a sign-in leaves in the database: a binding with groups, a session holding one token.
    const storage = await openSqlite({ path: join(dir, 'data', 'parley.sqlite') });
    const tokens = new TokenService(storage.tokens, { lifetimeSeconds: 300, maxLifetimeSeconds: 3600 });
    const t = await tokens.issue('bob@localhost', 'localhost');
    await storage.ssoIdentities.bind({ host: 'localhost', issuer: 'https://idp.example', subject: 'sub-bob', user: 'bob@localhost', provider: 'corp', displayName: 'Bob', groups: ['staff'], createdAt: 1, lastLoginAt: 2 });
    const now = Date.now();
    await storage.webSessions.insert(
      { id: 'ws-1', user: 'bob@localhost', host: 'localhost', provider: 'corp', subject: 'sub-bob', csrf: 'c', logout: null, sessionIndex: null, tokens: [t.id], createdAt: now, lastSeenAt: now, expiresAt: now + 60_000 },
      'hash-1',
    );
    await storage.close();

    const ids = await cli('sso', 'identities', 'bob@localhost');
    expect(ids.code).toBe(0);
    expect(ids.stdout).toMatch(/^corp {2}https:\/\/idp\.example {2}sub-bob {2}last sign-in 1970-01-01T00:00:00\.002Z {2}groups staff$/m);
    const sessions = await cli('sso', 'sessions', 'bob@localhost');
    expect(sessions.stdout).toMatch(/^ws-1 {2}corp {2}since .* tokens 1$/m);

    // `policy explain` sees the groups of the last sign-in, as the running server does.
    const explain = await cli('policy', 'explain', 'bob@localhost', 'conferences');
    expect(explain.code).toBe(0);
    expect(explain.stdout).toContain('bob@localhost: conferences ALLOWED by services/conferences.acl:1 (allow @staff; bob is in group staff (directory or identity provider))');
    expect((await cli('policy', 'explain', 'alice@localhost', 'conferences')).code).toBe(1);

    const wrong = await cli('sso', 'unbind', 'bob@localhost', '--issuer', 'https://other.example');
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toMatch(/not bound to an identity of https:\/\/other\.example/);
    const unbind = await cli('sso', 'unbind', 'bob@localhost', '--issuer', 'https://idp.example');
    expect(unbind.stdout).toContain('unbound bob@localhost from https://idp.example (subject sub-bob)');
    expect((await cli('sso', 'identities', 'bob@localhost')).stdout).toBe('');
    expect((await cli('policy', 'explain', 'bob@localhost', 'conferences')).code).toBe(1);

    const out = await cli('sso', 'logout', 'bob@localhost');
    expect(out.stdout).toContain('ended 1 browser session of bob@localhost, revoked 1 token');
    expect((await cli('sso', 'sessions', 'bob@localhost')).stdout).toBe('');
    const after = await openSqlite({ path: join(dir, 'data', 'parley.sqlite') });
    try {
      expect(await new TokenService(after.tokens, { lifetimeSeconds: 300, maxLifetimeSeconds: 3600 }).verify(t.token, 'localhost')).toBeNull();
    } finally {
      await after.close();
    }
  });
});
