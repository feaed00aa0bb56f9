// Unit tests of the pure MUC helpers: the XEP-0059 room directory pages (directory.ts) and the
// XEP-0045 request forms read from messages (requests.ts), at the edges the integration test skips.
import { Element } from 'ltx';
import { describe, expect, it } from 'vitest';
import { NS_RSM, roomPage, uniqueRoomName } from '../../src/modules/muc/directory.js';
import { NS_MUC_REGISTER, NS_MUC_REQUEST, readRequestForm, voiceApprovalForm } from '../../src/modules/muc/requests.js';
import { StanzaError } from '../../src/xmpp/errors.js';

const rooms = ['a', 'b', 'c', 'd', 'e'].map((l) => ({ jid: `${l}@conf.example`, name: l.toUpperCase() }));
const jids = (q: Element) => q.getChildren('item').map((i) => i.attrs.jid as string);

function rsm(children: Record<string, string>): Element {
  const s = new Element('set', { xmlns: NS_RSM });
  for (const [k, v] of Object.entries(children)) s.c(k).t(v);
  return s;
}

function condition(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof StanzaError) return e.condition;
    throw e;
  }
  throw new Error('no error');
}

describe('roomPage (XEP-0059 on disco#items)', () => {
  it('returns the whole list without <set/> when it fits the cap, and the first page with <set/> when not', () => {
    const all = roomPage(rooms, undefined, 10);
    expect(jids(all)).toHaveLength(5);
    expect(all.getChild('set', NS_RSM)).toBeUndefined();
    const capped = roomPage(rooms, undefined, 2);
    expect(jids(capped)).toEqual(['a@conf.example', 'b@conf.example']);
    expect(capped.getChild('set', NS_RSM)?.getChildText('count')).toBe('5');
  });

  it('before a near-start item gives the shorter page that precedes it; index past the end is item-not-found', () => {
    expect(jids(roomPage(rooms, rsm({ max: '3', before: 'b@conf.example' }), 10))).toEqual(['a@conf.example']);
    const first = roomPage(rooms, rsm({ max: '3', before: 'b@conf.example' }), 10).getChild('set', NS_RSM)?.getChild('first');
    expect(first?.attrs.index).toBe('0');
    expect(jids(roomPage(rooms, rsm({ max: '2', index: '5' }), 10))).toEqual([]);
    expect(condition(() => roomPage(rooms, rsm({ index: '6' }), 10))).toBe('item-not-found');
    expect(condition(() => roomPage(rooms, rsm({ before: 'zz@conf.example' }), 10))).toBe('item-not-found');
    expect(condition(() => roomPage(rooms, rsm({ max: '-1' }), 10))).toBe('bad-request');
  });

  it('an empty page has a count and no first/last', () => {
    const q = roomPage(rooms, rsm({ after: 'e@conf.example' }), 10);
    const set = q.getChild('set', NS_RSM);
    expect(jids(q)).toEqual([]);
    expect(set?.getChild('first')).toBeUndefined();
    expect(set?.getChildText('count')).toBe('5');
  });

  it('uniqueRoomName skips names in use', () => {
    let calls = 0;
    const name = uniqueRoomName(() => ++calls < 3);
    expect(calls).toBe(3);
    expect(name).toMatch(/^[0-9a-f]{40}$/);
  });
});

function message(formType: string, fields: Record<string, string>, type = 'submit'): Element {
  const m = new Element('message');
  const x = m.c('x', { xmlns: 'jabber:x:data', type });
  x.c('field', { var: 'FORM_TYPE' }).c('value').t(formType);
  for (const [k, v] of Object.entries(fields)) x.c('field', { var: k }).c('value').t(v);
  return m;
}

describe('readRequestForm (§7.13, §8.6, §9.9)', () => {
  it('tells a voice request from its approval, and reads the approval', () => {
    expect(readRequestForm(message(NS_MUC_REQUEST, { 'muc#role': 'participant' }))).toEqual({ kind: 'voice-request' });
    expect(readRequestForm(message(NS_MUC_REQUEST, { 'muc#roomnick': 'bob', 'muc#jid': 'b@x/r', 'muc#request_allow': '1' }))).toEqual({ kind: 'voice-approval', nick: 'bob', jid: 'b@x/r', allow: true });
    expect(readRequestForm(message(NS_MUC_REQUEST, { 'muc#roomnick': 'bob', 'muc#request_allow': 'yes' }))).toMatchObject({ allow: false });
  });

  it('reads a registration approval; ignores forms that are not submitted, other form types and a registration without a decision', () => {
    expect(readRequestForm(message(NS_MUC_REGISTER, { 'muc#jid': 'b@x', 'muc#register_allow': 'true' }))).toEqual({ kind: 'registration-approval', jid: 'b@x', nick: '', allow: true });
    expect(readRequestForm(message(NS_MUC_REQUEST, { 'muc#role': 'participant' }, 'form'))).toBeNull();
    expect(readRequestForm(message('urn:example:other', { 'muc#request_allow': '1' }))).toBeNull();
    expect(readRequestForm(message(NS_MUC_REGISTER, { 'muc#register_roomnick': 'x' }))).toBeNull();
    expect(readRequestForm(new Element('message'))).toBeNull();
  });

  it('the approval form a moderator gets, once submitted back with allow=true, reads as an approval', () => {
    const form = voiceApprovalForm('b@x/r', 'bob');
    form.attrs.type = 'submit';
    (form.getChildren('field').find((f) => f.attrs.var === 'muc#request_allow')?.getChild('value') as Element).children = ['true'];
    const m = new Element('message').cnode(form).root();
    expect(readRequestForm(m)).toEqual({ kind: 'voice-approval', nick: 'bob', jid: 'b@x/r', allow: true });
  });
});
