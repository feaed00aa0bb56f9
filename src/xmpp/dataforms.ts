// XEP-0004 data forms: small builders for forms a service sends and a reader for submitted ones.
// Only what the ad-hoc commands need (§3.1 form types, §3.2 fields, §3.3 field types); a submitted
// form is read as field var -> values, never trusted for types.
import { Element } from 'ltx';
import { NS } from './ns.js';

export type FieldType =
  | 'boolean' | 'fixed' | 'hidden' | 'jid-multi' | 'jid-single' | 'list-multi' | 'list-single'
  | 'text-multi' | 'text-private' | 'text-single';

export interface FieldSpec {
  var?: string;
  type: FieldType;
  label?: string;
  desc?: string;
  required?: boolean;
  values?: string[];
  options?: { value: string; label?: string }[];
}

/** Builds <x xmlns='jabber:x:data' type=...> with a title, instructions and fields. */
export function dataForm(type: 'form' | 'result' | 'submit' | 'cancel', opts: { title?: string; instructions?: string; formType?: string; fields: FieldSpec[] }): Element {
  const x = new Element('x', { xmlns: NS.DATA_FORMS, type });
  if (opts.title) x.c('title').t(opts.title);
  if (opts.instructions) x.c('instructions').t(opts.instructions);
  if (opts.formType) x.cnode(field({ var: 'FORM_TYPE', type: 'hidden', values: [opts.formType] }));
  for (const f of opts.fields) x.cnode(field(f));
  return x;
}

export function field(f: FieldSpec): Element {
  const el = new Element('field', { var: f.var, type: f.type, label: f.label });
  if (f.desc) el.c('desc').t(f.desc);
  if (f.required) el.c('required');
  for (const v of f.values ?? []) el.c('value').t(v);
  for (const o of f.options ?? []) el.c('option', { label: o.label }).c('value').t(o.value);
  return el;
}

/** The first jabber:x:data child of `parent`, or null. */
export function findForm(parent: Element): Element | null {
  return parent.getChildElements().find((c) => c.name === 'x' && c.attrs.xmlns === NS.DATA_FORMS) ?? null;
}

/** A submitted form's values by field var (FORM_TYPE included). */
export function formValues(x: Element): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const f of x.getChildren('field')) {
    const v = f.attrs.var;
    if (!v || out.has(v)) continue;
    out.set(v, f.getChildren('value').map((e) => e.getText()));
  }
  return out;
}

/** XEP-0004 §3.3 boolean: "1"/"true" are true, "0"/"false" false; anything else is undefined. */
export function parseBoolean(v: string | undefined): boolean | undefined {
  if (v === '1' || v === 'true') return true;
  if (v === '0' || v === 'false') return false;
  return undefined;
}
