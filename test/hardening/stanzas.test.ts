// HARDENING.md "XML and streams": stanzas before authentication, `from` spoofing and stamping,
// missing `to`, and client-forged stanza-id / occupant-id / delay.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { RawClient, NS_SASL, assertServing, elementWith, iqReplyPattern, barrier, plainAuth } from '../helpers/raw.js';

const STAMP = '2002-09-10T23:08:25Z';

describe('hardening: stanza addressing and forged server elements', () => {
  let srv: TestServer;
  let port: number;
  let alice: RawClient;
  let bob: RawClient;

  beforeAll(async () => {
    srv = await startTestServer();
    port = srv.ports.c2s as number;
    for (const u of ['alice', 'bob', 'mallory', 'carol']) await srv.addUser(u);
    alice = await RawClient.login(port, 'alice', 'secret-password', { resource: 'canary', presence: true });
    bob = await RawClient.login(port, 'bob', 'secret-password', { resource: 'canary', presence: true });
  });
  afterAll(async () => {
    alice?.destroy();
    bob?.destroy();
    await srv?.close();
  });
  afterEach(async () => {
    await assertServing(alice, bob);
  });

  async function expectNotDelivered(marker: string): Promise<void> {
    await assertServing(alice, bob);
    expect(bob.text).not.toContain(marker);
  }

  /** Mallory logged in and bound (optionally available). */
  async function mallory(presence = false): Promise<RawClient> {
    const c = await RawClient.login(port, 'mallory', 'secret-password', { presence });
    c.cursor = c.mark();
    return c;
  }

  const STANZAS: [string, (m: string) => string][] = [
    ['message', (m) => `<message to='bob@localhost' type='chat'><body>${m}</body></message>`],
    ['presence', (m) => `<presence to='bob@localhost/canary'><status>${m}</status></presence>`],
    ['iq', (m) => `<iq type='get' to='localhost' id='${m}'><ping xmlns='urn:xmpp:ping'/></iq>`],
    ['iq to a user', (m) => `<iq type='set' to='bob@localhost/canary' id='${m}'><query xmlns='urn:example:${m}'/></iq>`],
  ];

  describe('before authentication', () => {
    for (const [kind, make] of STANZAS) {
      it(`${kind} after STARTTLS, before SASL -> not-authorized`, async () => {
        const marker = `pre-tls-${kind.replace(/\W/g, '')}`;
        const c = await RawClient.connect(port);
        await c.openStream();
        await c.startTls();
        await c.openStream();
        await c.send(make(marker));
        expect(await c.expectStreamErrorAndClose()).toBe('not-authorized');
        expect(c.text).not.toMatch(/<iq\b[^>]*type=['"]result/);
        await expectNotDelivered(marker);
      });

      // With TLS required, anything but <starttls/> before TLS is refused. RFC 6120 §5.3.1 asks
      // for <policy-violation/> when a client skips mandatory STARTTLS; that is what Parley sends.
      it(`${kind} before STARTTLS (TLS required) -> policy-violation`, async () => {
        const marker = `pre-starttls-${kind.replace(/\W/g, '')}`;
        const c = await RawClient.connect(port);
        await c.openStream();
        await c.send(make(marker));
        expect(await c.expectStreamErrorAndClose()).toBe('policy-violation');
        await expectNotDelivered(marker);
      });

      it(`${kind} after SASL success, before resource binding -> not-authorized`, async () => {
        const marker = `pre-bind-${kind.replace(/\W/g, '')}`;
        const c = await RawClient.connect(port);
        await c.openStream();
        await c.startTls();
        await c.openStream();
        expect(await c.authPlain('mallory', 'secret-password')).toBe(true);
        await c.openStream();
        await c.send(make(marker));
        expect(await c.expectStreamErrorAndClose()).toBe('not-authorized');
        expect(c.text).not.toMatch(/<iq\b[^>]*type=['"]result/);
        await expectNotDelivered(marker);
      });
    }

    it('a stanza pipelined right behind <auth/> (before <success/> and the restart) is not processed', async () => {
      const c = await RawClient.connect(port);
      await c.openStream();
      await c.startTls();
      await c.openStream();
      await c.send(`${plainAuth('mallory', 'secret-password')}<message to='bob@localhost' type='chat'><body>m-pipelined</body></message>`);
      // The stanza arrives before authentication completed: refused with not-authorized (or, had it
      // been parsed after <success/>, discarded by the stream restart). Never routed.
      await c.waitFor(/<success\b|<\/stream:error>/);
      if (c.streamError()) {
        // The stream error is the answer to the stanza itself: it went no further.
        expect(c.streamError()).toBe('not-authorized');
      } else {
        // Authenticated: the same session, bound, sends Bob a barrier; had the pipelined message
        // been kept for after the restart, it would reach Bob first.
        await c.openStream();
        expect(await c.bind()).toMatch(/type=["']result["']/);
        await barrier(c, bob);
      }
      await expectNotDelivered('m-pipelined');
      c.destroy();
    });

    it('SASL elements with the wrong namespace are not authentication', async () => {
      const c = await RawClient.connect(port);
      await c.openStream();
      await c.startTls();
      await c.openStream();
      await c.send(plainAuth('mallory', 'secret-password').replace(NS_SASL, 'urn:example:not-sasl'));
      expect(await c.expectStreamErrorAndClose()).toBe('not-authorized');
      expect(c.text).not.toContain('<success');
    });
  });

  describe('from spoofing', () => {
    const SPOOFS = ['bob@localhost', 'bob@localhost/canary', 'alice@localhost/canary', 'localhost', 'mallory@localhost/other-resource', 'mallory@evil.example', 'not a jid@@'];
    for (const from of SPOOFS) {
      it(`message from='${from}' -> invalid-from, not delivered`, async () => {
        const c = await mallory();
        const marker = `m-spoof-${from.replace(/\W/g, '')}`;
        await c.send(`<message from='${from}' to='bob@localhost' type='chat'><body>${marker}</body></message>`);
        expect(await c.expectStreamErrorAndClose()).toBe('invalid-from');
        await expectNotDelivered(marker);
      });
    }

    it('presence with a spoofed from -> invalid-from', async () => {
      const c = await mallory();
      await c.send(`<presence from='alice@localhost/canary' to='bob@localhost/canary'><status>p-spoof</status></presence>`);
      expect(await c.expectStreamErrorAndClose()).toBe('invalid-from');
      await expectNotDelivered('p-spoof');
    });

    it('iq with a spoofed from -> invalid-from, no reply routed to the victim', async () => {
      const c = await mallory();
      const sinceAlice = alice.mark();
      await c.send(`<iq type='get' from='alice@localhost/canary' to='localhost' id='iq-spoof'><ping xmlns='urn:xmpp:ping'/></iq>`);
      expect(await c.expectStreamErrorAndClose()).toBe('invalid-from');
      await assertServing(alice, bob);
      expect(alice.textSince(sinceAlice)).not.toContain('iq-spoof');
    });

    it("the session's bare or full JID as from is accepted; the full JID is stamped", async () => {
      const c = await mallory();
      await c.send(`<message from='mallory@localhost' to='bob@localhost' type='chat'><body>m-bare-from</body></message>`);
      await c.send(`<message from='${c.jid}' to='bob@localhost' type='chat'><body>m-full-from</body></message>`);
      await c.send(`<message to='bob@localhost' type='chat'><body>m-no-from</body></message>`);
      const esc = c.jid.replace(/[.]/g, '\\.');
      for (const marker of ['m-bare-from', 'm-full-from', 'm-no-from']) {
        const m = await bob.waitFor(elementWith('message', marker), 5000, 0);
        expect(m[0]).toMatch(new RegExp(`^<message\\b[^>]*\\bfrom=["']${esc}["']`));
      }
      expect(c.streamError()).toBeUndefined();
      c.destroy();
    });
  });

  describe('missing to', () => {
    it('a message without to goes to the sender\'s own account, stamped from/to', async () => {
      const c = await mallory(true);
      await c.send(`<message type='chat'><body>m-self</body></message>`);
      const m = await c.waitFor(elementWith('message', 'm-self'));
      const tag = /^<message\b[^>]*>/.exec(m[0])?.[0] ?? '';
      expect(tag).toMatch(new RegExp(`from=["']${c.jid.replace(/[.]/g, '\\.')}["']`));
      expect(tag).toMatch(/to=["']mallory@localhost["']/);
      await expectNotDelivered('m-self');
      c.destroy();
    });

    it('an iq without to is answered on behalf of the account (RFC 6120 §10.3.3)', async () => {
      const c = await mallory();
      await c.send(`<iq type='get' id='noto-ping'><ping xmlns='urn:xmpp:ping'/></iq>`);
      const m = await c.waitFor(iqReplyPattern('noto-ping'));
      expect(m[0]).toMatch(/type=["']result["']/);
      expect(m[0]).toMatch(new RegExp(`to=["']${c.jid.replace(/[.]/g, '\\.')}["']`));
      c.destroy();
    });
  });

  describe('client-forged stanza-id, occupant-id and delay', () => {
    const forged = [
      `<stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='forged-sid-recipient'/>`,
      `<stanza-id xmlns='urn:xmpp:sid:0' by='Bob@LocalHost' id='forged-sid-case'/>`,
      `<stanza-id xmlns='urn:xmpp:sid:0' by='localhost' id='forged-sid-server'/>`,
      `<stanza-id xmlns='urn:xmpp:sid:0' by='localhost.' id='forged-sid-dot'/>`,
      `<stanza-id xmlns='urn:xmpp:sid:0' by='bob@ＬＯＣＡＬＨＯＳＴ' id='forged-sid-fullwidth'/>`,
      `<stanza-id xmlns='urn:xmpp:sid:0' by='mallory@localhost' id='forged-sid-sender'/>`,
      `<occupant-id xmlns='urn:xmpp:occupant-id:0' id='forged-occupant'/>`,
      `<delay xmlns='urn:xmpp:delay' from='localhost' stamp='${STAMP}'>forged-delay-server</delay>`,
      `<delay xmlns='urn:xmpp:delay' from='bob@localhost' stamp='${STAMP}'>forged-delay-user</delay>`,
    ];
    const kept = [
      `<stanza-id xmlns='urn:xmpp:sid:0' by='remote.example' id='kept-sid-remote'/>`,
      `<delay xmlns='urn:xmpp:delay' from='remote.example' stamp='${STAMP}'>kept-delay-remote</delay>`,
      `<x xmlns='urn:example:other'><stanza-id xmlns='urn:xmpp:sid:0' by='localhost' id='kept-nested'/></x>`,
    ];

    it('are stripped from a delivered message; foreign ones are kept', async () => {
      const c = await mallory();
      await c.send(`<message to='bob@localhost' type='chat'><body>m-forged</body>${forged.join('')}${kept.join('')}</message>`);
      const m = (await bob.waitFor(elementWith('message', 'm-forged'), 5000, 0))[0];
      expect(m).not.toContain('forged-');
      expect(m).not.toContain('occupant-id');
      for (const k of ['kept-sid-remote', 'kept-delay-remote', 'kept-nested']) expect(m).toContain(k);
      c.destroy();
    });

    it('are stripped from directed presence', async () => {
      const c = await mallory();
      await c.send(`<presence to='bob@localhost/canary'><status>p-forged</status>${forged.join('')}</presence>`);
      const m = (await bob.waitFor(elementWith('presence', 'p-forged'), 5000, 0))[0];
      expect(m).not.toContain('forged-');
      expect(m).not.toContain('occupant-id');
      c.destroy();
    });

    it('offline delivery: the forged delay is stripped, then the server adds its own', async () => {
      const c = await mallory();
      const before = Date.now();
      await c.send(`<message to='carol@localhost' type='chat'><body>m-offline-forged</body>${forged.join('')}</message>`);
      await c.ping(); // the message is stored before the next stanza is answered
      c.destroy();
      const carol = await RawClient.login(port, 'carol', 'secret-password', { presence: true });
      const m = (await carol.waitFor(elementWith('message', 'm-offline-forged')))[0];
      expect(m).not.toContain('forged-');
      expect(m).not.toContain(STAMP);
      const delays = m.match(/<delay\b[^>]*>/g) ?? [];
      expect(delays).toHaveLength(1);
      expect(delays[0]).toMatch(/from=["']localhost["']/);
      const stamp = /stamp=["']([^"']+)["']/.exec(delays[0] as string)?.[1] as string;
      // The server's own stamp: when it stored the message (to the second), not the forged one.
      expect(Date.parse(stamp)).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000);
      expect(Date.parse(stamp)).toBeLessThanOrEqual(Date.now());
      carol.destroy();
    });
  });
});
