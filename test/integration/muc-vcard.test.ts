// Room vCards and avatars (XEP-0486 over vcard-temp, src/modules/muc/vcard.ts) with real
// @xmpp/client users: discovery, the empty vCard of a room without one, an owner publishing a vCard
// with two PHOTOs (104 to occupants, one muc#roominfo_avatarhash value per photo), anyone reading
// it, the refusals (not an owner: forbidden; too large or PHOTO data not base64: not-acceptable),
// an empty vCard removing the avatar, and a persistent room's vCard surviving a restart.
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join as pathJoin } from 'node:path';
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, iqError, type TestClient, xml } from '../helpers/client.js';
import { configure, createInstant, join, NS_XDATA, statusCodes, subject } from '../helpers/muc.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const NS_INFO = 'http://jabber.org/protocol/disco#info';
const NS_VCARD = 'vcard-temp';
const SERVICE = 'conference.localhost';
const MAX_BYTES = 2048;

let dataDir: string;
let srv: TestServer;
let alice: TestClient;
let bob: TestClient;
const names: string[] = [];
let roomSeq = 0;
const newRoom = () => `vc${process.pid}x${++roomSeq}@${SERVICE}`;

const start = () => startTestServer({ dataDir, modules: { muc: { maxVcardBytes: MAX_BYTES } } });
const login = (name: string) => connect({ port: srv.ports.c2s as number, username: name });

beforeAll(async () => {
  dataDir = mkdtempSync(pathJoin(tmpdir(), 'parley-mucvc-'));
  srv = await start();
  for (let i = 0; i < 2; i++) {
    names.push(uniqueUser('vc'));
    await srv.addUser(names[i] as string);
  }
  [alice, bob] = await Promise.all(names.map(login));
});
afterAll(async () => {
  await Promise.all([alice, bob].map((c) => c?.stop()));
  await srv?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

const png = Buffer.from('89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8ffff3f0005fe02fea7d6a4d20000000049454e44ae426082', 'hex');
const gif = Buffer.from('GIF89a\x01\x00\x01\x00\x00\x00\x00;', 'latin1');
const sha1 = (b: Buffer) => createHash('sha1').update(b).digest('hex');
const photo = (type: string, data: string) => xml('PHOTO', {}, xml('TYPE', {}, type), xml('BINVAL', {}, data));
const setVcard = (c: TestClient, room: string, ...children: Element[]) => c.iq(xml('iq', { type: 'set', to: room }, xml('vCard', { xmlns: NS_VCARD }, ...children)));
const getVcard = async (c: TestClient, room: string) => (await c.iq(xml('iq', { type: 'get', to: room }, xml('vCard', { xmlns: NS_VCARD })))).getChild('vCard', NS_VCARD) as Element;

async function info(c: TestClient, to: string): Promise<Element> {
  return (await c.iq(xml('iq', { type: 'get', to }, xml('query', { xmlns: NS_INFO })))).getChild('query') as Element;
}
const features = (q: Element) => q.getChildren('feature').map((f) => f.attrs.var as string);
function avatarHashes(q: Element): string[] | undefined {
  const field = q.getChild('x', NS_XDATA)?.getChildren('field').find((f) => f.attrs.var === 'muc#roominfo_avatarhash');
  return field?.getChildren('value').map((v) => v.getText());
}

describe('room vCard and avatar (XEP-0486)', () => {
  it('owners publish a vCard: occupants get 104, disco#info the hashes, anyone the vCard; an empty one removes it', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    await join(bob, `${room}/bob`);
    await subject(bob, room);
    expect(features(await info(bob, SERVICE))).toContain(NS_VCARD);
    const before = await info(bob, room);
    expect(features(before)).toContain(NS_VCARD);
    expect(avatarHashes(before)).toBeUndefined();
    const empty = await getVcard(bob, room);
    expect(empty.getChildElements()).toHaveLength(0);

    await setVcard(alice, room, xml('FN', {}, 'The Garden'), photo('image/png', png.toString('base64')), photo('image/gif', gif.toString('base64')));
    const notice = await bob.waitFor((el) => el.name === 'message' && el.attrs.from === room && statusCodes(el).includes('104'));
    expect(notice.attrs.type).toBe('groupchat');
    expect(avatarHashes(await info(bob, room))).toEqual([sha1(png), sha1(gif)]);
    const got = await getVcard(bob, room);
    expect(got.getChildText('FN')).toBe('The Garden');
    expect(got.getChildren('PHOTO').map((p) => p.getChildText('BINVAL'))).toEqual([png.toString('base64'), gif.toString('base64')]);

    await setVcard(alice, room);
    expect(avatarHashes(await info(bob, room))).toBeUndefined();
    expect((await getVcard(bob, room)).getChildElements()).toHaveLength(0);
  });

  it('refuses non-owners, oversized vCards and PHOTO data that is not base64', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    await join(bob, `${room}/bob`);
    await subject(bob, room);
    const forbidden = await iqError(bob, xml('iq', { type: 'set', to: room }, xml('vCard', { xmlns: NS_VCARD }, xml('FN', {}, 'Mine now'))));
    expect(forbidden).toEqual({ condition: 'forbidden', type: 'auth' });
    const big = await iqError(alice, xml('iq', { type: 'set', to: room }, xml('vCard', { xmlns: NS_VCARD }, photo('image/png', 'A'.repeat(MAX_BYTES)))));
    expect(big.condition).toBe('not-acceptable');
    const bad = await iqError(alice, xml('iq', { type: 'set', to: room }, xml('vCard', { xmlns: NS_VCARD }, photo('image/png', 'not base64!'))));
    expect(bad.condition).toBe('not-acceptable');
    // Nothing was stored by any of them.
    expect((await getVcard(bob, room)).getChildElements()).toHaveLength(0);
    expect(avatarHashes(await info(bob, room))).toBeUndefined();
  });

  it('a persistent room keeps its vCard across a restart', async () => {
    const room = newRoom();
    await createInstant(alice, room, 'al');
    await configure(alice, room, { persistentroom: '1' });
    await setVcard(alice, room, photo('image/png', png.toString('base64')));
    await Promise.all([alice, bob].map((c) => c.stop()));
    await srv.stop();
    rmSync(srv.dataDir, { recursive: true, force: true });
    srv = await start();
    bob = await login(names[1] as string);
    expect(avatarHashes(await info(bob, room))).toEqual([sha1(png)]);
    expect((await getVcard(bob, room)).getChild('PHOTO')?.getChildText('BINVAL')).toBe(png.toString('base64'));
  }, 20_000);
});
