// Issue 5's "done" scenario with a standard client library (@xmpp/client: stream management with
// resumption is built in; carbons and the archive through their iqs): one user on a phone and a
// laptop talks with a contact; the phone's connection is killed mid-conversation and the library
// resumes by itself; later the phone goes away cleanly and catches up from the archive, and a new
// tablet reads the history. Every device ends up with the same conversation as the archive, with
// nothing lost and nothing twice.
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type TestClient, xml } from '../helpers/client.js';
import { mamQuery } from '../helpers/mam.js';
import { waitUntil } from '../helpers/raw.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const NS_CARBONS = 'urn:xmpp:carbons:2';
const NS_FORWARD = 'urn:xmpp:forward:0';

/** A line of the conversation as a device sees it: "from>to:body" with bare JIDs. */
type Line = string;

const bare = (j: string | undefined) => (j ?? '').split('/')[0] as string;

/** The conversation lines a device has seen: direct messages, carbons (unwrapped) and what it sent itself. */
function seen(c: TestClient, sent: Line[]): Line[] {
  const out: Line[] = [...sent];
  for (const el of c.received) {
    if (el.name !== 'message') continue;
    const carbon = el.getChild('sent', NS_CARBONS) ?? el.getChild('received', NS_CARBONS);
    const m = carbon ? carbon.getChild('forwarded', NS_FORWARD)?.getChild('message') : el;
    const body = m?.getChildText('body');
    if (!m || body === null || body === undefined || el.getChild('result', 'urn:xmpp:mam:2')) continue;
    out.push(`${bare(m.attrs.from)}>${bare(m.attrs.to)}:${body}`);
  }
  return out;
}

/** The archive's view of the conversation, in archive order. */
async function archived(c: TestClient, withJid: string): Promise<Line[]> {
  const lines: Line[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await mamQuery(c, { fields: { with: withJid }, rsm: { max: 5, ...(after ? { after } : {}) } });
    for (const r of page.results) {
      const m = r.getChild('result')?.getChild('forwarded')?.getChild('message') as Element;
      lines.push(`${bare(m.attrs.from)}>${bare(m.attrs.to)}:${m.getChildText('body')}`);
    }
    if (page.complete || !page.last) return lines;
    after = page.last;
  }
}

function sorted(lines: Line[]): Line[] {
  return [...lines].sort();
}

describe('two devices with stream management, carbons and the archive', () => {
  let srv: TestServer;
  let port: number;
  const clients: TestClient[] = [];

  beforeAll(async () => {
    srv = await startTestServer({ log: { level: 'error' } });
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    for (const c of clients) await c.stop();
    await srv?.close();
  });

  it('show the same history after a dropped connection, a resumption, a switch of device and a catch-up', async () => {
    const alice = uniqueUser('alice');
    const bob = uniqueUser('bob');
    const A = await srv.addUser(alice);
    const B = await srv.addUser(bob);
    for (const [u, c] of [[A, B], [B, A]] as const) {
      await srv.storage.roster.setItem(u, { jid: c, subscription: 'both', ask: false, approved: false, groups: [] });
    }
    const login = async (username: string, resource: string) => {
      const c = await connect({ port, username, resource });
      clients.push(c);
      await c.send(xml('presence'));
      return c;
    };
    const phone = await login(alice, 'phone');
    const laptop = await login(alice, 'laptop');
    const desk = await login(bob, 'desk');
    for (const c of [phone, laptop]) await c.iq(xml('iq', { type: 'set' }, xml('enable', { xmlns: NS_CARBONS })));
    const sent = new Map<TestClient, Line[]>([
      [phone, []],
      [laptop, []],
      [desk, []],
    ]);
    const sentIds = new Set<string>();
    const say = async (from: TestClient, to: string, body: string) => {
      const id = `${body}-${Math.random().toString(36).slice(2)}`;
      if (from === phone) sentIds.add(id);
      await from.send(xml('message', { type: 'chat', to, id }, xml('body', {}, body)));
      sent.get(from)?.push(`${bare(from.jid)}>${to}:${body}`);
    };
    const arrived = (c: TestClient, body: string) => c.waitFor((el) => el.name === 'message' && (el.toString().includes(`<body>${body}</body>`)), 8000);

    await say(desk, A, 'b1');
    await arrived(phone, 'b1');
    await say(phone, B, 'p1');
    await arrived(desk, 'p1');
    await say(laptop, B, 'l1');
    await arrived(phone, 'l1'); // sent carbon
    await say(desk, A, 'b2');
    await arrived(laptop, 'b2');
    await arrived(phone, 'b2');

    // The phone's socket dies; @xmpp/client reconnects and resumes the stream on its own.
    const reconnect = (phone.xmpp as unknown as { reconnect: { start(): void; stop(): void; delay: number } }).reconnect;
    const sm = (phone.xmpp as unknown as { streamManagement: { id: string; on(e: 'resumed', f: () => void): void } }).streamManagement;
    expect(sm.id).not.toBe(''); // the library enabled resumption
    const resumed = new Promise<void>((resolve) => sm.on('resumed', resolve));
    reconnect.delay = 300;
    reconnect.start();
    (phone.xmpp.socket as unknown as { socket: { destroy(): void } }).socket.destroy();
    // Meanwhile the conversation goes on.
    await say(desk, A, 'b3');
    await say(laptop, B, 'l2');
    await say(desk, A, 'b4');
    await arrived(laptop, 'b4');
    await resumed;
    reconnect.stop();
    await arrived(phone, 'b4');
    await arrived(phone, 'l2');
    await say(phone, B, 'p2');
    await arrived(desk, 'p2');
    await arrived(laptop, 'p2');

    // The phone leaves cleanly; the laptop goes on alone; the phone comes back and catches up from
    // the archive after the last message it had (its stanza-id, by its own account).
    const lastId = [...phone.received]
      .reverse()
      .map((el) => (el.getChild('sent', NS_CARBONS)?.getChild('forwarded')?.getChild('message') ?? el).getChild('stanza-id', 'urn:xmpp:sid:0'))
      .find((sid) => sid?.attrs.by === A)?.attrs.id;
    expect(lastId).toBeDefined();
    const phoneBefore = seen(phone, sent.get(phone) as Line[]);
    await phone.stop();
    await say(desk, A, 'b5');
    await arrived(laptop, 'b5');
    await say(laptop, B, 'l3');
    await arrived(desk, 'l3');

    const phone2 = await login(alice, 'phone');
    const catchUp = await mamQuery(phone2, { fields: { with: B }, rsm: { after: lastId as string } });
    // Like any client, it recognizes its own messages in the archive by their id.
    const caughtUp = catchUp.results
      .map((r) => r.getChild('result')?.getChild('forwarded')?.getChild('message') as Element)
      .filter((m) => !sentIds.has(m.attrs.id as string))
      .map((m) => `${bare(m.attrs.from)}>${bare(m.attrs.to)}:${m.getChildText('body')}`);

    // A brand-new tablet reads the whole history.
    const tablet = await login(alice, 'tablet');
    const history = await archived(tablet, B);
    const expected = [`${B}>${A}:b1`, `${A}>${B}:p1`, `${A}>${B}:l1`, `${B}>${A}:b2`, `${B}>${A}:b3`, `${A}>${B}:l2`, `${B}>${A}:b4`, `${A}>${B}:p2`, `${B}>${A}:b5`, `${A}>${B}:l3`];
    expect(sorted(history)).toEqual(sorted(expected));
    expect(history).toHaveLength(expected.length); // nothing archived twice
    // The laptop saw everything live; the phone saw everything live (across the resumption, with
    // nothing twice) and the rest from the archive; Bob's archive says the same.
    await waitUntil(() => seen(laptop, sent.get(laptop) as Line[]).length >= expected.length, 5000, 'laptop has all');
    expect(sorted(seen(laptop, sent.get(laptop) as Line[]))).toEqual(sorted(expected));
    expect(sorted(phoneBefore)).toEqual(sorted(expected.slice(0, 8)));
    expect(sorted([...phoneBefore, ...caughtUp])).toEqual(sorted(expected));
    expect(sorted(await archived(desk, A))).toEqual(sorted(expected));
  }, 60_000);
});
