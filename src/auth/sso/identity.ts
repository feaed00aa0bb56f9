// From an identity the provider verified to a Parley account (issue 9). The rules:
// - The first sign-in of an issuer+subject maps it to a JID from the configured claim/attribute
//   (XEP-0106 escaped; a trailing @<host> dropped, so an e-mail-shaped value of the host's own
//   domain gives its user part) and binds issuer+subject to that account. Later sign-ins find
//   the account by the binding alone: a changed or reassigned e-mail or username at the IdP does
//   not move anybody into another account.
// - An account is bound to at most one subject per issuer: a second subject whose claim names an
//   account already bound (a recycled username, a second IdP user claiming the same name) is
//   refused, not merged.
// - The account must exist (the directory has it, on LDAP hosts), unless the provider has `jit`:
//   then an internal account without a password is created at first sign-in.
// - Display name and groups come from the configured claims at every sign-in; groups feed the
//   policy engine's @group principals (see SsoGroups).
import type { HostConfig, SsoProviderConfig } from '../../core/config.js';
import type { SsoIdentityStore, Storage } from '../../storage/types.js';
import { Jid, escapeLocalpart } from '../../xmpp/jid.js';
import type { AccountService } from '../index.js';
import type { SsoIdentity } from './types.js';

export class AdmissionError extends Error {
  override name = 'AdmissionError';
  constructor(
    /** What the person is told (no internals). */
    message: string,
    /** What the log says. */
    readonly reason: string,
  ) {
    super(message);
  }
}

export interface Admitted {
  jid: Jid;
  displayName: string | null;
  groups: string[];
  /** The account was created by this sign-in. */
  created: boolean;
}

/** The first value of a claim or attribute, as a string. */
export function claimValue(claims: SsoIdentity['claims'], name: string | undefined): string | undefined {
  if (!name) return undefined;
  const v = claims[name];
  const first = Array.isArray(v) ? v[0] : v;
  return typeof first === 'string' && first.trim() ? first.trim() : undefined;
}

function claimList(claims: SsoIdentity['claims'], name: string | undefined): string[] {
  if (!name) return [];
  const v = claims[name];
  const list = Array.isArray(v) ? v : typeof v === 'string' ? v.split(/[\s,]+/) : [];
  // Policy group names are case-insensitive words; anything else could not be named in a file.
  return [...new Set(list.map((g) => g.trim().toLowerCase()).filter((g) => /^[a-z0-9][a-z0-9._-]{0,127}$/.test(g)))].slice(0, 256);
}

/** The JID the configured claim names on `host`, or an AdmissionError. */
export function mapToJid(identity: SsoIdentity, provider: SsoProviderConfig): Jid {
  const claim = provider.identity.localpart;
  let value = claimValue(identity.claims, claim);
  if (!value) throw new AdmissionError('Your identity provider did not say who you are on this server.', `the identity has no ${claim} claim/attribute`);
  const suffix = `@${provider.host}`;
  if (value.toLowerCase().endsWith(suffix)) value = value.slice(0, -suffix.length);
  const jid = Jid.tryParse(`${escapeLocalpart(value)}@${provider.host}`);
  if (!jid?.local || jid.resource) throw new AdmissionError('Your user name cannot be used on this server.', `${claim} value ${JSON.stringify(value)} is not a valid JID localpart`);
  return jid;
}

export class IdentityMapper {
  constructor(
    private readonly storage: Storage,
    private readonly accounts: AccountService,
    private readonly hosts: ReadonlyMap<string, HostConfig>,
    private readonly onAccountCreated: (bare: string) => void = () => {},
  ) {}

  private get bindings(): SsoIdentityStore {
    return this.storage.ssoIdentities;
  }

  /** Maps, checks and binds; throws AdmissionError when the identity cannot sign in. */
  async admit(identity: SsoIdentity, provider: SsoProviderConfig): Promise<Admitted> {
    const host = provider.host;
    const hostCfg = this.hosts.get(host);
    const bound = await this.bindings.get(host, identity.issuer, identity.subject);
    // OpenID Connect: an e-mail address names a person only once the provider verified it.
    if (provider.type === 'oidc' && provider.identity.localpart === 'email' && identity.claims.email_verified !== 'true') {
      throw new AdmissionError('Your e-mail address is not verified at your identity provider.', 'the email claim maps the account but email_verified is not true');
    }
    const jid = bound ? Jid.parse(bound.user) : mapToJid(identity, provider);
    if (bound && hostCfg?.accounts === 'ldap') {
      // A directory account is its directory entry: if the IdP now names another entry (the user
      // was renamed and the old name given to somebody else), the binding points at a stranger.
      const now = mapToJid(identity, provider);
      if (now.bare !== jid.bare) {
        throw new AdmissionError(
          'Your account needs attention from an administrator.',
          `${identity.subject} is bound to ${jid.bare} but the identity provider now names ${now.bare}; run \`parley sso unbind ${jid.bare} --issuer ${identity.issuer}\` once checked`,
        );
      }
    }
    if (!bound && !provider.identity.linkBoundAccounts) {
      const elsewhere = (await this.bindings.byUser(jid.bare)).find((b) => b.issuer !== identity.issuer);
      if (elsewhere) {
        throw new AdmissionError(
          `The account ${jid.bare} is already linked to another identity provider.`,
          `${jid.bare} is bound to ${elsewhere.issuer}; refusing a first sign-in from ${identity.issuer} (identity.linkBoundAccounts is off)`,
        );
      }
    }
    let created = false;
    if (!(await this.accounts.exists(jid.bare))) {
      if (!provider.jit || hostCfg?.accounts !== 'internal') {
        throw new AdmissionError(`There is no account ${jid.bare} on this server.`, `no account ${jid.bare}${provider.jit ? '' : ' (jit is off)'}`);
      }
      // Just in time: an account without a password (it signs in through the IdP, with tokens).
      created = await this.storage.accounts.create({ jid: jid.bare, username: jid.local as string, host, scram: {}, createdAt: Date.now() });
      if (created) this.onAccountCreated(jid.bare);
    }
    // A claim the provider did not send this time (an access token often carries neither) leaves
    // what the last sign-in said; a claim sent empty clears it.
    const has = (name: string | undefined) => !!name && identity.claims[name] !== undefined;
    const displayName = has(provider.identity.displayName) ? (claimValue(identity.claims, provider.identity.displayName) ?? null) : (bound?.displayName ?? null);
    const groups = has(provider.identity.groups) ? claimList(identity.claims, provider.identity.groups) : (bound?.groups ?? []);
    const now = Date.now();
    const ok = await this.bindings.bind({
      host,
      issuer: identity.issuer,
      subject: identity.subject,
      user: jid.bare,
      provider: provider.name,
      displayName,
      groups,
      createdAt: bound?.createdAt ?? now,
      lastLoginAt: now,
    });
    if (!ok) {
      throw new AdmissionError(
        `The account ${jid.bare} is already linked to another identity at your identity provider.`,
        `${jid.bare} is bound to another subject of ${identity.issuer}; refusing subject ${identity.subject}`,
      );
    }
    return { jid, displayName, groups, created };
  }
}

/**
 * Groups from IdP claims for the policy engine (@group principals), by bare JID: loaded from the
 * bindings at start, refreshed at each sign-in and at each XMPP login of a host with providers
 * (so a sign-in on another node reaches this one by the next login).
 */
export class SsoGroups {
  private readonly byUser = new Map<string, Set<string>>();

  constructor(private readonly store: SsoIdentityStore) {}

  async load(): Promise<void> {
    this.byUser.clear();
    for (const r of await this.store.withGroups()) this.add(r.user, r.groups);
  }

  async refresh(bare: string): Promise<void> {
    const recs = await this.store.byUser(bare);
    this.byUser.delete(bare);
    for (const r of recs) this.add(r.user, r.groups);
  }

  set(bare: string, groups: string[]): void {
    this.byUser.delete(bare);
    this.add(bare, groups);
  }

  of(bare: string): readonly string[] {
    return [...(this.byUser.get(bare) ?? [])];
  }

  private add(user: string, groups: string[]): void {
    if (!groups.length) return;
    const set = this.byUser.get(user) ?? new Set<string>();
    for (const g of groups) set.add(g);
    this.byUser.set(user, set);
  }
}
