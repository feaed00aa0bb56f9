// HARDENING.md "Connections and rates": too many resources per account -> resource-constraint;
// "Authentication": PLAIN with authzid != authcid -> invalid-authzid.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { RawClient, assertServing } from '../helpers/raw.js';

const RESOURCES = 2;

describe('hardening: resource limit and authzid', () => {
  let srv: TestServer;
  let port: number;
  let alice: RawClient;
  let bob: RawClient;

  beforeAll(async () => {
    srv = await startTestServer({ limits: { resourcesPerAccount: RESOURCES } });
    port = srv.ports.c2s as number;
    for (const u of ['alice', 'bob', 'mallory', 'eve', 'trent']) await srv.addUser(u);
    alice = await RawClient.login(port, 'alice', 'secret-password', { resource: 'canary', presence: true });
    bob = await RawClient.login(port, 'bob', 'secret-password', { resource: 'canary', presence: true });
  });
  afterAll(async () => {
    alice?.destroy();
    bob?.destroy();
    await srv?.close();
  });
  afterEach(async () => {
    await assertServing(alice, bob);
  });

  /** A stream authenticated as `user`, ready for <bind/>. */
  async function authenticated(user: string): Promise<RawClient> {
    const c = await RawClient.connect(port);
    await c.openStream();
    await c.startTls();
    await c.openStream();
    expect(await c.authPlain(user, 'secret-password')).toBe(true);
    await c.openStream();
    return c;
  }

  describe('resources per account', () => {
    it(`the ${RESOURCES + 1}rd bind gets <resource-constraint/> (type wait); the bound ones keep working`, async () => {
      const first = await RawClient.login(port, 'mallory', 'secret-password', { resource: 'one' });
      const second = await RawClient.login(port, 'mallory', 'secret-password', { resource: 'two' });
      const third = await authenticated('mallory');
      const reply = await third.bind('three');
      expect(reply).toMatch(/^<iq\b[^>]*type=["']error["']/);
      expect(reply).toMatch(/<error\b[^>]*type=["']wait["'][^>]*>\s*<resource-constraint xmlns=["']urn:ietf:params:xml:ns:xmpp-stanzas["']/);
      expect(reply).not.toContain('<jid>');
      // A server-generated resource is refused too.
      const auto = await third.bind();
      expect(auto).toMatch(/<resource-constraint\b/);
      expect(srv.server.sessions.count('mallory@localhost')).toBe(RESOURCES);
      // Still not bound: stanzas are refused.
      await third.send(`<message to='bob@localhost'><body>m-unbound</body></message>`);
      expect(await third.expectStreamErrorAndClose()).toBe('not-authorized');
      await first.ping();
      await second.ping();
      expect(bob.text).not.toContain('m-unbound');
      first.destroy();
      second.destroy();
    });

    it('a freed slot can be used again; re-binding an existing resource replaces it', async () => {
      await waitCount(0);
      const one = await RawClient.login(port, 'mallory', 'secret-password', { resource: 'one' });
      const two = await RawClient.login(port, 'mallory', 'secret-password', { resource: 'two' });
      // Same resource again: the old session is replaced (conflict), not counted twice.
      const twoAgain = await RawClient.login(port, 'mallory', 'secret-password', { resource: 'two' });
      expect(await two.expectStreamErrorAndClose()).toBe('conflict');
      expect(srv.server.sessions.count('mallory@localhost')).toBe(RESOURCES);
      one.end();
      await waitCount(1);
      const three = await RawClient.login(port, 'mallory', 'secret-password', { resource: 'three' });
      await three.ping();
      await twoAgain.ping();
      three.destroy();
      twoAgain.destroy();
    });

    async function waitCount(n: number): Promise<void> {
      const end = Date.now() + 5000;
      while (srv.server.sessions.count('mallory@localhost') !== n) {
        if (Date.now() > end) throw new Error(`sessions for mallory: ${srv.server.sessions.count('mallory@localhost')}, want ${n}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  });

  describe('PLAIN authzid', () => {
    async function tryAuthzid(authzid: string, user = 'mallory'): Promise<{ ok: boolean; c: RawClient }> {
      const c = await RawClient.connect(port);
      await c.openStream();
      await c.startTls();
      await c.openStream();
      const ok = await c.authPlain(user, 'secret-password', authzid);
      return { ok, c };
    }

    // Each refusal counts as a failed login (and the throttle's delays grow with the count), so a
    // few representative cases with their own account; the controls use another one.
    for (const authzid of ['bob@localhost', 'bob', 'eve@localhost/res', 'localhost']) {
      it(`authzid '${authzid}' for authcid eve -> <invalid-authzid/>`, async () => {
        const { ok, c } = await tryAuthzid(authzid, 'eve');
        expect(ok).toBe(false);
        expect(RawClient.saslCondition(c.lastFailure)).toBe('invalid-authzid');
        // Not authenticated: the stream is still pre-auth.
        await c.send(`<message to='bob@localhost'><body>m-authzid</body></message>`);
        expect(await c.expectStreamErrorAndClose()).toBe('not-authorized');
        expect(bob.text).not.toContain('m-authzid');
      });
    }

    for (const authzid of ['trent', 'trent@localhost', 'TRENT@LOCALHOST']) {
      it(`authzid '${authzid}' naming the user itself is accepted (control)`, async () => {
        const { ok, c } = await tryAuthzid(authzid, 'trent');
        expect(ok).toBe(true);
        await c.openStream();
        const reply = await c.bind();
        expect(reply).toMatch(/<jid>trent@localhost\//);
        c.destroy();
      });
    }
  });
});
