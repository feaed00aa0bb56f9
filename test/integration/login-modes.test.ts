// Issue 9, per-host login modes ("SSO only; SSO then directory/internal password; passwords
// only"): `hosts[].login`. An `sso` host offers only OAUTHBEARER (tokens from single sign-on or
// `parley token`) and refuses PLAIN/SCRAM even when asked for by name; a `password` host does not
// offer OAUTHBEARER and refuses a valid token; the default offers both. Real sockets, STARTTLS.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateConfig, ConfigError } from '../../src/core/config.js';
import { NS_SASL, RawClient, oauthBearerPayload, plainAuth } from '../helpers/raw.js';
import { startTestServer, uniqueUser, type TestServer } from '../helpers/server.js';

const SASL_END = /<success\b[^>]*(?:\/>|>[\s\S]*?<\/success>)|<failure\b[^>]*>[\s\S]*?<\/failure>|<challenge\b[^>]*>[\s\S]*?<\/challenge>/;

describe('login modes per host', () => {
  let srv: TestServer;
  const clients: RawClient[] = [];

  beforeAll(async () => {
    srv = await startTestServer({ hosts: [{ domain: 'sso.test', login: 'sso' }, { domain: 'pw.test', login: 'password' }, 'both.test'] });
  });
  afterAll(async () => {
    for (const c of clients) c.destroy();
    await srv?.close();
  });

  async function secured(domain: string): Promise<{ c: RawClient; features: string }> {
    const c = await RawClient.connect(srv.ports.c2s as number);
    clients.push(c);
    await c.openStream(domain);
    await c.startTls();
    return { c, features: await c.openStream(domain) };
  }

  async function send(c: RawClient, xml: string): Promise<string> {
    const since = c.mark();
    await c.send(xml);
    return (await c.waitFor(SASL_END, 10_000, since))[0];
  }

  const mechanisms = (features: string) => [...features.matchAll(/<mechanism>([^<]+)<\/mechanism>/g)].map((m) => m[1]);

  it('an sso host offers only OAUTHBEARER and refuses a password even when PLAIN is asked for', async () => {
    const user = `${uniqueUser('s')}@sso.test`;
    await srv.server.auth.create(user, 'secret-password');
    const { c, features } = await secured('sso.test');
    expect(mechanisms(features)).toEqual(['OAUTHBEARER']);
    const r = await send(c, plainAuth(user.split('@')[0] as string, 'secret-password'));
    expect(RawClient.saslCondition(r)).toBe('invalid-mechanism');
    // A token logs the same user in.
    const { token } = await srv.server.auth.tokens!.issue(user, 'sso.test');
    const { c: c2 } = await secured('sso.test');
    expect(await send(c2, `<auth xmlns='${NS_SASL}' mechanism='OAUTHBEARER'>${oauthBearerPayload(token)}</auth>`)).toMatch(/^<success\b/);
  });

  it('a password host does not offer OAUTHBEARER and refuses a valid token; passwords work', async () => {
    const local = uniqueUser('p');
    const user = `${local}@pw.test`;
    await srv.server.auth.create(user, 'secret-password');
    const { c, features } = await secured('pw.test');
    expect(mechanisms(features)).not.toContain('OAUTHBEARER');
    expect(mechanisms(features)).toContain('PLAIN');
    const { token } = await srv.server.auth.tokens!.issue(user, 'pw.test');
    expect(RawClient.saslCondition(await send(c, `<auth xmlns='${NS_SASL}' mechanism='OAUTHBEARER'>${oauthBearerPayload(token)}</auth>`))).toBe('invalid-mechanism');
    const { c: c2 } = await secured('pw.test');
    expect(await send(c2, plainAuth(local, 'secret-password'))).toMatch(/^<success\b/);
  });

  it('the default offers both', async () => {
    const { features } = await secured('both.test');
    expect(mechanisms(features)).toEqual(expect.arrayContaining(['OAUTHBEARER', 'PLAIN', 'SCRAM-SHA-256']));
  });

  it('the configuration refuses contradictions', () => {
    expect(() => validateConfig({ hosts: [{ domain: 'a.test', login: 'sso', registration: { enabled: true } }] })).toThrow(ConfigError);
    const provider = { type: 'oidc', name: 'corp', host: 'a.test', issuer: 'https://idp.example', clientId: 'parley' };
    expect(() => validateConfig({ hosts: [{ domain: 'a.test', login: 'password' }], sso: { baseUrl: 'https://chat.example', providers: [provider] } })).toThrow(/login: password/);
    expect(() => validateConfig({ hosts: ['a.test'], sso: { providers: [provider] } })).toThrow(/sso.baseUrl/);
    expect(() => validateConfig({ hosts: [{ domain: 'a.test', accounts: 'ldap', ldap: { urls: ['ldap://127.0.0.1'], base: 'dc=x' } }], sso: { baseUrl: 'https://chat.example', providers: [{ ...provider, jit: true }] } })).toThrow(/jit/);
    expect(() => validateConfig({ hosts: ['a.test'], sso: { baseUrl: 'http://chat.example', providers: [provider] } })).toThrow(/https/);
    expect(validateConfig({ hosts: ['a.test'], sso: { baseUrl: 'https://chat.example', providers: [provider] } }).sso.providers[0]?.host).toBe('a.test');
  });
});
