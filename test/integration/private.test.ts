// XEP-0049 private XML storage over real client connections: store/retrieve keyed by namespace
// (§2.3), several children per set, the empty element when nothing is stored, the §3 error
// conditions (forbidden, not-acceptable; bad-request for a get naming two namespaces) and the
// per-account caps (limits.privateItemBytes, limits.privateStorageItems).
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { iqError, connect, type TestClient, xml } from '../helpers/client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const NS = 'jabber:iq:private';
const MAX_BYTES = 1024;
const MAX_ITEMS = 3;

function privSet(children: Element[], to?: string, attrs: Record<string, string> = {}): Element {
  return xml('iq', { type: 'set', to }, xml('query', { xmlns: NS, ...attrs }, ...children));
}

function privGet(children: Element[], to?: string): Element {
  return xml('iq', { type: 'get', to }, xml('query', { xmlns: NS }, ...children));
}

/** The children of the <query/> in a result. */
function stored(res: Element): Element[] {
  const q = res.getChild('query', NS);
  if (!q) throw new Error(`no query in ${res}`);
  return q.getChildElements();
}

describe('private XML storage (XEP-0049)', () => {
  let srv: TestServer;
  let port: number;
  const clients: TestClient[] = [];

  async function login(username: string): Promise<TestClient> {
    const c = await connect({ port, username });
    clients.push(c);
    return c;
  }

  async function newUser(): Promise<string> {
    const u = uniqueUser('pv');
    await srv.addUser(u);
    return u;
  }

  beforeAll(async () => {
    srv = await startTestServer({ limits: { privateItemBytes: MAX_BYTES, privateStorageItems: MAX_ITEMS } });
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
  });

  it('§2.3: stores a fragment and returns it for its namespace, across sessions', async () => {
    const u = await newUser();
    const c = await login(u);
    const res = await c.iq(privSet([xml('exodus', { xmlns: 'exodus:prefs' }, xml('defaultnick', {}, 'Hamlet'))]));
    expect(res.attrs.type).toBe('result');
    expect(res.getChildElements()).toHaveLength(0);
    await c.stop();
    const c2 = await login(u);
    const got = stored(await c2.iq(privGet([xml('exodus', { xmlns: 'exodus:prefs' })])));
    expect(got).toHaveLength(1);
    expect(got[0]?.name).toBe('exodus');
    expect(got[0]?.attrs.xmlns).toBe('exodus:prefs');
    expect(got[0]?.getChildText('defaultnick')).toBe('Hamlet');
  });

  it('nothing stored: the result holds the requested element, empty', async () => {
    const c = await login(await newUser());
    const got = stored(await c.iq(privGet([xml('storage', { xmlns: 'storage:bookmarks' })])));
    expect(got).toHaveLength(1);
    expect(got[0]?.name).toBe('storage');
    expect(got[0]?.attrs.xmlns).toBe('storage:bookmarks');
    expect(got[0]?.children).toHaveLength(0);
  });

  it('one set with several children: each namespace stored, same-namespace children kept together', async () => {
    const c = await login(await newUser());
    await c.iq(
      privSet([
        xml('a', { xmlns: 'urn:test:one' }, xml('v', {}, '1')),
        xml('b', { xmlns: 'urn:test:two' }, xml('v', {}, '2')),
        xml('a', { xmlns: 'urn:test:one' }, xml('v', {}, '3')),
      ]),
    );
    const one = stored(await c.iq(privGet([xml('a', { xmlns: 'urn:test:one' })])));
    expect(one.map((e) => e.getChildText('v'))).toEqual(['1', '3']);
    const two = stored(await c.iq(privGet([xml('b', { xmlns: 'urn:test:two' })])));
    expect(two.map((e) => e.getChildText('v'))).toEqual(['2']);

    // A later set replaces only its own namespace.
    await c.iq(privSet([xml('a', { xmlns: 'urn:test:one' }, xml('v', {}, 'new'))]));
    expect(stored(await c.iq(privGet([xml('a', { xmlns: 'urn:test:one' })]))).map((e) => e.getChildText('v'))).toEqual(['new']);
    expect(stored(await c.iq(privGet([xml('b', { xmlns: 'urn:test:two' })]))).map((e) => e.getChildText('v'))).toEqual(['2']);
  });

  it('a prefix declared on <query/> still keys the fragment by its namespace', async () => {
    const c = await login(await newUser());
    await c.iq(privSet([xml('p:prefs', {}, xml('p:color', {}, 'blue'))], undefined, { 'xmlns:p': 'urn:test:prefixed' }));
    const got = stored(await c.iq(privGet([xml('prefs', { xmlns: 'urn:test:prefixed' })])));
    expect(got).toHaveLength(1);
    expect(got[0]?.getNS()).toBe('urn:test:prefixed');
    expect(got[0]?.getChildElements()[0]?.getNS()).toBe('urn:test:prefixed');
    expect(got[0]?.getChildElements()[0]?.getText()).toBe('blue');
  });

  it('§3: another account’s private data is forbidden to get and to set', async () => {
    const victim = await newUser();
    const v = await login(victim);
    await v.iq(privSet([xml('secret', { xmlns: 'urn:test:secret' }, 'mine')]));
    const m = await login(await newUser());
    const g = await iqError(m, privGet([xml('secret', { xmlns: 'urn:test:secret' })], `${victim}@localhost`));
    expect(g.condition).toBe('forbidden');
    const s = await iqError(m, privSet([xml('secret', { xmlns: 'urn:test:secret' }, 'yours')], `${victim}@localhost`));
    expect(s.condition).toBe('forbidden');
    expect(stored(await v.iq(privGet([xml('secret', { xmlns: 'urn:test:secret' })])))[0]?.getText()).toBe('mine');
  });

  it('§2.3/§3: no child, or a child without its own namespace, is not-acceptable', async () => {
    const c = await login(await newUser());
    const cases: [string, Element][] = [
      ['empty set', privSet([])],
      ['empty get', privGet([])],
      ['child inheriting jabber:iq:private (set)', privSet([xml('prefs', {}, 'x')])],
      ['child inheriting jabber:iq:private (get)', privGet([xml('prefs')])],
      ['child in jabber:iq:private', privSet([xml('prefs', { xmlns: NS })])],
      ['child in jabber:client', privSet([xml('prefs', { xmlns: 'jabber:client' })])],
      ['child in jabber:server', privGet([xml('prefs', { xmlns: 'jabber:server' })])],
    ];
    for (const [what, el] of cases) {
      const err = await iqError(c, el);
      expect(err.condition, what).toBe('not-acceptable');
    }
    // A set mixing a valid and an invalid child stores nothing.
    expect((await iqError(c, privSet([xml('ok', { xmlns: 'urn:test:mixed' }, 'x'), xml('bad', { xmlns: 'jabber:client' })]))).condition).toBe('not-acceptable');
    expect(stored(await c.iq(privGet([xml('ok', { xmlns: 'urn:test:mixed' })])))[0]?.children).toHaveLength(0);
  });

  it('a get naming more than one namespace is bad-request', async () => {
    const c = await login(await newUser());
    const err = await iqError(c, privGet([xml('a', { xmlns: 'urn:test:a' }), xml('b', { xmlns: 'urn:test:b' })]));
    expect(err.condition).toBe('bad-request');
  });

  it('a document over limits.privateItemBytes is not-acceptable; the old one stays', async () => {
    const c = await login(await newUser());
    await c.iq(privSet([xml('big', { xmlns: 'urn:test:big' }, 'small')]));
    const err = await iqError(c, privSet([xml('big', { xmlns: 'urn:test:big' }, 'x'.repeat(MAX_BYTES))]));
    expect(err.condition).toBe('not-acceptable');
    expect(stored(await c.iq(privGet([xml('big', { xmlns: 'urn:test:big' })])))[0]?.getText()).toBe('small');
  });

  it('more than limits.privateStorageItems namespaces is resource-constraint; existing ones can still change', async () => {
    const c = await login(await newUser());
    for (let i = 0; i < MAX_ITEMS; i++) await c.iq(privSet([xml('n', { xmlns: `urn:test:cap${i}` }, String(i))]));
    const err = await iqError(c, privSet([xml('n', { xmlns: 'urn:test:cap-extra' }, 'x')]));
    expect(err.condition).toBe('resource-constraint');
    expect(stored(await c.iq(privGet([xml('n', { xmlns: 'urn:test:cap-extra' })])))[0]?.children).toHaveLength(0);
    // Replacing a namespace already stored does not count as a new one.
    await c.iq(privSet([xml('n', { xmlns: 'urn:test:cap0' }, 'updated')]));
    expect(stored(await c.iq(privGet([xml('n', { xmlns: 'urn:test:cap0' })])))[0]?.getText()).toBe('updated');
  });
});
