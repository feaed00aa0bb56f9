// The modules reference in README.md is generated from the modules' option schemas; it must be
// current, and every option must say what it does.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { z } from 'zod';
import { describe, expect, it } from 'vitest';
import { modulesReference } from '../../src/cli/modules-doc.js';
import { builtinModules } from '../../src/modules/index.js';

describe('modules reference', () => {
  it('README.md shows the current reference (npm run docs:modules)', () => {
    const readme = readFileSync(resolve(import.meta.dirname, '../../README.md'), 'utf8');
    const block = /<!-- modules:start -->\n([\s\S]*?)\n<!-- modules:end -->/.exec(readme)?.[1];
    expect(block).toBe(modulesReference(builtinModules));
  });

  it('every module option has a description and the defaults validate', () => {
    for (const m of builtinModules) {
      const schema = z.toJSONSchema(m.options, { io: 'input', unrepresentable: 'any' }) as { properties?: Record<string, { description?: string }> };
      for (const [key, p] of Object.entries(schema.properties ?? {})) {
        expect(p.description, `modules.${m.name}.${key}`).toBeTruthy();
      }
      expect(m.options.safeParse({}).success, `modules.${m.name} defaults`).toBe(true);
    }
  });

  it('lists every module with its XEPs', () => {
    const ref = modulesReference(builtinModules);
    for (const m of builtinModules) expect(ref).toContain(`| \`${m.name}\` |`);
    expect(ref).toContain('| `sm` | XEP-0198 |');
  });
});
