// XEP-0313 paging over a few thousand archived messages, through a real client, on SQLite and on
// PostgreSQL: every page forward (RSM <after/>) and backward (<before/>, starting from the empty one
// = last page) is walked, and nothing is missing, duplicated or out of order. The messages are put
// in through the archive store (fast); a few more through the server check both kinds mix.
// Direct project only (vitest.config.ts): too slow to repeat through the multiplexors.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, xml } from '../helpers/client.js';
import { mamQuery } from '../helpers/mam.js';
import { startPostgres, type PostgresServer } from '../helpers/postgres.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const N = 3000;

function pagingSuite(name: string, start: () => Promise<TestServer>): void {
  describe(`MAM paging over ${N} messages: ${name}`, () => {
    let srv: TestServer;
    beforeAll(async () => {
      srv = await start();
    }, 60_000);
    afterAll(async () => {
      await srv?.close();
    });

    it('walks every page in both directions', async () => {
      const a = uniqueUser('pa');
      const b = uniqueUser('pb');
      const aj = await srv.addUser(a);
      const bj = await srv.addUser(b);
      const expected: string[] = [];
      const t0 = Date.now() - N * 1000;
      for (let i = 0; i < N; i++) {
        const body = `bulk ${i}`;
        expected.push(body);
        await srv.storage.archive.append(bj, {
          id: `bulk-${i}`,
          withBare: aj,
          withFull: `${aj}/r`,
          direction: 'in',
          stamp: t0 + i * 1000,
          stanza: `<message xmlns="jabber:client" type="chat" from="${aj}/r" to="${bj}"><body>${body}</body></message>`,
          body,
        });
      }
      const port = srv.ports.c2s as number;
      const alice = await connect({ port, username: a });
      const bob = await connect({ port, username: b });
      try {
        await bob.send(xml('presence'));
        for (let i = 0; i < 5; i++) {
          await alice.send(xml('message', { to: bj, type: 'chat' }, xml('body', {}, `live ${i}`)));
          expected.push(`live ${i}`);
        }
        await bob.waitFor((el) => el.getChildText('body') === 'live 4');
        const total = N + 5;

        const forward: string[] = [];
        const seenIds = new Set<string>();
        let after: string | undefined;
        for (let pages = 0; ; pages++) {
          expect(pages).toBeLessThan(50);
          const p = await mamQuery(bob, { rsm: { max: 250, ...(after ? { after } : {}) } });
          expect(p.count).toBe(total);
          expect(p.firstIndex).toBe(forward.length);
          for (const id of p.ids) seenIds.add(id);
          forward.push(...(p.bodies as string[]));
          bob.received.length = 0; // keep the client's buffer small
          if (p.complete) break;
          after = p.last;
        }
        expect(forward).toEqual(expected);
        expect(seenIds.size).toBe(total);

        const backward: string[] = [];
        let before = '';
        for (let pages = 0; ; pages++) {
          expect(pages).toBeLessThan(50);
          const p = await mamQuery(bob, { rsm: { max: 250, before } });
          expect(p.firstIndex).toBe(total - backward.length - p.results.length);
          backward.unshift(...(p.bodies as string[]));
          bob.received.length = 0;
          if (p.complete) break;
          before = p.first!;
        }
        expect(backward).toEqual(expected);
      } finally {
        await alice.stop();
        await bob.stop();
      }
    }, 120_000);
  });
}

pagingSuite('sqlite', () => startTestServer());

let pg: PostgresServer | undefined;
afterAll(async () => {
  await pg?.stop();
});
pagingSuite('postgres', async () => {
  pg = await startPostgres();
  return startTestServer({ storage: { type: 'postgres', url: pg.url } });
});
