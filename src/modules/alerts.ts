// Alerts (issue 7): a <message type='headline'/> from a host to users, groups or everyone, with a
// subject, a body, an optional XEP-0066 §3 out-of-band URL (jabber:x:oob), a priority carried as
// the XEP-0131 SHIM `Urgency` header (low | medium | high), and the alert id as message id.
//
// - Delivered at once to available sessions (non-negative priority); kept in the alerts store for
//   the others and delivered at their next initial presence, then marked delivered. Headlines are
//   not offline messages (XEP-0160), hence a store of our own.
// - XEP-0184 §5: with receipts asked, the message carries <request xmlns='urn:xmpp:receipts'/>; the
//   <received id/> a client returns to the host is recorded per recipient; the report (pending /
//   delivered / received) is the ad-hoc command urn:parley:alerts:report.
// - Sent through XEP-0050 ad-hoc commands (src/modules/adhoc.ts, through the `adhoc.commands` hook):
//   XEP-0133 §4.23 `http://jabber.org/protocol/admin#announce` (a headline to every online session
//   of the host, nothing stored) and `urn:parley:alerts:send` (a two-stage form: compose, then
//   confirm with the resolved recipient count). Both need the `alert.send` or `admin` right.
// - `parley alert send` (src/cli/main.ts) writes an alert into storage from another process; the
//   running server polls the recipient rows added since it last looked (`pollSeconds`) and delivers
//   those whose recipient is online; the others wait for their login as usual.
import { randomBytes } from 'node:crypto';
import { Element } from 'ltx';
import { z } from 'zod';
import { defineModule, type ModuleContext } from '../core/module.js';
import { HANDLED, type FoldMap } from '../core/hooks.js';
import { AudienceError, resolveAudience, type AudienceContext } from '../core/audience.js';
import { StanzaError } from '../xmpp/errors.js';
import { Jid } from '../xmpp/jid.js';
import { delayElement } from '../xmpp/stanza.js';
import { commandError } from '../xmpp/adhoc.js';
import { dataForm, formValues, parseBoolean, type FieldSpec } from '../xmpp/dataforms.js';
import type { AlertPriority, AlertRecord } from '../storage/types.js';

export const NS_ALERTS = 'urn:parley:alerts:0';
export const NODE_SEND = 'urn:parley:alerts:send';
export const NODE_REPORT = 'urn:parley:alerts:report';
export const NODE_ANNOUNCE = 'http://jabber.org/protocol/admin#announce';
const NS_ADMIN = 'http://jabber.org/protocol/admin';
const NS_OOB = 'jabber:x:oob';
const NS_SHIM = 'http://jabber.org/protocol/shim';
const NS_RECEIPTS = 'urn:xmpp:receipts';
export const PRIORITIES: readonly AlertPriority[] = ['low', 'medium', 'high'];

// The command descriptor types come from the hook adhoc.ts declares (modules do not import each other).
type AdhocCommand = FoldMap['adhoc.commands']['commands'][number];
type AdhocStage = Parameters<AdhocCommand['run']>[0];
type AdhocReply = Awaited<ReturnType<AdhocCommand['run']>>;

export const alertLimits = { subject: 256, body: 8000, url: 2048 } as const;

/** Why an alert cannot be made (a bad recipient, a missing field): shown to the sender as is. */
export const AlertInputError = AudienceError;
export type AlertInputError = AudienceError;

export interface AlertInput {
  host: string;
  sender: string;
  /** Recipient specifications: a bare JID, `group:NAME` or `everyone` (every account of `host`). */
  to: string[];
  subject: string;
  body: string;
  url?: string | null;
  priority?: AlertPriority;
  receipts?: boolean;
}

/** Validates the input, resolves its recipients and stores the alert as pending for each of them. */
export async function storeAlert(ac: AudienceContext, input: AlertInput, maxRecipients: number): Promise<{ alert: AlertRecord; recipients: string[] }> {
  const subject = input.subject.trim();
  const body = input.body.trim();
  if (!subject) throw new AlertInputError('a subject is required');
  if (!body) throw new AlertInputError('a body is required');
  if (subject.length > alertLimits.subject) throw new AlertInputError(`the subject is longer than ${alertLimits.subject} characters`);
  if (body.length > alertLimits.body) throw new AlertInputError(`the body is longer than ${alertLimits.body} characters`);
  const url = input.url?.trim() || null;
  if (url) {
    let ok: boolean;
    try {
      ok = ['http:', 'https:'].includes(new URL(url).protocol);
    } catch {
      ok = false;
    }
    if (!ok || url.length > alertLimits.url) throw new AlertInputError('the URL must be an http or https URL');
  }
  const priority = input.priority ?? 'medium';
  if (!PRIORITIES.includes(priority)) throw new AlertInputError(`priority must be one of ${PRIORITIES.join(', ')}`);
  if (!ac.config.hosts.some((h) => h.domain === input.host)) throw new AlertInputError(`${input.host} is not a host of this server`);
  const recipients = await resolveAudience(ac, input.host, input.to, maxRecipients);
  const alert: AlertRecord = {
    id: `alert-${randomBytes(9).toString('base64url')}`,
    host: input.host,
    sender: input.sender,
    subject,
    body,
    url,
    priority,
    receipts: input.receipts === true,
    createdAt: Date.now(),
  };
  await ac.storage.alerts.create(alert, recipients);
  return { alert, recipients };
}

/** The alert message for one recipient; `held`: it waited for the recipient (XEP-0203 delay). */
export function alertStanza(a: AlertRecord, to: string, held: boolean): Element {
  const m = new Element('message', { type: 'headline', from: a.host, to, id: a.id });
  m.c('subject').t(a.subject);
  m.c('body').t(a.body);
  if (a.url) m.c('x', { xmlns: NS_OOB }).c('url').t(a.url);
  m.c('headers', { xmlns: NS_SHIM }).c('header', { name: 'Urgency' }).t(a.priority);
  if (a.receipts) m.c('request', { xmlns: NS_RECEIPTS });
  if (held) m.cnode(delayElement(a.host, new Date(a.createdAt), 'Alert held while offline'));
  return m;
}

export default defineModule({
  name: 'alerts',
  xeps: ['0066', '0131', '0133', '0184'],
  options: z
    .object({
      maxRecipients: z.number().int().min(1).default(10000).describe('Most recipients one alert may resolve to'),
      pollSeconds: z.number().min(0).default(5).describe('How often to look for alerts stored by `parley alert send` and deliver them to online recipients (0: only at their next login)'),
      retentionDays: z.number().min(0).default(30).describe('Alerts and their delivery reports are deleted after this many days (0: kept)'),
      loginBatch: z.number().int().min(1).default(100).describe('Most held alerts delivered to a session at one login (the rest at the next)'),
    })
    .strict(),
  async setup(ctx) {
    const opts = ctx.options;
    const may = (who: Jid) => ctx.isLocalHost(who.domain) && (ctx.acl.allows('alert.send', who) || ctx.acl.allows('admin', who));

    /** Delivers to the recipient's available sessions, if any; claims the row first so nobody delivers twice. */
    async function deliverNow(a: AlertRecord, user: string): Promise<boolean> {
      if (!ctx.sessions.available(user).some((s) => s.priority >= 0)) return false;
      if (!(await ctx.storage.alerts.markDelivered(a.id, user, Date.now()))) return false;
      await ctx.route(alertStanza(a, user, false));
      return true;
    }

    // Held alerts at login, like offline messages (XEP-0160) but from our own store.
    ctx.hook('presence.initial', async ({ session }) => {
      if (session.priority < 0 || !session.jid) return;
      const jid = session.jid;
      const pending = await ctx.storage.alerts.pendingFor(jid.bare, opts.loginBatch);
      for (const a of pending) {
        if (session.state === 'closed') break;
        if (!(await ctx.storage.alerts.markDelivered(a.id, jid.bare, Date.now()))) continue;
        session.send(alertStanza(a, jid.full, true));
      }
    });

    // XEP-0184 receipts come back to the host (the alert's `from`).
    ctx.hook('route.server', async ({ stanza, from }) => {
      if (stanza.name !== 'message' || !from?.local) return undefined;
      const received = stanza.getChild('received', NS_RECEIPTS);
      const id = received?.attrs.id;
      if (!id) return undefined;
      const a = await ctx.storage.alerts.get(id);
      if (!a || !a.receipts) return undefined;
      await ctx.storage.alerts.markReceived(id, from.bare, Date.now());
      return HANDLED;
    });

    // Alerts stored by another process (`parley alert send`): deliver to whoever is online now.
    // ctx.every keeps runs from overlapping and logs a failure ('alert poll failed').
    let lastSeq = await ctx.storage.alerts.maxSeq();
    let lastPurge = 0;
    const poll = async () => {
      for (;;) {
        const rows = await ctx.storage.alerts.pendingSince(lastSeq, 500);
        if (!rows.length) break;
        const cache = new Map<string, AlertRecord | null>();
        for (const r of rows) {
          lastSeq = Math.max(lastSeq, r.seq);
          if (!ctx.sessions.available(r.user).length) continue;
          if (!cache.has(r.alertId)) cache.set(r.alertId, await ctx.storage.alerts.get(r.alertId));
          const a = cache.get(r.alertId);
          if (a) await deliverNow(a, r.user);
        }
      }
      if (opts.retentionDays > 0 && Date.now() - lastPurge > 3_600_000) {
        lastPurge = Date.now();
        await ctx.storage.alerts.purge(Date.now() - opts.retentionDays * 86_400_000);
      }
    };
    if (opts.pollSeconds > 0) ctx.every(opts.pollSeconds * 1000, 'alert poll', poll);

    ctx.fold('adhoc.commands', (ev) => {
      if (!ctx.isLocalHost(ev.host)) return ev;
      ev.commands.push(announceCommand(ctx, may), sendCommand(ctx, may, opts.maxRecipients, deliverNow), reportCommand(ctx, may));
      return ev;
    });
  },
});

type Ctx = ModuleContext<unknown>;

const audience = (ctx: Ctx, asker: Jid): AudienceContext => ({
  storage: ctx.storage,
  config: ctx.config,
  foldValue: (n, v) => ctx.foldValue(n, v),
  directory: (h) => ctx.directory(h),
  asker,
});

const badPayload = (text: string) => commandError('bad-payload', text);

/** The submitted form of a stage, or bad-payload. */
function submitted(stage: AdhocStage): Map<string, string[]> {
  if (!stage.form || (stage.form.attrs.type !== 'submit' && stage.form.attrs.type !== 'cancel')) throw badPayload('a submitted data form is required');
  return formValues(stage.form);
}

/** XEP-0133 §4.23: an announcement to every online session of the host; nothing is stored. */
function announceCommand(ctx: Ctx, may: (who: Jid) => boolean): AdhocCommand {
  return {
    node: NODE_ANNOUNCE,
    name: 'Send Announcement to Online Users',
    allowed: may,
    async run(stage): Promise<AdhocReply> {
      if (stage.stage === 0 && !stage.form) {
        return {
          status: 'executing',
          actions: ['complete'],
          execute: 'complete',
          payload: [
            dataForm('form', {
              title: 'Making an Announcement',
              instructions: 'Fill out this form to make an announcement to all active users of this service.',
              formType: NS_ADMIN,
              fields: [
                { var: 'subject', type: 'text-single', label: 'Subject' },
                { var: 'announcement', type: 'text-multi', label: 'Announcement', required: true },
              ],
            }),
          ],
        };
      }
      const v = submitted(stage);
      const text = (v.get('announcement') ?? []).join('\n').trim();
      if (!text) throw badPayload('the announcement is empty');
      if (text.length > alertLimits.body) throw badPayload(`the announcement is longer than ${alertLimits.body} characters`);
      const subject = (v.get('subject') ?? []).join(' ').trim().slice(0, alertLimits.subject);
      const id = `announce-${randomBytes(9).toString('base64url')}`;
      let n = 0;
      for (const s of ctx.sessions.all()) {
        if (!s.available || !s.jid || s.jid.domain !== stage.host) continue;
        const m = new Element('message', { type: 'headline', from: stage.host, to: s.jid.full, id });
        if (subject) m.c('subject').t(subject);
        m.c('body').t(text);
        s.send(m);
        n++;
      }
      return { status: 'completed', notes: [{ type: 'info', text: `Announcement sent to ${n} session${n === 1 ? '' : 's'}.` }] };
    },
  };
}

const SEND_FIELDS = (values: Record<string, string[]>): FieldSpec[] => [
  { var: 'recipients', type: 'text-multi', label: 'Recipients', desc: 'One per line: user@host, group:NAME or everyone', required: true, values: values.recipients },
  { var: 'subject', type: 'text-single', label: 'Subject', required: true, values: values.subject },
  { var: 'body', type: 'text-multi', label: 'Message', required: true, values: values.body },
  { var: 'url', type: 'text-single', label: 'Link (optional)', values: values.url },
  {
    var: 'priority',
    type: 'list-single',
    label: 'Priority',
    values: values.priority ?? ['medium'],
    options: PRIORITIES.map((p) => ({ value: p })),
  },
  { var: 'receipts', type: 'boolean', label: 'Ask for delivery receipts', values: values.receipts ?? ['0'] },
];

interface Draft {
  recipients: string[];
  subject: string;
  body: string;
  url: string | null;
  priority: AlertPriority;
  receipts: boolean;
  resolved: string[];
}

/** urn:parley:alerts:send: stage 0 composes, stage 1 confirms (prev goes back with the values kept). */
function sendCommand(ctx: Ctx, may: (who: Jid) => boolean, maxRecipients: number, deliverNow: (a: AlertRecord, user: string) => Promise<boolean>): AdhocCommand {
  const composeForm = (values: Record<string, string[]>) =>
    dataForm('form', { title: 'Send an alert', instructions: 'Compose the alert, then review its recipients.', formType: NS_ALERTS, fields: SEND_FIELDS(values) });

  const compose = (draft?: Draft): AdhocReply => ({
    status: 'executing',
    actions: ['next'],
    execute: 'next',
    payload: [
      composeForm(
        draft
          ? {
              recipients: draft.recipients,
              subject: [draft.subject],
              body: draft.body.split('\n'),
              url: draft.url ? [draft.url] : [],
              priority: [draft.priority],
              receipts: [draft.receipts ? '1' : '0'],
            }
          : {},
      ),
    ],
  });

  return {
    node: NODE_SEND,
    name: 'Send an alert',
    allowed: may,
    async run(stage): Promise<AdhocReply> {
      const state = stage.state as { draft?: Draft };
      if (stage.stage === 0) {
        if (stage.action === 'execute' || stage.action === 'prev') return compose(state.draft);
      }
      if (stage.stage === 1 && stage.action === 'next') {
        const v = submitted(stage);
        const one = (k: string) => (v.get(k) ?? []).join(k === 'body' ? '\n' : ' ').trim();
        const priority = (one('priority') || 'medium') as AlertPriority;
        if (!PRIORITIES.includes(priority)) throw badPayload(`priority must be one of ${PRIORITIES.join(', ')}`);
        const receipts = parseBoolean(one('receipts') || '0');
        if (receipts === undefined) throw badPayload('receipts must be a boolean');
        const recipients = (v.get('recipients') ?? []).flatMap((l) => l.split(/[\n,]/)).map((s) => s.trim()).filter(Boolean);
        const draft: Draft = { recipients, subject: one('subject'), body: one('body'), url: one('url') || null, priority, receipts, resolved: [] };
        if (!draft.subject || !draft.body || !recipients.length) throw badPayload('recipients, subject and body are required');
        try {
          draft.resolved = await resolveAudience(audience(ctx, stage.from), stage.host, recipients, maxRecipients);
        } catch (err) {
          if (err instanceof AlertInputError) throw badPayload(err.message);
          throw err;
        }
        state.draft = draft;
        const n = draft.resolved.length;
        return {
          status: 'executing',
          actions: ['prev', 'complete'],
          execute: 'complete',
          payload: [
            dataForm('form', {
              title: 'Confirm the alert',
              formType: NS_ALERTS,
              fields: [
                { type: 'fixed', values: [`"${draft.subject}" (${draft.priority}) to ${n} recipient${n === 1 ? '' : 's'}.`] },
                { var: 'count', type: 'text-single', label: 'Recipients', values: [String(n)] },
              ],
            }),
          ],
        };
      }
      if (stage.stage === 2 && stage.action === 'complete' && state.draft) {
        const d = state.draft;
        let stored;
        try {
          stored = await storeAlert(audience(ctx, stage.from), { host: stage.host, sender: stage.from.bare, to: d.recipients, subject: d.subject, body: d.body, url: d.url, priority: d.priority, receipts: d.receipts }, maxRecipients);
        } catch (err) {
          if (err instanceof AlertInputError) throw badPayload(err.message);
          ctx.log.error({ err }, 'alert could not be stored');
          throw new StanzaError('wait', 'internal-server-error', 'the alert could not be stored');
        }
        let online = 0;
        for (const u of stored.recipients) if (await deliverNow(stored.alert, u)) online++;
        const n = stored.recipients.length;
        return {
          status: 'completed',
          notes: [{ type: 'info', text: `Alert ${stored.alert.id} sent to ${n} recipient${n === 1 ? '' : 's'} (${online} online now, ${n - online} at their next login).` }],
          payload: [
            dataForm('result', {
              formType: NS_ALERTS,
              fields: [
                { var: 'id', type: 'text-single', label: 'Alert id', values: [stored.alert.id] },
                { var: 'recipients', type: 'text-single', label: 'Recipients', values: [String(n)] },
                { var: 'delivered', type: 'text-single', label: 'Delivered now', values: [String(online)] },
              ],
            }),
          ],
        };
      }
      // Unreachable through the framework's action checks; kept as a guard for future stages.
      throw commandError('bad-action');
    },
  };
}

/** urn:parley:alerts:report: delivery and receipt report of one alert (its sender's, or any for an admin). */
function reportCommand(ctx: Ctx, may: (who: Jid) => boolean): AdhocCommand {
  return {
    node: NODE_REPORT,
    name: 'Alert delivery report',
    allowed: may,
    async run(stage): Promise<AdhocReply> {
      if (stage.stage === 0) {
        const mine = await ctx.storage.alerts.listBySender(stage.from.bare, 50);
        return {
          status: 'executing',
          actions: ['complete'],
          execute: 'complete',
          payload: [
            dataForm('form', {
              title: 'Alert delivery report',
              formType: NS_ALERTS,
              fields: [
                {
                  var: 'id',
                  type: 'list-single',
                  label: 'Alert',
                  required: true,
                  values: mine[0] ? [mine[0].id] : [],
                  options: mine.map((a) => ({ value: a.id, label: `${new Date(a.createdAt).toISOString()} ${a.subject}` })),
                },
              ],
            }),
          ],
        };
      }
      const v = submitted(stage);
      const id = (v.get('id') ?? [])[0]?.trim();
      if (!id) throw badPayload('an alert id is required');
      const a = await ctx.storage.alerts.get(id);
      // Another sender's alert looks like no alert at all (no probing of ids).
      if (!a || (a.sender !== stage.from.bare && !ctx.acl.allows('admin', stage.from))) throw badPayload(`no alert ${id}`);
      const rows = await ctx.storage.alerts.recipients(id);
      const pending = rows.filter((r) => r.state === 'pending').map((r) => r.user);
      const delivered = rows.filter((r) => r.state === 'delivered').map((r) => r.user);
      const received = rows.filter((r) => r.state === 'received').map((r) => r.user);
      const count = (k: string, label: string, n: number): FieldSpec => ({ var: k, type: 'text-single', label, values: [String(n)] });
      return {
        status: 'completed',
        payload: [
          dataForm('result', {
            title: `Report for ${a.subject}`,
            formType: NS_ALERTS,
            fields: [
              { var: 'id', type: 'text-single', label: 'Alert id', values: [a.id] },
              { var: 'receipts', type: 'boolean', label: 'Receipts asked', values: [a.receipts ? '1' : '0'] },
              count('total', 'Recipients', rows.length),
              count('delivered', 'Delivered (with or without a receipt)', delivered.length + received.length),
              count('pending', 'Waiting for the recipient to log in', pending.length),
              count('received', 'Receipts returned', received.length),
              { var: 'pending-jids', type: 'jid-multi', label: 'Pending', values: pending },
              { var: 'delivered-jids', type: 'jid-multi', label: 'Delivered, no receipt', values: delivered },
              { var: 'received-jids', type: 'jid-multi', label: 'Receipt returned', values: received },
            ],
          }),
        ],
      };
    },
  };
}
