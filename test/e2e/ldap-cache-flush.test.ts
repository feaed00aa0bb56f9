// `parley cache flush` (issue 8) against `parley start` with an LDAP host (a real slapd): a member
// added to a shared group in the directory is hidden by the cache (five-minute aging) until the
// command makes the running server forget its directory answers; then it appears at once.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Element } from 'ltx';
import { Attribute, Change, Client } from 'ldapts';
import { afterAll, describe, expect, it } from 'vitest';
import { connect, xml, type TestClient } from '../helpers/client.js';
import { runCli, startServerProcess, waitExit } from '../helpers/process.js';
import { LDAP_GROUPS, LDAP_PEOPLE, LDAP_SERVICE_DN, LDAP_SERVICE_PASSWORD, ldapPerson, ldapSkeleton, startSlapd, type SlapdServer } from '../helpers/slapd.js';

// The server's certificate is generated at its first start (self-signed).
process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

const LDIF = `
${ldapSkeleton({ groups: true })}
${ldapPerson({ uid: 'alice' })}
${ldapPerson({ uid: 'bob' })}
${ldapPerson({ uid: 'gina' })}
dn: cn=engineering,${LDAP_GROUPS}
objectClass: groupOfNames
cn: engineering
member: uid=alice,${LDAP_PEOPLE}
member: uid=bob,${LDAP_PEOPLE}
`;

async function contacts(c: TestClient): Promise<string[]> {
  const res = await c.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster' })));
  const q = res.name === 'query' ? res : (res.getChild('query', 'jabber:iq:roster') as Element);
  return q.getChildren('item').map((i) => i.attrs.jid as string).sort();
}

describe('parley cache flush', () => {
  let slapd: SlapdServer | undefined;
  let dir: string | undefined;
  afterAll(async () => {
    await slapd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('makes a member added in the directory appear at once in a running server', async () => {
    slapd = await startSlapd({ ldif: LDIF, serviceDn: LDAP_SERVICE_DN });
    dir = mkdtempSync(join(tmpdir(), 'parley-e2e-'));
    const config = join(dir, 'parley.yaml');
    writeFileSync(
      config,
      `hosts:
  - domain: localhost
    accounts: ldap
    ldap:
      urls: ['${slapd.url}']
      bindDn: '${LDAP_SERVICE_DN}'
      bindPassword: ${LDAP_SERVICE_PASSWORD}
      base: '${LDAP_PEOPLE}'
      groups:
        base: '${LDAP_GROUPS}'
        shared: '*'
dataDir: ${join(dir, 'data')}
listen:
  address: 127.0.0.1
  c2s: 0
  c2sDirectTls: 0
http:
  address: 127.0.0.1
  port: 0
  tlsPort: 0
log:
  level: warn
`,
    );
    const c = ['--config', config];
    const notRunning = await runCli([...c, 'cache', 'flush']);
    expect(notRunning.code).toBe(3);
    expect(notRunning.stdout).toContain('not running');

    const srv = await startServerProcess(config);
    let alice: TestClient | undefined;
    try {
      alice = await connect({ port: srv.c2sPort, username: 'alice', password: 'alice-pw', mechanism: 'PLAIN' });
      expect(await contacts(alice)).toEqual(['bob@localhost']);
      const admin = new Client({ url: slapd.url });
      await admin.bind(slapd.rootDn, slapd.rootPassword);
      await admin.modify(`cn=engineering,${LDAP_GROUPS}`, new Change({ operation: 'add', modification: new Attribute({ type: 'member', values: [`uid=gina,${LDAP_PEOPLE}`] }) }));
      await admin.unbind();
      expect(await contacts(alice)).toEqual(['bob@localhost']); // the cached answer (ttl 300 s)

      const flushed = await runCli([...c, 'cache', 'flush']);
      expect(flushed.stderr).toBe('');
      expect(flushed.code).toBe(0);
      const dropped = /localhost: (\d+) entries dropped/.exec(flushed.stdout);
      expect(Number(dropped?.[1])).toBeGreaterThan(0);
      expect(await contacts(alice)).toEqual(['bob@localhost', 'gina@localhost']);
      // The signal did not stop the server.
      expect((await runCli([...c, 'status'])).stdout).toContain('parley is running');
    } finally {
      await alice?.stop();
      srv.child.kill('SIGTERM');
      await waitExit(srv.child);
    }
    // Three CLI processes (tsx start-up each), a server and slapd.
  }, 120_000);
});
