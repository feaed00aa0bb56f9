// The definition of done, proved with standard third-party XMPP clients from Debian's
// archive against the real `parley start` (TLS required; by default clients reach it through its
// embedded multiplexor, which terminates TLS): a new user adds accounts with the CLI, connects two
// standard clients, subscribes, chats, goes offline and gets the messages later.
//
//  - go-sendxmpp (Go, go-xmpp library): sends over STARTTLS and over direct TLS (XEP-0368),
//    trusting the generated certificate through SSL_CERT_FILE (real verification; a control run
//    without it must fail), and receives in `--listen` mode; `-d` prints the raw XML it receives.
//  - profanity (ncurses, libstrophe), driven through tmux send-keys/capture-pane: SCRAM login over
//    STARTTLS with `tls.policy=trust`, and over direct TLS (`tls.policy=legacy`) accepting the
//    self-signed certificate when asked (`/tls always`), mutual subscription with /sub, chat both
//    ways, and offline delivery with a <delay/>. Its DEBUG log holds every stanza it received.
//
// The packages are installed by scripts/test.sh (npm test) when missing; a missing binary fails.
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GoListener, GoSendxmpp, Profanity, requireBinary, serverRecords, waitFor, waitSessionClosed } from '../helpers/interop.js';
import { runCli, startServerProcess, waitExit, type ServerProcess } from '../helpers/process.js';
import { elementWith } from '../helpers/raw.js';

// ---- the tests --------------------------------------------------------------------------------------

describe('standard XMPP clients from Debian against parley start', () => {
  const dir = mkdtempSync(join(tmpdir(), 'parley-stdclients-'));
  const configPath = join(dir, 'parley.yaml');
  let srv: ServerProcess | null = null;
  let cert = '';
  const listeners: GoListener[] = [];
  const profs: Profanity[] = [];

  beforeAll(async () => {
    writeFileSync(
      configPath,
      `hosts: [localhost]\ndataDir: ${join(dir, 'data')}\nlisten:\n  address: 127.0.0.1\n  c2s: 0\n  c2sDirectTls: 0\nhttp:\n  address: 127.0.0.1\n  port: 0\n  tlsPort: 0\ntls:\n  required: true\nlog:\n  level: info\nmodules:\n  proxy65:\n    port: 0\n`,
    );
    srv = await startServerProcess(configPath);
    cert = join(dir, 'data', 'tls', 'cert.pem');
    expect(existsSync(cert)).toBe(true);
    // A new user's first steps: accounts are created with the CLI while the server runs.
    for (const [u, pw] of [['alice', 'alice-Secret-1'], ['bob', 'bob-Secret-2'], ['carol', 'carol-Secret-3'], ['dave', 'dave-Secret-4']]) {
      const r = await runCli(['--config', configPath, 'user', 'add', `${u}@localhost`, '--password', pw as string]);
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe(`created ${u}@localhost\n`);
    }
  });

  afterAll(async () => {
    for (const l of listeners) await l.stop().catch(() => {});
    for (const p of profs) await p.kill().catch(() => {});
    if (srv && srv.child.exitCode === null) {
      srv.child.kill('SIGTERM');
      await waitExit(srv.child);
    }
    rmSync(dir, { recursive: true, force: true });
  });

  /** The server log holds no warning or error (pino level >= 40). */
  function expectCleanServerLog(): void {
    const s = srv as ServerProcess;
    const bad = serverRecords(s).filter((r) => r.level >= 40);
    expect(bad, `server log warnings/errors:\n${bad.map((r) => JSON.stringify(r)).join('\n')}`).toEqual([]);
  }

  it('go-sendxmpp: STARTTLS and direct TLS with the generated certificate, chat to an online user, offline delivery with delay', async () => {
    const s = srv as ServerProcess;
    const home = join(dir, 'go-home');
    mkdirSync(home, { recursive: true });
    const go = new GoSendxmpp(home, cert);
    const alice = { user: 'alice@localhost', password: 'alice-Secret-1', trust: 'ca' as const };
    const bob = { user: 'bob@localhost', password: 'bob-Secret-2', trust: 'ca' as const };

    // Control: without being given the certificate, the client refuses the self-signed server,
    // so the successful runs below really verified it.
    const untrusted = await go.send({ ...alice, port: s.c2sPort, directTls: false, trust: 'none' }, 'bob@localhost', 'never sent');
    expect(untrusted.code).not.toBe(0);
    expect(untrusted.stderr).toMatch(/certificate signed by unknown authority/);

    // Bob listens over direct TLS; Alice sends over STARTTLS.
    const bobOnline = go.listen({ ...bob, port: s.directTlsPort, directTls: true });
    listeners.push(bobOnline);
    const bobJid = await bobOnline.online('bob@localhost');
    // A few separate logins: go-sendxmpp starts its TLS handshake the instant it reads <proceed/>,
    // which once raced the mux's switch to TLS (the handshake then stalled).
    for (let i = 0; i < 4; i++) {
      const live = `live-${i}-${Date.now().toString(36)} héllo ✓`;
      const sent = await go.send({ ...alice, port: s.c2sPort, directTls: false }, 'bob@localhost', live);
      expect(sent.code, sent.stderr).toBe(0);
      expect(sent.stderr).toContain("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
      expect(sent.stderr).toContain("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>");
      expect(sent.stderr).toMatch(/<jid>alice@localhost\/[^<]+<\/jid>/);
      const liveLine = await waitFor(
        'the live message at bob',
        () => new RegExp(`^(\\S+) alice@localhost: ${live}$`, 'm').exec(bobOnline.stdout),
        10_000,
        () => bobOnline.describe(),
      );
      expect(liveLine[1]).toMatch(/^\d{4}-\d\d-\d\dT/);
      const liveXml = elementWith('message', `<body>${live}</body>`).exec(bobOnline.stderr)?.[0] ?? '';
      expect(liveXml).toContain('from="alice@localhost/');
      expect(liveXml).not.toContain('urn:xmpp:delay'); // delivered live, not from storage
    }

    // Bob goes offline; Alice sends over direct TLS; Bob gets it at his next login, with a delay.
    await bobOnline.stop();
    await waitSessionClosed(s, bobJid);
    const later = `later-${Date.now().toString(36)}`;
    const sent2 = await go.send({ ...alice, port: s.directTlsPort, directTls: true }, 'bob@localhost', later);
    expect(sent2.code, sent2.stderr).toBe(0);
    expect(sent2.stderr).toMatch(/<jid>alice@localhost\/[^<]+<\/jid>/);
    expect(sent2.stderr).not.toContain('<proceed'); // TLS from the first byte, no STARTTLS

    const bobBack = go.listen({ ...bob, port: s.c2sPort, directTls: false });
    listeners.push(bobBack);
    await bobBack.online('bob@localhost');
    const laterLine = await waitFor(
      'the offline message at bob',
      () => new RegExp(`^(\\S+) alice@localhost: ${later}$`, 'm').exec(bobBack.stdout),
      10_000,
      () => bobBack.describe(),
    );
    const laterXml = elementWith('message', `<body>${later}</body>`).exec(bobBack.stderr)?.[0] ?? '';
    const stamp = /<delay xmlns="urn:xmpp:delay" from="localhost" stamp="([^"]+)"/.exec(laterXml)?.[1];
    expect(stamp, bobBack.describe()).toBeDefined();
    // go-sendxmpp prints the delay's stamp as the message time (sent while Bob was away).
    expect(Date.parse(laterLine[1] as string)).toBe(Date.parse(stamp as string));
    expect(bobBack.stdout).not.toContain('never sent');
    await bobBack.stop();

    // Server side: each login was authenticated over TLS, and nothing went wrong.
    const auths = serverRecords(s).filter((r) => r.msg === 'authenticated').map((r) => r.user);
    expect(auths.filter((u) => u === 'alice@localhost').length).toBe(5);
    expect(auths.filter((u) => u === 'bob@localhost').length).toBe(2);
    expectCleanServerLog();
  }, 30_000);

  it('profanity: SCRAM login over STARTTLS and direct TLS, mutual subscription, chat, offline delivery', async () => {
    requireBinary('profanity', 'profanity');
    requireBinary('tmux', 'tmux');
    const s = srv as ServerProcess;
    // Carol: STARTTLS, the client's own "trust this server's certificate" policy.
    const carol = new Profanity(dir, 'carol', 'carol-Secret-3', s.c2sPort, 'trust');
    // Dave: direct TLS (XEP-0368, profanity's "legacy" policy), accepting the certificate when asked.
    const dave = new Profanity(dir, 'dave', 'dave-Secret-4', s.directTlsPort, 'legacy');
    profs.push(carol, dave);

    await carol.start();
    await carol.waitScreen(/carol@localhost\/prof logged in successfully, online/);
    await dave.start();
    await dave.waitScreen(/Use '\/tls always' to accept this certificate permanently/);
    await dave.keys('/tls always');
    await dave.waitScreen(/dave@localhost\/prof logged in successfully, online/);
    for (const p of [carol, dave]) {
      const mech = serverRecords(s).find((r) => r.msg === 'authenticated' && r.user === p.jid)?.mechanism;
      expect(mech, `${p.jid} SASL mechanism`).toMatch(/^SCRAM-SHA-/);
    }

    // Subscription both ways (RFC 6121 §3), each side approving the other's request.
    await carol.keys('/sub request dave@localhost');
    await carol.waitScreen(/Sent subscription request to dave@localhost/);
    await dave.waitScreen(/Received authorization request from carol@localhost/);
    await dave.keys('/sub allow carol@localhost');
    await carol.waitScreen(/Subscription received from dave@localhost/);
    await carol.waitScreen(/dave@localhost \(prof\) is online/);
    await dave.keys('/sub request carol@localhost');
    await carol.waitScreen(/Received authorization request from dave@localhost/);
    await carol.keys('/sub allow dave@localhost');
    await dave.waitScreen(/Subscription received from carol@localhost/);
    await dave.waitScreen(/carol@localhost \(prof\) is online/);
    await carol.keys('/sub show dave@localhost');
    await carol.waitScreen(/dave@localhost subscription status: both/);
    await dave.keys('/sub show carol@localhost');
    await dave.waitScreen(/carol@localhost subscription status: both/);
    await carol.waitLog(/RECV: <iq[^>]*type="set"[^>]*><query xmlns="jabber:iq:roster"[^>]*><item [^>]*jid="dave@localhost"[^>]*subscription="both"/);

    // Chat both ways while both are online.
    const hi = `hi-dave-${Date.now().toString(36)}`;
    await carol.keys(`/msg dave@localhost ${hi}`);
    const got = await dave.waitLog(elementWith('message', `<body>${hi}</body>`));
    expect(got).toContain('from="carol@localhost/prof"');
    expect(got).not.toContain('urn:xmpp:delay');
    const back = `hi-carol-${Date.now().toString(36)}`;
    await dave.keys(`/msg carol@localhost ${back}`);
    expect(await carol.waitLog(elementWith('message', `<body>${back}</body>`))).toContain('from="dave@localhost/prof"');

    // Dave quits; Carol sees him go offline and writes; Dave gets it with a delay when he returns
    // (the certificate was accepted permanently, so this login needs no prompt).
    await dave.quit();
    await waitSessionClosed(s, 'dave@localhost/prof');
    await carol.waitLog(/RECV: <presence[^>]*type="unavailable"[^>]*from="dave@localhost\/prof"|RECV: <presence[^>]*from="dave@localhost\/prof"[^>]*type="unavailable"/);
    const note = `while-you-were-away-${Date.now().toString(36)}`;
    await carol.keys(`/msg dave@localhost ${note}`);
    await carol.waitScreen(new RegExp(`me: ${note}`));
    // A session's stanzas are processed in order: once the server answers Carol's ping, the message
    // was stored.
    // (The reply is shown in the console window, not in the chat window on screen: read the log.)
    await carol.keys('/ping');
    const pingId = /id="([^"]+)"/.exec(await carol.waitLog(/SENT: <iq id="[^"]+" type="get"><ping xmlns="urn:xmpp:ping"\/>/))?.[1] as string;
    await carol.waitLog(new RegExp(`RECV: <iq id="${pingId}"[^>]*type="result"`));
    await dave.start();
    await dave.waitScreen(/dave@localhost\/prof logged in successfully, online/);
    const stored = await dave.waitLog(elementWith('message', `<body>${note}</body>`));
    expect(stored).toContain('from="carol@localhost/prof"');
    expect(stored).toMatch(/<delay xmlns="urn:xmpp:delay"[^>]*from="localhost"/);
    await dave.waitScreen(/<< chat message: carol@localhost\/prof/);

    await carol.quit();
    await dave.quit();
    expectCleanServerLog();
  }, 30_000);
});
