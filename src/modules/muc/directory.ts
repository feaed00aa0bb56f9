// XEP-0045 §6.3 the room directory (disco#items on the service) paged with XEP-0059 result set
// management (max, after, before, index; first/last/count in the answer), and the muc#unique room
// name (XEP-0045 1.24 §10.1.4; dropped from later versions in favour of client-made UUIDs, still
// sent by older clients). Pure functions: the service picks which rooms are listed.
import { randomBytes } from 'node:crypto';
import { Element } from 'ltx';
import { StanzaError, stanzaError } from '../../xmpp/errors.js';
import { NS } from '../../xmpp/ns.js';

export const NS_RSM = 'http://jabber.org/protocol/rsm';
export const NS_MUC_UNIQUE = 'http://jabber.org/protocol/muc#unique';

export interface DirectoryEntry {
  jid: string;
  name?: string;
}

function rsmNumber(el: Element | undefined, what: string): number | undefined {
  if (!el) return undefined;
  const t = el.getText().trim();
  if (!/^\d{1,9}$/.test(t)) throw stanzaError('bad-request', `RSM <${what}/> must be a non-negative integer`);
  return Number(t);
}

/**
 * The disco#items answer for `entries` (in a stable order: the caller sorts them). Without a
 * <set/> the whole list is returned when it fits in `pageCap`, otherwise its first page with a
 * <set/> saying so (§6.3); a requested <max/> is capped at `pageCap` too.
 */
export function roomPage(entries: DirectoryEntry[], set: Element | undefined, pageCap: number): Element {
  const q = new Element('query', { xmlns: NS.DISCO_ITEMS });
  const count = entries.length;
  let max = Math.min(rsmNumber(set?.getChild('max'), 'max') ?? pageCap, pageCap);
  let start = 0;
  const after = set?.getChild('after');
  const before = set?.getChild('before');
  const index = rsmNumber(set?.getChild('index'), 'index');
  if (after) {
    const i = entries.findIndex((e) => e.jid === after.getText().trim());
    if (i === -1) throw new StanzaError('cancel', 'item-not-found', 'RSM <after/>: no such room');
    start = i + 1;
  } else if (before) {
    const id = before.getText().trim();
    // An empty <before/> asks for the last page (XEP-0059 §2.5).
    const end = id === '' ? count : entries.findIndex((e) => e.jid === id);
    if (end === -1) throw new StanzaError('cancel', 'item-not-found', 'RSM <before/>: no such room');
    start = Math.max(0, end - max);
    max = Math.min(max, end);
  } else if (index !== undefined) {
    if (index > count) throw new StanzaError('cancel', 'item-not-found', 'RSM <index/> past the end');
    start = index;
  }
  const page = entries.slice(start, start + max);
  for (const e of page) q.c('item', { jid: e.jid, name: e.name || undefined });
  if (!set && page.length === count) return q;
  const s = q.c('set', { xmlns: NS_RSM });
  const first = page[0];
  const last = page.at(-1);
  if (first && last) {
    s.c('first', { index: String(start) }).t(first.jid);
    s.c('last').t(last.jid);
  }
  s.c('count').t(String(count));
  return q;
}

/** A room name nobody uses (CSPRNG, 160 bits: not guessable, so a private room stays private). */
export function uniqueRoomName(taken: (local: string) => boolean): string {
  for (;;) {
    const name = randomBytes(20).toString('hex');
    if (!taken(name)) return name;
  }
}
