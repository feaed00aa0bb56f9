// Rewrites README's modules reference (between <!-- modules:start --> and <!-- modules:end -->) from
// the modules' option schemas: `npm run docs:modules`. test/cli/modules-doc.test.ts fails when the
// README is out of date.
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { modulesReference } from '../src/cli/modules-doc.js';
import { builtinModules } from '../src/modules/index.js';

const path = resolve(import.meta.dirname, '..', 'README.md');
const text = readFileSync(path, 'utf8');
const re = /(<!-- modules:start -->\n)[\s\S]*?(<!-- modules:end -->)/;
if (!re.test(text)) throw new Error('README.md has no <!-- modules:start --> ... <!-- modules:end --> block');
writeFileSync(path, text.replace(re, (_m, a: string, b: string) => `${a}${modulesReference(builtinModules)}\n${b}`));
console.log('README.md modules reference updated');
