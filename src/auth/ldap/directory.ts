// An LDAP directory as the account store of a host (issue 8), with ldapts.
//
// - Search-then-bind: the user's entry is found with the service account (or anonymously) by the
//   configured user attribute, inside the configured user filter, with the value escaped per
//   RFC 4515; the password is then checked by binding as the DN the directory returned. An empty
//   password is refused before any bind (an LDAP simple bind with a DN and no password is an
//   "unauthenticated bind" that succeeds, RFC 4513 §5.1.2).
// - Failover: the URLs are tried in order, starting with the one that answered last. A connection
//   failure or timeout moves on; an LDAP result (wrong password, no such object) does not.
// - TLS: ldaps:// or StartTLS, with certificate and name verification unless turned off.
// - Outages surface as DirectoryUnavailableError, which SASL answers with temporary-auth-failure:
//   never a success, never "wrong password".
// - Look-ups go through a DirectoryCache (aging, expiration, negative entries); binds never do:
//   Parley keeps no password material for directory users.
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { AlreadyExistsError, Attribute, BerWriter, Change, Client, escapeFilter, InvalidCredentialsError, ResultCodeError, SizeLimitExceededError, type Entry } from 'ldapts';
import type { LdapConfig } from '../../core/config.js';
import { escapeLocalpart, unescapeLocalpart } from '../../xmpp/jid.js';
import { DirectoryConflictError, type DirectoryChange, type DirectoryEntry, type DirectorySearch, type DirectoryUser, type SharedGroup, type UserDirectory } from '../../core/directory.js';
import type { Logger } from '../../core/logger.js';
import { DirectoryCache, type CacheStats } from './cache.js';
import { GroupResolver } from './groups.js';

/** The directory could not be reached or did not answer in time. */
export class DirectoryUnavailableError extends Error {
  override name = 'DirectoryUnavailableError';
}

export type { DirectoryUser };

export interface DirectoryStats extends CacheStats {
  /** Operations sent to the directory, by kind. */
  binds: number;
  searches: number;
  /** Connection failures and timeouts (each one a failover step). */
  failures: number;
}

/** ldapts raises ResultCodeError subclasses for LDAP results; anything else is the connection. */
const isLdapResult = (err: unknown): err is ResultCodeError => err instanceof ResultCodeError;

const first = (e: Entry, attr: string): string | null => {
  const key = Object.keys(e).find((k) => k.toLowerCase() === attr.toLowerCase());
  const v = key ? e[key] : undefined;
  const s = Array.isArray(v) ? v[0] : v;
  return s === undefined ? null : Buffer.isBuffer(s) ? s.toString('utf8') : String(s);
};

/** RFC 3062 Password Modify extended operation. */
const PASSWORD_MODIFY_OID = '1.3.6.1.4.1.4203.1.11.1';

/** PasswdModifyRequestValue ::= SEQUENCE { userIdentity [0] OPTIONAL, oldPasswd [1] OPTIONAL, newPasswd [2] OPTIONAL } */
function passwordModifyRequest(dn: string, newPassword: string): Buffer {
  const w = new BerWriter();
  w.startSequence();
  w.writeString(dn, 0x80);
  w.writeString(newPassword, 0x82);
  w.endSequence();
  return w.buffer;
}

/** RFC 4514 §2.4: a value placed in a DN. */
function escapeDnValue(v: string): string {
  return v
    .replace(/[\\,+"<>;=\0]/g, (c) => (c === '\0' ? '\\00' : `\\${c}`))
    .replace(/^[ #]/, (c) => `\\${c}`)
    .replace(/ $/, '\\ ');
}

/** Rethrows LDAP results as they are; anything else means the directory is unreachable. */
function unavailable(err: unknown): never {
  if (isLdapResult(err) || err instanceof DirectoryUnavailableError || err instanceof DirectoryConflictError) throw err;
  throw new DirectoryUnavailableError(`directory write failed: ${(err as Error).message}`);
}

export class LdapDirectory implements UserDirectory {
  readonly cache: DirectoryCache<DirectoryUser>;
  /** Cached answers of modules' searches (DirectorySearch.cacheKey), aged like user look-ups. */
  private readonly searches: DirectoryCache<DirectoryEntry[]>;
  /** Group membership (issue 8), when `groups` is configured. */
  readonly groups: GroupResolver | null;
  private service: Client | null = null;
  private preferred = 0;
  private readonly tls: ConnectionOptions;
  private readonly counters = { binds: 0, searches: 0, failures: 0 };

  constructor(
    readonly host: string,
    private readonly cfg: LdapConfig,
    private readonly log: Logger,
  ) {
    this.cache = new DirectoryCache(cfg.cache);
    this.searches = new DirectoryCache(cfg.cache);
    this.groups = cfg.groups ? new GroupResolver(this, cfg.groups, cfg.cache, log) : null;
    const ca = cfg.tls.ca ? (cfg.tls.ca.includes('-----BEGIN') ? cfg.tls.ca : readFileSync(cfg.tls.ca, 'utf8')) : undefined;
    this.tls = { rejectUnauthorized: cfg.tls.verify, ...(ca ? { ca: [ca] } : {}) };
    if (!cfg.tls.verify) this.tls.checkServerIdentity = () => undefined;
  }

  private newClient(url: string, timeout: number): Client {
    // ldapts treats any tlsOptions as "connect with TLS": give them to ldaps:// URLs only (StartTLS gets its own).
    const secure = url.startsWith('ldaps:');
    return new Client({ url, connectTimeout: this.cfg.timeouts.connectMs, timeout, ...(secure ? { tlsOptions: this.tlsFor(url) } : {}), strictDN: false });
  }

  /** TLS options for one server: SNI with its host name (not with an IP address, which SNI forbids). */
  private tlsFor(url: string): ConnectionOptions {
    const host = new URL(url).hostname;
    return { ...this.tls, ...(/^[\d.:[\]]+$/.test(host) ? {} : { servername: host }) };
  }

  /** A connected client (StartTLS done) to the first server that answers; `bind` runs on it there. */
  private async open(timeout: number, bind: (c: Client) => Promise<void>): Promise<Client> {
    const urls = this.cfg.urls;
    let lastErr: unknown;
    for (let i = 0; i < urls.length; i++) {
      const idx = (this.preferred + i) % urls.length;
      const url = urls[idx] as string;
      const c = this.newClient(url, timeout);
      try {
        if (this.cfg.startTls && url.startsWith('ldap:')) await c.startTLS(this.tlsFor(url));
        await bind(c);
        this.preferred = idx;
        return c;
      } catch (err) {
        await c.unbind().catch(() => {});
        if (isLdapResult(err)) throw err; // the directory answered: do not fail over
        this.counters.failures++;
        this.log.warn({ url, err: (err as Error).message }, 'directory server unreachable');
        lastErr = err;
      }
    }
    throw new DirectoryUnavailableError(`no directory server answered (${(lastErr as Error | undefined)?.message ?? 'no URL'})`);
  }

  /** Runs `fn` on the service connection (bound as the service account, or anonymous), reconnecting once. */
  private async withService<T>(fn: (c: Client) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      if (!this.service || !this.service.isConnected) {
        await this.service?.unbind().catch(() => {});
        this.service = null;
        this.service = await this.open(this.cfg.timeouts.searchMs, async (c) => {
          if (this.cfg.bindDn) {
            this.counters.binds++;
            await c.bind(this.cfg.bindDn, this.cfg.bindPassword ?? '');
          }
        });
      }
      try {
        return await fn(this.service);
      } catch (err) {
        if (isLdapResult(err)) throw err;
        // The connection broke (server restarted, idle timeout): drop it and try once more.
        this.counters.failures++;
        await this.service?.unbind().catch(() => {});
        this.service = null;
        if (attempt >= 1) throw new DirectoryUnavailableError(`directory search failed: ${(err as Error).message}`);
      }
    }
  }

  /** The user entry for an XMPP username, or null (not in the directory, or excluded by the user filter). */
  async findUser(username: string): Promise<DirectoryUser | null> {
    const key = `u:${username.toLowerCase()}`;
    const cached = this.cache.get(key);
    if (cached !== undefined) return cached;
    const attr = this.cfg.userAttribute;
    // XEP-0106: the localpart alice\40example.com names the directory value alice@example.com.
    const value = unescapeLocalpart(username);
    const filter = `(&${this.cfg.userFilter}${escapeFilter`(${attr}=${value})`})`;
    let entries: Entry[];
    try {
      entries = await this.withService(async (c) => {
        this.counters.searches++;
        const r = await c.search(this.cfg.base, { scope: 'sub', filter, sizeLimit: 2, attributes: [attr, this.cfg.displayNameAttribute] });
        return r.searchEntries;
      });
    } catch (err) {
      if (err instanceof DirectoryUnavailableError) throw err;
      if (err instanceof SizeLimitExceededError) entries = [{ dn: '' }, { dn: '' }]; // more than one match
      else throw new DirectoryUnavailableError(`directory search failed: ${(err as Error).message}`);
    }
    let user: DirectoryUser | null = null;
    if (entries.length > 1) {
      this.log.warn({ username, attr }, 'several directory entries match one username; refusing it');
    } else if (entries[0]) {
      const e = entries[0];
      const name = first(e, attr);
      // The directory matched case-insensitively; the username must still be the same one.
      if (name !== null && name.toLowerCase() === value.toLowerCase()) user = { dn: e.dn, username: escapeLocalpart(name), displayName: first(e, this.cfg.displayNameAttribute) };
    }
    this.cache.set(key, user);
    return user;
  }

  /**
   * Checks a password by binding as the user's DN. Resolves the user, or null for a wrong password
   * or an unknown/excluded user; throws DirectoryUnavailableError when the directory is down.
   */
  async authenticate(username: string, password: string): Promise<DirectoryUser | null> {
    if (!username || !password) return null; // never an unauthenticated bind
    const user = await this.findUser(username);
    if (!user || !user.dn) return null;
    try {
      const c = await this.open(this.cfg.timeouts.bindMs, async (conn) => {
        this.counters.binds++;
        await conn.bind(user.dn, password);
      });
      await c.unbind().catch(() => {});
      return user;
    } catch (err) {
      if (err instanceof InvalidCredentialsError) return null;
      if (err instanceof DirectoryUnavailableError) throw err;
      // Other LDAP results (account locked by a password policy, unwilling to perform): no login.
      if (isLdapResult(err)) {
        this.log.info({ username, result: err.constructor.name }, 'directory refused the bind');
        return null;
      }
      throw new DirectoryUnavailableError(`directory bind failed: ${(err as Error).message}`);
    }
  }

  get userBase(): string {
    return this.cfg.base;
  }
  get userAttribute(): string {
    return this.cfg.userAttribute;
  }
  get displayNameAttribute(): string {
    return this.cfg.displayNameAttribute;
  }
  get userFilter(): string {
    return this.cfg.userFilter;
  }

  async search(q: DirectorySearch): Promise<DirectoryEntry[]> {
    if (q.cacheKey) {
      const hit = this.searches.get(q.cacheKey);
      if (hit) return hit;
    }
    const binary = new Set((q.binaryAttributes ?? []).map((a) => a.toLowerCase()));
    const limit = Math.min(q.sizeLimit ?? 100, this.cfg.sizeLimit);
    let entries: Entry[];
    try {
      entries = await this.withService(async (c) => {
        this.counters.searches++;
        const r = await c.search(q.base ?? this.cfg.base, {
          scope: q.scope ?? 'sub',
          filter: q.filter,
          sizeLimit: limit,
          ...(q.attributes ? { attributes: [...q.attributes, ...(q.binaryAttributes ?? [])] } : {}),
          // Binary attributes must come back as Buffers: ask by name with the ;binary option.
          explicitBufferAttributes: [...binary],
        });
        return r.searchEntries;
      });
    } catch (err) {
      if (!(err instanceof SizeLimitExceededError)) {
        if (err instanceof DirectoryUnavailableError) throw err;
        throw isLdapResult(err) ? err : new DirectoryUnavailableError(`directory search failed: ${(err as Error).message}`);
      }
      entries = []; // without a client size limit ldapts throws and keeps nothing (not the case here)
    }
    // With a size limit ldapts returns what came before the directory stopped: say it may be cut.
    if (entries.length >= limit && limit < (q.sizeLimit ?? Infinity)) this.log.warn({ filter: q.filter, limit }, 'directory answer cut at ldap.sizeLimit');
    const out = entries.slice(0, limit).map((e): DirectoryEntry => {
      const attributes: Record<string, string[]> = {};
      const bin: Record<string, Buffer[]> = {};
      for (const [k, v] of Object.entries(e)) {
        if (k === 'dn') continue;
        const list = (Array.isArray(v) ? v : [v]) as (string | Buffer)[];
        if (binary.has(k.toLowerCase())) bin[k] = list.map((x) => (Buffer.isBuffer(x) ? x : Buffer.from(String(x), 'binary')));
        else attributes[k] = list.map((x) => (Buffer.isBuffer(x) ? x.toString('utf8') : String(x)));
      }
      return { dn: e.dn, attributes, binary: bin };
    });
    if (q.cacheKey) this.searches.set(q.cacheKey, out);
    return out;
  }

  async modify(dn: string, changes: DirectoryChange[]): Promise<void> {
    await this.withService((c) =>
      c.modify(
        dn,
        changes.map((ch) => new Change({ operation: ch.operation, modification: new Attribute({ type: ch.attribute, values: ch.values }) })),
      ),
    );
    this.searches.clear(); // a write may change any cached answer
  }

  async add(dn: string, attributes: Record<string, string[]>): Promise<void> {
    await this.withService((c) => c.add(dn, attributes));
    this.searches.clear();
  }

  async createUser(localpart: string, password: string): Promise<DirectoryUser> {
    const username = unescapeLocalpart(localpart); // the directory value (XEP-0106)
    const reg = this.cfg.registration;
    const attr = this.cfg.userAttribute;
    const rdn = reg.rdnAttribute ?? attr;
    // Taken also when the user filter hides the entry (a disabled user keeps their name).
    const taken = await this.withService(async (c) => {
      this.counters.searches++;
      try {
        return (await c.search(this.cfg.base, { scope: 'sub', filter: escapeFilter`(${attr}=${username})`, sizeLimit: 1, attributes: ['1.1'] })).searchEntries.length > 0;
      } catch (err) {
        if (err instanceof SizeLimitExceededError) return true;
        throw err;
      }
    }).catch(unavailable);
    if (taken) throw new DirectoryConflictError(`${attr}=${username} exists`);
    const dn = `${rdn}=${escapeDnValue(username)},${reg.base ?? this.cfg.base}`;
    const attributes: Record<string, string[]> = { objectClass: [...reg.objectClasses] };
    const set = (name: string, values: string[]) => {
      const key = Object.keys(attributes).find((k) => k.toLowerCase() === name.toLowerCase()) ?? name;
      attributes[key] = [...new Set([...(attributes[key] ?? []), ...values])];
    };
    for (const [name, v] of Object.entries(reg.attributes)) set(name, (Array.isArray(v) ? v : [v]).map((x) => x.replaceAll('{username}', username)));
    const userKey = Object.keys(attributes).find((k) => k.toLowerCase() === attr.toLowerCase());
    if (userKey) delete attributes[userKey]; // the user attribute holds exactly the username
    set(attr, [username]);
    set(rdn, [username]);
    try {
      await this.withService((c) => c.add(dn, attributes));
    } catch (err) {
      if (err instanceof AlreadyExistsError) throw new DirectoryConflictError(`${dn} exists`);
      unavailable(err);
    }
    try {
      // RFC 3062: the directory hashes the password per its own policy.
      await this.withService((c) => c.exop(PASSWORD_MODIFY_OID, passwordModifyRequest(dn, password))).catch(async (err: unknown) => {
        if (!isLdapResult(err)) throw err;
        this.log.info({ dn, result: err.constructor.name }, 'Password Modify refused; setting userPassword');
        await this.withService((c) => c.modify(dn, new Change({ operation: 'replace', modification: new Attribute({ type: 'userPassword', values: [password] }) })));
      });
    } catch (err) {
      // No half-made account: an entry without a password is removed again (best effort).
      await this.withService((c) => c.del(dn)).catch((e: unknown) => this.log.warn({ dn, err: (e as Error).message }, 'could not remove the entry of a failed registration'));
      unavailable(err);
    }
    this.cache.delete(`u:${localpart.toLowerCase()}`); // a remembered "no such user" ends here
    this.searches.clear();
    return { dn, username: escapeLocalpart(username), displayName: attributes[this.cfg.displayNameAttribute]?.[0] ?? null };
  }

  async groupsOf(username: string): Promise<string[]> {
    return this.groups ? this.groups.groupsOf(username) : [];
  }

  async members(group: string): Promise<DirectoryUser[]> {
    return this.groups ? this.groups.members(group) : [];
  }

  async sharedGroupsOf(username: string): Promise<SharedGroup[]> {
    return this.groups ? this.groups.sharedGroupsOf(username) : [];
  }

  /** The user's groups as last resolved (synchronous, for the access control engine); refreshed in the background. */
  knownGroups(username: string): readonly string[] | undefined {
    return this.groups?.knownGroups(username);
  }

  flushCache(): void {
    this.cache.clear();
    this.searches.clear();
    this.groups?.clear();
  }

  stats(): DirectoryStats {
    const a = this.cache.stats();
    const b = this.searches.stats();
    const g = this.groups?.stats() ?? { hits: 0, misses: 0, negativeHits: 0, evictions: 0, size: 0, negativeSize: 0 };
    return {
      hits: a.hits + b.hits + g.hits,
      misses: a.misses + b.misses + g.misses,
      negativeHits: a.negativeHits + b.negativeHits + g.negativeHits,
      evictions: a.evictions + b.evictions + g.evictions,
      size: a.size + b.size + g.size,
      negativeSize: a.negativeSize + b.negativeSize + g.negativeSize,
      ...this.counters,
    };
  }

  async close(): Promise<void> {
    await this.service?.unbind().catch(() => {});
    this.service = null;
  }
}
