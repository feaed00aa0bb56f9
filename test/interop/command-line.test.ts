// Interop (issue 15 §3): the command-line senders.
//  - go-xmpp through go-sendxmpp (Debian go-sendxmpp): user, password, server address:port, `-t`
//    for direct TLS (XEP-0368), and the CA to trust through SSL_CERT_FILE (Go's crypto/tls reads
//    it); SASL is go-xmpp's choice. It receives in `--listen` mode (`-d` prints the XML it reads)
//    and sends one message per run. go-xmpp has no XEP-0198.
//  - Net::XMPP through sendxmpp (Debian sendxmpp, Perl): ~/.sendxmpprc (username, jserver, port,
//    password, component = the XMPP domain, since jserver is an address), `-t` for STARTTLS or `-e`
//    for direct TLS, and `-a` the CA file; SASL is Authen::SASL's choice. sendxmpp only sends (it
//    has no receiving mode), so "message both ways" is one way here; Net::XMPP has no XEP-0198.
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestClient } from '../helpers/client.js';
import {
  chat,
  COMBOS,
  comboUsers,
  connectPeer,
  GoSendxmpp,
  type GoListener,
  InteropServer,
  peerGot,
  requireBinary,
  run,
  tempDir,
  uniqueBody,
  waitFor,
} from '../helpers/interop.js';

describe('interop: go-sendxmpp (go-xmpp) and sendxmpp (Net::XMPP)', () => {
  let srv: InteropServer;
  let peer: TestClient;
  const tmp = tempDir('parley-interop-cli-');
  const listeners: GoListener[] = [];

  beforeAll(async () => {
    requireBinary('go-sendxmpp', 'go-sendxmpp');
    requireBinary('sendxmpp', 'sendxmpp');
    srv = await InteropServer.start('cli', comboUsers('go', 'sx'));
    peer = await connectPeer(srv, 'peer');
  });

  afterAll(async () => {
    await Promise.all(listeners.map((l) => l.stop()));
    await peer?.stop();
    await srv?.stop();
    tmp.remove();
  });

  it.concurrent.each(COMBOS)('go-sendxmpp, %s, %s: default login, message both ways', async (path, mode) => {
    const local = `go-${path}-${mode}`;
    const home = join(tmp.dir, local);
    mkdirSync(home, { recursive: true });
    const go = new GoSendxmpp(home, srv.trustAnchor);
    const o = { user: `${local}@localhost`, password: srv.users.get(local) as string, port: srv.ports[path][mode], directTls: mode === 'directtls', trust: 'ca' as const };

    const l = go.listen(o);
    listeners.push(l);
    const jid = await l.online(`${local}@localhost`);
    const state = () => `${l.describe()}\n${srv.describe()}`;
    if (mode === 'starttls') expect(l.stderr).toContain("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    else expect(l.stderr).not.toContain('<proceed');
    // The go-xmpp in Debian 12 knows PLAIN, DIGEST-MD5 and X-OAUTH2 only: PLAIN (over TLS).
    expect(await srv.mechanismOf(`${local}@localhost`)).toBe('PLAIN');
    const toClient = uniqueBody(`to-${local}`);
    await peer.send(chat(jid, toClient));
    await waitFor(`"${toClient}" at go-sendxmpp --listen`, () => l.stdout.includes(`peer@localhost: ${toClient}`), 10_000, state);
    await l.stop();

    const fromClient = uniqueBody(`from-${local}`);
    const sent = await go.send(o, 'peer@localhost', fromClient);
    expect(sent.code, `${sent.stdout}${sent.stderr}`).toBe(0);
    expect((await peerGot(peer, fromClient, () => `${sent.stderr}\n${srv.describe()}`)).attrs.from).toMatch(new RegExp(`^${local}@localhost/`));
  });

  it.concurrent.each(COMBOS)('sendxmpp, %s, %s: default login, message to the peer', async (path, mode) => {
    const local = `sx-${path}-${mode}`;
    const home = join(tmp.dir, local);
    mkdirSync(home, { recursive: true });
    const rc = join(home, '.sendxmpprc');
    writeFileSync(rc, `username: ${local}\njserver: 127.0.0.1\nport: ${srv.ports[path][mode]}\npassword: ${srv.users.get(local)}\ncomponent: localhost\n`, { mode: 0o600 });
    chmodSync(rc, 0o600); // sendxmpp refuses a configuration others can read
    const body = uniqueBody(`from-${local}`);
    const r = await run('sendxmpp', [mode === 'directtls' ? '-e' : '-t', '-a', srv.trustAnchor, '-d', 'peer@localhost'], {
      env: { ...process.env, HOME: home },
      input: body, // the whole of standard input is the body
      timeoutMs: 20_000,
    });
    const out = `${r.stdout}${r.stderr}`.replace(/Use of uninitialized value[^\n]*\n/g, '');
    expect(r.code, out).toBe(0);
    expect(out).toContain('AuthSend: ok');
    // The socket really became TLS (XML::Stream says "We are secure" even when start_SSL failed).
    expect(out).toContain(mode === 'starttls' ? 'TLSClientProceed: ssl_sock(IO::Socket::SSL=' : 'Connect: ssl_sock(IO::Socket::SSL=');
    const got = await peerGot(peer, body, () => `${out.slice(-6000)}\n${srv.describe()}`);
    expect(got.attrs.from).toMatch(new RegExp(`^${local}@localhost/`));
    expect(await srv.mechanismOf(`${local}@localhost`)).toBe('PLAIN');
  });

  it('the server logged no warning or error', () => srv.expectCleanLog());
});
