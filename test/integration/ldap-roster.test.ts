// The directory as system of record (issue 8), against a real OpenLDAP slapd loaded with
// docs/ldap/parley.schema: rosters kept in the parleyRosterItem attribute of each user's entry
// (visible there, surviving a restart and even a lost database, versioned, size-limited, pending
// requests kept across logins), XEP-0077 registration creating the user entry (password set by the
// Password Modify operation, so slapd hashes it), conflicts and outages answered with errors, and
// users disabled in the directory losing their sessions once the cache ages out, but not during an
// outage.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { type Element, parse } from 'ltx';
import { Attribute, Change, Client as LdapClient, NoSuchObjectError } from 'ldapts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, iqError, type TestClient, xml } from '../helpers/client.js';
import { iqReplyPattern, RawClient, waitUntil } from '../helpers/raw.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { LDAP_PEOPLE, LDAP_SERVICE_DN, LDAP_TIMEOUTS, ldapHostConfig, ldapPerson, ldapSkeleton, startSlapd, type SlapdServer } from '../helpers/slapd.js';
import { LoginThrottle } from '../../src/auth/index.js';

const NS_ROSTER = 'jabber:iq:roster';
const NS_REGISTER = 'jabber:iq:register';
const TTL_SECONDS = 2;

const person = (uid: string, password: string, extra = '') => ldapPerson({ uid, password, extra });

const LDIF = `
${ldapSkeleton()}
${person('alice', 'alice-pw')}
${person('bob', 'bob-pw')}
${person('carol', 'carol-pw')}
${person('dave', 'dave-pw', 'employeeType: disabled\n')}
`;

describe('the directory as system of record (issue 8)', () => {
  let slapd: SlapdServer;
  let srv: TestServer;
  let dataDir: string;
  const clients: TestClient[] = [];

  async function start(dir: string): Promise<TestServer> {
    const s = await startTestServer({
      dataDir: dir,
      limits: { rosterSize: 3 },
      hosts: [
        {
          domain: 'localhost',
          accounts: 'ldap',
          registration: { enabled: true, minPasswordLength: 4 },
          ldap: ldapHostConfig(slapd, {
            roster: 'directory',
            registration: { objectClasses: ['inetOrgPerson', 'parleyUser'], attributes: { cn: '{username}', sn: 'Self-registered', description: 'registered in-band as {username}' } },
            cache: { ttlSeconds: TTL_SECONDS, negativeTtlSeconds: 1 },
            timeouts: LDAP_TIMEOUTS,
          }),
        },
      ],
    });
    // Deliberate failures from 127.0.0.1: no bans or delays (throttling is tested elsewhere).
    const off = { maxFailures: 1_000_000 };
    (s.server as unknown as { throttle: LoginThrottle }).throttle = new LoginThrottle({ perAddress: off, perPair: off, accountDelay: { freeFailures: 1_000_000 }, addressDelay: { freeFailures: 1_000_000 } });
    return s;
  }

  const port = () => srv.ports.c2s as number;
  async function login(username: string, password = `${username}-pw`): Promise<TestClient> {
    const c = await connect({ port: port(), username, password, mechanism: 'PLAIN' });
    clients.push(c);
    return c;
  }

  /** Reads an entry as the root DN, as an administrator would. */
  async function entry(dn: string): Promise<Record<string, string[]>> {
    const admin = new LdapClient({ url: slapd.url });
    await admin.bind(slapd.rootDn, slapd.rootPassword);
    try {
      const [e] = (await admin.search(dn, { scope: 'base', attributes: ['*'] }).catch((err: unknown) => {
        if (err instanceof NoSuchObjectError) return { searchEntries: [] };
        throw err;
      })).searchEntries;
      const out: Record<string, string[]> = {};
      for (const [k, v] of Object.entries(e ?? {})) if (k !== 'dn') out[k] = (Array.isArray(v) ? v : [v]).map(String);
      return out;
    } finally {
      await admin.unbind();
    }
  }

  async function adminModify(dn: string, operation: 'replace' | 'delete', type: string, values: string[]): Promise<void> {
    const admin = new LdapClient({ url: slapd.url });
    await admin.bind(slapd.rootDn, slapd.rootPassword);
    await admin.modify(dn, new Change({ operation, modification: new Attribute({ type, values }) }));
    await admin.unbind();
  }

  const rosterGet = (ver?: string) => xml('iq', { type: 'get' }, xml('query', { xmlns: NS_ROSTER, ver }));
  const rosterItems = (r: Element) => (r.getChild('query')?.getChildren('item') ?? []).map((i) => ({ jid: i.attrs.jid, subscription: i.attrs.subscription, name: i.attrs.name }));
  const stored = async (uid: string) => ((await entry(`uid=${uid},${LDAP_PEOPLE}`)).parleyRosterItem ?? []).map((v) => JSON.parse(v) as Record<string, unknown>);

  /** Pre-auth registration over a raw socket (no XMPP library registers before SASL). */
  async function register(username: string, password: string): Promise<Element> {
    const c = await RawClient.connect(port());
    try {
      await c.openStream();
      await c.startTls();
      await c.openStream();
      const id = c.nextId('reg');
      await c.send(`<iq type='set' id='${id}'><query xmlns='${NS_REGISTER}'><username>${username}</username><password>${password}</password></query></iq>`);
      return parse((await c.waitFor(iqReplyPattern(id), 10_000, 0))[0]);
    } finally {
      c.destroy();
    }
  }
  const errorOf = (r: Element) => ({ type: r.attrs.type, errorType: r.getChild('error')?.attrs.type, condition: r.getChild('error')?.getChildElements()[0]?.name });

  beforeAll(async () => {
    slapd = await startSlapd({ ldif: LDIF, serviceDn: LDAP_SERVICE_DN, schemas: [resolve(import.meta.dirname, '../../docs/ldap/parley.schema')] });
    dataDir = mkdtempSync(join(tmpdir(), 'parley-ldap-roster-'));
    srv = await start(dataDir);
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
    await slapd?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('keeps the roster and subscriptions in the user entries; a request made while offline waits in the database', async () => {
    const alice = await login('alice');
    await alice.iq(rosterGet()); // roster pushes go to resources that asked for the roster
    await alice.iq(xml('iq', { type: 'set' }, xml('query', { xmlns: NS_ROSTER }, xml('item', { jid: 'bob@localhost', name: 'Bobby' }, xml('group', {}, 'Team')))));
    await alice.send(xml('presence'));
    // Bob is offline: the request is kept for him (pending requests stay in Parley's database).
    await alice.send(xml('presence', { to: 'bob@localhost', type: 'subscribe' }));
    await alice.waitFor((el) => el.name === 'iq' && el.getChild('query')?.getChild('item')?.attrs.ask === 'subscribe');
    const bob = await login('bob');
    await bob.send(xml('presence'));
    await bob.waitFor((el) => el.name === 'presence' && el.attrs.type === 'subscribe' && el.attrs.from === 'alice@localhost');
    await bob.send(xml('presence', { to: 'alice@localhost', type: 'subscribed' }));
    await alice.waitFor((el) => el.name === 'iq' && el.getChild('query')?.getChild('item')?.attrs.subscription === 'to');

    expect(rosterItems(await alice.iq(rosterGet()))).toEqual([{ jid: 'bob@localhost', subscription: 'to', name: 'Bobby' }]);
    // The directory holds it: one JSON value per contact, and the auxiliary class was added.
    const a = await entry(`uid=alice,${LDAP_PEOPLE}`);
    expect(a.objectClass).toContain('parleyUser');
    expect(await stored('alice')).toEqual([{ jid: 'bob@localhost', name: 'Bobby', subscription: 'to', ask: false, approved: false, groups: ['Team'] }]);
    expect(await stored('bob')).toEqual([{ jid: 'alice@localhost', subscription: 'from', ask: false, approved: false, groups: [] }]);
    // Every feature reads the same contact list, not only the roster module: XEP-0012 last activity
    // of Bob is for those Bob shares presence with, which his directory roster says Alice is.
    const last = await alice.iq(xml('iq', { type: 'get', to: 'bob@localhost' }, xml('query', { xmlns: 'jabber:iq:last' })));
    expect(last.getChild('query')?.attrs.seconds).toBe('0');
    expect((await iqError(bob, xml('iq', { type: 'get', to: 'alice@localhost' }, xml('query', { xmlns: 'jabber:iq:last' })))).condition).toBe('forbidden');
  });

  it('versions the roster (RFC 6121 §2.6): an unchanged roster is not sent again, a changed one is', async () => {
    const alice = clients[0] as TestClient;
    const ver = (await alice.iq(rosterGet())).getChild('query')?.attrs.ver as string;
    expect(ver).toMatch(/^[0-9a-f]{16}$/);
    expect((await alice.iq(rosterGet(ver))).getChild('query')).toBeUndefined();
    // An administrator's edit in the directory is seen once the cache ages out, as a new version.
    const raw = (await entry(`uid=alice,${LDAP_PEOPLE}`)).parleyRosterItem ?? [];
    await adminModify(`uid=alice,${LDAP_PEOPLE}`, 'replace', 'parleyRosterItem', [...raw, JSON.stringify({ jid: 'hand@localhost', subscription: 'none', ask: false, approved: false, groups: [] })]);
    await new Promise((r) => setTimeout(r, TTL_SECONDS * 1000 + 200));
    const changed = await alice.iq(rosterGet(ver));
    expect(changed.getChild('query')?.attrs.ver).not.toBe(ver);
    expect(rosterItems(changed).map((i) => i.jid).sort()).toEqual(['bob@localhost', 'hand@localhost']);
    await alice.iq(xml('iq', { type: 'set' }, xml('query', { xmlns: NS_ROSTER }, xml('item', { jid: 'hand@localhost', subscription: 'remove' }))));
    expect((await stored('alice')).map((i) => i.jid)).toEqual(['bob@localhost']);
  });

  it('enforces the roster size limit on a directory roster', async () => {
    const alice = clients[0] as TestClient;
    for (const j of ['c1@localhost', 'c2@localhost']) await alice.iq(xml('iq', { type: 'set' }, xml('query', { xmlns: NS_ROSTER }, xml('item', { jid: j }))));
    expect(await iqError(alice, xml('iq', { type: 'set' }, xml('query', { xmlns: NS_ROSTER }, xml('item', { jid: 'c3@localhost' }))))).toMatchObject({ condition: 'not-allowed' });
    expect((await stored('alice')).length).toBe(3);
    for (const j of ['c1@localhost', 'c2@localhost']) await alice.iq(xml('iq', { type: 'set' }, xml('query', { xmlns: NS_ROSTER }, xml('item', { jid: j, subscription: 'remove' }))));
  });

  it('survives a restart, and a lost database: the directory is the system of record', async () => {
    const before = (await (clients[0] as TestClient).iq(rosterGet())).getChild('query')?.attrs.ver as string;
    await Promise.all(clients.splice(0).map((c) => c.stop()));
    await srv.close();
    srv = await start(dataDir); // same database
    let alice = await login('alice');
    expect(rosterItems(await alice.iq(rosterGet()))).toEqual([{ jid: 'bob@localhost', subscription: 'to', name: 'Bobby' }]);
    // The version is derived from the directory's values, so it holds across the restart.
    expect((await alice.iq(rosterGet(before))).getChild('query')).toBeUndefined();
    await alice.stop();
    await srv.close();
    const fresh = mkdtempSync(join(tmpdir(), 'parley-ldap-roster-'));
    try {
      srv = await start(fresh); // an empty database, the same directory
      alice = await login('alice');
      expect(rosterItems(await alice.iq(rosterGet()))).toEqual([{ jid: 'bob@localhost', subscription: 'to', name: 'Bobby' }]);
      const bob = await login('bob');
      expect(rosterItems(await bob.iq(rosterGet()))).toEqual([{ jid: 'alice@localhost', subscription: 'from', name: undefined }]);
      await Promise.all(clients.splice(0).map((c) => c.stop()));
      await srv.close();
    } finally {
      rmSync(fresh, { recursive: true, force: true });
    }
    srv = await start(dataDir);
  });

  it('registers in-band into the directory: the entry from the template, the password hashed by the directory', async () => {
    expect((await register('newbie', 'newbie-pw')).attrs.type).toBe('result');
    const e = await entry(`uid=newbie,${LDAP_PEOPLE}`);
    expect(e.objectClass).toEqual(expect.arrayContaining(['inetOrgPerson', 'parleyUser']));
    expect(e).toMatchObject({ uid: ['newbie'], cn: ['newbie'], sn: ['Self-registered'], description: ['registered in-band as newbie'] });
    // Set through the Password Modify operation, so slapd stored a salted hash, not the text.
    expect(e.userPassword?.[0]).toMatch(/^\{SSHA\}/);
    const c = await login('newbie', 'newbie-pw');
    expect(c.jid).toMatch(/^newbie@localhost\//);
    // The directory is the system of record: no password change or removal through Parley.
    expect(await iqError(c, xml('iq', { type: 'set' }, xml('query', { xmlns: NS_REGISTER }, xml('username', {}, 'newbie'), xml('password', {}, 'other-pw'))))).toMatchObject({ condition: 'not-allowed' });
    expect(await iqError(c, xml('iq', { type: 'set' }, xml('query', { xmlns: NS_REGISTER }, xml('remove'))))).toMatchObject({ condition: 'not-allowed' });
    expect((await entry(`uid=newbie,${LDAP_PEOPLE}`)).userPassword).toEqual(e.userPassword);
  });

  it('answers conflict for a taken username, also one the user filter hides, and an error while the directory is down', async () => {
    expect(errorOf(await register('alice', 'whatever'))).toMatchObject({ type: 'error', condition: 'conflict' });
    expect(errorOf(await register('dave', 'whatever'))).toMatchObject({ type: 'error', condition: 'conflict' });
    await slapd.pause();
    try {
      expect(errorOf(await register('ghost', 'ghost-pw'))).toMatchObject({ type: 'error', errorType: 'wait', condition: 'internal-server-error' });
    } finally {
      await slapd.resume();
    }
    expect(await entry(`uid=ghost,${LDAP_PEOPLE}`)).toEqual({});
  });

  it('keeps sessions during a directory outage, and ends those of a user disabled in the directory once the cache ages out', async () => {
    const carol = await RawClient.login(port(), 'carol', 'carol-pw', { presence: true });
    try {
      await slapd.pause();
      // The barrier: count the server's periodic directory session checks that start from now on,
      // once each has run to its end (a sleep would prove nothing if the checks ran late).
      const server = srv.server as unknown as { checkDirectoryUsers(...args: unknown[]): Promise<void> };
      const check = server.checkDirectoryUsers;
      let checks = 0;
      server.checkDirectoryUsers = async function (this: unknown, ...args: unknown[]) {
        try {
          await check.apply(this, args);
        } finally {
          checks++;
        }
      };
      try {
        // Two checks with the directory unreachable: nobody is logged out.
        await waitUntil(() => checks >= 2, 10 * TTL_SECONDS * 1000, 'two directory session checks');
        await carol.ping();
      } finally {
        delete (server as { checkDirectoryUsers?: unknown }).checkDirectoryUsers; // the prototype's again
        await slapd.resume();
      }
      // A fresh cache entry for carol, so the next checks see her as enabled until it ages out.
      const dir = srv.server.auth.directory('localhost');
      dir?.cache.delete('u:carol');
      expect(await dir?.findUser('carol')).not.toBeNull();
      await adminModify(`uid=carol,${LDAP_PEOPLE}`, 'replace', 'employeeType', ['disabled']);
      await carol.ping(); // still cached as enabled
      expect(carol.streamError()).toBeUndefined();
      expect(await carol.expectStreamErrorAndClose(4 * TTL_SECONDS * 1000)).toBe('not-authorized');
    } finally {
      carol.destroy();
    }
  });
});
