// Interop (issue 15 §3): Strophe.js through Converse.js (npm converse.js, devDependency) in
// headless Chromium. The test serves a page on loopback that loads Converse's own build and
// initializes it with what a site administrator sets: the WebSocket URL (RFC 7395, the web
// container's /xmpp-websocket) or the BOSH URL (XEP-0124/0206, /http-bind), plus the user's JID and
// password (auto_login). Everything else is Converse's default: SASL mechanism chosen by Strophe,
// XEP-0198 with resumption (enable_smacks), automatic reconnection. Chromium accepts the server's
// certificate (--ignore-certificate-errors, test/helpers/browser.ts). A small Converse plugin
// exposes the api to the test and records the messages Converse receives; what is received is
// also checked on screen in the open chat. The web container lives in the server process: there
// is no mux path for browsers. Resumption: the WebSocket goes through a relay that cuts it.
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { extname, join, resolve } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchBrowser } from '../helpers/browser.js';
import type { TestClient } from '../helpers/client.js';
import { chat, connectPeer, CutRelay, InteropServer, peerGot, uniqueBody, waitFor } from '../helpers/interop.js';

const DIST = resolve(import.meta.dirname, '../../node_modules/converse.js/dist');
const TYPES: Record<string, string> = { '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json', '.wasm': 'application/wasm', '.map': 'application/json' };

// Converse's options come from the page's #fragment (JSON), so that one page serves every case.
const PAGE = `<!doctype html><html><head><meta charset="utf-8"><link rel="stylesheet" href="/dist/converse.min.css"></head><body>
<script type="module">
import converse from '/dist/converse.min.js';
window.interop = { events: [], log: [] };
converse.plugins.add('interop', {
  initialize() {
    const api = this._converse.api;
    window.interop.api = api;
    for (const ev of ['connected', 'reconnected', 'disconnected']) api.listen.on(ev, () => window.interop.events.push({ event: ev }));
    api.listen.on('message', (data) => {
      const body = data.stanza.querySelector('body');
      if (body) window.interop.events.push({ event: 'message', from: data.stanza.getAttribute('from'), body: body.textContent });
    });
  },
});
const options = JSON.parse(decodeURIComponent(location.hash.slice(1)));
converse.initialize({ assets_path: '/dist/', auto_login: true, view_mode: 'fullscreen', loglevel: 'debug', whitelisted_plugins: ['interop'], ...options });
</script></body></html>`;

interface InteropWindow {
  interop: { events: { event: string; from?: string; body?: string }[]; api: ConverseApi };
}
interface ConverseApi {
  connection: { get(): { jid: string } };
  chats: { open(jid: string): Promise<{ sendMessage(m: { body: string }): Promise<unknown> }> };
}

describe('interop: Converse.js (Strophe.js) in Chromium', () => {
  let srv: InteropServer;
  let peer: TestClient;
  let web: Server;
  let webPort = 0;
  let browser: Browser;
  const relays: CutRelay[] = [];

  beforeAll(async () => {
    if (!existsSync(join(DIST, 'converse.min.js'))) throw new Error(`${DIST}/converse.min.js is missing: run \`npm ci\` (converse.js is a devDependency)`);
    srv = await InteropServer.start('converse', { peer: 'peer-Secret-0', 'conv-ws': 'pw-ws-1', 'conv-bosh': 'pw-bosh-1', 'conv-resume': 'pw-resume-2' });
    peer = await connectPeer(srv, 'peer');
    web = createServer((req, res) => {
      const path = new URL(req.url ?? '/', 'http://page').pathname;
      if (path === '/') {
        res.setHeader('content-type', 'text/html; charset=utf-8');
        res.end(PAGE);
        return;
      }
      const file = join(DIST, path.replace(/^\/dist\//, ''));
      if (!path.startsWith('/dist/') || !file.startsWith(DIST)) {
        res.statusCode = 404;
        res.end();
        return;
      }
      try {
        const data = readFileSync(file);
        res.setHeader('content-type', TYPES[extname(file)] ?? 'application/octet-stream');
        res.end(data);
      } catch {
        res.statusCode = 404;
        res.end();
      }
    });
    await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
    webPort = (web.address() as { port: number }).port;
    browser = await launchBrowser();
  });

  afterAll(async () => {
    await browser?.close();
    await new Promise((r) => web?.close(r));
    await Promise.all(relays.map((r) => r.close()));
    await peer?.stop();
    await srv?.stop();
  });

  /** Opens the page with Converse logged in as `local`; resolves the page, its console and the full JID. */
  async function login(local: string, transport: Record<string, string>): Promise<{ page: Page; log: string[]; jid: string; state: () => string }> {
    const page = await (await browser.newContext()).newPage();
    const log: string[] = [];
    page.on('console', (m) => log.push(m.text()));
    page.on('pageerror', (e) => log.push(`page error: ${e.message}`));
    const state = () => `Converse console (tail):\n${log.join('\n').slice(-8000)}\n${srv.describe()}`;
    const options = { jid: `${local}@localhost`, password: srv.users.get(local), ...transport };
    await page.goto(`http://127.0.0.1:${webPort}/#${encodeURIComponent(JSON.stringify(options))}`);
    await page
      .waitForFunction(() => (window as unknown as InteropWindow).interop?.events.some((e) => e.event === 'connected'), null, { timeout: 20_000 })
      .catch((e: Error) => {
        throw new Error(`Converse did not connect as ${local}\n${state()}`, { cause: e });
      });
    const jid = await page.evaluate(() => (window as unknown as InteropWindow).interop.api.connection.get().jid);
    return { page, log, jid, state };
  }

  async function received(page: Page, body: string, state: () => string): Promise<{ from?: string }> {
    try {
      await page.waitForFunction((b) => (window as unknown as InteropWindow).interop.events.some((e) => e.event === 'message' && e.body === b), body, { timeout: 15_000 });
    } catch (e) {
      throw new Error(`Converse did not receive "${body}"\n${state()}`, { cause: e });
    }
    return page.evaluate((b) => (window as unknown as InteropWindow).interop.events.find((e) => e.event === 'message' && e.body === b) ?? {}, body);
  }

  async function exchange(local: string, page: Page, jid: string, state: () => string): Promise<void> {
    // The user opens the chat with the peer; the peer's message shows in it.
    await page.evaluate(async () => void (await (window as unknown as InteropWindow).interop.api.chats.open('peer@localhost')));
    const toClient = uniqueBody(`to-${local}`);
    await peer.send(chat(jid, toClient));
    expect((await received(page, toClient, state)).from).toBe(peer.jid);
    await page.getByText(toClient).first().waitFor({ timeout: 10_000 });
    const fromClient = uniqueBody(`from-${local}`);
    await page.evaluate(async (b) => {
      const c = await (window as unknown as InteropWindow).interop.api.chats.open('peer@localhost');
      await c.sendMessage({ body: b });
    }, fromClient);
    expect((await peerGot(peer, fromClient, state)).attrs.from).toBe(jid);
  }

  it.concurrent('WebSocket: default login, message both ways', async () => {
    const { page, jid, state } = await login('conv-ws', { websocket_url: `wss://127.0.0.1:${srv.http.tlsPort}/xmpp-websocket` });
    expect(jid).toMatch(/^conv-ws@localhost\//);
    expect(await srv.mechanismOf('conv-ws@localhost')).toMatch(/^SCRAM-SHA-(1|256)$/);
    await exchange('conv-ws', page, jid, state);
    await page.context().close();
  });

  it.concurrent('BOSH: default login, message both ways', async () => {
    const { page, jid, state } = await login('conv-bosh', { bosh_service_url: `https://127.0.0.1:${srv.http.tlsPort}/http-bind` });
    expect(jid).toMatch(/^conv-bosh@localhost\//);
    expect(await srv.mechanismOf('conv-bosh@localhost')).toMatch(/^SCRAM-SHA-(1|256)$/);
    await exchange('conv-bosh', page, jid, state);
    await page.context().close();
  });

  it.concurrent('WebSocket: the stream is resumed (XEP-0198) after the connection is cut', async () => {
    const relay = await CutRelay.start(srv.http.tlsPort);
    relays.push(relay);
    const { page, log, jid, state } = await login('conv-resume', { websocket_url: `wss://127.0.0.1:${relay.port}/xmpp-websocket` });
    await waitFor('<enabled resume="true"/> in Converse', () => log.some((l) => /<enabled xmlns="urn:xmpp:sm:3"[^>]*resume="true"/.test(l)), 10_000, state);
    const session = await waitFor(`the server session of ${jid}`, () => srv.records().find((r) => r.msg === 'resource bound' && r.jid === jid)?.session, 5000, state);
    expect(relay.cut()).toBeGreaterThan(0);
    await waitFor(`the server to hibernate the session of ${jid}`, () => srv.records().some((r) => r.session === session && r.msg === 'session hibernated'), 10_000, state);
    const during = uniqueBody('during-cut');
    await peer.send(chat(jid, during));
    await waitFor(`"session resumed" for ${jid} in the server log`, () => srv.records().some((r) => r.session === session && r.msg === 'session resumed'), 20_000, state);
    await waitFor('<resumed/> in Converse', () => log.some((l) => /<resumed xmlns="urn:xmpp:sm:3"/.test(l)), 10_000, state);
    expect((await received(page, during, state)).from).toBe(peer.jid);
    const after = uniqueBody('after-resume');
    await page.evaluate(async (b) => {
      const c = await (window as unknown as InteropWindow).interop.api.chats.open('peer@localhost');
      await c.sendMessage({ body: b });
    }, after);
    expect((await peerGot(peer, after, state)).attrs.from).toBe(jid);
    expect(srv.records().filter((r) => r.msg === 'resource bound' && r.jid === jid)).toHaveLength(1);
    await page.context().close();
  });

  it('the server logged no warning or error', () => srv.expectCleanLog());
});
