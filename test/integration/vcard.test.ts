// XEP-0054 vcard-temp over real client connections: own vCard (§3.1, §3.2), other users' vCards
// (§3.3), the error cases (forbidden / not-allowed / service-unavailable), the size limit and the
// disco feature (§4).
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { iqError, connect, type TestClient, xml } from '../helpers/client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const NS = 'vcard-temp';
const MAX_BYTES = 2048;

function vcardGet(to?: string): Element {
  return xml('iq', { type: 'get', to }, xml('vCard', { xmlns: NS }));
}

function vcardSet(children: Element[], to?: string): Element {
  return xml('iq', { type: 'set', to }, xml('vCard', { xmlns: NS }, ...children));
}

function sampleCard(fn: string): Element[] {
  return [
    xml('FN', {}, fn),
    xml('N', {}, xml('FAMILY', {}, 'Saint-Andre'), xml('GIVEN', {}, 'Peter'), xml('MIDDLE')),
    xml('NICKNAME', {}, 'stpeter'),
    xml('TEL', {}, xml('WORK'), xml('VOICE'), xml('NUMBER', {}, '303-308-3282')),
  ];
}

describe('vcard-temp (XEP-0054)', () => {
  let srv: TestServer;
  let port: number;
  const clients: TestClient[] = [];

  async function login(username: string): Promise<TestClient> {
    const c = await connect({ port, username });
    clients.push(c);
    return c;
  }

  async function newUser(): Promise<string> {
    const u = uniqueUser('vc');
    await srv.addUser(u);
    return u;
  }

  beforeAll(async () => {
    srv = await startTestServer({ limits: { privateItemBytes: MAX_BYTES } });
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
  });

  it('§3.1: without a stored vCard, one gets an empty <vCard/> (no to, and to the own bare JID)', async () => {
    const u = await newUser();
    const c = await login(u);
    for (const to of [undefined, `${u}@localhost`]) {
      const res = await c.iq(vcardGet(to));
      expect(res.attrs.type).toBe('result');
      const card = res.getChild('vCard', NS);
      expect(card).toBeDefined();
      expect(card?.getChildElements()).toHaveLength(0);
    }
  });

  it('§3.2: set stores the whole vCard, a get returns it element for element', async () => {
    const u = await newUser();
    const c = await login(u);
    const set = await c.iq(vcardSet(sampleCard('Peter Saint-Andre')));
    expect(set.attrs.type).toBe('result');
    expect(set.getChildElements()).toHaveLength(0);
    const card = (await c.iq(vcardGet())).getChild('vCard', NS) as Element;
    expect(card.getChildText('FN')).toBe('Peter Saint-Andre');
    expect(card.getChild('N')?.getChildText('FAMILY')).toBe('Saint-Andre');
    expect(card.getChild('N')?.getChildText('GIVEN')).toBe('Peter');
    expect(card.getChild('N')?.getChild('MIDDLE')).toBeDefined();
    expect(card.getChildText('NICKNAME')).toBe('stpeter');
    expect(card.getChild('TEL')?.getChildText('NUMBER')).toBe('303-308-3282');

    // No partial updates: a second set replaces everything.
    await c.iq(vcardSet([xml('FN', {}, 'Only FN')]));
    const card2 = (await c.iq(vcardGet())).getChild('vCard', NS) as Element;
    expect(card2.getChildElements().map((e) => e.name)).toEqual(['FN']);
    expect(card2.getChildText('FN')).toBe('Only FN');
  });

  it('§3.3: another user reads the vCard at the bare JID; the server answers (from = the bare JID)', async () => {
    const owner = await newUser();
    const reader = await newUser();
    const o = await login(owner);
    await o.iq(vcardSet(sampleCard('Juliet Capulet')));
    await o.stop();
    // The owner is offline now: the server still answers on its behalf.
    const r = await login(reader);
    const res = await r.iq(vcardGet(`${owner}@localhost`));
    expect(res.attrs.type).toBe('result');
    expect(res.attrs.from).toBe(`${owner}@localhost`);
    expect(res.getChild('vCard', NS)?.getChildText('FN')).toBe('Juliet Capulet');
  });

  it('§3.3: no vCard and no such user give the same error, service-unavailable', async () => {
    const empty = await newUser();
    const r = await login(await newUser());
    const e1 = await iqError(r, vcardGet(`${empty}@localhost`));
    const e2 = await iqError(r, vcardGet(`nobody-${empty}@localhost`));
    expect(e1.condition).toBe('service-unavailable');
    expect(e2).toEqual(e1);
  });

  it('§3.2: setting another user’s vCard is forbidden and changes nothing', async () => {
    const victim = await newUser();
    const v = await login(victim);
    await v.iq(vcardSet([xml('FN', {}, 'Original')]));
    const m = await login(await newUser());
    const err = await iqError(m, vcardSet([xml('FN', {}, 'Defaced')], `${victim}@localhost`));
    expect(err.condition).toBe('forbidden');
    expect((await v.iq(vcardGet())).getChild('vCard', NS)?.getChildText('FN')).toBe('Original');
  });

  it('the server domain: get answers an empty vCard, set is not-allowed', async () => {
    const c = await login(await newUser());
    const res = await c.iq(vcardGet('localhost'));
    expect(res.attrs.from).toBe('localhost');
    expect(res.getChild('vCard', NS)?.getChildElements()).toHaveLength(0);
    const err = await iqError(c, vcardSet([xml('FN', {}, 'Server')], 'localhost'));
    expect(err.condition).toBe('not-allowed');
    // And nothing was stored for the server.
    expect((await c.iq(vcardGet('localhost'))).getChild('vCard', NS)?.getChildElements()).toHaveLength(0);
  });

  it('a vCard over limits.privateItemBytes is not-acceptable and the old one stays', async () => {
    const u = await newUser();
    const c = await login(u);
    await c.iq(vcardSet([xml('FN', {}, 'Small')]));
    const err = await iqError(c, vcardSet([xml('FN', {}, 'Big'), xml('DESC', {}, 'x'.repeat(MAX_BYTES))]));
    expect(err.condition).toBe('not-acceptable');
    expect(err.type).toBe('modify');
    expect((await c.iq(vcardGet())).getChild('vCard', NS)?.getChildText('FN')).toBe('Small');
  });

  it('an empty <vCard/> set deletes the vCard', async () => {
    const u = await newUser();
    const c = await login(u);
    await c.iq(vcardSet([xml('FN', {}, 'Gone soon')]));
    await c.iq(vcardSet([]));
    expect((await c.iq(vcardGet())).getChild('vCard', NS)?.getChildElements()).toHaveLength(0);
    const other = await login(await newUser());
    expect((await iqError(other, vcardGet(`${u}@localhost`))).condition).toBe('service-unavailable');
  });

  it('§4: the server advertises vcard-temp', async () => {
    const c = await login(await newUser());
    const res = await c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    const features = res.getChild('query')?.getChildren('feature').map((f) => f.attrs.var);
    expect(features).toContain('vcard-temp');
  });
});
