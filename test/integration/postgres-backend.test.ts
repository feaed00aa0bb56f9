// The whole server on PostgreSQL storage: accounts, rosters, subscriptions, chat and offline
// delivery work the same as on SQLite (the contract suite covers each store; this covers wiring).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgres, type PostgresServer } from '../helpers/postgres.js';
import { startTestServer, uniqueUser, type TestServer } from '../helpers/server.js';
import { connect, xml } from '../helpers/client.js';

describe('server on PostgreSQL', () => {
  let pg: PostgresServer;
  let srv: TestServer;
  beforeAll(async () => {
    pg = await startPostgres();
    srv = await startTestServer({ storage: { type: 'postgres', url: pg.url } });
  }, 60_000);
  afterAll(async () => {
    await srv?.close();
    await pg?.stop();
  });

  it('subscribes, chats and delivers offline messages', async () => {
    expect(srv.storage.kind).toBe('postgres');
    const a = uniqueUser('pa');
    const b = uniqueUser('pb');
    const aj = await srv.addUser(a);
    const bj = await srv.addUser(b);
    const port = srv.ports.c2s as number;
    const alice = await connect({ port, username: a });
    const bob = await connect({ port, username: b });
    await alice.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster' })));
    await bob.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster' })));
    await alice.send(xml('presence'));
    await bob.send(xml('presence'));
    await alice.send(xml('presence', { to: bj, type: 'subscribe' }));
    await bob.waitFor((el) => el.name === 'presence' && el.attrs.type === 'subscribe' && el.attrs.from === aj);
    await bob.send(xml('presence', { to: aj, type: 'subscribed' }));
    const push = await alice.waitFor((el) => el.name === 'iq' && el.getChild('query')?.getChild('item')?.attrs.subscription === 'to');
    expect(push.getChild('query')?.getChild('item')?.attrs.jid).toBe(bj);
    await alice.waitFor((el) => el.name === 'presence' && el.attrs.from === bob.jid && el.attrs.type === undefined);
    await bob.stop();
    await alice.waitFor((el) => el.name === 'presence' && el.attrs.from === bob.jid && el.attrs.type === 'unavailable');
    await alice.send(xml('message', { to: bj, type: 'chat' }, xml('body', {}, 'while you were away')));
    await alice.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
    expect(await srv.storage.offline.count(bj)).toBe(1);
    const bob2 = await connect({ port, username: b });
    await bob2.send(xml('presence'));
    const m = await bob2.waitFor((el) => el.name === 'message');
    expect(m.getChildText('body')).toBe('while you were away');
    expect(m.getChild('delay', 'urn:xmpp:delay')).toBeTruthy();
    const roster = await bob2.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster' })));
    expect(roster.getChild('query')?.getChild('item')?.attrs).toMatchObject({ jid: aj, subscription: 'from' });
    await alice.stop();
    await bob2.stop();
  }, 30_000);
});
