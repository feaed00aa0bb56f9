// `parley user remove` and news channels (XEP-0060 service at news.<host>): the CLI runs in its own
// process, without modules, so no account.removed hook fires; storage's account removal itself takes
// the account's subscriptions (bare and full JID) and affiliations out of every channel, whether
// the server is running on the same data directory or stopped. The removed user's channels stay,
// ownerless: neither other users nor someone registering the same JID again may manage them.
import { rmSync } from 'node:fs';
import type { Element } from 'ltx';
import { afterAll, describe, expect, it } from 'vitest';
import { connect, iqError, type TestClient, xml } from '../helpers/client.js';
import { runCli, startServerProcess, tempConfig, waitExit, type ServerProcess } from '../helpers/process.js';

process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

const PUBSUB = 'http://jabber.org/protocol/pubsub';
const OWNER = 'http://jabber.org/protocol/pubsub#owner';
const SERVICE = 'news.localhost';

const ps = (type: 'get' | 'set', ...children: Element[]) => xml('iq', { type, to: SERVICE }, xml('pubsub', { xmlns: PUBSUB }, ...children));
const own = (type: 'get' | 'set', ...children: Element[]) => xml('iq', { type, to: SERVICE }, xml('pubsub', { xmlns: OWNER }, ...children));
const subscribeIq = (node: string, jid: string) => ps('set', xml('subscribe', { node, jid }));

/** §8.8.1 subscriptions and §8.9.1 affiliations of a channel, as seen by one of its owners. */
async function members(owner: TestClient, node: string): Promise<{ subscriptions: string[]; affiliations: Record<string, string> }> {
  const subs = await owner.iq(own('get', xml('subscriptions', { node })));
  const affs = await owner.iq(own('get', xml('affiliations', { node })));
  return {
    subscriptions: (subs.getChild('pubsub')?.getChild('subscriptions')?.getChildren('subscription') ?? []).map((s) => String(s.attrs.jid)).sort(),
    affiliations: Object.fromEntries((affs.getChild('pubsub')?.getChild('affiliations')?.getChildren('affiliation') ?? []).map((a) => [String(a.attrs.jid), String(a.attrs.affiliation)])),
  };
}

describe('parley user remove and news channels', () => {
  // No muxes: one process to stop.
  const { dir, config } = tempConfig('mux:\n  count: 0\n');
  let server: ServerProcess | undefined;
  const clients: TestClient[] = [];
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop().catch(() => {})));
    if (server) {
      server.child.kill('SIGTERM');
      await waitExit(server.child);
    }
    rmSync(dir, { recursive: true, force: true });
  });

  const cli = (...args: string[]) => runCli(['--config', config, ...args]);
  async function login(local: string, resource?: string): Promise<TestClient> {
    if (!server) throw new Error('no server');
    const c = await connect({ port: server.c2sPort, username: local, resource });
    clients.push(c);
    return c;
  }
  async function start(): Promise<void> {
    server = await startServerProcess(config);
  }
  async function stop(): Promise<void> {
    await Promise.all(clients.splice(0).map((c) => c.stop().catch(() => {})));
    server?.child.kill('SIGTERM');
    if (server) await waitExit(server.child);
    server = undefined;
  }

  it('leaves no subscription or affiliation of the removed user behind, server running or stopped', async () => {
    for (const u of ['alice', 'erin', 'frank']) expect((await cli('user', 'add', `${u}@localhost`, '-p', 'secret-password')).code).toBe(0);
    await start();
    const alice = await login('alice');
    const erin = await login('erin', 'phone');
    const frank = await login('frank');
    await alice.iq(ps('set', xml('create', { node: 'shared' })));
    await erin.iq(subscribeIq('shared', 'erin@localhost'));
    await erin.iq(subscribeIq('shared', 'erin@localhost/phone'));
    await frank.iq(subscribeIq('shared', 'frank@localhost'));
    await alice.iq(own('set', xml('affiliations', { node: 'shared' }, xml('affiliation', { jid: 'erin@localhost', affiliation: 'publisher' }), xml('affiliation', { jid: 'frank@localhost', affiliation: 'member' }))));
    await erin.iq(ps('set', xml('create', { node: 'erin-news' })));
    await frank.iq(ps('set', xml('create', { node: 'frank-news' })));
    await frank.iq(subscribeIq('erin-news', 'frank@localhost'));
    expect(await members(alice, 'shared')).toEqual({
      subscriptions: ['erin@localhost', 'erin@localhost/phone', 'frank@localhost'],
      affiliations: { 'alice@localhost': 'owner', 'erin@localhost': 'publisher', 'frank@localhost': 'member' },
    });

    // Server running: the CLI writes the same SQLite file; the server reads channels from storage.
    expect((await cli('user', 'remove', 'erin@localhost')).stdout).toBe('removed erin@localhost\n');
    expect(await members(alice, 'shared')).toEqual({
      subscriptions: ['frank@localhost'],
      affiliations: { 'alice@localhost': 'owner', 'frank@localhost': 'member' },
    });
    // Erin's channel stays, ownerless, with its subscriber; another user gains no right over it.
    expect((await iqError(alice, own('get', xml('configure', { node: 'erin-news' })))).condition).toBe('forbidden');
    const frankSubs = await frank.iq(ps('get', xml('subscriptions', { node: 'erin-news' })));
    expect(frankSubs.getChild('pubsub')?.getChild('subscriptions')?.getChildren('subscription').map((s) => s.attrs.subscription)).toEqual(['subscribed']);

    // Server stopped: remove frank, register erin again, start on the same data directory.
    await stop();
    expect((await cli('user', 'remove', 'frank@localhost')).code).toBe(0);
    expect((await cli('user', 'add', 'erin@localhost', '-p', 'secret-password')).code).toBe(0);
    await start();
    const alice2 = await login('alice');
    expect(await members(alice2, 'shared')).toEqual({ subscriptions: [], affiliations: { 'alice@localhost': 'owner' } });
    const erin2 = await login('erin');
    // The JID registered again is not the owner of the channel its earlier holder created.
    expect((await iqError(erin2, own('get', xml('configure', { node: 'erin-news' })))).condition).toBe('forbidden');
    expect((await iqError(alice2, own('get', xml('configure', { node: 'frank-news' })))).condition).toBe('forbidden');
    const mine = await erin2.iq(ps('get', xml('affiliations')));
    expect(mine.getChild('pubsub')?.getChild('affiliations')?.getChildren('affiliation')).toEqual([]);
  }, 90_000);
});
