// Interop (issue 15 §3): loudmouth through mcabber (Debian mcabber, ncurses, in tmux). The
// configuration file holds what a user must set: JID, password, server address and port, the
// encryption (`tls = 1` for STARTTLS, as in mcabber's example configuration, or `ssl = 1` for
// direct TLS, XEP-0368) and the CA to trust (`ssl_ca`); everything else is the default (a random
// resource suffix; loudmouth chooses the SASL mechanism: it knows only PLAIN and DIGEST-MD5).
// Received messages are read on screen in the peer's chat buffer (`/roster unread_first`, then
// Enter for chat mode); replies go out with `/say_to`. Loudmouth has no XEP-0198.
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestClient } from '../helpers/client.js';
import { chat, COMBOS, comboUsers, connectPeer, InteropServer, peerGot, requireBinary, tempDir, TmuxSession, uniqueBody, waitFor } from '../helpers/interop.js';

describe('interop: mcabber (loudmouth)', () => {
  let srv: InteropServer;
  let peer: TestClient;
  let mcabber = '';
  const tmp = tempDir('parley-interop-mcabber-');
  const sessions: TmuxSession[] = [];

  beforeAll(async () => {
    mcabber = requireBinary('mcabber', 'mcabber');
    requireBinary('tmux', 'tmux');
    srv = await InteropServer.start('mcabber', comboUsers('mc'));
    peer = await connectPeer(srv, 'peer');
  });

  afterAll(async () => {
    await Promise.all(sessions.map((s) => s.kill()));
    await peer?.stop();
    await srv?.stop();
    tmp.remove();
  });

  it.concurrent.each(COMBOS)('%s, %s: default login, message both ways', async (path, mode) => {
    const local = `mc-${path}-${mode}`;
    const home = join(tmp.dir, local);
    const conf = join(home, '.mcabber');
    mkdirSync(conf, { recursive: true, mode: 0o700 });
    const trace = join(home, 'trace.log');
    writeFileSync(
      join(conf, 'mcabberrc'),
      [
        `set jid = ${local}@localhost`,
        `set password = ${srv.users.get(local)}`,
        'set server = 127.0.0.1',
        `set port = ${srv.ports[path][mode]}`,
        mode === 'directtls' ? 'set ssl = 1' : 'set tls = 1',
        `set ssl_ca = ${srv.trustAnchor}`,
        // A trace of the connection for failure messages (loudmouth's SASL and TLS steps).
        'set tracelog_level = 2',
        `set tracelog_file = ${trace}`,
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    chmodSync(join(conf, 'mcabberrc'), 0o600); // mcabber refuses a configuration others can read
    const t = new TmuxSession(join(tmp.dir, `${local}.sock`), local, () => `trace (tail):\n${readTail(trace)}`);
    sessions.push(t);
    await t.start([mcabber], { HOME: home, LANG: 'C.UTF-8' });
    const state = () => `${t.describe()}\n${srv.describe()}`;
    await t.waitScreen(/Connection established\./, 15_000, 'mcabber to connect');
    const jid = await waitFor(
      `${local} to be bound at the server`,
      () => srv.records().find((r) => r.msg === 'resource bound' && String(r.jid).startsWith(`${local}@localhost/`))?.jid as string | undefined,
      15_000,
      state,
    );
    expect(await srv.mechanismOf(`${local}@localhost`)).toBe('PLAIN');

    const toClient = uniqueBody('to-mc');
    await peer.send(chat(jid, toClient));
    await t.waitScreen(/#\{\?\} peer@localhost/, 15_000, 'the unread-message mark on peer@localhost in the roster');
    await t.keys('/roster unread_first');
    await t.key('Enter'); // chat mode: the buffer of the selected buddy
    await t.waitScreen(new RegExp(`<== ${toClient}`), 10_000, `"${toClient}" in peer@localhost's chat buffer`);

    const fromClient = uniqueBody('from-mc');
    await t.keys(`/say_to peer@localhost ${fromClient}`);
    expect((await peerGot(peer, fromClient, state)).attrs.from).toBe(jid);
    await t.kill();
  });

  it('the server logged no warning or error', () => srv.expectCleanLog());
});

function readTail(path: string): string {
  try {
    return readFileSync(path, 'utf8').slice(-4000);
  } catch {
    return '(none)';
  }
}
