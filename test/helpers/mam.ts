// XEP-0313 query helpers for tests: send a MAM query and collect its results and <fin/>.
import type { Element } from 'ltx';
import { type TestClient, xml } from './client.js';

export const NS_MAM = 'urn:xmpp:mam:2';
export const NS_RSM = 'http://jabber.org/protocol/rsm';

export interface MamQuery {
  fields?: Record<string, string | string[]>;
  rsm?: { max?: number; after?: string; before?: string };
  flip?: boolean;
  to?: string;
}

export interface MamResult {
  /** The result messages, in the order received. */
  results: Element[];
  fin: Element;
  ids: string[];
  bodies: (string | null)[];
  first?: string;
  firstIndex?: number;
  last?: string;
  count?: number;
  complete: boolean;
}

let qseq = 0;

export function mamQueryIq(q: MamQuery, queryid: string): Element {
  const children: Element[] = [];
  if (q.fields) {
    const fields = [xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, NS_MAM))];
    for (const [k, v] of Object.entries(q.fields)) {
      fields.push(xml('field', { var: k }, ...(Array.isArray(v) ? v : [v]).map((x) => xml('value', {}, x))));
    }
    children.push(xml('x', { xmlns: 'jabber:x:data', type: 'submit' }, ...fields));
  }
  if (q.rsm) {
    const set: Element[] = [];
    if (q.rsm.max !== undefined) set.push(xml('max', {}, String(q.rsm.max)));
    if (q.rsm.after !== undefined) set.push(xml('after', {}, q.rsm.after));
    if (q.rsm.before !== undefined) set.push(xml('before', {}, q.rsm.before));
    children.push(xml('set', { xmlns: NS_RSM }, ...set));
  }
  if (q.flip) children.push(xml('flip-page'));
  return xml('iq', { type: 'set', ...(q.to ? { to: q.to } : {}) }, xml('query', { xmlns: NS_MAM, queryid }, ...children));
}

export async function mamQuery(c: TestClient, q: MamQuery = {}, timeoutMs = 10_000): Promise<MamResult> {
  const queryid = `q${++qseq}`;
  const res = await c.iq(mamQueryIq(q, queryid), timeoutMs);
  // The server sends every result before the iq result, so they have all arrived by now.
  const results = c.received.filter((el) => el.name === 'message' && el.getChild('result', NS_MAM)?.attrs.queryid === queryid);
  const fin = res.getChild('fin', NS_MAM);
  if (!fin) throw new Error(`no <fin/> in ${res}`);
  const set = fin.getChild('set', NS_RSM);
  const first = set?.getChild('first');
  const out: MamResult = {
    results,
    fin,
    ids: results.map((m) => m.getChild('result', NS_MAM)?.attrs.id as string),
    bodies: results.map((m) => m.getChild('result')?.getChild('forwarded')?.getChild('message')?.getChildText('body') ?? null),
    complete: fin.attrs.complete === 'true',
  };
  if (first) {
    out.first = first.getText();
    out.firstIndex = Number(first.attrs.index);
  }
  const last = set?.getChildText('last');
  if (last) out.last = last;
  const count = set?.getChildText('count');
  if (count) out.count = Number(count);
  return out;
}
