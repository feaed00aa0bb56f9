// Interop (issue 15 §3): libpurple through finch (Debian finch, the ncurses Pidgin, in tmux). The
// account is what a user enters in finch's account dialog: username, domain, resource, password,
// "Connect server" and port, and for direct TLS (XEP-0368) "Connection security: Use old-style SSL"
// (connection_security=old_ssl); everything else is libpurple's default (its SASL is Cyrus SASL,
// which picks the mechanism). The certificate: libpurple trusts only the system CAs (NSS without a
// database, so no certutil import), and for anything else asks "accept this certificate?" once
// and keeps the accepted certificate in ~/.purple/certificates/x509/tls_peers/<host>; the test
// writes that file, as after the user accepted it. NSS still refuses a certificate chain that is
// invalid (a self-signed certificate that is not a CA), which is why the server now generates a
// local CA. Messages: finch opens a conversation window for the peer's message; the reply is typed
// there (Alt+N first when the window lacks the focus). libpurple 2.14 enables XEP-0198 without resumption, so there is no
// resumption case here.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestClient } from '../helpers/client.js';
import { chat, COMBOS, comboUsers, connectPeer, InteropServer, peerGot, requireBinary, tempDir, TmuxSession, waitFor } from '../helpers/interop.js';

describe('interop: finch (libpurple)', () => {
  let srv: InteropServer;
  let peer: TestClient;
  let finch = '';
  const tmp = tempDir('parley-interop-finch-');
  const sessions: TmuxSession[] = [];

  beforeAll(async () => {
    finch = requireBinary('finch', 'finch');
    requireBinary('tmux', 'tmux');
    srv = await InteropServer.start('finch', comboUsers('finch'));
    peer = await connectPeer(srv, 'peer');
  });

  afterAll(async () => {
    await Promise.all(sessions.map((s) => s.kill()));
    await peer?.stop();
    await srv?.stop();
    tmp.remove();
  });

  function home(local: string, port: number, directTls: boolean): string {
    const dir = join(tmp.dir, local);
    const purple = join(dir, '.purple');
    const peers = join(purple, 'certificates', 'x509', 'tls_peers');
    mkdirSync(peers, { recursive: true });
    // The server's own certificate (the first of the chain), as libpurple stores an accepted one.
    const leaf = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(readFileSync(srv.certPath, 'utf8'))?.[0];
    writeFileSync(join(peers, '127.0.0.1'), `${leaf}\n`);
    const security = directTls ? "\n   <setting name='connection_security' type='string'>old_ssl</setting>" : '';
    writeFileSync(
      join(purple, 'accounts.xml'),
      `<?xml version='1.0' encoding='UTF-8' ?>
<account version='1.0'>
 <account>
  <protocol>prpl-jabber</protocol>
  <name>${local}@localhost/finch</name>
  <password>${srv.users.get(local)}</password>
  <settings>
   <setting name='connect_server' type='string'>127.0.0.1</setting>
   <setting name='port' type='int'>${port}</setting>${security}
  </settings>
  <settings ui='gnt-purple'>
   <setting name='auto-login' type='bool'>1</setting>
  </settings>
 </account>
</account>
`,
    );
    return dir;
  }

  it.concurrent.each(COMBOS)('%s, %s: default login, message both ways', async (path, mode) => {
    const local = `finch-${path}-${mode}`;
    const jid = `${local}@localhost/finch`;
    const dir = home(local, srv.ports[path][mode], mode === 'directtls');
    const t = new TmuxSession(join(tmp.dir, `${local}.sock`), local);
    sessions.push(t);
    await t.start([finch], { HOME: dir, LANG: 'C.UTF-8' });
    const state = () => `${t.describe()}\n${srv.describe()}`;
    await waitFor(`${jid} to be bound at the server`, () => srv.records().some((r) => r.msg === 'resource bound' && r.jid === jid), 15_000, state);
    expect(await srv.mechanismOf(`${local}@localhost`)).toMatch(/^SCRAM-SHA-(1|256)(-PLUS)?$/);
    // Short bodies: finch's conversation window is 70 columns and wraps long lines.
    const toClient = `to-${Math.random().toString(36).slice(2, 8)} ✓`;
    await peer.send(chat(jid, toClient));
    await t.waitScreen(new RegExp(`/peer: ${toClient}`), 15_000, `"${toClient}" in finch's conversation window`);
    // The new conversation window may or may not have the focus (gnt gives it to a new window
    // unless the user is busy in another): type the reply, and if it does not show in the
    // conversation's entry (drawn over the buddy list only when focused), Alt+N to the next window.
    const fromClient = `from-${Math.random().toString(36).slice(2, 8)} ✓`;
    await t.key('-l', fromClient);
    for (let i = 0; !(await t.screen()).includes(`${fromClient}_`); i++) {
      if (i === 3) throw new Error(`the reply could not be typed into finch's conversation window\n${state()}`);
      await t.key('C-u'); // clear what went elsewhere
      await t.key('M-n');
      await t.key('-l', fromClient);
      await new Promise((r) => setTimeout(r, 300));
    }
    await t.key('Enter');
    expect((await peerGot(peer, fromClient, state)).attrs.from).toBe(jid);
    await t.kill();
  });

  it('the server logged no warning or error', () => srv.expectCleanLog());
});
