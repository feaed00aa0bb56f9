// PLAIN (RFC 4616) server mechanism.
import { describe, expect, it } from 'vitest';
import { plainMechanism } from '../../src/auth/sasl/plain.js';
import type { SaslContext, SaslStep } from '../../src/auth/sasl/types.js';

const HOST = 'example.com';
const PASSWORDS = new Map([['juliet', 'r0m30myr0m30']]);

function makeCtx(over: Partial<SaslContext> = {}): SaslContext & { calls: [string, string][] } {
  const calls: [string, string][] = [];
  return {
    calls,
    host: HOST,
    secure: true,
    channelBindingTypes: [],
    channelBinding: () => null,
    getScram: async () => null,
    verifyPassword: async (u, p) => {
      calls.push([u, p]);
      return PASSWORDS.get(u) === p;
    },
    serverSecret: Buffer.alloc(32),
    ...over,
  };
}

const msg = (authzid: string, authcid: string, password: string) => Buffer.from(`${authzid}\0${authcid}\0${password}`, 'utf8');

async function run(input: Buffer, ctx = makeCtx()): Promise<SaslStep> {
  return plainMechanism().start(ctx).step(input);
}

describe('PLAIN', () => {
  it('succeeds with the right password (RFC 6120 §6.4.2 example credentials)', async () => {
    expect(await run(msg('', 'juliet', 'r0m30myr0m30'))).toEqual({ kind: 'success', username: 'juliet' });
  });

  it('wrong password -> not-authorized with the username', async () => {
    expect(await run(msg('', 'juliet', 'nope'))).toMatchObject({
      kind: 'failure',
      condition: 'not-authorized',
      username: 'juliet',
    });
  });

  it('unknown user -> not-authorized, same text as a wrong password', async () => {
    const a = (await run(msg('', 'romeo', 'x'))) as Extract<SaslStep, { kind: 'failure' }>;
    const b = (await run(msg('', 'juliet', 'x'))) as Extract<SaslStep, { kind: 'failure' }>;
    expect(a.condition).toBe('not-authorized');
    expect(a.text).toBe(b.text);
  });

  it('authzid naming someone else -> invalid-authzid, password not checked', async () => {
    const ctx = makeCtx();
    expect(await run(msg('romeo@example.com', 'juliet', 'r0m30myr0m30'), ctx)).toMatchObject({
      kind: 'failure',
      condition: 'invalid-authzid',
      username: 'juliet',
    });
    expect(ctx.calls).toHaveLength(0);
    expect(await run(msg('juliet@elsewhere.example', 'juliet', 'r0m30myr0m30'))).toMatchObject({ condition: 'invalid-authzid' });
    expect(await run(msg('juliet@example.com/balcony', 'juliet', 'r0m30myr0m30'))).toMatchObject({ condition: 'invalid-authzid' });
  });

  it('authzid equal to the own JID or the username is accepted', async () => {
    for (const az of ['juliet@example.com', 'juliet', 'Juliet@EXAMPLE.com']) {
      expect(await run(msg(az, 'juliet', 'r0m30myr0m30')), az).toEqual({ kind: 'success', username: 'juliet' });
    }
  });

  it('empty username or password -> not-authorized without asking the store', async () => {
    const ctx = makeCtx();
    expect(await run(msg('', '', 'r0m30myr0m30'), ctx)).toMatchObject({ kind: 'failure', condition: 'not-authorized' });
    expect(await run(msg('', 'juliet', ''), ctx)).toMatchObject({ kind: 'failure', condition: 'not-authorized' });
    expect(await run(msg('', '\u00AD', 'x'), ctx)).toMatchObject({ kind: 'failure', condition: 'not-authorized' }); // maps to empty
    expect(await run(msg('', 'juliet', 'a\u0007b'), ctx)).toMatchObject({ kind: 'failure', condition: 'not-authorized' }); // prohibited
    expect(ctx.calls).toHaveLength(0);
  });

  it('missing or extra NULs -> malformed-request', async () => {
    for (const s of ['juliet', 'juliet\0r0m30myr0m30', '\0juliet\0r0m30\0myr0m30']) {
      expect(await run(Buffer.from(s)), JSON.stringify(s)).toMatchObject({ kind: 'failure', condition: 'malformed-request' });
    }
    expect(await run(Buffer.from([0, 0x6a, 0, 0xff]))).toMatchObject({ condition: 'malformed-request' }); // bad UTF-8
  });

  it('SASLpreps authcid and password before verification', async () => {
    const ctx = makeCtx();
    expect(await run(msg('', 'jul\u00ADiet', 'r0m30\u00ADmyr0m30'), ctx)).toEqual({ kind: 'success', username: 'juliet' });
    expect(ctx.calls).toEqual([['juliet', 'r0m30myr0m30']]);
  });

  it('no initial response: empty challenge, then the credentials', async () => {
    const s = plainMechanism().start(makeCtx());
    expect(await s.step(Buffer.alloc(0))).toEqual({ kind: 'challenge', data: Buffer.alloc(0) });
    expect(await s.step(msg('', 'juliet', 'r0m30myr0m30'))).toMatchObject({ kind: 'success' });
  });

  it('rejects any message after the result', async () => {
    const s = plainMechanism().start(makeCtx());
    expect((await s.step(msg('', 'juliet', 'r0m30myr0m30'))).kind).toBe('success');
    expect(await s.step(msg('', 'juliet', 'r0m30myr0m30'))).toMatchObject({ kind: 'failure', condition: 'malformed-request' });
  });

  it('store errors -> temporary-auth-failure', async () => {
    const ctx = makeCtx({ verifyPassword: () => Promise.reject(new Error('db down')) });
    expect(await run(msg('', 'juliet', 'x'), ctx)).toMatchObject({ condition: 'temporary-auth-failure', username: 'juliet' });
  });

  it('is available only over TLS unless allowed explicitly', () => {
    const m = plainMechanism();
    expect(m.name).toBe('PLAIN');
    expect(m.available({ secure: true, channelBindingTypes: [] }, { allowPlainWithoutTls: false })).toBe(true);
    expect(m.available({ secure: false, channelBindingTypes: [] }, { allowPlainWithoutTls: false })).toBe(false);
    expect(m.available({ secure: false, channelBindingTypes: [] }, { allowPlainWithoutTls: true })).toBe(true);
  });
});
