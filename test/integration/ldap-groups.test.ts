// Directory groups (issue 8) against a real OpenLDAP slapd on loopback: static groups (groupOfNames,
// groupOfUniqueNames, posixGroup memberUid), a dynamic group (groupOfURLs memberURL, inside the user
// filter), nesting to the configured depth, a cycle; shared roster groups (items with subscription
// both, presence without subscription requests, removal refused); a member added in the directory
// appearing only once the cache has aged out, or at once after a flush; cache figures in /metrics;
// and directory groups as @group principals of the access control files.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Element } from 'ltx';
import { Client } from 'ldapts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, iqError, xml, type TestClient } from '../helpers/client.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { LDAP_GROUPS, LDAP_PEOPLE, LDAP_SERVICE_DN, ldapHostConfig, ldapPerson, ldapSkeleton, startSlapd, type SlapdServer } from '../helpers/slapd.js';
import { LoginThrottle } from '../../src/auth/index.js';
import { Jid } from '../../src/xmpp/jid.js';

const NS_ROSTER = 'jabber:iq:roster';
const TTL_SECONDS = 2;

const person = (uid: string, extra = '') => ldapPerson({ uid, cn: `${uid[0]?.toUpperCase()}${uid.slice(1)}`, extra });

const group = (cn: string, members: string[]) => `dn: cn=${cn},${LDAP_GROUPS}
objectClass: groupOfNames
cn: ${cn}
${members.map((m) => `member: ${m}`).join('\n')}
`;
const user = (uid: string) => `uid=${uid},${LDAP_PEOPLE}`;
const grp = (cn: string) => `cn=${cn},${LDAP_GROUPS}`;

const LDIF = `
${ldapSkeleton({ groups: true })}
${['alice', 'bob', 'carol', 'dave', 'erin', 'frank'].map((u) => person(u)).join('\n')}
${person('zed', 'employeeType: disabled\n')}
${group('engineering', [user('alice'), user('bob')])}
dn: cn=sales,${LDAP_GROUPS}
objectClass: groupOfUniqueNames
cn: sales
uniqueMember: ${user('carol')}

dn: cn=ops,${LDAP_GROUPS}
objectClass: posixGroup
cn: ops
gidNumber: 5000
memberUid: dave

dn: cn=everyone-in-people,${LDAP_GROUPS}
objectClass: groupOfURLs
cn: everyone-in-people
memberURL: ldap:///${LDAP_PEOPLE}??one?(objectClass=inetOrgPerson)

${group('staff', [grp('engineering'), grp('sales')])}
${group('level1', [grp('engineering')])}
${group('level2', [grp('level1')])}
${group('level3', [grp('level2')])}
${group('level4', [grp('level3')])}
${group('cycle-a', [grp('cycle-b'), user('erin')])}
${group('cycle-b', [grp('cycle-a'), user('frank')])}
`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Item {
  jid: string;
  subscription: string;
  groups: string[];
}

async function rosterOf(c: TestClient): Promise<Item[]> {
  const res = await c.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: NS_ROSTER })));
  const q = res.name === 'query' ? res : (res.getChild('query', NS_ROSTER) as Element);
  return q.getChildren('item').map((i) => ({ jid: i.attrs.jid as string, subscription: i.attrs.subscription as string, groups: i.getChildren('group').map((g) => g.getText()) }));
}

/** Runs an LDAP change as the root DN (the directory's administrator, not Parley). */
async function asAdmin(slapd: SlapdServer, fn: (c: Client) => Promise<void>): Promise<void> {
  const admin = new Client({ url: slapd.url });
  await admin.bind(slapd.rootDn, slapd.rootPassword);
  try {
    await fn(admin);
  } finally {
    await admin.unbind();
  }
}

async function addToEngineering(slapd: SlapdServer, uid: string): Promise<void> {
  const { Attribute, Change } = await import('ldapts');
  await asAdmin(slapd, async (c) => {
    await c.add(user(uid), { objectClass: 'inetOrgPerson', uid, cn: uid, sn: uid, userPassword: `${uid}-pw` });
    await c.modify(grp('engineering'), new Change({ operation: 'add', modification: new Attribute({ type: 'member', values: [user(uid)] }) }));
  });
}

/** One Prometheus sample's value (NaN when absent). */
function sample(text: string, name: string, labels: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}} `));
  return line ? Number(line.split(' ').pop()) : Number.NaN;
}

describe('LDAP groups and shared rosters (issue 8)', () => {
  let slapd: SlapdServer;
  let srv: TestServer;
  let port: number;
  let aclDir: string;
  const clients: TestClient[] = [];
  const login = async (username: string, resource?: string) => {
    const c = await connect({ port, username, password: `${username}-pw`, mechanism: 'PLAIN', resource });
    clients.push(c);
    return c;
  };
  const dir = () => {
    const d = srv.server.auth.directory('localhost');
    if (!d) throw new Error('no directory');
    return d;
  };
  const names = async (g: string) => (await dir().members(g)).map((u) => u.username).sort();

  beforeAll(async () => {
    slapd = await startSlapd({ ldif: LDIF, serviceDn: LDAP_SERVICE_DN });
    aclDir = mkdtempSync(join(tmpdir(), 'parley-ldap-acl-'));
    writeFileSync(join(aclDir, 'rooms.acl'), 'allow @engineering\n');
    srv = await startTestServer({
      hosts: [
        {
          domain: 'localhost',
          accounts: 'ldap',
          ldap: ldapHostConfig(slapd, {
            cache: { ttlSeconds: TTL_SECONDS, negativeTtlSeconds: TTL_SECONDS },
            // nestingDepth left at its default (3).
            groups: { base: LDAP_GROUPS, shared: ['engineering', 'sales'] },
          }),
        },
      ],
      acl: { directory: aclDir, watch: false },
      http: { address: '127.0.0.1', port: 0, tlsPort: 0, metrics: { allow: ['127.0.0.1'] } },
    });
    // Several logins from 127.0.0.1 in a row: no throttling delays here (tested elsewhere).
    const off = { maxFailures: 1_000_000 };
    (srv.server as unknown as { throttle: LoginThrottle }).throttle = new LoginThrottle({ perAddress: off, perPair: off, accountDelay: { freeFailures: 1_000_000 }, addressDelay: { freeFailures: 1_000_000 } });
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
    await slapd?.stop();
    if (aclDir) rmSync(aclDir, { recursive: true, force: true });
  });

  it('resolves static groups: groupOfNames member, groupOfUniqueNames uniqueMember, posixGroup memberUid', async () => {
    expect(await names('engineering')).toEqual(['alice', 'bob']);
    expect(await names('sales')).toEqual(['carol']);
    expect(await names('ops')).toEqual(['dave']);
    expect(await names('no-such-group')).toEqual([]);
    expect(await dir().groupsOf('dave')).toEqual(['everyone-in-people', 'ops']);
    expect(await dir().groupsOf('carol')).toEqual(['everyone-in-people', 'sales', 'staff']);
  });

  it('resolves a dynamic group (memberURL) inside the user filter: the disabled user is left out', async () => {
    expect(await names('everyone-in-people')).toEqual(['alice', 'bob', 'carol', 'dave', 'erin', 'frank']);
    expect(await dir().groupsOf('zed')).toEqual([]); // not a user at all for Parley
  });

  it('follows nested groups to the configured depth (3), both ways', async () => {
    expect(await names('staff')).toEqual(['alice', 'bob', 'carol']);
    expect(await names('level3')).toEqual(['alice', 'bob']); // engineering three levels down
    expect(await names('level4')).toEqual([]); // four levels down: past the bound
    const alice = await dir().groupsOf('alice');
    expect(alice).toEqual(['engineering', 'everyone-in-people', 'level1', 'level2', 'level3', 'staff']);
  });

  it('ends on a cycle of groups containing each other', async () => {
    expect(await names('cycle-a')).toEqual(['erin', 'frank']);
    expect(await names('cycle-b')).toEqual(['erin', 'frank']);
    expect(await dir().groupsOf('erin')).toEqual(['cycle-a', 'cycle-b', 'everyone-in-people']);
  });

  it('puts shared group members in the roster with subscription both and the group name; others not', async () => {
    const alice = await login('alice', 'roster');
    const items = await rosterOf(alice);
    // bob shares engineering; carol is only in sales (shared too, but not with alice); staff is not shared.
    expect(items).toEqual([{ jid: 'bob@localhost', subscription: 'both', groups: ['engineering'] }]);
    const carol = await login('carol', 'roster');
    expect(await rosterOf(carol)).toEqual([]); // alone in sales
    await Promise.all([alice.stop(), carol.stop()]);
  });

  it('exchanges presence between shared members without any subscription request', async () => {
    const alice = await login('alice', 'presence');
    await rosterOf(alice); // a resource that fetched its roster gets roster pushes
    await alice.send(xml('presence', {}, xml('status', {}, 'alice here')));
    const bob = await login('bob', 'presence');
    await bob.send(xml('presence', {}, xml('status', {}, 'bob here')));
    // alice gets bob's broadcast; bob gets alice's presence as the answer to his probe.
    const fromBob = await alice.waitFor((el) => el.name === 'presence' && String(el.attrs.from).startsWith('bob@localhost/') && !el.attrs.type);
    expect(fromBob.getChildText('status')).toBe('bob here');
    const fromAlice = await bob.waitFor((el) => el.name === 'presence' && String(el.attrs.from).startsWith('alice@localhost/') && !el.attrs.type);
    expect(fromAlice.getChildText('status')).toBe('alice here');
    // A client that asks anyway is approved at once: bob never sees a request.
    await alice.send(xml('presence', { to: 'bob@localhost', type: 'subscribe' }));
    await alice.waitFor((el) => el.name === 'presence' && el.attrs.type === 'subscribed' && el.attrs.from === 'bob@localhost');
    // Cancelling a shared subscription is ignored: nothing is stored, no roster push.
    const pushes = () => alice.received.filter((el) => el.name === 'iq' && el.attrs.type === 'set' && el.getChild('query', NS_ROSTER)).length;
    const before = pushes();
    await alice.send(xml('presence', { to: 'bob@localhost', type: 'unsubscribe' }));
    expect((await rosterOf(alice)).find((i) => i.jid === 'bob@localhost')?.subscription).toBe('both'); // a round trip after the unsubscribe
    expect(pushes()).toBe(before);
    // Roster pushes show a shared contact as `both` whatever is stored.
    const shown = alice.received.filter((el) => el.name === 'iq' && el.attrs.type === 'set').map((el) => el.getChild('query', NS_ROSTER)?.getChild('item')?.attrs.subscription);
    expect(shown.length).toBeGreaterThan(0);
    expect(shown.every((s) => s === 'both')).toBe(true);
    const requests = [...alice.received, ...bob.received].filter((el) => el.name === 'presence' && el.attrs.type === 'subscribe');
    expect(requests).toEqual([]);
    await Promise.all([alice.stop(), bob.stop()]);
  });

  it('refuses to remove a shared item (not-allowed); it stays in the roster', async () => {
    const alice = await login('alice', 'remove');
    const err = await iqError(alice, xml('iq', { type: 'set' }, xml('query', { xmlns: NS_ROSTER }, xml('item', { jid: 'bob@localhost', subscription: 'remove' }))));
    expect(err.condition).toBe('not-allowed');
    expect((await rosterOf(alice)).map((i) => i.jid)).toEqual(['bob@localhost']);
    await alice.stop();
  });

  it('shows a member added in the directory only once the cache has aged out', async () => {
    const alice = await login('alice', 'aging');
    expect((await rosterOf(alice)).map((i) => i.jid)).toEqual(['bob@localhost']); // the cache is fresh now
    await addToEngineering(slapd, 'gina');
    expect((await rosterOf(alice)).map((i) => i.jid)).toEqual(['bob@localhost']); // still the cached answer
    await sleep(TTL_SECONDS * 1000 + 300);
    expect((await rosterOf(alice)).map((i) => i.jid).sort()).toEqual(['bob@localhost', 'gina@localhost']);
    await alice.stop();
  });

  it('shows a member at once after a cache flush (what `parley cache flush` asks the server to do)', async () => {
    const alice = await login('alice', 'flush');
    expect((await rosterOf(alice)).map((i) => i.jid).sort()).toEqual(['bob@localhost', 'gina@localhost']);
    await addToEngineering(slapd, 'hank');
    expect((await rosterOf(alice)).map((i) => i.jid).sort()).toEqual(['bob@localhost', 'gina@localhost']);
    const report = srv.flushDirectoryCaches('test');
    expect(report.hosts).toEqual([{ host: 'localhost', entries: expect.any(Number) }]);
    expect(report.hosts[0]?.entries).toBeGreaterThan(0);
    expect((await rosterOf(alice)).map((i) => i.jid).sort()).toEqual(['bob@localhost', 'gina@localhost', 'hank@localhost']);
    await alice.stop();
  });

  it('reports the directory cache and operations in /metrics, per host', async () => {
    const scrape = async () => (await fetch(`http://127.0.0.1:${srv.ports.http}/metrics`)).text();
    srv.flushDirectoryCaches('test');
    let text = await scrape();
    expect(sample(text, 'parley_directory_cache_entries', 'host="localhost"')).toBe(0);
    const misses = sample(text, 'parley_directory_cache_misses_total', 'host="localhost"');
    const searches = sample(text, 'parley_directory_searches_total', 'host="localhost"');
    expect(searches).toBeGreaterThan(0);
    await dir().members('engineering');
    await dir().members('engineering');
    text = await scrape();
    expect(sample(text, 'parley_directory_cache_entries', 'host="localhost"')).toBeGreaterThan(0);
    expect(sample(text, 'parley_directory_cache_misses_total', 'host="localhost"')).toBeGreaterThan(misses);
    expect(sample(text, 'parley_directory_searches_total', 'host="localhost"')).toBeGreaterThan(searches);
    expect(sample(text, 'parley_directory_cache_hits_total', 'host="localhost"')).toBeGreaterThan(0);
    expect(sample(text, 'parley_directory_binds_total', 'host="localhost"')).toBeGreaterThan(0);
    expect(sample(text, 'parley_directory_failures_total', 'host="localhost"')).toBe(0);
    expect(text).toMatch(/^parley_directory_cache_negative_hits_total\{host="localhost"\} \d+$/m);
    expect(text).toMatch(/^parley_directory_cache_evictions_total\{host="localhost"\} \d+$/m);
  });

  it('lets polls (and alerts) address a directory group as group:NAME', async () => {
    const alice = await login('alice', 'polls');
    const carol = await login('carol', 'polls');
    await carol.send(xml('presence'));
    const form = (audience: string) =>
      xml('iq', { type: 'set', to: 'polls.localhost' }, xml('create', { xmlns: 'urn:parley:polls:0' },
        xml('x', { xmlns: 'jabber:x:data', type: 'submit' },
          xml('field', { var: 'question' }, xml('value', {}, 'Quota?')),
          xml('field', { var: 'choices' }, xml('value', {}, 'Yes'), xml('value', {}, 'No')),
          xml('field', { var: 'audience' }, xml('value', {}, audience)))));
    const created = (await alice.iq(form('group:sales'))).getChild('created', 'urn:parley:polls:0');
    expect(created?.attrs.recipients).toBe('1');
    const q = await carol.waitFor((el) => el.name === 'message' && el.attrs.from === created?.attrs.jid);
    expect(q.getChildText('body')).toContain('Quota?');
    expect((await iqError(alice, form('group:no-such-group'))).condition).toBe('bad-request');
    await Promise.all([alice.stop(), carol.stop()]);
  });

  it('accepts directory groups as @group in the access control files: engineering may create rooms, sales may not', async () => {
    const alice = await login('alice', 'muc');
    const carol = await login('carol', 'muc');
    expect(srv.server.acl.allows('room.create', Jid.parse('alice@localhost'))).toBe(true);
    expect(srv.server.acl.allows('room.create', Jid.parse('carol@localhost'))).toBe(false);
    const room = `eng${process.pid}@conference.localhost`;
    await alice.send(xml('presence', { to: `${room}/alice` }, xml('x', { xmlns: 'http://jabber.org/protocol/muc' })));
    const created = await alice.waitFor((el) => el.name === 'presence' && el.attrs.from === `${room}/alice`);
    expect(created.attrs.type).toBeUndefined();
    const other = `sales${process.pid}@conference.localhost`;
    await carol.send(xml('presence', { to: `${other}/carol` }, xml('x', { xmlns: 'http://jabber.org/protocol/muc' })));
    const refused = await carol.waitFor((el) => el.name === 'presence' && String(el.attrs.from).startsWith(other));
    expect(refused.attrs.type).toBe('error');
    expect(refused.getChild('error')?.getChild('not-allowed')).toBeDefined();
    await Promise.all([alice.stop(), carol.stop()]);
  });
});
