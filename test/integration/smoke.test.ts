import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { connect, xml } from '../helpers/client.js';

describe('smoke', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer();
    await srv.addUser('alice');
    await srv.addUser('bob');
  });
  afterAll(async () => srv?.close());

  it('two users chat', async () => {
    const a = await connect({ port: srv.ports.c2s as number, username: 'alice' });
    const b = await connect({ port: srv.ports.c2s as number, username: 'bob' });
    await a.send(xml('presence'));
    await b.send(xml('presence'));
    await a.send(xml('message', { to: 'bob@localhost', type: 'chat' }, xml('body', {}, 'hello')));
    const m = await b.waitFor((el) => el.name === 'message');
    expect(m.getChildText('body')).toBe('hello');
    expect(m.attrs.from).toBe(a.jid);
    await a.stop();
    await b.stop();
  });
});
