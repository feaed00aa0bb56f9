// XEP-0398 avatar conversion and XEP-0153 presence hashes over real client connections: a XEP-0084
// publish shows up in the vCard, a vCard PHOTO shows up in PEP (with a notification to a contact
// whose caps ask for urn:xmpp:avatar:metadata+notify), removal both ways, no conversion loop
// (counted notifications), the hash in outgoing presence, and the cases that are not converted
// (oversize, malformed base64, not an image, SHA-1 mismatch) while the original request succeeds.
import { createHash, randomBytes } from 'node:crypto';
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { barrier, connect, type TestClient, xml } from '../helpers/client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const PUBSUB = 'http://jabber.org/protocol/pubsub';
const EVENT = 'http://jabber.org/protocol/pubsub#event';
const DISCO_INFO = 'http://jabber.org/protocol/disco#info';
const DATA = 'urn:xmpp:avatar:data';
const METADATA = 'urn:xmpp:avatar:metadata';
const VCARD = 'vcard-temp';
const UPDATE = 'vcard-temp:x:update';
const CONVERSION = 'urn:xmpp:pep-vcard-conversion:0';
const MAX_IMAGE = 4096;

const sha1 = (b: Buffer) => createHash('sha1').update(b).digest('hex');

/** A PNG header (signature + IHDR) followed by filler: enough for type and size detection. */
function png(width: number, height: number, filler = 64): Buffer {
  const ihdr = Buffer.alloc(8 + 13 + 4);
  ihdr.writeUInt32BE(13, 0);
  ihdr.write('IHDR', 4, 'latin1');
  ihdr.writeUInt32BE(width, 8);
  ihdr.writeUInt32BE(height, 12);
  ihdr[16] = 8;
  ihdr[17] = 6;
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), ihdr, randomBytes(filler)]);
}

/** A JPEG with an APP0 segment then SOF0 giving the size. */
function jpeg(width: number, height: number): Buffer {
  const app0 = Buffer.from([0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00]);
  const sof = Buffer.alloc(19);
  sof.writeUInt16BE(0xffc0, 0);
  sof.writeUInt16BE(17, 2);
  sof[4] = 8;
  sof.writeUInt16BE(height, 5);
  sof.writeUInt16BE(width, 7);
  return Buffer.concat([Buffer.from([0xff, 0xd8]), app0, sof, randomBytes(40), Buffer.from([0xff, 0xd9])]);
}

function capsVer(features: string[]): string {
  const s = `client/pc//Parley test<${[...features].sort().map((f) => `${f}<`).join('')}`;
  return createHash('sha1').update(s, 'utf8').digest('base64');
}

const publishIq = (node: string, id: string | undefined, payload: Element) =>
  xml('iq', { type: 'set' }, xml('pubsub', { xmlns: PUBSUB }, xml('publish', { node }, xml('item', { id }, payload))));
const itemsIq = (to: string, node: string) => xml('iq', { type: 'get', to }, xml('pubsub', { xmlns: PUBSUB }, xml('items', { node })));
const vcardGet = () => xml('iq', { type: 'get' }, xml('vCard', { xmlns: VCARD }));
const vcardSet = (...children: Element[]) => xml('iq', { type: 'set' }, xml('vCard', { xmlns: VCARD }, ...children));
const photo = (type: string | undefined, binval: string) => xml('PHOTO', {}, ...(type ? [xml('TYPE', {}, type)] : []), xml('BINVAL', {}, binval));

const eventItems = (el: Element) => el.getChild('event', EVENT)?.getChild('items');
const isMetaEvent = (el: Element) => el.name === 'message' && eventItems(el)?.attrs.node === METADATA;
const updateHash = (p: Element) => p.getChild('x', UPDATE)?.getChildText('photo');

describe('avatar conversion (XEP-0398, XEP-0153)', () => {
  let srv: TestServer;
  let port: number;
  const clients: TestClient[] = [];

  beforeAll(async () => {
    srv = await startTestServer({ modules: { avatars: { maxImageBytes: MAX_IMAGE } } });
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
  });

  /** Logs in, answers disco#info for its caps, and sends initial presence announcing `notify`. */
  async function login(bare: string, notify: string[] = [], resource?: string): Promise<TestClient> {
    const c = await connect({ port, username: bare.split('@')[0] as string, resource });
    clients.push(c);
    const features = [DISCO_INFO, ...notify.map((n) => `${n}+notify`)];
    const ver = capsVer(features);
    const callee = (c.xmpp as unknown as { iqCallee: { get(ns: string, name: string, fn: () => Element): void } }).iqCallee;
    callee.get(DISCO_INFO, 'query', () =>
      xml('query', { xmlns: DISCO_INFO, node: `https://parley.test#${ver}` }, xml('identity', { category: 'client', type: 'pc', name: 'Parley test' }), ...features.map((f) => xml('feature', { var: f }))),
    );
    await c.send(xml('presence', {}, xml('c', { xmlns: 'http://jabber.org/protocol/caps', hash: 'sha-1', node: 'https://parley.test', ver })));
    await c.waitFor((el) => el.name === 'presence' && el.attrs.from === c.jid);
    return c;
  }

  async function mutual(a: string, b: string): Promise<void> {
    await srv.storage.roster.setItem(a, { jid: b, subscription: 'both', ask: false, approved: false, groups: [] });
    await srv.storage.roster.setItem(b, { jid: a, subscription: 'both', ask: false, approved: false, groups: [] });
  }

  async function publishAvatar(c: TestClient, bytes: Buffer, type = 'image/png', id = sha1(bytes)): Promise<void> {
    await c.iq(publishIq(DATA, id, xml('data', { xmlns: DATA }, bytes.toString('base64'))));
    await c.iq(publishIq(METADATA, id, xml('metadata', { xmlns: METADATA }, xml('info', { id, bytes: String(bytes.length), type, width: '1', height: '1' }))));
  }

  async function vcardOf(c: TestClient): Promise<Element> {
    const res = await c.iq(vcardGet());
    return res.getChild('vCard', VCARD) as Element;
  }

  async function metadataItems(c: TestClient, owner: string): Promise<Element[]> {
    try {
      const res = await c.iq(itemsIq(owner, METADATA));
      return res.getChild('pubsub', PUBSUB)?.getChild('items')?.getChildren('item') ?? [];
    } catch (e) {
      if ((e as { condition?: string }).condition === 'item-not-found') return [];
      throw e;
    }
  }

  /** Sends a fresh available presence and resolves what the sender's own resource receives back. */
  async function presenceEcho(c: TestClient, ...children: Element[]): Promise<Element> {
    const marker = randomBytes(4).toString('hex');
    await c.send(xml('presence', {}, xml('status', {}, marker), ...children));
    return c.waitFor((el) => el.name === 'presence' && el.attrs.from === c.jid && el.getChildText('status') === marker);
  }

  it('advertises urn:xmpp:pep-vcard-conversion:0 on the account', async () => {
    const alice = await srv.addUser(uniqueUser('av'));
    const a = await login(alice);
    const res = await a.iq(xml('iq', { type: 'get', to: alice }, xml('query', { xmlns: DISCO_INFO })));
    const features = res.getChild('query', DISCO_INFO)?.getChildren('feature').map((f) => f.attrs.var) ?? [];
    expect(features).toContain(CONVERSION);
  });

  it('PEP -> vCard: a XEP-0084 publish sets the PHOTO (same bytes), once; presence then carries the hash', async () => {
    const alice = await srv.addUser(uniqueUser('av'));
    const bob = await srv.addUser(uniqueUser('av'));
    await mutual(alice, bob);
    const a = await login(alice);
    await a.iq(vcardSet(xml('FN', {}, 'Alice Liddell')));
    const b = await login(bob, [METADATA]);
    const image = png(32, 16);
    const hash = sha1(image);
    await publishAvatar(a, image);

    const vcard = await vcardOf(a);
    expect(vcard.getChildText('FN')).toBe('Alice Liddell'); // other fields survive
    const p = vcard.getChild('PHOTO');
    expect(p?.getChildText('TYPE')).toBe('image/png');
    expect(Buffer.from(p?.getChildText('BINVAL') ?? '', 'base64').equals(image)).toBe(true);

    // The contact sees the client's publish once; the vCard write does not publish again (no loop).
    const ev = await b.waitFor(isMetaEvent);
    expect(eventItems(ev)?.getChild('item')?.attrs.id).toBe(hash);
    await barrier(a, b); // what Alice's requests published to Bob has arrived
    expect(b.received.filter(isMetaEvent)).toHaveLength(1);

    // XEP-0153: the next presence has the hash, for the user's resources and contacts.
    const own = await presenceEcho(a);
    expect(updateHash(own)).toBe(hash);
    const seen = await b.waitFor((el) => el.name === 'presence' && el.attrs.from === a.jid && updateHash(el) === hash);
    expect(seen.getChildren('x', UPDATE)).toHaveLength(1);
  });

  it('vCard -> PEP: a PHOTO becomes data + metadata (SHA-1 id, bytes, type, size) and notifies +notify contacts once', async () => {
    const alice = await srv.addUser(uniqueUser('av'));
    const bob = await srv.addUser(uniqueUser('av'));
    await mutual(alice, bob);
    const a = await login(alice);
    const b = await login(bob, [METADATA]);
    const image = jpeg(48, 40);
    const hash = sha1(image);
    // A label that is common in the wild; the bytes say JPEG.
    await a.iq(vcardSet(xml('FN', {}, 'Alice'), photo('image/jpg', image.toString('base64').replace(/(.{20})/g, '$1\n'))));

    const ev = await b.waitFor(isMetaEvent);
    const info = eventItems(ev)?.getChild('item')?.getChild('metadata', METADATA)?.getChild('info');
    expect(eventItems(ev)?.getChild('item')?.attrs.id).toBe(hash);
    expect(info?.attrs).toMatchObject({ id: hash, type: 'image/jpeg', bytes: String(image.length), width: '48', height: '40' });

    const data = await b.iq(itemsIq(alice, DATA));
    const item = data.getChild('pubsub', PUBSUB)?.getChild('items')?.getChild('item');
    expect(item?.attrs.id).toBe(hash);
    expect(Buffer.from(item?.getChildText('data', DATA) ?? '', 'base64').equals(image)).toBe(true);

    // Setting the same vCard again publishes nothing; the stored vCard is the client's own.
    await a.iq(vcardSet(xml('FN', {}, 'Alice'), photo('image/jpg', image.toString('base64'))));
    await barrier(a, b); // what Alice's requests published to Bob has arrived
    expect(b.received.filter(isMetaEvent)).toHaveLength(1);
    expect((await vcardOf(a)).getChild('PHOTO')?.getChildText('TYPE')).toBe('image/jpg');
    expect(updateHash(await presenceEcho(a))).toBe(hash);
  });

  it('removal converts both ways: empty metadata drops the PHOTO, a vCard without PHOTO disables the PEP avatar', async () => {
    const alice = await srv.addUser(uniqueUser('av'));
    const bob = await srv.addUser(uniqueUser('av'));
    await mutual(alice, bob);
    const a = await login(alice);
    const b = await login(bob, [METADATA]);

    await a.iq(vcardSet(xml('NICKNAME', {}, 'al')));
    await publishAvatar(a, png(8, 8));
    expect((await vcardOf(a)).getChild('PHOTO')).toBeTruthy();
    await a.iq(publishIq(METADATA, undefined, xml('metadata', { xmlns: METADATA })));
    const after = await vcardOf(a);
    expect(after.getChild('PHOTO')).toBeUndefined();
    expect(after.getChildText('NICKNAME')).toBe('al');
    expect(updateHash(await presenceEcho(a))).toBe(''); // XEP-0153 §4.1: empty photo = no avatar

    const image = png(4, 4);
    await a.iq(vcardSet(xml('NICKNAME', {}, 'al'), photo('image/png', image.toString('base64'))));
    await b.waitFor((el) => isMetaEvent(el) && eventItems(el)?.getChild('item')?.attrs.id === sha1(image));
    await a.iq(vcardSet(xml('NICKNAME', {}, 'al')));
    const off = await b.waitFor((el) => isMetaEvent(el) && !!eventItems(el)?.getChild('item')?.getChild('metadata', METADATA) && eventItems(el)?.getChild('item')?.getChild('metadata', METADATA)?.getChildren('info').length === 0);
    expect(off.attrs.from).toBe(alice);
    const items = await metadataItems(a, alice);
    expect(items.at(-1)?.getChild('metadata', METADATA)?.getChildren('info')).toHaveLength(0);
    // A vCard that never had a PHOTO leaves the PEP avatar alone.
    const count = b.received.filter(isMetaEvent).length;
    await a.iq(vcardSet(xml('NICKNAME', {}, 'alice')));
    await barrier(a, b); // what Alice's requests published to Bob has arrived
    expect(b.received.filter(isMetaEvent)).toHaveLength(count);
  });

  it('presence: a stale hash from the client is replaced, a matching one is left alone', async () => {
    const alice = await srv.addUser(uniqueUser('av'));
    const a = await login(alice);
    const image = png(2, 2);
    await a.iq(vcardSet(photo('image/png', image.toString('base64'))));
    const replaced = await presenceEcho(a, xml('x', { xmlns: UPDATE }, xml('photo', {}, 'ffffffffffffffffffffffffffffffffffffffff')));
    expect(replaced.getChildren('x', UPDATE)).toHaveLength(1);
    expect(updateHash(replaced)).toBe(sha1(image));
    const notReady = await presenceEcho(a, xml('x', { xmlns: UPDATE }));
    expect(updateHash(notReady)).toBe(sha1(image));
    const upper = sha1(image).toUpperCase();
    const kept = await presenceEcho(a, xml('x', { xmlns: UPDATE }, xml('photo', {}, upper)));
    expect(updateHash(kept)).toBe(upper);
  });

  it('not converted, original request still answered: oversize, malformed base64, not an image, SHA-1 mismatch', async () => {
    const alice = await srv.addUser(uniqueUser('av'));
    const a = await login(alice);

    // vCard side: each set succeeds and is stored as sent; PEP gets nothing.
    const big = png(100, 100, MAX_IMAGE);
    for (const p of [photo('image/png', big.toString('base64')), photo('image/png', 'not*base64!'), photo('text/plain', Buffer.from('hello world, not an image').toString('base64'))]) {
      await a.iq(vcardSet(xml('FN', {}, 'A'), p));
      expect((await vcardOf(a)).getChild('PHOTO')?.getChildText('BINVAL')).toBe(p.getChildText('BINVAL'));
    }
    expect(await metadataItems(a, alice)).toHaveLength(0);

    // PEP side: the publishes succeed; the vCard keeps what it had.
    await a.iq(vcardSet(xml('FN', {}, 'A')));
    await publishAvatar(a, big);
    await publishAvatar(a, png(3, 3), 'image/png', 'ab'.repeat(20)); // id is not the SHA-1
    await publishAvatar(a, Buffer.from('plain text'), 'text/plain');
    const vcard = await vcardOf(a);
    expect(vcard.getChild('PHOTO')).toBeUndefined();
    expect(vcard.getChildText('FN')).toBe('A');
    expect((await metadataItems(a, alice)).length).toBeGreaterThan(0);
    // The module is active for this account: a valid avatar after the refused ones converts.
    const ok = png(5, 5);
    await publishAvatar(a, ok);
    expect(Buffer.from((await vcardOf(a)).getChild('PHOTO')?.getChildText('BINVAL') ?? '', 'base64').equals(ok)).toBe(true);
  });
});

describe('avatar conversion against the vCard size limit', () => {
  let srv: TestServer;
  afterAll(async () => {
    await srv?.close();
  });

  it('a PEP avatar the vCard cannot hold is published anyway and the vCard is left as it was', async () => {
    srv = await startTestServer({ limits: { privateItemBytes: 1024 } });
    const alice = await srv.addUser(uniqueUser('avl'));
    const a = await connect({ port: srv.ports.c2s as number, username: alice.split('@')[0] as string });
    try {
      await a.iq(vcardSet(xml('FN', {}, 'Small')));
      const image = png(10, 10, 1200); // fine for PEP and maxImageBytes, too big for a 1 KiB vCard
      await publishAvatarTo(a, image);
      const vcard = (await a.iq(vcardGet())).getChild('vCard', VCARD);
      expect(vcard?.getChildText('FN')).toBe('Small');
      expect(vcard?.getChild('PHOTO')).toBeUndefined();
      const meta = await a.iq(itemsIq(alice, METADATA));
      expect(meta.getChild('pubsub', PUBSUB)?.getChild('items')?.getChild('item')?.attrs.id).toBe(sha1(image));
    } finally {
      await a.stop();
    }
  });
});

async function publishAvatarTo(c: TestClient, bytes: Buffer): Promise<void> {
  const id = sha1(bytes);
  await c.iq(publishIq(DATA, id, xml('data', { xmlns: DATA }, bytes.toString('base64'))));
  await c.iq(publishIq(METADATA, id, xml('metadata', { xmlns: METADATA }, xml('info', { id, bytes: String(bytes.length), type: 'image/png' }))));
}
