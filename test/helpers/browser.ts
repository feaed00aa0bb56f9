// Headless Chromium (Debian's `chromium`, driven by playwright-core) for the tests of anything a
// person sees or signs in through. A missing browser fails the test loudly: it is a broken test
// environment, not a reason to skip.
import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';
export { freePort } from './ports.js';

export const CHROMIUM = '/usr/bin/chromium';

/** Launches headless Chromium that accepts the test servers' self-signed certificates. */
export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium package to run the browser tests`);
  return chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--ignore-certificate-errors'] });
}

