import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError, configSchema, limitsSchema, validateConfig } from '../../src/core/config.js';
import { builtinModules } from '../../src/modules/index.js';

describe('configuration', () => {
  it('has embedded defaults', () => {
    const c = validateConfig({}, '/srv/parley');
    expect(c.hosts.map((h) => h.domain)).toEqual(['localhost']);
    expect(c.listen.c2s).toBe(5222);
    expect(c.listen.c2sDirectTls).toBe(5223);
    expect(c.storage).toEqual({ type: 'sqlite', path: '/srv/parley/data/parley.sqlite' });
    expect(c.tls.required).toBe(true);
    expect(c.limits.maxStanzaBytes).toBe(262144);
    expect(Object.isFrozen(c.limits)).toBe(true);
  });

  it('reports every error with its path', () => {
    try {
      validateConfig({ hosts: ['a', { domain: 'b', registration: { enabled: 'x' } }], listen: { c2s: -1 }, limits: { offlineQuota: 'many' }, bogus: 1 });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      const msg = (e as Error).message;
      expect(msg).toContain('hosts.1.registration.enabled');
      expect(msg).toContain('listen.c2s');
      expect(msg).toContain('limits.offlineQuota');
      expect(msg).toContain('bogus');
    }
  });

  it('refuses duplicate hosts and a certificate without a key', () => {
    expect(() => validateConfig({ hosts: ['a.example', 'A.example'] })).toThrow(/duplicate host/);
    expect(() => validateConfig({ tls: { cert: 'x.pem' } })).toThrow(/cert and key/);
  });

  it('refuses an unknown module name, and bad module options, with their paths (issue 15)', () => {
    const modules = builtinModules;
    // Without the module list (core alone) the section is free-form; with it, a typo is an error.
    expect(() => validateConfig({ modules: { rostr: { versioning: false } } })).not.toThrow();
    let msg = '';
    try {
      validateConfig({ modules: { rostr: { versioning: false }, push: false, roster: { versioning: 3 }, mam: true }, listen: { c2s: -1 } }, '/srv', { modules });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      msg = (e as Error).message;
    }
    expect(msg).toContain('modules.rostr: unknown module "rostr"');
    expect(msg).toContain('modules.roster.versioning');
    expect(msg).toContain('listen.c2s'); // reported together with the other problems
    expect(msg).not.toContain('modules.push');
    expect(msg).not.toContain('modules.mam');
    expect(validateConfig({ modules: { push: false, roster: { versioning: false }, mam: true } }, '/srv', { modules }).modules.push).toBe(false);
  });

  it('documents every setting in README', () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    for (const key of Object.keys(limitsSchema.shape)) expect(readme).toContain(`limits.${key}`);
    for (const key of Object.keys(configSchema.shape)) expect(readme).toContain(`${key}:`);
  });
});
