// Issue 15 §4: the configuration a first-day user copies works. parley.example.yaml (repo root) and
// the YAML of README's configuration reference pass the real `parley check-config`; the example
// comments every section; an unknown module name stops `parley start` and `check-config` names it
// with its path.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { configSchema } from '../../src/core/config.js';
import { runCli, tempConfig } from '../helpers/process.js';

const ROOT = resolve(import.meta.dirname, '../..');
const README = readFileSync(join(ROOT, 'README.md'), 'utf8');

/** The ```yaml blocks of one README section (from its `## ` heading to the next). */
function yamlBlocks(heading: string): string[] {
  const start = README.indexOf(`\n## ${heading}\n`);
  expect(start, `README has a "## ${heading}" section`).toBeGreaterThanOrEqual(0);
  const end = README.indexOf('\n## ', start + 4);
  const section = README.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1] as string);
}

describe('configuration files a user copies', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('parley.example.yaml passes `parley check-config --config parley.example.yaml`', async () => {
    const r = await runCli(['check-config', '--config', 'parley.example.yaml'], { cwd: ROOT });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('configuration OK');
  });

  it('parley.example.yaml has every top-level section, each with a comment above it', () => {
    const text = readFileSync(join(ROOT, 'parley.example.yaml'), 'utf8');
    const doc = parseYaml(text) as Record<string, unknown>;
    for (const key of [...Object.keys(configSchema.shape), 'limits']) expect(Object.keys(doc), `section ${key}`).toContain(key);
    const lines = text.split('\n');
    for (const [i, line] of lines.entries()) {
      if (!/^[a-zA-Z]+:/.test(line)) continue;
      const above = lines.slice(0, i).reverse().find((l) => l.trim() !== '');
      expect(above?.startsWith('#') || line.includes(' # '), `a comment for "${line}"`).toBe(true);
    }
  });

  it("README's configuration reference YAML passes `parley check-config`", async () => {
    const blocks = yamlBlocks('Configuration reference');
    expect(blocks.length).toBeGreaterThan(0);
    const dir = mkdtempSync(join(tmpdir(), 'parley-readme-'));
    dirs.push(dir);
    for (const [i, block] of blocks.entries()) {
      const file = join(dir, `readme-${i}.yaml`);
      writeFileSync(file, block);
      const r = await runCli(['--config', file, 'check-config']);
      expect(r.stderr, `README yaml block ${i + 1}`).toBe('');
      expect(r.code).toBe(0);
    }
  });

  it('README says the plain HTTP port is on loopback only, and describes no web messenger', () => {
    expect(README).toMatch(/plain[- ]HTTP port[^.]*loopback only/i);
    expect(README).not.toMatch(/messenger/i);
  });

  it('an unknown module name stops `parley start` and `check-config` names it with its path', async () => {
    const { dir, config } = tempConfig('modules:\n  rostr: { versioning: false }\n  push: { includeBody: false }\n');
    dirs.push(dir);
    const check = await runCli(['--config', config, 'check-config']);
    expect(check.code).toBe(2);
    expect(check.stderr).toContain('modules.rostr: unknown module "rostr"');
    expect(check.stderr).not.toContain('modules.push');
    const start = await runCli(['--config', config, 'start']);
    expect(start.code).toBe(2);
    expect(start.stderr).toContain('modules.rostr: unknown module "rostr"');
    expect(start.stdout).not.toContain('Parley is running');
  });
});
