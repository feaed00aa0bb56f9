// The iq side of a simple hosted service (a component-like JID such as search.<host> or
// upload.<host>): what every such service answers the same way. Presence and iq results/errors are
// ignored; a stanza without `from` is bad-request; anything but an iq to the bare service JID is
// service-unavailable; an iq needs exactly one payload; disco#info and disco#items (no node) are
// answered from `discoInfo`; the service's own requests go to `handle`, which resolves the result
// payload, or undefined when it does not serve that request (service-unavailable, or
// item-not-found for a node). A StanzaError becomes the error reply; anything else is logged and
// answered with internal-server-error.
import { Element } from 'ltx';
import type { Logger } from '../core/logger.js';
import { StanzaError, stanzaError } from './errors.js';
import type { Jid } from './jid.js';
import { NS } from './ns.js';
import { errorReply, iqPayload, iqResult } from './stanza.js';

export interface ServiceIq {
  stanza: Element;
  to: Jid;
  from: Jid | null;
  /** Sends the reply (the router). */
  route(reply: Element): Promise<void>;
  log: Logger;
  /** Names the service in the log: `<what> request failed`. */
  what: string;
  discoInfo(): Element;
  handle(payload: Element, type: 'get' | 'set', from: Jid): Promise<Element | undefined>;
}

export async function answerServiceIq(o: ServiceIq): Promise<void> {
  const { stanza, to, from } = o;
  const type = stanza.attrs.type;
  if (stanza.name === 'presence' || type === 'error' || type === 'result') return;
  let reply: Element;
  try {
    if (!from) throw stanzaError('bad-request');
    if (stanza.name !== 'iq' || to.local || to.resource) throw stanzaError('service-unavailable');
    const payload = iqPayload(stanza);
    if (payload === null || payload === 'many') throw stanzaError('bad-request');
    const ns = payload.attrs.xmlns;
    const plainQuery = type === 'get' && payload.name === 'query' && payload.attrs.node === undefined;
    let result: Element | undefined;
    if (plainQuery && ns === NS.DISCO_INFO) result = o.discoInfo();
    else if (plainQuery && ns === NS.DISCO_ITEMS) result = new Element('query', { xmlns: NS.DISCO_ITEMS });
    else result = await o.handle(payload, type === 'set' ? 'set' : 'get', from);
    if (!result) throw stanzaError(payload.attrs.node !== undefined ? 'item-not-found' : 'service-unavailable');
    reply = iqResult(stanza, result);
  } catch (err) {
    if (!(err instanceof StanzaError)) o.log.error({ err }, `${o.what} request failed`);
    reply = errorReply(stanza, err instanceof StanzaError ? err : stanzaError('internal-server-error'));
  }
  if (reply.attrs.to) await o.route(reply);
}
