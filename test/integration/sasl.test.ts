// SASL over real sockets (RFC 6120 §5-§7): @xmpp/client with SCRAM-SHA-1 and PLAIN over STARTTLS and
// direct TLS (XEP-0368), and a from-scratch RFC 5802 client (test/helpers/scram-client.ts) for
// SCRAM-SHA-256 and the -PLUS variants with tls-exporter (RFC 9266, TLS 1.3) and
// tls-server-end-point (RFC 5929, also on TLS 1.2), checking the server signature each time.
import { Element } from 'ltx';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { connect, xml } from '../helpers/client.js';
import { type ChannelBindingType, NS_SASL, RawXmppClient, type ScramMechanism } from '../helpers/scram-client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const PASSWORD = 'secret-password';
const NS_SASL_CB = 'urn:xmpp:sasl-cb:0';

function cbTypes(features: Element | null): string[] {
  return (features?.getChild('sasl-channel-binding', NS_SASL_CB)?.getChildren('channel-binding') ?? []).map((c) => c.attrs.type as string);
}

/** Bind, then a XEP-0199 ping round trip to the server. */
async function bindAndPing(c: RawXmppClient, user: string, resource?: string): Promise<void> {
  const jid = await c.bind(resource);
  if (resource) expect(jid).toBe(`${user}@localhost/${resource}`);
  else expect(jid.startsWith(`${user}@localhost/`)).toBe(true);
  const reply = await c.iq(new Element('iq', { type: 'get', to: 'localhost' }).c('ping', { xmlns: 'urn:xmpp:ping' }).up());
  expect(reply.attrs.type).toBe('result');
  expect(reply.attrs.from).toBe('localhost');
  expect(reply.attrs.to).toBe(jid);
}

describe('SASL', () => {
  let srv: TestServer;
  let user: string;
  const open: RawXmppClient[] = [];

  async function raw(opts: Partial<Parameters<typeof RawXmppClient.connect>[0]> = {}): Promise<RawXmppClient> {
    const c = await RawXmppClient.connect({ port: srv.ports.c2s as number, ...opts });
    open.push(c);
    return c;
  }

  beforeAll(async () => {
    srv = await startTestServer();
    user = uniqueUser('sasl');
    await srv.addUser(user, PASSWORD);
  });
  beforeEach(() => {
    // Failed attempts below come from the same address; keep the login throttle out of the way.
    srv.server.throttle.clear();
  });
  afterAll(async () => {
    for (const c of open) c.destroy();
    await srv?.close();
  });

  describe('@xmpp/client', () => {
    for (const mechanism of ['SCRAM-SHA-1', 'PLAIN'] as const) {
      for (const directTls of [false, true]) {
        it(`${mechanism} over ${directTls ? 'direct TLS' : 'STARTTLS'}`, async () => {
          const port = (directTls ? srv.ports.c2sDirectTls : srv.ports.c2s) as number;
          const c = await connect({ port, username: user, mechanism, directTls, resource: `r-${mechanism}` });
          try {
            expect(c.jid).toBe(`${user}@localhost/r-${mechanism}`);
            expect((c.xmpp as unknown as { isSecure(): boolean }).isSecure()).toBe(true);
            const res = await c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
            expect(res.attrs.type).toBe('result');
          } finally {
            await c.stop();
          }
        });
      }
    }

    it('a wrong password is refused', async () => {
      await expect(connect({ port: srv.ports.c2s as number, username: user, password: 'wrong', mechanism: 'SCRAM-SHA-1' })).rejects.toThrow(/not-authorized/);
    });
  });

  describe('stream features', () => {
    it('before TLS: STARTTLS required and no mechanisms; auth attempts get encryption-required', async () => {
      const c = await raw({ starttls: false });
      expect(c.streamAttrs.from).toBe('localhost');
      expect(c.streamAttrs.version).toBe('1.0');
      const st = c.features?.getChild('starttls', 'urn:ietf:params:xml:ns:xmpp-tls');
      expect(st?.getChild('required')).toBeDefined();
      expect(c.features?.getChild('mechanisms', NS_SASL)).toBeUndefined();
      const r = await c.plain(user, PASSWORD);
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.condition).toBe('encryption-required');
    });

    it('after STARTTLS with TLS 1.3: mechanisms in preference order, every binding type advertised (XEP-0440)', async () => {
      const c = await raw();
      expect(c.tlsSocket?.getProtocol()).toBe('TLSv1.3');
      expect(c.features?.getChild('starttls')).toBeUndefined();
      expect(c.mechanisms()).toEqual(['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-1-PLUS', 'SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN', 'OAUTHBEARER']);
      expect(cbTypes(c.features)).toEqual(['tls-exporter', 'tls-server-end-point', 'tls-unique']);
    });

    it('direct TLS offers the same mechanisms', async () => {
      const c = await raw({ port: srv.ports.c2sDirectTls as number, directTls: true });
      expect(c.features?.getChild('starttls')).toBeUndefined();
      expect(c.mechanisms()).toEqual(['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-1-PLUS', 'SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN', 'OAUTHBEARER']);
    });

    it('after authentication: bind, optional session, roster versioning, pre-approval, caps', async () => {
      const c = await raw();
      const r = await c.scram({ mechanism: 'SCRAM-SHA-256', username: user, password: PASSWORD });
      expect(r.ok).toBe(true);
      const f = await c.restart();
      expect(f.getChild('bind', 'urn:ietf:params:xml:ns:xmpp-bind')).toBeDefined();
      expect(f.getChild('session', 'urn:ietf:params:xml:ns:xmpp-session')?.getChild('optional')).toBeDefined();
      expect(f.getChild('ver', 'urn:xmpp:features:rosterver')).toBeDefined();
      expect(f.getChild('sub', 'urn:xmpp:features:pre-approval')).toBeDefined();
      const caps = f.getChild('c', 'http://jabber.org/protocol/caps');
      expect(caps?.attrs.hash).toBe('sha-1');
      expect(caps?.attrs.node).toBeTruthy();
      expect(caps?.attrs.ver).toMatch(/^[A-Za-z0-9+/]{27}=$/);
      expect(f.getChild('mechanisms', NS_SASL)).toBeUndefined();
      expect(f.getChild('starttls')).toBeUndefined();
      await bindAndPing(c, user);
    });
  });

  describe('SCRAM (own RFC 5802 client)', () => {
    const cases: { mechanism: ScramMechanism; cbType?: ChannelBindingType }[] = [
      { mechanism: 'SCRAM-SHA-1' },
      { mechanism: 'SCRAM-SHA-256' },
      { mechanism: 'SCRAM-SHA-1-PLUS', cbType: 'tls-exporter' },
      { mechanism: 'SCRAM-SHA-1-PLUS', cbType: 'tls-server-end-point' },
      { mechanism: 'SCRAM-SHA-256-PLUS', cbType: 'tls-exporter' },
      { mechanism: 'SCRAM-SHA-256-PLUS', cbType: 'tls-server-end-point' },
      // tls-unique on TLS 1.3: the client's Finished, as OpenSSL-based clients (Python's ssl,
      // hence slixmpp and Poezio) compute it and ejabberd accepts it.
      { mechanism: 'SCRAM-SHA-1-PLUS', cbType: 'tls-unique' },
      { mechanism: 'SCRAM-SHA-256-PLUS', cbType: 'tls-unique' },
    ];
    for (const { mechanism, cbType } of cases) {
      it(`${mechanism}${cbType ? ` with ${cbType}` : ''} over STARTTLS (TLS 1.3)`, async () => {
        const c = await raw();
        const r = await c.scram({ mechanism, username: user, password: PASSWORD, cbType });
        expect(r).toMatchObject({ ok: true, serverSignatureValid: true });
        await c.restart();
        await bindAndPing(c, user, `res-${mechanism}-${cbType ?? 'none'}`);
        await c.close();
      });
    }

    for (const cbType of ['tls-exporter', 'tls-unique'] as const) {
      it(`SCRAM-SHA-256-PLUS with ${cbType} over direct TLS`, async () => {
        const c = await raw({ port: srv.ports.c2sDirectTls as number, directTls: true });
        expect(c.tlsSocket?.getProtocol()).toBe('TLSv1.3');
        const r = await c.scram({ mechanism: 'SCRAM-SHA-256-PLUS', username: user, password: PASSWORD, cbType });
        expect(r).toMatchObject({ ok: true, serverSignatureValid: true });
        await c.restart();
        await bindAndPing(c, user);
      });
    }

    describe('TLS 1.2 (no tls-exporter, RFC 9266 §3)', () => {
      it('still offers -PLUS, and advertises tls-unique (RFC 5929) and tls-server-end-point', async () => {
        const c = await raw({ maxVersion: 'TLSv1.2' });
        expect(c.tlsSocket?.getProtocol()).toBe('TLSv1.2');
        expect(c.mechanisms()).toEqual(['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-1-PLUS', 'SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN', 'OAUTHBEARER']);
        expect(cbTypes(c.features)).toEqual(['tls-unique', 'tls-server-end-point']);
      });

      for (const mechanism of ['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-1-PLUS'] as const) {
        for (const cbType of ['tls-server-end-point', 'tls-unique'] as const) {
          it(`${mechanism} with ${cbType} succeeds`, async () => {
            const c = await raw({ maxVersion: 'TLSv1.2' });
            const r = await c.scram({ mechanism, username: user, password: PASSWORD, cbType });
            expect(r).toMatchObject({ ok: true, serverSignatureValid: true });
            await c.restart();
            await bindAndPing(c, user);
          });
        }
      }

      it('direct TLS 1.2 with tls-server-end-point and with tls-unique succeeds', async () => {
        for (const cbType of ['tls-server-end-point', 'tls-unique'] as const) {
          const c = await raw({ port: srv.ports.c2sDirectTls as number, directTls: true, maxVersion: 'TLSv1.2' });
          expect(c.tlsSocket?.getProtocol()).toBe('TLSv1.2');
          expect(cbTypes(c.features)).toEqual(['tls-unique', 'tls-server-end-point']);
          const r = await c.scram({ mechanism: 'SCRAM-SHA-256-PLUS', username: user, password: PASSWORD, cbType });
          expect(r).toMatchObject({ ok: true, serverSignatureValid: true });
        }
      });

      it('asking for tls-exporter is refused', async () => {
        const c = await raw({ maxVersion: 'TLSv1.2' });
        const r = await c.scram({ mechanism: 'SCRAM-SHA-256-PLUS', username: user, password: PASSWORD, cbType: 'tls-exporter' });
        expect(r.ok).toBe(false);
        if (!r.ok) expect(r.condition).toBe('not-authorized');
      });
    });

    it('channel-binding data that does not match the connection is refused', async () => {
      const c = await raw();
      const r = await c.scram({
        mechanism: 'SCRAM-SHA-256-PLUS',
        username: user,
        password: PASSWORD,
        cbType: 'tls-exporter',
        cbDataOverride: Buffer.alloc(32, 7),
      });
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.condition).toBe('not-authorized');
    });

    it("gs2 flag 'y' while -PLUS is offered is a downgrade and is refused (RFC 5802 §6)", async () => {
      const c = await raw();
      const r = await c.scram({ mechanism: 'SCRAM-SHA-256', username: user, password: PASSWORD, gs2Flag: 'y' });
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.condition).toBe('not-authorized');
    });
  });

  describe('failures', () => {
    for (const mechanism of ['SCRAM-SHA-1', 'SCRAM-SHA-256-PLUS', 'PLAIN'] as const) {
      it(`${mechanism}: wrong password and unknown user fail the same way, with not-authorized`, async () => {
        const attempt = async (username: string, password: string) => {
          const c = await raw();
          const r =
            mechanism === 'PLAIN'
              ? await c.plain(username, password)
              : await c.scram({ mechanism, username, password, cbType: mechanism.endsWith('-PLUS') ? 'tls-exporter' : undefined });
          // The stream stays usable after a failure (RFC 6120 §6.4.5): a retry can succeed.
          const retry = mechanism === 'PLAIN' ? await c.plain(user, PASSWORD) : await c.scram({ mechanism, username: user, password: PASSWORD, cbType: mechanism.endsWith('-PLUS') ? 'tls-exporter' : undefined });
          expect(retry.ok).toBe(true);
          return r;
        };
        const wrong = await attempt(user, 'not-the-password');
        srv.server.throttle.clear();
        const unknown = await attempt(uniqueUser('nobody'), PASSWORD);
        expect(wrong.ok).toBe(false);
        expect(unknown.ok).toBe(false);
        if (!wrong.ok && !unknown.ok) {
          expect(wrong.condition).toBe('not-authorized');
          expect(unknown.condition).toBe('not-authorized');
          // No account enumeration: the two failures are indistinguishable.
          expect(unknown.element.toString()).toBe(wrong.element.toString());
        }
      });
    }

    it('an unknown mechanism is invalid-mechanism', async () => {
      const c = await raw();
      c.write(`<auth xmlns='${NS_SASL}' mechanism='DIGEST-MD5'/>`);
      const f = await c.next((el) => el.name === 'failure');
      expect(f.getChild('invalid-mechanism')).toBeDefined();
    });
  });
});

describe('SASL without mandatory TLS (tls.required: false)', () => {
  let srv: TestServer;
  let user: string;
  const open: RawXmppClient[] = [];
  beforeAll(async () => {
    srv = await startTestServer({ tls: { required: false } });
    user = uniqueUser('plain');
    await srv.addUser(user, PASSWORD);
  });
  afterAll(async () => {
    for (const c of open) c.destroy();
    await srv?.close();
  });

  it('PLAIN and -PLUS are not offered on a cleartext stream, and PLAIN is refused there', async () => {
    const c = await RawXmppClient.connect({ port: srv.ports.c2s as number, starttls: false });
    open.push(c);
    const st = c.features?.getChild('starttls', 'urn:ietf:params:xml:ns:xmpp-tls');
    expect(st).toBeDefined();
    expect(st?.getChild('required')).toBeUndefined();
    expect(c.mechanisms()).toEqual(['SCRAM-SHA-256', 'SCRAM-SHA-1']);
    expect(cbTypes(c.features)).toEqual([]);
    const r = await c.plain(user, PASSWORD);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.condition).toBe('invalid-mechanism');
    // SCRAM without binding works on the cleartext stream.
    const s = await c.scram({ mechanism: 'SCRAM-SHA-256', username: user, password: PASSWORD });
    expect(s).toMatchObject({ ok: true, serverSignatureValid: true });
    await c.restart();
    await bindAndPing(c, user);
  });

  it('the same server offers PLAIN once STARTTLS is done', async () => {
    const c = await RawXmppClient.connect({ port: srv.ports.c2s as number });
    open.push(c);
    expect(c.mechanisms()).toContain('PLAIN');
    const r = await c.plain(user, PASSWORD);
    expect(r.ok).toBe(true);
    await c.restart();
    await bindAndPing(c, user);
  });
});
