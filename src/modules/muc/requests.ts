// XEP-0045 request forms carried in messages to a room: §7.13 a visitor's voice request and §8.6
// the approval form the room sends to moderators (FORM_TYPE muc#request, §15.5.2), and §9.9 the
// registration approval form the room sends to admins (FORM_TYPE muc#register, §15.5.1). Pure
// builders and readers; the room service (index.ts) decides who may send what.
import type { Element } from 'ltx';
import { dataForm, findForm, formValues, parseBoolean } from '../../xmpp/dataforms.js';

export const NS_MUC_REQUEST = 'http://jabber.org/protocol/muc#request';
export const NS_MUC_REGISTER = 'http://jabber.org/protocol/muc#register';

/** What a submitted request form in a message to the room asks for. */
export type RequestForm =
  | { kind: 'voice-request' }
  | { kind: 'voice-approval'; nick: string; jid: string; allow: boolean }
  | { kind: 'registration-approval'; jid: string; nick: string; allow: boolean };

/**
 * Reads the submitted muc#request or muc#register form of a message, or null when it carries none
 * (the message is then something else: an invitation, a decline...). Values are plain text here;
 * the caller checks them against the room.
 */
export function readRequestForm(message: Element): RequestForm | null {
  const x = findForm(message);
  if (!x || x.attrs.type !== 'submit') return null;
  const v = formValues(x);
  const one = (name: string) => v.get(name)?.[0]?.trim() ?? '';
  const type = one('FORM_TYPE');
  if (type === NS_MUC_REQUEST) {
    // §8.6: the moderator's submission carries muc#request_allow; the visitor's request does not.
    if (!v.has('muc#request_allow')) return { kind: 'voice-request' };
    return { kind: 'voice-approval', nick: one('muc#roomnick'), jid: one('muc#jid'), allow: parseBoolean(one('muc#request_allow')) === true };
  }
  if (type === NS_MUC_REGISTER && v.has('muc#register_allow')) {
    return { kind: 'registration-approval', jid: one('muc#jid'), nick: one('muc#register_roomnick'), allow: parseBoolean(one('muc#register_allow')) === true };
  }
  return null;
}

/** §8.6 the voice approval form sent to each moderator. */
export function voiceApprovalForm(realJid: string, nick: string): Element {
  return dataForm('form', {
    title: 'Voice request',
    instructions: 'To approve this request for voice, select the "Grant voice to this person?" checkbox and click OK. To skip this request, click the cancel button.',
    formType: NS_MUC_REQUEST,
    fields: [
      { var: 'muc#role', type: 'list-single', label: 'Requested role', values: ['participant'], options: [{ value: 'participant' }] },
      { var: 'muc#jid', type: 'jid-single', label: 'User ID', values: [realJid] },
      { var: 'muc#roomnick', type: 'text-single', label: 'Room Nickname', values: [nick] },
      { var: 'muc#request_allow', type: 'boolean', label: 'Grant voice to this person?', values: ['false'] },
    ],
  });
}

/**
 * §9.9 the registration approval form sent to each admin and owner. The XEP's recommended form
 * does not name the applicant; muc#jid (the muc#request field) does, so the approval can say whom.
 */
export function registrationApprovalForm(bare: string, nick: string): Element {
  return dataForm('form', {
    title: 'Registration request',
    instructions: 'To approve this registration request, select the "Allow this person to register with the room?" checkbox and click OK. To skip this request, click the cancel button.',
    formType: NS_MUC_REGISTER,
    fields: [
      { var: 'muc#jid', type: 'jid-single', label: 'User ID', values: [bare] },
      { var: 'muc#register_roomnick', type: 'text-single', label: 'Desired Nickname', values: [nick] },
      { var: 'muc#register_allow', type: 'boolean', label: 'Allow this person to register with the room?', values: ['0'] },
    ],
  });
}
