// Issue 6: a real WebSocket client library (StanzaJS) logs in over /xmpp-websocket (RFC 7395) and
// chats both ways with an @xmpp/client user on TCP; and XEP-0198 resumption from WebSocket to TCP:
// a WebSocket session enables resumption, its socket is killed, messages arrive meanwhile, and a raw
// TCP client resumes the session and receives them.
import { createClient, type Agent } from 'stanza';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { barrier, connect, xml, type TestClient } from '../helpers/client.js';
import { RawClient } from '../helpers/raw.js';
import { hibernated, startTestServer, uniqueUser, type TestServer } from '../helpers/server.js';
import { WsClient } from '../helpers/ws.js';
import { Jid } from '../../src/xmpp/jid.js';

const SM = 'urn:xmpp:sm:3';
const PW = 'secret-password';

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

describe('WebSocket with StanzaJS and resumption to TCP', () => {
  let srv: TestServer;
  let url: string;
  const agents: Agent[] = [];
  const tcps: TestClient[] = [];

  beforeAll(async () => {
    srv = await startTestServer({ modules: { sm: { resumeSeconds: 10 } } });
    url = `ws://127.0.0.1:${srv.ports.http}/xmpp-websocket`;
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

  it('StanzaJS logs in over WebSocket and chats both ways with a TCP user', async () => {
    const alice = uniqueUser('alice');
    const bob = uniqueUser('bob');
    await srv.addUser(alice, PW);
    await srv.addUser(bob, PW);
    const a = createClient({ jid: `${alice}@localhost`, password: PW, transports: { websocket: url, bosh: false } });
    agents.push(a);
    const started = waitEvent<unknown>(a, 'session:started');
    a.connect();
    await started;
    expect(a.transport?.constructor.name).toBe('WSConnection');
    expect(a.jid).toMatch(new RegExp(`^${alice}@localhost/`));
    expect(srv.server.sessions.get(Jid.parse(a.jid))?.transport.kind).toBe('websocket');
    const b = await connect({ port: srv.ports.c2s as number, username: bob, password: PW });
    tcps.push(b);

    const got = waitEvent<{ body?: string; from: string }>(a, 'chat', (m) => m.body === 'hello over tcp');
    await b.send(xml('message', { to: a.jid, type: 'chat' }, xml('body', {}, 'hello over tcp')));
    expect((await got).from).toBe(b.jid);

    a.sendMessage({ to: b.jid, type: 'chat', body: 'hello over websocket' });
    const back = await b.waitFor((el) => el.name === 'message' && el.getChildText('body') === 'hello over websocket', 10_000);
    expect(back.attrs.from).toBe(a.jid);

    // A graceful logout (<close/>) ends the session.
    const ended = waitEvent<unknown>(a, 'disconnected');
    a.disconnect();
    await ended;
    await expect.poll(() => srv.server.sessions.count(`${alice}@localhost`)).toBe(0);
  });

  it('a WebSocket session with XEP-0198 resumption is resumed over TCP after its socket dies, with the messages sent meanwhile', async () => {
    const alice = uniqueUser('alice');
    const bob = uniqueUser('bob');
    await srv.addUser(alice, PW);
    await srv.addUser(bob, PW);
    const ws = await WsClient.connect(url);
    const features = await ws.authenticate(alice, PW);
    expect(features).toMatch(/<sm xmlns=['"]urn:xmpp:sm:3['"]\/>/);
    await ws.bind('web');
    ws.send(`<presence xmlns='jabber:client'/>`);
    ws.send(`<enable xmlns='${SM}' resume='true'/>`);
    const enabled = await ws.waitFor(/^<enabled\b/);
    const previd = /\bid=['"]([^'"]+)['"]/.exec(enabled)?.[1];
    expect(previd).toBeTruthy();
    expect(enabled).toMatch(/resume=['"](true|1)['"]/);

    const b = await connect({ port: srv.ports.c2s as number, username: bob, password: PW });
    tcps.push(b);
    await b.send(xml('message', { to: ws.jid, type: 'chat' }, xml('body', {}, 'before:1')));
    await ws.waitFor(/before:1/);
    // Acknowledge what arrived so far (the presence echo and before:1 may be counted): ask for it.
    ws.send(`<r xmlns='${SM}'/>`);
    await ws.waitFor(/^<a xmlns=/);

    ws.terminate(); // the browser tab's network dies: no <close/>
    const jid = ws.jid;
    await hibernated(srv, jid);
    expect(srv.server.sessions.count(`${alice}@localhost`)).toBe(1); // hibernated, still bound
    for (let i = 1; i <= 3; i++) await b.send(xml('message', { to: jid, type: 'chat' }, xml('body', {}, `during:${i}`)));
    await barrier(b); // the three are handled (held by the hibernated session) before the pong

    const tcp = await RawClient.connect(srv.ports.c2s as number);
    await tcp.authenticate(alice, PW);
    // h=0: the client never acknowledged anything it received over WebSocket; the server resends
    // everything unacknowledged, and certainly the three messages sent while it was away.
    await tcp.send(`<resume xmlns='${SM}' previd='${previd}' h='0'/>`);
    await tcp.waitFor(/<resumed\b/);
    await tcp.waitFor(/during:3</);
    const order = [...tcp.text.matchAll(/<body>(during:\d)<\/body>/g)].map((m) => m[1]);
    expect(order).toEqual(['during:1', 'during:2', 'during:3']);
    // The resumed session is the same full JID and keeps working over TCP, both ways.
    await tcp.send(`<message type='chat' to='${b.jid}'><body>after resume</body></message>`);
    const back = await b.waitFor((el) => el.name === 'message' && el.getChildText('body') === 'after resume', 10_000);
    expect(back.attrs.from).toBe(jid);
    await b.send(xml('message', { to: jid, type: 'chat' }, xml('body', {}, 'to tcp:1')));
    await tcp.waitFor(/to tcp:1</);
    expect(srv.server.sessions.count(`${alice}@localhost`)).toBe(1);
    tcp.end();
  });
});
