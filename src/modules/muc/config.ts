// XEP-0045 §10.2 room configuration (the muc#roomconfig form, §15.5.3 field names) and §6.4 the
// muc#roominfo extended disco form. The configuration is kept as a plain object, stored as JSON for
// persistent rooms, and always re-validated on load so that a hand-edited row cannot break a room.
import { Element } from 'ltx';
import { z } from 'zod';
import { StanzaError } from '../../xmpp/errors.js';
import { NS } from '../../xmpp/ns.js';

export const NS_MUC = 'http://jabber.org/protocol/muc';
export const NS_MUC_USER = 'http://jabber.org/protocol/muc#user';
export const NS_MUC_ADMIN = 'http://jabber.org/protocol/muc#admin';
export const NS_MUC_OWNER = 'http://jabber.org/protocol/muc#owner';
export const NS_ROOMCONFIG = 'http://jabber.org/protocol/muc#roomconfig';
export const NS_ROOMINFO = 'http://jabber.org/protocol/muc#roominfo';
export const NS_CONFERENCE = 'jabber:x:conference';

export type AllowPm = 'anyone' | 'participants' | 'moderators' | 'none';

export const roomConfigSchema = z.object({
  name: z.string(),
  description: z.string(),
  persistent: z.boolean(),
  public: z.boolean(),
  membersOnly: z.boolean(),
  moderated: z.boolean(),
  passwordProtected: z.boolean(),
  password: z.string(),
  /** Who sees real JIDs: semi-anonymous ('moderators') or non-anonymous ('anyone'). */
  whois: z.enum(['moderators', 'anyone']),
  maxUsers: z.number().int().min(1),
  changeSubject: z.boolean(),
  allowInvites: z.boolean(),
  allowPm: z.enum(['anyone', 'participants', 'moderators', 'none']),
  historyLength: z.number().int().min(0),
  language: z.string(),
  /** XEP-0313 room archive (archive.ts): messages are stored and the room answers MAM queries. */
  enableArchiving: z.boolean(),
  /** XEP-0486 room vCard (vcard.ts), serialized; '' when none. Not a form field. */
  vcard: z.string(),
});

export type RoomConfig = z.infer<typeof roomConfigSchema>;

export interface ConfigLimits {
  maxUsers: number;
  maxHistory: number;
  maxNameLength: number;
  maxDescriptionLength: number;
}

function field(form: Element, v: string, type: string, label: string, values: string[], options?: [string, string][]): void {
  const f = form.c('field', { var: v, type, label });
  if (options) for (const [value, l] of options) f.c('option', { label: l }).c('value').t(value);
  for (const x of values) f.c('value').t(x);
}

const b = (x: boolean) => (x ? '1' : '0');

/** §10.2 the configuration form an owner fills in. */
export function configForm(c: RoomConfig, limits: ConfigLimits): Element {
  const form = new Element('x', { xmlns: NS.DATA_FORMS, type: 'form' });
  form.c('title').t('Room configuration');
  field(form, 'FORM_TYPE', 'hidden', '', [NS_ROOMCONFIG]);
  field(form, 'muc#roomconfig_roomname', 'text-single', 'Name', [c.name]);
  field(form, 'muc#roomconfig_roomdesc', 'text-single', 'Description', [c.description]);
  field(form, 'muc#roomconfig_lang', 'text-single', 'Language', [c.language]);
  field(form, 'muc#roomconfig_persistentroom', 'boolean', 'Persistent', [b(c.persistent)]);
  field(form, 'muc#roomconfig_publicroom', 'boolean', 'Listed in the room directory', [b(c.public)]);
  field(form, 'muc#roomconfig_membersonly', 'boolean', 'Members only', [b(c.membersOnly)]);
  field(form, 'muc#roomconfig_moderatedroom', 'boolean', 'Moderated (visitors cannot speak)', [b(c.moderated)]);
  field(form, 'muc#roomconfig_passwordprotectedroom', 'boolean', 'Password protected', [b(c.passwordProtected)]);
  field(form, 'muc#roomconfig_roomsecret', 'text-private', 'Password', [c.password]);
  field(form, 'muc#roomconfig_whois', 'list-single', 'Who may see real JIDs', [c.whois], [
    ['moderators', 'Moderators only'],
    ['anyone', 'Anyone'],
  ]);
  field(form, 'muc#roomconfig_maxusers', 'list-single', 'Maximum occupants', [String(c.maxUsers)],
    [...new Set([10, 20, 30, 50, 100, 200, 500, 1000, c.maxUsers].filter((n) => n <= limits.maxUsers))].sort((x, y) => x - y).map((n) => [String(n), String(n)]));
  field(form, 'muc#roomconfig_changesubject', 'boolean', 'Occupants may change the subject', [b(c.changeSubject)]);
  field(form, 'muc#roomconfig_allowinvites', 'boolean', 'Occupants may invite others', [b(c.allowInvites)]);
  field(form, 'muc#roomconfig_allowpm', 'list-single', 'Who may send private messages', [c.allowPm], [
    ['anyone', 'Anyone'],
    ['participants', 'Participants'],
    ['moderators', 'Moderators'],
    ['none', 'Nobody'],
  ]);
  field(form, 'muc#roomconfig_historylength', 'text-single', `Messages of history sent on join (0-${limits.maxHistory})`, [String(c.historyLength)]);
  field(form, 'muc#roomconfig_enablearchiving', 'boolean', 'Archive messages (XEP-0313)', [b(c.enableArchiving)]);
  return form;
}

function bool(v: string, name: string): boolean {
  if (v === '1' || v === 'true') return true;
  if (v === '0' || v === 'false') return false;
  throw new StanzaError('modify', 'not-acceptable', `${name}: not a boolean`);
}

function int(v: string, name: string, min: number, max: number): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < min || n > max) throw new StanzaError('modify', 'not-acceptable', `${name}: a number from ${min} to ${max}`);
  return n;
}

/** Applies a submitted muc#roomconfig form to a copy of `c`; unknown fields are ignored (§10.2). */
export function applyConfigForm(c: RoomConfig, form: Element, limits: ConfigLimits): RoomConfig {
  const next: RoomConfig = { ...c };
  for (const f of form.getChildren('field')) {
    const name = f.attrs.var as string | undefined;
    const values = f.getChildren('value').map((v) => v.getText());
    const v = values[0] ?? '';
    switch (name) {
      case 'FORM_TYPE':
        if (v !== NS_ROOMCONFIG) throw new StanzaError('modify', 'bad-request', 'FORM_TYPE is not muc#roomconfig');
        break;
      case 'muc#roomconfig_roomname':
        if ([...v].length > limits.maxNameLength) throw new StanzaError('modify', 'not-acceptable', 'room name too long');
        next.name = v;
        break;
      case 'muc#roomconfig_roomdesc':
        if ([...v].length > limits.maxDescriptionLength) throw new StanzaError('modify', 'not-acceptable', 'description too long');
        next.description = v;
        break;
      case 'muc#roomconfig_lang':
        next.language = v.slice(0, 35);
        break;
      case 'muc#roomconfig_persistentroom': next.persistent = bool(v, name); break;
      case 'muc#roomconfig_publicroom': next.public = bool(v, name); break;
      case 'muc#roomconfig_membersonly': next.membersOnly = bool(v, name); break;
      case 'muc#roomconfig_moderatedroom': next.moderated = bool(v, name); break;
      case 'muc#roomconfig_passwordprotectedroom': next.passwordProtected = bool(v, name); break;
      case 'muc#roomconfig_roomsecret':
        if ([...v].length > 256) throw new StanzaError('modify', 'not-acceptable', 'password too long');
        next.password = v;
        break;
      case 'muc#roomconfig_whois':
        if (v !== 'moderators' && v !== 'anyone') throw new StanzaError('modify', 'not-acceptable', 'whois: moderators or anyone');
        next.whois = v;
        break;
      case 'muc#roomconfig_maxusers':
        next.maxUsers = v === 'none' || v === '' ? limits.maxUsers : int(v, name, 1, limits.maxUsers);
        break;
      case 'muc#roomconfig_changesubject': next.changeSubject = bool(v, name); break;
      case 'muc#roomconfig_allowinvites': next.allowInvites = bool(v, name); break;
      case 'muc#roomconfig_allowpm':
        if (v !== 'anyone' && v !== 'participants' && v !== 'moderators' && v !== 'none') throw new StanzaError('modify', 'not-acceptable', 'allowpm');
        next.allowPm = v;
        break;
      case 'muc#roomconfig_historylength':
        next.historyLength = int(v, name, 0, limits.maxHistory);
        break;
      case 'muc#roomconfig_enablearchiving': next.enableArchiving = bool(v, name); break;
      default:
        break;
    }
  }
  // A password-protected room without a password would admit nobody who knows it is protected.
  if (next.passwordProtected && next.password === '') throw new StanzaError('modify', 'not-acceptable', 'a password-protected room needs a password');
  return next;
}

/** §6.4 disco#info features of a room. */
export function roomFeatures(c: RoomConfig): string[] {
  return [
    NS_MUC,
    c.persistent ? 'muc_persistent' : 'muc_temporary',
    c.membersOnly ? 'muc_membersonly' : 'muc_open',
    c.moderated ? 'muc_moderated' : 'muc_unmoderated',
    c.passwordProtected ? 'muc_passwordprotected' : 'muc_unsecured',
    c.public ? 'muc_public' : 'muc_hidden',
    c.whois === 'anyone' ? 'muc_nonanonymous' : 'muc_semianonymous',
  ];
}

/** §6.4 the muc#roominfo form. */
export function roomInfoForm(c: RoomConfig, occupants: number, subject: string): Element {
  const form = new Element('x', { xmlns: NS.DATA_FORMS, type: 'result' });
  field(form, 'FORM_TYPE', 'hidden', '', [NS_ROOMINFO]);
  field(form, 'muc#roominfo_description', 'text-single', 'Description', [c.description]);
  field(form, 'muc#roominfo_occupants', 'text-single', 'Number of occupants', [String(occupants)]);
  field(form, 'muc#roominfo_subject', 'text-single', 'Subject', [subject]);
  field(form, 'muc#roominfo_lang', 'text-single', 'Language', [c.language]);
  field(form, 'muc#roomconfig_maxusers', 'text-single', 'Maximum occupants', [String(c.maxUsers)]);
  field(form, 'muc#roomconfig_changesubject', 'boolean', 'Occupants may change the subject', [b(c.changeSubject)]);
  field(form, 'muc#roomconfig_allowinvites', 'boolean', 'Occupants may invite others', [b(c.allowInvites)]);
  return form;
}
