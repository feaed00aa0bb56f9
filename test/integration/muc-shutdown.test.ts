// XEP-0045 §15.6 status 332: when the server stops, every occupant gets its own unavailable
// presence from the room with status 332 (and role none) before its stream is closed.
import type { Element } from 'ltx';
import { expect, it } from 'vitest';
import { connect, type TestClient } from '../helpers/client.js';
import { startTestServer, uniqueUser } from '../helpers/server.js';
import { createInstant, item, join, statusCodes } from '../helpers/muc.js';

it('tells every occupant the service is shutting down (332) before closing the streams', async () => {
  const srv = await startTestServer();
  const clients: TestClient[] = [];
  try {
    const [a, b] = [uniqueUser('shut'), uniqueUser('shut')];
    for (const u of [a, b]) await srv.addUser(u);
    const port = srv.ports.c2s as number;
    const alice = await connect({ port, username: a });
    const bob = await connect({ port, username: b });
    clients.push(alice, bob);
    const room = `shutdown${process.pid}@conference.localhost`;
    await createInstant(alice, room, 'alice');
    await join(bob, `${room}/bob`);
    const gone = (c: TestClient) =>
      new Promise<Element>((resolve) => {
        c.xmpp.on('stanza', (el: Element) => {
          if (el.name === 'presence' && el.attrs.type === 'unavailable' && statusCodes(el).includes('332')) resolve(el);
        });
      });
    const [pa, pb] = [gone(alice), gone(bob)];
    await srv.stop();
    for (const [p, nick] of [
      [await pa, 'alice'],
      [await pb, 'bob'],
    ] as const) {
      expect(p.attrs.from).toBe(`${room}/${nick}`);
      expect(statusCodes(p)).toEqual(expect.arrayContaining(['110', '332']));
      expect(item(p)?.attrs.role).toBe('none');
    }
  } finally {
    await Promise.all(clients.map((c) => c.stop().catch(() => undefined)));
    await srv.close().catch(() => undefined);
  }
});
