// Stanza helpers: error replies (RFC 6120 §8.3), iq results, and small builders.
import { clone, Element } from 'ltx';
import type { StanzaError } from './errors.js';
import { NS } from './ns.js';

export type StanzaKind = 'message' | 'presence' | 'iq';

export function isStanza(el: Element): boolean {
  return el.name === 'message' || el.name === 'presence' || el.name === 'iq';
}

/**
 * Builds the error reply to a stanza: addresses swapped, type='error', the original payload kept
 * (RFC 6120 §8.3.1 permits including it; we keep it for message/presence and drop it for iq to
 * avoid reflecting large payloads back).
 */
export function errorReply(stanza: Element, err: StanzaError, by?: string): Element {
  const attrs: Record<string, string> = { type: 'error' };
  if (stanza.attrs.id !== undefined) attrs.id = stanza.attrs.id;
  if (stanza.attrs.to) attrs.from = stanza.attrs.to;
  if (stanza.attrs.from) attrs.to = stanza.attrs.from;
  const reply = new Element(stanza.name, attrs);
  if (stanza.name !== 'iq') {
    for (const child of stanza.children) {
      if (typeof child !== 'string' && child.name !== 'error') reply.cnode(clone(child));
    }
  } else {
    const payload = stanza.getChildElements()[0];
    if (payload) reply.cnode(clone(payload));
  }
  reply.cnode(err.toElement(by));
  return reply;
}

export function iqResult(req: Element, payload?: Element): Element {
  const attrs: Record<string, string> = { type: 'result', id: req.attrs.id ?? '' };
  if (req.attrs.to) attrs.from = req.attrs.to;
  if (req.attrs.from) attrs.to = req.attrs.from;
  const res = new Element('iq', attrs);
  if (payload) res.cnode(payload);
  return res;
}

/** XEP-0203 delayed-delivery stamp. */
export function delayElement(from: string, stamp: Date, reason?: string): Element {
  const el = new Element('delay', { xmlns: NS.DELAY, from, stamp: stamp.toISOString().replace(/\.\d{3}Z$/, 'Z') });
  if (reason) el.t(reason);
  return el;
}

/** The single payload child of an iq, or null when there are zero or several. */
export function iqPayload(iq: Element): Element | null | 'many' {
  let found: Element | null = null;
  for (const c of iq.children) {
    if (typeof c === 'string') continue;
    if (c.name === 'error') continue;
    if (found) return 'many';
    found = c;
  }
  return found;
}

/** A copy that serializes on its own: namespace prefixes declared on ancestors are re-declared on it. */
export function standalone(el: Element): Element {
  const copy = clone(el);
  const inherited = el.parent ? el.parent.getXmlns() : {};
  for (const [uri, prefix] of Object.entries(inherited)) {
    if (prefix && copy.attrs[`xmlns:${prefix}`] === undefined) copy.attrs[`xmlns:${prefix}`] = uri;
  }
  return copy;
}
