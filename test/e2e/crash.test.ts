// A message to an offline user, once the server has answered an iq the sender sent after it (so the
// message was processed), survives kill -9 of the server and is delivered after restart.
import { rmSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { connect, xml } from '../helpers/client.js';
import { runCli, startServerProcess, tempConfig, waitExit, type ServerProcess } from '../helpers/process.js';

process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

describe('crash safety', () => {
  const { dir, config } = tempConfig();
  let proc: ServerProcess | null = null;
  afterAll(async () => {
    if (proc && proc.child.exitCode === null) {
      proc.child.kill('SIGKILL');
      await waitExit(proc.child);
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps an acknowledged offline message across kill -9', async () => {
    for (const u of ['alice', 'bob']) {
      const r = await runCli(['--config', config, 'user', 'add', `${u}@localhost`, '--password', 'pw-for-crash-test']);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
    }
    proc = await startServerProcess(config);
    const alice = await connect({ port: proc.c2sPort, username: 'alice', password: 'pw-for-crash-test' });
    await alice.send(xml('presence'));
    for (let i = 0; i < 5; i++) {
      await alice.send(xml('message', { to: 'bob@localhost', type: 'chat', id: `m${i}` }, xml('body', {}, `survive ${i}`)));
    }
    // The session processes stanzas in order: once this iq is answered, the messages were committed.
    const pong = await alice.iq(xml('iq', { type: 'get', to: 'localhost', id: 'after' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
    expect(pong.attrs.type).toBe('result');
    proc.child.kill('SIGKILL');
    await waitExit(proc.child);
    await alice.stop();

    proc = await startServerProcess(config);
    const bob = await connect({ port: proc.c2sPort, username: 'bob', password: 'pw-for-crash-test' });
    await bob.send(xml('presence'));
    const bodies: string[] = [];
    for (let i = 0; i < 5; i++) {
      const m = await bob.waitFor((el) => el.name === 'message' && el.getChildText('body') === `survive ${i}`, 10_000);
      expect(m.getChild('delay', 'urn:xmpp:delay')?.attrs.from).toBe('localhost');
      bodies.push(m.getChildText('body') as string);
    }
    expect(bodies).toEqual([0, 1, 2, 3, 4].map((i) => `survive ${i}`));
    await bob.stop();
    proc.child.kill('SIGTERM');
    await waitExit(proc.child);
  }, 60_000);
});
