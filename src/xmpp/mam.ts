// XEP-0313 §4 query parsing: the XEP-0004 filter form (with, start, end, withtext, and the
// #extended before-id, after-id, ids), XEP-0059 RSM <set/> (max, after, before; index is not
// supported) and <flip-page/>; plus the form that `iq get` discovers (§4.1.1). Shared by the user
// archives (modules/mam) and the room archives (modules/muc, §6 / §5.1.2).
import { randomBytes } from 'node:crypto';
import { Element } from 'ltx';
import { StanzaError, stanzaError } from './errors.js';
import { Jid } from './jid.js';

/**
 * A parsed query (the same shape as the storage layer's ArchiveQuery, kept here so that src/xmpp
 * does not depend on storage).
 */
export interface ArchiveQuery {
  with?: string;
  start?: number;
  end?: number;
  text?: string;
  afterId?: string;
  beforeId?: string;
  ids?: string[];
  max: number;
  after?: string;
  before?: string;
}

export const NS_MAM = 'urn:xmpp:mam:2';
export const NS_RSM = 'http://jabber.org/protocol/rsm';
export const NS_DATA = 'jabber:x:data';
/** XEP-0431 names the full-text field this way; 'withtext' is the name servers used before it. */
const FULLTEXT_FIELD = '{urn:xmpp:fulltext:0}fulltext';
const MAX_TEXT = 1000;
const MAX_ID = 256;

export interface ParsedQuery {
  query: ArchiveQuery;
  queryid?: string;
  flip: boolean;
}

export interface PagingLimits {
  defaultPageSize: number;
  maxPageSize: number;
}

const DATETIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-](\d{2}):(\d{2}))$/;

/** XEP-0082 DateTime to ms since epoch; bad-request when malformed. */
export function parseDateTime(s: string, field: string): number {
  const m = DATETIME.exec(s.trim());
  const bad = () => stanzaError('bad-request', `'${field}' is not a XEP-0082 DateTime`);
  if (!m) throw bad();
  const [, , mo, d, h, mi, sec, , , oh, om] = m;
  const n = (x: string | undefined) => Number(x ?? 0);
  if (n(mo) < 1 || n(mo) > 12 || n(d) < 1 || n(d) > 31 || n(h) > 23 || n(mi) > 59 || n(sec) > 60 || n(oh) > 23 || n(om) > 59) throw bad();
  const t = Date.parse(s.trim());
  if (Number.isNaN(t)) throw bad();
  return t;
}

function single(field: Element, name: string): string | undefined {
  const values = field.getChildren('value');
  if (values.length > 1) throw stanzaError('bad-request', `'${name}' takes one value`);
  const v = values[0]?.getText().trim();
  return v === '' ? undefined : v;
}

function checkId(id: string, what: string): string {
  if (id.length > MAX_ID) throw stanzaError('bad-request', `${what} is too long`);
  return id;
}

export function parseQuery(payload: Element, limits: PagingLimits): ParsedQuery {
  const query: ArchiveQuery = { max: limits.defaultPageSize };
  const queryid = payload.attrs.queryid as string | undefined;
  if (queryid !== undefined && queryid.length > MAX_ID) throw stanzaError('bad-request', 'queryid is too long');

  const forms = payload.getChildren('x', NS_DATA);
  if (forms.length > 1) throw stanzaError('bad-request', 'one form only');
  const form = forms[0];
  if (form) {
    if (form.attrs.type !== undefined && form.attrs.type !== 'submit') throw stanzaError('bad-request', "the form must be of type 'submit'");
    const seen = new Set<string>();
    for (const field of form.getChildren('field')) {
      const name = field.attrs.var as string | undefined;
      if (!name) throw stanzaError('bad-request', 'field without var');
      if (seen.has(name)) throw stanzaError('bad-request', `field '${name}' given twice`);
      seen.add(name);
      switch (name) {
        case 'FORM_TYPE': {
          const v = single(field, name);
          if (v !== NS_MAM) throw stanzaError('bad-request', `FORM_TYPE must be ${NS_MAM}`);
          break;
        }
        case 'with': {
          const v = single(field, name);
          if (v === undefined) break;
          const j = Jid.tryParse(v);
          if (!j) throw stanzaError('bad-request', "'with' is not a valid JID");
          query.with = j.resource ? j.full : j.bare;
          break;
        }
        case 'start':
        case 'end': {
          const v = single(field, name);
          if (v !== undefined) query[name] = parseDateTime(v, name);
          break;
        }
        case 'withtext':
        case FULLTEXT_FIELD: {
          const v = single(field, name);
          if (v === undefined) break;
          if (v.length > MAX_TEXT) throw stanzaError('bad-request', 'search text is too long');
          query.text = v;
          break;
        }
        case 'before-id':
        case 'after-id': {
          const v = single(field, name);
          if (v === undefined) break;
          if (name === 'before-id') query.beforeId = checkId(v, name);
          else query.afterId = checkId(v, name);
          break;
        }
        case 'ids': {
          const ids = field.getChildren('value').map((v) => v.getText().trim()).filter((v) => v !== '');
          if (ids.length > limits.maxPageSize) throw stanzaError('bad-request', `at most ${limits.maxPageSize} ids`);
          query.ids = [...new Set(ids.map((id) => checkId(id, 'an id')))];
          break;
        }
        default:
          // Silently ignoring a filter would return the wrong messages.
          throw stanzaError('bad-request', `unsupported field '${name}'`);
      }
    }
  }

  const set = payload.getChild('set', NS_RSM);
  if (set) {
    const max = set.getChild('max');
    if (max) {
      const t = max.getText().trim();
      if (!/^\d{1,9}$/.test(t)) throw stanzaError('bad-request', 'RSM <max/> must be a non-negative integer');
      query.max = Number(t);
    }
    if (set.getChild('index')) throw new StanzaError('cancel', 'feature-not-implemented', 'RSM <index/> is not supported');
    const after = set.getChild('after');
    if (after) {
      const t = after.getText().trim();
      if (t === '') throw stanzaError('bad-request', 'RSM <after/> needs an id');
      query.after = checkId(t, 'RSM <after/>');
    }
    const before = set.getChild('before');
    if (before) query.before = checkId(before.getText().trim(), 'RSM <before/>');
  }
  // The server's limit wins over the client's (XEP-0059 §2.1).
  query.max = Math.min(query.max, limits.maxPageSize);

  const out: ParsedQuery = { query, flip: !!payload.getChild('flip-page') };
  if (queryid !== undefined) out.queryid = queryid;
  return out;
}

/** The search form (§4.1.1): FORM_TYPE and every field a query may carry. */
export function queryForm(): Element {
  const x = new Element('x', { xmlns: NS_DATA, type: 'form' });
  x.c('field', { type: 'hidden', var: 'FORM_TYPE' }).c('value').t(NS_MAM);
  x.c('field', { type: 'jid-single', var: 'with', label: 'With' });
  x.c('field', { type: 'text-single', var: 'start', label: 'Start' });
  x.c('field', { type: 'text-single', var: 'end', label: 'End' });
  x.c('field', { type: 'text-single', var: 'withtext', label: 'Containing the words' });
  x.c('field', { type: 'text-single', var: FULLTEXT_FIELD, label: 'Search' });
  x.c('field', { type: 'text-single', var: 'before-id', label: 'Before the message with this id' });
  x.c('field', { type: 'text-single', var: 'after-id', label: 'After the message with this id' });
  x.c('field', { type: 'text-multi', var: 'ids', label: 'Only the messages with these ids' });
  const query = new Element('query', { xmlns: NS_MAM });
  query.cnode(x);
  return query;
}

const NS_FORWARD = 'urn:xmpp:forward:0';
const NS_DELAY = 'urn:xmpp:delay';
const stampOf = (ms: number) => new Date(ms).toISOString();

/** §4.2 one result of a query: the archived stanza forwarded (XEP-0297) with its time (XEP-0203). */
export function resultMessage(o: { from: string; to: string; queryid?: string; id: string; stamp: number; stanza: Element }): Element {
  const msg = new Element('message', { from: o.from, to: o.to, id: randomBytes(8).toString('hex') });
  const attrs: Record<string, string> = { xmlns: NS_MAM, id: o.id };
  if (o.queryid !== undefined) attrs.queryid = o.queryid;
  const fwd = msg.c('result', attrs).c('forwarded', { xmlns: NS_FORWARD });
  fwd.c('delay', { xmlns: NS_DELAY, stamp: stampOf(o.stamp) });
  fwd.cnode(o.stanza);
  return msg;
}

/** §4.1.2 the <fin/> closing a page, with its XEP-0059 set (first@index, last, count). */
export function finElement(page: { items: readonly { id: string }[]; index: number; count: number; complete: boolean }): Element {
  const fin = new Element('fin', page.complete ? { xmlns: NS_MAM, complete: 'true' } : { xmlns: NS_MAM });
  const set = fin.c('set', { xmlns: NS_RSM });
  const first = page.items[0];
  const last = page.items[page.items.length - 1];
  if (first && last) {
    set.c('first', { index: String(page.index) }).t(first.id);
    set.c('last').t(last.id);
  }
  set.c('count').t(String(page.count));
  return fin;
}

/** §6 archive metadata: the first and last entries, or an empty element for an empty archive. */
export function metadataElement(bounds: { first: { id: string; stamp: number }; last: { id: string; stamp: number } } | null): Element {
  const el = new Element('metadata', { xmlns: NS_MAM });
  if (bounds) {
    el.c('start', { id: bounds.first.id, timestamp: stampOf(bounds.first.stamp) });
    el.c('end', { id: bounds.last.id, timestamp: stampOf(bounds.last.stamp) });
  }
  return el;
}
