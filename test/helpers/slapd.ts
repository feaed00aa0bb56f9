// Throwaway OpenLDAP server for tests: a real `slapd` (Debian `slapd`) on loopback ports, with a
// temporary slapd.conf, an MDB database loaded with `slapadd` from the test's LDIF, plain LDAP (with
// StartTLS) and LDAPS on a generated certificate. slapd runs in the foreground with `-d stats`, so
// the helper counts the operations the directory served (BIND, SRCH, ...): a test can prove a
// cache saved round trips by reading the directory's own log, not the client's word.
// Each call is self-contained (own temp dir, own ports): vitest workers can each start one.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generate } from 'selfsigned';
import { freePort } from './ports.js';

export interface SlapdOptions {
  suffix?: string;
  /** LDIF loaded before start (entries below the suffix; the suffix entry itself is added here). */
  ldif: string;
  /** Anonymous clients may search (not only bind). */
  anonymousRead?: boolean;
  /** DN (besides the root DN) that may read and write everything, e.g. the service account. */
  serviceDn?: string;
  /** Extra schema files (slapd.conf syntax) included after the standard ones, e.g. docs/ldap/parley.schema. */
  schemas?: string[];
}

export interface SlapdServer {
  url: string;
  ldapsUrl: string;
  suffix: string;
  rootDn: string;
  rootPassword: string;
  /** PEM of the self-signed certificate slapd presents (trust it for ldaps / StartTLS). */
  ca: string;
  /** Operations served since start (or the last reset), by kind: BIND, SRCH, ADD, MOD, ... */
  ops(): Record<string, number>;
  /**
   * Resolves once every operation slapd answered before this call is in ops() (its log lines can
   * reach us after the answers): a marker search on a connection of its own, whose log line comes
   * after theirs; the marker connection is not counted.
   */
  settle(): Promise<void>;
  resetOps(): void;
  /** Stops slapd, keeping its data (a directory outage). */
  pause(): Promise<void>;
  /** Starts it again on the same ports with the same data. */
  resume(): Promise<void>;
  stop(): Promise<void>;
}

const READY_TIMEOUT_MS = 20_000;
const SLAPD = '/usr/sbin/slapd';
const SLAPADD = '/usr/sbin/slapadd';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited with ${code}:\n${out.slice(-4000)}`))));
  });
}

function exited(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((r) => p.once('exit', () => r()));
}

/** Connects until slapd accepts TCP on the port (it binds after loading the database). */
async function waitListening(port: number, proc: ChildProcess, log: () => string): Promise<void> {
  const { connect } = await import('node:net');
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`slapd exited with ${proc.exitCode}:\n${log().slice(-4000)}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`slapd did not listen on ${port}:\n${log().slice(-4000)}`);
}

export async function startSlapd(opts: SlapdOptions): Promise<SlapdServer> {
  if (!existsSync(SLAPD)) throw new Error('slapd not found: run `apt-get install slapd ldap-utils` (scripts/test.sh does when root)');
  const suffix = opts.suffix ?? 'dc=example,dc=com';
  const rootDn = `cn=admin,${suffix}`;
  const rootPassword = 'root-secret';
  const dir = mkdtempSync(join(tmpdir(), 'parley-slapd-'));
  const db = join(dir, 'db');
  mkdirSync(db);

  const pems = await generate([{ name: 'commonName', value: 'localhost' }], {
    keySize: 2048,
    algorithm: 'sha256',
    extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }] }],
  } as never);
  writeFileSync(join(dir, 'cert.pem'), pems.cert);
  writeFileSync(join(dir, 'key.pem'), pems.private, { mode: 0o600 });

  const read = opts.anonymousRead ? 'by * read' : 'by users read\n  by * none';
  const service = opts.serviceDn ? `  by dn.exact="${opts.serviceDn}" write\n` : '';
  const conf = `
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/dyngroup.schema
${(opts.schemas ?? []).map((f) => `include ${f}\n`).join('')}modulepath /usr/lib/ldap
moduleload back_mdb
pidfile ${join(dir, 'slapd.pid')}
argsfile ${join(dir, 'slapd.args')}
TLSCertificateFile ${join(dir, 'cert.pem')}
TLSCertificateKeyFile ${join(dir, 'key.pem')}
sizelimit 500
database mdb
maxsize 67108864
suffix "${suffix}"
rootdn "${rootDn}"
rootpw ${rootPassword}
directory ${db}
index objectClass eq
index uid,cn,mail eq,sub
index member,uniqueMember,memberUid eq
access to attrs=userPassword
${service}  by self write
  by anonymous auth
  by * none
access to *
${service}  ${read}
`;
  const confPath = join(dir, 'slapd.conf');
  writeFileSync(confPath, conf);
  const top = suffix.split(',')[0]!.split('=');
  const seed = `dn: ${suffix}\nobjectClass: dcObject\nobjectClass: organization\n${top[0]}: ${top[1]}\no: ${top[1]}\n\n${opts.ldif.trim()}\n`;
  writeFileSync(join(dir, 'seed.ldif'), seed);
  await run(SLAPADD, ['-f', confPath, '-l', join(dir, 'seed.ldif')]);

  const [port, tlsPort] = [await freePort(), await freePort()];
  const counts: Record<string, number> = {};
  const seen = new Set<string>();
  /** settle() markers still to be seen in the log, and the connections they came on. */
  const markers = new Map<string, () => void>();
  const markerConns = new Set<string>();
  let settles = 0;
  let proc: ChildProcess | undefined;
  let logTail = '';

  const start = async () => {
    seen.clear(); // connection numbers start again after a restart
    markerConns.clear();
    const p = spawn(SLAPD, ['-d', 'stats', '-f', confPath, '-h', `ldap://127.0.0.1:${port}/ ldaps://127.0.0.1:${tlsPort}/`], { stdio: ['ignore', 'pipe', 'pipe'] });
    proc = p;
    let partial = '';
    const onData = (d: Buffer) => {
      const text = partial + d.toString();
      const lines = text.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        logTail = (logTail + line + '\n').slice(-16384);
        const conn = /conn=(\d+) /.exec(line)?.[1];
        for (const [token, found] of markers) {
          if (!line.includes(token)) continue;
          if (conn) markerConns.add(conn);
          markers.delete(token);
          found();
        }
        if (conn && markerConns.has(conn)) continue;
        // "conn=1001 op=1 SRCH base=..." (a BIND logs two lines: count each conn/op once).
        const m = /conn=(\d+) op=(\d+) (BIND|SRCH|ADD|MOD|DEL|MODRDN|CMP|EXT|UNBIND) /.exec(line);
        if (m && !seen.has(`${m[1]}/${m[2]}`)) {
          seen.add(`${m[1]}/${m[2]}`);
          if (seen.size > 100_000) seen.clear();
          counts[m[3]!] = (counts[m[3]!] ?? 0) + 1;
        }
      }
    };
    p.stdout?.on('data', onData);
    p.stderr?.on('data', onData);
    process.once('exit', () => p.kill('SIGKILL'));
    await waitListening(port, p, () => logTail);
    await waitListening(tlsPort, p, () => logTail);
  };
  const halt = async () => {
    const p = proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    p.kill('SIGTERM');
    const timer = setTimeout(() => p.kill('SIGKILL'), 5000);
    await exited(p);
    clearTimeout(timer);
  };

  try {
    await start();
  } catch (err) {
    await halt();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }

  let stopped = false;
  return {
    url: `ldap://127.0.0.1:${port}`,
    ldapsUrl: `ldaps://127.0.0.1:${tlsPort}`,
    suffix,
    rootDn,
    rootPassword,
    ca: pems.cert,
    ops: () => ({ ...counts }),
    async settle() {
      // slapd logs an operation when it starts it; what the caller waits on was answered, hence
      // logged, before the marker was sent, so its line is behind theirs in the same log stream.
      const token = `parley-settle-${++settles}-${process.pid}`;
      const logged = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          markers.delete(token);
          reject(new Error(`slapd did not log the settle() marker within 5 s; log tail: ${logTail.slice(-2000)}`));
        }, 5000);
        markers.set(token, () => {
          clearTimeout(timer);
          resolve();
        });
      });
      const { Client } = await import('ldapts');
      const c = new Client({ url: `ldap://127.0.0.1:${port}` });
      try {
        await c.search(suffix, { scope: 'base', filter: `(uid=${token})` }).catch(() => undefined);
      } finally {
        await c.unbind().catch(() => undefined);
      }
      await logged;
    },
    resetOps: () => {
      for (const k of Object.keys(counts)) delete counts[k];
    },
    pause: halt,
    resume: start,
    async stop() {
      if (stopped) return;
      stopped = true;
      await halt();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// The directory most LDAP tests load: ou=people (and ou=groups) under dc=example,dc=com, and the
// service account Parley binds as. Tests add their people with ldapPerson() after ldapSkeleton().
export const LDAP_BASE = 'dc=example,dc=com';
export const LDAP_PEOPLE = `ou=people,${LDAP_BASE}`;
export const LDAP_GROUPS = `ou=groups,${LDAP_BASE}`;
export const LDAP_SERVICE_DN = `cn=parley,ou=services,${LDAP_BASE}`;
export const LDAP_SERVICE_PASSWORD = 'service-secret';
/** inetOrgPerson entries, minus those marked `employeeType: disabled`. */
export const LDAP_USER_FILTER = '(&(objectClass=inetOrgPerson)(!(employeeType=disabled)))';
/** Short LDAP timeouts, so that tests with a dead URL or a stopped slapd do not wait long. */
export const LDAP_TIMEOUTS = { connectMs: 1000, bindMs: 2000, searchMs: 2000 };

/** The organizational units (people, optionally groups, services) and the service entry, as LDIF ending in a newline. */
export function ldapSkeleton(opts: { groups?: boolean } = {}): string {
  const ou = (name: string) => `dn: ou=${name},${LDAP_BASE}\nobjectClass: organizationalUnit\nou: ${name}\n\n`;
  return `${ou('people')}${opts.groups ? ou('groups') : ''}${ou('services')}dn: ${LDAP_SERVICE_DN}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: parley
userPassword: ${LDAP_SERVICE_PASSWORD}
`;
}

export interface LdapPersonOptions {
  uid: string;
  /** Default: the uid. */
  cn?: string;
  /** Written (after cn) only when given. */
  givenName?: string;
  /** Default: the uid. */
  sn?: string;
  /** Written only when given. */
  mail?: string;
  /** Default: `${uid}-pw`. */
  password?: string;
  /** Further attribute lines, each ending in a newline. */
  extra?: string;
}

/** An inetOrgPerson entry below ou=people, as LDIF (no blank line after it unless `extra` ends in one). */
export function ldapPerson(p: LdapPersonOptions): string {
  const lines = [
    `dn: uid=${p.uid},${LDAP_PEOPLE}`,
    'objectClass: inetOrgPerson',
    `uid: ${p.uid}`,
    `cn: ${p.cn ?? p.uid}`,
    ...(p.givenName === undefined ? [] : [`givenName: ${p.givenName}`]),
    `sn: ${p.sn ?? p.uid}`,
    ...(p.mail === undefined ? [] : [`mail: ${p.mail}`]),
    `userPassword: ${p.password ?? `${p.uid}-pw`}`,
  ];
  return `${lines.join('\n')}\n${p.extra ?? ''}`;
}

/**
 * A Parley `hosts[].ldap` block for this directory: the service account, people as the base and
 * LDAP_USER_FILTER; `overrides` replace or add keys (timeouts: pass LDAP_TIMEOUTS where wanted).
 */
export function ldapHostConfig(slapd: Pick<SlapdServer, 'url'>, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return { urls: [slapd.url], bindDn: LDAP_SERVICE_DN, bindPassword: LDAP_SERVICE_PASSWORD, base: LDAP_PEOPLE, userFilter: LDAP_USER_FILTER, ...overrides };
}
