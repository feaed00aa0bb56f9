// Headless Chromium (Debian's `chromium`, driven by playwright-core) for the tests of anything a
// person sees or signs in through. A missing browser fails the test loudly: it is a broken test
// environment, not a reason to skip.
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { chromium, type Browser } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';

/** Launches headless Chromium that accepts the test servers' self-signed certificates. */
export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium package to run the browser tests`);
  return chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--ignore-certificate-errors'] });
}

/**
 * A loopback port free right now, for servers whose URL must be known before they start (an
 * identity provider registers Parley's callback URL; Parley needs its public base URL).
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}
