// Polls protocol helpers (docs/polls.md §3.2 creation form, §5 answers): unit tests of the parsers.
import { describe, expect, it } from 'vitest';
import { Element } from 'ltx';
import { parseAnswer, parseCreateForm, pollMessage } from '../../src/modules/polls/protocol.js';
import type { PollRecord } from '../../src/storage/types.js';

const limits = { maxChoices: 5, maxQuestionLength: 50, maxChoiceLength: 20, maxDurationDays: 7 };
const NOW = Date.parse('2026-11-24T12:00:00Z');

function form(fields: Record<string, string[]>, type = 'submit'): Element {
  const x = new Element('x', { xmlns: 'jabber:x:data', type });
  for (const [k, vs] of Object.entries(fields)) {
    const f = x.c('field', { var: k });
    for (const v of vs) f.c('value').t(v);
  }
  return x;
}

const poll = (extra: Partial<PollRecord> = {}): PollRecord => ({
  id: 'poll-0123456789abcdef0123',
  host: 'example.com',
  creator: 'alice@example.com',
  question: 'Where?',
  choices: ['Lisbon', 'Oslo', 'Zürich'],
  multiple: false,
  results: 'creator',
  audience: ['bob@example.com'],
  createdAt: NOW,
  closesAt: null,
  closedAt: null,
  ...extra,
});

const body = (t: string) => {
  const m = new Element('message');
  m.c('body').t(t);
  return m;
};

describe('parseCreateForm', () => {
  const base = { question: ['Where?'], choices: ['Lisbon', 'Oslo'], audience: ['bob@example.com'] };

  it('reads a minimal form with defaults, choices one per value or per line', () => {
    expect(parseCreateForm(form(base), limits, NOW)).toEqual({ question: 'Where?', choices: ['Lisbon', 'Oslo'], audience: ['bob@example.com'], multiple: false, results: 'creator', closesAt: null });
    const lines = parseCreateForm(form({ ...base, choices: ['Lisbon\nOslo\n\n  Zürich  '], multiple: ['true'], results: ['closed'] }), limits, NOW);
    expect(lines).toMatchObject({ choices: ['Lisbon', 'Oslo', 'Zürich'], multiple: true, results: 'closed' });
  });

  it('turns duration and closes into a deadline', () => {
    expect(parseCreateForm(form({ ...base, duration: ['90'] }), limits, NOW).closesAt).toBe(NOW + 90 * 60_000);
    expect(parseCreateForm(form({ ...base, closes: ['2026-11-25T10:00:00+01:00'] }), limits, NOW).closesAt).toBe(Date.parse('2026-11-25T09:00:00Z'));
  });

  it.each([
    [{ question: [] }, /question is required/],
    [{ question: ['x'.repeat(51)] }, /longer than 50/],
    [{ choices: ['only'] }, /two choices/],
    [{ choices: ['a', 'b', 'c', 'd', 'e', 'f'] }, /more than 5/],
    [{ choices: ['a', 'x'.repeat(21)] }, /longer than 20/],
    [{ choices: ['Oslo', 'OSLO'] }, /the same/],
    [{ audience: [''] }, /whom to ask/],
    [{ multiple: ['perhaps'] }, /boolean/],
    [{ results: ['all'] }, /must be one of/],
    [{ duration: ['-5'] }, /positive number/],
    [{ duration: ['5'], closes: ['2026-11-25T00:00:00Z'] }, /not both/],
    [{ closes: ['2026-11-24T11:00:00Z'] }, /in the past/],
    [{ closes: ['tomorrow'] }, /XEP-0082/],
    [{ duration: [String(8 * 24 * 60)] }, /at most 7 days/],
    [{ FORM_TYPE: ['urn:other'] }, /FORM_TYPE/],
  ])('refuses %j', (bad, re) => {
    expect(() => parseCreateForm(form({ ...base, ...bad }), limits, NOW)).toThrow(re);
  });

  it('refuses a form that is not submitted', () => {
    expect(() => parseCreateForm(form(base, 'form'), limits, NOW)).toThrow(/submitted/);
  });
});

describe('parseAnswer', () => {
  it('reads numbers in the ways people write them, and choice texts', () => {
    const multi = poll({ multiple: true });
    expect(parseAnswer(body('2'), poll())).toEqual({ kind: 'text', choices: [2] });
    expect(parseAnswer(body(' #3. '), poll())).toEqual({ kind: 'text', choices: [3] });
    expect(parseAnswer(body('#3'), poll())).toEqual({ kind: 'text', choices: [3] });
    expect(parseAnswer(body('oslo'), poll())).toEqual({ kind: 'text', choices: [2] });
    expect(parseAnswer(body('ZÜRICH!'), poll())).toEqual({ kind: 'text', choices: [3] });
    expect(parseAnswer(body('1, 3'), multi)).toEqual({ kind: 'text', choices: [1, 3] });
    expect(parseAnswer(body('3 and 1;1'), multi)).toEqual({ kind: 'text', choices: [3, 1] });
  });

  it('recognises the commands and ignores bodiless messages', () => {
    expect(parseAnswer(body('Results?'), poll())).toEqual({ kind: 'command', command: 'results' });
    expect(parseAnswer(body('close'), poll())).toEqual({ kind: 'command', command: 'close' });
    expect(parseAnswer(body('?'), poll())).toEqual({ kind: 'command', command: 'help' });
    expect(parseAnswer(new Element('message'), poll())).toBeNull();
  });

  it('explains what is wrong with a text answer', () => {
    expect(parseAnswer(body('4'), poll())).toMatchObject({ kind: 'invalid', form: false, reason: expect.stringMatching(/1 to 3/) });
    expect(parseAnswer(body('1 2'), poll())).toMatchObject({ kind: 'invalid', reason: expect.stringMatching(/one choice/) });
    expect(parseAnswer(body('the second one'), poll())).toMatchObject({ kind: 'invalid', reason: expect.stringMatching(/Please answer/) });
  });

  it('reads submitted answer forms and refuses bad ones', () => {
    const answer = (choice: string[], formType = 'urn:parley:polls:0#answer') => {
      const m = new Element('message');
      m.cnode(form({ FORM_TYPE: [formType], choice }));
      return m;
    };
    expect(parseAnswer(answer(['2']), poll())).toEqual({ kind: 'form', choices: [2] });
    expect(parseAnswer(answer(['3', '1']), poll({ multiple: true }))).toEqual({ kind: 'form', choices: [3, 1] });
    expect(parseAnswer(answer(['1', '2']), poll())).toMatchObject({ kind: 'invalid', form: true });
    expect(parseAnswer(answer(['0']), poll())).toMatchObject({ kind: 'invalid', form: true });
    expect(parseAnswer(answer(['two']), poll())).toMatchObject({ kind: 'invalid', form: true });
    expect(parseAnswer(answer([]), poll())).toMatchObject({ kind: 'invalid', form: true });
    expect(parseAnswer(answer(['1'], 'urn:x'), poll())).toMatchObject({ kind: 'invalid', form: true });
  });
});

describe('pollMessage', () => {
  it('numbers the choices in the body and offers them in the form', () => {
    const m = pollMessage(poll({ closesAt: Date.parse('2026-12-01T12:00:00Z') }), 'poll-0123456789abcdef0123@polls.example.com', 'bob@example.com');
    expect(m.getChildText('body')).toBe(
      'Poll from alice@example.com:\nWhere?\n1. Lisbon\n2. Oslo\n3. Zürich\nReply with the number of your choice. It closes 2026-12-01 12:00 UTC. Only the author sees the results.',
    );
    expect(m.getChild('poll', 'urn:parley:polls:0')?.attrs.closes).toBe('2026-12-01T12:00:00Z');
  });
});
