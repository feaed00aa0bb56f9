// The modules reference (`parley modules`, and README's "Modules" section, which a test keeps equal
// to this output): every built-in module with its XEPs and each option's type, default and one-line
// description, read from the module's own options schema so the documentation cannot drift.
import { z } from 'zod';
import type { ModuleDefinition } from '../core/module.js';

interface JsonSchema {
  type?: string | string[];
  default?: unknown;
  description?: string;
  properties?: Record<string, JsonSchema>;
  items?: JsonSchema;
  enum?: unknown[];
  anyOf?: JsonSchema[];
  minimum?: number;
  maximum?: number;
}

function typeOf(s: JsonSchema): string {
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(' | ');
  if (s.anyOf) return s.anyOf.map(typeOf).join(' | ');
  const t = Array.isArray(s.type) ? s.type.join(' | ') : (s.type ?? 'any');
  if (t === 'array') return `list of ${s.items ? typeOf(s.items) : 'any'}`;
  if (t === 'integer' || t === 'number') {
    const max = s.maximum !== undefined && s.maximum < Number.MAX_SAFE_INTEGER ? s.maximum : undefined;
    const min = s.minimum !== undefined && s.minimum > Number.MIN_SAFE_INTEGER ? s.minimum : undefined;
    if (min !== undefined && max !== undefined) return `${t} ${min}..${max}`;
    if (min !== undefined) return `${t} ≥ ${min}`;
    if (max !== undefined) return `${t} ≤ ${max}`;
  }
  return t;
}

function cell(v: string): string {
  return v.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/** Markdown: one table of modules, then one table of options per module that has any. */
export function modulesReference(modules: readonly ModuleDefinition[]): string {
  const out: string[] = ['| module | XEPs | options |', '|---|---|---|'];
  const details: string[] = [];
  for (const m of modules) {
    const schema = z.toJSONSchema(m.options, { io: 'input', unrepresentable: 'any' }) as JsonSchema;
    const props = Object.entries(schema.properties ?? {});
    out.push(`| \`${m.name}\` | ${(m.xeps ?? []).map((x) => `XEP-${x}`).join(', ') || '–'} | ${props.length || '–'} |`);
    if (!props.length) continue;
    details.push('', `\`modules.${m.name}\`:`, '', '| option | type | default | meaning |', '|---|---|---|---|');
    for (const [key, p] of props) {
      const def = p.default === undefined ? '–' : `\`${JSON.stringify(p.default)}\``;
      details.push(`| \`${key}\` | ${cell(typeOf(p))} | ${cell(def)} | ${cell(p.description ?? '')} |`);
    }
  }
  return [...out, ...details].join('\n');
}
