// Policy roles (issue 9, docs/acl.md) in a real server with real clients: publish.acl (right
// channel.publish) refuses publishing to news channels even to a channel's owner, while reading
// stays open; settings.acl (right settings.save, Sun's sysSaveUserSettings) refuses vCard updates
// and in-band password changes, while reading vCards still works. Refusals are `forbidden` (auth),
// logged at info with the deciding rule; rewriting the file and reloading grants the right.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { Element } from 'ltx';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, iqError, type TestClient, xml } from '../helpers/client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const PUBSUB = 'http://jabber.org/protocol/pubsub';
const NEWS = 'news.localhost';
const VCARD = 'vcard-temp';
const REGISTER = 'jabber:iq:register';

const [owner, writer, kiosk] = [uniqueUser('pol'), uniqueUser('pol'), uniqueUser('pol')];
const bare = (u: string) => `${u}@localhost`;
let srv: TestServer;
let dir: string;
let alice: TestClient; // owns a channel, refused by publish.acl
let bob: TestClient; // publishes and saves settings
let carol: TestClient; // refused by settings.acl
const logLines: string[] = [];

const ps = (type: 'get' | 'set', ...children: Element[]) => xml('iq', { type, to: NEWS }, xml('pubsub', { xmlns: PUBSUB }, ...children));
const publishIq = (node: string, id: string, title: string) => ps('set', xml('publish', { node }, xml('item', { id }, xml('entry', { xmlns: 'http://www.w3.org/2005/Atom' }, xml('title', {}, title)))));
const vcardSet = (fn: string) => xml('iq', { type: 'set' }, xml('vCard', { xmlns: VCARD }, xml('FN', {}, fn)));
const vcardGet = (to?: string) => xml('iq', { type: 'get', to }, xml('vCard', { xmlns: VCARD }));
const logged = (...parts: string[]) => logLines.some((l) => parts.every((p) => l.includes(p)));

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'parley-roles-it-'));
  writeFileSync(join(dir, 'publish.acl'), `deny ${bare(owner)}\nallow *@localhost\n`);
  writeFileSync(join(dir, 'settings.acl'), `deny ${bare(kiosk)}\nallow *\n`);
  const sink = new Writable({ write: (chunk, _enc, cb) => (logLines.push(String(chunk)), cb()) });
  srv = await startTestServer({ acl: { directory: dir, watch: false } }, { log: pino({ level: 'info' }, sink) });
  for (const u of [owner, writer, kiosk]) await srv.addUser(u);
  [alice, bob, carol] = await Promise.all([owner, writer, kiosk].map((username) => connect({ port: srv.ports.c2s as number, username })));
});
afterAll(async () => {
  await Promise.all([alice, bob, carol].map((c) => c?.stop()));
  await srv?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('policy roles', () => {
  it('channel.publish: the owner refused by publish.acl cannot publish to her channel, others can, and she still reads it; a reload grants it', async () => {
    const node = `roles${process.pid}`;
    // Creating is channel.create (no file: allowed); an open publish model lets anyone publish.
    const config = xml(
      'x',
      { xmlns: 'jabber:x:data', type: 'submit' },
      xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, `${PUBSUB}#node_config`)),
      xml('field', { var: 'pubsub#publish_model' }, xml('value', {}, 'open')),
    );
    await alice.iq(ps('set', xml('create', { node }), xml('configure', {}, config)));

    expect(await iqError(alice, publishIq(node, 'a1', 'by the owner'))).toEqual({ condition: 'forbidden', type: 'auth' });
    expect(logged(`"user":"${bare(owner)}"`, '"right":"channel.publish"', `publish.acl:1 (deny ${bare(owner)})`, 'news publish refused')).toBe(true);

    const ok = await bob.iq(publishIq(node, 'b1', 'by bob'));
    expect(ok.getChild('pubsub', PUBSUB)?.getChild('publish')?.getChild('item')?.attrs.id).toBe('b1');
    // Reading is the news entitlement's business only: the refused owner reads her channel.
    const items = await alice.iq(ps('get', xml('items', { node })));
    expect(items.getChild('pubsub', PUBSUB)?.getChild('items')?.getChildren('item').map((i: Element) => i.attrs.id)).toEqual(['b1']);

    writeFileSync(join(dir, 'publish.acl'), 'allow *@localhost\n');
    await srv.acl.reload();
    const after = await alice.iq(publishIq(node, 'a2', 'by the owner, now allowed'));
    expect(after.attrs.type).toBe('result');
  });

  it('settings.save: a user refused by settings.acl cannot set her vCard or change her password, but reads vCards; a reload grants it', async () => {
    expect((await bob.iq(vcardSet('Bob Writer'))).attrs.type).toBe('result');

    expect(await iqError(carol, vcardSet('Kiosk'))).toEqual({ condition: 'forbidden', type: 'auth' });
    expect(logged(`"user":"${bare(kiosk)}"`, '"right":"settings.save"', `settings.acl:1 (deny ${bare(kiosk)})`, 'vCard change refused')).toBe(true);
    // Reading is not a change: her own (still empty) vCard, and bob's.
    const own = await carol.iq(vcardGet());
    expect(own.getChild('vCard', VCARD)?.getChildElements()).toEqual([]);
    expect((await carol.iq(vcardGet(bare(writer)))).getChild('vCard', VCARD)?.getChildText('FN')).toBe('Bob Writer');

    const change = xml('iq', { type: 'set', to: 'localhost' }, xml('query', { xmlns: REGISTER }, xml('username', {}, kiosk), xml('password', {}, 'a brand new secret')));
    expect(await iqError(carol, change)).toEqual({ condition: 'forbidden', type: 'auth' });
    expect(logged(`"user":"${bare(kiosk)}"`, '"right":"settings.save"', 'password change refused')).toBe(true);

    writeFileSync(join(dir, 'settings.acl'), 'allow *\n');
    await srv.acl.reload();
    expect((await carol.iq(vcardSet('Kiosk'))).attrs.type).toBe('result');
    expect((await carol.iq(vcardGet())).getChild('vCard', VCARD)?.getChildText('FN')).toBe('Kiosk');
  });
});
