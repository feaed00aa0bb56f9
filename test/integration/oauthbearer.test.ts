// Issue 9: XMPP tokens log users in with SASL OAUTHBEARER (RFC 7628) over real sockets — TCP with
// STARTTLS (raw client, GS2 message built here), WebSocket (raw RFC 7395 client, and StanzaJS).
// Refusals follow RFC 7628 §3.2.2: an error challenge {"status":"invalid_token"}, the client's %x01,
// then <not-authorized/>. Two hosts, so that a token for one is refused on the other. The server's
// log is captured and must never contain a token.
import { Writable } from 'node:stream';
import { createClient, type Agent } from 'stanza';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LoginThrottle } from '../../src/auth/backoff.js';
import { tokenHash } from '../../src/auth/tokens.js';
import { createLogger } from '../../src/core/logger.js';
import { NS_SASL, oauthBearerPayload, RawClient } from '../helpers/raw.js';
import { startTestServer, uniqueUser, type TestServer } from '../helpers/server.js';
import { openFrame, WsClient } from '../helpers/ws.js';

const issued: string[] = [];
let logText = '';

/** RFC 7628 §3.1 client response: gs2-header, then host/port/auth pairs separated by %x01. */
const bearer = (token: string, authzid?: string) => oauthBearerPayload(token, authzid, { host: 'localhost', port: 5222 });

const SASL_END = /<success\b[^>]*(?:\/>|>[\s\S]*?<\/success>)|<failure\b[^>]*>[\s\S]*?<\/failure>|<challenge\b[^>]*>[\s\S]*?<\/challenge>/;

describe('SASL OAUTHBEARER with XMPP tokens', () => {
  let srv: TestServer;
  let port: number;
  const clients: (RawClient | WsClient)[] = [];

  beforeAll(async () => {
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        logText += chunk.toString();
        cb();
      },
    });
    // tls.required off and PLAIN allowed in clear: OAUTHBEARER must still stay hidden before TLS.
    srv = await startTestServer(
      { hosts: ['localhost', 'other.test'], tls: { required: false }, auth: { allowPlainWithoutTls: true } },
      { log: createLogger({ level: 'debug', destination: sink }) },
    );
    // Several refusals come from one address on purpose: no backoff delays or bans here.
    const off = { maxFailures: 1_000_000, windowMs: 1000, banMs: 1000 };
    (srv.server as unknown as { throttle: LoginThrottle }).throttle = new LoginThrottle({ perAddress: off, perPair: off, accountDelay: { freeFailures: 1_000_000 }, addressDelay: { freeFailures: 1_000_000 } });
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    for (const c of clients) {
      if (c instanceof RawClient) c.destroy();
      else c.terminate();
    }
    await srv?.close();
    // The server logged authentications and failures, never a token.
    expect(logText).toMatch(/OAUTHBEARER/);
    for (const t of issued) expect(logText).not.toContain(t);
  });

  async function issue(user: string, audience = 'localhost', lifetimeSeconds?: number): Promise<{ token: string; id: string }> {
    const t = await srv.server.auth.tokens!.issue(user, audience, { lifetimeSeconds });
    issued.push(t.token);
    return t;
  }

  /** A TCP stream after STARTTLS; resolves the client and its SASL features. */
  async function tls(domain = 'localhost'): Promise<{ c: RawClient; features: string }> {
    const c = await RawClient.connect(port);
    clients.push(c);
    await c.openStream(domain);
    await c.startTls();
    return { c, features: await c.openStream(domain) };
  }

  async function auth(c: RawClient, payload: string): Promise<string> {
    const since = c.mark();
    await c.send(`<auth xmlns='${NS_SASL}' mechanism='OAUTHBEARER'>${payload}</auth>`);
    return (await c.waitFor(SASL_END, 10_000, since))[0];
  }

  /** RFC 7628 §3.2.2: the error challenge, the client's %x01, then the failure's condition. */
  async function expectErrorFlow(c: RawClient, first: string): Promise<void> {
    const challenge = /^<challenge\b[^>]*>([\s\S]*?)<\/challenge>$/.exec(first)?.[1];
    expect(challenge, first).toBeDefined();
    expect(JSON.parse(Buffer.from(challenge as string, 'base64').toString('utf8'))).toEqual({ status: 'invalid_token' });
    const since = c.mark();
    await c.send(`<response xmlns='${NS_SASL}'>AQ==</response>`);
    const failure = (await c.waitFor(/<failure\b[^>]*>[\s\S]*?<\/failure>/, 10_000, since))[0];
    expect(RawClient.saslCondition(failure)).toBe('not-authorized');
  }

  it('is offered only after TLS, on every host', async () => {
    const u = `${uniqueUser('pre')}@localhost`;
    await srv.server.auth.create(u, 'pw');
    const { token } = await issue(u);
    const c = await RawClient.connect(port);
    clients.push(c);
    const before = await c.openStream();
    expect(before).toMatch(/<mechanism>PLAIN<\/mechanism>/);
    expect(before).not.toMatch(/OAUTHBEARER/);
    // Asking for it anyway does not work either.
    const r = await auth(c, bearer(token));
    expect(RawClient.saslCondition(r)).toBe('invalid-mechanism');
    for (const domain of ['localhost', 'other.test']) expect((await tls(domain)).features).toMatch(/<mechanism>OAUTHBEARER<\/mechanism>/);
  });

  it('logs in over TCP and then again over WebSocket with the same token; the JID is the token\'s user', async () => {
    const local = uniqueUser('tok');
    const u = `${local}@localhost`;
    await srv.server.auth.create(u, 'pw');
    const { token } = await issue(u);

    const { c } = await tls();
    expect(await auth(c, bearer(token, u))).toMatch(/^<success\b/);
    await c.openStream();
    const jid = /<jid>([^<]+)<\/jid>/.exec(await c.bind('tcp'))?.[1];
    expect(jid).toBe(`${u}/tcp`);

    // Reusable within its lifetime (a web client reconnecting); no authzid this time.
    const ws = await WsClient.connect(`wss://127.0.0.1:${srv.ports.https}/xmpp-websocket`);
    clients.push(ws);
    ws.send(openFrame());
    await ws.waitFor(/^<open\b/);
    expect(await ws.waitFor(/^<stream:features\b/)).toMatch(/<mechanism>OAUTHBEARER<\/mechanism>/);
    ws.send(`<auth xmlns='${NS_SASL}' mechanism='OAUTHBEARER'>${bearer(token)}</auth>`);
    expect(await ws.waitFor(/^<(success|failure|challenge)\b/)).toMatch(/^<success\b/);
    ws.send(openFrame());
    await ws.waitFor(/^<stream:features\b/);
    expect(await ws.bind('ws')).toBe(`${u}/ws`);
    expect(srv.server.sessions.count(u)).toBe(2);
  });

  it('StanzaJS logs in with a token over WebSocket', async () => {
    const u = `${uniqueUser('stz')}@localhost`;
    await srv.server.auth.create(u, 'pw');
    const { token } = await issue(u);
    const a: Agent = createClient({ jid: u, credentials: { token, authzid: u }, transports: { websocket: `ws://127.0.0.1:${srv.ports.http}/xmpp-websocket`, bosh: false } });
    // StanzaJS prefers SCRAM when offered; this client only has a token.
    for (const m of ['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256', 'SCRAM-SHA-1-PLUS', 'SCRAM-SHA-1', 'PLAIN']) a.sasl.disable(m);
    try {
      const bound = new Promise<string>((resolve, reject) => {
        a.on('session:started', () => resolve(a.jid));
        a.on('auth:failed', () => reject(new Error('auth failed')));
      });
      a.connect();
      expect(await bound).toMatch(new RegExp(`^${u}/`));
    } finally {
      a.disconnect();
    }
  });

  it('refuses expired, revoked and unknown tokens with the RFC 7628 error flow', async () => {
    const u = `${uniqueUser('bad')}@localhost`;
    await srv.server.auth.create(u, 'pw');
    // Expired: written straight to the store with an expiry in the past.
    const expired = 'E'.repeat(43);
    issued.push(expired);
    const now = Date.now();
    await srv.server.storage.tokens.insert({ id: `tok-expired-${now}`, user: u, audience: 'localhost', label: null, issuer: null, createdAt: now - 10_000, expiresAt: now - 1, revokedAt: null }, tokenHash(expired));
    const revoked = await issue(u);
    expect(await srv.server.auth.tokens!.revoke(revoked.id)).toBe(true);

    const { c } = await tls();
    for (const t of [expired, revoked.token, 'x'.repeat(43)]) await expectErrorFlow(c, await auth(c, bearer(t, u)));
    // The same connection still logs in with a good token afterwards.
    const good = await issue(u);
    expect(await auth(c, bearer(good.token, u))).toMatch(/^<success\b/);
  });

  it('refuses a token on another host, and an authzid naming someone else', async () => {
    const alice = `${uniqueUser('alice')}@localhost`;
    const mallory = `${uniqueUser('mallory')}@localhost`;
    const carol = `${uniqueUser('carol')}@other.test`;
    for (const u of [alice, mallory, carol]) await srv.server.auth.create(u, 'pw');
    const forAlice = await issue(alice);
    const forCarol = await issue(carol, 'other.test');

    const other = (await tls('other.test')).c;
    await expectErrorFlow(other, await auth(other, bearer(forAlice.token)));
    // Issued for localhost's audience but naming an other.test user: refused on both hosts.
    const crossed = await issue(carol, 'localhost');
    await expectErrorFlow(other, await auth(other, bearer(crossed.token)));
    expect(await auth(other, bearer(forCarol.token, carol))).toMatch(/^<success\b/);

    const { c } = await tls();
    await expectErrorFlow(c, await auth(c, bearer(crossed.token)));
    expect(RawClient.saslCondition(await auth(c, bearer(forAlice.token, mallory)))).toBe('invalid-authzid');
    expect(srv.server.sessions.count(mallory)).toBe(0);
  });
});
