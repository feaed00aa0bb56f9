// iq dispatch (DESIGN.md §3): a returned Element is the result payload, undefined an empty result,
// a thrown StanzaError an error reply, any other throw internal-server-error (logged, never echoed),
// no handler service-unavailable, more or fewer than one payload child bad-request.
import type { Element } from 'ltx';
import { StanzaError, stanzaError } from '../xmpp/errors.js';
import { iqPayload } from '../xmpp/stanza.js';
import type { IqHandler, IqRequest, IqTarget, IqType } from './module.js';
import type { Logger } from './logger.js';

interface Registration {
  handler: IqHandler;
  target: IqTarget;
  owner: string;
}

export class IqDispatcher {
  private readonly handlers = new Map<string, Registration>();

  constructor(private readonly log: Logger) {}

  register(type: IqType, ns: string, name: string, handler: IqHandler, target: IqTarget, owner: string): () => void {
    const key = `${type} ${ns} ${name}`;
    if (this.handlers.has(key)) throw new Error(`iq handler for ${key} already registered by ${this.handlers.get(key)?.owner}`);
    const reg = { handler, target, owner };
    this.handlers.set(key, reg);
    return () => {
      if (this.handlers.get(key) === reg) this.handlers.delete(key);
    };
  }

  /** Namespaces with a handler for a target (for disco#info). */
  namespaces(target: 'server' | 'account'): string[] {
    const out = new Set<string>();
    for (const [key, reg] of this.handlers) {
      if (reg.target === target || reg.target === 'both') out.add(key.split(' ')[1] as string);
    }
    return [...out];
  }

  /** Runs the handler for a get/set iq; resolves the payload to answer with, or throws StanzaError. */
  async dispatch(req: Omit<IqRequest, 'payload'>, target: 'server' | 'account'): Promise<Element | undefined> {
    const payload = iqPayload(req.stanza);
    if (payload === null || payload === 'many') throw stanzaError('bad-request', 'an iq get/set carries exactly one payload');
    const ns = payload.attrs.xmlns ?? '';
    const reg = this.handlers.get(`${req.stanza.attrs.type} ${ns} ${payload.name}`);
    if (!reg || (reg.target !== target && reg.target !== 'both')) throw stanzaError('service-unavailable');
    try {
      return await reg.handler({ ...req, payload });
    } catch (err) {
      if (err instanceof StanzaError) throw err;
      this.log.error({ err, ns, owner: reg.owner }, 'iq handler failed');
      throw stanzaError('internal-server-error');
    }
  }
}
