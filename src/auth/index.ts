// The public entry of src/auth: accounts (internal provider over storage), SASL mechanisms and
// login throttling. Later providers (LDAP, SSO tokens) plug in behind the same AccountService.
import type { AccountRecord, ScramHash, ScramSecret, Storage } from '../storage/types.js';
import { Jid } from '../xmpp/jid.js';
import { deriveScramAsync, verifyPasswordAgainstScramAsync } from './scram-secrets.js';
import { LdapDirectory } from './ldap/directory.js';
import type { ResolvedConfig } from '../core/config.js';
import type { Logger } from '../core/logger.js';
import { isXmppToken, type TokenService } from './tokens.js';
import type { TokenLogin } from './sasl/types.js';

export { LdapDirectory, DirectoryUnavailableError } from './ldap/directory.js';
export type { DirectoryStats, DirectoryUser } from './ldap/directory.js';

export { saslMechanisms, findMechanism } from './sasl/index.js';
export { LoginThrottle } from './backoff.js';
export { TokenService, TokenError, tokenHash } from './tokens.js';
export type { IssuedToken, TokenInfo, TokenOptions } from './tokens.js';
export type { SaslMechanism, SaslContext, ChannelBindingType, TokenLogin } from './sasl/types.js';
// Access control files (issue 7): policy/ holds the parser, FileAccessControl and reload support.
export {
  startAccessFiles, readAclStatus, formatAclReport, ACL_STATUS_FILE, FileAccessControl, AclLoadError, AclSyntaxError, parseAclFile,
} from './policy/index.js';
export type { AclStatus, AclReloadReport, AclFileReport } from './policy/index.js';

export class AccountError extends Error {
  override name = 'AccountError';
}

const HASHES: ScramHash[] = ['SHA-1', 'SHA-256'];

/** The LDAP directories of the hosts configured with `accounts: ldap` (they connect on first use). */
export function directoriesFor(config: Readonly<ResolvedConfig>, log: Logger): Map<string, LdapDirectory> {
  const out = new Map<string, LdapDirectory>();
  for (const h of config.hosts) {
    if (h.accounts === 'ldap' && h.ldap) out.set(h.domain, new LdapDirectory(h.domain, h.ldap, log.child({ host: h.domain, directory: 'ldap' })));
  }
  return out;
}

/** Verifies access tokens of identity providers (XEP-0493) and maps them to an account. */
export interface BearerTokens {
  /** The username on `host` the token logs in, or null; throws when the provider cannot be asked. */
  verify(token: string, host: string): Promise<string | null>;
  discoveryUrl(host: string): string | null;
}

export class AccountService {
  constructor(
    private readonly storage: Storage,
    private readonly iterations = 4096,
    /** Hosts whose accounts live in an LDAP directory (issue 8), by domain. */
    private readonly directories: ReadonlyMap<string, LdapDirectory> = new Map(),
    /** XMPP tokens (issue 9): OAUTHBEARER is offered when there is a token service. */
    readonly tokens?: TokenService,
  ) {}

  private bearer: BearerTokens | null = null;

  /** XEP-0493 (issue 9): the SSO layer verifies its OpenID providers' access tokens. */
  setBearerTokens(b: BearerTokens | null): void {
    this.bearer = b;
  }

  /** XEP-0493: the discovery URL a host's OAUTHBEARER errors carry, if it accepts IdP access tokens. */
  oauthDiscovery(host: string): string | undefined {
    return this.bearer?.discoveryUrl(host) ?? undefined;
  }

  /** The directory that holds `host`'s accounts, if the host is configured with `accounts: ldap`. */
  directory(host: string): LdapDirectory | undefined {
    return this.directories.get(host);
  }

  async close(): Promise<void> {
    for (const d of this.directories.values()) await d.close();
  }

  /** SCRAM needs a stored secret; directory hosts have none, so only PLAIN (over TLS) works there. */
  supportsScram(host: string): boolean {
    return !this.directories.has(host);
  }

  private refuseDirectory(jid: Jid): void {
    if (this.directories.has(jid.domain)) throw new AccountError(`the accounts of ${jid.domain} live in its LDAP directory; manage them there`);
  }

  private async secrets(password: string): Promise<AccountRecord['scram']> {
    if (!password) throw new AccountError('empty password');
    const out: AccountRecord['scram'] = {};
    for (const h of HASHES) out[h] = await deriveScramAsync(password, h, this.iterations);
    return out;
  }

  /** Creates an account; throws AccountError if the JID is invalid or the account exists. */
  async create(bare: string, password: string): Promise<Jid> {
    const jid = parseAccountJid(bare);
    this.refuseDirectory(jid);
    const ok = await this.storage.accounts.create({
      jid: jid.bare,
      username: jid.local,
      host: jid.domain,
      scram: await this.secrets(password),
      createdAt: Date.now(),
    });
    if (!ok) throw new AccountError(`account ${jid.bare} already exists`);
    return jid;
  }

  async setPassword(bare: string, password: string): Promise<void> {
    const jid = parseAccountJid(bare);
    this.refuseDirectory(jid);
    const ok = await this.storage.accounts.setScram(jid.bare, await this.secrets(password));
    if (!ok) throw new AccountError(`no account ${jid.bare}`);
  }

  async remove(bare: string): Promise<void> {
    const jid = parseAccountJid(bare);
    if (!(await this.storage.accounts.remove(jid.bare))) throw new AccountError(`no account ${jid.bare}`);
  }

  /** Whether the account exists (for a directory host: the directory has it, through its cache; may throw DirectoryUnavailableError). */
  async exists(bare: string): Promise<boolean> {
    const jid = Jid.tryParse(bare);
    const dir = jid?.local ? this.directories.get(jid.domain) : undefined;
    if (dir && jid?.local) return (await dir.findUser(jid.local)) !== null;
    return (await this.storage.accounts.get(bare)) !== null;
  }

  async getScram(username: string, host: string, hash: ScramHash): Promise<ScramSecret | null> {
    if (this.directories.has(host)) return null;
    const jid = Jid.tryParse(`${username}@${host}`);
    if (!jid || jid.local !== username) return null;
    const rec = await this.storage.accounts.get(jid.bare);
    return rec?.scram[hash] ?? null;
  }

  /**
   * OAUTHBEARER: the username on `host` an XMPP token logs in, or null (unknown, expired, revoked,
   * another host's, or its account is gone — for a directory host, gone from the directory or
   * excluded by its filter). Throws DirectoryUnavailableError when the directory is down.
   */
  async verifyToken(token: string, host: string): Promise<TokenLogin | null> {
    // XEP-0493: not one of our tokens (those are 43 base64url characters) but perhaps the access
    // token of the host's OpenID provider, mapped to its account by the SSO layer.
    if (this.bearer && !isXmppToken(token)) {
      const username = await this.bearer.verify(token, host);
      return username === null ? null : { username };
    }
    const rec = await this.tokens?.verifyRecord(token, host);
    const user = rec?.user;
    const jid = Jid.tryParse(user);
    if (!jid?.local || jid.domain !== host || !(await this.exists(jid.bare))) return null;
    if (this.directories.has(host)) {
      // As after a directory password login: a record without secrets, so the user is listed.
      await this.storage.accounts.create({ jid: jid.bare, username: jid.local, host: jid.domain, scram: {}, createdAt: Date.now() });
    }
    return { username: jid.local, credential: rec?.id };
  }

  /** Checks a password (throws DirectoryUnavailableError when a directory host's directory is down). */
  async verifyPassword(username: string, host: string, password: string): Promise<boolean> {
    const jid = Jid.tryParse(`${username}@${host}`);
    if (!jid?.local) return false;
    const dir = this.directories.get(host);
    if (dir) {
      if (!(await dir.authenticate(jid.local, password))) return false;
      // A record without secrets, so the features that list or look up accounts see directory
      // users who have logged in (the directory stays the only place with their passwords).
      await this.storage.accounts.create({ jid: jid.bare, username: jid.local, host: jid.domain, scram: {}, createdAt: Date.now() });
      return true;
    }
    const rec = await this.storage.accounts.get(jid.bare);
    const secret = rec?.scram['SHA-256'] ?? rec?.scram['SHA-1'];
    if (!rec || !secret) return false;
    return verifyPasswordAgainstScramAsync(password, secret, rec.scram['SHA-256'] ? 'SHA-256' : 'SHA-1');
  }
}

export function parseAccountJid(bare: string): Jid {
  let jid: Jid;
  try {
    jid = Jid.parse(bare);
  } catch (err) {
    throw new AccountError(`invalid JID ${bare}: ${(err as Error).message}`);
  }
  if (!jid.local || jid.resource) throw new AccountError(`invalid account JID ${bare}: expected user@host`);
  return jid;
}
