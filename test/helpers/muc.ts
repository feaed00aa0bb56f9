// Small XEP-0045 client helpers for the MUC integration tests.
import type { Element } from 'ltx';
import { iqError, type TestClient, xml } from './client.js';

export const NS_MUC = 'http://jabber.org/protocol/muc';
export const NS_MUC_USER = 'http://jabber.org/protocol/muc#user';
export const NS_MUC_ADMIN = 'http://jabber.org/protocol/muc#admin';
export const NS_MUC_OWNER = 'http://jabber.org/protocol/muc#owner';
export const NS_XDATA = 'jabber:x:data';
export const NS_OCCUPANT_ID = 'urn:xmpp:occupant-id:0';

export function statusCodes(p: Element): string[] {
  return (p.getChild('x', NS_MUC_USER)?.getChildren('status') ?? []).map((s) => s.attrs.code as string);
}

export function item(p: Element): Element | undefined {
  return p.getChild('x', NS_MUC_USER)?.getChild('item');
}

export function errorCondition(el: Element): string | undefined {
  return el.getChild('error')?.getChildElements()[0]?.name;
}

/** Sends the join presence and resolves the self-presence (status 110) or the error presence. */
export async function join(c: TestClient, occupant: string, x: Element[] = []): Promise<Element> {
  const bare = occupant.split('/')[0] as string;
  await c.send(xml('presence', { to: occupant }, xml('x', { xmlns: NS_MUC }, ...x)));
  return c.waitFor(
    (el) =>
      el.name === 'presence' &&
      (el.attrs.from as string).split('/')[0] === bare &&
      (el.attrs.type === 'error' || statusCodes(el).includes('110')),
  );
}

/** Waits for the subject message that ends the join sequence (§7.2.15). */
export function subject(c: TestClient, room: string): Promise<Element> {
  return c.waitFor((el) => el.name === 'message' && (el.attrs.from as string).startsWith(room) && !!el.getChild('subject') && !el.getChild('body'));
}

/** Creates an instant room (§10.1.2): join, then submit the empty form. */
export async function createInstant(c: TestClient, room: string, nick: string): Promise<Element> {
  const p = await join(c, `${room}/${nick}`);
  if (!statusCodes(p).includes('201')) throw new Error(`room not created: ${p}`);
  await subject(c, room);
  await c.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: NS_MUC_OWNER }, xml('x', { xmlns: NS_XDATA, type: 'submit' }))));
  return p;
}

/** Submits muc#roomconfig fields. */
export function configure(c: TestClient, room: string, fields: Record<string, string>): Promise<Element> {
  const f = [xml('field', { var: 'FORM_TYPE' }, xml('value', {}, 'http://jabber.org/protocol/muc#roomconfig'))];
  for (const [k, v] of Object.entries(fields)) f.push(xml('field', { var: `muc#roomconfig_${k}` }, xml('value', {}, v)));
  return c.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: NS_MUC_OWNER }, xml('x', { xmlns: NS_XDATA, type: 'submit' }, ...f))));
}

export function adminSet(c: TestClient, room: string, attrs: Record<string, string>, reason?: string): Promise<Element> {
  return c.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: NS_MUC_ADMIN }, xml('item', attrs, ...(reason ? [xml('reason', {}, reason)] : [])))));
}

export function groupchat(c: TestClient, room: string, body: string): Promise<void> {
  return c.send(xml('message', { to: room, type: 'groupchat' }, xml('body', {}, body)));
}

export function bodyFrom(c: TestClient, from: string, body: string): Promise<Element> {
  return c.waitFor((el) => el.name === 'message' && el.attrs.from === from && el.getChildText('body') === body);
}

/** The error condition of a muc#admin set that must fail. */
export async function adminSetError(c: TestClient, room: string, attrs: Record<string, string>): Promise<string> {
  return (await iqError(c, xml('iq', { type: 'set', to: room }, xml('query', { xmlns: NS_MUC_ADMIN }, xml('item', attrs))))).condition;
}
