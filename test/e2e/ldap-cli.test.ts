// `parley ldap test` (issue 8) through the real CLI against a real slapd: a working configuration
// (exit 0, the users found, a user's DN, the Parley schema present for a directory roster), and
// broken ones each explained in plain words with a non-zero exit: a wrong port, a wrong service
// password, a base that does not exist, an invalid user filter, an ldaps certificate that cannot be
// verified, a user the filter excludes and one that does not exist.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/process.js';
import { LDAP_BASE, LDAP_SERVICE_DN, LDAP_TIMEOUTS, ldapHostConfig, ldapPerson, ldapSkeleton, startSlapd, type SlapdServer } from '../helpers/slapd.js';

const LDIF = `
${ldapSkeleton()}
${ldapPerson({ uid: 'alice' })}
${ldapPerson({ uid: 'bob' })}
${ldapPerson({ uid: 'carol' })}
${ldapPerson({ uid: 'dave', extra: 'employeeType: disabled\n' })}
`;

describe('parley ldap test', () => {
  let slapd: SlapdServer;
  let dir: string;
  let config: string;

  beforeAll(async () => {
    slapd = await startSlapd({ ldif: LDIF, serviceDn: LDAP_SERVICE_DN, schemas: [resolve(import.meta.dirname, '../../docs/ldap/parley.schema')] });
    dir = mkdtempSync(join(tmpdir(), 'parley-ldap-cli-'));
    config = join(dir, 'parley.yaml');
    const ldap = (o: Record<string, unknown>) => JSON.stringify(ldapHostConfig(slapd, { timeouts: LDAP_TIMEOUTS, ...o }));
    // A closed port: bound and released at once would race; port 1 is privileged and never ours.
    const hosts = [
      { domain: 'good.example', ldap: ldap({ roster: 'directory', startTls: true, tls: { ca: slapd.ca } }) },
      { domain: 'port.example', ldap: ldap({ urls: ['ldap://127.0.0.1:1'] }) },
      { domain: 'password.example', ldap: ldap({ bindPassword: 'not-the-secret' }) },
      { domain: 'base.example', ldap: ldap({ base: `ou=staff,${LDAP_BASE}` }) },
      { domain: 'filter.example', ldap: ldap({ userFilter: '(objectClass)' }) },
      { domain: 'cert.example', ldap: ldap({ urls: [slapd.ldapsUrl] }) },
    ];
    // YAML is a superset of JSON: each ldap block is written as a JSON object.
    writeFileSync(
      config,
      `dataDir: ${join(dir, 'data')}\nlog:\n  level: warn\nhosts:\n${hosts.map((h) => `  - domain: ${h.domain}\n    accounts: ldap\n    ldap: ${h.ldap}\n`).join('')}`,
    );
  });
  afterAll(async () => {
    await slapd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('passes a working configuration: StartTLS, bind, base, the users found, one user and the roster schema', async () => {
    const r = await runCli(['--config', config, 'ldap', 'test', '--host', 'good.example', '--user', 'alice']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('host good.example: all checks passed');
    expect(r.stdout).toContain('StartTLS');
    expect(r.stdout).toContain(`service bind as ${LDAP_SERVICE_DN}`);
    expect(r.stdout).toContain('userFilter finds 3 users'); // dave is excluded by the filter
    expect(r.stdout).toContain(`user alice: found, uid=alice,ou=people,${LDAP_BASE}`);
    expect(r.stdout).toContain('knows parleyRosterItem');
    expect(r.code).toBe(0);
  });

  it('refuses `parley user add` and `user passwd` for a directory host (the directory holds the passwords)', async () => {
    for (const args of [['user', 'add', 'zoe@good.example', '--password', 'zoe-pw'], ['user', 'passwd', 'alice@good.example', '--password', 'new-pw']]) {
      const r = await runCli(['--config', config, ...args]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/accounts of good\.example live in its LDAP directory/);
    }
  });

  it('explains each broken configuration, and fails', async () => {
    const r = await runCli(['--config', config, 'ldap', 'test', '--user', 'dave']);
    const section = (domain: string) => r.stdout.split(/^host /m).find((s) => s.startsWith(`${domain}:`)) ?? '';
    expect(section('port.example')).toMatch(/FAIL .*ldap:\/\/127\.0\.0\.1:1: connection refused: nothing listens there/);
    expect(section('password.example')).toMatch(/FAIL .*service bind .* failed: .*wrong bindDn or bindPassword/);
    expect(section('base.example')).toMatch(/FAIL .*base ou=staff,dc=example,dc=com: this entry does not exist/);
    expect(section('filter.example')).toMatch(/FAIL .*userFilter \(objectClass\) is not a valid LDAP filter/);
    expect(section('cert.example')).toMatch(/FAIL .*certificate verification failed \(\w+.*set ldap\.tls\.ca/);
    // The good host passes everything but the user: dave is there, and disabled.
    expect(section('good.example')).toMatch(/^good\.example: 1 problem\n/);
    expect(section('good.example')).toMatch(/FAIL .*user dave: uid=dave,ou=people,dc=example,dc=com exists but the userFilter excludes it/);
    expect(r.stdout).toMatch(/\n6 problems found\n$/);
    expect(r.code).toBe(1);
    const nobody = await runCli(['--config', config, 'ldap', 'test', '--host', 'good.example', '--user', 'nobody']);
    expect(nobody.stdout).toContain('user nobody: not found');
    expect(nobody.code).toBe(1);
  });
});
