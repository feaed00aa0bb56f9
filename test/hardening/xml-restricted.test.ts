// HARDENING.md "XML and streams": restricted XML (RFC 6120 §11.1) and XML declarations.
// Real bytes over a real socket; after each attack, other sessions must keep working.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { TestServer } from '../helpers/server.js';
import { RawClient, assertServing, startAttackServer, stopAttackServer, streamHeader } from '../helpers/raw.js';

const HEADER = streamHeader('localhost', { xmlDecl: false });

describe('hardening: restricted XML and XML declarations', () => {
  let srv: TestServer;
  let port: number;
  let alice: RawClient;
  let bob: RawClient;

  beforeAll(async () => {
    ({ srv, port, alice, bob } = await startAttackServer());
  });
  afterAll(() => stopAttackServer({ srv, alice, bob }));
  // Every attack below must leave the other sessions working.
  afterEach(async () => {
    await assertServing(alice, bob);
  });

  /** A fresh unauthenticated connection that sends `bytes` first. */
  async function preauth(bytes: string | Buffer): Promise<RawClient> {
    const c = await RawClient.connect(port);
    await c.send(bytes);
    return c;
  }

  /** Mallory logs in, then sends `bytes` on her bound stream. */
  async function postauth(bytes: string | Buffer): Promise<RawClient> {
    const c = await RawClient.login(port, 'mallory', 'secret-password');
    c.cursor = c.mark();
    await c.send(bytes);
    return c;
  }

  /** Bob must not have received anything carrying `marker` (checked after a later message got through). */
  async function expectNotDelivered(marker: string): Promise<void> {
    await assertServing(alice, bob);
    expect(bob.text).not.toContain(marker);
  }

  describe('in the prolog (before the stream header)', () => {
    it('DOCTYPE -> restricted-xml', async () => {
      const c = await preauth(`<?xml version='1.0'?><!DOCTYPE stream:stream>${HEADER}`);
      expect(await c.expectStreamErrorAndClose()).toBe('restricted-xml');
      expect(c.text).not.toContain('<stream:features');
    });

    it('DOCTYPE with an internal subset declaring an entity -> restricted-xml, nothing expanded', async () => {
      const c = await preauth(`<?xml version='1.0'?><!DOCTYPE stream:stream [<!ENTITY custom "EXPANDED-ENTITY">]>${HEADER}<message>&custom;</message>`);
      expect(await c.expectStreamErrorAndClose()).toBe('restricted-xml');
      expect(c.text).not.toContain('EXPANDED-ENTITY');
    });

    it('billion laughs -> restricted-xml, nothing expanded', async () => {
      let decl = '<!ENTITY lol0 "lol">';
      for (let i = 1; i < 10; i++) decl += `<!ENTITY lol${i} "${`&lol${i - 1};`.repeat(10)}">`;
      const c = await preauth(`<?xml version='1.0'?><!DOCTYPE lolz [${decl}]>${HEADER}<message>&lol9;</message>`);
      // Refused at the DOCTYPE, before any entity is read (how long that takes: bench/limits.ts);
      // afterEach shows the server still serves the others.
      expect(await c.expectStreamErrorAndClose()).toBe('restricted-xml');
      expect(c.text).not.toContain('lollol');
    });

    it('bare entity declaration -> restricted-xml', async () => {
      const c = await preauth(`<?xml version='1.0'?><!ENTITY custom "EXPANDED-ENTITY">${HEADER}`);
      expect(await c.expectStreamErrorAndClose()).toBe('restricted-xml');
    });

    it('processing instruction -> restricted-xml', async () => {
      const c = await preauth(`<?xml version='1.0'?><?xml-stylesheet href='evil.xsl'?>${HEADER}`);
      expect(await c.expectStreamErrorAndClose()).toBe('restricted-xml');
    });

    it('comment -> restricted-xml', async () => {
      const c = await preauth(`<?xml version='1.0'?><!-- hello -->${HEADER}`);
      expect(await c.expectStreamErrorAndClose()).toBe('restricted-xml');
    });

    it('comment between stanzas before authentication -> restricted-xml', async () => {
      const c = await preauth(`${HEADER}<!-- hello -->`);
      expect(await c.expectStreamErrorAndClose()).toBe('restricted-xml');
    });
  });

  describe('XML declaration', () => {
    // RFC 6120 §11.1 / §4.9.3.25-22: only XML 1.0 in UTF-8.
    it("version='1.1' -> unsupported-version", async () => {
      const c = await preauth(`<?xml version='1.1'?>${HEADER}`);
      expect(await c.expectStreamErrorAndClose()).toBe('unsupported-version');
      expect(c.text).not.toContain('<stream:features');
    });

    it("encoding='ISO-8859-1' -> unsupported-encoding", async () => {
      const c = await preauth(`<?xml version='1.0' encoding='ISO-8859-1'?>${HEADER}`);
      expect(await c.expectStreamErrorAndClose()).toBe('unsupported-encoding');
      expect(c.text).not.toContain('<stream:features');
    });

    it("encoding='UTF-16' -> unsupported-encoding", async () => {
      const c = await preauth(`<?xml version='1.0' encoding='UTF-16'?>${HEADER}`);
      expect(await c.expectStreamErrorAndClose()).toBe('unsupported-encoding');
    });

    it("encoding='utf-8' (any case) is accepted", async () => {
      const c = await preauth(`<?xml version='1.0' encoding='utf-8'?>${HEADER}`);
      await c.waitFor(/<stream:features/);
      expect(c.streamError()).toBeUndefined();
      c.destroy();
    });

    it('a second XML declaration before authentication -> SE, no new stream', async () => {
      const c = await preauth(`<?xml version='1.0'?>${HEADER}`);
      await c.waitFor(/<\/stream:features>/);
      const since = c.mark();
      await c.send(`<?xml version='1.0'?>${HEADER}`);
      expect(await c.expectStreamErrorAndClose()).toBe('restricted-xml');
      expect(c.textSince(since)).not.toContain('<stream:features');
    });
  });

  describe('inside an authenticated stream', () => {
    it('comment inside a stanza -> restricted-xml, stanza not delivered', async () => {
      const c = await postauth(`<message to='bob@localhost' type='chat'><body>m-comment<!-- x --></body></message>`);
      expect(await c.expectStreamErrorAndClose()).toBe('restricted-xml');
      await expectNotDelivered('m-comment');
    });

    it('processing instruction inside a stanza -> restricted-xml, not delivered', async () => {
      const c = await postauth(`<message to='bob@localhost' type='chat'><body>m-pi<?php evil() ?></body></message>`);
      expect(await c.expectStreamErrorAndClose()).toBe('restricted-xml');
      await expectNotDelivered('m-pi');
    });

    it('DOCTYPE mid-stream -> restricted-xml', async () => {
      const c = await postauth(`<!DOCTYPE message [<!ENTITY custom "EXPANDED-ENTITY">]><message to='bob@localhost'><body>m-doctype &custom;</body></message>`);
      expect(await c.expectStreamErrorAndClose()).toBe('restricted-xml');
      await expectNotDelivered('m-doctype');
      expect(bob.text).not.toContain('EXPANDED-ENTITY');
    });

    it('entity declaration mid-stream -> restricted-xml', async () => {
      const c = await postauth(`<!ENTITY custom "EXPANDED-ENTITY"><message to='bob@localhost'><body>m-entdecl &custom;</body></message>`);
      expect(await c.expectStreamErrorAndClose()).toBe('restricted-xml');
      await expectNotDelivered('m-entdecl');
    });

    it('comment between stanzas -> restricted-xml', async () => {
      const c = await postauth(`<!-- between -->`);
      expect(await c.expectStreamErrorAndClose()).toBe('restricted-xml');
    });

    it('&custom; (undeclared entity reference) -> SE, never expanded or delivered', async () => {
      const c = await postauth(`<message to='bob@localhost' type='chat'><body>m-entref &custom;</body></message>`);
      const cond = await c.expectStreamErrorAndClose();
      // RFC 6120 §11.1: entity references other than the predefined ones are restricted XML;
      // an undeclared one is also simply not well-formed. Either stream error is acceptable.
      expect(['restricted-xml', 'not-well-formed']).toContain(cond);
      await expectNotDelivered('m-entref');
    });

    it('the five predefined entities and character references are still fine', async () => {
      const c = await postauth(`<message to='bob@localhost' type='chat'><body>m-predef &lt;&gt;&amp;&quot;&apos;&#x41;&#66;</body></message>`);
      await bob.waitFor(/m-predef &lt;&gt;&amp;["&]/, 5000, 0);
      expect(c.streamError()).toBeUndefined();
      expect(bob.text).toMatch(/m-predef &lt;&gt;&amp;(?:"|&quot;)(?:'|&apos;)AB/);
      c.destroy();
    });

    it('a second XML declaration mid-stream -> SE, the parser is not reset', async () => {
      const c = await postauth(`<?xml version='1.0'?>${HEADER}`);
      expect(await c.expectStreamErrorAndClose()).toBe('restricted-xml');
      expect(c.textSince(c.cursor)).not.toContain('<stream:features');
      expect(c.textSince(c.cursor)).not.toContain('<stream:stream ');
    });

    it('a second <stream:stream> mid-stream -> SE, the parser is not reset', async () => {
      const c = await postauth(`${HEADER}<message to='bob@localhost'><body>m-restart</body></message>`);
      expect(await c.expectStreamErrorAndClose()).toBe('not-well-formed');
      expect(c.textSince(c.cursor)).not.toContain('<stream:features');
      await expectNotDelivered('m-restart');
    });

    it('a <stream:stream> nested inside a stanza -> SE', async () => {
      const c = await postauth(`<message to='bob@localhost'>${HEADER}<body>m-nested</body></stream:stream></message>`);
      expect(await c.expectStreamErrorAndClose()).toBe('not-well-formed');
      await expectNotDelivered('m-nested');
    });
  });
});
