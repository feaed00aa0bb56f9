// XEP-0045 use cases with three real @xmpp/client users (alice, bob, carol) and one server:
// leaving by broadcast unavailable presence (RFC 6121 §4.6.3, §7.14) with the exit status, the
// status codes 100/104/170/171/172/173/210/333 (§15.6), voice requests and their approval (§7.13,
// §8.6), registration requests approved by an admin (§7.10, §9.9) with the reserved nick (§7.12)
// and nick lock-down, unique room names (muc#unique) and the room directory paged with XEP-0059.
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { barrier, connect, iqError, type TestClient, xml } from '../helpers/client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';
import {
  adminSet, adminSetError, bodyFrom, configure, createInstant, errorCondition, groupchat, item, join, NS_MUC_ADMIN, NS_XDATA, statusCodes,
} from '../helpers/muc.js';

const SERVICE = 'conference.localhost';
const NS_REQUEST = 'http://jabber.org/protocol/muc#request';
const NS_REGISTER_FORM = 'http://jabber.org/protocol/muc#register';
const NS_INFO = 'http://jabber.org/protocol/disco#info';
const NS_ITEMS = 'http://jabber.org/protocol/disco#items';
const NS_RSM = 'http://jabber.org/protocol/rsm';
const NS_UNIQUE = 'http://jabber.org/protocol/muc#unique';
const PAGE_CAP = 3;

let srv: TestServer;
let alice: TestClient;
let bob: TestClient;
let carol: TestClient;
let roomSeq = 0;
let idSeq = 0;
const newRoom = () => `uc${process.pid}x${++roomSeq}@${SERVICE}`;
const nextId = () => `uc-${++idSeq}`;
const bareOf = (c: TestClient) => c.jid.split('/')[0] as string;

async function client(): Promise<TestClient> {
  const u = uniqueUser('mucu');
  await srv.addUser(u);
  return connect({ port: srv.ports.c2s as number, username: u });
}

beforeAll(async () => {
  srv = await startTestServer({ modules: { muc: { lockRegisteredNicks: true, voiceRequestInterval: 600, roomListPageSize: PAGE_CAP, maxRoomsPerUser: 40 } } });
  [alice, bob, carol] = await Promise.all([client(), client(), client()]);
  for (const c of [alice, bob, carol]) await c.send(xml('presence'));
});
afterAll(async () => {
  await Promise.all([alice, bob, carol].map((c) => c?.stop()));
  await srv?.close();
});

const presenceFrom = (c: TestClient, from: string, pred: (el: Element) => boolean = () => true) =>
  c.waitFor((el) => el.name === 'presence' && el.attrs.from === from && pred(el));
const unavailableFrom = (c: TestClient, from: string) => presenceFrom(c, from, (el) => el.attrs.type === 'unavailable');
const statusMessage = (c: TestClient, room: string, code: string) =>
  c.waitFor((el) => el.name === 'message' && el.attrs.from === room && statusCodes(el).includes(code));
const field = (x: Element | undefined, v: string) => x?.getChildren('field').find((f) => f.attrs.var === v)?.getChildText('value') ?? undefined;

/** Sends a message carrying a submitted form to the room; resolves the error reply's condition, or null if none came. */
async function sendForm(c: TestClient, room: string, formType: string, fields: Record<string, string>, expectError: boolean): Promise<string | null> {
  const id = nextId();
  const f = [xml('field', { var: 'FORM_TYPE' }, xml('value', {}, formType))];
  for (const [k, v] of Object.entries(fields)) f.push(xml('field', { var: k }, xml('value', {}, v)));
  await c.send(xml('message', { to: room, id }, xml('x', { xmlns: NS_XDATA, type: 'submit' }, ...f)));
  if (!expectError) return null;
  const e = await c.waitFor((el) => el.name === 'message' && el.attrs.id === id && el.attrs.type === 'error');
  return errorCondition(e) ?? '';
}

function register(c: TestClient, room: string, nick?: string): Promise<Element> {
  const form = nick === undefined ? [] : [xml('x', { xmlns: NS_XDATA, type: 'submit' }, xml('field', { var: 'FORM_TYPE' }, xml('value', {}, NS_REGISTER_FORM)), xml('field', { var: 'muc#register_roomnick' }, xml('value', {}, nick)))];
  return c.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: 'jabber:iq:register' }, ...form)));
}

describe('leaving by broadcast unavailable presence (RFC 6121 §4.6.3, XEP-0045 §7.14)', () => {
  it('reaches every room the session entered, with the exit status; a broadcast away does not change room presence', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    const dave = await client();
    const erin = await client(); // never sends initial presence: its directed presence still counts
    await dave.send(xml('presence'));
    await join(dave, `${room}/dave`);
    await join(erin, `${room}/erin`);
    await presenceFrom(alice, `${room}/erin`, (el) => !el.attrs.type);
    // §7.3: a broadcast change of availability is not sent to the room.
    // The groupchat after it is the barrier: same sender, same room, same recipient, in order.
    await dave.send(xml('presence', {}, xml('show', {}, 'away')));
    await groupchat(dave, room, 'after-away');
    await bodyFrom(alice, `${room}/dave`, 'after-away');
    expect(alice.received.some((el) => el.name === 'presence' && el.attrs.from === `${room}/dave` && el.getChildText('show') === 'away')).toBe(false);

    await dave.send(xml('presence', { type: 'unavailable' }, xml('status', {}, 'gone fishing')));
    const gone = await unavailableFrom(alice, `${room}/dave`);
    expect(gone.getChildText('status')).toBe('gone fishing');
    expect(item(gone)?.attrs.role).toBe('none');
    const self = await unavailableFrom(dave, `${room}/dave`);
    expect(statusCodes(self)).toContain('110');

    await erin.send(xml('presence', { type: 'unavailable' }, xml('status', {}, 'bye')));
    expect((await unavailableFrom(alice, `${room}/erin`)).getChildText('status')).toBe('bye');
    // Both left: a message from them is now refused.
    await groupchat(dave, room, 'still here?');
    const e = await dave.waitFor((el) => el.name === 'message' && el.attrs.type === 'error' && el.getChildText('body') === 'still here?');
    expect(errorCondition(e)).toBe('not-acceptable');
    await Promise.all([dave.stop(), erin.stop()]);
  });

  it('an error presence from an occupant removes it with 333 (§14.1)', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    await join(bob, `${room}/bob`);
    await bob.send(xml('presence', { to: `${room}/bob`, type: 'error' }, xml('error', { type: 'cancel' }, xml('remote-server-not-found', { xmlns: 'urn:ietf:params:xml:ns:xmpp-stanzas' }))));
    const gone = await unavailableFrom(alice, `${room}/bob`);
    expect(statusCodes(gone)).toContain('333');
  });
});

describe('status codes (§15.6)', () => {
  it('100 on entering a non-anonymous room only; 172/173 without 104 for a privacy change, 104 for others', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    expect(statusCodes(await join(bob, `${room}/bob`))).not.toContain('100');
    await configure(alice, room, { whois: 'anyone' });
    const m172 = await statusMessage(bob, room, '172');
    expect(statusCodes(m172)).not.toContain('104');
    expect(m172.getChild('body')).toBeUndefined();
    expect(statusCodes(await join(carol, `${room}/carol`))).toEqual(expect.arrayContaining(['100', '110']));
    await configure(alice, room, { whois: 'moderators', roomname: 'Renamed' });
    expect(statusCodes(await statusMessage(bob, room, '173'))).toContain('104');
    await configure(alice, room, { roomname: 'Again' });
    const m104 = await bob.waitFor((el) => el.name === 'message' && el.attrs.from === room && statusCodes(el).includes('104') && !statusCodes(el).includes('173'));
    expect(statusCodes(m104)).toEqual(['104']);
  });

  it('210 when the service changed the nick the client asked for (surrounding white space), not otherwise', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    const self = await join(bob, `${room}/ bob `);
    expect(self.attrs.from).toBe(`${room}/bob`);
    expect(statusCodes(self)).toContain('210');
    await presenceFrom(alice, `${room}/bob`);
    expect(statusCodes(await join(carol, `${room}/carol`))).not.toContain('210');
    // Nor can a nick change make "carol " next to "carol".
    await bob.send(xml('presence', { to: `${room}/ carol` }));
    const e = await bob.waitFor((el) => el.name === 'presence' && el.attrs.type === 'error' && el.attrs.from === `${room}/ carol`);
    expect(errorCondition(e)).toBe('conflict');
  });

  it('170/171: room logging on join and when it is switched (muc#roomconfig_enablearchiving)', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    const form = (await alice.iq(xml('iq', { type: 'get', to: room }, xml('query', { xmlns: 'http://jabber.org/protocol/muc#owner' })))).getChild('query')?.getChild('x', NS_XDATA);
    const logged = field(form, 'muc#roomconfig_enablearchiving');
    expect(['0', '1']).toContain(logged);
    // Whatever the service default is, a joiner is told exactly when the room is logged.
    expect(statusCodes(await join(bob, `${room}/bob`)).includes('170')).toBe(logged === '1');
    await configure(alice, room, { enablearchiving: logged === '1' ? '0' : '1' });
    expect(statusCodes(await statusMessage(bob, room, logged === '1' ? '171' : '170'))).not.toContain('104');
    await configure(alice, room, { enablearchiving: logged === '1' ? '1' : '0' });
    await statusMessage(bob, room, logged === '1' ? '170' : '171');
    expect(statusCodes(await join(carol, `${room}/carol`))).toContain('170');
  });
});

describe('voice requests (§7.13, §8.6)', () => {
  it('a visitor asks, moderators get the form, a moderator approves; the error cases', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    await configure(alice, room, { moderatedroom: '1' });
    await adminSet(alice, room, { jid: bareOf(carol), affiliation: 'member' });
    await join(bob, `${room}/bob`);
    await join(carol, `${room}/carol`);
    // Not an occupant, and a participant who has voice already.
    const outsider = await client();
    expect(await sendForm(outsider, room, NS_REQUEST, { 'muc#role': 'participant' }, true)).toBe('not-acceptable');
    await outsider.stop();
    expect(await sendForm(carol, room, NS_REQUEST, { 'muc#role': 'participant' }, true)).toBe('not-allowed');

    await sendForm(bob, room, NS_REQUEST, { 'muc#role': 'participant' }, false);
    const req = await alice.waitFor((el) => el.name === 'message' && el.attrs.from === room && el.getChild('x', NS_XDATA) !== undefined);
    const x = req.getChild('x', NS_XDATA);
    expect(x?.attrs.type).toBe('form');
    expect(field(x, 'FORM_TYPE')).toBe(NS_REQUEST);
    expect(field(x, 'muc#roomnick')).toBe('bob');
    expect(field(x, 'muc#jid')).toBe(bob.jid);
    expect(field(x, 'muc#request_allow')).toBe('false');
    // Only moderators get it: nothing by the time an iq Bob sends after it through the room reaches Carol.
    await barrier(bob, carol, { via: `${room}/carol` });
    expect(carol.received.some((el) => el.name === 'message' && el.attrs.from === room && el.attrs.type !== 'error' && el.getChild('x', NS_XDATA) !== undefined)).toBe(false);
    // Asking again at once is refused (rate limit).
    expect(await sendForm(bob, room, NS_REQUEST, { 'muc#role': 'participant' }, true)).toBe('resource-constraint');

    const approval = { 'muc#role': 'participant', 'muc#jid': bob.jid, 'muc#roomnick': 'bob', 'muc#request_allow': 'true' };
    expect(await sendForm(carol, room, NS_REQUEST, approval, true)).toBe('forbidden');
    await barrier(carol); // a role change would have been broadcast while the room handled Carol's form
    expect(carol.received.some((el) => el.name === 'presence' && el.attrs.from === `${room}/bob` && item(el)?.attrs.role === 'participant')).toBe(false);
    expect(await sendForm(alice, room, NS_REQUEST, { ...approval, 'muc#roomnick': 'nobody' }, true)).toBe('item-not-found');

    await sendForm(alice, room, NS_REQUEST, approval, false);
    const granted = await presenceFrom(carol, `${room}/bob`, (el) => item(el)?.attrs.role === 'participant');
    expect(item(granted)?.getChild('actor')?.attrs.nick).toBe('al');
    await groupchat(bob, room, 'I can speak');
    await bodyFrom(carol, `${room}/bob`, 'I can speak');
  });
});

describe('registration requests (§7.10, §9.9)', () => {
  it('in a members-only room an admin approves; the member then enters under the registered nick (210)', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    await configure(alice, room, { membersonly: '1' });
    expect((await iqError(bob, xml('iq', { type: 'set', to: room }, xml('query', { xmlns: 'jabber:iq:register' })))).condition).toBe('bad-request');

    await register(bob, room, 'bobby');
    const req = await alice.waitFor((el) => el.name === 'message' && el.attrs.from === room && field(el.getChild('x', NS_XDATA), 'FORM_TYPE') === NS_REGISTER_FORM);
    const x = req.getChild('x', NS_XDATA);
    expect(field(x, 'muc#jid')).toBe(bareOf(bob));
    expect(field(x, 'muc#register_roomnick')).toBe('bobby');
    expect(field(x, 'muc#register_allow')).toBe('0');
    // Still pending: not a member yet.
    expect(errorCondition(await join(bob, `${room}/bobby`))).toBe('registration-required');

    const approval = { 'muc#jid': bareOf(bob), 'muc#register_roomnick': 'bobby', 'muc#register_allow': '1' };
    expect(await sendForm(carol, room, NS_REGISTER_FORM, approval, true)).toBe('forbidden');
    expect(await sendForm(alice, room, NS_REGISTER_FORM, { ...approval, 'muc#jid': bareOf(carol) }, true)).toBe('item-not-found');
    await sendForm(alice, room, NS_REGISTER_FORM, approval, false);
    const members = await alice.iq(xml('iq', { type: 'get', to: room }, xml('query', { xmlns: NS_MUC_ADMIN }, xml('item', { affiliation: 'member' }))));
    const mine = members.getChild('query')?.getChildren('item').find((i) => i.attrs.jid === bareOf(bob));
    expect(mine?.attrs.nick).toBe('bobby');
    // The request is used up.
    expect(await sendForm(alice, room, NS_REGISTER_FORM, approval, true)).toBe('item-not-found');

    // §7.12 the reserved nick, and §7.10 lock-down: another nick is replaced by it, with 210.
    const reserved = await bob.iq(xml('iq', { type: 'get', to: room }, xml('query', { xmlns: NS_INFO, node: 'x-roomuser-item' })));
    expect(reserved.getChild('query')?.getChild('identity')?.attrs.name).toBe('bobby');
    const none = await carol.iq(xml('iq', { type: 'get', to: room }, xml('query', { xmlns: NS_INFO, node: 'x-roomuser-item' })));
    expect(none.getChild('query')?.getChildren('identity')).toHaveLength(0);
    const self = await join(bob, `${room}/other`);
    expect(self.attrs.from).toBe(`${room}/bobby`);
    expect(statusCodes(self)).toEqual(expect.arrayContaining(['110', '210']));
    expect(item(self)?.attrs.affiliation).toBe('member');
    await bob.send(xml('presence', { to: `${room}/renamed` }));
    const e = await bob.waitFor((el) => el.name === 'presence' && el.attrs.type === 'error' && el.attrs.from === `${room}/renamed`);
    expect(errorCondition(e)).toBe('not-acceptable');
  });

  it('a denied request leaves the user out; in an open room registering makes a member at once', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    await configure(alice, room, { membersonly: '1' });
    await register(carol, room, 'caro');
    await alice.waitFor((el) => el.name === 'message' && el.attrs.from === room && field(el.getChild('x', NS_XDATA), 'muc#jid') === bareOf(carol));
    await sendForm(alice, room, NS_REGISTER_FORM, { 'muc#jid': bareOf(carol), 'muc#register_allow': '0' }, false);
    expect(errorCondition(await join(carol, `${room}/caro`))).toBe('registration-required');

    const open = newRoom();
    await createInstant(alice, open, 'al');
    await register(carol, open, 'caro');
    const members = await alice.iq(xml('iq', { type: 'get', to: open }, xml('query', { xmlns: NS_MUC_ADMIN }, xml('item', { affiliation: 'member' }))));
    expect(members.getChild('query')?.getChildren('item').map((i) => i.attrs.jid)).toContain(bareOf(carol));
  });
});

describe('admin use cases (§9.1)', () => {
  it('a ban frees the registered nick; nobody may ban themselves (conflict)', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    await register(bob, room, 'bobreg');
    expect(errorCondition(await join(carol, `${room}/bobreg`))).toBe('conflict');
    await adminSet(alice, room, { jid: bareOf(bob), affiliation: 'outcast' });
    expect(statusCodes(await join(carol, `${room}/bobreg`))).toContain('110');
    await adminSet(alice, room, { jid: bareOf(carol), affiliation: 'admin' });
    expect(await adminSetError(carol, room, { jid: bareOf(carol), affiliation: 'outcast' })).toBe('conflict');
    expect(await adminSetError(alice, room, { jid: bareOf(alice), affiliation: 'outcast' })).toBe('conflict');
  });
});

describe('unique room names and the paged room directory (§6.3, XEP-0059)', () => {
  it('muc#unique gives a fresh unguessable name each time', async () => {
    const info = await alice.iq(xml('iq', { type: 'get', to: SERVICE }, xml('query', { xmlns: NS_INFO })));
    expect(info.getChild('query')?.getChildren('feature').map((f) => f.attrs.var)).toContain(NS_UNIQUE);
    const ask = async () => (await alice.iq(xml('iq', { type: 'get', to: SERVICE }, xml('unique', { xmlns: NS_UNIQUE })))).getChild('unique', NS_UNIQUE)?.getText() ?? '';
    const [a, b] = [await ask(), await ask()];
    expect(a).toMatch(/^[0-9a-f]{40}$/);
    expect(b).not.toBe(a);
  });

  it('pages with max/after/before/index, caps the page, hides hidden rooms, reports bad requests', async () => {
    for (let i = 0; i < PAGE_CAP + 1; i++) await createInstant(alice, newRoom(), 'al');
    const hidden = newRoom();
    await createInstant(alice, hidden, 'al');
    await configure(alice, hidden, { publicroom: '0' });
    const list = async (set?: Element) => (await bob.iq(xml('iq', { type: 'get', to: SERVICE }, xml('query', { xmlns: NS_ITEMS }, ...(set ? [set] : []))))).getChild('query') as Element;
    const jids = (q: Element) => q.getChildren('item').map((i) => i.attrs.jid as string);
    const rsm = (...c: Element[]) => xml('set', { xmlns: NS_RSM }, ...c);

    const countOnly = await list(rsm(xml('max', {}, '0')));
    expect(jids(countOnly)).toHaveLength(0);
    const total = Number(countOnly.getChild('set', NS_RSM)?.getChildText('count'));
    expect(total).toBeGreaterThan(PAGE_CAP);

    // No <set/> but more rooms than a page: the first page, and a <set/> that says so.
    const plain = await list();
    expect(jids(plain)).toHaveLength(PAGE_CAP);
    expect(plain.getChild('set', NS_RSM)?.getChildText('count')).toBe(String(total));
    // A larger max is capped.
    expect(jids(await list(rsm(xml('max', {}, '1000'))))).toHaveLength(PAGE_CAP);

    // Walk the whole list two at a time.
    const seen: string[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await list(rsm(xml('max', {}, '2'), ...(after ? [xml('after', {}, after)] : [])));
      const got = jids(page);
      if (got.length === 0) break;
      const set = page.getChild('set', NS_RSM) as Element;
      expect(set.getChild('first')?.attrs.index).toBe(String(seen.length));
      expect(set.getChildText('first')).toBe(got[0]);
      expect(set.getChildText('last')).toBe(got.at(-1));
      seen.push(...got);
      after = got.at(-1);
    }
    expect(seen).toHaveLength(total);
    expect(new Set(seen).size).toBe(total);
    expect(seen).not.toContain(hidden);

    // before: the page that ends just before an item; an empty before is the last page; index.
    expect(jids(await list(rsm(xml('max', {}, '2'), xml('before', {}, seen[3] as string))))).toEqual(seen.slice(1, 3));
    expect(jids(await list(rsm(xml('max', {}, '2'), xml('before'))))).toEqual(seen.slice(-2));
    expect(jids(await list(rsm(xml('max', {}, '2'), xml('index', {}, '1'))))).toEqual(seen.slice(1, 3));

    const bad = (set: Element) => iqError(bob, xml('iq', { type: 'get', to: SERVICE }, xml('query', { xmlns: NS_ITEMS }, set)));
    expect((await bad(rsm(xml('after', {}, `nosuch@${SERVICE}`)))).condition).toBe('item-not-found');
    expect((await bad(rsm(xml('max', {}, 'lots')))).condition).toBe('bad-request');
  });
});
