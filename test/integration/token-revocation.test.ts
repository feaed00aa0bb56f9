// Issue 9: a session that logged in with an XMPP token ends when the token is revoked by another
// process — `parley token revoke` or `parley sso logout` writing to the database, or another node —
// within auth.recheckSeconds; likewise a session whose account `parley user remove` deleted. Here the revocation goes through a second, independent
// connection to the server's SQLite database, as the CLI's does; the server is not told.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TokenService } from '../../src/auth/tokens.js';
import { openSqlite } from '../../src/storage/sqlite.js';
import type { Storage } from '../../src/storage/types.js';
import { RawClient, startTlsOAuthBearer } from '../helpers/raw.js';
import { startTestServer, uniqueUser, type TestServer } from '../helpers/server.js';

describe('tokens revoked by another process', () => {
  let srv: TestServer;
  let other: Storage;
  const clients: RawClient[] = [];

  beforeAll(async () => {
    srv = await startTestServer({ auth: { recheckSeconds: 0.5 } });
    other = await openSqlite({ path: srv.config.storage.type === 'sqlite' ? (srv.config.storage.path as string) : '' });
  });
  afterAll(async () => {
    for (const c of clients) c.destroy();
    await other?.close();
    await srv?.close();
  });

  async function tokenSession(user: string, token: string, resource: string): Promise<RawClient> {
    const c = await RawClient.connect(srv.ports.c2s as number);
    clients.push(c);
    expect(await startTlsOAuthBearer(c, token)).toBe('success');
    await c.openStream();
    expect(await c.bind(resource)).toContain(`${user}/${resource}`);
    return c;
  }

  it('ends the sessions of a token revoked elsewhere, and only those', async () => {
    const user = `${uniqueUser('rv')}@localhost`;
    await srv.server.auth.create(user, 'secret-password');
    const [revoked, kept] = [await srv.server.auth.tokens!.issue(user, 'localhost'), await srv.server.auth.tokens!.issue(user, 'localhost')];
    const a = await tokenSession(user, revoked.token, 'a');
    const b = await tokenSession(user, kept.token, 'b');
    const password = await RawClient.login(srv.ports.c2s as number, user.split('@')[0] as string, 'secret-password', { resource: 'c' });
    clients.push(password);

    // The CLI's way: its own connection to the database, nothing sent to the server.
    expect(await new TokenService(other.tokens, srv.config.auth.tokens).revoke(revoked.id)).toBe(true);
    expect(await a.waitStreamError(10_000)).toBe('not-authorized');
    expect(await b.ping()).toBeGreaterThanOrEqual(0);
    expect(await password.ping()).toBeGreaterThanOrEqual(0);
  });

  it('ends the sessions of an account removed elsewhere (parley user remove), and only those', async () => {
    const local = uniqueUser('gone');
    const user = `${local}@localhost`;
    const stay = uniqueUser('stay');
    await srv.server.auth.create(user, 'secret-password');
    await srv.server.auth.create(`${stay}@localhost`, 'secret-password');
    const a = await RawClient.login(srv.ports.c2s as number, local, 'secret-password', { resource: 'a' });
    const b = await RawClient.login(srv.ports.c2s as number, stay, 'secret-password', { resource: 'b' });
    clients.push(a, b);
    // The CLI's way: its own connection to the database.
    expect(await other.accounts.remove(user)).toBe(true);
    expect(await a.waitStreamError(10_000)).toBe('not-authorized');
    expect(await b.ping()).toBeGreaterThanOrEqual(0);
    // And the removed account cannot log in again.
    await expect(RawClient.login(srv.ports.c2s as number, local, 'secret-password')).rejects.toThrow();
  });
});
