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
    ],
  },
});
const provider = (name: string) => cfg.sso.providers.find((p) => p.name === name) as SsoProviderConfig;
const id = (subject: string, claims: SsoIdentity['claims'], provider = 'corp'): SsoIdentity => ({ provider, issuer: 'https://idp.example', subject, claims });

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
    const made = await mapper.admit(id('sub-dave', { email: 'dave@example.com' }, 'jit'), provider('jit'));
    expect(made).toMatchObject({ created: true });
    expect(created).toEqual(['dave@example.com']);
    expect((await storage.accounts.get('dave@example.com'))?.scram).toEqual({}); // no password
    const again = await mapper.admit(id('sub-dave', { email: 'dave@example.com' }, 'jit'), provider('jit'));
    expect(again.created).toBe(false);
    // A jit provider aimed at an LDAP host is refused by the configuration; the mapper refuses too.
    const ldapJit = { ...provider('jit'), host: 'corp.example' } as SsoProviderConfig;
    const mapperWithDirectory = new IdentityMapper(storage, { exists: async () => false } as unknown as AccountService, new Map(cfg.hosts.map((h) => [h.domain, h])));
    await expect(mapperWithDirectory.admit(id('sub-e', { email: 'erin' }, 'jit'), ldapJit)).rejects.toThrow(/no account erin@corp.example/);
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
});
