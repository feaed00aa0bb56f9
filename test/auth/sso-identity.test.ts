// Issue 9: from an IdP identity to an account (src/auth/sso/identity.ts), on a real SQLite store.
// The first sign-in maps the configured claim to a JID and binds issuer+subject; later sign-ins
// follow the binding even when the claim changes; a second subject naming a bound account is
// refused; missing accounts are refused unless jit creates them (internal hosts only); groups and
// display name come from the claims at each sign-in.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AccountService } from '../../src/auth/index.js';
import { AdmissionError, IdentityMapper, SsoGroups, mapToJid } from '../../src/auth/sso/identity.js';
import type { SsoIdentity } from '../../src/auth/sso/types.js';
import { validateConfig, type HostConfig, type SsoProviderConfig } from '../../src/core/config.js';
import { openSqlite } from '../../src/storage/sqlite.js';
import type { Storage } from '../../src/storage/types.js';

const cfg = validateConfig({
  hosts: ['example.com', { domain: 'corp.example', accounts: 'ldap', ldap: { urls: ['ldap://127.0.0.1:9'], base: 'dc=corp' } }],
  sso: {
    baseUrl: 'https://chat.example.com',
    providers: [
      { type: 'oidc', name: 'corp', host: 'example.com', issuer: 'https://idp.example', clientId: 'p', identity: { localpart: 'preferred_username', displayName: 'name', groups: 'groups' } },
      { type: 'oidc', name: 'jit', host: 'example.com', issuer: 'https://idp.example', clientId: 'p', jit: true, identity: { localpart: 'email' } },
      { type: 'oidc', name: 'partner', host: 'example.com', issuer: 'https://partner.example', clientId: 'p', identity: { localpart: 'preferred_username' } },
      { type: 'oidc', name: 'twin', host: 'example.com', issuer: 'https://twin.example', clientId: 'p', identity: { localpart: 'preferred_username', linkBoundAccounts: true } },
      { type: 'oidc', name: 'dir', host: 'corp.example', issuer: 'https://idp.example', clientId: 'p', identity: { localpart: 'preferred_username' } },
    ],
  },
});
const provider = (name: string) => cfg.sso.providers.find((p) => p.name === name) as SsoProviderConfig;
const ISSUERS: Record<string, string> = { partner: 'https://partner.example', twin: 'https://twin.example' };
const id = (subject: string, claims: SsoIdentity['claims'], provider = 'corp'): SsoIdentity => ({ provider, issuer: ISSUERS[provider] ?? 'https://idp.example', subject, claims });

describe('IdP identity to account', () => {
  let storage: Storage;
  let mapper: IdentityMapper;
  const created: string[] = [];

  beforeAll(async () => {
    storage = await openSqlite({ path: ':memory:' });
    const accounts = new AccountService(storage, 4096);
    mapper = new IdentityMapper(storage, accounts, new Map<string, HostConfig>(cfg.hosts.map((h) => [h.domain, h])), (b) => created.push(b));
    await accounts.create('alice@example.com', 'pw-alice');
    await accounts.create('bob@example.com', 'pw-bob');
  });
  afterAll(async () => {
    await storage?.close();
  });

  it('maps the claim (escaped, own domain dropped) to a JID on the provider host', () => {
    const p = provider('corp');
    expect(mapToJid(id('1', { preferred_username: 'Alice' }), p).bare).toBe('alice@example.com');
    expect(mapToJid(id('1', { preferred_username: 'alice@example.com' }), p).bare).toBe('alice@example.com');
    expect(mapToJid(id('1', { preferred_username: 'jean dupont@other.example' }), p).bare).toBe('jean\\20dupont\\40other.example@example.com');
    expect(() => mapToJid(id('1', { name: 'x' }), p)).toThrow(AdmissionError);
    let err: unknown;
    try {
      mapToJid(id('1', { preferred_username: ' ' }), p);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ reason: 'the identity has no preferred_username claim/attribute' });
  });

  it('binds issuer+subject at the first sign-in and follows the binding afterwards, whatever the claim says', async () => {
    const first = await mapper.admit(id('sub-alice', { preferred_username: 'alice', name: 'Alice A.', groups: ['Staff', 'bad group!', 'ops'] }), provider('corp'));
    expect(first).toMatchObject({ displayName: 'Alice A.', groups: ['staff', 'ops'], created: false });
    expect(first.jid.bare).toBe('alice@example.com');
    // The IdP renamed her (or recycled "bob" for her): the binding decides, not the claim.
    const later = await mapper.admit(id('sub-alice', { preferred_username: 'bob', groups: 'staff' }), provider('corp'));
    expect(later.jid.bare).toBe('alice@example.com');
    expect(later.groups).toEqual(['staff']);
    expect((await storage.ssoIdentities.get('example.com', 'https://idp.example', 'sub-alice'))?.groups).toEqual(['staff']);
  });

  it('refuses a second subject whose claim names an account already bound', async () => {
    await expect(mapper.admit(id('sub-impostor', { preferred_username: 'alice' }), provider('corp'))).rejects.toMatchObject({ reason: expect.stringMatching(/bound to another subject/) });
    expect(await storage.ssoIdentities.get('example.com', 'https://idp.example', 'sub-impostor')).toBeNull();
  });

  it('refuses an identity without an account unless the provider creates it (jit), and never on a directory host', async () => {
    await expect(mapper.admit(id('sub-carol', { preferred_username: 'carol' }), provider('corp'))).rejects.toThrow(/no account carol@example.com/);
    const made = await mapper.admit(id('sub-dave', { email: 'dave@example.com', email_verified: 'true' }, 'jit'), provider('jit'));
    expect(made).toMatchObject({ created: true });
    expect(created).toEqual(['dave@example.com']);
    expect((await storage.accounts.get('dave@example.com'))?.scram).toEqual({}); // no password
    const again = await mapper.admit(id('sub-dave', { email: 'dave@example.com', email_verified: 'true' }, 'jit'), provider('jit'));
    expect(again.created).toBe(false);
    // A jit provider aimed at an LDAP host is refused by the configuration; the mapper refuses too.
    const ldapJit = { ...provider('jit'), host: 'corp.example' } as SsoProviderConfig;
    const mapperWithDirectory = new IdentityMapper(storage, { exists: async () => false } as unknown as AccountService, new Map(cfg.hosts.map((h) => [h.domain, h])));
    await expect(mapperWithDirectory.admit(id('sub-e', { email: 'erin', email_verified: 'true' }, 'jit'), ldapJit)).rejects.toThrow(/no account erin@corp.example/);
  });

  it('keeps IdP groups per account for the policy engine', async () => {
    const groups = new SsoGroups(storage.ssoIdentities);
    await groups.load();
    expect(groups.of('alice@example.com')).toEqual(['staff']);
    groups.set('alice@example.com', ['ops']);
    expect(groups.of('alice@example.com')).toEqual(['ops']);
    await groups.refresh('alice@example.com');
    expect(groups.of('alice@example.com')).toEqual(['staff']);
    expect(groups.of('nobody@example.com')).toEqual([]);
  });

  it('an e-mail claim maps an account only when the provider verified it', async () => {
    await expect(mapper.admit(id('sub-mallory', { email: 'mallory@example.com' }, 'jit'), provider('jit'))).rejects.toMatchObject({ reason: expect.stringMatching(/email_verified is not true/) });
    await expect(mapper.admit(id('sub-mallory', { email: 'mallory@example.com', email_verified: 'false' }, 'jit'), provider('jit'))).rejects.toThrow(AdmissionError);
    expect(await storage.accounts.get('mallory@example.com')).toBeNull();
  });

  it("a first sign-in through another IdP cannot take an account bound elsewhere, unless that provider links bound accounts", async () => {
    // alice is bound to https://idp.example (above); a partner IdP user called "alice" is not her.
    await expect(mapper.admit(id('p-alice', { preferred_username: 'alice' }, 'partner'), provider('partner'))).rejects.toMatchObject({
      reason: expect.stringMatching(/bound to https:\/\/idp\.example; refusing a first sign-in from https:\/\/partner\.example/),
    });
    const twin = await mapper.admit(id('t-alice', { preferred_username: 'alice' }, 'twin'), provider('twin'));
    expect(twin.jid.bare).toBe('alice@example.com');
    // bob is bound nowhere: the partner IdP may bind him.
    expect((await mapper.admit(id('p-bob', { preferred_username: 'bob' }, 'partner'), provider('partner'))).jid.bare).toBe('bob@example.com');
  });

  it('a claim the provider did not send keeps what the last sign-in said; an empty one clears it', async () => {
    await mapper.admit(id('sub-alice', { preferred_username: 'alice', name: 'Alice A.', groups: ['staff', 'ops'] }), provider('corp'));
    // An access token (XEP-0493) with neither name nor groups.
    const bare = await mapper.admit(id('sub-alice', { preferred_username: 'alice' }), provider('corp'));
    expect(bare).toMatchObject({ displayName: 'Alice A.', groups: ['staff', 'ops'] });
    const cleared = await mapper.admit(id('sub-alice', { preferred_username: 'alice', groups: [] }), provider('corp'));
    expect(cleared.groups).toEqual([]);
  });

  it('on a directory host, a binding whose IdP name now points at another entry is refused for an administrator to check', async () => {
    const dirAccounts = { exists: async () => true } as unknown as AccountService;
    const dirMapper = new IdentityMapper(storage, dirAccounts, new Map(cfg.hosts.map((h) => [h.domain, h])));
    const first = await dirMapper.admit(id('s1', { preferred_username: 'bob' }), provider('dir'));
    expect(first.jid.bare).toBe('bob@corp.example');
    // S1 was renamed to robert in the directory, and "bob" given to a new hire.
    await expect(dirMapper.admit(id('s1', { preferred_username: 'robert' }), provider('dir'))).rejects.toMatchObject({
      reason: expect.stringMatching(/bound to bob@corp\.example but the identity provider now names robert@corp\.example/),
    });
  });

  it('the configuration keeps registration off where people sign in through an IdP, and one bearer audience per host', () => {
    const p = { type: 'oidc', name: 'corp', host: 'a.test', issuer: 'https://idp.example', clientId: 'parley' };
    expect(() => validateConfig({ hosts: [{ domain: 'a.test', registration: { enabled: true } }], sso: { baseUrl: 'https://chat.example', providers: [p] } })).toThrow(/registration/);
    expect(() =>
      validateConfig({
        hosts: ['a.test', 'b.test'],
        sso: { baseUrl: 'https://chat.example', providers: [{ ...p, bearer: { audience: 'xmpp' } }, { ...p, name: 'corp-b', host: 'b.test', bearer: { audience: 'xmpp' } }] },
      }),
    ).toThrow(/already the audience/);
  });
});
