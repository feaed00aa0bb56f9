// OAUTHBEARER (RFC 7628) server mechanism: the §3.1 message syntax, and the §3.2.2 error exchange.
import { describe, expect, it } from 'vitest';
import { oauthBearerMechanism, parseClientResponse } from '../../src/auth/sasl/oauthbearer.js';
import type { SaslContext } from '../../src/auth/sasl/types.js';

const GOOD = 'g'.repeat(43);
const ctx: SaslContext = {
  host: 'example.com',
  secure: true,
  channelBindingTypes: [],
  channelBinding: () => null,
  getScram: async () => null,
  verifyPassword: async () => false,
  serverSecret: Buffer.alloc(32),
  verifyToken: async (t) => (t === GOOD ? { username: 'juliet' } : null),
};
const step = (s: string) => oauthBearerMechanism().start(ctx).step(Buffer.from(s, 'utf8'));

describe('OAUTHBEARER', () => {
  it('parses the §3.1 client response: authzid, host/port ignored, scheme case-insensitive', () => {
    expect(parseClientResponse(`n,a=user@example.com,\u0001host=server.example.com\u0001port=143\u0001auth=Bearer ${GOOD}\u0001\u0001`)).toEqual({ authzid: 'user@example.com', token: GOOD });
    expect(parseClientResponse(`n,,\u0001auth=bearer  ${GOOD}\u0001\u0001`)).toEqual({ token: GOOD });
    // StanzaJS 12 leaves out "a=".
    expect(parseClientResponse(`n,juliet@example.com,\u0001auth=Bearer ${GOOD}\u0001\u0001`)).toEqual({ authzid: 'juliet@example.com', token: GOOD });
    expect(parseClientResponse(`n,a=a=3Db=2Cc,\u0001auth=Bearer ${GOOD}\u0001\u0001`)).toEqual({ authzid: 'a=b,c', token: GOOD });
  });

  it('refuses malformed responses', () => {
    for (const bad of [
      `p=tls-exporter,,\u0001auth=Bearer ${GOOD}\u0001\u0001`, // no channel binding in OAUTHBEARER
      `n,,\u0001auth=Bearer ${GOOD}\u0001`, // missing final kvsep
      `n,,auth=Bearer ${GOOD}\u0001\u0001`, // missing first kvsep
      'n,,\u0001host=x\u0001\u0001', // no auth
      `n,,\u0001auth=Basic ${GOOD}\u0001\u0001`,
      `n,,\u0001auth=Bearer ${GOOD}\u0001auth=Bearer ${GOOD}\u0001\u0001`,
      `n,,\u0001=x\u0001auth=Bearer ${GOOD}\u0001\u0001`,
      `x,,\u0001auth=Bearer ${GOOD}\u0001\u0001`,
    ]) expect(typeof parseClientResponse(bad), JSON.stringify(bad)).toBe('string');
  });

  it('succeeds for a good token; an authzid naming another user is invalid-authzid', async () => {
    expect(await step(`n,a=juliet@example.com,\u0001auth=Bearer ${GOOD}\u0001\u0001`)).toEqual({ kind: 'success', username: 'juliet' });
    expect(await step(`n,a=romeo@example.com,\u0001auth=Bearer ${GOOD}\u0001\u0001`)).toMatchObject({ kind: 'failure', condition: 'invalid-authzid' });
    expect(await step(`p=tls-exporter,,\u0001auth=Bearer ${GOOD}\u0001\u0001`)).toMatchObject({ kind: 'failure', condition: 'malformed-request' });
  });

  it('answers a bad token with the §3.2.2 error challenge, then fails on %x01', async () => {
    for (const [reply, condition] of [['\u0001', 'not-authorized'], ['junk', 'malformed-request']] as const) {
      const s = oauthBearerMechanism().start(ctx);
      const first = await s.step(Buffer.from(`n,,\u0001auth=Bearer ${'b'.repeat(43)}\u0001\u0001`, 'utf8'));
      expect(first.kind).toBe('challenge');
      if (first.kind === 'challenge') expect(JSON.parse(first.data.toString('utf8'))).toEqual({ status: 'invalid_token' });
      expect(await s.step(Buffer.from(reply, 'utf8'))).toMatchObject({ kind: 'failure', condition });
    }
  });

  it('is available over TLS only, whatever allowPlainWithoutTls says', () => {
    const m = oauthBearerMechanism();
    expect(m.available({ secure: true, channelBindingTypes: [] }, { allowPlainWithoutTls: false })).toBe(true);
    expect(m.available({ secure: false, channelBindingTypes: [] }, { allowPlainWithoutTls: true })).toBe(false);
  });

  it('XEP-0493: an empty token gets the error flow, with the discovery URL and scope when the host has one', async () => {
    const discovering = oauthBearerMechanism().start({ ...ctx, oauthDiscovery: 'https://idp.example/.well-known/openid-configuration' });
    const first = await discovering.step(Buffer.from('n,,\u0001auth=Bearer \u0001\u0001', 'utf8'));
    expect(first.kind).toBe('challenge');
    expect(JSON.parse((first as { data: Buffer }).data.toString('utf8'))).toEqual({
      status: 'invalid_token',
      scope: 'xmpp:client:normal',
      'openid-configuration': 'https://idp.example/.well-known/openid-configuration',
    });
    expect(await discovering.step(Buffer.from([1]))).toMatchObject({ kind: 'failure', condition: 'not-authorized' });
    // Without a provider the JSON stays RFC 7628's minimum.
    const plain = await step('n,,\u0001auth=Bearer \u0001\u0001');
    expect(JSON.parse((plain as { data: Buffer }).data.toString('utf8'))).toEqual({ status: 'invalid_token' });
  });
});
