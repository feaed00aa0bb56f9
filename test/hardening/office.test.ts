// Issue 15 §2: an office behind one address is not locked out. Hundreds of employees behind one
// NAT address log in with the default limits; a slowloris of 200 connections from that address
// runs while a colleague from the same address logs in and chats; an address in
// limits.trustedNetworks takes a whole office logging in at once (after a server restart).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { RawClient, waitUntil } from '../helpers/raw.js';

const PASSWORD = 'secret-password';

/** Logs in `users` from `from`, at most `concurrency` at a time; resolves the clients in order. */
async function loginAll(port: number, users: string[], from: string, concurrency: number): Promise<RawClient[]> {
  const out: RawClient[] = new Array(users.length);
  let next = 0;
  const worker = async () => {
    while (next < users.length) {
      const i = next++;
      out[i] = await RawClient.login(port, users[i] as string, PASSWORD, { localAddress: from, resource: 'desk', timeoutMs: 60_000 });
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return out;
}

describe('an office behind one address (default limits)', () => {
  let srv: TestServer;
  let port: number;
  const clients: RawClient[] = [];
  const N = 500;

  beforeAll(async () => {
    srv = await startTestServer();
    port = srv.ports.c2s as number;
    // Accounts straight into storage (SCRAM derivation for 500 users would dominate the test).
    await Promise.all(Array.from({ length: N }, (_, i) => srv.addUser(`emp${i}`, PASSWORD)));
    await srv.addUser('visitor', PASSWORD);
  }, 120_000);
  afterAll(async () => {
    for (const c of clients) c.destroy();
    await srv?.close();
  });

  it(`${N} employees log in from one address and every session answers`, async () => {
    const users = Array.from({ length: N }, (_, i) => `emp${i}`);
    clients.push(...(await loginAll(port, users, '127.0.0.10', 25)));
    expect(clients.map((c) => c.jid)).toEqual(users.map((u) => `${u}@localhost/desk`));
    await Promise.all(clients.map((c) => c.ping(30_000)));
  }, 180_000);

  it('during a slowloris of 200 connections from the office address, a colleague from that address logs in and chats', async () => {
    const OFFICE = '127.0.0.11';
    const bob = await RawClient.login(port, 'visitor', PASSWORD, { localAddress: '127.0.0.12', resource: 'home', presence: true });
    clients.push(bob);
    // The attacker keeps 200 connections open from the office's address, each trickling one byte
    // of a stream header now and then and never finishing it; when one is closed it reconnects.
    let stop = false;
    const attackers = new Set<RawClient>();
    let opened = 0;
    const attack = async (): Promise<void> => {
      while (!stop) {
        const c = await RawClient.connect(port, { localAddress: OFFICE }).catch(() => null);
        if (!c) continue;
        opened++;
        attackers.add(c);
        const header = "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client'";
        for (let i = 0; !stop && !c.isClosed && i < header.length; i++) {
          await c.send(header[i] as string).catch(() => undefined);
          await new Promise((r) => setTimeout(r, 250));
        }
        attackers.delete(c);
        c.destroy();
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    const attacking = Promise.all(Array.from({ length: 200 }, attack));
    try {
      await waitUntil(() => opened >= 200, 30_000, 'the slowloris to be under way');
      const alice = await RawClient.login(port, 'emp0', PASSWORD, { localAddress: OFFICE, resource: 'during-attack', presence: true, timeoutMs: 30_000 });
      clients.push(alice);
      expect(alice.jid).toBe('emp0@localhost/during-attack');
      const mark = bob.mark();
      await alice.send(`<message to='visitor@localhost/home' type='chat' id='m1'><body>still here</body></message>`);
      await bob.waitFor(/<body>still here<\/body>/, 10_000, mark);
      const back = alice.mark();
      await bob.send(`<message to='emp0@localhost/during-attack' type='chat' id='m2'><body>good</body></message>`);
      await alice.waitFor(/<body>good<\/body>/, 10_000, back);
      // The attack was still going on: its connections were being closed to make room.
      expect(srv.server.stats.preAuthEvicted).toBeGreaterThan(0);
    } finally {
      stop = true;
      for (const c of attackers) c.destroy();
      await attacking;
    }
  }, 120_000);
});

describe('an office in limits.trustedNetworks', () => {
  let srv: TestServer;
  let port: number;
  const clients: RawClient[] = [];
  const N = 300;

  beforeAll(async () => {
    srv = await startTestServer({ limits: { trustedNetworks: ['127.0.0.20/30'] } });
    port = srv.ports.c2s as number;
    await Promise.all(Array.from({ length: N }, (_, i) => srv.addUser(`emp${i}`, PASSWORD)));
  }, 120_000);
  afterAll(async () => {
    for (const c of clients) c.destroy();
    await srv?.close();
  });

  it(`${N} clients reconnect at the same moment (after a restart) and all get in`, async () => {
    const users = Array.from({ length: N }, (_, i) => `emp${i}`);
    clients.push(...(await loginAll(port, users, '127.0.0.21', N)));
    expect(new Set(clients.map((c) => c.jid)).size).toBe(N);
    expect(srv.server.stats.preAuthEvicted).toBe(0);
  }, 180_000);
});
