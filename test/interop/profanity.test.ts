// Interop (issue 15 §3): libstrophe through profanity (Debian profanity, driven in tmux). Default
// account settings except the server address and port, and for direct TLS (XEP-0368) the one
// setting profanity needs for it (tls.policy=legacy, profanity 0.13's name for it); the self-signed certificate is accepted when
// profanity asks, as a user does (`/tls always`). Logins over STARTTLS and direct TLS, to the
// server process and through a standalone mux; a chat message each way with an @xmpp/client user
// (profanity's DEBUG log holds every stanza it received); and XEP-0198 resumption after the TCP
// connection is cut under it (libstrophe keeps the stream-management state; profanity reconnects).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestClient } from '../helpers/client.js';
import {
  chat,
  COMBOS,
  comboUsers,
  connectPeer,
  CutRelay,
  InteropServer,
  PATHS,
  peerGot,
  Profanity,
  requireBinary,
  tempDir,
  uniqueBody,
  waitFor,
} from '../helpers/interop.js';
import { elementWith } from '../helpers/raw.js';

describe('interop: profanity (libstrophe)', () => {
  let srv: InteropServer;
  let peer: TestClient;
  const tmp = tempDir('parley-interop-prof-');
  const profs: Profanity[] = [];
  const relays: CutRelay[] = [];

  beforeAll(async () => {
    requireBinary('profanity', 'profanity');
    requireBinary('tmux', 'tmux');
    const users = comboUsers('prof');
    for (const path of PATHS) users[`prof-resume-${path}`] = `pw-resume-${path}-2`;
    srv = await InteropServer.start('profanity', users);
    peer = await connectPeer(srv, 'peer');
  });

  afterAll(async () => {
    await Promise.all(profs.map((p) => p.kill()));
    await Promise.all(relays.map((r) => r.close()));
    await peer?.stop();
    await srv?.stop();
    tmp.remove();
  });

  /** Starts profanity and logs in, accepting the certificate when asked; returns its full JID. */
  async function login(local: string, port: number, directTls: boolean): Promise<Profanity> {
    const p = new Profanity(tmp.dir, local, srv.users.get(local) as string, port, directTls ? 'legacy' : 'force');
    profs.push(p);
    await p.start();
    await p.waitScreen(/Use '\/tls always' to accept this certificate permanently/);
    await p.keys('/tls always');
    await p.waitScreen(new RegExp(`${local}@localhost/prof logged in successfully, online`));
    return p;
  }

  it.concurrent.each(COMBOS)('%s, %s: default login, message both ways', async (path, mode) => {
    const local = `prof-${path}-${mode}`;
    const p = await login(local, srv.ports[path][mode], mode === 'directtls');
    const jid = `${local}@localhost/prof`;
    const state = () => `${p.describe()}\n${srv.describe()}`;
    // libstrophe's default: the strongest SCRAM the server offers (with channel binding when it can).
    expect(await srv.mechanismOf(`${local}@localhost`)).toMatch(/^SCRAM-SHA-(1|256|512)(-PLUS)?$/);
    expect(p.log()).not.toMatch(/RECV: <failure xmlns="urn:ietf:params:xml:ns:xmpp-sasl"/);
    if (mode === 'starttls') expect(p.log()).toMatch(/<proceed xmlns="urn:ietf:params:xml:ns:xmpp-tls"/);
    else expect(p.log()).not.toMatch(/<starttls/); // TLS from the first byte

    const toClient = uniqueBody(`to-${local}`);
    await peer.send(chat(jid, toClient));
    const got = await p.waitLog(elementWith('message', `<body>${toClient}</body>`));
    expect(got).toContain(`from="${peer.jid}"`);

    const fromClient = uniqueBody(`from-${local}`);
    await p.keys(`/msg peer@localhost ${fromClient}`);
    expect((await peerGot(peer, fromClient, state)).attrs.from).toBe(jid);
    await p.quit();
  });

  it.concurrent.each(PATHS)('%s: the stream is resumed (XEP-0198) after the connection is cut', async (path) => {
    const local = `prof-resume-${path}`;
    const relay = await CutRelay.start(srv.ports[path].starttls);
    relays.push(relay);
    const p = await login(local, relay.port, false);
    const jid = `${local}@localhost/prof`;
    const state = () => `${p.describe()}\n${srv.describe()}`;
    await p.waitLog(/RECV: <enabled [^>]*resume="true"/);
    // Profanity 0.13 retries a lost connection after /reconnect seconds (30 by default): 1 here.
    await p.keys('/reconnect 1');
    await p.waitScreen(/Reconnect interval set to 1 seconds/);
    const before = uniqueBody('before-cut');
    await peer.send(chat(jid, before));
    await p.waitLog(elementWith('message', `<body>${before}</body>`));

    const session = await waitFor(`the server session of ${jid}`, () => srv.records().find((r) => r.msg === 'resource bound' && r.jid === jid)?.session, 5000, state);
    expect(relay.cut()).toBe(1);
    await waitFor(`the server to hibernate the session of ${jid}`, () => srv.records().some((r) => r.session === session && r.msg === 'session hibernated'), 10_000, state);
    const during = uniqueBody('during-cut');
    await peer.send(chat(jid, during));
    await waitFor(`"session resumed" for ${jid} in the server log`, () => srv.records().some((r) => r.session === session && r.msg === 'session resumed'), 15_000, state);
    await p.waitLog(/RECV: <resumed [^>]*xmlns="urn:xmpp:sm:3"|RECV: <resumed xmlns="urn:xmpp:sm:3"/);
    await p.waitLog(elementWith('message', `<body>${during}</body>`));
    const after = uniqueBody('after-resume');
    await p.keys(`/msg peer@localhost ${after}`);
    expect((await peerGot(peer, after, state)).attrs.from).toBe(jid);
    // No new session was bound for it: one "resource bound" for this JID.
    expect(srv.records().filter((r) => r.msg === 'resource bound' && r.jid === jid)).toHaveLength(1);
    await p.quit();
  });

  it('the server logged no warning or error', () => srv.expectCleanLog());
});
