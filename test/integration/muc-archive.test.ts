// Room archives (XEP-0313 on the room JID, src/modules/muc/archive.ts) with real @xmpp/client users:
// the broadcast carries the room's stanza-id, which is the archive UID; occupants and non-occupants
// of open rooms query it (results from the room, forwarded messages from room/nick without 'to',
// real JIDs only for moderators of a semi-anonymous room), RSM paging and form discovery; what is
// not archived (subject, private messages, no-store, refused and rate-limited messages) and the
// per-room cap; members-only and ban access rules; archiving switched off in the room
// configuration; the room retention purge (room archives only); destroy clears the archive; and
// after a server restart a persistent room's join history and its archive both come back (and what
// a crashed temporary room left does not pass to a new room of the same name).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join as pathJoin } from 'node:path';
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, iqError, type TestClient, xml } from '../helpers/client.js';
import { mamQuery, mamQueryIq, NS_MAM } from '../helpers/mam.js';
import { adminSet, bodyFrom, configure, createInstant, join, NS_MUC_OWNER, NS_MUC_USER, NS_XDATA, subject } from '../helpers/muc.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const NS_INFO = 'http://jabber.org/protocol/disco#info';
const NS_SID = 'urn:xmpp:sid:0';
const NS_DELAY = 'urn:xmpp:delay';
const SERVICE = 'conference.localhost';
const CAP = 3;

let dataDir: string;
let srv: TestServer;
let alice: TestClient;
let bob: TestClient;
let carol: TestClient;
const names: string[] = [];
let roomSeq = 0;
const newRoom = () => `arch${process.pid}x${++roomSeq}@${SERVICE}`;
const bareOf = (c: TestClient) => c.jid.split('/')[0] as string;
const features = (q: Element) => q.getChildren('feature').map((f) => f.attrs.var as string);
const forwarded = (m: Element) => m.getChild('result', NS_MAM)?.getChild('forwarded')?.getChild('message') as Element;

function start(): Promise<TestServer> {
  // A burst of 6 with a negligible rate: the seventh message of one occupant in a room is refused.
  // Room retention of a day, checked every 0.1 s; the user archives keep everything (mam defaults).
  return startTestServer({ dataDir, modules: { muc: { messageBurst: 6, messagesPerSecond: 0.01, archive: { maxPerRoom: CAP, retentionDays: 1, purgeIntervalSeconds: 0.1 } } } });
}

async function login(name: string): Promise<TestClient> {
  const c = await connect({ port: srv.ports.c2s as number, username: name });
  await c.send(xml('presence'));
  return c;
}

beforeAll(async () => {
  dataDir = mkdtempSync(pathJoin(tmpdir(), 'parley-mucarch-'));
  srv = await start();
  for (let i = 0; i < 3; i++) {
    names.push(uniqueUser('arc'));
    await srv.addUser(names[i] as string);
  }
  [alice, bob, carol] = await Promise.all(names.map(login));
});
afterAll(async () => {
  await Promise.all([alice, bob, carol].map((c) => c?.stop()));
  await srv?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

/** Alice creates an instant room (with `fields` configured); `others` join it. */
async function room(fields: Record<string, string> = {}, ...others: [TestClient, string][]): Promise<string> {
  const r = newRoom();
  await createInstant(alice, r, 'al');
  if (Object.keys(fields).length) await configure(alice, r, fields);
  for (const [c, nick] of others) {
    await join(c, `${r}/${nick}`);
    await subject(c, r);
  }
  return r;
}

/** Alice says `body`; resolves the copy Bob got. */
async function say(r: string, body: string, ...extra: Element[]): Promise<Element> {
  await alice.send(xml('message', { to: r, type: 'groupchat', id: `id-${body}` }, xml('body', {}, body), ...extra));
  return bodyFrom(bob, `${r}/al`, body);
}

describe('room archive (XEP-0313 on the room JID)', () => {
  it('stamps the broadcast with the archive UID and serves the archive to occupants, as the room sent it', async () => {
    const r = await room({}, [bob, 'bob']);
    const info = (await carol.iq(xml('iq', { type: 'get', to: r }, xml('query', { xmlns: NS_INFO })))).getChild('query') as Element;
    expect(features(info)).toEqual(expect.arrayContaining([NS_MAM, NS_SID]));

    const m1 = await say(r, 'one');
    const mine = await bodyFrom(alice, `${r}/al`, 'one');
    const sid = m1.getChild('stanza-id', NS_SID);
    expect(sid?.attrs.by).toBe(r);
    expect(mine.getChild('stanza-id', NS_SID)?.attrs.id).toBe(sid?.attrs.id);
    // Not archived: a subject change, a private message, a no-store hint.
    await alice.send(xml('message', { to: r, type: 'groupchat' }, xml('subject', {}, 'topic')));
    await bob.waitFor((el) => el.getChildText('subject') === 'topic');
    await bob.send(xml('message', { to: `${r}/al`, type: 'chat' }, xml('body', {}, 'psst')));
    const pm = await bodyFrom(alice, `${r}/bob`, 'psst');
    // (The user archive may stamp it; the room does not.)
    expect(pm.getChildren('stanza-id', NS_SID).map((s) => s.attrs.by)).not.toContain(r);
    const ns = await say(r, 'forget me', xml('no-store', { xmlns: 'urn:xmpp:hints' }));
    expect(ns.getChild('stanza-id', NS_SID)).toBeUndefined();
    await say(r, 'two');

    const res = await mamQuery(bob, { to: r });
    expect(res.bodies).toEqual(['one', 'two']);
    expect(res.ids[0]).toBe(sid?.attrs.id);
    expect(res.complete).toBe(true);
    expect(res.count).toBe(2);
    const [first] = res.results as [Element];
    expect(first.attrs.from).toBe(r);
    const fwd = forwarded(first);
    expect(fwd.attrs).toMatchObject({ from: `${r}/al`, type: 'groupchat', id: 'id-one' });
    expect(fwd.attrs.to).toBeUndefined();
    expect(first.getChild('result', NS_MAM)?.getChild('forwarded')?.getChild('delay', NS_DELAY)?.attrs.stamp).toMatch(/^\d{4}-/);
    // Semi-anonymous room: a participant does not see the sender's real JID; a moderator does.
    expect(fwd.getChild('x', NS_MUC_USER)).toBeUndefined();
    const own = await mamQuery(alice, { to: r });
    expect(forwarded(own.results[0] as Element).getChild('x', NS_MUC_USER)?.getChild('item')?.attrs.jid).toBe(alice.jid);

    // §6 metadata: the first and last UIDs.
    const meta = (await bob.iq(xml('iq', { type: 'get', to: r }, xml('metadata', { xmlns: NS_MAM })))).getChild('metadata', NS_MAM);
    expect([meta?.getChild('start')?.attrs.id, meta?.getChild('end')?.attrs.id]).toEqual(res.ids);
    // RSM paging from the stanza-id, and a non-occupant of an open room may read it too.
    const page = await mamQuery(carol, { to: r, rsm: { max: 1, after: sid?.attrs.id as string } });
    expect(page.bodies).toEqual(['two']);
    expect(page.firstIndex).toBe(1);
    const form = await carol.iq(xml('iq', { type: 'get', to: r }, xml('query', { xmlns: NS_MAM })));
    expect(form.getChild('query', NS_MAM)?.getChild('x', NS_XDATA)?.getChildren('field').map((f) => f.attrs.var)).toEqual(expect.arrayContaining(['FORM_TYPE', 'with', 'start', 'end']));
    // A forged stanza-id claiming the room is dropped; the room's own replaces it.
    await bob.send(xml('message', { to: r, type: 'groupchat' }, xml('body', {}, 'forged'), xml('stanza-id', { xmlns: NS_SID, by: r, id: 'fake' })));
    const forged = await bodyFrom(alice, `${r}/bob`, 'forged');
    expect(forged.getChildren('stanza-id', NS_SID).map((s) => s.attrs.id)).not.toContain('fake');
    expect(forged.getChildren('stanza-id', NS_SID)).toHaveLength(1);
  });

  it('refused and rate-limited messages are not archived; the per-room cap keeps the newest', async () => {
    const r = await room({ moderatedroom: '1' }, [bob, 'bob']);
    // Bob is a visitor in a moderated room: refused, not archived.
    await bob.send(xml('message', { to: r, type: 'groupchat', id: 'mute' }, xml('body', {}, 'muted')));
    const err = await bob.waitFor((el) => el.name === 'message' && el.attrs.type === 'error' && el.attrs.id === 'mute');
    expect(err.getChild('error')?.getChild('forbidden')).toBeDefined();
    // Carol is not an occupant.
    await carol.send(xml('message', { to: r, type: 'groupchat', id: 'out' }, xml('body', {}, 'outsider')));
    await carol.waitFor((el) => el.name === 'message' && el.attrs.type === 'error' && el.attrs.id === 'out');
    // Six messages, the whole burst, are accepted; the seventh is refused.
    for (const b of ['c1', 'c2', 'c3', 'c4', 'c5', 'c6']) await say(r, b);
    await alice.send(xml('message', { to: r, type: 'groupchat', id: 'fast' }, xml('body', {}, 'too fast')));
    const slow = await alice.waitFor((el) => el.name === 'message' && el.attrs.type === 'error' && el.attrs.id === 'fast');
    expect(slow.getChild('error')?.getChild('resource-constraint')).toBeDefined();
    const res = await mamQuery(alice, { to: r });
    expect(res.bodies).toEqual(['c4', 'c5', 'c6']);
    expect(res.count).toBe(CAP);
  });

  it('members-only rooms: members may query, others and outcasts may not', async () => {
    const r = await room({ membersonly: '1' });
    await alice.send(xml('message', { to: r, type: 'groupchat' }, xml('body', {}, 'secret')));
    await bodyFrom(alice, `${r}/al`, 'secret');
    expect((await iqError(carol, mamQueryIq({ to: r }, 'x1'))).condition).toBe('forbidden');
    expect((await iqError(carol, xml('iq', { type: 'get', to: r }, xml('query', { xmlns: NS_MAM })))).condition).toBe('forbidden');
    await adminSet(alice, r, { jid: bareOf(bob), affiliation: 'member' });
    // A member who is not in the room reads it.
    expect((await mamQuery(bob, { to: r })).bodies).toEqual(['secret']);
    // Outcasts never, even from an open room.
    const open = await room();
    await adminSet(alice, open, { jid: bareOf(carol), affiliation: 'outcast' });
    expect((await iqError(carol, mamQueryIq({ to: open }, 'x2'))).condition).toBe('forbidden');
  }, 15_000);

  it('a room configured without archiving stores nothing and does not advertise MAM', async () => {
    const r = await room({}, [bob, 'bob']);
    const cfg = await alice.iq(xml('iq', { type: 'get', to: r }, xml('query', { xmlns: NS_MUC_OWNER })));
    const field = cfg.getChild('query')?.getChild('x', NS_XDATA)?.getChildren('field').find((f) => f.attrs.var === 'muc#roomconfig_enablearchiving');
    expect(field?.getChildText('value')).toBe('1');
    await configure(alice, r, { enablearchiving: '0' });
    const m = await say(r, 'unlogged');
    expect(m.getChild('stanza-id', NS_SID)).toBeUndefined();
    const info = (await bob.iq(xml('iq', { type: 'get', to: r }, xml('query', { xmlns: NS_INFO })))).getChild('query') as Element;
    expect(features(info)).not.toContain(NS_MAM);
    expect((await iqError(bob, mamQueryIq({ to: r }, 'x3'))).condition).toBe('service-unavailable');
    expect(await srv.storage.archive.count(r)).toBe(0);
  });

  it('purges room messages older than the room retention, and no user archive', async () => {
    const r = await room({}, [bob, 'bob']);
    await say(r, 'recent');
    const stamp = Date.now() - 2 * 86_400_000;
    const stanza = `<message type="groupchat" from="${r}/al"><body>ancient</body></message>`;
    await srv.storage.archive.append(r, { id: `old-${r}`, withBare: r, withFull: `${r}/al`, direction: 'in', stamp, stanza, body: 'ancient' });
    const user = bareOf(carol);
    await srv.storage.archive.append(user, { id: `old-${user}`, withBare: r, withFull: `${r}/al`, direction: 'in', stamp, stanza, body: 'ancient' });
    for (let i = 0; i < 100 && (await srv.storage.archive.count(r)) > 1; i++) await new Promise((res) => setTimeout(res, 50));
    expect((await mamQuery(bob, { to: r })).bodies).toEqual(['recent']);
    expect(await srv.storage.archive.count(user)).toBe(1);
  });

  it('destroying a room clears its archive', async () => {
    const r = await room({}, [bob, 'bob']);
    await say(r, 'gone soon');
    expect(await srv.storage.archive.count(r)).toBe(1);
    await alice.iq(xml('iq', { type: 'set', to: r }, xml('query', { xmlns: NS_MUC_OWNER }, xml('destroy'))));
    expect(await srv.storage.archive.count(r)).toBe(0);
  });

  it('after a restart a persistent room sends its history from the archive and still serves it', async () => {
    const r = await room({ persistentroom: '1' }, [bob, 'bob']);
    await say(r, 'before restart 1');
    await say(r, 'before restart 2');
    await Promise.all([alice, bob, carol].map((c) => c.stop()));
    await srv.stop();
    rmSync(srv.dataDir, { recursive: true, force: true });
    srv = await start();
    carol = await login(names[2] as string);

    await join(carol, `${r}/carol`);
    await subject(carol, r);
    const history = carol.received.filter((el) => el.name === 'message' && el.getChild('body') && el.attrs.from === `${r}/al`);
    expect(history.map((m) => m.getChildText('body'))).toEqual(['before restart 1', 'before restart 2']);
    expect(history[0]?.getChild('delay', NS_DELAY)?.attrs.from).toBe(r);
    expect(history[0]?.getChild('stanza-id', NS_SID)?.attrs.by).toBe(r);
    // The real JID kept for the archive does not leak into the history of a semi-anonymous room.
    expect(history[0]?.getChild('x', NS_MUC_USER)).toBeUndefined();
    const res = await mamQuery(carol, { to: r });
    expect(res.bodies).toEqual(['before restart 1', 'before restart 2']);
    expect(res.ids[1]).toBe(history[1]?.getChild('stanza-id', NS_SID)?.attrs.id);
    // What a temporary room left behind (a crash gave it no time to clear its archive) does not
    // pass to a new room of that name.
    const temp = newRoom();
    await srv.storage.archive.append(temp, { id: 'left', withBare: temp, withFull: `${temp}/x`, direction: 'in', stamp: Date.now(), stanza: '<message type="groupchat"><body>left</body></message>', body: 'left' });
    await createInstant(carol, temp, 'c');
    const fresh = await mamQuery(carol, { to: temp });
    expect(fresh.count).toBe(0);
  }, 20_000);
});
