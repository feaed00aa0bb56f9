// XEP-0050 ad-hoc commands: namespace, the command-specific error conditions (§4.6) and note
// elements, shared by the framework (src/modules/adhoc.ts) and the modules offering commands.
import { Element } from 'ltx';
import { StanzaError, type StanzaErrorCondition, type StanzaErrorType } from './errors.js';

export const NS_COMMANDS = 'http://jabber.org/protocol/commands';

export type CommandErrorCondition = 'malformed-action' | 'bad-action' | 'bad-locale' | 'bad-payload' | 'bad-sessionid' | 'session-expired';

/** A StanzaError carrying an XEP-0050 specific condition, with the general condition of §4.6. */
export function commandError(specific: CommandErrorCondition, text?: string): StanzaError {
  const general: [StanzaErrorType, StanzaErrorCondition] = specific === 'session-expired' ? ['cancel', 'not-allowed'] : ['modify', 'bad-request'];
  return new StanzaError(general[0], general[1], text, new Element(specific, { xmlns: NS_COMMANDS }));
}

export type NoteType = 'info' | 'warn' | 'error';

export function note(type: NoteType, text: string): Element {
  return new Element('note', { type }).t(text);
}
