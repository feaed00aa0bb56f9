// BOSH (XEP-0124 / XEP-0206) at /http-bind over raw HTTP: session creation, login with stream
// restart, the rid window (out-of-order, out-of-window, replay), wait/hold, pause, terminate,
// inactivity, overactivity, body limits and malformed requests, CORS, and XEP-0198 across BOSH
// sessions.
import { randomInt } from 'node:crypto';
import { parse, type Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hibernated, startTestServer, uniqueUser, type TestServer } from '../helpers/server.js';
import { RawClient, waitUntil } from '../helpers/raw.js';

const HB = 'http://jabber.org/protocol/httpbind';
const XB = 'urn:xmpp:xbosh';

interface Reply {
  status: number;
  text: string;
  body: Element;
  headers: Headers;
}

describe('BOSH transport', () => {
  let srv: TestServer;
  let url: string;

  beforeAll(async () => {
    srv = await startTestServer({
      http: { address: '127.0.0.1', port: 0, tlsPort: 0, bosh: { maxWait: 2, maxInactivity: 2, maxPause: 5, polling: 1, maxBodyBytes: 4096 } },
    });
    url = `http://127.0.0.1:${srv.ports.http}/http-bind`;
  });
  afterAll(async () => {
    await srv?.close();
  });

  async function post(xml: string, headers: Record<string, string> = {}): Promise<Reply> {
    const r = await fetch(url, { method: 'POST', body: xml, headers: { 'Content-Type': 'text/xml; charset=utf-8', ...headers } });
    const text = await r.text();
    return { status: r.status, text, body: r.status === 200 || r.status === 413 ? (parse(text) as Element) : (parse('<x/>') as Element), headers: r.headers };
  }

  /** A BOSH client speaking raw <body/> wrappers. */
  class Raw {
    rid = randomInt(1, 2 ** 40);
    sid = '';
    creation!: Reply;
    async create(attrs = "wait='2' hold='1'"): Promise<Reply> {
      this.creation = await post(
        `<body rid='${this.rid}' to='localhost' ${attrs} ver='1.11' xml:lang='en' xmpp:version='1.0' xmlns='${HB}' xmlns:xmpp='${XB}'/>`,
      );
      this.sid = String(this.creation.body.attrs.sid ?? '');
      return this.creation;
    }
    wrap(rid: number, inner = '', attrs = ''): string {
      return `<body rid='${rid}' sid='${this.sid}' ${attrs} xmlns='${HB}' xmlns:xmpp='${XB}'>${inner}</body>`;
    }
    send(inner = '', attrs = ''): Promise<Reply> {
      this.rid++;
      return post(this.wrap(this.rid, inner, attrs));
    }
    /** Sends until a response carries a child matching `pred`. */
    async until(pred: (el: Element) => boolean, inner = '', attrs = ''): Promise<Element> {
      let r = await this.send(inner, attrs);
      for (let i = 0; i < 10; i++) {
        const hit = r.body.getChildElements().find(pred);
        if (hit) return hit;
        expect(r.body.attrs.type).toBeUndefined();
        r = await this.send();
      }
      throw new Error(`not received; last: ${r.text}`);
    }
    async login(user: string): Promise<string> {
      await this.create();
      const features = this.creation.body.getChild('features');
      expect(features?.getChild('mechanisms')).toBeTruthy();
      const auth = Buffer.from(`\0${user}\0secret-password`).toString('base64');
      await this.until((e) => e.name === 'success', `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${auth}</auth>`);
      const f2 = await this.until((e) => e.getName() === 'features', '', "to='localhost' xmpp:restart='true'");
      expect(f2.getChild('bind')).toBeTruthy();
      const bound = await this.until((e) => e.name === 'iq' && e.attrs.id === 'b1', "<iq type='set' id='b1' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
      return bound.getChild('bind')?.getChildText('jid') ?? '';
    }
  }

  it('creates a session: negotiated attributes, xbosh version and restart logic, stream features, headers', async () => {
    const c = new Raw();
    const r = await c.create("wait='60' hold='3'");
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe('text/xml; charset=utf-8');
    expect(r.headers.get('access-control-allow-origin')).toBe('*');
    const a = r.body.attrs;
    expect(a.xmlns).toBe(HB);
    expect(a['xmlns:stream']).toBe('http://etherx.jabber.org/streams');
    expect(a.sid).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(a.wait).toBe('2'); // capped at maxWait
    expect(a.hold).toBe('1'); // capped at maxHold
    expect(a.requests).toBe('2');
    expect(a.inactivity).toBe('2');
    expect(a.polling).toBe('1');
    expect(a.maxpause).toBe('5');
    expect(a.ver).toBe('1.11');
    expect(a.from).toBe('localhost');
    expect(a['xmpp:version']).toBe('1.0');
    expect(a['xmpp:restartlogic']).toBe('true');
    expect(a.type).toBeUndefined();
    const mechs = r.body.getChild('features')?.getChild('mechanisms')?.getChildren('mechanism').map((m) => m.getText());
    expect(mechs).toContain('PLAIN'); // loopback counts as secure (http.secureLoopback)
    expect(r.body.getChild('features')?.getChild('starttls')).toBeUndefined();
    // A second session gets a different sid.
    const c2 = new Raw();
    await c2.create();
    expect(c2.sid).not.toBe(c.sid);
  });

  it('logs in with SASL, restarts the stream, binds, and exchanges stanzas', async () => {
    const user = uniqueUser('bosh');
    await srv.addUser(user);
    const c = new Raw();
    const jid = await c.login(user);
    expect(jid).toMatch(new RegExp(`^${user}@localhost/`));
    const pong = await c.until((e) => e.name === 'iq' && e.attrs.id === 'p1', "<iq type='get' id='p1' to='localhost' xmlns='jabber:client'><ping xmlns='urn:xmpp:ping'/></iq>");
    expect(pong.attrs.type).toBe('result');
    // A message to itself comes back in a response.
    const msg = await c.until((e) => e.name === 'message', `<message to='${jid}' type='chat' xmlns='jabber:client'><body>hi me</body></message>`);
    expect(msg.getChildText('body')).toBe('hi me');
  });

  it('answers an unknown sid with item-not-found', async () => {
    const r = await post(`<body rid='1000' sid='no-such-sid' xmlns='${HB}'/>`);
    expect(r.status).toBe(200);
    expect(r.body.attrs.type).toBe('terminate');
    expect(r.body.attrs.condition).toBe('item-not-found');
  });

  it('terminates the session on a rid beyond the window', async () => {
    const c = new Raw();
    await c.create();
    const r = await post(c.wrap(c.rid + 3));
    expect(r.body.attrs).toMatchObject({ type: 'terminate', condition: 'item-not-found' });
    const after = await c.send();
    expect(after.body.attrs).toMatchObject({ type: 'terminate', condition: 'item-not-found' });
  });

  it('replays the cached response for a repeated rid, and refuses a rid too old to replay', async () => {
    const c = new Raw();
    const first = await c.create();
    const replay = await post(`<body rid='${c.rid}' to='localhost' wait='2' hold='1' xmlns='${HB}' sid='${c.sid}'/>`);
    expect(replay.text).toBe(first.text);
    const r1 = await c.send();
    const again = await post(c.wrap(c.rid));
    expect(again.text).toBe(r1.text);
    // rid far below the window: nothing cached.
    const old = await post(c.wrap(c.rid - 5));
    expect(old.body.attrs).toMatchObject({ type: 'terminate', condition: 'item-not-found' });
  });

  it('forwards out-of-order requests in rid order', async () => {
    const user = uniqueUser('boshorder');
    await srv.addUser(user);
    const c = new Raw();
    await c.login(user);
    const ping = (id: string) => `<iq type='get' id='${id}' to='localhost' xmlns='jabber:client'><ping xmlns='urn:xmpp:ping'/></iq>`;
    const base = c.rid;
    // rid+2 first: buffered until rid+1 arrives.
    const later = post(c.wrap(base + 2, ping('second')));
    await new Promise((r) => setTimeout(r, 100));
    const earlier = post(c.wrap(base + 1, ping('first')));
    c.rid = base + 2;
    const seen: string[] = [];
    for (const r of [await earlier, await later]) {
      expect(r.body.attrs.type).toBeUndefined();
      for (const e of r.body.getChildElements()) if (e.name === 'iq') seen.push(String(e.attrs.id));
    }
    while (seen.length < 2) {
      const r = await c.send();
      for (const e of r.body.getChildElements()) if (e.name === 'iq') seen.push(String(e.attrs.id));
    }
    expect(seen).toEqual(['first', 'second']);
  });

  // Order and outcome: how long `wait` holds a request is measured by bench/limits.ts.
  it('holds an empty request until there is something to send, or answers it empty once `wait` runs out', async () => {
    const user = uniqueUser('boshwait');
    const friend = uniqueUser('boshwaitfriend');
    await srv.addUser(user);
    await srv.addUser(friend);
    const c = new Raw();
    const jid = await c.login(user);
    // Held, not answered at once: its answer carries a message sent after it was made (a friend
    // logs in first, which takes several round trips).
    const held = c.send();
    const f = await RawClient.login(srv.ports.c2s as number, friend, 'secret-password', { resource: 'r' });
    await f.send(`<message type='chat' to='${jid}'><body>while-held</body></message>`);
    const r1 = await held;
    expect(r1.body.attrs.type).toBeUndefined();
    expect(r1.body.getChildElements().some((e) => e.name === 'message' && e.getChildText('body') === 'while-held')).toBe(true);
    f.destroy();

    const q = new Raw();
    await q.create("wait='1' hold='1'");
    expect(q.creation.body.attrs.wait).toBe('1');
    const r = await q.send();
    expect(r.status).toBe(200);
    expect(r.body.attrs.type).toBeUndefined();
    expect(r.body.children.length).toBe(0);
  });

  it('pause: answers at once; a pause above maxpause is a policy violation', async () => {
    const c = new Raw();
    await c.create();
    const p = await c.send('', "pause='3'");
    expect(p.body.attrs.type).toBeUndefined();
    // The session outlives its normal inactivity (2 s) during the pause. (Waiting past a deadline
    // of the in-process server is ordered: its 2 s timer, armed before, fires before this one.)
    await new Promise((r) => setTimeout(r, 2300));
    const alive = await c.send();
    expect(alive.body.attrs.type).toBeUndefined();
    const bad = await c.send('', "pause='60'");
    expect(bad.body.attrs).toMatchObject({ type: 'terminate', condition: 'policy-violation' });
  });

  it('ends a session after the inactivity period', async () => {
    const c = new Raw();
    await c.create();
    const before = srv.server.connectionCount;
    await new Promise((r) => setTimeout(r, 2500));
    expect(srv.server.connectionCount).toBeLessThan(before);
    const r = await c.send();
    expect(r.body.attrs).toMatchObject({ type: 'terminate', condition: 'item-not-found' });
  });

  it('terminate from the client ends the session gracefully', async () => {
    const user = uniqueUser('boshterm');
    await srv.addUser(user);
    const c = new Raw();
    const jid = await c.login(user);
    expect(srv.server.sessions.count(`${user}@localhost`)).toBe(1);
    const r = await c.send("<presence type='unavailable' xmlns='jabber:client'/>", "type='terminate'");
    expect(r.status).toBe(200);
    expect(r.body.attrs.type).toBe('terminate');
    expect(r.body.attrs.condition).toBeUndefined();
    expect(jid).toBeTruthy();
    expect(srv.server.sessions.count(`${user}@localhost`)).toBe(0);
    const after = await c.send();
    expect(after.body.attrs).toMatchObject({ type: 'terminate', condition: 'item-not-found' });
  });

  it('reports a stream error as remote-stream-error with the error inside', async () => {
    const c = new Raw();
    await c.create();
    const r = await c.send("<message to='x@localhost' xmlns='jabber:client'><body>too early</body></message>");
    expect(r.body.attrs).toMatchObject({ type: 'terminate', condition: 'remote-stream-error' });
    expect(r.body.getChild('error')?.getChild('not-authorized')).toBeTruthy();
  });

  it('refuses an oversized body with 413', async () => {
    const c = new Raw();
    await c.create();
    const r = await post(c.wrap(c.rid + 1, `<message xmlns='jabber:client'><body>${'x'.repeat(5000)}</body></message>`));
    expect(r.status).toBe(413);
    expect(r.body.attrs.condition).toBe('policy-violation');
  });

  it('answers bad XML, a non-body root, a missing rid and a missing to with terminate errors', async () => {
    for (const xml of [`<body rid='1' xmlns='${HB}'`, '<!DOCTYPE x><body/>', `<bosh rid='5' xmlns='${HB}'/>`, `<body rid='5' xmlns='urn:other'/>`, `<body xmlns='${HB}' to='localhost'/>`, 'not xml at all']) {
      const r = await post(xml);
      expect(r.status, xml).toBe(200);
      expect(r.body.attrs, xml).toMatchObject({ type: 'terminate', condition: 'bad-request' });
    }
    expect((await post(`<body rid='7' wait='1' hold='1' xmlns='${HB}'/>`)).body.attrs.condition).toBe('improper-addressing');
    expect((await post(`<body rid='7' to='elsewhere.example' wait='1' hold='1' xmlns='${HB}'/>`)).body.attrs.condition).toBe('host-unknown');
  });

  it('overactivity: more simultaneous requests than `requests` is a policy violation', async () => {
    const c = new Raw();
    await c.create();
    const base = c.rid;
    const a = post(c.wrap(base + 1));
    await new Promise((r) => setTimeout(r, 50));
    // rid+2 and rid+3 while rid+1 is held: the third open request breaks `requests='2'`.
    const b = post(c.wrap(base + 2));
    await new Promise((r) => setTimeout(r, 50));
    const third = await post(c.wrap(base + 3));
    const results = [await a, await b, third];
    expect(results.some((r) => r.body.attrs.condition === 'policy-violation')).toBe(true);
  });

  it('CORS preflight and GET', async () => {
    const pre = await fetch(url, { method: 'OPTIONS', headers: { Origin: 'https://app.example', 'Access-Control-Request-Method': 'POST' } });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe('*');
    expect(pre.headers.get('access-control-allow-methods')).toContain('POST');
    const get = await fetch(url);
    expect(get.status).toBe(405);
  });

  it('XEP-0198: a session enabled over BOSH is resumed on a new BOSH session after the old one expires', async () => {
    const user = uniqueUser('boshsm');
    await srv.addUser(user);
    const c = new Raw();
    const jid = await c.login(user);
    const enabled = await c.until((e) => e.name === 'enabled', "<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
    const previd = String(enabled.attrs.id);
    expect(previd).toBeTruthy();
    const a = await c.until((e) => e.name === 'a', "<r xmlns='urn:xmpp:sm:3'/>");
    expect(a.attrs.h).toBe('0');
    // Let the BOSH session die of inactivity: the XMPP session hibernates.
    await hibernated(srv, jid, 10_000);
    const c2 = new Raw();
    await c2.create();
    const auth = Buffer.from(`\0${user}\0secret-password`).toString('base64');
    await c2.until((e) => e.name === 'success', `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${auth}</auth>`);
    const f = await c2.until((e) => e.getName() === 'features', '', "to='localhost' xmpp:restart='true'");
    expect(f.getChild('sm')).toBeTruthy();
    const resumed = await c2.until((e) => e.name === 'resumed' || e.name === 'failed', `<resume xmlns='urn:xmpp:sm:3' previd='${previd}' h='0'/>`);
    expect(resumed.name).toBe('resumed');
    expect(srv.server.sessions.count(`${user}@localhost`)).toBe(1);
    const pong = await c2.until((e) => e.name === 'iq' && e.attrs.id === 'p2', "<iq type='get' id='p2' to='localhost' xmlns='jabber:client'><ping xmlns='urn:xmpp:ping'/></iq>");
    expect(pong.attrs.type).toBe('result');
  });

  it('XEP-0198 across transports: a session that dropped on TCP is resumed over BOSH with the messages held meanwhile', async () => {
    const user = uniqueUser('tcp2bosh');
    const friend = uniqueUser('friend');
    await srv.addUser(user);
    await srv.addUser(friend);
    const tcp = await RawClient.login(srv.ports.c2s as number, user, 'secret-password', { resource: 'phone', presence: true });
    await tcp.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
    const previd = /\bid=['"]([^'"]+)['"]/.exec((await tcp.waitFor(/<enabled\b[^>]*\/>/))[0])?.[1] as string;
    const full = tcp.jid;
    tcp.destroy();
    await waitUntil(() => [...srv.server.sessions.all()].some((s) => s.jid?.full === full && s.hibernated), 5000, 'hibernated');
    const f = await RawClient.login(srv.ports.c2s as number, friend, 'secret-password', { resource: 'r' });
    await f.send(`<message type='chat' to='${full}'><body>while-away</body></message>`);
    await f.ping();
    const c2 = new Raw();
    await c2.create();
    const auth = Buffer.from(`\0${user}\0secret-password`).toString('base64');
    await c2.until((e) => e.name === 'success', `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${auth}</auth>`);
    await c2.until((e) => e.getName() === 'features', '', "to='localhost' xmpp:restart='true'");
    // <resumed/> and the retransmitted message may come in one response or several.
    const seen: Element[] = [];
    let r = await c2.send(`<resume xmlns='urn:xmpp:sm:3' previd='${previd}' h='0'/>`);
    const held = () => seen.find((e) => e.name === 'message' && e.getChildText('body') === 'while-away');
    for (let i = 0; i < 10; i++) {
      seen.push(...r.body.getChildElements());
      if (held() || seen.some((e) => e.name === 'failed')) break;
      r = await c2.send();
    }
    expect(seen[0]?.name).toBe('resumed');
    expect(held()?.attrs.to).toBe(full);
    const s = [...srv.server.sessions.all()].find((x) => x.jid?.full === full);
    expect(s?.transport.kind).toBe('bosh');
    f.end();
  });
});
