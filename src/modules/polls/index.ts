// Polls (issue 7; the protocol is docs/polls.md, namespace urn:parley:polls:0) at `polls.<host>`.
//
// A poll is a question with numbered choices sent to users, groups, the people of a room or
// everyone. Each poll has its own JID, `<id>@polls.<host>`: the question arrives from it as a chat
// message carrying an XEP-0004 answer form and a plain-text fallback body, so a client that knows
// nothing of polls shows the question and its user answers by replying with a number — the reply
// goes to the poll's JID, which is all the service needs to know which poll it answers.
//
// - Creation (§3): `<create/>` iq on the service (get: the blank form; set: the submitted form) or
//   the XEP-0050 command `urn:parley:polls:create` on the host. Needs the `poll.create` right.
// - Answers (§5): a submitted answer form or a body (numbers, a choice's text); a recipient may
//   change its answer until the poll closes. Text commands: results, close (the author), help.
// - Results (§6): `<results/>` iq on the poll's JID, live, for whoever the poll lets see them;
//   when a poll closes (by hand: `<close/>` iq or "close"; or at its deadline) the results are sent
//   to the author and, unless the poll keeps them for its author, to everyone asked.
// - Polls, recipients and answers are stored (PollStore, migration 7), so a restart loses nothing:
//   deadlines are re-armed from storage at start, and polls whose deadline passed while the server
//   was down are closed then. Closing is a conditional update, so several nodes never announce the
//   same results twice.
import { randomBytes } from 'node:crypto';
import { Element } from 'ltx';
import { z } from 'zod';
import { defineModule, type ModuleContext } from '../../core/module.js';
import type { FoldMap } from '../../core/hooks.js';
import { formatRule } from '../../core/acl.js';
import { AudienceError, resolveAudience } from '../../core/audience.js';
import { TokenBucket } from '../../core/bucket.js';
import { StanzaError, stanzaError } from '../../xmpp/errors.js';
import type { Jid } from '../../xmpp/jid.js';
import { NS } from '../../xmpp/ns.js';
import { errorReply, iqPayload, iqResult } from '../../xmpp/stanza.js';
import { commandError } from '../../xmpp/adhoc.js';
import { dataForm, formValues } from '../../xmpp/dataforms.js';
import type { PollRecord } from '../../storage/types.js';
import {
  answeredMessage,
  createForm,
  FORM_CREATE,
  helpText,
  NS_POLLS,
  parseAnswer,
  parseCreateForm,
  pollElement,
  pollMessage,
  resultsElement,
  resultsMessage,
  resultsText,
  textMessage,
  type PollDraft,
} from './protocol.js';

export const NODE_CREATE = 'urn:parley:polls:create';
// Lower-case hex: a JID's localpart is case-folded (RFC 7622), so the id must survive that.
const ID_RE = /^poll-[0-9a-f]{20}$/;
/** setTimeout's ceiling; a later deadline is re-armed when this fires. */
const MAX_TIMER = 2 ** 31 - 1;

type AdhocCommand = FoldMap['adhoc.commands']['commands'][number];

const optionsSchema = z
  .object({
    subdomain: z.string().regex(/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/, 'a DNS label').default('polls').describe('The service JID is <subdomain>.<host>; each poll is <id>@<subdomain>.<host>'),
    name: z.string().min(1).max(100).default('Polls').describe('Name of the service in disco'),
    maxRecipients: z.number().int().min(1).default(10_000).describe('Most people one poll may ask'),
    maxChoices: z.number().int().min(2).max(100).default(20).describe('Most choices a poll may offer'),
    maxQuestionLength: z.number().int().min(1).default(500).describe('Longest question, in characters'),
    maxChoiceLength: z.number().int().min(1).default(200).describe('Longest choice, in characters'),
    maxOpenPerUser: z.number().int().min(1).default(50).describe('Open polls one account may have at once'),
    maxDurationDays: z.number().int().min(1).default(365).describe('Latest deadline a poll may set, in days from its creation'),
    answersPerMinute: z.number().min(1).default(30).describe('Answers and commands one account may send to polls per minute'),
    retentionDays: z.number().min(0).default(90).describe('Closed polls are deleted this many days after closing (0: kept)'),
  })
  .strict();

export type PollOptions = z.infer<typeof optionsSchema>;

export default defineModule({
  name: 'polls',
  xeps: ['0004', '0050'],
  options: optionsSchema,
  async setup(ctx) {
    const opts = ctx.options;
    const limits = { maxChoices: opts.maxChoices, maxQuestionLength: opts.maxQuestionLength, maxChoiceLength: opts.maxChoiceLength, maxDurationDays: opts.maxDurationDays };
    // Issue 9: creating also needs the `polls` entitlement; answering does not.
    const mayCreate = (who: Jid) =>
      ctx.isLocalHost(who.domain) && !!who.local && (ctx.acl.allows('poll.create', who) || ctx.acl.allows('admin', who)) && ctx.acl.entitled('polls', who);
    const refuseCreate = (who: Jid): never => {
      if (!ctx.acl.entitled('polls', who)) ctx.log.info({ user: who.bare, service: 'polls', rule: formatRule(ctx.acl.explain('polls', who)) }, 'poll refused: no entitlement');
      throw stanzaError('forbidden', 'you may not create polls');
    };
    const isAdmin = (who: Jid) => ctx.isLocalHost(who.domain) && ctx.acl.allows('admin', who);
    const serviceOf = (host: string) => `${opts.subdomain}.${host}`;
    const pollJid = (p: PollRecord) => `${p.id}@${serviceOf(p.host)}`;

    // ---- creating -----------------------------------------------------------------------------

    async function create(draft: PollDraft, creator: Jid, host: string): Promise<{ poll: PollRecord; recipients: string[] }> {
      if (!mayCreate(creator)) refuseCreate(creator);
      const mine = await ctx.storage.polls.listByCreator(creator.bare, opts.maxOpenPerUser + 1);
      if (mine.filter((p) => p.closedAt === null).length >= opts.maxOpenPerUser) {
        throw new StanzaError('wait', 'resource-constraint', `you have ${opts.maxOpenPerUser} open polls; close one first`);
      }
      let recipients: string[];
      try {
        recipients = await resolveAudience(
          { storage: ctx.storage, config: ctx.config, foldValue: (n, v) => ctx.foldValue(n, v), directory: (h) => ctx.directory(h), asker: creator },
          host,
          draft.audience,
          opts.maxRecipients,
        );
      } catch (err) {
        if (err instanceof AudienceError) throw stanzaError('bad-request', err.message);
        throw err;
      }
      const poll: PollRecord = {
        id: `poll-${randomBytes(10).toString('hex')}`,
        host,
        creator: creator.bare,
        ...draft,
        createdAt: Date.now(),
        closedAt: null,
      };
      await ctx.storage.polls.create(poll, recipients);
      ctx.log.info({ poll: poll.id, creator: poll.creator, recipients: recipients.length }, 'poll created');
      // Stored first: a recipient who answers at once finds the poll. Offline recipients get the
      // question from offline storage at their next login, like any chat message.
      const from = pollJid(poll);
      for (const r of recipients) {
        try {
          await ctx.route(pollMessage(poll, from, r));
        } catch (err) {
          ctx.log.warn({ err, poll: poll.id, to: r }, 'poll message not delivered');
        }
      }
      if (poll.closesAt !== null) void arm();
      return { poll, recipients };
    }

    // ---- closing ------------------------------------------------------------------------------

    /** Closes a poll (once, whoever gets there first) and announces the results. */
    async function close(id: string): Promise<boolean> {
      if (!(await ctx.storage.polls.close(id, Date.now()))) return false;
      const poll = await ctx.storage.polls.get(id);
      if (!poll) return false;
      const tally = await ctx.storage.polls.tally(id);
      const to = new Set([poll.creator]);
      if (poll.results !== 'creator') for (const r of await ctx.storage.polls.recipients(id)) to.add(r);
      for (const r of to) {
        try {
          await ctx.route(resultsMessage(poll, tally, pollJid(poll), r));
        } catch (err) {
          ctx.log.warn({ err, poll: id, to: r }, 'poll results not delivered');
        }
      }
      ctx.log.info({ poll: id, answered: tally.answered, recipients: tally.recipients }, 'poll closed');
      return true;
    }

    let timer: NodeJS.Timeout | undefined;
    let armedFor = Infinity;
    let unloaded = false;
    /** Sets the timer for the earliest open deadline (from storage: it survives restarts). */
    async function arm(): Promise<void> {
      const next = await ctx.storage.polls.nextDeadline();
      if (unloaded || next === null || next >= armedFor) return;
      clearTimeout(timer);
      armedFor = next;
      timer = setTimeout(() => void sweep(), Math.min(MAX_TIMER, Math.max(0, next - Date.now())));
      timer.unref();
    }
    async function sweep(): Promise<void> {
      armedFor = Infinity;
      try {
        for (;;) {
          const due = await ctx.storage.polls.due(Date.now(), 100);
          for (const p of due) await close(p.id);
          if (due.length < 100) break;
        }
      } catch (err) {
        ctx.log.error({ err }, 'closing polls at their deadline failed');
      }
      await arm().catch((err) => ctx.log.error({ err }, 'arming the poll deadline failed'));
    }
    await sweep(); // closes what came due while the server was down, then arms the next deadline

    if (opts.retentionDays > 0) {
      ctx.every(3_600_000, 'polls: purging old polls', async () => {
        await ctx.storage.polls.purge(Date.now() - opts.retentionDays * 86_400_000);
      });
    }
    ctx.onUnload(() => {
      unloaded = true;
      clearTimeout(timer);
    });

    // ---- who may see what ---------------------------------------------------------------------

    async function mayRead(p: PollRecord, who: Jid): Promise<boolean> {
      return who.bare === p.creator || isAdmin(who) || (await ctx.storage.polls.isRecipient(p.id, who.bare));
    }
    async function maySeeResults(p: PollRecord, who: Jid): Promise<boolean> {
      if (who.bare === p.creator || isAdmin(who)) return true;
      if (p.results === 'creator' || (p.results === 'closed' && p.closedAt === null)) return false;
      return ctx.storage.polls.isRecipient(p.id, who.bare);
    }
    const mayClose = (p: PollRecord, who: Jid) => who.bare === p.creator || isAdmin(who);

    /** The poll a stanza addresses (`<id>@polls.<host>`), or item-not-found. */
    async function pollFor(to: Jid, host: string): Promise<PollRecord> {
      const p = to.local && ID_RE.test(to.local) ? await ctx.storage.polls.get(to.local) : null;
      if (!p || p.host !== host) throw new StanzaError('cancel', 'item-not-found', 'no such poll');
      return p;
    }

    // ---- the service: iqs ---------------------------------------------------------------------

    async function serviceIq(payload: Element, type: string, from: Jid, host: string): Promise<Element | undefined> {
      const ns = payload.attrs.xmlns;
      if (type === 'get' && payload.name === 'query' && ns === NS.DISCO_INFO && !payload.attrs.node) {
        const q = new Element('query', { xmlns: NS.DISCO_INFO });
        q.c('identity', { category: 'component', type: 'generic', name: opts.name });
        for (const f of [NS.DISCO_INFO, NS.DISCO_ITEMS, NS_POLLS]) q.c('feature', { var: f });
        return q;
      }
      if (type === 'get' && payload.name === 'query' && ns === NS.DISCO_ITEMS && !payload.attrs.node) {
        // The requester's polls: those it created and those it was asked, newest first.
        const q = new Element('query', { xmlns: NS.DISCO_ITEMS });
        const seen = new Set<string>();
        const mine = [...(await ctx.storage.polls.listByCreator(from.bare, 100)), ...(await ctx.storage.polls.listForRecipient(from.bare, 100))];
        for (const p of mine.sort((a, b) => b.createdAt - a.createdAt)) {
          if (p.host !== host || seen.has(p.id)) continue;
          seen.add(p.id);
          q.c('item', { jid: pollJid(p), name: p.question });
        }
        return q;
      }
      if (payload.name === 'create' && ns === NS_POLLS) {
        if (!mayCreate(from)) refuseCreate(from);
        if (type === 'get') {
          const blank = new Element('create', { xmlns: NS_POLLS });
          blank.cnode(createForm());
          return blank;
        }
        const x = payload.getChild('x', NS.DATA_FORMS);
        if (!x) throw stanzaError('bad-request', 'the creation form is missing');
        const { poll, recipients } = await create(parseCreateForm(x, limits, Date.now()), from, host);
        return new Element('created', { xmlns: NS_POLLS, id: poll.id, jid: pollJid(poll), recipients: String(recipients.length) });
      }
      if (payload.attrs.node !== undefined) throw stanzaError('item-not-found');
      throw stanzaError('service-unavailable');
    }

    async function pollIq(payload: Element, type: string, from: Jid, p: PollRecord): Promise<Element | undefined> {
      const ns = payload.attrs.xmlns;
      if (!(await mayRead(p, from))) throw stanzaError('forbidden', 'you were not asked in this poll');
      if (type === 'get' && payload.name === 'query' && ns === NS.DISCO_INFO && !payload.attrs.node) {
        const q = new Element('query', { xmlns: NS.DISCO_INFO });
        q.c('identity', { category: 'component', type: 'generic', name: p.question });
        for (const f of [NS.DISCO_INFO, NS_POLLS]) q.c('feature', { var: f });
        return q;
      }
      if (type === 'get' && payload.name === 'poll' && ns === NS_POLLS) {
        const el = pollElement(p);
        const mine = await ctx.storage.polls.answerOf(p.id, from.bare);
        if (mine) {
          const a = el.c('answered', { poll: p.id });
          for (const n of mine) a.c('choice', { n: String(n) });
        }
        return el;
      }
      if (type === 'get' && payload.name === 'results' && ns === NS_POLLS) {
        if (!(await maySeeResults(p, from))) throw stanzaError('forbidden', p.results === 'closed' ? 'the results are shown once the poll is closed' : 'only the author sees the results');
        return resultsElement(p, await ctx.storage.polls.tally(p.id));
      }
      if (type === 'set' && payload.name === 'close' && ns === NS_POLLS) {
        if (!mayClose(p, from)) throw stanzaError('forbidden', 'only the author closes a poll');
        if (p.closedAt !== null || !(await close(p.id))) throw stanzaError('not-allowed', 'the poll is closed already');
        return undefined;
      }
      throw stanzaError('service-unavailable');
    }

    // ---- the poll JIDs: answers by message ----------------------------------------------------

    const buckets = new Map<string, TokenBucket>();
    const bucketSweep = setInterval(() => buckets.clear(), 600_000);
    bucketSweep.unref();
    ctx.onUnload(() => clearInterval(bucketSweep));
    const rateOk = (user: string): boolean => {
      let b = buckets.get(user);
      if (!b) buckets.set(user, (b = new TokenBucket(opts.answersPerMinute / 60, Math.max(1, Math.floor(opts.answersPerMinute)))));
      return b.take(1) === 0;
    };

    async function pollMessageIn(stanza: Element, from: Jid, p: PollRecord): Promise<void> {
      const me = pollJid(p);
      const reply = (el: Element) => ctx.route(el);
      const refuse = (err: StanzaError) => reply(errorReply(stanza, err, me));
      const a = parseAnswer(stanza, p);
      if (!a) return; // chat states, receipts: nothing to answer, and they do not count against the rate
      if (!rateOk(from.bare)) return refuse(new StanzaError('wait', 'policy-violation', 'too many answers; wait a little'));
      if (!(await mayRead(p, from))) return refuse(stanzaError('forbidden', 'you were not asked in this poll'));
      if (a.kind === 'invalid') {
        if (a.form) return refuse(stanzaError('bad-request', a.reason));
        return reply(textMessage(p, me, from.full, `${a.reason}\n\n${helpText(p)}`));
      }
      if (a.kind === 'command') {
        if (a.command === 'help') return reply(textMessage(p, me, from.full, helpText(p)));
        if (a.command === 'results') {
          if (!(await maySeeResults(p, from))) return reply(textMessage(p, me, from.full, p.results === 'closed' ? 'The results are shown once the poll is closed.' : 'Only the author sees the results.'));
          return reply(textMessage(p, me, from.full, resultsText(p, await ctx.storage.polls.tally(p.id))));
        }
        if (!mayClose(p, from)) return reply(textMessage(p, me, from.full, 'Only the author closes a poll.'));
        // close() sends the results to the author (and the others), which is the confirmation.
        if (!(await close(p.id))) return reply(textMessage(p, me, from.full, 'The poll is closed already.'));
        return;
      }
      const outcome = await ctx.storage.polls.answer(p.id, from.bare, a.choices, Date.now());
      if (outcome === 'ok') return reply(answeredMessage(p, me, from.full, [...a.choices].sort((x, y) => x - y)));
      if (outcome === 'not-recipient') return refuse(stanzaError('forbidden', 'you were not asked in this poll'));
      if (outcome === 'no-such-poll') return refuse(new StanzaError('cancel', 'item-not-found', 'no such poll'));
      // closed
      if (a.kind === 'form') return refuse(stanzaError('not-allowed', 'the poll is closed'));
      const fresh = (await ctx.storage.polls.get(p.id)) ?? p;
      const results = (await maySeeResults(fresh, from)) ? `\n\n${resultsText(fresh, await ctx.storage.polls.tally(p.id))}` : '';
      return reply(textMessage(p, me, from.full, `This poll is closed; your answer was not recorded.${results}`));
    }

    // ---- routing ------------------------------------------------------------------------------

    ctx.service(opts.subdomain, opts.name, async ({ stanza, to, from, host }) => {
      const type = stanza.attrs.type;
      if (stanza.name === 'presence' || type === 'error' || type === 'result') return;
      try {
        // Only accounts of this server take part (the audience is local accounts).
        if (!from || !from.local || !ctx.isLocalHost(from.domain)) throw stanzaError('forbidden', 'polls are for accounts of this server');
        if (to.resource) throw stanzaError('service-unavailable');
        if (stanza.name === 'message') {
          if (!to.local) throw stanzaError('service-unavailable', 'send answers to the poll, not to the service');
          const p = await pollFor(to, host);
          return await pollMessageIn(stanza, from, p);
        }
        const payload = iqPayload(stanza);
        if (payload === null || payload === 'many') throw stanzaError('bad-request');
        const result = to.local ? await pollIq(payload, type ?? '', from, await pollFor(to, host)) : await serviceIq(payload, type ?? '', from, host);
        await ctx.route(iqResult(stanza, result));
      } catch (err) {
        if (!(err instanceof StanzaError)) ctx.log.error({ err }, 'poll request failed');
        if (stanza.name === 'message' && err instanceof StanzaError && err.condition === 'service-unavailable') return; // RFC 6120 §8.3: no bounce loops on unknown messages
        await ctx.route(errorReply(stanza, err instanceof StanzaError ? err : stanzaError('internal-server-error')));
      }
    }, { entitlement: 'polls', gate: false });

    // ---- XEP-0050: create from any client with ad-hoc commands ----------------------------------

    ctx.fold('adhoc.commands', (ev) => {
      if (!ctx.isLocalHost(ev.host)) return ev;
      ev.commands.push(createCommand(ctx, mayCreate, limits, create));
      return ev;
    });
  },
});

function createCommand(
  ctx: ModuleContext<PollOptions>,
  may: (who: Jid) => boolean,
  limits: Parameters<typeof parseCreateForm>[1],
  create: (d: PollDraft, creator: Jid, host: string) => Promise<{ poll: PollRecord; recipients: string[] }>,
): AdhocCommand {
  return {
    node: NODE_CREATE,
    name: 'Create a Poll',
    allowed: may,
    async run(stage) {
      if (stage.stage === 0 && !stage.form) return { status: 'executing', actions: ['complete'], execute: 'complete', payload: [createForm()] };
      if (!stage.form || stage.form.attrs.type !== 'submit') throw commandError('bad-payload', 'a submitted data form is required');
      let created: { poll: PollRecord; recipients: string[] };
      try {
        created = await create(parseCreateForm(stage.form, limits, Date.now()), stage.from, stage.host);
      } catch (err) {
        // A mistake in the form: show it again with the values and the reason, so nothing is lost.
        if (err instanceof StanzaError && err.condition === 'bad-request') {
          const values = Object.fromEntries(formValues(stage.form));
          return { status: 'executing', actions: ['complete'], execute: 'complete', payload: [createForm(values)], notes: [{ type: 'error', text: err.text ?? 'invalid form' }] };
        }
        throw err;
      }
      const { poll, recipients } = created;
      const jid = `${poll.id}@${ctx.options.subdomain}.${poll.host}`;
      return {
        status: 'completed',
        payload: [
          dataForm('result', {
            title: 'Poll created',
            formType: FORM_CREATE,
            fields: [
              { var: 'id', type: 'text-single', label: 'Poll', values: [poll.id] },
              { var: 'jid', type: 'jid-single', label: 'Send "results" or "close" to', values: [jid] },
              { var: 'recipients', type: 'text-single', label: 'People asked', values: [String(recipients.length)] },
            ],
          }),
        ],
        notes: [{ type: 'info', text: `Poll sent to ${recipients.length} ${recipients.length === 1 ? 'person' : 'people'}.` }],
      };
    },
  };
}
