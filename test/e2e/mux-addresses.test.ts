// Issue 16 §9: a mux reports each client's address, and could claim any. With
// mux.reportedAddresses: scoped (the default for a mux on another host), the quotas and login
// bans its reports earn apply to that mux's connections only: a mux cannot get an address banned
// on other paths. With trusted (the default for a mux on this machine) they are shared.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/core/config.js';
import { silentLogger } from '../../src/core/logger.js';
import { addressKey } from '../../src/core/transport.js';
import { runMux, type RunningMux } from '../../src/mux/index.js';
import { RawClient } from '../helpers/raw.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { freePort } from '../helpers/ports.js';

const PASSWORD = 'secret-password';
const SECRET = 'a-shared-link-secret-for-tests';


/** One PLAIN attempt from `from`; 'success' or the SASL condition. */
async function attempt(port: number, user: string, password: string, from: string): Promise<string> {
  const c = await RawClient.connect(port, { localAddress: from });
  try {
    await c.openStream();
    await c.startTls();
    await c.openStream();
    return (await c.authPlain(user, password)) ? 'success' : (RawClient.saslCondition(c.lastFailure) ?? 'unknown');
  } finally {
    c.destroy();
  }
}

describe('addresses reported by a mux', () => {
  const dirs: string[] = [];
  const servers: TestServer[] = [];
  const muxes: RunningMux[] = [];
  afterAll(async () => {
    for (const m of muxes) await m.stop();
    for (const s of servers) await s.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  async function setup(reportedAddresses: 'scoped' | 'trusted'): Promise<{ srv: TestServer; mux: RunningMux }> {
    const linkPort = await freePort();
    const srv = await startTestServer({
      mux: { count: 0, linkAddress: '127.0.0.1', linkPort, secret: SECRET, reportedAddresses },
      auth: { maxFailuresPerPair: 2, banSeconds: 600 },
    });
    servers.push(srv);
    await srv.addUser('alice', PASSWORD);
    const dir = mkdtempSync(join(tmpdir(), 'parley-mux-addr-'));
    dirs.push(dir);
    const config = validateConfig({ hosts: ['localhost'], dataDir: dir, listen: { address: '127.0.0.1', c2s: 0, c2sDirectTls: null }, mux: { server: { host: '127.0.0.1', port: linkPort }, secret: SECRET } });
    const mux = await runMux({ config, link: { host: '127.0.0.1', port: linkPort }, secret: Buffer.from(SECRET), name: 'edge', log: silentLogger() });
    muxes.push(mux);
    await mux.waitLink();
    return { srv, mux };
  }

  it('scoped: a ban earned through a mux keeps that address out through that mux only', async () => {
    const { srv, mux } = await setup('scoped');
    const viaMux = mux.ports.c2s as number;
    const direct = srv.ports.c2s as number;
    expect(await attempt(viaMux, 'alice', 'wrong-1', '127.0.0.5')).toBe('not-authorized');
    expect(await attempt(viaMux, 'alice', 'wrong-2', '127.0.0.5')).toBe('not-authorized');
    expect(await attempt(viaMux, 'alice', PASSWORD, '127.0.0.5')).toBe('temporary-auth-failure');
    // The same address on another path is not affected by what the mux reported.
    expect(await attempt(direct, 'alice', PASSWORD, '127.0.0.5')).toBe('success');
    // The session knows which mux vouched for its address.
    const c = await RawClient.login(viaMux, 'alice', PASSWORD, { localAddress: '127.0.0.6', resource: 'edge' });
    const session = srv.server.sessions.resources('alice@localhost').find((s) => s.jid?.resource === 'edge');
    expect(session?.remoteAddress).toBe('127.0.0.6');
    expect(session?.addressKey).toBe('mux:edge|127.0.0.6');
    c.destroy();
  });

  it('trusted: the same ban holds on every path', async () => {
    const { srv, mux } = await setup('trusted');
    const viaMux = mux.ports.c2s as number;
    expect(await attempt(viaMux, 'alice', 'wrong-1', '127.0.0.5')).toBe('not-authorized');
    expect(await attempt(viaMux, 'alice', 'wrong-2', '127.0.0.5')).toBe('not-authorized');
    expect(await attempt(srv.ports.c2s as number, 'alice', PASSWORD, '127.0.0.5')).toBe('temporary-auth-failure');
  });

  it('the key of an address carries the mux that reported it', () => {
    expect(addressKey({ remoteAddress: '192.0.2.1' })).toBe('192.0.2.1');
    expect(addressKey({ remoteAddress: '192.0.2.1', reportedBy: 'mux:dmz' })).toBe('mux:dmz|192.0.2.1');
  });
});
