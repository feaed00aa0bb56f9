// The data directory made private at start (src/cli/datadir.ts): through a symlinked dataDir, and
// without ever following a symlink inside it (a link to a file elsewhere keeps that file's mode).
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { dataDirWarning, ensurePrivateDataDir, exposedPaths } from '../../src/cli/datadir.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function scratch(): string {
  const d = mkdtempSync(join(tmpdir(), 'parley-datadir-'));
  dirs.push(d);
  return d;
}

const mode = (p: string) => statSync(p).mode & 0o777;

describe('private data directory', () => {
  it('checks and fixes a dataDir given as a symlink where it points', () => {
    const base = scratch();
    const real = join(base, 'real');
    mkdirSync(real);
    chmodSync(real, 0o755);
    writeFileSync(join(real, 'parley.sqlite'), 'x');
    chmodSync(join(real, 'parley.sqlite'), 0o644);
    symlinkSync(real, join(base, 'link'));
    expect(dataDirWarning(join(base, 'link'))).toMatch(/2 path\(s\)/);
    ensurePrivateDataDir(join(base, 'link'));
    expect(mode(real)).toBe(0o700);
    expect(mode(join(real, 'parley.sqlite'))).toBe(0o600);
    expect(exposedPaths(join(base, 'link'))).toEqual([]);
  });

  it('never follows a symlink inside it: the target elsewhere keeps its mode', () => {
    const base = scratch();
    const data = join(base, 'data');
    mkdirSync(data, { mode: 0o700 });
    const outside = join(base, 'shared.txt');
    writeFileSync(outside, 'not ours');
    chmodSync(outside, 0o644);
    symlinkSync(outside, join(data, 'innocent'));
    ensurePrivateDataDir(data);
    expect(mode(outside)).toBe(0o644);
    expect(dataDirWarning(data)).toBeNull();
  });
});
