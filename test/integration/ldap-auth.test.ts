// LDAP authentication (issue 8) against a real OpenLDAP slapd on loopback: search-then-bind with
// SASL PLAIN over TLS (SCRAM is not offered: Parley holds no secrets for directory users), wrong and
// empty passwords (no bind is even attempted for an empty one), RFC 4515 metacharacters in a
// username, a user the user filter excludes (disabled), the directory stopped mid-run
// (temporary-auth-failure, then recovery), failover between URLs, ldaps and StartTLS with the CA
// verified, the cache saving directory round trips (counted in slapd's own log), messages to a
// directory user who never logged in, and account commands refused for a directory host.
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, xml } from '../helpers/client.js';
import { RawClient } from '../helpers/raw.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { LDAP_BASE, LDAP_PEOPLE, LDAP_SERVICE_DN, LDAP_SERVICE_PASSWORD, LDAP_TIMEOUTS, ldapHostConfig, ldapPerson, ldapSkeleton, startSlapd, type SlapdServer } from '../helpers/slapd.js';
import { LoginThrottle } from '../../src/auth/index.js';

function person(uid: string, cn: string, password: string, extra = ''): string {
  return ldapPerson({ uid, cn, sn: cn.split(' ').pop() as string, mail: `${uid}@example.com`, password, extra });
}

const LDIF = `
${ldapSkeleton()}
${person('alice', 'Alice Liddell', 'alice-pw')}
${person('bob', 'Bob Builder', 'bob-pw')}
${person('dave', 'Dave Gone', 'dave-pw', 'employeeType: disabled\n')}
${person('x*', 'Star User', 'star-pw')}
`;

interface Outcome {
  ok: boolean;
  condition?: string;
  mechanisms: string[];
}

/** Many deliberate failures from 127.0.0.1 here: no bans and no response delays (tested in test/auth and hardening). */
function lenient(srv: TestServer): void {
  const off = { maxFailures: 1_000_000 };
  (srv.server as unknown as { throttle: LoginThrottle }).throttle = new LoginThrottle({ perAddress: off, perPair: off, accountDelay: { freeFailures: 1_000_000 }, addressDelay: { freeFailures: 1_000_000 } });
}

/** Negotiates STARTTLS and SASL PLAIN with raw bytes; resolves the outcome and the mechanisms offered. */
async function plain(port: number, user: string, password: string): Promise<Outcome> {
  const c = await RawClient.connect(port);
  try {
    const f = await c.openStream('localhost');
    if (f.includes('urn:ietf:params:xml:ns:xmpp-tls')) await c.startTls();
    const features = await c.openStream('localhost');
    const mechanisms = [...features.matchAll(/<mechanism>([^<]+)<\/mechanism>/g)].map((m) => m[1] as string);
    const ok = await c.authPlain(user, password);
    return { ok, condition: ok ? undefined : RawClient.saslCondition(c.lastFailure), mechanisms };
  } finally {
    c.destroy();
  }
}

describe('LDAP authentication (issue 8)', () => {
  let slapd: SlapdServer;
  let srv: TestServer;
  let port: number;

  beforeAll(async () => {
    slapd = await startSlapd({ ldif: LDIF, serviceDn: LDAP_SERVICE_DN });
    srv = await startTestServer({
      hosts: [
        {
          domain: 'localhost',
          accounts: 'ldap',
          ldap: ldapHostConfig(slapd, { timeouts: LDAP_TIMEOUTS }),
        },
      ],
    });
    lenient(srv);
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    await srv?.close();
    await slapd?.stop();
  });

  it('logs a directory user in with PLAIN over TLS; SCRAM is not offered', async () => {
    const r = await plain(port, 'alice', 'alice-pw');
    expect(r).toMatchObject({ ok: true });
    expect(r.mechanisms).toEqual(['PLAIN', 'OAUTHBEARER']);
    // A real client library, end to end.
    const c = await connect({ port, username: 'alice', password: 'alice-pw', mechanism: 'PLAIN' });
    expect(c.jid).toMatch(/^alice@localhost\//);
    await c.stop();
  });

  it('refuses a wrong password, an unknown user, and an empty password without binding', async () => {
    expect(await plain(port, 'alice', 'wrong')).toMatchObject({ ok: false, condition: 'not-authorized' });
    expect(await plain(port, 'nobody', 'whatever')).toMatchObject({ ok: false, condition: 'not-authorized' });
    await slapd.settle();
    slapd.resetOps();
    expect(await plain(port, 'bob', '')).toMatchObject({ ok: false, condition: 'not-authorized' });
    await slapd.settle();
    expect(slapd.ops().BIND ?? 0).toBe(0);
  });

  it('escapes filter metacharacters in usernames (RFC 4515)', async () => {
    // With the value unescaped, `*` would match every uid and `)(` would rewrite the filter.
    for (const u of ['*', 'a*', '*)(uid=*', 'alice)(|(uid=*', 'x\\2a']) {
      expect({ u, r: await plain(port, u, 'alice-pw') }).toMatchObject({ u, r: { ok: false, condition: 'not-authorized' } });
    }
    // A uid that really contains `*` is found as itself, and only with its own password.
    expect(await plain(port, 'x*', 'star-pw')).toMatchObject({ ok: true });
    expect(await plain(port, 'x*', 'alice-pw')).toMatchObject({ ok: false });
  });

  it('refuses a user the user filter excludes (disabled in the directory), even with the right password', async () => {
    expect(await plain(port, 'dave', 'dave-pw')).toMatchObject({ ok: false, condition: 'not-authorized' });
  });

  it('logs a directory user in with an XMPP token (OAUTHBEARER); not one the directory lacks or excludes', async () => {
    // Issue 9: a token names its user, but the directory still decides whether that user exists.
    const answer = async (user: string): Promise<string> => {
      const { token } = await srv.server.auth.tokens!.issue(`${user}@localhost`, 'localhost');
      const c = await RawClient.connect(port);
      try {
        await c.openStream('localhost');
        await c.startTls();
        await c.openStream('localhost');
        const payload = Buffer.from(`n,,\u0001auth=Bearer ${token}\u0001\u0001`, 'utf8').toString('base64');
        await c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='OAUTHBEARER'>${payload}</auth>`);
        return (await c.waitFor(/<(success|challenge|failure)\b/))[1] as string;
      } finally {
        c.destroy();
      }
    };
    expect(await answer('bob')).toBe('success');
    expect(await srv.server.storage.accounts.get('bob@localhost')).not.toBeNull(); // listed, like after a password login
    expect(await answer('dave')).toBe('challenge'); // RFC 7628 error response, then not-authorized
    expect(await answer('nobody')).toBe('challenge');
  });

  it('answers temporary-auth-failure while the directory is down, and recovers when it returns (the failures locked nobody out)', async () => {
    await plain(port, 'bob', 'bob-pw'); // bob's entry is now cached: only the bind needs the directory
    // The strictest throttle: one counted failure would ban bob from this address. Failures while
    // the directory is down are not wrong passwords, so they must not count (issue 15 §2).
    const throttle = (srv.server as unknown as { throttle: LoginThrottle }).throttle;
    (srv.server as unknown as { throttle: LoginThrottle }).throttle = new LoginThrottle({ perAddress: { maxFailures: 1 }, perPair: { maxFailures: 1 } });
    try {
      await slapd.pause();
      try {
        for (let i = 0; i < 3; i++) expect(await plain(port, 'bob', 'bob-pw')).toMatchObject({ ok: false, condition: 'temporary-auth-failure' });
        expect(await plain(port, 'never-seen', 'pw')).toMatchObject({ ok: false, condition: 'temporary-auth-failure' });
      } finally {
        await slapd.resume();
      }
      expect(await plain(port, 'bob', 'bob-pw')).toMatchObject({ ok: true });
    } finally {
      (srv.server as unknown as { throttle: LoginThrottle }).throttle = throttle;
    }
    expect(await plain(port, 'never-seen', 'pw')).toMatchObject({ ok: false, condition: 'not-authorized' });
  });

  it('caches look-ups: repeated logins search the directory once and bind each time', async () => {
    const dir = srv.server.auth.directory('localhost');
    dir?.cache.clear();
    await slapd.settle();
    slapd.resetOps();
    for (let i = 0; i < 5; i++) expect(await plain(port, 'alice', 'alice-pw')).toMatchObject({ ok: true });
    await slapd.settle();
    const ops = slapd.ops();
    expect(ops.SRCH).toBe(1);
    // The five user binds, plus the service account's bind if its connection had to be reopened.
    expect(ops.BIND).toBeGreaterThanOrEqual(5);
    expect(ops.BIND).toBeLessThanOrEqual(6);
    // Without the cache every login searches again.
    dir?.cache.clear();
    await slapd.settle();
    slapd.resetOps();
    expect(await plain(port, 'alice', 'alice-pw')).toMatchObject({ ok: true });
    await slapd.settle();
    expect(slapd.ops().SRCH).toBe(1);
    const stats = dir?.stats();
    expect(stats?.hits).toBeGreaterThanOrEqual(4);
  });

  it('delivers a message to a directory user who never logged in, when they first do', async () => {
    const a = await connect({ port, username: 'alice', password: 'alice-pw', mechanism: 'PLAIN' });
    // Carol is added to the directory now: Parley has never heard of her.
    const { Client } = await import('ldapts');
    const admin = new Client({ url: slapd.url });
    await admin.bind(slapd.rootDn, slapd.rootPassword);
    await admin.add(`uid=carol,${LDAP_PEOPLE}`, { objectClass: 'inetOrgPerson', uid: 'carol', cn: 'Carol Singer', sn: 'Singer', userPassword: 'carol-pw' });
    await admin.unbind();
    await a.send(xml('message', { to: 'carol@localhost', type: 'chat', id: 'm1' }, xml('body', {}, 'hello from the directory')));
    await a.send(xml('message', { to: 'nosuchuser@localhost', type: 'chat', id: 'm2' }, xml('body', {}, 'anyone?')));
    const bounce = await a.waitFor((el: Element) => el.name === 'message' && el.attrs.type === 'error' && el.attrs.id === 'm2');
    expect(bounce.getChild('error')?.getChild('service-unavailable')).toBeDefined();
    const c = await connect({ port, username: 'carol', password: 'carol-pw', mechanism: 'PLAIN' });
    await c.send(xml('presence'));
    const m = await c.waitFor((el: Element) => el.name === 'message' && el.getChildText('body') === 'hello from the directory');
    expect(m.attrs.from).toMatch(/^alice@localhost\//);
    await Promise.all([a.stop(), c.stop()]);
  });

  it('gives modules searches (cached by key), binary attributes and writes through the service account', async () => {
    const dir = srv.server.directory('localhost');
    expect(dir).toBeDefined();
    expect(srv.server.directory('elsewhere.example')).toBeUndefined();
    const { escapeFilterValue } = await import('../../src/core/directory.js');
    await dir!.modify(`uid=bob,${LDAP_PEOPLE}`, [{ operation: 'replace', attribute: 'title', values: ['Builder (*)'] }]);
    await slapd.settle();
    slapd.resetOps();
    const q = { filter: `(&(objectClass=inetOrgPerson)(title=${escapeFilterValue('Builder (*)')}))`, attributes: ['uid', 'title'], cacheKey: 'test:builders' };
    const [bob] = await dir!.search(q);
    expect(bob?.dn).toBe(`uid=bob,${LDAP_PEOPLE}`);
    expect(bob?.attributes).toMatchObject({ uid: ['bob'], title: ['Builder (*)'] });
    await dir!.search(q);
    await slapd.settle();
    expect(slapd.ops().SRCH).toBe(1); // the second answer came from the cache
    dir!.flushCache();
    await dir!.search(q);
    await slapd.settle();
    expect(slapd.ops().SRCH).toBe(2);
    const photo = Buffer.from([0xff, 0xd8, 0xff, 0x00, 0x80, 0xfe]);
    const { Client, Change, Attribute } = await import('ldapts');
    const admin = new Client({ url: slapd.url });
    await admin.bind(slapd.rootDn, slapd.rootPassword);
    await admin.modify(`uid=bob,${LDAP_PEOPLE}`, new Change({ operation: 'replace', modification: new Attribute({ type: 'jpegPhoto', values: [photo] }) }));
    await admin.unbind();
    const [withPhoto] = await dir!.search({ filter: '(uid=bob)', attributes: ['uid'], binaryAttributes: ['jpegPhoto'] });
    expect(withPhoto?.binary.jpegPhoto?.[0]?.equals(photo)).toBe(true);
    await dir!.add(`uid=newbie,${LDAP_PEOPLE}`, { objectClass: ['inetOrgPerson'], uid: ['newbie'], cn: ['New Bie'], sn: ['Bie'] });
    expect((await dir!.findUser('newbie'))?.displayName).toBe('New Bie');
  });

  it('refuses to create accounts or set passwords for a directory host', async () => {
    await expect(srv.server.auth.create('eve@localhost', 'eve-pw')).rejects.toThrow(/live in its LDAP directory/);
    await expect(srv.server.auth.setPassword('alice@localhost', 'new')).rejects.toThrow(/live in its LDAP directory/);
    expect(await plain(port, 'alice', 'alice-pw')).toMatchObject({ ok: true });
  });
});

describe('LDAP connections (issue 8)', () => {
  let slapd: SlapdServer;
  beforeAll(async () => {
    slapd = await startSlapd({ ldif: LDIF, serviceDn: LDAP_SERVICE_DN });
  });
  afterAll(async () => {
    await slapd?.stop();
  });

  async function withServer(ldap: Record<string, unknown>, fn: (port: number) => Promise<void>): Promise<void> {
    const srv = await startTestServer({
      hosts: [{ domain: 'localhost', accounts: 'ldap', ldap: { bindDn: LDAP_SERVICE_DN, bindPassword: LDAP_SERVICE_PASSWORD, base: LDAP_PEOPLE, timeouts: LDAP_TIMEOUTS, ...ldap } }],
    });
    lenient(srv);
    try {
      await fn(srv.ports.c2s as number);
    } finally {
      await srv.close();
    }
  }

  it('fails over to the next URL when the first does not answer', async () => {
    const dead = `ldap://127.0.0.1:${new URL(slapd.url).port === '1' ? 2 : 1}`;
    await withServer({ urls: [dead, slapd.url] }, async (port) => {
      expect(await plain(port, 'alice', 'alice-pw')).toMatchObject({ ok: true });
      expect(await plain(port, 'alice', 'wrong')).toMatchObject({ ok: false, condition: 'not-authorized' });
    });
  });

  it('uses ldaps and StartTLS with the CA verified, and refuses a certificate it cannot verify', async () => {
    await withServer({ urls: [slapd.ldapsUrl], tls: { ca: slapd.ca } }, async (port) => {
      expect(await plain(port, 'alice', 'alice-pw')).toMatchObject({ ok: true });
    });
    await withServer({ urls: [slapd.url], startTls: true, tls: { ca: slapd.ca } }, async (port) => {
      expect(await plain(port, 'bob', 'bob-pw')).toMatchObject({ ok: true });
    });
    // The system CAs do not know the test certificate: no login, and no "wrong password" either.
    await withServer({ urls: [slapd.ldapsUrl] }, async (port) => {
      expect(await plain(port, 'alice', 'alice-pw')).toMatchObject({ ok: false, condition: 'temporary-auth-failure' });
    });
  });

  it('uses mail as the user attribute: the username is the address, escaped as XEP-0106 says (alice\\40example.com)', async () => {
    await withServer({ urls: [slapd.url], userAttribute: 'mail' }, async (port) => {
      expect(await plain(port, 'alice\\40example.com', 'alice-pw')).toMatchObject({ ok: true });
      expect(await plain(port, 'alice\\40example.com', 'bob-pw')).toMatchObject({ ok: false, condition: 'not-authorized' });
      expect(await plain(port, 'alice', 'alice-pw')).toMatchObject({ ok: false, condition: 'not-authorized' });
      const c = await connect({ port, username: 'alice\\40example.com', password: 'alice-pw', mechanism: 'PLAIN' });
      expect(c.jid).toMatch(/^alice\\40example\.com@localhost\//);
      await c.stop();
    });
  });

  it('refuses a configuration with accounts: ldap but no directory, naming the path', async () => {
    const { validateConfig } = await import('../../src/core/config.js');
    expect(() => validateConfig({ hosts: [{ domain: 'example.com', accounts: 'ldap' }] })).toThrow(/hosts\.0\.ldap: required/);
    expect(() => validateConfig({ hosts: [{ domain: 'example.com', accounts: 'ldap', ldap: { urls: ['http://x'], base: LDAP_BASE } }] })).toThrow(/hosts\.0\.ldap\.urls\.0/);
    expect(() => validateConfig({ hosts: [{ domain: 'example.com', accounts: 'ldap', ldap: { urls: ['ldap://x'], base: LDAP_BASE, bindDn: 'cn=x' } }] })).toThrow(/bindDn and bindPassword/);
  });
});
