// HARDENING.md "Connections and rates": a peer that stops reading meets a bounded output buffer and
// is disconnected; the sender and everybody else are unaffected.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { RawClient, assertServing, waitUntil } from '../helpers/raw.js';

const OUTPUT_BUFFER = 16_384; // the configurable minimum

describe('hardening: peer that stops reading', () => {
  let srv: TestServer;
  let port: number;
  let alice: RawClient;
  let bob: RawClient;

  beforeAll(async () => {
    srv = await startTestServer({
      limits: {
        outputBufferBytes: OUTPUT_BUFFER,
        // The sender must not be the one throttled here.
        bytesPerSecond: 256 * 1024 * 1024,
        burstBytes: 256 * 1024 * 1024,
        stanzasPerSecond: 100_000,
        burstStanzas: 100_000,
      },
    });
    port = srv.ports.c2s as number;
    for (const u of ['alice', 'bob', 'mallory', 'victim']) await srv.addUser(u);
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

  let lastSent = '';

  /** Sends `count` messages of ~size bytes from `sender` to `to`, one per round trip (the server never has more than one in flight). */
  async function sendInStep(sender: RawClient, to: string, size: number, stop: () => boolean, maxBytes: number): Promise<number> {
    const body = 'y'.repeat(size);
    let sent = 0;
    for (let i = 0; !stop() && sent < maxBytes; i++) {
      const m = `<message to='${to}' type='chat' id='big${i}'><body>${body}</body></message>`;
      await sender.send(m);
      lastSent = m.slice(0, 80);
      sent += m.length;
      await sender.ping(10_000);
    }
    return sent;
  }

  it('a client that reads keeps receiving messages just below the cap (control)', async () => {
    const sender = await RawClient.login(port, 'mallory', 'secret-password', { resource: 'control' });
    let n = 0;
    const sent = await sendInStep(sender, bob.jid, 12_000, () => ++n > 60, Number.POSITIVE_INFINITY);
    await bob.waitFor(/id=["']big59["']/, 10_000, 0);
    expect(sent).toBeGreaterThan(60 * 12_000);
    expect(bob.isClosed).toBe(false);
    expect(srv.server.sessions.count('bob@localhost')).toBe(1);
    sender.destroy();
  });

  it('a single stanza larger than the cap still reaches a client that reads', async () => {
    const sender = await RawClient.login(port, 'mallory', 'secret-password', { resource: 'large' });
    await sender.send(`<message to='${bob.jid}' type='chat' id='huge1'><body>${'z'.repeat(100_000)}</body></message>`);
    await sender.ping(10_000);
    await bob.waitFor(/id=["']huge1["']/, 10_000, 0);
    expect(bob.isClosed).toBe(false);
    expect(srv.server.sessions.count('bob@localhost')).toBe(1);
    sender.destroy();
  });

  it('a client that never reads is disconnected once its output buffer passes the cap', async () => {
    const victim = await RawClient.login(port, 'victim', 'secret-password', { resource: 'slow', presence: true });
    const sender = await RawClient.login(port, 'mallory', 'secret-password', { resource: 'sender' });
    await waitUntil(() => srv.server.sessions.available('victim@localhost').length === 1, 5000, 'victim available');
    victim.pauseReading();
    const LIMIT = 64 * 1024 * 1024; // far beyond any kernel socket buffering
    const sent = await sendInStep(sender, victim.jid, 12_000, () => srv.server.sessions.count('victim@localhost') === 0, LIMIT);
    // Disconnected long before everything sent was buffered for it: the server's memory for this
    // client is bounded by the cap (plus what the kernel socket buffers hold).
    expect(srv.server.sessions.count('victim@localhost')).toBe(0);
    expect(sent).toBeLessThan(LIMIT);
    // The sender is unaffected.
    await sender.ping();
    expect(sender.streamError()).toBeUndefined();
    expect(sender.isClosed).toBe(false);
    // Once the victim reads again it only finds what the kernel had buffered, then the close.
    // (Counted in messages: the server adds to each one, e.g. its archive's stanza-id.)
    victim.resumeReading();
    await victim.closed(20_000);
    const received = victim.text.match(/<\/message>/g)?.length ?? 0;
    const sentMessages = Number(/id='big(\d+)'/.exec(lastSent)?.[1] ?? 0) + 1;
    expect(received).toBeLessThan(sentMessages);
    sender.destroy();
  });
});
