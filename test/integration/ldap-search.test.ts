// User search (XEP-0055 §2 legacy fields and §3 data forms) and vCards of directory users (XEP-0054,
// with the XEP-0153 photo hash) against a real OpenLDAP slapd on loopback (issue 8): search by each
// configured attribute with substring matches, the result limit, RFC 4515 escaping of search values,
// users the user filter excludes, empty searches, requesters from another host, a directory outage
// and recovery; vCards filled from mapped attributes including jpegPhoto, refused vCard sets, the
// look-up cache (counted in slapd's log), localEdits; and username search on a host with internal
// accounts. One slapd and one server with three hosts: an LDAP host, an LDAP host with localEdits,
// and an internal host.
import { createHash } from 'node:crypto';
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, iqError, xml, type TestClient } from '../helpers/client.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { LDAP_SERVICE_DN, LDAP_TIMEOUTS, ldapHostConfig, ldapPerson, ldapSkeleton, startSlapd, type SlapdServer } from '../helpers/slapd.js';
import { LoginThrottle } from '../../src/auth/index.js';

const NS_SEARCH = 'jabber:iq:search';
const NS_XDATA = 'jabber:x:data';
// A JPEG header (SOI, APP0 JFIF) and bytes above 0x7f: the photo must come back byte for byte.
const PHOTO = Buffer.from('ffd8ffe000104a46494600010100000100010000fffe0003c3a9ff00ff80ffd9', 'hex');

function person(uid: string, given: string, sn: string, extra = ''): string {
  return ldapPerson({ uid, cn: `${given} ${sn}`, givenName: given, sn, mail: `${uid}@example.com`, extra });
}

const LDIF = `
${ldapSkeleton()}
${person('alice', 'Alice', 'Liddell', `telephoneNumber: +1 555 0100\ntitle: Chief Rabbit Officer\no: Example Corp\nou: Research\njpegPhoto:: ${PHOTO.toString('base64')}\n`)}
${person('bob', 'Bob', 'Builder', 'title: Builder\n')}
${person('ann', 'Ann', 'Smith')}
${person('bill', 'Bill', 'Smith')}
${person('carl', 'Carl', 'Smith')}
${person('star', 'Twinkle', 'Star*Power')}
${person('dave', 'Dave', 'Hidden', 'employeeType: disabled\n')}
`;

// The defaults plus a field of this site's own.
const SEARCH_FIELDS = { name: 'cn', first: 'givenName', last: 'sn', email: 'mail', dept: 'ou' };

/** Many logins from 127.0.0.1: no bans and no response delays (tested in test/auth). */
function lenient(srv: TestServer): void {
  const off = { maxFailures: 1_000_000 };
  (srv.server as unknown as { throttle: LoginThrottle }).throttle = new LoginThrottle({ perAddress: off, perPair: off, accountDelay: { freeFailures: 1_000_000 }, addressDelay: { freeFailures: 1_000_000 } });
}

const iq = (type: 'get' | 'set', to: string, child: Element) => xml('iq', { type, to }, child);

/** A submitted search form with these fields. */
function form(fields: Record<string, string>): Element {
  return xml(
    'query',
    { xmlns: NS_SEARCH },
    xml(
      'x',
      { xmlns: NS_XDATA, type: 'submit' },
      xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, NS_SEARCH)),
      ...Object.entries(fields).map(([k, v]) => xml('field', { var: k }, xml('value', {}, v))),
    ),
  );
}

/** The result form's items as field var -> value. */
function formItems(res: Element): Record<string, string>[] {
  const x = res.getChild('query', NS_SEARCH)?.getChild('x', NS_XDATA);
  expect(x?.attrs.type).toBe('result');
  return (x?.getChildren('item') ?? []).map((item) => Object.fromEntries(item.getChildren('field').map((f) => [f.attrs.var as string, f.getChildText('value') ?? ''])));
}

describe('directory user search and vCards (issue 8, XEP-0055/XEP-0054)', () => {
  let slapd: SlapdServer;
  let srv: TestServer;
  let port: number;
  let alice: TestClient;

  const search = (c: TestClient, fields: Record<string, string>, to = 'search.localhost') => c.iq(iq('set', to, form(fields)));
  const jidsOf = async (fields: Record<string, string>) => formItems(await search(alice, fields)).map((i) => i.jid);

  beforeAll(async () => {
    slapd = await startSlapd({ ldif: LDIF, serviceDn: LDAP_SERVICE_DN });
    const ldap = ldapHostConfig(slapd, { timeouts: LDAP_TIMEOUTS, searchFields: SEARCH_FIELDS });
    srv = await startTestServer({
      hosts: [
        { domain: 'localhost', accounts: 'ldap', ldap },
        { domain: 'edit.localhost', accounts: 'ldap', ldap: { ...ldap, vcard: { localEdits: true } } },
        'internal.localhost',
      ],
      modules: { search: { maxResults: 2 } },
    });
    lenient(srv);
    port = srv.ports.c2s as number;
    alice = await connect({ port, username: 'alice', password: 'alice-pw', mechanism: 'PLAIN' });
  });
  afterAll(async () => {
    await alice?.stop();
    await srv?.close();
    await slapd?.stop();
  });

  it('lists the search service in the host disco#items, with identity directory/user', async () => {
    const items = await alice.iq(iq('get', 'localhost', xml('query', { xmlns: 'http://jabber.org/protocol/disco#items' })));
    expect(items.getChild('query')?.getChildren('item').map((i) => i.attrs.jid)).toContain('search.localhost');
    const info = (await alice.iq(iq('get', 'search.localhost', xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })))).getChild('query');
    expect(info?.getChild('identity')?.attrs).toMatchObject({ category: 'directory', type: 'user' });
    expect(info?.getChildren('feature').map((f) => f.attrs.var)).toContain(NS_SEARCH);
  });

  it('returns the search fields in both variants (§2 legacy elements, §3 data form)', async () => {
    const q = (await alice.iq(iq('get', 'search.localhost', xml('query', { xmlns: NS_SEARCH })))).getChild('query', NS_SEARCH);
    expect(q?.getChildElements().map((c) => c.name)).toEqual(['instructions', 'nick', 'first', 'last', 'email', 'x']);
    const x = q?.getChild('x', NS_XDATA);
    expect(x?.attrs.type).toBe('form');
    const fields = x?.getChildren('field') ?? [];
    expect(fields.find((f) => f.attrs.var === 'FORM_TYPE')?.getChildText('value')).toBe(NS_SEARCH);
    expect(fields.map((f) => f.attrs.var)).toEqual(['FORM_TYPE', 'user', 'name', 'first', 'last', 'email', 'dept']);
  });

  it('searches by each configured attribute, with substring matches', async () => {
    expect(await jidsOf({ user: 'lic' })).toEqual(['alice@localhost']);
    expect(await jidsOf({ name: 'ice LIDD' })).toEqual(['alice@localhost']); // cn matches case-insensitively
    expect(await jidsOf({ first: 'ob' })).toEqual(['bob@localhost']);
    expect(await jidsOf({ last: 'uild' })).toEqual(['bob@localhost']);
    expect(await jidsOf({ email: 'bob@exa' })).toEqual(['bob@localhost']);
    expect(await jidsOf({ dept: 'esear' })).toEqual(['alice@localhost']);
    // Every filled field must match.
    expect(await jidsOf({ first: 'Bob', last: 'Liddell' })).toEqual([]);
    // The result form reports every field of the hit.
    const [hit] = formItems(await search(alice, { last: 'Liddell' }));
    expect(hit).toEqual({ jid: 'alice@localhost', user: 'alice', name: 'Alice Liddell', first: 'Alice', last: 'Liddell', email: 'alice@example.com', dept: 'Research' });
  });

  it('answers legacy searches with legacy items (nick is the username)', async () => {
    const res = await alice.iq(iq('set', 'search.localhost', xml('query', { xmlns: NS_SEARCH }, xml('last', {}, 'uilder'))));
    const items = res.getChild('query', NS_SEARCH)?.getChildren('item') ?? [];
    expect(items.map((i) => i.attrs.jid)).toEqual(['bob@localhost']);
    expect(Object.fromEntries(items[0]!.getChildElements().map((c) => [c.name, c.getText()]))).toEqual({ first: 'Bob', last: 'Builder', nick: 'bob', email: 'bob@example.com' });
    const byNick = await alice.iq(iq('set', 'search.localhost', xml('query', { xmlns: NS_SEARCH }, xml('nick', {}, 'alic'))));
    expect(byNick.getChild('query', NS_SEARCH)?.getChildren('item').map((i) => i.attrs.jid)).toEqual(['alice@localhost']);
    // No match: an empty <query/>.
    const none = await alice.iq(iq('set', 'search.localhost', xml('query', { xmlns: NS_SEARCH }, xml('first', {}, 'Nobody'))));
    expect(none.getChild('query', NS_SEARCH)?.getChildElements()).toEqual([]);
  });

  it('cuts results at maxResults', async () => {
    // Three Smiths in the directory, maxResults 2.
    const hits = await jidsOf({ last: 'mith' });
    expect(hits).toHaveLength(2);
    for (const j of hits) expect(['ann@localhost', 'bill@localhost', 'carl@localhost']).toContain(j);
  });

  it('escapes filter metacharacters in search values (RFC 4515)', async () => {
    // Unescaped, `*` would list everybody: it matches only the entry with a literal '*'.
    expect(await jidsOf({ last: '*' })).toEqual(['star@localhost']);
    expect(await jidsOf({ name: '*' })).toEqual(['star@localhost']); // its cn has the '*' too
    expect(await jidsOf({ first: '*' })).toEqual([]);
    expect(await jidsOf({ user: '*)(uid=*' })).toEqual([]);
    expect(await jidsOf({ user: 'a)(|(uid=*' })).toEqual([]);
  });

  it('does not find users the user filter excludes', async () => {
    expect(await jidsOf({ user: 'dave' })).toEqual([]);
    expect(await jidsOf({ last: 'Hidden' })).toEqual([]);
  });

  it('refuses empty searches and unknown fields', async () => {
    expect(await iqError(alice, iq('set', 'search.localhost', xml('query', { xmlns: NS_SEARCH })))).toEqual({ condition: 'not-acceptable', type: 'modify' });
    expect(await iqError(alice, iq('set', 'search.localhost', form({ name: '  ', email: '' })))).toEqual({ condition: 'not-acceptable', type: 'modify' });
    expect(await iqError(alice, iq('set', 'search.localhost', form({ password: 'x' })))).toMatchObject({ condition: 'bad-request' });
  });

  it('lets only users of the host search its directory; internal hosts search usernames', async () => {
    for (const u of ['carol', 'carla', 'zed']) {
      await srv.server.auth.create(`${u}@internal.localhost`, 'secret-password');
      srv.server.invalidateAccount(`${u}@internal.localhost`);
    }
    const carol = await connect({ port, username: 'carol', domain: 'internal.localhost' });
    try {
      expect(await iqError(carol, iq('set', 'search.localhost', form({ user: 'alice' })))).toEqual({ condition: 'forbidden', type: 'auth' });
      expect(await iqError(alice, iq('set', 'search.internal.localhost', form({ user: 'car' })))).toEqual({ condition: 'forbidden', type: 'auth' });
      const fields = (await carol.iq(iq('get', 'search.internal.localhost', xml('query', { xmlns: NS_SEARCH })))).getChild('query', NS_SEARCH);
      expect(fields?.getChild('x', NS_XDATA)?.getChildren('field').map((f) => f.attrs.var)).toEqual(['FORM_TYPE', 'user']);
      const items = formItems(await search(carol, { user: 'CAR' }, 'search.internal.localhost'));
      expect(items.map((i) => i.jid).sort()).toEqual(['carla@internal.localhost', 'carol@internal.localhost']);
      const legacy = await carol.iq(iq('set', 'search.internal.localhost', xml('query', { xmlns: NS_SEARCH }, xml('nick', {}, 'ze'))));
      expect(legacy.getChild('query', NS_SEARCH)?.getChildren('item').map((i) => [i.attrs.jid, i.getChildText('nick')])).toEqual([['zed@internal.localhost', 'zed']]);
      // A directory field means nothing on an internal host.
      expect(await iqError(carol, iq('set', 'search.internal.localhost', form({ email: 'x' })))).toMatchObject({ condition: 'bad-request' });
    } finally {
      await carol.stop();
    }
  });

  it('fills a directory user’s vCard from the mapped attributes, photo included', async () => {
    const v = (await alice.iq(iq('get', 'alice@localhost', xml('vCard', { xmlns: 'vcard-temp' })))).getChild('vCard', 'vcard-temp');
    expect(v?.getChildText('FN')).toBe('Alice Liddell');
    expect(v?.getChild('N')?.getChildText('GIVEN')).toBe('Alice');
    expect(v?.getChild('N')?.getChildText('FAMILY')).toBe('Liddell');
    expect(v?.getChild('EMAIL')?.getChildText('USERID')).toBe('alice@example.com');
    expect(v?.getChild('TEL')?.getChildText('NUMBER')).toBe('+1 555 0100');
    expect(v?.getChildText('TITLE')).toBe('Chief Rabbit Officer');
    expect(v?.getChild('ORG')?.getChildText('ORGNAME')).toBe('Example Corp');
    expect(v?.getChild('ORG')?.getChildText('ORGUNIT')).toBe('Research');
    expect(v?.getChild('PHOTO')?.getChildText('TYPE')).toBe('image/jpeg');
    expect(Buffer.from(v?.getChild('PHOTO')?.getChildText('BINVAL') ?? '', 'base64').equals(PHOTO)).toBe(true);
    // Someone else's: Bob has no photo, phone or organization in the directory.
    const b = (await alice.iq(iq('get', 'bob@localhost', xml('vCard', { xmlns: 'vcard-temp' })))).getChild('vCard', 'vcard-temp');
    expect(b?.getChildElements().map((c) => c.name)).toEqual(['FN', 'N', 'EMAIL', 'TITLE']);
    expect(b?.getChildText('TITLE')).toBe('Builder');
    // Not in the directory (or excluded): the usual answer for an unknown account.
    expect(await iqError(alice, iq('get', 'dave@localhost', xml('vCard', { xmlns: 'vcard-temp' })))).toMatchObject({ condition: 'service-unavailable' });
  });

  it('puts the directory photo hash in presence (XEP-0153)', async () => {
    await alice.send(xml('presence'));
    const p = await alice.waitFor((el) => el.name === 'presence' && String(el.attrs.from).startsWith('alice@localhost/') && !!el.getChild('x', 'vcard-temp:x:update'));
    expect(p.getChild('x', 'vcard-temp:x:update')?.getChildText('photo')).toBe(createHash('sha1').update(PHOTO).digest('hex'));
  });

  it('refuses vCard changes: the directory is the system of record', async () => {
    const set = iq('set', 'alice@localhost', xml('vCard', { xmlns: 'vcard-temp' }, xml('FN', {}, 'Mallory')));
    expect(await iqError(alice, set)).toEqual({ condition: 'not-allowed', type: 'cancel' });
    const v = await alice.iq(iq('get', 'alice@localhost', xml('vCard', { xmlns: 'vcard-temp' })));
    expect(v.getChild('vCard')?.getChildText('FN')).toBe('Alice Liddell');
  });

  it('stores local vCard edits with localEdits, the directory fields taking precedence', async () => {
    const a2 = await connect({ port, username: 'alice', password: 'alice-pw', domain: 'edit.localhost', mechanism: 'PLAIN' });
    try {
      await a2.iq(iq('set', 'alice@edit.localhost', xml('vCard', { xmlns: 'vcard-temp' }, xml('FN', {}, 'Mallory'), xml('NICKNAME', {}, 'Al'))));
      const v = (await a2.iq(iq('get', 'alice@edit.localhost', xml('vCard', { xmlns: 'vcard-temp' })))).getChild('vCard');
      expect(v?.getChildText('NICKNAME')).toBe('Al');
      expect(v?.getChildText('FN')).toBe('Alice Liddell');
      expect(v?.getChildren('FN')).toHaveLength(1);
    } finally {
      await a2.stop();
    }
  });

  /** SRCH operations slapd logged, once its log has caught up (lines arrive after the answers). */
  async function searches(): Promise<number> {
    await slapd.settle();
    return slapd.ops().SRCH ?? 0;
  }

  it('caches vCard look-ups (counted in the directory log)', async () => {
    srv.server.directory('localhost')!.flushCache();
    slapd.resetOps();
    const get = () => alice.iq(iq('get', 'bob@localhost', xml('vCard', { xmlns: 'vcard-temp' })));
    await get();
    const first = await searches();
    expect(first).toBeGreaterThanOrEqual(1);
    await get();
    await get();
    expect(await searches()).toBe(first);
  });

  it('answers remote-server-timeout while the directory is down, and recovers', async () => {
    const ann = await connect({ port, username: 'ann', password: 'ann-pw', mechanism: 'PLAIN' });
    await slapd.pause();
    try {
      // Ann's vCard cannot be read now: her presence gets no avatar claim at all, not "no photo" (XEP-0153).
      srv.server.directory('localhost')!.flushCache();
      await ann.send(xml('presence'));
      const p = await ann.waitFor((el) => el.name === 'presence' && String(el.attrs.from).startsWith('ann@localhost/'));
      expect(p.getChild('x', 'vcard-temp:x:update')).toBeUndefined();
      expect(await iqError(alice, iq('set', 'search.localhost', form({ user: 'bob' })))).toEqual({ condition: 'remote-server-timeout', type: 'wait' });
      srv.server.directory('localhost')!.flushCache();
      expect(await iqError(alice, iq('get', 'alice@localhost', xml('vCard', { xmlns: 'vcard-temp' })))).toMatchObject({ type: 'wait' });
    } finally {
      await slapd.resume();
    }
    expect(await jidsOf({ user: 'bob' })).toEqual(['bob@localhost']);
    await ann.stop();
  });
});
