// XEP-0313 message archive management over real client connections: archiving on both sides with
// the XEP-0359 stanza-id (forgeries stripped), what is not archived (no-store, chat states, blocked),
// queries by with/start/end/withtext and ids, RSM paging both ways with <before/> and flip-page,
// form discovery, metadata, preferences (never/roster/always) and the error cases (forbidden,
// item-not-found, bad-request, page cap, storage failures).
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { iqError, connect, type TestClient, xml } from '../helpers/client.js';
import { mamQuery, mamQueryIq, NS_MAM } from '../helpers/mam.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const NS_SID = 'urn:xmpp:sid:0';
const MAX_PAGE = 20;

const bare = (c: TestClient) => c.jid.split('/')[0] as string;
const ping = () => xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' }));
const chat = (to: string, body: string, ...extra: Element[]) => xml('message', { to, type: 'chat', id: `m-${body}` }, xml('body', {}, body), ...extra);
const withBody = (body: string) => (el: Element) => el.name === 'message' && el.getChildText('body') === body;

describe('message archive management (XEP-0313)', () => {
  let srv: TestServer;
  let port: number;
  const clients: TestClient[] = [];

  async function login(username: string): Promise<TestClient> {
    const c = await connect({ port, username });
    clients.push(c);
    await c.send(xml('presence'));
    await c.iq(ping());
    return c;
  }

  async function pair(): Promise<[TestClient, TestClient]> {
    const a = uniqueUser('ma');
    const b = uniqueUser('mb');
    await srv.addUser(a);
    await srv.addUser(b);
    return [await login(a), await login(b)];
  }

  /** Alice sends, Bob receives: resolves the delivered message. */
  async function say(from: TestClient, to: TestClient, body: string): Promise<Element> {
    await from.send(chat(bare(to), body));
    return to.waitFor(withBody(body));
  }

  beforeAll(async () => {
    srv = await startTestServer({ modules: { mam: { maxPageSize: MAX_PAGE, defaultPageSize: 10 } } });
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    for (const c of clients) await c.stop();
    await srv?.close();
  });

  it('advertises urn:xmpp:mam:2 and #extended on the account, and discovers the form', async () => {
    const [alice] = await pair();
    const info = await alice.iq(xml('iq', { type: 'get', to: bare(alice) }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    const features = info.getChild('query')!.getChildren('feature').map((f) => f.attrs.var);
    expect(features).toEqual(expect.arrayContaining([NS_MAM, `${NS_MAM}#extended`]));
    const form = await alice.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: NS_MAM })));
    const vars = form.getChild('query', NS_MAM)!.getChild('x', 'jabber:x:data')!.getChildren('field').map((f) => f.attrs.var);
    expect(vars).toEqual(expect.arrayContaining(['FORM_TYPE', 'with', 'start', 'end', 'withtext', 'before-id', 'after-id', 'ids']));
  });

  it('archives a chat on both sides with the same content and gives the recipient the stanza-id', async () => {
    const [alice, bob] = await pair();
    const got = await say(alice, bob, 'hello bob');
    const sids = got.getChildren('stanza-id', NS_SID);
    expect(sids).toHaveLength(1);
    expect(sids[0]!.attrs.by).toBe(bare(bob));
    const reply = await say(bob, alice, 'hi alice');
    expect(reply.getChild('stanza-id', NS_SID)?.attrs.by).toBe(bare(alice));

    const mine = await mamQuery(alice);
    const theirs = await mamQuery(bob);
    expect(mine.bodies).toEqual(['hello bob', 'hi alice']);
    expect(theirs.bodies).toEqual(['hello bob', 'hi alice']);
    expect(mine.complete && theirs.complete).toBe(true);
    expect(theirs.count).toBe(2);
    // Bob's archive UID is the stanza-id he was given; Alice's for the reply likewise.
    expect(theirs.ids[0]).toBe(sids[0]!.attrs.id);
    expect(mine.ids[1]).toBe(reply.getChild('stanza-id', NS_SID)!.attrs.id);
    // The result shape (§4): to the querying resource, from the archive, forwarded with a delay.
    const r = theirs.results[0]!;
    expect(r.attrs.to).toBe(bob.jid);
    expect(r.attrs.from).toBe(bare(bob));
    const fwd = r.getChild('result', NS_MAM)!.getChild('forwarded', 'urn:xmpp:forward:0')!;
    expect(fwd.getChild('delay', 'urn:xmpp:delay')?.attrs.stamp).toMatch(/^\d{4}-\d\d-\d\dT/);
    const inner = fwd.getChild('message')!;
    expect(inner.attrs.from).toBe(alice.jid);
    expect(inner.attrs.to).toBe(bare(bob));
    expect(inner.attrs.type).toBe('chat');
  });

  it('strips a stanza-id forged by the sender and keeps only its own', async () => {
    const [alice, bob] = await pair();
    const forged = xml('stanza-id', { xmlns: NS_SID, by: bare(bob), id: 'forged-id' });
    const other = xml('stanza-id', { xmlns: NS_SID, by: 'room@conference.example.org', id: 'foreign' });
    await alice.send(chat(bare(bob), 'forgery', forged, other));
    const got = await bob.waitFor(withBody('forgery'));
    const ours = got.getChildren('stanza-id', NS_SID).filter((s) => s.attrs.by === bare(bob));
    expect(ours).toHaveLength(1);
    expect(ours[0]!.attrs.id).not.toBe('forged-id');
    // A stanza-id by somebody else's entity is not ours to judge.
    expect(got.getChildren('stanza-id', NS_SID).some((s) => s.attrs.id === 'foreign')).toBe(true);
    expect((await mamQuery(bob)).ids).toEqual([ours[0]!.attrs.id]);
  });

  it('does not archive no-store hints, headlines or bodiless chat states; notes to self are stored once', async () => {
    const [alice, bob] = await pair();
    await alice.send(chat(bare(bob), 'secret', xml('no-store', { xmlns: 'urn:xmpp:hints' })));
    await alice.send(chat(bare(bob), 'ephemeral', xml('no-permanent-store', { xmlns: 'urn:xmpp:hints' })));
    await alice.send(xml('message', { to: bare(bob), type: 'chat' }, xml('composing', { xmlns: 'http://jabber.org/protocol/chatstates' })));
    await alice.send(xml('message', { to: bare(bob), type: 'headline' }, xml('body', {}, 'news')));
    await alice.send(xml('message', { to: bare(bob) }, xml('body', {}, 'normal one')));
    await alice.send(chat(bare(alice), 'note to self'));
    await bob.waitFor(withBody('normal one'));
    const secret = await bob.waitFor(withBody('secret'));
    expect(secret.getChild('stanza-id', NS_SID)).toBeUndefined();
    await alice.waitFor(withBody('note to self'));
    expect((await mamQuery(alice)).bodies).toEqual(['normal one', 'note to self']);
    expect((await mamQuery(bob)).bodies).toEqual(['normal one']);
    expect((await mamQuery(alice, { fields: { with: bare(alice) } })).bodies).toEqual(['note to self']);
  });

  it('filters by with (bare and full), start/end and withtext; selects by ids; serves metadata', async () => {
    const [alice, bob] = await pair();
    const carolName = uniqueUser('mc');
    await srv.addUser(carolName);
    const carol = await login(carolName);
    await say(alice, bob, 'apples and pears');
    await say(bob, alice, 'Pears are GREAT');
    // Stamps have millisecond resolution: keep t1 clear of both neighbours.
    await new Promise((r) => setTimeout(r, 20));
    const t1 = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 20));
    await say(alice, carol, 'apples for carol');
    const m = await mamQuery(alice, { fields: { with: bare(bob) } });
    expect(m.bodies).toEqual(['apples and pears', 'Pears are GREAT']);
    expect((await mamQuery(alice, { fields: { with: bob.jid } })).bodies).toEqual(['Pears are GREAT']);
    expect((await mamQuery(alice, { fields: { with: `${bare(bob)}/elsewhere` } })).bodies).toEqual([]);
    expect((await mamQuery(alice, { fields: { start: t1 } })).bodies).toEqual(['apples for carol']);
    expect((await mamQuery(alice, { fields: { end: t1 } })).bodies).toEqual(['apples and pears', 'Pears are GREAT']);
    expect((await mamQuery(alice, { fields: { withtext: 'pears' } })).bodies).toEqual(['apples and pears', 'Pears are GREAT']);
    expect((await mamQuery(alice, { fields: { withtext: 'apples carol' } })).bodies).toEqual(['apples for carol']);
    const all = await mamQuery(alice);
    expect((await mamQuery(alice, { fields: { ids: [all.ids[2]!, all.ids[0]!] } })).bodies).toEqual(['apples and pears', 'apples for carol']);
    expect((await mamQuery(alice, { fields: { 'after-id': all.ids[0]!, 'before-id': all.ids[2]! } })).bodies).toEqual(['Pears are GREAT']);
    const meta = await alice.iq(xml('iq', { type: 'get' }, xml('metadata', { xmlns: NS_MAM })));
    const md = meta.getChild('metadata', NS_MAM)!;
    expect(md.getChild('start')?.attrs.id).toBe(all.ids[0]);
    expect(md.getChild('end')?.attrs.id).toBe(all.ids[2]);
    const [empty] = await pair();
    const none = await empty.iq(xml('iq', { type: 'get' }, xml('metadata', { xmlns: NS_MAM })));
    expect(none.getChild('metadata', NS_MAM)!.children).toHaveLength(0);
  });

  it('pages forward with <after/> and backward from <before/>, flips pages, and caps max', async () => {
    const [alice, bob] = await pair();
    for (let i = 0; i < 25; i++) await alice.send(chat(bare(bob), `n${i}`));
    await bob.waitFor(withBody('n24'));
    const expected = Array.from({ length: 25 }, (_, i) => `n${i}`);

    const fwd: (string | null)[] = [];
    let after: string | undefined;
    for (;;) {
      const p = await mamQuery(bob, { rsm: { max: 10, ...(after ? { after } : {}) } });
      expect(p.count).toBe(25);
      expect(p.firstIndex).toBe(fwd.length);
      expect(p.first).toBe(p.ids[0]);
      expect(p.last).toBe(p.ids[p.ids.length - 1]);
      fwd.push(...p.bodies);
      if (p.complete) break;
      after = p.last;
    }
    expect(fwd).toEqual(expected);

    const back: (string | null)[] = [];
    let before = '';
    for (;;) {
      const p = await mamQuery(bob, { rsm: { max: 10, before } });
      back.unshift(...p.bodies);
      if (p.complete) break;
      before = p.first!;
    }
    expect(back).toEqual(expected);

    const last = await mamQuery(bob, { rsm: { max: 3, before: '' } });
    expect(last.bodies).toEqual(['n22', 'n23', 'n24']);
    expect(last.firstIndex).toBe(22);
    expect(last.complete).toBe(false);
    const flipped = await mamQuery(bob, { rsm: { max: 3, before: '' }, flip: true });
    expect(flipped.bodies).toEqual(['n24', 'n23', 'n22']);
    expect(flipped.first).toBe(last.first); // flipping changes the order sent, not the page

    const capped = await mamQuery(bob, { rsm: { max: 1000 } });
    expect(capped.results).toHaveLength(MAX_PAGE);
    expect(capped.complete).toBe(false);
    expect((await mamQuery(bob)).results).toHaveLength(10); // the default page size
    const counted = await mamQuery(bob, { rsm: { max: 0 } });
    expect(counted.results).toHaveLength(0);
    expect(counted.count).toBe(25);
  });

  it('answers forbidden, item-not-found and bad-request', async () => {
    const [alice, bob] = await pair();
    await say(alice, bob, 'x');
    expect(await iqError(alice, mamQueryIq({ to: bare(bob) }, 'e1'))).toEqual({ condition: 'forbidden', type: 'auth' });
    expect((await iqError(alice, xml('iq', { type: 'get', to: bare(bob) }, xml('prefs', { xmlns: NS_MAM })))).condition).toBe('forbidden');
    expect((await iqError(alice, xml('iq', { type: 'get', to: bare(bob) }, xml('metadata', { xmlns: NS_MAM })))).condition).toBe('forbidden');
    const bobIds = (await mamQuery(bob)).ids;
    // Bob's UID does not exist in Alice's archive.
    expect(await iqError(alice, mamQueryIq({ rsm: { after: bobIds[0]! } }, 'e2'))).toEqual({ condition: 'item-not-found', type: 'cancel' });
    expect((await iqError(alice, mamQueryIq({ rsm: { before: 'no-such-id' } }, 'e3'))).condition).toBe('item-not-found');
    expect((await iqError(alice, mamQueryIq({ fields: { 'after-id': 'no-such-id' } }, 'e4'))).condition).toBe('item-not-found');
    expect((await iqError(alice, mamQueryIq({ fields: { ids: ['no-such-id'] } }, 'e5'))).condition).toBe('item-not-found');
    const bad = { condition: 'bad-request', type: 'modify' };
    expect(await iqError(alice, mamQueryIq({ fields: { start: 'yesterday' } }, 'e6'))).toEqual(bad);
    expect(await iqError(alice, mamQueryIq({ fields: { end: '2024-13-01T00:00:00Z' } }, 'e7'))).toEqual(bad);
    expect(await iqError(alice, mamQueryIq({ fields: { with: 'a@b@c' } }, 'e8'))).toEqual(bad);
    expect(await iqError(alice, mamQueryIq({ fields: { 'no-such-field': 'x' } }, 'e9'))).toEqual(bad);
    expect(await iqError(alice, mamQueryIq({ rsm: { max: -1 } }, 'e10'))).toEqual(bad);
    const wrongType = xml('iq', { type: 'set' }, xml('query', { xmlns: NS_MAM }, xml('x', { xmlns: 'jabber:x:data', type: 'submit' }, xml('field', { var: 'FORM_TYPE' }, xml('value', {}, 'urn:xmpp:mam:1')))));
    expect(await iqError(alice, wrongType)).toEqual(bad);
    expect(await iqError(alice, xml('iq', { type: 'set' }, xml('prefs', { xmlns: NS_MAM, default: 'sometimes' })))).toEqual(bad);
  });

  it('follows preferences: never, roster, always and never lists', async () => {
    const [alice, bob] = await pair();
    const carolName = uniqueUser('mc');
    await srv.addUser(carolName);
    const carol = await login(carolName);
    const prefs = (def: string, always: string[] = [], never: string[] = []) =>
      xml('iq', { type: 'set' }, xml('prefs', { xmlns: NS_MAM, default: def }, xml('always', {}, ...always.map((j) => xml('jid', {}, j))), xml('never', {}, ...never.map((j) => xml('jid', {}, j)))));

    const initial = await alice.iq(xml('iq', { type: 'get' }, xml('prefs', { xmlns: NS_MAM })));
    expect(initial.getChild('prefs', NS_MAM)?.attrs.default).toBe('always');

    const set = await alice.iq(prefs('never', [bare(carol)]));
    expect(set.getChild('prefs', NS_MAM)?.attrs.default).toBe('never');
    const read = await alice.iq(xml('iq', { type: 'get' }, xml('prefs', { xmlns: NS_MAM })));
    expect(read.getChild('prefs', NS_MAM)!.getChild('always')!.getChildren('jid').map((j) => j.getText())).toEqual([bare(carol)]);
    await say(alice, bob, 'never stored');
    const got = await say(bob, alice, 'never stored either');
    expect(got.getChild('stanza-id', NS_SID)).toBeUndefined();
    await say(alice, carol, 'always for carol');
    expect((await mamQuery(alice)).bodies).toEqual(['always for carol']);
    // Bob's own archive follows Bob's prefs.
    expect((await mamQuery(bob)).bodies).toEqual(['never stored', 'never stored either']);

    await alice.iq(prefs('roster'));
    await srv.storage.roster.setItem(bare(alice), { jid: bare(bob), subscription: 'both', ask: false, approved: false, groups: [] });
    await say(alice, bob, 'bob is in my roster');
    await say(alice, carol, 'carol is not');
    expect((await mamQuery(alice)).bodies).toEqual(['always for carol', 'bob is in my roster']);

    await alice.iq(prefs('always', [], [bare(bob)]));
    await say(alice, bob, 'bob is never');
    await say(alice, carol, 'carol again');
    expect((await mamQuery(alice)).bodies).toEqual(['always for carol', 'bob is in my roster', 'carol again']);
  });

  it('does not archive messages refused by blocking (XEP-0191), on either side', async () => {
    const [alice, bob] = await pair();
    await bob.iq(xml('iq', { type: 'set' }, xml('block', { xmlns: 'urn:xmpp:blocking' }, xml('item', { jid: bare(alice) }))));
    await alice.send(chat(bare(bob), 'you blocked me'));
    const err = await alice.waitFor((el) => el.name === 'message' && el.attrs.type === 'error');
    expect(err.getChild('error')?.getChild('service-unavailable')).toBeTruthy();
    expect((await mamQuery(bob)).bodies).toEqual([]);
    // Bob sending to the JID he blocked is refused before routing: not in his archive.
    await bob.send(chat(bare(alice), 'to a blocked contact'));
    await bob.waitFor((el) => el.name === 'message' && el.attrs.type === 'error');
    expect((await mamQuery(bob)).bodies).toEqual([]);
  });

  it('delivers without a stanza-id when archiving fails, and answers internal-server-error when a query fails', async () => {
    const [alice, bob] = await pair();
    const store = srv.storage.archive;
    const { append, query } = store;
    store.append = () => Promise.reject(new Error('disk on fire'));
    try {
      const got = await say(alice, bob, 'still delivered');
      expect(got.getChild('stanza-id', NS_SID)).toBeUndefined();
    } finally {
      store.append = append;
    }
    store.query = () => Promise.reject(new Error('disk on fire'));
    try {
      expect((await iqError(bob, mamQueryIq({}, 'f1'))).condition).toBe('internal-server-error');
    } finally {
      store.query = query;
    }
    expect((await mamQuery(bob)).bodies).toEqual([]);
  });
});

describe('archive retention and per-user cap', () => {
  let srv: TestServer;
  afterAll(async () => {
    await srv?.close();
  });

  it('purges expired messages on the timer and keeps at most maxPerUser per user', async () => {
    srv = await startTestServer({ modules: { mam: { retentionDays: 1, purgeIntervalSeconds: 0.1, maxPerUser: 3 } } });
    const port = srv.ports.c2s as number;
    const a = uniqueUser('ra');
    const b = uniqueUser('rb');
    await srv.addUser(a);
    const bj = await srv.addUser(b);
    const old = { withBare: 'x@example.org', withFull: 'x@example.org', direction: 'in' as const, stanza: '<message><body>old</body></message>', body: 'old' };
    await srv.storage.archive.append(bj, { ...old, id: 'old-1', stamp: Date.now() - 3 * 86_400_000 });
    await srv.storage.archive.append(bj, { ...old, id: 'fresh-1', stamp: Date.now(), body: 'fresh' });
    for (let i = 0; i < 50 && (await srv.storage.archive.count(bj)) > 1; i++) await new Promise((r) => setTimeout(r, 50));
    const bob = await connect({ port, username: b });
    const alice = await connect({ port, username: a });
    try {
      const left = await mamQuery(bob);
      expect(left.ids).toEqual(['fresh-1']);
      await bob.send(xml('presence'));
      for (let i = 0; i < 5; i++) await alice.send(chat(bj, `c${i}`));
      await bob.waitFor(withBody('c4'));
      expect((await mamQuery(bob)).bodies).toEqual(['c2', 'c3', 'c4']);
    } finally {
      await alice.stop();
      await bob.stop();
    }
  });
});
