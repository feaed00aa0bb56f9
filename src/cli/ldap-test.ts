// `parley ldap test` (issue 8): checks each LDAP host's configuration against its directory and
// says in plain words what is wrong: each URL reachable over TCP/TLS (certificate verification
// failures named as such), StartTLS, the service bind, the base DN, the user filter (its syntax and
// how many users it finds, capped), optionally one user, and for `roster: directory` whether the
// directory knows the Parley schema. Read-only: it binds and searches, never writes.
import { readFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import {
  Client,
  ConfidentialityRequiredError,
  FilterParser,
  InsufficientAccessError,
  InvalidCredentialsError,
  NoSuchObjectError,
  ResultCodeError,
  SizeLimitExceededError,
  escapeFilter,
} from 'ldapts';
import type { LdapConfig, ResolvedConfig } from '../core/config.js';

/** Most users counted (the count is reported as "at least" beyond it). */
const COUNT_LIMIT = 1000;

const CERT_CODES = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** One sentence for an error: what it means for the administrator. */
export function explainLdapError(err: unknown, cfg: LdapConfig): string {
  const e = err as NodeJS.ErrnoException & { code?: string | number };
  const code = typeof e.code === 'string' ? e.code : '';
  if (CERT_CODES.has(code)) {
    const hint = code === 'ERR_TLS_CERT_ALTNAME_INVALID' ? 'the certificate does not name this host: use the name it was issued for in the URL' : 'set ldap.tls.ca to the CA that signed it';
    return `certificate verification failed (${code}: ${e.message}); ${hint}`;
  }
  if (code === 'ECONNREFUSED') return 'connection refused: nothing listens there (wrong port, or the directory server is down)';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return 'the host name does not resolve (DNS)';
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return 'the host is unreachable (network or routing)';
  if (code === 'ECONNRESET' || code === 'EPIPE') return 'the server closed the connection (is it an LDAPS port spoken to as plain LDAP, or the reverse?)';
  if (code === 'ETIMEDOUT' || /timeout|timed out/i.test(e.message ?? '')) return `no answer within ${cfg.timeouts.connectMs} ms (firewall, or a wrong address)`;
  if (err instanceof InvalidCredentialsError) return 'the directory refused the credentials (invalidCredentials): wrong bindDn or bindPassword';
  if (err instanceof ConfidentialityRequiredError) return 'the directory requires TLS (confidentialityRequired): use an ldaps:// URL or startTls: true';
  if (err instanceof InsufficientAccessError) return 'the service account may not do this (insufficientAccess): check the directory access rules';
  if (err instanceof NoSuchObjectError) return 'no such entry (noSuchObject)';
  if (err instanceof ResultCodeError) return `the directory answered ${err.name} (result ${err.code}): ${err.message}`;
  return `${e.name ?? 'Error'}: ${e.message ?? String(err)}`;
}

function tlsOptions(cfg: LdapConfig, url: string): ConnectionOptions {
  const ca = cfg.tls.ca ? (cfg.tls.ca.includes('-----BEGIN') ? cfg.tls.ca : readFileSync(cfg.tls.ca, 'utf8')) : undefined;
  const host = new URL(url).hostname;
  return {
    rejectUnauthorized: cfg.tls.verify,
    ...(ca ? { ca: [ca] } : {}),
    ...(/^[\d.:[\]]+$/.test(host) ? {} : { servername: host }),
    ...(cfg.tls.verify ? {} : { checkServerIdentity: () => undefined }),
  };
}

/** TCP (and for ldaps://, TLS with the configured verification) to one URL. */
function probe(url: string, cfg: LdapConfig): Promise<void> {
  const u = new URL(url);
  const secure = u.protocol === 'ldaps:';
  const port = Number(u.port || (secure ? 636 : 389));
  const host = u.hostname.replace(/^\[|\]$/g, '');
  return new Promise((resolve, reject) => {
    const sock = secure ? tlsConnect({ host, port, ...tlsOptions(cfg, url) }) : tcpConnect({ host, port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(Object.assign(new Error('connection timed out'), { code: 'ETIMEDOUT' }));
    }, cfg.timeouts.connectMs);
    sock.once(secure ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer);
      sock.destroy();
      resolve();
    });
    sock.once('error', (err) => {
      clearTimeout(timer);
      sock.destroy();
      reject(err);
    });
  });
}

class Report {
  problems = 0;
  lines: string[] = [];
  ok(text: string): void {
    this.lines.push(`  ok    ${text}`);
  }
  fail(text: string): void {
    this.problems++;
    this.lines.push(`  FAIL  ${text}`);
  }
  note(text: string): void {
    this.lines.push(`        ${text}`);
  }
}

/** The checks for one host; `r` collects what was found. */
async function testHost(cfg: LdapConfig, user: string | undefined, r: Report): Promise<void> {
  let good: Client | null = null;
  for (const url of cfg.urls) {
    try {
      await probe(url, cfg);
      const tls = cfg.tls.verify ? 'TLS, certificate verified' : 'TLS, certificate NOT verified: tls.verify is off';
      r.ok(`${url}: reachable${url.startsWith('ldaps:') ? ` (${tls})` : ''}`);
    } catch (err) {
      r.fail(`${url}: ${explainLdapError(err, cfg)}`);
      continue;
    }
    const c = new Client({ url, connectTimeout: cfg.timeouts.connectMs, timeout: cfg.timeouts.searchMs, strictDN: false, ...(url.startsWith('ldaps:') ? { tlsOptions: tlsOptions(cfg, url) } : {}) });
    try {
      if (cfg.startTls && url.startsWith('ldap:')) {
        try {
          await c.startTLS(tlsOptions(cfg, url));
          r.ok(`${url}: StartTLS`);
        } catch (err) {
          r.fail(`${url}: StartTLS failed: ${explainLdapError(err, cfg)}`);
          continue;
        }
      }
      if (cfg.bindDn) {
        try {
          await c.bind(cfg.bindDn, cfg.bindPassword ?? '');
          r.ok(`${url}: service bind as ${cfg.bindDn}`);
        } catch (err) {
          r.fail(`${url}: service bind as ${cfg.bindDn} failed: ${explainLdapError(err, cfg)}`);
          continue;
        }
      } else {
        r.ok(`${url}: no bindDn: searching anonymously`);
      }
      good ??= c;
    } finally {
      if (good !== c) await c.unbind().catch(() => {});
    }
  }
  if (!good) {
    r.note('no directory server could be used: the remaining checks were skipped');
    return;
  }
  const c: Client = good;
  try {
    try {
      await c.search(cfg.base, { scope: 'base', filter: '(objectClass=*)', attributes: ['1.1'] });
      r.ok(`base ${cfg.base} exists`);
    } catch (err) {
      r.fail(`base ${cfg.base}: ${err instanceof NoSuchObjectError ? 'this entry does not exist in the directory (check ldap.base)' : explainLdapError(err, cfg)}`);
      return;
    }
    const attr = cfg.userAttribute;
    const filter = `(&${cfg.userFilter}(${attr}=*))`;
    try {
      // RFC 4515 writes literal parentheses as \28 and \29: every one here is structure.
      let depth = 0;
      for (const ch of cfg.userFilter) if ((depth += ch === '(' ? 1 : ch === ')' ? -1 : 0) < 0) break;
      if (depth !== 0) throw new Error('unbalanced parentheses');
      FilterParser.parseString(cfg.userFilter);
    } catch (err) {
      r.fail(`userFilter ${cfg.userFilter} is not a valid LDAP filter (RFC 4515): ${(err as Error).message}`);
      return;
    }
    try {
      const n = (await c.search(cfg.base, { scope: 'sub', filter, attributes: ['1.1'], sizeLimit: COUNT_LIMIT })).searchEntries.length;
      if (n === 0) r.fail(`userFilter ${cfg.userFilter} finds no users with a ${attr} below ${cfg.base}: check base, userFilter and userAttribute`);
      else r.ok(`userFilter finds ${n} user${n === 1 ? '' : 's'} with a ${attr}`);
    } catch (err) {
      if (err instanceof SizeLimitExceededError) r.ok(`userFilter finds at least ${COUNT_LIMIT} users with a ${attr} (counting stopped there)`);
      else r.fail(`searching users with ${filter}: ${explainLdapError(err, cfg)}`);
    }
    if (user !== undefined) {
      const own = escapeFilter`(${attr}=${user})`;
      const found = (await c.search(cfg.base, { scope: 'sub', filter: `(&${cfg.userFilter}${own})`, attributes: [attr, cfg.displayNameAttribute], sizeLimit: 2 }).catch(() => null))?.searchEntries;
      if (found?.length === 1) {
        r.ok(`user ${user}: found, ${found[0]!.dn}`);
      } else if (found && found.length > 1) {
        r.fail(`user ${user}: several entries match; Parley refuses such a username`);
      } else {
        const any = (await c.search(cfg.base, { scope: 'sub', filter: own, attributes: ['1.1'], sizeLimit: 1 }).catch(() => null))?.searchEntries;
        if (any?.[0]) r.fail(`user ${user}: ${any[0].dn} exists but the userFilter excludes it (disabled?), so ${user} cannot log in`);
        else r.fail(`user ${user}: not found (no entry with ${attr}=${user} below ${cfg.base})`);
      }
    }
    if (cfg.roster === 'directory') {
      // The subschema lists the attribute types the directory knows.
      const root = (await c.search('', { scope: 'base', filter: '(objectClass=*)', attributes: ['subschemaSubentry'] }).catch(() => null))?.searchEntries[0];
      const sub = root?.subschemaSubentry;
      const schema = sub ? (await c.search(String(Array.isArray(sub) ? sub[0] : sub), { scope: 'base', filter: '(objectClass=subschema)', attributes: ['attributeTypes'] }).catch(() => null))?.searchEntries[0] : undefined;
      const types = schema?.attributeTypes;
      const list = (Array.isArray(types) ? types : types ? [types] : []).map(String);
      if (!schema) r.note(`roster: directory: could not read the directory schema to check for parleyRosterItem`);
      else if (list.some((t) => /NAME\s+\(?\s*'parleyRosterItem'/i.test(t))) r.ok('roster: directory: the directory knows parleyRosterItem (docs/ldap/parley.schema)');
      else r.fail('roster: directory: the directory does not know the attribute parleyRosterItem: load docs/ldap/parley.schema');
    }
  } finally {
    await c.unbind().catch(() => {});
  }
}

/** Runs the checks; resolves the printed report and whether everything passed. */
export async function ldapTest(cfg: Readonly<ResolvedConfig>, opts: { host?: string; user?: string }): Promise<{ ok: boolean; report: string }> {
  const hosts = cfg.hosts.filter((h) => h.accounts === 'ldap' && h.ldap && (opts.host === undefined || h.domain === opts.host));
  if (!hosts.length) {
    const why = opts.host ? `${opts.host} is not a host with accounts: ldap` : 'no host has accounts: ldap';
    return { ok: false, report: `${why} (hosts: ${cfg.hosts.map((h) => `${h.domain} (${h.accounts})`).join(', ')})\n` };
  }
  const out: string[] = [];
  let problems = 0;
  for (const h of hosts) {
    const r = new Report();
    await testHost(h.ldap as LdapConfig, opts.user, r);
    problems += r.problems;
    out.push(`host ${h.domain}: ${r.problems ? `${r.problems} problem${r.problems === 1 ? '' : 's'}` : 'all checks passed'}`, ...r.lines);
  }
  out.push(problems ? `${problems} problem${problems === 1 ? '' : 's'} found` : 'the directory configuration works');
  return { ok: problems === 0, report: `${out.join('\n')}\n` };
}
