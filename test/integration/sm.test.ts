// XEP-0198 stream management over real sockets (and, in the mux projects, through the multiplexor):
// acks in both directions, resumption after the client's socket is killed mid-conversation with
// nothing lost or duplicated, hibernation that ends in offline storage, and the error cases.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawClient, waitUntil } from '../helpers/raw.js';
import { afterSessionClosed, hibernated, startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const SM = 'urn:xmpp:sm:3';
const PW = 'secret-password';

/** `<message>` stanzas with a body `tag:n` in `text`, in order of arrival. */
function bodies(text: string, tag: string): string[] {
  return [...text.matchAll(new RegExp(`<body>(${tag}:\\d+)</body>`, 'g'))].map((m) => m[1] as string);
}

/** A new connection authenticated as `user`, not bound (ready for <resume/> or bind). */
async function authenticate(port: number, user: string): Promise<RawClient> {
  const c = await RawClient.connect(port);
  const features = await c.authenticate(user, PW);
  expect(features).toMatch(/<sm xmlns=['"]urn:xmpp:sm:3['"]\/>/); // advertised after authentication
  return c;
}

async function enable(c: RawClient, resume: boolean): Promise<{ id?: string; max?: number }> {
  await c.send(`<enable xmlns='${SM}'${resume ? " resume='true'" : ''}/>`);
  const m = await c.waitFor(/<enabled\b[^>]*\/>/);
  const id = /\bid=['"]([^'"]+)['"]/.exec(m[0])?.[1];
  const max = /\bmax=['"](\d+)['"]/.exec(m[0])?.[1];
  return { id, max: max === undefined ? undefined : Number(max) };
}

function chat(to: string, body: string): string {
  return `<message type='chat' to='${to}'><body>${body}</body></message>`;
}

describe('XEP-0198 stream management', () => {
  let srv: TestServer;
  let port: number;

  beforeAll(async () => {
    srv = await startTestServer({ modules: { sm: { resumeSeconds: 2, maxUnacked: 40 } } });
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    await srv?.close();
  });

  async function user(name: string): Promise<string> {
    const local = uniqueUser(name);
    await srv.addUser(local, PW);
    return local;
  }

  it('counts in both directions: <r/> is answered with the stanzas handled, the server asks for acks, a too-high h is a stream error', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    const a = await RawClient.login(port, alice, PW, { resource: 'r', presence: true });
    const b = await RawClient.login(port, bob, PW, { resource: 'r', presence: true });
    await enable(a, false);
    // Three stanzas after <enable/> (the pings), then a request.
    for (let i = 0; i < 3; i++) await a.ping();
    await a.send(`<r xmlns='${SM}'/>`);
    await a.waitFor(new RegExp(`<a xmlns=['"]${SM}['"] h=['"]3['"]/>`));

    // Five stanzas to Alice make the server ask (ackEvery defaults to 5); acking them is fine.
    for (let i = 1; i <= 5; i++) await b.send(chat(a.jid, `n:${i}`));
    await a.waitFor(new RegExp(`<r xmlns=['"]${SM}['"]/>`));
    // Once all five have arrived (the request came after the fifth stanza, not the last message):
    // 3 ping results + 5 messages = 8 stanzas sent to Alice since <enable/>.
    await a.waitFor(/<body>n:5<\/body>/);
    await a.send(`<a xmlns='${SM}' h='8'/>`);
    await a.ping();
    // Acknowledging more than was sent ends the stream (§4 handled-count-too-high).
    await a.send(`<a xmlns='${SM}' h='1000'/>`);
    expect(await a.waitStreamError()).toBe('undefined-condition');
    expect(a.text).toMatch(/<handled-count-too-high xmlns=['"]urn:xmpp:sm:3['"] h=['"]1000['"] send-count=['"]9['"]\/>/);
    b.end();
  });

  it('refuses <enable/> before binding and twice, and <resume/> after binding', async () => {
    const alice = await user('alice');
    const c = await authenticate(port, alice);
    await c.send(`<enable xmlns='${SM}'/>`);
    await c.waitFor(/<failed xmlns=['"]urn:xmpp:sm:3['"]><unexpected-request xmlns=['"]urn:ietf:params:xml:ns:xmpp-stanzas['"]\/><\/failed>/);
    await c.bind('x');
    await enable(c, false);
    await c.send(`<enable xmlns='${SM}'/>`);
    await c.waitFor(/<failed xmlns=['"]urn:xmpp:sm:3['"]><unexpected-request/);
    await c.send(`<resume xmlns='${SM}' previd='whatever' h='0'/>`);
    await c.waitFor(/<failed xmlns=['"]urn:xmpp:sm:3['"]><unexpected-request/);
    await c.ping();
    c.end();
  });

  it('resumes after the socket is killed mid-conversation: nothing lost, nothing duplicated, presence never interrupted', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    const a = await RawClient.login(port, alice, PW, { resource: 'phone', presence: true });
    const b = await RawClient.login(port, bob, PW, { resource: 'desk', presence: true });
    const { id, max } = await enable(a, true);
    expect(id).toMatch(/^[A-Za-z0-9_-]{20,}$/);
    expect(max).toBe(2);

    for (let i = 1; i <= 3; i++) await b.send(chat(a.jid, `m:${i}`));
    await a.waitFor(/m:3</);
    expect(bodies(a.text, 'm')).toEqual(['m:1', 'm:2', 'm:3']);
    await a.send(`<a xmlns='${SM}' h='1'/>`); // only the first one was "handled" by the client
    await a.ping(); // the ack is processed before the socket dies
    a.destroy();
    await hibernated(srv, a.jid);
    // While Alice is away, more arrive: they wait in her hibernated session, not in offline storage.
    for (let i = 4; i <= 6; i++) await b.send(chat(a.jid, `m:${i}`));
    await b.ping();

    const a2 = await authenticate(port, alice);
    // h='2': the client says it processed only m:1 and m:2 before its socket died.
    await a2.send(`<resume xmlns='${SM}' previd='${id}' h='2'/>`);
    await a2.waitFor(new RegExp(`<resumed xmlns=['"]${SM}['"] previd=['"]${id}['"] h=['"]\\d+['"]/>`));
    // Everything after stanza 2 comes again, in order, then the new ones; nothing twice.
    await a2.waitFor(/m:6</);
    expect(bodies(a2.textSince(0), 'm')).toEqual(['m:3', 'm:4', 'm:5', 'm:6']);
    // The same session goes on: same full JID, still available (Bob saw no unavailable presence).
    await b.send(chat(`${alice}@localhost/phone`, 'm:7'));
    await a2.waitFor(/m:7</);
    expect(b.text).not.toMatch(/type=['"]unavailable['"]/);
    await a2.ping();
    // The id stays valid for the next drop, but an h below what was already acknowledged is refused
    // (with the server's own count) and leaves the session alone.
    const a3 = await authenticate(port, alice);
    await a3.send(`<resume xmlns='${SM}' previd='${id}' h='0'/>`);
    await a3.waitFor(/<failed xmlns=['"]urn:xmpp:sm:3['"] h=['"]\d+['"]><unexpected-request/);
    await a2.ping();
    a3.end();
    a2.end();
    b.end();
  });

  it('pipelined stanzas after <resume/> are processed by the resumed session, in order', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    const a = await RawClient.login(port, alice, PW, { resource: 'r', presence: true });
    const b = await RawClient.login(port, bob, PW, { resource: 'r', presence: true });
    const { id } = await enable(a, true);
    a.destroy();
    await hibernated(srv, a.jid);
    const a2 = await authenticate(port, alice);
    await a2.send(`<resume xmlns='${SM}' previd='${id}' h='0'/>${chat(b.jid, 'p:1')}${chat(b.jid, 'p:2')}<r xmlns='${SM}'/>`);
    await b.waitFor(/p:2</);
    expect(bodies(b.text, 'p')).toEqual(['p:1', 'p:2']);
    // h counts across the connections: the two messages after <resumed/>.
    await a2.waitFor(new RegExp(`<a xmlns=['"]${SM}['"] h=['"]2['"]/>`));
    a2.end();
    b.end();
  });

  it("refuses to resume another account's session or an unknown id, exactly alike", async () => {
    const alice = await user('alice');
    const mallory = await user('mallory');
    const a = await RawClient.login(port, alice, PW, { resource: 'r', presence: true });
    const { id } = await enable(a, true);
    const m = await authenticate(port, mallory);
    await m.send(`<resume xmlns='${SM}' previd='${id}' h='0'/>`);
    const stolen = (await m.waitFor(/<failed\b[\s\S]*?<\/failed>/))[0];
    await m.send(`<resume xmlns='${SM}' previd='no-such-session' h='0'/>`);
    const unknown = (await m.waitFor(/<failed\b[\s\S]*?<\/failed>/))[0];
    expect(stolen).toBe(unknown);
    expect(stolen).toContain('item-not-found');
    // Alice's session is untouched; Mallory can still bind normally after a failed resume.
    await a.ping();
    await m.bind('m');
    await m.ping();
    a.end();
    m.end();
  });

  it('a resume while the old connection still looks alive takes the session over and drops the old connection', async () => {
    const alice = await user('alice');
    const a = await RawClient.login(port, alice, PW, { resource: 'r', presence: true });
    const { id } = await enable(a, true);
    await a.ping();
    const a2 = await authenticate(port, alice);
    await a2.send(`<resume xmlns='${SM}' previd='${id}' h='1'/>`);
    await a2.waitFor(/<resumed\b/);
    await a.closed();
    await a2.ping();
    a2.end();
  });

  it('a session not resumed in time ends: presence goes unavailable and unacknowledged messages go to offline storage', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    const a = await RawClient.login(port, alice, PW, { resource: 'r', presence: true });
    const b = await RawClient.login(port, bob, PW, { resource: 'r', presence: true });
    await enable(a, true);
    await b.send(chat(a.jid, 'o:1'));
    await a.waitFor(/o:1</);
    const ended = afterSessionClosed(srv, a.jid);
    a.destroy(); // never acknowledged
    await hibernated(srv, a.jid);
    await b.send(chat(a.jid, 'o:2')); // held by the hibernated session
    await b.ping();
    // resumeSeconds is 2 in this server: the session ends by itself.
    await ended;
    const a2 = await RawClient.login(port, alice, PW, { resource: 'again', presence: true });
    await a2.waitFor(/o:2</);
    expect(bodies(a2.text, 'o')).toEqual(['o:1', 'o:2']);
    expect(a2.text).toMatch(/<delay xmlns=['"]urn:xmpp:delay['"]/);
    a2.end();
    b.end();
  });

  it('a client that never acknowledges is cut off at maxUnacked', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    const a = await RawClient.login(port, alice, PW, { resource: 'r', presence: true });
    const b = await RawClient.login(port, bob, PW, { resource: 'r', presence: true });
    await enable(a, false);
    for (let i = 1; i <= 45; i++) await b.send(chat(a.jid, `u:${i}`));
    expect(await a.waitStreamError()).toBe('resource-constraint');
    // The ones it never acknowledged were not thrown away: they wait offline.
    const a2 = await RawClient.login(port, alice, PW, { resource: 'r2', presence: true });
    await waitUntil(() => bodies(a2.text, 'u').length >= 45, 5000, 'all 45 messages');
    await a2.ping();
    const got = bodies(a2.text, 'u');
    expect(got).toHaveLength(45); // none twice
    expect(new Set(got)).toEqual(new Set(Array.from({ length: 45 }, (_, i) => `u:${i + 1}`)));
    a2.end();
    b.end();
  });

  it('rejects a malformed h', async () => {
    const alice = await user('alice');
    const a = await RawClient.login(port, alice, PW, { resource: 'r' });
    await enable(a, false);
    await a.send(`<a xmlns='${SM}' h='-1'/>`);
    expect(await a.waitStreamError()).toBe('invalid-xml');
  });
});
