// RFC 6120 §4.9.3 stream error conditions and §8.3.3 stanza error conditions.
import { Element } from 'ltx';
import { NS } from './ns.js';

export type StreamErrorCondition =
  | 'bad-format' | 'bad-namespace-prefix' | 'conflict' | 'connection-timeout' | 'host-gone'
  | 'host-unknown' | 'improper-addressing' | 'internal-server-error' | 'invalid-from'
  | 'invalid-namespace' | 'invalid-xml' | 'not-authorized' | 'not-well-formed' | 'policy-violation'
  | 'remote-connection-failed' | 'reset' | 'resource-constraint' | 'restricted-xml' | 'see-other-host'
  | 'system-shutdown' | 'undefined-condition' | 'unsupported-encoding' | 'unsupported-feature'
  | 'unsupported-stanza-type' | 'unsupported-version';

export type StanzaErrorType = 'auth' | 'cancel' | 'continue' | 'modify' | 'wait';

export type StanzaErrorCondition =
  | 'bad-request' | 'conflict' | 'feature-not-implemented' | 'forbidden' | 'gone'
  | 'internal-server-error' | 'item-not-found' | 'jid-malformed' | 'not-acceptable' | 'not-allowed'
  | 'not-authorized' | 'policy-violation' | 'recipient-unavailable' | 'redirect'
  | 'registration-required' | 'remote-server-not-found' | 'remote-server-timeout'
  | 'resource-constraint' | 'service-unavailable' | 'subscription-required'
  | 'undefined-condition' | 'unexpected-request';

/** A stream-level error: the session writes <stream:error/> and closes. */
export class StreamError extends Error {
  constructor(
    readonly condition: StreamErrorCondition,
    readonly text?: string,
    /** Application-specific condition element (RFC 6120 §4.9.4), e.g. XEP-0198 <handled-count-too-high/>. */
    readonly appCondition?: Element,
  ) {
    super(text ? `${condition}: ${text}` : condition);
    this.name = 'StreamError';
  }

  toElement(): Element {
    const el = new Element('stream:error');
    el.c(this.condition, { xmlns: NS.STREAMS });
    if (this.text) el.c('text', { xmlns: NS.STREAMS, 'xml:lang': 'en' }).t(this.text);
    if (this.appCondition) el.cnode(this.appCondition);
    return el;
  }
}

/** A stanza-level error; thrown by handlers to answer with an error stanza. */
export class StanzaError extends Error {
  constructor(
    readonly type: StanzaErrorType,
    readonly condition: StanzaErrorCondition,
    readonly text?: string,
    /** Application-specific condition element (e.g. <blocked xmlns='urn:xmpp:blocking:errors'/>). */
    readonly appCondition?: Element,
  ) {
    super(text ? `${condition}: ${text}` : condition);
    this.name = 'StanzaError';
  }

  toElement(by?: string): Element {
    const el = new Element('error', { type: this.type, by });
    el.c(this.condition, { xmlns: NS.STANZAS });
    if (this.text) el.c('text', { xmlns: NS.STANZAS, 'xml:lang': 'en' }).t(this.text);
    if (this.appCondition) el.cnode(this.appCondition);
    return el;
  }
}

/** Default error type for each condition (RFC 6120 §8.3.3). */
export const DEFAULT_ERROR_TYPE: Record<StanzaErrorCondition, StanzaErrorType> = {
  'bad-request': 'modify',
  conflict: 'cancel',
  'feature-not-implemented': 'cancel',
  forbidden: 'auth',
  gone: 'cancel',
  'internal-server-error': 'cancel',
  'item-not-found': 'cancel',
  'jid-malformed': 'modify',
  'not-acceptable': 'modify',
  'not-allowed': 'cancel',
  'not-authorized': 'auth',
  'policy-violation': 'modify',
  'recipient-unavailable': 'wait',
  redirect: 'modify',
  'registration-required': 'auth',
  'remote-server-not-found': 'cancel',
  'remote-server-timeout': 'wait',
  'resource-constraint': 'wait',
  'service-unavailable': 'cancel',
  'subscription-required': 'auth',
  'undefined-condition': 'cancel',
  'unexpected-request': 'wait',
};

export function stanzaError(condition: StanzaErrorCondition, text?: string, appCondition?: Element): StanzaError {
  return new StanzaError(DEFAULT_ERROR_TYPE[condition], condition, text, appCondition);
}
