// Issue 6: a real BOSH client library (StanzaJS) logs in over /http-bind and talks with an
// @xmpp/client user on TCP: chat both ways, and presence between a second BOSH client and the TCP one;
// a token login (OAUTHBEARER) works over BOSH as over the other transports.
import { createClient, type Agent } from 'stanza';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, xml, type TestClient } from '../helpers/client.js';
import { startTestServer, uniqueUser, type TestServer } from '../helpers/server.js';

function waitEvent<T>(agent: Agent, event: string, pred: (v: T) => boolean = () => true, timeoutMs = 10_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out waiting for ${event}`)), timeoutMs);
    const on = (v: T) => {
      if (!pred(v)) return;
      clearTimeout(t);
      (agent as unknown as { off(e: string, f: (v: T) => void): void }).off(event, on);
      resolve(v);
    };
    (agent as unknown as { on(e: string, f: (v: T) => void): void }).on(event, on);
  });
}

describe('BOSH with StanzaJS', () => {
  let srv: TestServer;
  let url: string;
  const agents: Agent[] = [];
  const tcps: TestClient[] = [];

  beforeAll(async () => {
    srv = await startTestServer();
    url = `http://127.0.0.1:${srv.ports.http}/http-bind`;
  });
  afterAll(async () => {
    for (const a of agents) {
      try {
        a.disconnect();
      } catch {
        /* gone */
      }
    }
    for (const c of tcps) await c.stop();
    await srv?.close();
  });

  async function boshLogin(user: string): Promise<Agent> {
    const agent = createClient({ jid: `${user}@localhost`, password: 'secret-password', transports: { websocket: false, bosh: url } });
    agents.push(agent);
    const started = waitEvent<unknown>(agent, 'session:started');
    agent.connect();
    await started;
    expect(agent.transport?.constructor.name).toBe('BOSH');
    return agent;
  }

  it('logs in over BOSH with an XMPP token (SASL OAUTHBEARER, issue 9)', async () => {
    const user = uniqueUser('tok');
    await srv.addUser(user);
    const { token } = await srv.server.auth.tokens!.issue(`${user}@localhost`, 'localhost');
    const agent = createClient({ jid: `${user}@localhost`, credentials: { token, authzid: `${user}@localhost` }, transports: { websocket: false, bosh: url } });
    // StanzaJS prefers SCRAM and PLAIN when offered; this client only has a token.
    for (const m of ['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256', 'SCRAM-SHA-1-PLUS', 'SCRAM-SHA-1', 'PLAIN']) agent.sasl.disable(m);
    agents.push(agent);
    const started = waitEvent<unknown>(agent, 'session:started');
    agent.connect();
    await started;
    expect(agent.transport?.constructor.name).toBe('BOSH');
    expect(agent.jid).toMatch(new RegExp(`^${user}@localhost/`));
  });

  it('logs in over BOSH and chats both ways with a TCP user', async () => {
    const alice = uniqueUser('alice');
    const bob = uniqueUser('bob');
    await srv.addUser(alice);
    await srv.addUser(bob);
    const a = await boshLogin(alice);
    expect(a.jid).toMatch(new RegExp(`^${alice}@localhost/`));
    const b = await connect({ port: srv.ports.c2s as number, username: bob });
    tcps.push(b);

    const got = waitEvent<{ body?: string; from: string }>(a, 'chat', (m) => m.body === 'hello over tcp');
    await b.send(xml('message', { to: a.jid, type: 'chat' }, xml('body', {}, 'hello over tcp')));
    const m = await got;
    expect(m.from).toBe(b.jid);

    a.sendMessage({ to: b.jid, type: 'chat', body: 'hello over bosh' });
    const back = await b.waitFor((el) => el.name === 'message' && el.getChildText('body') === 'hello over bosh', 10_000);
    expect(back.attrs.from).toBe(a.jid);
  });

  it('a second BOSH client and a TCP client exchange presence', async () => {
    const carol = uniqueUser('carol');
    const dave = uniqueUser('dave');
    await srv.addUser(carol);
    await srv.addUser(dave);
    const c = await boshLogin(carol);
    const d = await connect({ port: srv.ports.c2s as number, username: dave });
    tcps.push(d);

    const avail = waitEvent<{ from: string; status?: string }>(c, 'available', (p) => p.from === d.jid);
    await d.send(xml('presence', { to: c.jid }, xml('status', {}, 'from tcp')));
    expect((await avail).status).toBe('from tcp');

    c.sendPresence({ to: d.jid, status: 'from bosh' });
    const p = await d.waitFor((el) => el.name === 'presence' && el.attrs.from === c.jid, 10_000);
    expect(p.getChildText('status')).toBe('from bosh');

    // Graceful logout over BOSH (type='terminate') removes the session.
    const ended = waitEvent<unknown>(c, 'disconnected');
    c.disconnect();
    await ended;
    await expect.poll(() => srv.server.sessions.count(`${carol}@localhost`)).toBe(0);
  });
});
