// XEP-0045 moderation, administration and ownership with three real @xmpp/client users: kick
// (307), voice in a moderated room, ban (301) and the outcast list, members-only refusal and the
// member list, password refusal, room full, admin/owner lists and the last-owner rule, destroy
// with reason and alternate venue, the per-occupant message rate and the creation limits.
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, iqError, type TestClient, xml } from '../helpers/client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';
import {
  adminSet, adminSetError, bodyFrom, configure, createInstant, errorCondition, groupchat, item, join, NS_MUC_ADMIN, NS_MUC_OWNER, NS_MUC_USER, statusCodes,
} from '../helpers/muc.js';

const SERVICE = 'conference.localhost';
let srv: TestServer;
let alice: TestClient;
let bob: TestClient;
let carol: TestClient;
let roomSeq = 0;
const newRoom = () => `adm${process.pid}x${++roomSeq}@${SERVICE}`;
const bareOf = (c: TestClient) => c.jid.split('/')[0] as string;

async function client(): Promise<TestClient> {
  const u = uniqueUser('muca');
  await srv.addUser(u);
  return connect({ port: srv.ports.c2s as number, username: u });
}

beforeAll(async () => {
  srv = await startTestServer({ modules: { muc: { maxRoomsPerUser: 30, messageBurst: 5, messagesPerSecond: 0.5 } } });
  [alice, bob, carol] = await Promise.all([client(), client(), client()]);
});
afterAll(async () => {
  await Promise.all([alice, bob, carol].map((c) => c?.stop()));
  await srv?.close();
});

function adminList(c: TestClient, room: string, attrs: Record<string, string>): Promise<Element[]> {
  return c.iq(xml('iq', { type: 'get', to: room }, xml('query', { xmlns: NS_MUC_ADMIN }, xml('item', attrs)))).then((r) => (r.getChild('query', NS_MUC_ADMIN) as Element).getChildren('item'));
}

const unavailableFrom = (c: TestClient, from: string) => c.waitFor((el) => el.name === 'presence' && el.attrs.from === from && el.attrs.type === 'unavailable');

describe('moderator use cases (§8)', () => {
  it('kicks a participant (307 with actor and reason); participants cannot kick; admins cannot be kicked', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    await join(bob, `${room}/bob`);
    await join(carol, `${room}/carol`);
    expect(await adminSetError(bob, room, { nick: 'carol', role: 'none' })).toBe('forbidden');
    await adminSet(alice, room, { nick: 'bob', role: 'none' }, 'behave');
    const kicked = await unavailableFrom(bob, `${room}/bob`);
    expect(statusCodes(kicked)).toEqual(expect.arrayContaining(['307', '110']));
    expect(item(kicked)?.getChild('reason')?.getText()).toBe('behave');
    expect(item(kicked)?.getChild('actor')?.attrs.nick).toBe('al');
    const seen = await unavailableFrom(carol, `${room}/bob`);
    expect(statusCodes(seen)).toContain('307');
    // A kicked user may come back (it is not a ban), and alice stays un-kickable by a moderator she made.
    await join(bob, `${room}/bob`);
    await adminSet(alice, room, { nick: 'bob', role: 'moderator' });
    expect(await adminSetError(bob, room, { nick: 'al', role: 'none' })).toBe('not-allowed');
  });

  it('moderated room: visitors cannot speak until granted voice, and lose it when revoked', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    await configure(alice, room, { moderatedroom: '1' });
    const p = await join(bob, `${room}/bob`);
    expect(item(p)?.attrs.role).toBe('visitor');
    await groupchat(bob, room, 'can I talk?');
    const e = await bob.waitFor((el) => el.name === 'message' && el.attrs.type === 'error' && el.attrs.from === room);
    expect(errorCondition(e)).toBe('forbidden');
    await adminSet(alice, room, { nick: 'bob', role: 'participant' });
    const voiced = await bob.waitFor((el) => el.name === 'presence' && el.attrs.from === `${room}/bob` && item(el)?.attrs.role === 'participant');
    expect(statusCodes(voiced)).toContain('110');
    await groupchat(bob, room, 'now I can');
    await bodyFrom(alice, `${room}/bob`, 'now I can');
    const participants = await adminList(alice, room, { role: 'participant' });
    expect(participants.map((i) => i.attrs.nick)).toEqual(['bob']);
    await adminSet(alice, room, { nick: 'bob', role: 'visitor' });
    await bob.waitFor((el) => el.name === 'presence' && el.attrs.from === `${room}/bob` && item(el)?.attrs.role === 'visitor');
  });
});

describe('admin use cases (§9)', () => {
  it('bans a user (301), lists outcasts, refuses the banned user with forbidden', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    await join(bob, `${room}/bob`);
    await adminSet(alice, room, { jid: bareOf(bob), affiliation: 'outcast' }, 'spam');
    const banned = await unavailableFrom(bob, `${room}/bob`);
    expect(statusCodes(banned)).toContain('301');
    expect(item(banned)?.attrs.affiliation).toBe('outcast');
    const outcasts = await adminList(alice, room, { affiliation: 'outcast' });
    expect(outcasts.map((i) => [i.attrs.jid, i.getChildText('reason')])).toEqual([[bareOf(bob), 'spam']]);
    const refused = await join(bob, `${room}/bob`);
    expect(refused.attrs.type).toBe('error');
    expect(errorCondition(refused)).toBe('forbidden');
    // Lists are for admins and owners.
    await join(carol, `${room}/carol`);
    expect((await iqError(carol, xml('iq', { type: 'get', to: room }, xml('query', { xmlns: NS_MUC_ADMIN }, xml('item', { affiliation: 'outcast' }))))).condition).toBe('forbidden');
    // Lifting the ban lets bob in again.
    await adminSet(alice, room, { jid: bareOf(bob), affiliation: 'none' });
    expect((await join(bob, `${room}/bob`)).attrs.type).toBeUndefined();
  });

  it('members-only: non-members get registration-required; members enter; revoking membership removes (321)', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    await configure(alice, room, { membersonly: '1', moderatedroom: '1' });
    const refused = await join(bob, `${room}/bob`);
    expect(errorCondition(refused)).toBe('registration-required');
    await adminSet(alice, room, { jid: bareOf(bob), affiliation: 'member' });
    const p = await join(bob, `${room}/bob`);
    expect(item(p)?.attrs).toMatchObject({ affiliation: 'member', role: 'participant' });
    expect((await adminList(alice, room, { affiliation: 'member' })).map((i) => i.attrs.jid)).toEqual([bareOf(bob)]);
    await adminSet(alice, room, { jid: bareOf(bob), affiliation: 'none' });
    const out = await unavailableFrom(bob, `${room}/bob`);
    expect(statusCodes(out)).toContain('321');
  });

  it('admins cannot touch owners or make admins; the last owner cannot step down (conflict); owner lists', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    await adminSet(alice, room, { jid: bareOf(bob), affiliation: 'admin' });
    expect(await adminSetError(bob, room, { jid: bareOf(alice), affiliation: 'outcast' })).toBe('not-allowed');
    expect(await adminSetError(bob, room, { jid: bareOf(carol), affiliation: 'admin' })).toBe('not-allowed');
    await adminSet(bob, room, { jid: bareOf(carol), affiliation: 'member' });
    expect(await adminSetError(alice, room, { jid: bareOf(alice), affiliation: 'admin' })).toBe('conflict');
    expect((await adminList(alice, room, { affiliation: 'owner' })).map((i) => i.attrs.jid)).toEqual([bareOf(alice)]);
    expect((await adminList(alice, room, { affiliation: 'admin' })).map((i) => i.attrs.jid)).toEqual([bareOf(bob)]);
    expect((await iqError(bob, xml('iq', { type: 'get', to: room }, xml('query', { xmlns: NS_MUC_ADMIN }, xml('item', { affiliation: 'owner' }))))).condition).toBe('forbidden');
    // A second owner, then the first may step down.
    await adminSet(alice, room, { jid: bareOf(bob), affiliation: 'owner' });
    await adminSet(alice, room, { jid: bareOf(alice), affiliation: 'admin' });
    expect((await adminList(bob, room, { affiliation: 'owner' })).map((i) => i.attrs.jid)).toEqual([bareOf(bob)]);
  });
});

describe('entry refusals', () => {
  it('password-protected room: wrong or missing password is not-authorized; the right one enters', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    await configure(alice, room, { passwordprotectedroom: '1', roomsecret: 'open sesame' });
    expect(errorCondition(await join(bob, `${room}/bob`))).toBe('not-authorized');
    expect(errorCondition(await join(bob, `${room}/bob`, [xml('password', {}, 'wrong')]))).toBe('not-authorized');
    expect((await join(bob, `${room}/bob`, [xml('password', {}, 'open sesame')])).attrs.type).toBeUndefined();
    // Protection without a password is refused.
    await expect(configure(alice, room, { roomsecret: '' })).rejects.toMatchObject({ condition: 'not-acceptable' });
  });

  it('room full: service-unavailable', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    await configure(alice, room, { maxusers: '2' });
    await join(bob, `${room}/bob`);
    const full = await join(carol, `${room}/carol`);
    expect(full.attrs.type).toBe('error');
    expect(errorCondition(full)).toBe('service-unavailable');
    expect(full.getChild('error')?.attrs.type).toBe('wait');
  });
});

describe('owner use cases (§10)', () => {
  it('destroys a room with reason and alternate venue; occupants are told; the room is gone', async () => {
    const room = newRoom();
    const alt = newRoom();
    await createInstant(alice, room, 'al');
    await join(bob, `${room}/bob`);
    expect((await iqError(bob, xml('iq', { type: 'set', to: room }, xml('query', { xmlns: NS_MUC_OWNER }, xml('destroy', {}))))).condition).toBe('forbidden');
    await alice.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: NS_MUC_OWNER }, xml('destroy', { jid: alt }, xml('reason', {}, 'moved')))));
    const p = await unavailableFrom(bob, `${room}/bob`);
    const d = p.getChild('x', NS_MUC_USER)?.getChild('destroy') as Element;
    expect(d.attrs.jid).toBe(alt);
    expect(d.getChildText('reason')).toBe('moved');
    expect(item(p)?.attrs).toMatchObject({ affiliation: 'none', role: 'none' });
    const err = await iqError(bob, xml('iq', { type: 'get', to: room }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    expect(err.condition).toBe('item-not-found');
  });
});

describe('limits', () => {
  it('message rate per occupant: a burst beyond the bucket gets resource-constraint', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    for (let i = 0; i < 8; i++) await groupchat(alice, room, `flood ${i}`);
    const e = await alice.waitFor((el) => el.name === 'message' && el.attrs.type === 'error' && el.attrs.from === room);
    expect(errorCondition(e)).toBe('resource-constraint');
  });

  it('rooms per user: creation beyond the limit is refused', async () => {
    const s = await startTestServer({ modules: { muc: { maxRoomsPerUser: 1 } } });
    try {
      const u = uniqueUser('mucl');
      await s.addUser(u);
      const c = await connect({ port: s.ports.c2s as number, username: u });
      await createInstant(c, `one${process.pid}@${SERVICE}`, 'me');
      const refused = await join(c, `two${process.pid}@${SERVICE}/me`);
      expect(errorCondition(refused)).toBe('resource-constraint');
      await c.stop();
    } finally {
      await s.close();
    }
  });
});

describe('nickname registration (§7.10)', () => {
  it('registers a nick (member), reserves it against others, and reports it', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    const form = await bob.iq(xml('iq', { type: 'get', to: room }, xml('query', { xmlns: 'jabber:iq:register' })));
    expect(form.getChild('query')?.getChild('x', 'jabber:x:data')?.getChildren('field').map((f) => f.attrs.var)).toContain('muc#register_roomnick');
    const submit = (c: TestClient, nick: string) =>
      c.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: 'jabber:iq:register' }, xml('x', { xmlns: 'jabber:x:data', type: 'submit' }, xml('field', { var: 'muc#register_roomnick' }, xml('value', {}, nick))))));
    await submit(bob, 'bobby');
    const got = await bob.iq(xml('iq', { type: 'get', to: room }, xml('query', { xmlns: 'jabber:iq:register' })));
    expect(got.getChild('query')?.getChildText('username')).toBe('bobby');
    expect((await adminList(alice, room, { affiliation: 'member' })).map((i) => [i.attrs.jid, i.attrs.nick])).toEqual([[bareOf(bob), 'bobby']]);
    await expect(submit(carol, 'bobby')).rejects.toMatchObject({ condition: 'conflict' });
    expect(errorCondition(await join(carol, `${room}/bobby`))).toBe('conflict');
    expect(item(await join(bob, `${room}/bobby`))?.attrs.affiliation).toBe('member');
  });
});

describe('access control files (ctx.acl) decide over affiliations', () => {
  it('MANAGE is owner, WRITE member, READ visitor, NONE refused; creation needs room.create', async () => {
    const room = newRoom();
    const rights: Record<string, 'MANAGE' | 'WRITE' | 'READ' | 'NONE'> = { [bareOf(alice)]: 'MANAGE', [bareOf(bob)]: 'READ', [bareOf(carol)]: 'NONE' };
    const server = srv.server;
    const previous = server.acl;
    server.acl = {
      allows: (right, who) => right === 'room.create' && who.bare !== bareOf(carol),
      venue: (kind, venue, who) => (kind === 'room' && venue === room ? (rights[who.bare] ?? null) : null),
      entitled: (service, who) => previous.entitled(service, who),
      explain: (question, who) => previous.explain(question, who),
    };
    try {
      await createInstant(alice, room, 'al');
      await configure(alice, room, { membersonly: '1' });
      const b = await join(bob, `${room}/bob`);
      expect(item(b)?.attrs).toMatchObject({ role: 'visitor' });
      expect(errorCondition(await join(carol, `${room}/carol`))).toBe('forbidden');
      rights[bareOf(carol)] = 'WRITE';
      expect(item(await join(carol, `${room}/carol`))?.attrs).toMatchObject({ affiliation: 'member', role: 'participant' });
      // Carol may not create rooms at all.
      expect(errorCondition(await join(carol, `${newRoom()}/carol`))).toBe('not-allowed');
    } finally {
      server.acl = previous;
    }
  });
});
