// The polls protocol (docs/polls.md, namespace urn:parley:polls:0): the creation form (§3), the
// poll message with its XEP-0004 form and plain-text fallback (§4), answers by form or by text
// (§5), and the results element and text (§6). Pure builders and parsers; no server state.
import { Element } from 'ltx';
import { stanzaError } from '../../xmpp/errors.js';
import { dataForm, formValues, parseBoolean, type FieldSpec } from '../../xmpp/dataforms.js';
import { parseDateTime } from '../../xmpp/mam.js';
import type { PollRecord, PollResults, PollTally } from '../../storage/types.js';

export const NS_POLLS = 'urn:parley:polls:0';
/** FORM_TYPE of the creation form (§3). */
export const FORM_CREATE = 'urn:parley:polls:0#create';
/** FORM_TYPE of the answer form carried by a poll message (§4). */
export const FORM_ANSWER = 'urn:parley:polls:0#answer';
export const RESULTS: readonly PollResults[] = ['creator', 'participants', 'closed'];

export interface PollLimits {
  maxChoices: number;
  maxQuestionLength: number;
  maxChoiceLength: number;
  maxDurationDays: number;
}

export interface PollDraft {
  question: string;
  choices: string[];
  audience: string[];
  multiple: boolean;
  results: PollResults;
  closesAt: number | null;
}

/** XEP-0082 profile without milliseconds, as delay stamps are written. */
export const stamp = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

/** A human-readable UTC time for the plain-text bodies. */
const human = (ms: number): string => `${new Date(ms).toISOString().slice(0, 16).replace('T', ' ')} UTC`;

/** §3: the creation form, blank or with the values of a draft being corrected. */
export function createForm(v: Partial<Record<string, string[]>> = {}): Element {
  const fields: FieldSpec[] = [
    { var: 'question', type: 'text-single', label: 'Question', required: true, values: v.question },
    { var: 'choices', type: 'text-multi', label: 'Choices', desc: 'One per line, in order', required: true, values: v.choices },
    { var: 'audience', type: 'text-multi', label: 'Ask', desc: 'One per line: user@host, group:NAME, room:ROOM@SERVICE or everyone', required: true, values: v.audience },
    { var: 'multiple', type: 'boolean', label: 'Allow several choices', values: v.multiple ?? ['0'] },
    {
      var: 'results',
      type: 'list-single',
      label: 'Who sees the results',
      values: v.results ?? ['creator'],
      options: [
        { value: 'creator', label: 'Only me' },
        { value: 'participants', label: 'Everyone asked, while the poll runs' },
        { value: 'closed', label: 'Everyone asked, once the poll is closed' },
      ],
    },
    { var: 'duration', type: 'text-single', label: 'Close after (minutes; empty: close by hand)', values: v.duration },
    { var: 'closes', type: 'text-single', label: 'Or close at (XEP-0082 date and time)', values: v.closes },
  ];
  return dataForm('form', { title: 'Create a poll', instructions: 'The people you ask get the question and answer by choice or by number.', formType: FORM_CREATE, fields });
}

const lines = (values: string[] | undefined): string[] =>
  (values ?? []).flatMap((s) => s.split(/\r?\n/)).map((s) => s.trim()).filter(Boolean);

/** §3.2: reads a submitted creation form; bad-request naming the field on any violation. */
export function parseCreateForm(x: Element, limits: PollLimits, now: number): PollDraft {
  if (x.attrs.type !== 'submit') throw stanzaError('bad-request', 'a submitted data form is required');
  const v = formValues(x);
  const formType = v.get('FORM_TYPE')?.[0];
  if (formType !== undefined && formType !== FORM_CREATE) throw stanzaError('bad-request', `FORM_TYPE must be ${FORM_CREATE}`);
  const bad = (text: string) => stanzaError('bad-request', text);
  const question = lines(v.get('question')).join(' ');
  if (!question) throw bad('a question is required');
  if (question.length > limits.maxQuestionLength) throw bad(`the question is longer than ${limits.maxQuestionLength} characters`);
  const choices = lines(v.get('choices'));
  if (choices.length < 2) throw bad('at least two choices are required');
  if (choices.length > limits.maxChoices) throw bad(`more than ${limits.maxChoices} choices`);
  for (const c of choices) if (c.length > limits.maxChoiceLength) throw bad(`a choice is longer than ${limits.maxChoiceLength} characters`);
  if (new Set(choices.map((c) => c.toLowerCase())).size !== choices.length) throw bad('two choices are the same');
  const audience = lines(v.get('audience'));
  if (!audience.length) throw bad('say whom to ask (audience)');
  const multipleRaw = v.get('multiple')?.[0];
  const multiple = multipleRaw === undefined || multipleRaw === '' ? false : parseBoolean(multipleRaw);
  if (multiple === undefined) throw bad("'multiple' is not a boolean");
  const results = (v.get('results')?.[0] || 'creator') as PollResults;
  if (!RESULTS.includes(results)) throw bad(`'results' must be one of ${RESULTS.join(', ')}`);
  const duration = v.get('duration')?.[0]?.trim();
  const closes = v.get('closes')?.[0]?.trim();
  if (duration && closes) throw bad("give 'duration' or 'closes', not both");
  let closesAt: number | null = null;
  if (duration) {
    if (!/^\d+(\.\d+)?$/.test(duration) || Number(duration) <= 0) throw bad("'duration' is a positive number of minutes");
    closesAt = now + Math.round(Number(duration) * 60_000);
  } else if (closes) {
    closesAt = parseDateTime(closes, 'closes');
    if (closesAt <= now) throw bad('the closing time is in the past');
  }
  if (closesAt !== null && closesAt - now > limits.maxDurationDays * 86_400_000) throw bad(`a poll runs at most ${limits.maxDurationDays} days`);
  return { question, choices, audience, multiple, results, closesAt };
}

/** The question with numbered choices, as every plain-text body shows it. */
function questionText(p: PollRecord): string {
  return [p.question, ...p.choices.map((c, i) => `${i + 1}. ${c}`)].join('\n');
}

function resultsRule(p: PollRecord): string {
  return p.results === 'creator' ? 'Only the author sees the results.' : p.results === 'participants' ? 'Send "results" to see the results so far.' : 'The results are shown to everyone asked once the poll is closed.';
}

/** §4: the <poll/> element describing a poll. */
export function pollElement(p: PollRecord): Element {
  const el = new Element('poll', {
    xmlns: NS_POLLS,
    id: p.id,
    creator: p.creator,
    multiple: p.multiple ? 'true' : 'false',
    results: p.results,
    created: stamp(p.createdAt),
    closes: p.closesAt === null ? undefined : stamp(p.closesAt),
    closed: p.closedAt === null ? undefined : stamp(p.closedAt),
  });
  el.c('question').t(p.question);
  p.choices.forEach((c, i) => el.c('choice', { n: String(i + 1) }).t(c));
  return el;
}

/** §4: the message that asks one recipient. */
export function pollMessage(p: PollRecord, from: string, to: string): Element {
  const m = new Element('message', { type: 'chat', from, to, id: p.id });
  const how = p.multiple ? 'Reply with the numbers of your choices (e.g. "1, 3").' : 'Reply with the number of your choice.';
  const closes = p.closesAt === null ? 'The author closes it.' : `It closes ${human(p.closesAt)}.`;
  m.c('body').t(`Poll from ${p.creator}:\n${questionText(p)}\n${how} ${closes} ${resultsRule(p)}`);
  m.c('thread').t(p.id);
  m.cnode(
    dataForm('form', {
      title: p.question,
      instructions: p.multiple ? 'Pick one or more.' : 'Pick one.',
      formType: FORM_ANSWER,
      fields: [
        {
          var: 'choice',
          type: p.multiple ? 'list-multi' : 'list-single',
          label: 'Your answer',
          required: true,
          options: p.choices.map((c, i) => ({ value: String(i + 1), label: c })),
        },
      ],
    }),
  );
  m.cnode(pollElement(p));
  m.c('store', { xmlns: 'urn:xmpp:hints' });
  return m;
}

/** What a message to a poll asks for (§5). */
export type Answer =
  | { kind: 'form'; choices: number[] }
  | { kind: 'text'; choices: number[] }
  | { kind: 'command'; command: 'results' | 'close' | 'help' }
  | { kind: 'invalid'; form: boolean; reason: string };

/**
 * §5.1/§5.2: reads an answer from a submitted answer form, or from a body: choice numbers
 * (separated by commas, spaces or "and"; a leading '#' allowed), a choice's exact text, or one of
 * the words results, close, help.
 */
export function parseAnswer(msg: Element, p: PollRecord): Answer | null {
  const x = msg.getChildren('x', 'jabber:x:data').find((e) => e.attrs.type === 'submit');
  if (x) {
    const v = formValues(x);
    if (v.get('FORM_TYPE')?.[0] !== FORM_ANSWER) return { kind: 'invalid', form: true, reason: `FORM_TYPE must be ${FORM_ANSWER}` };
    const raw = (v.get('choice') ?? []).map((s) => s.trim()).filter(Boolean);
    const nums = raw.map(Number);
    if (!raw.length) return { kind: 'invalid', form: true, reason: 'no choice' };
    if (raw.some((s) => !/^\d+$/.test(s)) || nums.some((n) => n < 1 || n > p.choices.length)) return { kind: 'invalid', form: true, reason: `choices are numbered 1 to ${p.choices.length}` };
    if (!p.multiple && new Set(nums).size > 1) return { kind: 'invalid', form: true, reason: 'this poll takes one choice' };
    return { kind: 'form', choices: [...new Set(nums)] };
  }
  const body = msg.getChild('body')?.getText().trim();
  if (!body) return null; // chat states, receipts and the like
  if (body === '?') return { kind: 'command', command: 'help' };
  const word = body.toLowerCase().replace(/[.!?]+$/, '');
  if (word === 'results' || word === 'result') return { kind: 'command', command: 'results' };
  if (word === 'close') return { kind: 'command', command: 'close' };
  if (word === 'help' || word === 'question') return { kind: 'command', command: 'help' };
  const byText = p.choices.findIndex((c) => c.toLowerCase() === word);
  if (byText !== -1) return { kind: 'text', choices: [byText + 1] };
  const parts = word.split(/\s*(?:,|;|\s|\band\b)\s*/).filter(Boolean).map((s) => s.replace(/^#/, ''));
  if (!parts.length || parts.some((s) => !/^\d{1,4}$/.test(s))) {
    return { kind: 'invalid', form: false, reason: `Please answer with ${p.multiple ? 'the numbers of your choices' : 'the number of your choice'} (1 to ${p.choices.length}).` };
  }
  const nums = [...new Set(parts.map(Number))];
  if (nums.some((n) => n < 1 || n > p.choices.length)) return { kind: 'invalid', form: false, reason: `The choices are numbered 1 to ${p.choices.length}.` };
  if (!p.multiple && nums.length > 1) return { kind: 'invalid', form: false, reason: 'This poll takes one choice: reply with a single number.' };
  return { kind: 'text', choices: nums };
}

/** The reply that confirms a recorded answer (§5.3). */
export function answeredMessage(p: PollRecord, from: string, to: string, choices: number[]): Element {
  const m = new Element('message', { type: 'chat', from, to });
  const named = choices.map((n) => `${n}. ${p.choices[n - 1]}`).join(', ');
  m.c('body').t(`Recorded your answer: ${named}. You can change it until the poll closes.`);
  m.c('thread').t(p.id);
  const a = m.c('answered', { xmlns: NS_POLLS, poll: p.id });
  for (const n of choices) a.c('choice', { n: String(n) });
  return m;
}

/** A plain-text reply from the poll (help, refusals, confirmations of commands). */
export function textMessage(p: PollRecord, from: string, to: string, text: string): Element {
  const m = new Element('message', { type: 'chat', from, to });
  m.c('body').t(text);
  m.c('thread').t(p.id);
  return m;
}

export function helpText(p: PollRecord): string {
  const state = p.closedAt !== null ? `This poll closed ${human(p.closedAt)}.` : p.closesAt !== null ? `It closes ${human(p.closesAt)}.` : 'The author closes it.';
  return `${questionText(p)}\n${p.multiple ? 'Reply with the numbers of your choices.' : 'Reply with the number of your choice.'} ${state} ${resultsRule(p)}`;
}

/** §6: the results element. */
export function resultsElement(p: PollRecord, t: PollTally): Element {
  const el = new Element('results', {
    xmlns: NS_POLLS,
    poll: p.id,
    recipients: String(t.recipients),
    answered: String(t.answered),
    closed: p.closedAt === null ? undefined : stamp(p.closedAt),
  });
  p.choices.forEach((c, i) => el.c('choice', { n: String(i + 1), votes: String(t.counts[i] ?? 0) }).t(c));
  return el;
}

export function resultsText(p: PollRecord, t: PollTally): string {
  const head = p.closedAt === null ? `Results so far: ${p.question}` : `Final results: ${p.question}`;
  const rows = p.choices.map((c, i) => `${i + 1}. ${c}: ${t.counts[i] ?? 0}`);
  return [head, ...rows, `${t.answered} of ${t.recipients} answered.`].join('\n');
}

/** §6.2: the message that announces a closed poll's results. */
export function resultsMessage(p: PollRecord, t: PollTally, from: string, to: string): Element {
  const m = new Element('message', { type: 'chat', from, to, id: `${p.id}-results` });
  m.c('body').t(resultsText(p, t));
  m.c('thread').t(p.id);
  m.cnode(resultsElement(p, t));
  m.c('store', { xmlns: 'urn:xmpp:hints' });
  return m;
}
