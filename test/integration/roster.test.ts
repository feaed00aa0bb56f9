// Roster management over real client connections (RFC 6121 §2): get, set, push, remove,
// versioning (§2.6) and the error cases of §2.3.3 / §2.5.3.
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { barrier, connect, type TestClient, xml } from '../helpers/client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const NS_ROSTER = 'jabber:iq:roster';
const ROSTER_SIZE = 5;

function rosterGet(ver?: string, to?: string): Element {
  return xml('iq', { type: 'get', to }, xml('query', { xmlns: NS_ROSTER, ver }));
}

function rosterSet(...items: Element[]): Element {
  return xml('iq', { type: 'set' }, xml('query', { xmlns: NS_ROSTER }, ...items));
}

function item(jid: string, attrs: Record<string, string> = {}, groups: string[] = []): Element {
  return xml('item', { jid, ...attrs }, ...groups.map((g) => xml('group', {}, g)));
}

function isPushFor(jid: string) {
  return (el: Element) => el.name === 'iq' && el.attrs.type === 'set' && el.getChild('query', NS_ROSTER)?.getChild('item')?.attrs.jid === jid;
}

function pushedItem(push: Element): Element {
  return push.getChild('query', NS_ROSTER)?.getChild('item') as Element;
}

function groupsOf(el: Element): string[] {
  return el.getChildren('group').map((g) => g.getText());
}

/** Sends an iq that must fail; resolves the error condition. */
async function iqError(c: TestClient, el: Element): Promise<string> {
  try {
    const r = await c.iq(el);
    throw new Error(`expected an error, got ${r}`);
  } catch (e) {
    const cond = (e as { condition?: string }).condition;
    if (!cond) throw e;
    return cond;
  }
}


describe('roster (RFC 6121 §2)', () => {
  let srv: TestServer;
  const clients: TestClient[] = [];
  let port: number;

  async function login(username: string, resource?: string): Promise<TestClient> {
    // PLAIN: @xmpp/client's SCRAM is pure-JS PBKDF2 and slow; SASL itself is covered in sasl.test.ts.
    const c = await connect({ port, username, resource, mechanism: 'PLAIN' });
    clients.push(c);
    return c;
  }

  async function newUser(prefix = 'ro'): Promise<string> {
    const u = uniqueUser(prefix);
    await srv.addUser(u);
    return u;
  }

  beforeAll(async () => {
    srv = await startTestServer({ limits: { rosterSize: ROSTER_SIZE } });
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
  });

  it('an empty roster is an empty <query/> with a version', async () => {
    const c = await login(await newUser());
    const res = await c.iq(rosterGet());
    const q = res.getChild('query', NS_ROSTER);
    expect(q).toBeDefined();
    expect(q?.getChildren('item')).toHaveLength(0);
    expect(typeof q?.attrs.ver).toBe('string');
  });

  it('adding and updating an item: result, push with name/groups/subscription=none, stored exactly', async () => {
    const u = await newUser();
    const c = await login(u);
    await c.iq(rosterGet());
    const contact = `contact-${u}@localhost`;
    const res = await c.iq(rosterSet(item(contact, { name: 'Nurse' }, ['Servants', 'Friends'])));
    expect(res.attrs.type).toBe('result');
    expect(res.getChildElements()).toHaveLength(0);
    const push = await c.waitFor(isPushFor(contact));
    // RFC 6121 §2.1.6: a push has no 'from' or the user's bare JID.
    expect(push.attrs.from === undefined || push.attrs.from === `${u}@localhost`).toBe(true);
    expect(push.attrs.to).toBe(c.jid);
    const pi = pushedItem(push);
    expect(pi.attrs).toMatchObject({ jid: contact, name: 'Nurse', subscription: 'none' });
    expect(pi.attrs.ask).toBeUndefined();
    expect(groupsOf(pi).sort()).toEqual(['Friends', 'Servants']);
    expect(push.getChild('query', NS_ROSTER)?.attrs.ver).toBeTruthy();

    // Update: the item is replaced exactly as sent (§2.4): new handle, one group.
    await c.iq(rosterSet(item(contact, { name: 'MyNurse' }, ['Lovers'])));
    const push2 = await c.waitFor(isPushFor(contact));
    expect(pushedItem(push2).attrs.name).toBe('MyNurse');
    expect(groupsOf(pushedItem(push2))).toEqual(['Lovers']);
    expect(push2.getChild('query', NS_ROSTER)?.attrs.ver).not.toBe(push.getChild('query', NS_ROSTER)?.attrs.ver);

    // Removing the handle and all groups.
    await c.iq(rosterSet(item(contact, { name: '' })));
    const push3 = await c.waitFor(isPushFor(contact));
    expect(pushedItem(push3).attrs.name).toBeUndefined();
    expect(groupsOf(pushedItem(push3))).toEqual([]);

    const roster = (await c.iq(rosterGet())).getChild('query', NS_ROSTER) as Element;
    const items = roster.getChildren('item');
    expect(items).toHaveLength(1);
    expect(items[0]?.attrs).toMatchObject({ jid: contact, subscription: 'none' });
    expect(items[0]?.attrs.name).toBeUndefined();
  });

  it('pushes go to every interested resource, and only to them (§2.1.6)', async () => {
    const u = await newUser();
    const a = await login(u, 'one');
    const b = await login(u, 'two');
    const quiet = await login(u, 'quiet'); // never asks for the roster
    await a.iq(rosterGet());
    await b.iq(rosterGet());
    const contact = `friend-${u}@localhost`;
    await a.iq(rosterSet(item(contact, { name: 'F' })));
    const pa = await a.waitFor(isPushFor(contact));
    const pb = await b.waitFor(isPushFor(contact));
    expect(pa.attrs.to).toBe(`${u}@localhost/one`);
    expect(pb.attrs.to).toBe(`${u}@localhost/two`);
    expect(pushedItem(pb).attrs.name).toBe('F');
    expect(pa.getChild('query', NS_ROSTER)?.attrs.ver).toBe(pb.getChild('query', NS_ROSTER)?.attrs.ver);
    await barrier(a, quiet); // the pushes go out while the server handles the set, before this iq
    expect(quiet.received.some(isPushFor(contact))).toBe(false);
  });

  it("removing an item pushes subscription='remove' and drops it from the roster", async () => {
    const u = await newUser();
    const a = await login(u, 'one');
    const b = await login(u, 'two');
    await a.iq(rosterGet());
    await b.iq(rosterGet());
    const contact = `gone-${u}@localhost`;
    await a.iq(rosterSet(item(contact)));
    await a.waitFor(isPushFor(contact));
    await b.waitFor(isPushFor(contact));
    const res = await a.iq(rosterSet(item(contact, { subscription: 'remove' })));
    expect(res.attrs.type).toBe('result');
    for (const c of [a, b]) {
      const p = await c.waitFor(isPushFor(contact));
      expect(pushedItem(p).attrs.subscription).toBe('remove');
    }
    const q = (await b.iq(rosterGet())).getChild('query', NS_ROSTER) as Element;
    expect(q.getChildren('item').map((i) => i.attrs.jid)).not.toContain(contact);
  });

  it('versioning (§2.6): current ver -> empty result; stale or empty ver -> full roster with the new ver', async () => {
    const u = await newUser();
    const c = await login(u);
    const first = (await c.iq(rosterGet(''))).getChild('query', NS_ROSTER) as Element;
    const v0 = first.attrs.ver as string;
    expect(v0).toBeDefined();

    const same = await c.iq(rosterGet(v0));
    expect(same.attrs.type).toBe('result');
    // An empty IQ-result, not an empty <query/> (which would mean an empty roster).
    expect(same.getChildElements()).toHaveLength(0);

    await c.iq(rosterSet(item(`v-${u}@localhost`, { name: 'V' })));
    const push = await c.waitFor(isPushFor(`v-${u}@localhost`));
    const v1 = push.getChild('query', NS_ROSTER)?.attrs.ver as string;
    expect(v1).not.toBe(v0);

    const stale = (await c.iq(rosterGet(v0))).getChild('query', NS_ROSTER) as Element;
    expect(stale).toBeDefined();
    expect(stale.attrs.ver).toBe(v1);
    expect(stale.getChildren('item').map((i) => i.attrs.jid)).toEqual([`v-${u}@localhost`]);

    expect((await c.iq(rosterGet(v1))).getChildElements()).toHaveLength(0);
    const bootstrap = (await c.iq(rosterGet(''))).getChild('query', NS_ROSTER) as Element;
    expect(bootstrap.attrs.ver).toBe(v1);
    expect(bootstrap.getChildren('item')).toHaveLength(1);
  });

  describe('errors (§2.3.3, §2.5.3)', () => {
    let u: string;
    let c: TestClient;
    beforeAll(async () => {
      u = await newUser('roerr');
      c = await login(u);
      await c.iq(rosterGet());
    });

    it('more than one item -> bad-request', async () => {
      expect(await iqError(c, rosterSet(item(`x1-${u}@localhost`), item(`x2-${u}@localhost`)))).toBe('bad-request');
    });

    it('no item -> bad-request', async () => {
      expect(await iqError(c, rosterSet())).toBe('bad-request');
    });

    it("a 'subscription' value other than 'remove' is ignored, not applied (§2.1.2.5, §2.1.5)", async () => {
      const contact = `sub-${u}@localhost`;
      const res = await c.iq(rosterSet(item(contact, { subscription: 'both', ask: 'subscribe', approved: 'true' })));
      expect(res.attrs.type).toBe('result');
      const p = pushedItem(await c.waitFor(isPushFor(contact)));
      expect(p.attrs.subscription).toBe('none');
      expect(p.attrs.ask).toBeUndefined();
      expect(p.attrs.approved).toBeUndefined();
      await c.iq(rosterSet(item(contact, { subscription: 'from' })));
      expect(pushedItem(await c.waitFor(isPushFor(contact))).attrs.subscription).toBe('none');
      await c.iq(rosterSet(item(contact, { subscription: 'remove' })));
      await c.waitFor(isPushFor(contact));
    });

    it('duplicate groups -> bad-request', async () => {
      expect(await iqError(c, rosterSet(item(`dup-${u}@localhost`, {}, ['Servants', 'Servants'])))).toBe('bad-request');
    });

    it('an empty group name -> not-acceptable', async () => {
      expect(await iqError(c, rosterSet(item(`empty-${u}@localhost`, {}, [''])))).toBe('not-acceptable');
    });

    it('an oversized handle -> not-acceptable', async () => {
      expect(await iqError(c, rosterSet(item(`long-${u}@localhost`, { name: 'n'.repeat(5000) })))).toBe('not-acceptable');
    });

    it("another user's roster -> forbidden (get and set)", async () => {
      const other = await newUser('victim');
      expect(await iqError(c, rosterGet(undefined, `${other}@localhost`))).toBe('forbidden');
      const set = rosterSet(item(`evil-${u}@localhost`));
      set.attrs.to = `${other}@localhost`;
      expect(await iqError(c, set)).toBe('forbidden');
      // And nothing was written.
      const o = await login(other);
      const q = (await o.iq(rosterGet())).getChild('query', NS_ROSTER) as Element;
      expect(q.getChildren('item')).toHaveLength(0);
    });

    it('removing an item that is not there -> item-not-found', async () => {
      expect(await iqError(c, rosterSet(item(`never-${u}@localhost`, { subscription: 'remove' })))).toBe('item-not-found');
    });

    it(`the roster size limit (${ROSTER_SIZE}) -> not-allowed; updates of existing items still work`, async () => {
      const full = await newUser('full');
      const f = await login(full);
      for (let i = 0; i < ROSTER_SIZE; i++) await f.iq(rosterSet(item(`c${i}-${full}@localhost`)));
      expect(await iqError(f, rosterSet(item(`one-too-many-${full}@localhost`)))).toBe('not-allowed');
      const upd = await f.iq(rosterSet(item(`c0-${full}@localhost`, { name: 'still fine' })));
      expect(upd.attrs.type).toBe('result');
      const q = (await f.iq(rosterGet())).getChild('query', NS_ROSTER) as Element;
      expect(q.getChildren('item')).toHaveLength(ROSTER_SIZE);
    });
  });
});
