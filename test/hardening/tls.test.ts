// HARDENING.md "Connections and rates": TLS renegotiation refused; plaintext sent after
// <starttls/> before the handshake is discarded; authentication before TLS refused.
import type { TLSSocket } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { RawClient, NS_TLS, assertServing, barrier, plainAuth, waitUntil } from '../helpers/raw.js';

describe('hardening: TLS', () => {
  let srv: TestServer;
  let port: number;
  let alice: RawClient;
  let bob: RawClient;

  beforeAll(async () => {
    srv = await startTestServer();
    port = srv.ports.c2s as number;
    for (const u of ['alice', 'bob', 'mallory']) await srv.addUser(u);
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

  /**
   * Asks for a TLS renegotiation; resolves the error it ends with, or null if the server went along
   * (the renegotiated handshake completed).
   */
  async function renegotiate(c: RawClient): Promise<Error | null> {
    const sock = c.socket as TLSSocket;
    expect(sock.getProtocol()).toBe('TLSv1.2');
    return new Promise((resolve) => {
      const timer = setTimeout(() => finish(new Error('no answer to the renegotiation request')), 5000);
      const finish = (v: Error | null) => {
        clearTimeout(timer);
        sock.off('error', finish);
        sock.off('close', onClose);
        resolve(v);
      };
      const onClose = () => finish(new Error('connection closed'));
      // OpenSSL reports the server's refusal (a no_renegotiation alert) as a socket error.
      sock.once('error', finish);
      sock.once('close', onClose);
      const started = sock.renegotiate({ rejectUnauthorized: false }, (err) => finish(err ?? null));
      if (!started) finish(new Error('renegotiate() refused locally'));
    });
  }

  /** After a refused renegotiation the connection is unusable and the server drops the session. */
  async function expectDead(c: RawClient, before: number): Promise<void> {
    await c.send(`<iq type='get' to='localhost' id='after-reneg'><ping xmlns='urn:xmpp:ping'/></iq>`);
    await c.closed(5000);
    expect(c.text).not.toContain('after-reneg');
    await waitUntil(() => srv.server.connectionCount === before - 1, 5000, 'server dropped the connection');
  }

  describe('renegotiation', () => {
    it('is refused on a STARTTLS connection (TLS 1.2)', async () => {
      const c = await RawClient.connect(port);
      await c.openStream();
      await c.startTls({ maxVersion: 'TLSv1.2' });
      await c.openStream();
      const before = srv.server.connectionCount;
      const err = await renegotiate(c);
      expect(err?.message).toMatch(/renegotiation/i);
      await expectDead(c, before);
    });

    it('is refused after authentication (TLS 1.2)', async () => {
      const c = await RawClient.connect(port);
      await c.openStream();
      await c.startTls({ maxVersion: 'TLSv1.2' });
      await c.login('mallory', 'secret-password');
      const before = srv.server.connectionCount;
      const err = await renegotiate(c);
      expect(err?.message).toMatch(/renegotiation/i);
      await expectDead(c, before);
    });

    it('is refused on the direct TLS port (TLS 1.2)', async () => {
      const c = await RawClient.connect(srv.ports.c2sDirectTls as number, { directTls: true, tls: { maxVersion: 'TLSv1.2' } });
      await c.openStream();
      const before = srv.server.connectionCount;
      const err = await renegotiate(c);
      expect(err?.message).toMatch(/renegotiation/i);
      await expectDead(c, before);
    });
  });

  describe('plaintext after <starttls/>', () => {
    it('an <auth/> injected in the same write as <starttls/> is discarded (CVE-2011-0411 class)', async () => {
      const c = await RawClient.connect(port);
      await c.openStream();
      await c.send(`<starttls xmlns='${NS_TLS}'/>${plainAuth('mallory', 'secret-password')}<message to='bob@localhost' type='chat'><body>m-injected</body></message>`);
      await c.waitFor(/<proceed\b/);
      await c.upgradeTls();
      // The TLS stream starts from scratch: not authenticated, mechanisms offered, nothing answered.
      const since = c.mark();
      const features = await c.openStream();
      expect(features).toContain('<mechanisms');
      expect(features).not.toContain('urn:ietf:params:xml:ns:xmpp-bind');
      // The real login on the secure stream works normally, and is the only one answered: the
      // server answers in order, so an answer to the injected <auth/> would come before it.
      expect(await c.authPlain('mallory', 'secret-password')).toBe(true);
      expect(c.textSince(since)).not.toMatch(/<failure|<stream:error/);
      expect(c.text.match(/<success\b/g)).toHaveLength(1);
      await c.openStream();
      expect(await c.bind()).toMatch(/type=["']result["']/);
      await barrier(c, bob); // anything the session still had from the plaintext went to Bob first
      expect(bob.text).not.toContain('m-injected');
      c.destroy();
    });

    it('plaintext written right after <starttls/> (before <proceed/>) never reaches the XML layer', async () => {
      const c = await RawClient.connect(port);
      await c.openStream();
      await c.send(`<starttls xmlns='${NS_TLS}'/>`);
      await c.send(plainAuth('mallory', 'secret-password'));
      await c.waitFor(/<proceed\b/);
      // The server either consumed and dropped these bytes with the rest of the plaintext stream,
      // or hands them to TLS, where they are not a valid record: the handshake then fails cleanly.
      let handshake: 'ok' | 'failed';
      try {
        await c.upgradeTls({}, 5000);
        handshake = 'ok';
      } catch {
        handshake = 'failed';
      }
      if (handshake === 'ok') {
        const features = await c.openStream();
        expect(features).toContain('<mechanisms');
        expect(c.text).not.toMatch(/<success/);
        c.destroy();
      } else {
        await c.closed(5000);
        expect(c.text).not.toMatch(/<success/);
      }
    });
  });

  describe('authentication before TLS', () => {
    it('PLAIN (no mechanism at all) is offered before STARTTLS when TLS is required', async () => {
      const c = await RawClient.connect(port);
      const features = await c.openStream();
      expect(features).toMatch(/<starttls xmlns=["']urn:ietf:params:xml:ns:xmpp-tls["']><required\/><\/starttls>/);
      expect(features).not.toContain('PLAIN');
      expect(features).not.toContain('<mechanisms');
      await c.startTls();
      expect(await c.openStream()).toContain('<mechanism>PLAIN</mechanism>');
      c.destroy();
    });

    it('<auth/> with valid credentials before STARTTLS -> <failure><encryption-required/>, not authenticated', async () => {
      const c = await RawClient.connect(port);
      await c.openStream();
      expect(await c.authPlain('mallory', 'secret-password')).toBe(false);
      expect(RawClient.saslCondition(c.lastFailure)).toBe('encryption-required');
      // Still unauthenticated: a stanza is refused.
      await c.send(`<message to='bob@localhost' type='chat'><body>m-after-plain-auth</body></message>`);
      expect(await c.expectStreamErrorAndClose()).toBe('policy-violation');
      expect(c.text).not.toContain('<success');
      expect(bob.text).not.toContain('m-after-plain-auth');
    });

    it('SCRAM before STARTTLS -> encryption-required too', async () => {
      const c = await RawClient.connect(port);
      await c.openStream();
      const nonce = Buffer.from('n,,n=mallory,r=abcdefghijklmnop').toString('base64');
      await c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>${nonce}</auth>`);
      const m = await c.waitFor(/<failure\b[\s\S]*?<\/failure>/);
      expect(RawClient.saslCondition(m[0])).toBe('encryption-required');
      expect(c.text).not.toContain('<challenge');
      c.destroy();
    });

    it('repeated attempts before TLS end the stream', async () => {
      const c = await RawClient.connect(port);
      await c.openStream();
      for (let i = 0; i < 6 && !c.isClosed; i++) await c.send(plainAuth('mallory', 'secret-password'));
      expect(await c.expectStreamErrorAndClose()).toBe('policy-violation');
      expect(c.text).not.toContain('<success');
    });
  });
});
