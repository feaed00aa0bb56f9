// `parley alert send` (issue 7): the CLI stores an alert in the data directory's database; a
// server started on that directory delivers it at the recipient's next login, and a running
// server delivers one stored meanwhile to an online recipient through its poll. Bad input exits 2.
import { rmSync } from 'node:fs';
import type { Element } from 'ltx';
import { afterAll, describe, expect, it } from 'vitest';
import { connect, type TestClient, xml } from '../helpers/client.js';
import { runCli, startServerProcess, tempConfig, waitExit, type ServerProcess } from '../helpers/process.js';

process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

describe('parley alert send', () => {
  // Poll every 200 ms so the running-server case is quick; no muxes: one process to stop.
  const { dir, config } = tempConfig('mux:\n  count: 0\nmodules:\n  alerts:\n    pollSeconds: 0.2\n');
  let server: ServerProcess | undefined;
  const clients: TestClient[] = [];
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    if (server) {
      server.child.kill('SIGTERM');
      await waitExit(server.child);
    }
    rmSync(dir, { recursive: true, force: true });
  });

  const isAlert = (el: Element) => el.name === 'message' && el.attrs.type === 'headline';
  const cli = (...args: string[]) => runCli(['--config', config, ...args]);

  it('stores an alert that the server delivers at login, and one sent while the server runs', async () => {
    for (const u of ['bob', 'carol']) expect((await cli('user', 'add', `${u}@localhost`, '-p', 'secret-password')).code).toBe(0);

    // Refusals: unknown account, bad priority, bad URL, missing option.
    let r = await cli('alert', 'send', '--to', 'nobody@localhost', '--subject', 'S', '--body', 'B');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/nobody@localhost: no such account/);
    r = await cli('alert', 'send', '--to', 'bob@localhost', '--subject', 'S', '--body', 'B', '--priority', 'urgent');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--priority must be one of low, medium, high/);
    r = await cli('alert', 'send', '--to', 'bob@localhost', '--subject', 'S', '--body', 'B', '--url', 'ftp://x');
    expect(r.code).toBe(2);
    r = await cli('alert', 'send', '--to', 'bob@localhost', '--body', 'B');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/--subject/);

    r = await cli('alert', 'send', '--to', 'bob@localhost,carol@localhost', '--subject', 'Maintenance', '--body', 'Tonight at 22:00', '--url', 'https://status.example/', '--priority', 'high', '--receipts');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const id = /alert (alert-\S+) stored for 2 recipients/.exec(r.stdout)?.[1] as string;
    expect(id).toBeTruthy();

    server = await startServerProcess(config);
    const bob = await connect({ port: server.c2sPort, username: 'bob', mechanism: 'PLAIN' });
    clients.push(bob);
    await bob.send(xml('presence'));
    const m = await bob.waitFor(isAlert);
    expect(m.attrs).toMatchObject({ from: 'localhost', id });
    expect(m.getChildText('subject')).toBe('Maintenance');
    expect(m.getChildText('body')).toBe('Tonight at 22:00');
    expect(m.getChild('x', 'jabber:x:oob')?.getChildText('url')).toBe('https://status.example/');
    expect(m.getChild('headers', 'http://jabber.org/protocol/shim')?.getChild('header')?.getText()).toBe('high');
    expect(m.getChild('request', 'urn:xmpp:receipts')).toBeTruthy();
    expect(m.getChild('delay', 'urn:xmpp:delay')).toBeTruthy();
    await bob.send(xml('message', { to: 'localhost' }, xml('received', { xmlns: 'urn:xmpp:receipts', id })));
    await bob.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));

    // The report reads the same database the running server writes.
    r = await cli('alert', 'report', id);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/pending: 1 \(carol@localhost\)/);
    expect(r.stdout).toMatch(/received: 1 \(bob@localhost\)/);

    // Stored while bob is online: the server's poll delivers it without a new login.
    r = await cli('alert', 'send', '--to', 'bob@localhost', '--subject', 'Now', '--body', 'Right now');
    expect(r.code).toBe(0);
    const id2 = /alert (alert-\S+) stored/.exec(r.stdout)?.[1];
    const live = await bob.waitFor((el) => isAlert(el) && el.attrs.id === id2, 10_000);
    expect(live.getChildText('subject')).toBe('Now');
    expect(live.getChild('delay', 'urn:xmpp:delay')).toBeUndefined();
  });
});
