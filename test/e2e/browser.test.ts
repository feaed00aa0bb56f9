// Issue 6: a real browser. Headless Chromium (Debian's, driven by playwright-core) loads a page
// served by the web container (web/public/test/websocket.html) over HTTPS with the self-signed
// certificate; the page speaks RFC 7395 over wss:// with the browser's own WebSocket, logs in with
// SASL PLAIN and exchanges messages with an @xmpp/client user on TCP.
import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, xml, type TestClient } from '../helpers/client.js';
import { startTestServer, uniqueUser, type TestServer } from '../helpers/server.js';

const CHROMIUM = '/usr/bin/chromium';
const PW = 'secret-password';

interface PageState {
  state: string;
  jid: string;
  protocol: string;
  received: { from: string; body: string }[];
  errors: string[];
  closeCode: number | null;
}

describe('a browser client over WebSocket', () => {
  let srv: TestServer;
  let browser: Browser;
  const tcps: TestClient[] = [];

  beforeAll(async () => {
    // No skip: a missing browser is a broken test environment, and must say so.
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium package to run the browser tests`);
    // The test page takes the password in its URL: served only when the configuration asks (http.testPages).
    srv = await startTestServer({ http: { address: '127.0.0.1', port: 0, tlsPort: 0, testPages: true } });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--ignore-certificate-errors'] });
  });
  afterAll(async () => {
    for (const c of tcps) await c.stop();
    await browser?.close();
    await srv?.close();
  });

  it('logs in over wss:// from a page served by the container and chats both ways with a TCP user', async () => {
    const alice = uniqueUser('alice');
    const bob = uniqueUser('bob');
    await srv.addUser(alice, PW);
    await srv.addUser(bob, PW);
    const b = await connect({ port: srv.ports.c2s as number, username: bob, password: PW });
    tcps.push(b);

    const page = await browser.newPage();
    const consoleErrors: string[] = [];
    page.on('pageerror', (err) => consoleErrors.push(String(err)));
    const q = new URLSearchParams({ user: alice, password: PW, peer: b.jid, body: 'hello from chromium <&>' });
    const resp = await page.goto(`https://localhost:${srv.ports.https}/test/websocket.html?${q}`);
    expect(resp?.status()).toBe(200);

    await page.waitForFunction(() => {
      const s = (window as unknown as { xmppTest?: PageState }).xmppTest;
      return s !== undefined && (s.state === 'bound' || s.state === 'error' || s.state === 'closed');
    }, undefined, { timeout: 15_000 });
    const st = (await page.evaluate(() => (window as unknown as { xmppTest: PageState }).xmppTest)) as PageState;
    expect(st.errors, JSON.stringify(st)).toEqual([]);
    expect(st.state).toBe('bound');
    expect(st.protocol).toBe('xmpp');
    expect(st.jid).toBe(`${alice}@localhost/browser`);
    expect(srv.server.sessions.count(`${alice}@localhost`)).toBe(1);

    // Browser -> TCP.
    const got = await b.waitFor((el) => el.name === 'message' && el.getChildText('body') === 'hello from chromium <&>', 10_000);
    expect(got.attrs.from).toBe(st.jid);

    // TCP -> browser, including markup that must stay text.
    await b.send(xml('message', { to: st.jid, type: 'chat' }, xml('body', {}, 'hi browser <b>bold</b>')));
    await page.waitForFunction(() => (window as unknown as { xmppTest: PageState }).xmppTest.received.length > 0, undefined, { timeout: 10_000 });
    const received = await page.evaluate(() => (window as unknown as { xmppTest: PageState }).xmppTest.received);
    expect(received).toEqual([{ from: b.jid, body: 'hi browser <b>bold</b>' }]);
    expect(await page.locator('#log li').first().textContent()).toBe(`${b.jid}: hi browser <b>bold</b>`);
    expect(await page.locator('#log b').count()).toBe(0);
    expect(consoleErrors).toEqual([]);
    await page.close();
    // Closing the tab drops the WebSocket; the session ends (no XEP-0198 here).
    await expect.poll(() => srv.server.sessions.count(`${alice}@localhost`), { timeout: 10_000 }).toBe(0);
  });
});
