// Secrets kept in dataDir: the server secret (fake SCRAM salts, token keys) and the mux link
// secret. Generated with a CSPRNG on first use, written atomically, mode 0600.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ResolvedConfig } from '../core/config.js';

export function fileSecret(dataDir: string, name: string): Buffer {
  const path = join(dataDir, name);
  if (!existsSync(path)) {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, randomBytes(32).toString('base64'), { mode: 0o600 });
    renameSync(tmp, path);
  }
  return Buffer.from(readFileSync(path, 'utf8').trim(), 'base64');
}

export function muxSecret(config: Readonly<ResolvedConfig>): Buffer {
  return config.mux.secret ? Buffer.from(config.mux.secret, 'utf8') : fileSecret(config.dataDir, 'mux.key');
}
