// XEP-0115 entity capabilities, receiving side: §5.1 verification string (identities, features and
// §5.2 extended forms), §6.2 hash check before caching, and a bounded per-hash cache so that a
// client type is asked for its disco#info once. Unverifiable answers are used for that one presence
// and never cached (§5.4 #3: a poisoned hash must not spread to other entities).
import { createHash } from 'node:crypto';
import type { Element } from 'ltx';

export const NS_CAPS = 'http://jabber.org/protocol/caps';
export const NS_DISCO_INFO = 'http://jabber.org/protocol/disco#info';

const HASHES: Record<string, string> = { 'sha-1': 'sha1', 'sha-224': 'sha224', 'sha-256': 'sha256', 'sha-384': 'sha384', 'sha-512': 'sha512' };

export interface CapsRef {
  hash: string;
  node: string;
  ver: string;
}

/** The <c/> of a presence, when it uses a hash we can check (legacy caps without hash are ignored). */
export function capsOf(presence: Element): CapsRef | null {
  const c = presence.getChild('c', NS_CAPS);
  if (!c) return null;
  const { hash, node, ver } = c.attrs as Record<string, string | undefined>;
  if (!hash || !node || !ver || !HASHES[hash] || ver.length > 256 || node.length > 1024) return null;
  return { hash, node, ver };
}

/** §5.1 verification string of a disco#info <query/>, or null if it is malformed (§5.4 #3.3-3.6). */
export function verificationString(query: Element): string | null {
  const ids: string[] = [];
  for (const i of query.getChildren('identity')) {
    ids.push(`${i.attrs.category ?? ''}/${i.attrs.type ?? ''}/${i.attrs['xml:lang'] ?? ''}/${i.attrs.name ?? ''}`);
  }
  const features = query.getChildren('feature').map((f) => f.attrs.var ?? '');
  if (new Set(ids).size !== ids.length || new Set(features).size !== features.length) return null;
  const forms: { type: string; text: string }[] = [];
  for (const x of query.getChildren('x', 'jabber:x:data')) {
    const fields = x.getChildren('field');
    const ft = fields.find((f) => f.attrs.var === 'FORM_TYPE');
    if (!ft) continue; // forms without FORM_TYPE are ignored (§5.4 #3.6)
    if (ft.attrs.type !== undefined && ft.attrs.type !== 'hidden') return null;
    const type = ft.getChildText('value') ?? '';
    const rest = fields
      .filter((f) => f.attrs.var !== 'FORM_TYPE')
      .map((f) => ({ v: f.attrs.var ?? '', values: f.getChildren('value').map((v) => v.getText()).sort(cmp) }))
      .sort((a, b) => cmp(a.v, b.v));
    let text = `${type}<`;
    for (const f of rest) text += `${f.v}<${f.values.map((v) => `${v}<`).join('')}`;
    forms.push({ type, text });
  }
  if (new Set(forms.map((f) => f.type)).size !== forms.length) return null;
  forms.sort((a, b) => cmp(a.type, b.type));
  return `${ids.sort(cmp).map((i) => `${i}<`).join('')}${features.sort(cmp).map((f) => `${f}<`).join('')}${forms.map((f) => f.text).join('')}`;
}

/** i;octet collation (byte order of UTF-8). */
function cmp(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

export function capsHash(hash: string, s: string): string | null {
  const alg = HASHES[hash];
  return alg ? createHash(alg).update(s, 'utf8').digest('base64') : null;
}

/** Verified hash -> features, bounded; concurrent lookups of one hash share one disco#info query. */
export class CapsCache {
  private readonly known = new Map<string, Set<string>>();
  private readonly pending = new Map<string, Promise<Set<string> | null>>();

  constructor(private readonly maxEntries = 5000) {}

  get(ref: CapsRef): Set<string> | undefined {
    return this.known.get(`${ref.hash}\u0000${ref.ver}`);
  }

  /** Resolves the features for a caps reference, asking `query` (disco#info of node#ver) on a miss. */
  async resolve(ref: CapsRef, query: () => Promise<Element>): Promise<Set<string> | null> {
    const key = `${ref.hash}\u0000${ref.ver}`;
    const hit = this.known.get(key);
    if (hit) return hit;
    let p = this.pending.get(key);
    if (!p) {
      p = (async () => {
        const q = await query();
        const features = new Set(q.getChildren('feature').map((f) => f.attrs.var ?? '').filter(Boolean));
        const s = verificationString(q);
        if (s !== null && capsHash(ref.hash, s) === ref.ver) {
          // Oldest entries go first once full (Map keeps insertion order).
          if (this.known.size >= this.maxEntries) this.known.delete(this.known.keys().next().value as string);
          this.known.set(key, features);
        }
        return features;
      })().finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    return p;
  }
}
