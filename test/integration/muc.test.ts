// XEP-0045 multi-user chat with three real @xmpp/client users (alice, bob, carol): discovery,
// instant and configured room creation (locked until configured), joining with history and the
// occupant list, nickname conflict, groupchat reflection with XEP-0421 occupant ids, subject,
// private messages, nickname change, leaving and session end, XEP-0410 self-ping, mediated and
// direct (XEP-0249) invitations, and a persistent room surviving a server restart.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join as pathJoin } from 'node:path';
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { barrier, connect, iqError, type TestClient, xml } from '../helpers/client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';
import {
  bodyFrom, configure, createInstant, errorCondition, groupchat, item, join, NS_MUC_OWNER, NS_MUC_USER, NS_OCCUPANT_ID, NS_XDATA, statusCodes, subject,
} from '../helpers/muc.js';

const NS_INFO = 'http://jabber.org/protocol/disco#info';
const NS_ITEMS = 'http://jabber.org/protocol/disco#items';
const SERVICE = 'conference.localhost';

let srv: TestServer;
let alice: TestClient;
let bob: TestClient;
let carol: TestClient;
const users: string[] = [];
let roomSeq = 0;
const newRoom = () => `room${process.pid}x${++roomSeq}@${SERVICE}`;

async function client(): Promise<TestClient> {
  const u = uniqueUser('muc');
  await srv.addUser(u);
  users.push(u);
  return connect({ port: srv.ports.c2s as number, username: u });
}

beforeAll(async () => {
  srv = await startTestServer();
  [alice, bob, carol] = await Promise.all([client(), client(), client()]);
  for (const c of [alice, bob, carol]) await c.send(xml('presence'));
});
afterAll(async () => {
  await Promise.all([alice, bob, carol].map((c) => c?.stop()));
  await srv?.close();
});

const bareOf = (c: TestClient) => c.jid.split('/')[0] as string;
const features = (q: Element) => q.getChildren('feature').map((f) => f.attrs.var as string);

describe('MUC service discovery (§6)', () => {
  it('lists the service in the host disco#items and has the conference identity', async () => {
    const items = await alice.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: NS_ITEMS })));
    expect((items.getChild('query') as Element).getChildren('item').map((i) => i.attrs.jid)).toContain(SERVICE);
    const info = (await alice.iq(xml('iq', { type: 'get', to: SERVICE }, xml('query', { xmlns: NS_INFO })))).getChild('query') as Element;
    expect(info.getChild('identity')?.attrs).toMatchObject({ category: 'conference', type: 'text' });
    expect(features(info)).toContain('http://jabber.org/protocol/muc');
  });

  it('room disco#info carries the muc_* features and the roominfo form; public rooms are listed', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    await configure(alice, room, { roomname: 'Team', roomdesc: 'Daily talk', moderatedroom: '1' });
    const info = (await bob.iq(xml('iq', { type: 'get', to: room }, xml('query', { xmlns: NS_INFO })))).getChild('query') as Element;
    expect(info.getChild('identity')?.attrs).toMatchObject({ category: 'conference', type: 'text', name: 'Team' });
    expect(features(info)).toEqual(expect.arrayContaining(['http://jabber.org/protocol/muc', 'muc_temporary', 'muc_open', 'muc_moderated', 'muc_unsecured', 'muc_public', 'muc_semianonymous']));
    const form = info.getChild('x', NS_XDATA) as Element;
    const desc = form.getChildren('field').find((f) => f.attrs.var === 'muc#roominfo_description');
    expect(desc?.getChildText('value')).toBe('Daily talk');
    const items = (await bob.iq(xml('iq', { type: 'get', to: SERVICE }, xml('query', { xmlns: NS_ITEMS })))).getChild('query') as Element;
    expect(items.getChildren('item').find((i) => i.attrs.jid === room)?.attrs.name).toBe('Team');
    const err = await iqError(bob, xml('iq', { type: 'get', to: `nosuch${process.pid}@${SERVICE}` }, xml('query', { xmlns: NS_INFO })));
    expect(err.condition).toBe('item-not-found');
  });
});

describe('creating and entering rooms (§7.2, §10.1)', () => {
  it('instant room: 201 + owner, locked until the instant form is submitted', async () => {
    const room = newRoom();
    const self = await join(alice, `${room}/al`);
    expect(statusCodes(self)).toEqual(expect.arrayContaining(['110', '201']));
    expect(item(self)?.attrs).toMatchObject({ affiliation: 'owner', role: 'moderator' });
    await subject(alice, room);
    // Locked: others cannot enter yet.
    const refused = await join(bob, `${room}/bob`);
    expect(refused.attrs.type).toBe('error');
    expect(errorCondition(refused)).toBe('item-not-found');
    await alice.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: NS_MUC_OWNER }, xml('x', { xmlns: NS_XDATA, type: 'submit' }))));
    const ok = await join(bob, `${room}/bob`);
    expect(ok.attrs.type).toBeUndefined();
    expect(item(ok)?.attrs).toMatchObject({ affiliation: 'none', role: 'participant' });
  });

  it('reserved room: the owner gets the form, configures, and the room opens', async () => {
    const room = newRoom();
    await join(alice, `${room}/al`);
    await subject(alice, room);
    const res = await alice.iq(xml('iq', { type: 'get', to: room }, xml('query', { xmlns: NS_MUC_OWNER })));
    const form = res.getChild('query', NS_MUC_OWNER)?.getChild('x', NS_XDATA) as Element;
    const vars = form.getChildren('field').map((f) => f.attrs.var);
    expect(vars).toEqual(expect.arrayContaining(['muc#roomconfig_roomname', 'muc#roomconfig_persistentroom', 'muc#roomconfig_membersonly', 'muc#roomconfig_whois', 'muc#roomconfig_maxusers']));
    // Not an owner: no form.
    expect((await iqError(bob, xml('iq', { type: 'get', to: room }, xml('query', { xmlns: NS_MUC_OWNER })))).condition).toBe('forbidden');
    // A bad value is refused and the room stays locked.
    await expect(configure(alice, room, { maxusers: 'lots' })).rejects.toMatchObject({ condition: 'not-acceptable' });
    await configure(alice, room, { roomname: 'Configured', whois: 'anyone' });
    const p = await join(bob, `${room}/bob`);
    expect(statusCodes(p)).toContain('100'); // non-anonymous
  });

  it('cancelling the initial form destroys the room (§10.1.3)', async () => {
    const room = newRoom();
    await join(alice, `${room}/al`);
    await subject(alice, room);
    await alice.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: NS_MUC_OWNER }, xml('x', { xmlns: NS_XDATA, type: 'cancel' }))));
    await alice.waitFor((el) => el.name === 'presence' && el.attrs.from === `${room}/al` && el.attrs.type === 'unavailable');
    const err = await iqError(bob, xml('iq', { type: 'get', to: room }, xml('query', { xmlns: NS_INFO })));
    expect(err.condition).toBe('item-not-found');
  });

  it('join sends the occupant list, history (with limits) and the subject; real JIDs to moderators only', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    await join(bob, `${room}/bob`);
    await subject(bob, room);
    for (let i = 1; i <= 4; i++) await groupchat(alice, room, `m${i}`);
    await bodyFrom(bob, `${room}/al`, 'm4');
    const self = await join(carol, `${room}/carol`, [xml('history', { maxstanzas: '2' })]);
    expect(self.attrs.type).toBeUndefined();
    // Carol (participant, semi-anonymous room) sees alice and bob without real JIDs.
    const pa = carol.received.find((el) => el.name === 'presence' && el.attrs.from === `${room}/al`) as Element;
    expect(item(pa)?.attrs).toMatchObject({ affiliation: 'owner', role: 'moderator' });
    expect(item(pa)?.attrs.jid).toBeUndefined();
    expect(pa.getChild('occupant-id', NS_OCCUPANT_ID)?.attrs.id).toBeTruthy();
    // Alice (moderator) sees carol's real JID.
    const pc = await alice.waitFor((el) => el.name === 'presence' && el.attrs.from === `${room}/carol`);
    expect(item(pc)?.attrs.jid).toBe(carol.jid);
    const subj = await subject(carol, room);
    const history = carol.received.filter((el) => el.name === 'message' && el.getChild('body') && el.attrs.from === `${room}/al`);
    expect(history.map((m) => m.getChildText('body'))).toEqual(['m3', 'm4']);
    expect(history[0]?.getChild('delay', 'urn:xmpp:delay')?.attrs.from).toBe(room);
    // History arrives before the subject.
    expect(carol.received.indexOf(history[1] as Element)).toBeLessThan(carol.received.indexOf(subj));
  });

  it('nickname conflict is refused with 409 conflict; bare room JID with jid-malformed', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    const p = await join(bob, `${room}/al`);
    expect(p.attrs.type).toBe('error');
    expect(errorCondition(p)).toBe('conflict');
    expect(p.getChild('error')?.attrs.code ?? '409').toBe('409');
    await bob.send(xml('presence', { to: room }, xml('x', { xmlns: 'http://jabber.org/protocol/muc' })));
    const e = await bob.waitFor((el) => el.name === 'presence' && el.attrs.from === room && el.attrs.type === 'error');
    expect(errorCondition(e)).toBe('jid-malformed');
  });
});

describe('talking in a room (§7.3-§7.9, XEP-0421, XEP-0410)', () => {
  let room: string;
  beforeAll(async () => {
    room = newRoom();
    await createInstant(alice, room, 'al');
    await join(bob, `${room}/bob`);
    await join(carol, `${room}/carol`);
  });

  it('reflects groupchat to every occupant, sender included, with a stable occupant-id', async () => {
    await groupchat(bob, room, 'hello all');
    const [a, b, c] = await Promise.all([alice, bob, carol].map((x) => bodyFrom(x, `${room}/bob`, 'hello all')));
    const ids = [a, b, c].map((m) => m?.getChild('occupant-id', NS_OCCUPANT_ID)?.attrs.id);
    expect(new Set(ids).size).toBe(1);
    expect(ids[0]).toBeTruthy();
    await groupchat(bob, room, 'again');
    const again = await bodyFrom(alice, `${room}/bob`, 'again');
    expect(again.getChild('occupant-id', NS_OCCUPANT_ID)?.attrs.id).toBe(ids[0]);
    // A forged occupant-id from the client is replaced by the server's.
    await bob.send(xml('message', { to: room, type: 'groupchat' }, xml('body', {}, 'forged'), xml('occupant-id', { xmlns: NS_OCCUPANT_ID, id: 'fake' })));
    const f = await bodyFrom(carol, `${room}/bob`, 'forged');
    expect(f.getChildren('occupant-id', NS_OCCUPANT_ID).map((o) => o.attrs.id)).toEqual([ids[0]]);
  });

  it('refuses groupchat from a non-occupant', async () => {
    const other = newRoom();
    await createInstant(alice, other, 'al');
    await groupchat(bob, other, 'sneaky');
    const e = await bob.waitFor((el) => el.name === 'message' && el.attrs.from === other && el.attrs.type === 'error');
    expect(errorCondition(e)).toBe('not-acceptable');
  });

  it('subject: moderators may change it; participants not unless the room allows', async () => {
    await alice.send(xml('message', { to: room, type: 'groupchat' }, xml('subject', {}, 'Agenda')));
    const s = await carol.waitFor((el) => el.name === 'message' && el.attrs.from === `${room}/al` && el.getChildText('subject') === 'Agenda');
    expect(s.getChild('body')).toBeUndefined();
    await bob.send(xml('message', { to: room, type: 'groupchat' }, xml('subject', {}, 'Mine')));
    const e = await bob.waitFor((el) => el.name === 'message' && el.attrs.type === 'error' && el.getChildText('subject') === 'Mine');
    expect(errorCondition(e)).toBe('forbidden');
    await configure(alice, room, { changesubject: '1' });
    await bob.waitFor((el) => el.name === 'message' && el.attrs.from === room && statusCodes(el).includes('104'));
    await bob.send(xml('message', { to: room, type: 'groupchat' }, xml('subject', {}, 'Mine')));
    await alice.waitFor((el) => el.name === 'message' && el.attrs.from === `${room}/bob` && el.getChildText('subject') === 'Mine');
  });

  it('private messages go to the occupant only, from room/nick; unknown nick is item-not-found', async () => {
    await bob.send(xml('message', { to: `${room}/carol`, type: 'chat' }, xml('body', {}, 'psst')));
    const pm = await bodyFrom(carol, `${room}/bob`, 'psst');
    expect(pm.attrs.type).toBe('chat');
    expect(pm.getChild('x', NS_MUC_USER)).toBeTruthy();
    await bob.send(xml('message', { to: `${room}/nobody`, type: 'chat' }, xml('body', {}, 'lost')));
    const e = await bob.waitFor((el) => el.name === 'message' && el.attrs.type === 'error' && el.attrs.from === `${room}/nobody`);
    expect(errorCondition(e)).toBe('item-not-found');
    // Through the room, after Bob's private messages: had one gone to Alice, it would be there.
    await barrier(bob, alice, { via: `${room}/al` });
    expect(alice.received.some((el) => el.getChildText('body') === 'psst')).toBe(false);
  });

  it('self-ping (XEP-0410) is answered; ping from a non-occupant is not-acceptable', async () => {
    const r = await bob.iq(xml('iq', { type: 'get', to: `${room}/bob` }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
    expect(r.attrs.type).toBe('result');
    const other = newRoom();
    await createInstant(alice, other, 'al');
    expect((await iqError(bob, xml('iq', { type: 'get', to: `${other}/al` }, xml('ping', { xmlns: 'urn:xmpp:ping' })))).condition).toBe('not-acceptable');
  });

  it('presence updates and nickname changes (303) are broadcast', async () => {
    await carol.send(xml('presence', { to: `${room}/carol` }, xml('show', {}, 'away')));
    const upd = await alice.waitFor((el) => el.name === 'presence' && el.attrs.from === `${room}/carol` && el.getChildText('show') === 'away');
    expect(item(upd)?.attrs.role).toBe('participant');
    await carol.send(xml('presence', { to: `${room}/caro` }));
    const gone = await alice.waitFor((el) => el.name === 'presence' && el.attrs.from === `${room}/carol` && el.attrs.type === 'unavailable');
    expect(statusCodes(gone)).toContain('303');
    expect(item(gone)?.attrs.nick).toBe('caro');
    await alice.waitFor((el) => el.name === 'presence' && el.attrs.from === `${room}/caro` && !el.attrs.type);
    // Back, for the following tests.
    await carol.send(xml('presence', { to: `${room}/carol` }));
    await alice.waitFor((el) => el.name === 'presence' && el.attrs.from === `${room}/carol` && !el.attrs.type);
  });

  it('mediated invitation (§7.8.2) reaches the invitee from the room; a decline goes back', async () => {
    const r2 = newRoom();
    await createInstant(alice, r2, 'al');
    await configure(alice, r2, { allowinvites: '1' });
    await alice.send(xml('message', { to: r2 }, xml('x', { xmlns: NS_MUC_USER }, xml('invite', { to: bareOf(bob) }, xml('reason', {}, 'join us')))));
    const inv = await bob.waitFor((el) => el.name === 'message' && el.attrs.from === r2 && !!el.getChild('x', NS_MUC_USER)?.getChild('invite'));
    const i = inv.getChild('x', NS_MUC_USER)?.getChild('invite') as Element;
    expect(i.attrs.from).toBe(bareOf(alice));
    expect(i.getChildText('reason')).toBe('join us');
    await bob.send(xml('message', { to: r2 }, xml('x', { xmlns: NS_MUC_USER }, xml('decline', { to: bareOf(alice) }, xml('reason', {}, 'busy')))));
    const d = await alice.waitFor((el) => el.name === 'message' && el.attrs.from === r2 && !!el.getChild('x', NS_MUC_USER)?.getChild('decline'));
    expect(d.getChild('x', NS_MUC_USER)?.getChild('decline')?.attrs.from).toBe(bareOf(bob));
    // Not an occupant: no invitations.
    await carol.send(xml('message', { to: r2 }, xml('x', { xmlns: NS_MUC_USER }, xml('invite', { to: bareOf(bob) }))));
    const e = await carol.waitFor((el) => el.name === 'message' && el.attrs.from === r2 && el.attrs.type === 'error');
    expect(errorCondition(e)).toBe('not-acceptable');
  });

  it('direct invitation (XEP-0249) passes through the server untouched', async () => {
    await alice.send(xml('message', { to: bob.jid }, xml('x', { xmlns: 'jabber:x:conference', jid: room, reason: 'come', password: 'pw' })));
    const m = await bob.waitFor((el) => el.name === 'message' && el.attrs.from === alice.jid && !!el.getChild('x', 'jabber:x:conference'));
    expect(m.getChild('x', 'jabber:x:conference')?.attrs).toMatchObject({ jid: room, reason: 'come', password: 'pw' });
  });

  it('leaving sends unavailable with 110 to the leaver and to the others', async () => {
    await carol.send(xml('presence', { to: `${room}/carol`, type: 'unavailable' }));
    const selfGone = await carol.waitFor((el) => el.name === 'presence' && el.attrs.from === `${room}/carol` && el.attrs.type === 'unavailable');
    expect(statusCodes(selfGone)).toContain('110');
    await bob.waitFor((el) => el.name === 'presence' && el.attrs.from === `${room}/carol` && el.attrs.type === 'unavailable');
  });

  it('a session that ends leaves its rooms', async () => {
    const u = uniqueUser('mucgone');
    await srv.addUser(u);
    const dave = await connect({ port: srv.ports.c2s as number, username: u });
    await join(dave, `${room}/dave`);
    await alice.waitFor((el) => el.name === 'presence' && el.attrs.from === `${room}/dave` && !el.attrs.type);
    await dave.stop();
    await alice.waitFor((el) => el.name === 'presence' && el.attrs.from === `${room}/dave` && el.attrs.type === 'unavailable');
  });
});

describe('persistent rooms', () => {
  it('survive a server restart with configuration, affiliations and subject', async () => {
    const dataDir = mkdtempSync(pathJoin(tmpdir(), 'parley-muc-'));
    const s1 = await startTestServer({ dataDir });
    const u = uniqueUser('mucp');
    const v = uniqueUser('mucq');
    await s1.addUser(u);
    await s1.addUser(v);
    const room = `persist${process.pid}@${SERVICE}`;
    let a = await connect({ port: s1.ports.c2s as number, username: u });
    await createInstant(a, room, 'owner');
    await configure(a, room, { persistentroom: '1', roomname: 'Kept', membersonly: '1' });
    await a.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: 'http://jabber.org/protocol/muc#admin' }, xml('item', { jid: `${v}@localhost`, affiliation: 'member' }))));
    await a.send(xml('message', { to: room, type: 'groupchat' }, xml('subject', {}, 'Still here')));
    await a.waitFor((el) => el.getChildText('subject') === 'Still here');
    await a.stop();
    await s1.stop();
    // s1 ran on `dataDir`; its own temporary directory stayed empty.
    rmSync(s1.dataDir, { recursive: true, force: true });
    const s2 = await startTestServer({ dataDir });
    try {
      a = await connect({ port: s2.ports.c2s as number, username: u });
      const b = await connect({ port: s2.ports.c2s as number, username: v });
      const info = (await b.iq(xml('iq', { type: 'get', to: room }, xml('query', { xmlns: NS_INFO })))).getChild('query') as Element;
      expect(info.getChild('identity')?.attrs.name).toBe('Kept');
      expect(features(info)).toEqual(expect.arrayContaining(['muc_persistent', 'muc_membersonly']));
      const p = await join(b, `${room}/member`);
      expect(item(p)?.attrs).toMatchObject({ affiliation: 'member', role: 'participant' });
      expect(statusCodes(p)).not.toContain('201');
      expect((await subject(b, room)).getChildText('subject')).toBe('Still here');
      const o = await join(a, `${room}/owner`);
      expect(item(o)?.attrs.affiliation).toBe('owner');
      await Promise.all([a.stop(), b.stop()]);
    } finally {
      await s2.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
