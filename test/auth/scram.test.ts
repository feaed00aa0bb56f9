// SCRAM server (RFC 5802, RFC 7677) driven by independent clients: stanza's SCRAM for the
// non-PLUS flows, and a small node:crypto client below for -PLUS (tls-exporter, RFC 9266;
// tls-server-end-point, RFC 5929) and for hand-crafted/tampered messages.
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { SCRAM } from 'stanza/lib/sasl/index.js';
import { describe, expect, it } from 'vitest';
import { findMechanism, saslMechanisms } from '../../src/auth/sasl/index.js';
import { type ScramMechanismName, decodeSaslname, scramMechanism } from '../../src/auth/sasl/scram.js';
import type { ChannelBindingType, SaslContext, SaslStep } from '../../src/auth/sasl/types.js';
import {
  deriveAllScram,
  deriveAllScramAsync,
  deriveScram,
  deriveScramAsync,
  verifyPasswordAgainstScram,
  verifyPasswordAgainstScramAsync,
} from '../../src/auth/scram-secrets.js';
import type { ScramHash, ScramSecret } from '../../src/storage/types.js';

const HOST = 'example.com';
const PASSWORD = 'r0m30myr0m30';
const ITER = 4096;

const accounts = new Map<string, Partial<Record<ScramHash, ScramSecret>>>([
  ['juliet', deriveAllScram(PASSWORD, ITER)],
  ['a,b=c', deriveAllScram('p,=w', ITER)],
]);

const CB: Record<ChannelBindingType, Buffer> = {
  'tls-exporter': randomBytes(32),
  'tls-server-end-point': randomBytes(32),
  'tls-unique': randomBytes(12),
};

function makeCtx(over: Partial<SaslContext> = {}): SaslContext {
  return {
    host: HOST,
    secure: true,
    channelBindingTypes: ['tls-exporter', 'tls-server-end-point', 'tls-unique'],
    channelBinding: (t) => CB[t] ?? null,
    getScram: async (u, h) => accounts.get(u)?.[h] ?? null,
    verifyPassword: async () => false,
    serverSecret: Buffer.from('0123456789abcdef0123456789abcdef'),
    ...over,
  };
}

const hashOf = (mech: string): ScramHash => (mech.startsWith('SCRAM-SHA-256') ? 'SHA-256' : 'SHA-1');
const b = (s: string) => Buffer.from(s, 'utf8');

function expectChallenge(step: SaslStep): string {
  if (step.kind !== 'challenge') throw new Error(`expected challenge, got ${JSON.stringify(step)}`);
  return step.data.toString('utf8');
}

function expectFailure(step: SaslStep, condition: string): void {
  expect(step.kind).toBe('failure');
  if (step.kind === 'failure') expect(step.condition).toBe(condition);
}

// ---- independent client (RFC 5802 §3, §5) ----------------------------------------------------

interface ClientOpts {
  username?: string; // already escaped
  password?: string;
  /** Full gs2 header, e.g. "p=tls-exporter,," (default "n,,"). */
  gs2?: string;
  cbData?: Buffer;
  cnonce?: string;
  extraFirst?: string;
  /** Tampering hooks for the final message. */
  cbOverride?: string;
  nonceOverride?: (nonce: string) => string;
  proofOverride?: (proof: Buffer) => Buffer;
}

class TestClient {
  readonly gs2: string;
  readonly bare: string;
  private serverSignature: Buffer | null = null;

  constructor(
    private readonly hash: ScramHash,
    private readonly o: ClientOpts = {},
  ) {
    this.gs2 = o.gs2 ?? 'n,,';
    this.bare = `n=${o.username ?? 'juliet'},r=${o.cnonce ?? randomBytes(18).toString('base64')}${o.extraFirst ?? ''}`;
  }

  first(): Buffer {
    return b(this.gs2 + this.bare);
  }

  final(serverFirst: string): Buffer {
    const alg = this.hash === 'SHA-1' ? 'sha1' : 'sha256';
    const len = this.hash === 'SHA-1' ? 20 : 32;
    const attrs = Object.fromEntries(serverFirst.split(',').map((a) => [a[0], a.slice(2)]));
    const salt = Buffer.from(attrs.s ?? '', 'base64');
    const iterations = Number(attrs.i);
    const nonce = this.o.nonceOverride ? this.o.nonceOverride(attrs.r ?? '') : (attrs.r ?? '');
    const cb = this.o.cbOverride ?? Buffer.concat([b(this.gs2), this.o.cbData ?? Buffer.alloc(0)]).toString('base64');
    const withoutProof = `c=${cb},r=${nonce}`;
    const salted = pbkdf2Sync(this.o.password ?? PASSWORD, salt, iterations, len, alg);
    const clientKey = createHmac(alg, salted).update('Client Key').digest();
    const storedKey = createHash(alg).update(clientKey).digest();
    const serverKey = createHmac(alg, salted).update('Server Key').digest();
    const authMessage = `${this.bare},${serverFirst},${withoutProof}`;
    const sig = createHmac(alg, storedKey).update(authMessage).digest();
    let proof: Buffer = Buffer.from(clientKey.map((x, i) => x ^ sig[i]));
    if (this.o.proofOverride) proof = this.o.proofOverride(proof);
    this.serverSignature = createHmac(alg, serverKey).update(authMessage).digest();
    return b(`${withoutProof},p=${proof.toString('base64')}`);
  }

  verifies(serverFinal: Buffer | undefined): boolean {
    return !!serverFinal && serverFinal.toString('utf8') === `v=${this.serverSignature!.toString('base64')}`;
  }
}

async function runClient(
  mechName: ScramMechanismName,
  o: ClientOpts,
  ctx = makeCtx(),
): Promise<{ steps: SaslStep[]; client: TestClient }> {
  const session = scramMechanism(mechName).start(ctx);
  const client = new TestClient(hashOf(mechName), o);
  const steps: SaslStep[] = [await session.step(client.first())];
  if (steps[0].kind === 'challenge') steps.push(await session.step(client.final(expectChallenge(steps[0]))));
  return { steps, client };
}

async function runStanza(
  mechName: 'SCRAM-SHA-1' | 'SCRAM-SHA-256' | 'SCRAM-SHA-1-PLUS' | 'SCRAM-SHA-256-PLUS',
  creds: { username: string; password: string; authzid?: string; tlsUnique?: Buffer },
  ctx = makeCtx(),
): Promise<{ steps: SaslStep[]; authenticated: boolean }> {
  const session = scramMechanism(mechName).start(ctx);
  const client = new SCRAM(mechName);
  const steps: SaslStep[] = [await session.step(client.createResponse(creds)!)];
  const first = steps[0];
  if (first.kind === 'challenge') {
    client.processChallenge(first.data);
    const second = await session.step(client.createResponse(creds)!);
    steps.push(second);
    if (second.kind === 'success' && second.data) client.processSuccess(second.data);
  }
  return { steps, authenticated: !!client.finalize().authenticated };
}

// ---- tests -----------------------------------------------------------------------------------

describe('SCRAM success', () => {
  for (const mech of ['SCRAM-SHA-1', 'SCRAM-SHA-256'] as const) {
    it(`${mech} with the stanza client (mutual authentication)`, async () => {
      const { steps, authenticated } = await runStanza(mech, { username: 'juliet', password: PASSWORD });
      expect(steps).toHaveLength(2);
      expect(steps[1]).toMatchObject({ kind: 'success', username: 'juliet' });
      expect(authenticated).toBe(true);
    });
  }

  for (const mech of ['SCRAM-SHA-1-PLUS', 'SCRAM-SHA-256-PLUS'] as const) {
    for (const type of ['tls-exporter', 'tls-server-end-point', 'tls-unique'] as const) {
      it(`${mech} with p=${type}`, async () => {
        const { steps, client } = await runClient(mech, { gs2: `p=${type},,`, cbData: CB[type] });
        expect(steps[1]).toMatchObject({ kind: 'success', username: 'juliet' });
        expect(client.verifies(steps[1].kind === 'success' ? steps[1].data : undefined)).toBe(true);
      });
    }
  }

  it('unescapes =2C and =3D in the username', async () => {
    const { steps, authenticated } = await runStanza('SCRAM-SHA-256', { username: 'a,b=c', password: 'p,=w' });
    expect(steps[1]).toMatchObject({ kind: 'success', username: 'a,b=c' });
    expect(authenticated).toBe(true);
  });

  it('accepts "y" when the server offers no channel binding', async () => {
    const ctx = makeCtx({ channelBindingTypes: [], secure: false });
    const { steps } = await runClient('SCRAM-SHA-1', { gs2: 'y,,' }, ctx);
    expect(steps[1].kind).toBe('success');
  });

  it('answers a missing initial response with an empty challenge', async () => {
    const session = scramMechanism('SCRAM-SHA-256').start(makeCtx());
    const client = new TestClient('SHA-256');
    expect(expectChallenge(await session.step(Buffer.alloc(0)))).toBe('');
    const sf = expectChallenge(await session.step(client.first()));
    expect((await session.step(client.final(sf))).kind).toBe('success');
  });

  it('server nonce extends the client nonce with ≥ 18 random bytes', async () => {
    const session = scramMechanism('SCRAM-SHA-1').start(makeCtx());
    const sf = expectChallenge(await session.step(b('n,,n=juliet,r=abc')));
    const r = /^r=abc([^,]+),s=[^,]+,i=4096$/.exec(sf);
    expect(r).not.toBeNull();
    expect(Buffer.from(r![1], 'base64').length).toBeGreaterThanOrEqual(18);
  });
});

describe('RFC test vectors', () => {
  it('RFC 5802 §5 (SCRAM-SHA-1)', async () => {
    const secret = deriveScram('pencil', 'SHA-1', 4096, Buffer.from('QSXCR+Q6sek8bf92', 'base64'));
    const ctx = makeCtx({ getScram: async (u, h) => (u === 'user' && h === 'SHA-1' ? secret : null) });
    const session = scramMechanism('SCRAM-SHA-1', { nonce: () => '3rfcNHYJY1ZVvWVs7j' }).start(ctx);
    expect(expectChallenge(await session.step(b('n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL')))).toBe(
      'r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096',
    );
    const res = await session.step(
      b('c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts='),
    );
    expect(res).toEqual({ kind: 'success', username: 'user', data: b('v=rmF9pqV8S7suAoZWja4dJRkFsKQ=') });
  });

  it('RFC 7677 §3 (SCRAM-SHA-256)', async () => {
    const secret = deriveScram('pencil', 'SHA-256', 4096, Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64'));
    const ctx = makeCtx({ getScram: async (u, h) => (u === 'user' && h === 'SHA-256' ? secret : null) });
    const session = scramMechanism('SCRAM-SHA-256', { nonce: () => '%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0' }).start(ctx);
    expect(expectChallenge(await session.step(b('n,,n=user,r=rOprNGfwEbeRWgbNEkqO')))).toBe(
      'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096',
    );
    const res = await session.step(
      b('c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ='),
    );
    expect(res).toEqual({
      kind: 'success',
      username: 'user',
      data: b('v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4='),
    });
  });
});

describe('SCRAM failures', () => {
  it('wrong password -> not-authorized, carrying the username', async () => {
    const { steps, authenticated } = await runStanza('SCRAM-SHA-256', { username: 'juliet', password: 'nope' });
    expect(steps).toHaveLength(2);
    expect(steps[1]).toMatchObject({ kind: 'failure', condition: 'not-authorized', username: 'juliet', wrongCredentials: true });
    expect(authenticated).toBe(false);
  });

  // RFC 5802 §6 and RFC 9266 / XEP-0440: every combination of (client supports binding or not,
  // server advertises -PLUS or not, binding type known or not) ends in a login or a clear failure;
  // only a wrong password counts as one (wrongCredentials), never a binding negotiation.
  describe('channel-binding combinations', () => {
    const plusCtx = () => makeCtx();
    const noPlusCtx = () => makeCtx({ channelBindingTypes: [], channelBinding: () => null });
    const cases: { name: string; mech: ScramMechanismName; gs2: string; cb?: Buffer; ctx: () => SaslContext; outcome: string }[] = [
      { name: 'no binding support, -PLUS advertised', mech: 'SCRAM-SHA-256', gs2: 'n,,', ctx: plusCtx, outcome: 'success' },
      { name: 'no binding support, no -PLUS', mech: 'SCRAM-SHA-256', gs2: 'n,,', ctx: noPlusCtx, outcome: 'success' },
      { name: 'supports binding, no -PLUS advertised ("y")', mech: 'SCRAM-SHA-256', gs2: 'y,,', ctx: noPlusCtx, outcome: 'success' },
      { name: 'supports binding, -PLUS advertised but "y" (stripped: downgrade)', mech: 'SCRAM-SHA-256', gs2: 'y,,', ctx: plusCtx, outcome: 'not-authorized:server-does-support-channel-binding' },
      { name: '-PLUS with tls-unique', mech: 'SCRAM-SHA-256-PLUS', gs2: 'p=tls-unique,,', cb: CB['tls-unique'], ctx: plusCtx, outcome: 'success' },
      { name: '-PLUS with tls-exporter', mech: 'SCRAM-SHA-1-PLUS', gs2: 'p=tls-exporter,,', cb: CB['tls-exporter'], ctx: plusCtx, outcome: 'success' },
      { name: '-PLUS with an unknown type', mech: 'SCRAM-SHA-256-PLUS', gs2: 'p=tls-future,,', cb: randomBytes(8), ctx: plusCtx, outcome: 'not-authorized:unsupported-channel-binding-type' },
      { name: '-PLUS with a type this connection lacks', mech: 'SCRAM-SHA-256-PLUS', gs2: 'p=tls-exporter,,', cb: CB['tls-exporter'], ctx: () => makeCtx({ channelBindingTypes: ['tls-unique', 'tls-server-end-point'] }), outcome: 'not-authorized:unsupported-channel-binding-type' },
      { name: '-PLUS with wrong binding data', mech: 'SCRAM-SHA-256-PLUS', gs2: 'p=tls-unique,,', cb: randomBytes(12), ctx: plusCtx, outcome: 'not-authorized:channel-bindings-dont-match' },
      { name: '"p=" on a non-PLUS mechanism', mech: 'SCRAM-SHA-256', gs2: 'p=tls-unique,,', cb: CB['tls-unique'], ctx: plusCtx, outcome: 'malformed-request:channel-binding-not-supported' },
      { name: '"n" on a -PLUS mechanism', mech: 'SCRAM-SHA-256-PLUS', gs2: 'n,,', ctx: plusCtx, outcome: 'malformed-request:channel binding required by -PLUS' },
    ];
    for (const c of cases) {
      it(`${c.name} -> ${c.outcome}`, async () => {
        const { steps } = await runClient(c.mech, { gs2: c.gs2, cbData: c.cb }, c.ctx());
        const last = steps[steps.length - 1] as SaslStep;
        if (c.outcome === 'success') {
          expect(last).toMatchObject({ kind: 'success', username: 'juliet' });
        } else {
          const [condition, text] = c.outcome.split(':');
          expect(last).toMatchObject({ kind: 'failure', condition, text });
          expect(last).not.toHaveProperty('wrongCredentials');
        }
      });
    }
  });

  it('unknown user is indistinguishable in flow from a wrong password', async () => {
    for (const mech of ['SCRAM-SHA-1', 'SCRAM-SHA-256'] as const) {
      const wrong = await runStanza(mech, { username: 'juliet', password: 'nope' });
      const unknown1 = await runStanza(mech, { username: 'romeo', password: 'nope' });
      const unknown2 = await runStanza(mech, { username: 'romeo', password: 'other' });
      expect(unknown1.steps.map((s) => s.kind)).toEqual(wrong.steps.map((s) => s.kind));
      const shape = (s: SaslStep) => expectChallenge(s).replace(/^r=[^,]+,s=([^,]+),i=(\d+)$/, (_m, salt: string, i: string) => `${Buffer.from(salt, 'base64').length}:${i}`);
      expect(shape(unknown1.steps[0])).toBe(shape(wrong.steps[0])); // same salt length and iterations
      const salt = (s: SaslStep) => /,s=([^,]+),/.exec(expectChallenge(s))![1];
      expect(salt(unknown1.steps[0])).toBe(salt(unknown2.steps[0])); // stable across attempts
      const { username: _u1, ...f1 } = wrong.steps[1] as Extract<SaslStep, { kind: 'failure' }>;
      const { username: u2, ...f2 } = unknown1.steps[1] as Extract<SaslStep, { kind: 'failure' }>;
      expect(f2).toEqual(f1);
      expect(u2).toBe('romeo');
    }
  });

  it('fake salts differ per username and per hash, and per server secret', async () => {
    const saltOf = async (mech: ScramMechanismName, user: string, ctx = makeCtx()) => {
      const s = scramMechanism(mech).start(ctx);
      return /,s=([^,]+),/.exec(expectChallenge(await s.step(b(`n,,n=${user},r=abc`))))![1];
    };
    expect(await saltOf('SCRAM-SHA-1', 'romeo')).not.toBe(await saltOf('SCRAM-SHA-1', 'tybalt'));
    expect(await saltOf('SCRAM-SHA-1', 'romeo')).not.toBe(await saltOf('SCRAM-SHA-256', 'romeo'));
    expect(await saltOf('SCRAM-SHA-1', 'romeo')).not.toBe(
      await saltOf('SCRAM-SHA-1', 'romeo', makeCtx({ serverSecret: Buffer.from('another secret') })),
    );
  });

  it('unknown user: a complete, well-formed exchange still fails', async () => {
    const { steps } = await runClient('SCRAM-SHA-1', { username: 'romeo' });
    expect(steps[1]).toMatchObject({ kind: 'failure', condition: 'not-authorized', username: 'romeo' });
  });

  it('bad channel-binding data -> not-authorized', async () => {
    const { steps } = await runClient('SCRAM-SHA-256-PLUS', { gs2: 'p=tls-exporter,,', cbData: randomBytes(32) });
    expect(steps[1]).toMatchObject({ kind: 'failure', condition: 'not-authorized', username: 'juliet' });
  });

  it('cb data of the other type -> not-authorized', async () => {
    const { steps } = await runClient('SCRAM-SHA-1-PLUS', { gs2: 'p=tls-exporter,,', cbData: CB['tls-server-end-point'] });
    expectFailure(steps[1], 'not-authorized');
  });

  it('c= without cb data on -PLUS -> not-authorized', async () => {
    const { steps } = await runClient('SCRAM-SHA-1-PLUS', { gs2: 'p=tls-exporter,,' });
    expectFailure(steps[1], 'not-authorized');
  });

  it('c= altered on non-PLUS (e.g. "y" replaced by "n") -> not-authorized', async () => {
    const { steps } = await runClient('SCRAM-SHA-1', { gs2: 'n,,', cbOverride: 'eSws' });
    expectFailure(steps[1], 'not-authorized');
  });

  it('"y" while -PLUS is advertised -> not-authorized (downgrade)', async () => {
    const { steps } = await runClient('SCRAM-SHA-256', { gs2: 'y,,' });
    expect(steps).toHaveLength(1);
    expect(steps[0]).toMatchObject({ kind: 'failure', condition: 'not-authorized', username: 'juliet' });
  });

  it('"p=" on a non-PLUS mechanism -> failure', async () => {
    const { steps } = await runClient('SCRAM-SHA-1', { gs2: 'p=tls-exporter,,', cbData: CB['tls-exporter'] });
    expectFailure(steps[0], 'malformed-request');
  });

  it('"n" on a -PLUS mechanism -> failure', async () => {
    const { steps } = await runClient('SCRAM-SHA-1-PLUS', { gs2: 'n,,' });
    expectFailure(steps[0], 'malformed-request');
  });

  it('a client that only knows tls-unique (stanza, like Python-based clients) logs in with -PLUS', async () => {
    const ok = await runStanza('SCRAM-SHA-1-PLUS', { username: 'juliet', password: PASSWORD, tlsUnique: CB['tls-unique'] });
    expect(ok.steps[1]).toMatchObject({ kind: 'success', username: 'juliet' });
    expect(ok.authenticated).toBe(true);
    // Its tls-unique value must be the connection's: a different one fails, and is not a wrong password.
    const bad = await runStanza('SCRAM-SHA-256-PLUS', { username: 'juliet', password: PASSWORD, tlsUnique: randomBytes(12) });
    expect(bad.steps[1]).toMatchObject({ kind: 'failure', condition: 'not-authorized', text: 'channel-bindings-dont-match' });
    expect(bad.steps[1]).not.toHaveProperty('wrongCredentials');
  });

  it('unsupported channel-binding type -> failure', async () => {
    // A type Parley does not know at all: a clear failure, not counted as a wrong password.
    const { steps } = await runClient('SCRAM-SHA-1-PLUS', { gs2: 'p=tls-future,,', cbData: randomBytes(12) });
    expect(steps).toHaveLength(1);
    expect(steps[0]).toMatchObject({ kind: 'failure', condition: 'not-authorized', text: 'unsupported-channel-binding-type' });
    expect(steps[0]).not.toHaveProperty('wrongCredentials');
    // A known type the transport does not offer on this stream.
    const ctx = makeCtx({ channelBindingTypes: ['tls-server-end-point'] });
    const r = await runClient('SCRAM-SHA-256-PLUS', { gs2: 'p=tls-exporter,,', cbData: CB['tls-exporter'] }, ctx);
    expectFailure(r.steps[0], 'not-authorized');
    // Offered, but no data available.
    const ctx2 = makeCtx({ channelBinding: () => null });
    const r2 = await runClient('SCRAM-SHA-256-PLUS', { gs2: 'p=tls-exporter,,', cbData: CB['tls-exporter'] }, ctx2);
    expectFailure(r2.steps[0], 'not-authorized');
  });

  it('nonce mismatch -> not-authorized', async () => {
    const { steps } = await runClient('SCRAM-SHA-1', { nonceOverride: (n) => `${n}x` });
    expectFailure(steps[1], 'not-authorized');
    const r = await runClient('SCRAM-SHA-256', { nonceOverride: (n) => n.slice(0, -1) });
    expectFailure(r.steps[1], 'not-authorized');
  });

  it('tampered proof -> not-authorized; wrong-length proof -> malformed-request', async () => {
    const { steps } = await runClient('SCRAM-SHA-256', {
      proofOverride: (p) => {
        const q = Buffer.from(p);
        q[0] = q[0] ^ 1;
        return q;
      },
    });
    expect(steps[1]).toMatchObject({ kind: 'failure', condition: 'not-authorized', username: 'juliet' });
    const r = await runClient('SCRAM-SHA-256', { proofOverride: (p) => p.subarray(0, 20) });
    expectFailure(r.steps[1], 'malformed-request');
  });

  it('malformed client-first -> malformed-request', async () => {
    const bad = [
      'n,,r=abcdef', // missing n=
      'n,,n=ju=2Xliet,r=abcdef', // bad escape
      'n,,n=ju=liet,r=abcdef', // bare "="
      'n,,m=ext,n=juliet,r=abcdef', // mandatory extension
      'n,,n=juliet,r=abcdef,m=ext',
      'n,,n=juliet', // missing nonce
      'n,,n=juliet,r=', // empty nonce
      'n,,n=,r=abcdef', // empty username
      'x,,n=juliet,r=abcdef', // bad cbind flag
      'n,n=juliet,r=abcdef', // gs2 header missing authzid slot
      'n,,n=juliet,r=abc,1bad', // not an attr=value extension
      'p=tls exporter,,n=juliet,r=abcdef', // bad cb-name
      'n,b=x,n=juliet,r=abcdef', // not a=
      'n,,n=jul\u0000iet,r=abcdef', // NUL
      '', // (second empty message after the first)
    ];
    for (const m of bad) {
      const session = scramMechanism('SCRAM-SHA-1').start(makeCtx());
      if (m === '') await session.step(Buffer.alloc(0));
      const res = await session.step(b(m));
      expect(res, m).toMatchObject({ kind: 'failure', condition: 'malformed-request' });
    }
    const s = scramMechanism('SCRAM-SHA-1').start(makeCtx());
    expectFailure(await s.step(Buffer.from([0x6e, 0x2c, 0x2c, 0xff, 0xfe])), 'malformed-request'); // not UTF-8
  });

  it('malformed client-final -> malformed-request', async () => {
    for (const m of ['r=x,p=AAAA', 'c=biws,p=AAAA', 'c=biws,r=x', 'c=biws,r=x,p=AAAA,z=1', 'c=biws,r=x,p=@@@@']) {
      const session = scramMechanism('SCRAM-SHA-1').start(makeCtx());
      expectChallenge(await session.step(b('n,,n=juliet,r=abc')));
      const res = await session.step(b(m.replace('r=x', 'r=abc')));
      expect(res, m).toMatchObject({ kind: 'failure', condition: 'malformed-request', username: 'juliet' });
    }
  });

  it('authzid other than the user itself -> invalid-authzid', async () => {
    const { steps } = await runClient('SCRAM-SHA-1', { gs2: 'n,a=romeo@example.com,' });
    expect(steps[0]).toMatchObject({ kind: 'failure', condition: 'invalid-authzid', username: 'juliet' });
    const r = await runClient('SCRAM-SHA-1', { gs2: 'n,a=juliet@other.example,' });
    expectFailure(r.steps[0], 'invalid-authzid');
    const r2 = await runClient('SCRAM-SHA-1', { gs2: 'n,a=juliet@example.com/balcony,' });
    expectFailure(r2.steps[0], 'invalid-authzid');
  });

  it('authzid equal to the username or its bare JID is accepted', async () => {
    for (const authzid of ['juliet', 'juliet@example.com', 'Juliet@Example.com']) {
      const { steps, authenticated } = await runStanza('SCRAM-SHA-256', { username: 'juliet', password: PASSWORD, authzid });
      expect(steps[1], authzid).toMatchObject({ kind: 'success', username: 'juliet' });
      expect(authenticated).toBe(true);
    }
    const r = await runClient('SCRAM-SHA-256-PLUS', { gs2: 'p=tls-exporter,a=juliet@example.com,', cbData: CB['tls-exporter'] });
    expect(r.steps[1].kind).toBe('success');
  });

  it('any message after success or failure -> malformed-request', async () => {
    const session = scramMechanism('SCRAM-SHA-1').start(makeCtx());
    const client = new TestClient('SHA-1');
    const sf = expectChallenge(await session.step(client.first()));
    expect((await session.step(client.final(sf))).kind).toBe('success');
    expect(await session.step(Buffer.alloc(0))).toMatchObject({ kind: 'failure', condition: 'malformed-request' });
    expect(await session.step(client.first())).toMatchObject({ kind: 'failure', condition: 'malformed-request' });

    const failed = scramMechanism('SCRAM-SHA-1').start(makeCtx());
    expectFailure(await failed.step(b('garbage')), 'malformed-request');
    expectFailure(await failed.step(client.first()), 'malformed-request');
  });

  it('account lookup error -> temporary-auth-failure', async () => {
    const ctx = makeCtx({ getScram: async () => Promise.reject(new Error('db down')) });
    const { steps } = await runClient('SCRAM-SHA-1', {}, ctx);
    expect(steps[0]).toMatchObject({ kind: 'failure', condition: 'temporary-auth-failure', username: 'juliet' });
  });
});

describe('mechanism list', () => {
  it('is in server preference order, -PLUS only with channel binding', () => {
    const mechs = saslMechanisms();
    expect(mechs.map((m) => m.name)).toEqual([
      'SCRAM-SHA-256-PLUS',
      'SCRAM-SHA-1-PLUS',
      'SCRAM-SHA-256',
      'SCRAM-SHA-1',
      'PLAIN',
    ]);
    const opts = { allowPlainWithoutTls: false };
    const names = (ctx: Pick<SaslContext, 'secure' | 'channelBindingTypes'>) =>
      mechs.filter((m) => m.available(ctx, opts)).map((m) => m.name);
    expect(names({ secure: true, channelBindingTypes: ['tls-exporter'] })).toEqual([
      'SCRAM-SHA-256-PLUS',
      'SCRAM-SHA-1-PLUS',
      'SCRAM-SHA-256',
      'SCRAM-SHA-1',
      'PLAIN',
    ]);
    expect(names({ secure: true, channelBindingTypes: [] })).toEqual(['SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN']);
    expect(names({ secure: false, channelBindingTypes: [] })).toEqual(['SCRAM-SHA-256', 'SCRAM-SHA-1']);
    expect(findMechanism('SCRAM-SHA-1')?.name).toBe('SCRAM-SHA-1');
    expect(findMechanism('scram-sha-1')).toBeNull();
    expect(findMechanism('DIGEST-MD5')).toBeNull();
  });

  it('decodeSaslname', () => {
    expect(decodeSaslname('a=2Cb=3Dc')).toBe('a,b=c');
    expect(decodeSaslname('a=2X')).toBeNull();
    expect(decodeSaslname('a,b')).toBeNull();
  });
});

describe('SCRAM secrets', () => {
  it('derives RFC 5802 keys and verifies passwords (sync and async)', async () => {
    const salt = randomBytes(16);
    const s = deriveScram('pencil', 'SHA-256', 4096, salt);
    expect(s.salt).toBe(salt.toString('base64'));
    expect(s.iterations).toBe(4096);
    expect(Buffer.from(s.storedKey, 'base64')).toHaveLength(32);
    expect(await deriveScramAsync('pencil', 'SHA-256', 4096, salt)).toEqual(s);
    expect(verifyPasswordAgainstScram('pencil', s, 'SHA-256')).toBe(true);
    expect(verifyPasswordAgainstScram('pencil2', s, 'SHA-256')).toBe(false);
    expect(await verifyPasswordAgainstScramAsync('pencil', s, 'SHA-256')).toBe(true);
    expect(await verifyPasswordAgainstScramAsync('Pencil', s, 'SHA-256')).toBe(false);
    // A secret of the wrong hash is rejected, not crashed on.
    expect(verifyPasswordAgainstScram('pencil', s, 'SHA-1')).toBe(false);
  });

  it('SASLpreps the password', () => {
    const s = deriveScram('I\u00ADX', 'SHA-1', 4096); // soft hyphen is mapped to nothing
    expect(verifyPasswordAgainstScram('IX', s, 'SHA-1')).toBe(true);
    expect(verifyPasswordAgainstScram('\u2168', s, 'SHA-1')).toBe(true); // NFKC: Roman numeral nine
    expect(() => deriveScram('a\u0007b', 'SHA-1')).toThrow(); // prohibited control character
    expect(() => deriveScram('', 'SHA-1')).toThrow();
    expect(verifyPasswordAgainstScram('a\u0007b', s, 'SHA-1')).toBe(false);
  });

  it('derives all hashes with distinct salts and configurable iterations', async () => {
    const all = deriveAllScram('pw', 5000);
    expect(all['SHA-1'].iterations).toBe(5000);
    expect(all['SHA-256'].iterations).toBe(5000);
    expect(all['SHA-1'].salt).not.toBe(all['SHA-256'].salt);
    expect(Buffer.from(all['SHA-1'].salt, 'base64')).toHaveLength(16);
    const dflt = await deriveAllScramAsync('pw');
    expect(dflt['SHA-1'].iterations).toBe(4096);
    expect(dflt['SHA-256'].iterations).toBe(4096);
    expect(await verifyPasswordAgainstScramAsync('pw', dflt['SHA-1'], 'SHA-1')).toBe(true);
    expect(JSON.stringify(dflt)).not.toContain('pw"');
  });
});
