// Polls (issue 7, docs/polls.md) with real clients: creation by iq and by ad-hoc command (with
// its errors and limits), the question with its form and plain-text fallback, answers by form and
// by plain text (changed, refused, late), results live and after closing for whom the poll allows,
// closing by hand and at the deadline, a room's people as the audience, the poll.create right,
// and a restart in the middle of a poll (answers kept, deadline still honoured, the question
// waiting offline for a recipient who was away).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join as pathJoin } from 'node:path';
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, iqError, type TestClient, xml } from '../helpers/client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';
import { createInstant, join } from '../helpers/muc.js';
import type { AccessControl, ServiceRight } from '../../src/core/acl.js';
import type { Jid } from '../../src/xmpp/jid.js';

const NS = 'urn:parley:polls:0';
const DATA = 'jabber:x:data';
const CMD = 'http://jabber.org/protocol/commands';
const SERVICE = 'polls.localhost';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function form(type: string, fields: Record<string, string | string[]>): Element {
  return xml(
    'x',
    { xmlns: DATA, type },
    ...Object.entries(fields).map(([k, v]) => xml('field', { var: k }, ...(Array.isArray(v) ? v : [v]).map((x) => xml('value', {}, x)))),
  );
}

const createIq = (fields: Record<string, string | string[]>) =>
  xml('iq', { type: 'set', to: SERVICE }, xml('create', { xmlns: NS }, form('submit', { FORM_TYPE: 'urn:parley:polls:0#create', ...fields })));

const answerForm = (poll: string, choices: string[]) =>
  xml('message', { to: poll, type: 'chat' }, form('submit', { FORM_TYPE: 'urn:parley:polls:0#answer', choice: choices }));

const text = (poll: string, body: string) => xml('message', { to: poll, type: 'chat' }, xml('body', {}, body));

const from = (poll: string) => (el: Element) => el.name === 'message' && el.attrs.from === poll;
const isQuestion = (poll?: string) => (el: Element) => el.name === 'message' && !!el.getChild('poll', NS) && (!poll || el.attrs.from === poll);
const votes = (results: Element | undefined) => (results?.getChildren('choice') ?? []).map((c) => Number(c.attrs.votes));

describe('polls (issue 7)', () => {
  let srv: TestServer;
  let port: number;
  const clients: TestClient[] = [];
  const grants: Record<string, ServiceRight[]> = {};
  let denied: string;

  async function newUser(prefix: string): Promise<string> {
    const u = uniqueUser(prefix);
    await srv.addUser(u);
    return `${u}@localhost`;
  }

  async function login(bare: string): Promise<TestClient> {
    const c = await connect({ port, username: bare.split('@')[0] as string });
    clients.push(c);
    await c.send(xml('presence'));
    await c.waitFor((el) => el.name === 'presence' && el.attrs.from === c.jid);
    return c;
  }

  /** Creates a poll over iq; resolves the poll's JID. */
  async function create(c: TestClient, fields: Record<string, string | string[]>): Promise<{ jid: string; recipients: number }> {
    const r = await c.iq(createIq(fields));
    const created = r.getChild('created', NS);
    expect(created?.attrs.id).toMatch(/^poll-/);
    expect(created?.attrs.jid).toBe(`${created?.attrs.id}@${SERVICE}`);
    return { jid: created?.attrs.jid as string, recipients: Number(created?.attrs.recipients) };
  }

  const results = async (c: TestClient, poll: string) => (await c.iq(xml('iq', { type: 'get', to: poll }, xml('results', { xmlns: NS })))).getChild('results', NS);

  beforeAll(async () => {
    srv = await startTestServer({ modules: { polls: { maxOpenPerUser: 4, maxChoices: 5, answersPerMinute: 8 } }, acl: { groups: { team: [] } } });
    port = srv.ports.c2s as number;
    denied = await newUser('denied');
    grants[denied] = [];
    // The default rights (every local account may create polls) except for `denied`.
    const acl: AccessControl = {
      allows: (right: ServiceRight, who: Jid) => (who.bare === denied ? false : right === 'poll.create' || right === 'room.create'),
      venue: () => null,
      entitled: () => true,
      explain: () => ({ allowed: true, rule: 'test' }),
    };
    srv.server.acl = acl;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
  });

  it('is a service of the host with the polls feature and a blank creation form', async () => {
    const a = await login(await newUser('disc'));
    const items = await a.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#items' })));
    expect(items.getChild('query')?.getChildren('item').map((i) => i.attrs.jid)).toContain(SERVICE);
    const info = await a.iq(xml('iq', { type: 'get', to: SERVICE }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    expect(info.getChild('query')?.getChildren('feature').map((f) => f.attrs.var)).toContain(NS);
    const blank = await a.iq(xml('iq', { type: 'get', to: SERVICE }, xml('create', { xmlns: NS })));
    const x = blank.getChild('create', NS)?.getChild('x', DATA);
    expect(x?.attrs.type).toBe('form');
    expect(x?.getChildren('field').map((f) => f.attrs.var)).toEqual(
      expect.arrayContaining(['FORM_TYPE', 'question', 'choices', 'audience', 'multiple', 'results', 'duration', 'closes']),
    );
  });

  it('asks with a form and a plain-text fallback; answers by form and by text, changeable; results for the author only', async () => {
    const [alice, bob, carol, dave] = await Promise.all([newUser('alice'), newUser('bob'), newUser('carol'), newUser('dave')]);
    const [a, b, c, d] = await Promise.all([login(alice), login(bob), login(carol), login(dave)]);
    const poll = await create(a, { question: 'Where shall we hold the offsite?', choices: ['Lisbon', 'Oslo', 'Zürich'], audience: [bob, carol] });
    expect(poll.recipients).toBe(2);

    const q = await b.waitFor(isQuestion(poll.jid));
    expect(q.attrs.type).toBe('chat');
    const body = q.getChildText('body') ?? '';
    expect(body).toContain('Where shall we hold the offsite?');
    expect(body).toContain('1. Lisbon');
    expect(body).toContain('3. Zürich');
    expect(body).toMatch(/Reply with the number/);
    const x = q.getChild('x', DATA);
    expect(x?.attrs.type).toBe('form');
    const field = x?.getChildren('field').find((f) => f.attrs.var === 'choice');
    expect(field?.attrs.type).toBe('list-single');
    expect(field?.getChildren('option').map((o) => [o.getChildText('value'), o.attrs.label])).toEqual([
      ['1', 'Lisbon'],
      ['2', 'Oslo'],
      ['3', 'Zürich'],
    ]);
    expect(q.getChild('poll', NS)?.attrs).toMatchObject({ creator: alice, multiple: 'false', results: 'creator' });
    await c.waitFor(isQuestion(poll.jid));

    // Bob answers with the form; Carol by text, then changes her mind by naming a choice.
    await b.send(answerForm(poll.jid, ['1']));
    const okB = await b.waitFor((el) => from(poll.jid)(el) && !!el.getChild('answered', NS));
    expect(okB.getChild('answered', NS)?.getChildren('choice').map((e) => e.attrs.n)).toEqual(['1']);
    await c.send(text(poll.jid, '2'));
    expect((await c.waitFor(from(poll.jid))).getChildText('body')).toContain('Recorded your answer: 2. Oslo');
    expect(votes(await results(a, poll.jid))).toEqual([1, 1, 0]); // live, before closing
    await c.send(text(poll.jid, 'zürich'));
    expect((await c.waitFor(from(poll.jid))).getChildText('body')).toContain('3. Zürich');
    const live = await results(a, poll.jid);
    expect(votes(live)).toEqual([1, 0, 1]);
    expect(live?.attrs).toMatchObject({ recipients: '2', answered: '2' });
    expect(live?.attrs.closed).toBeUndefined();

    // Text a person can get wrong gets a human answer and records nothing.
    await c.send(text(poll.jid, '7'));
    expect((await c.waitFor(from(poll.jid))).getChildText('body')).toMatch(/numbered 1 to 3/);
    await c.send(text(poll.jid, '1, 2'));
    expect((await c.waitFor(from(poll.jid))).getChildText('body')).toMatch(/takes one choice/);
    await c.send(text(poll.jid, 'maybe later'));
    expect((await c.waitFor(from(poll.jid))).getChildText('body')).toMatch(/Please answer with the number/);
    expect(votes(await results(a, poll.jid))).toEqual([1, 0, 1]);
    // A malformed form is an error stanza (a program sent it).
    await b.send(answerForm(poll.jid, ['9']));
    const bad = await b.waitFor((el) => from(poll.jid)(el) && el.attrs.type === 'error');
    expect(bad.getChild('error')?.getChild('bad-request')).toBeDefined();

    // Results are the author's: recipients and strangers are refused, by iq and by text.
    expect((await iqError(b, xml('iq', { type: 'get', to: poll.jid }, xml('results', { xmlns: NS })))).condition).toBe('forbidden');
    await b.send(text(poll.jid, 'results'));
    expect((await b.waitFor(from(poll.jid))).getChildText('body')).toMatch(/Only the author sees the results/);
    expect((await iqError(d, xml('iq', { type: 'get', to: poll.jid }, xml('results', { xmlns: NS })))).condition).toBe('forbidden');
    await d.send(text(poll.jid, '1'));
    const notAsked = await d.waitFor((el) => from(poll.jid)(el) && el.attrs.type === 'error');
    expect(notAsked.getChild('error')?.getChild('forbidden')).toBeDefined();
    expect(votes(await results(a, poll.jid))).toEqual([1, 0, 1]);

    // A recipient reads the poll back with its own answer; the service lists the poll for both.
    const mine = (await b.iq(xml('iq', { type: 'get', to: poll.jid }, xml('poll', { xmlns: NS })))).getChild('poll', NS);
    expect(mine?.getChildText('question')).toBe('Where shall we hold the offsite?');
    expect(mine?.getChild('answered')?.getChildren('choice').map((e) => e.attrs.n)).toEqual(['1']);
    for (const cl of [a, b]) {
      const its = await cl.iq(xml('iq', { type: 'get', to: SERVICE }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#items' })));
      expect(its.getChild('query')?.getChildren('item').map((i) => i.attrs.jid)).toContain(poll.jid);
    }
    const unknown = await iqError(a, xml('iq', { type: 'get', to: `poll-0123456789abcdef0123@${SERVICE}` }, xml('results', { xmlns: NS })));
    expect(unknown.condition).toBe('item-not-found');
  });

  it('closes by hand: results to everyone asked when the poll says so; late answers refused; only the author closes', async () => {
    const [alice, bob, carol] = await Promise.all([newUser('alice'), newUser('bob'), newUser('carol')]);
    const [a, b, c] = await Promise.all([login(alice), login(bob), login(carol)]);
    const poll = await create(a, { question: 'Which days?', choices: ['Mon', 'Tue', 'Wed'], audience: [bob, carol], multiple: '1', results: 'participants' });
    const q = await b.waitFor(isQuestion(poll.jid));
    expect(q.getChild('x', DATA)?.getChildren('field').find((f) => f.attrs.var === 'choice')?.attrs.type).toBe('list-multi');
    await c.waitFor(isQuestion(poll.jid));
    await b.send(answerForm(poll.jid, ['1', '3']));
    await b.waitFor((el) => from(poll.jid)(el) && !!el.getChild('answered', NS));
    await c.send(text(poll.jid, '#3 and 2'));
    expect((await c.waitFor(from(poll.jid))).getChildText('body')).toContain('2. Tue, 3. Wed');
    // Participants may watch the results while the poll runs.
    expect(votes(await results(b, poll.jid))).toEqual([1, 1, 2]);
    await b.send(text(poll.jid, 'results'));
    expect((await b.waitFor(from(poll.jid))).getChildText('body')).toMatch(/Results so far[\s\S]*3\. Wed: 2[\s\S]*2 of 2 answered/);

    expect((await iqError(b, xml('iq', { type: 'set', to: poll.jid }, xml('close', { xmlns: NS })))).condition).toBe('forbidden');
    await a.iq(xml('iq', { type: 'set', to: poll.jid }, xml('close', { xmlns: NS })));
    for (const cl of [a, b, c]) {
      const m = await cl.waitFor((el) => from(poll.jid)(el) && !!el.getChild('results', NS));
      expect(votes(m.getChild('results', NS))).toEqual([1, 1, 2]);
      expect(m.getChild('results', NS)?.attrs.closed).toMatch(/^\d{4}-\d{2}-\d{2}T/);
      expect(m.getChildText('body')).toMatch(/Final results/);
    }
    expect((await iqError(a, xml('iq', { type: 'set', to: poll.jid }, xml('close', { xmlns: NS })))).condition).toBe('not-allowed');
    await c.send(text(poll.jid, '1'));
    expect((await c.waitFor(from(poll.jid))).getChildText('body')).toMatch(/closed; your answer was not recorded[\s\S]*Final results/);
    await b.send(answerForm(poll.jid, ['2']));
    const late = await b.waitFor((el) => from(poll.jid)(el) && el.attrs.type === 'error');
    expect(late.getChild('error')?.getChild('not-allowed')).toBeDefined();
    expect(votes(await results(b, poll.jid))).toEqual([1, 1, 2]);
  });

  it('closes at the deadline; "closed" results are shown to participants only then; the author may close by text', async () => {
    const [alice, bob] = await Promise.all([newUser('alice'), newUser('bob')]);
    const [a, b] = await Promise.all([login(alice), login(bob)]);
    const closes = new Date(Date.now() + 1500).toISOString();
    const poll = await create(a, { question: 'Lunch?', choices: ['Yes', 'No'], audience: [bob], results: 'closed', closes });
    await b.waitFor(isQuestion(poll.jid));
    await b.send(text(poll.jid, 'yes'));
    await b.waitFor(from(poll.jid));
    expect((await iqError(b, xml('iq', { type: 'get', to: poll.jid }, xml('results', { xmlns: NS })))).condition).toBe('forbidden');
    const m = await b.waitFor((el) => from(poll.jid)(el) && !!el.getChild('results', NS), 10_000);
    expect(votes(m.getChild('results', NS))).toEqual([1, 0]);
    await a.waitFor((el) => from(poll.jid)(el) && !!el.getChild('results', NS));
    expect(votes(await results(b, poll.jid))).toEqual([1, 0]);

    const second = await create(a, { question: 'Coffee?', choices: ['Yes', 'No'], audience: [bob] });
    await b.waitFor(isQuestion(second.jid));
    await b.send(text(second.jid, 'close'));
    expect((await b.waitFor(from(second.jid))).getChildText('body')).toMatch(/Only the author closes/);
    await a.send(text(second.jid, 'close'));
    const fin = await a.waitFor((el) => from(second.jid)(el) && !!el.getChild('results', NS));
    expect(fin.getChildText('body')).toMatch(/Final results: Coffee\?/);
  });

  it('asks the people of a room its author belongs to; refuses rooms of others', async () => {
    const [alice, bob, carol] = await Promise.all([newUser('alice'), newUser('bob'), newUser('carol')]);
    const [a, b, c] = await Promise.all([login(alice), login(bob), login(carol)]);
    const room = `pollroom${process.pid}${Date.now() % 100000}@conference.localhost`;
    await createInstant(a, room, 'alice');
    await join(b, `${room}/bob`);
    const poll = await create(a, { question: 'Room vote', choices: ['A', 'B'], audience: [`room:${room}`] });
    expect(poll.recipients).toBe(2); // alice and bob
    await a.waitFor(isQuestion(poll.jid));
    await b.waitFor(isQuestion(poll.jid));
    expect((await iqError(c, createIq({ question: 'Hijack', choices: ['A', 'B'], audience: [`room:${room}`] }))).condition).toBe('forbidden');
    const none = await iqError(a, createIq({ question: 'Nowhere', choices: ['A', 'B'], audience: [`room:nosuchroom@conference.localhost`] }));
    expect(none.condition).toBe('bad-request');
  });

  it('refuses bad forms, unknown audiences, too many open polls, and users without the poll.create right', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const a = await login(alice);
    const cases: Record<string, string | string[]>[] = [
      { question: '', choices: ['A', 'B'], audience: [bob] },
      { question: 'One choice?', choices: ['A'], audience: [bob] },
      { question: 'Too many?', choices: ['A', 'B', 'C', 'D', 'E', 'F'], audience: [bob] },
      { question: 'Twice?', choices: ['A', 'a'], audience: [bob] },
      { question: 'Nobody?', choices: ['A', 'B'], audience: [] },
      { question: 'Stranger?', choices: ['A', 'B'], audience: ['nobody-here@localhost'] },
      { question: 'Elsewhere?', choices: ['A', 'B'], audience: ['someone@example.org'] },
      { question: 'Group?', choices: ['A', 'B'], audience: ['group:nosuchgroup'] },
      { question: 'Past?', choices: ['A', 'B'], audience: [bob], closes: '2001-01-01T00:00:00Z' },
      { question: 'When?', choices: ['A', 'B'], audience: [bob], duration: 'soon' },
      { question: 'Both?', choices: ['A', 'B'], audience: [bob], duration: '5', closes: '2099-01-01T00:00:00Z' },
      { question: 'Who?', choices: ['A', 'B'], audience: [bob], results: 'everybody' },
    ];
    for (const fields of cases) expect({ q: fields.question, e: (await iqError(a, createIq(fields))).condition }).toEqual({ q: fields.question, e: 'bad-request' });

    const d = await login(denied);
    expect((await iqError(d, createIq({ question: 'Allowed?', choices: ['A', 'B'], audience: [bob] }))).condition).toBe('forbidden');
    expect((await iqError(d, xml('iq', { type: 'get', to: SERVICE }, xml('create', { xmlns: NS })))).condition).toBe('forbidden');

    // maxOpenPerUser is 4 here; closing one makes room again.
    const open: string[] = [];
    for (let i = 0; i < 4; i++) open.push((await create(a, { question: `Open ${i}?`, choices: ['A', 'B'], audience: [bob] })).jid);
    expect(await iqError(a, createIq({ question: 'Fifth?', choices: ['A', 'B'], audience: [bob] }))).toEqual({ condition: 'resource-constraint', type: 'wait' });
    await a.iq(xml('iq', { type: 'set', to: open[0] }, xml('close', { xmlns: NS })));
    await create(a, { question: 'Fifth?', choices: ['A', 'B'], audience: [bob] });
  });

  it('limits the answers and commands one account sends (policy-violation), ignoring chat states', async () => {
    const [alice, bob] = await Promise.all([newUser('alice'), newUser('bob')]);
    const [a, b] = await Promise.all([login(alice), login(bob)]);
    const poll = await create(a, { question: 'Spam?', choices: ['A', 'B'], audience: [bob] });
    await b.waitFor(isQuestion(poll.jid));
    for (let i = 0; i < 20; i++) await b.send(xml('message', { to: poll.jid, type: 'chat' }, xml('composing', { xmlns: 'http://jabber.org/protocol/chatstates' })));
    for (let i = 0; i < 9; i++) await b.send(text(poll.jid, 'help'));
    for (let i = 0; i < 8; i++) expect((await b.waitFor(from(poll.jid))).getChildText('body')).toContain('Spam?');
    const limited = await b.waitFor(from(poll.jid));
    expect(limited.attrs.type).toBe('error');
    expect(limited.getChild('error')?.getChild('policy-violation')).toBeDefined();
  });

  it('creates a poll with the XEP-0050 command; a mistake shows the form again with the values and the reason', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const [a, b] = await Promise.all([login(alice), login(bob)]);
    const cmd = (attrs: Record<string, string>, x?: Element) => xml('iq', { type: 'set', to: 'localhost' }, xml('command', { xmlns: CMD, node: 'urn:parley:polls:create', ...attrs }, ...(x ? [x] : [])));
    const first = (await a.iq(cmd({ action: 'execute' }))).getChild('command', CMD);
    expect(first?.attrs.status).toBe('executing');
    const sid = first?.attrs.sessionid as string;
    const again = (await a.iq(cmd({ sessionid: sid, action: 'complete' }, form('submit', { question: 'Tea?', choices: ['Yes'], audience: [bob] })))).getChild('command', CMD);
    expect(again?.attrs.status).toBe('executing');
    expect(again?.getChild('note')?.getText()).toMatch(/two choices/);
    expect(again?.getChild('x', DATA)?.getChildren('field').find((f) => f.attrs.var === 'question')?.getChildText('value')).toBe('Tea?');
    const done = (await a.iq(cmd({ sessionid: sid, action: 'complete' }, form('submit', { question: 'Tea?', choices: ['Yes', 'No'], audience: [bob] })))).getChild('command', CMD);
    expect(done?.attrs.status).toBe('completed');
    const jid = done?.getChild('x', DATA)?.getChildren('field').find((f) => f.attrs.var === 'jid')?.getChildText('value') as string;
    expect(jid).toMatch(new RegExp(`^poll-.+@${SERVICE.replace('.', '\\.')}$`));
    const q = await b.waitFor(isQuestion(jid));
    expect(q.getChildText('body')).toContain('Tea?');
  });
});

describe('polls across a restart', () => {
  it('keep their answers, close at their deadline after the restart, and reach a recipient who was away', async () => {
    const dataDir = mkdtempSync(pathJoin(tmpdir(), 'parley-polls-'));
    const s1 = await startTestServer({ dataDir });
    const [alice, bob, carol, dave] = [uniqueUser('alice'), uniqueUser('bob'), uniqueUser('carol'), uniqueUser('dave')];
    for (const u of [alice, bob, carol, dave]) await s1.addUser(u);
    const at = (u: string) => `${u}@localhost`;
    const online = async (port: number, u: string) => {
      const c = await connect({ port, username: u });
      await c.send(xml('presence'));
      await c.waitFor((el) => el.name === 'presence' && el.attrs.from === c.jid);
      return c;
    };
    let s2: TestServer | undefined;
    try {
      let [a, b] = await Promise.all([online(s1.ports.c2s as number, alice), online(s1.ports.c2s as number, bob)]);
      // One poll whose deadline passes while the server is down, one whose deadline comes after.
      const soonAt = Date.now() + 3000;
      const soon = (await a.iq(createIq({ question: 'Soon?', choices: ['A', 'B'], audience: [at(bob)], closes: new Date(soonAt).toISOString() }))).getChild('created', NS)?.attrs.jid as string;
      const later = (
        await a.iq(createIq({ question: 'Later?', choices: ['A', 'B', 'C'], audience: [at(bob), at(carol), at(dave)], closes: new Date(Date.now() + 10_000).toISOString(), results: 'participants' }))
      ).getChild('created', NS)?.attrs.jid as string;
      await b.waitFor(isQuestion(soon));
      await b.waitFor(isQuestion(later));
      await b.send(text(soon, '2'));
      await b.waitFor(from(soon));
      await b.send(text(later, '3'));
      await b.waitFor(from(later));
      await Promise.all([a.stop(), b.stop()]);
      await s1.stop();
      rmSync(s1.dataDir, { recursive: true, force: true });
      await sleep(Math.max(0, soonAt - Date.now() + 200)); // `soon` comes due while nothing runs

      s2 = await startTestServer({ dataDir });
      const port = s2.ports.c2s as number;
      // `soon` was closed at start; Alice finds its results waiting offline.
      a = await online(port, alice);
      const soonResults = await a.waitFor((el) => from(soon)(el) && !!el.getChild('results', NS));
      expect(votes(soonResults.getChild('results', NS))).toEqual([0, 1]);
      // Carol and Dave were away all along: the question waited for them offline.
      const [c, d] = await Promise.all([online(port, carol), online(port, dave)]);
      await c.waitFor(isQuestion(later));
      const q = await d.waitFor(isQuestion(later));
      expect(q.getChildText('body')).toContain('Later?');
      await d.send(text(later, '3'));
      await d.waitFor(from(later));
      await c.send(text(later, '1'));
      await c.waitFor(from(later));
      b = await online(port, bob);
      const fin = await b.waitFor((el) => from(later)(el) && !!el.getChild('results', NS), 15_000);
      expect(votes(fin.getChild('results', NS))).toEqual([1, 0, 2]);
      expect(fin.getChild('results', NS)?.attrs).toMatchObject({ recipients: '3', answered: '3' });
      await Promise.all([a, b, c, d].map((cl) => cl.stop()));
    } finally {
      await s2?.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe('polls governed by polls.acl', () => {
  it('lets the users the file allows create polls and refuses the others', async () => {
    const dir = mkdtempSync(pathJoin(tmpdir(), 'parley-polls-acl-'));
    writeFileSync(pathJoin(dir, 'polls.acl'), '# every local user except interns\nallow *@localhost\ndeny @interns\n');
    const [staff, intern, bob] = [uniqueUser('staff'), uniqueUser('intern'), uniqueUser('bob')];
    const srv = await startTestServer({ acl: { directory: dir, groups: { interns: [`${intern}@localhost`] } } });
    try {
      for (const u of [staff, intern, bob]) await srv.addUser(u);
      const [s, i] = await Promise.all([connect({ port: srv.ports.c2s as number, username: staff }), connect({ port: srv.ports.c2s as number, username: intern })]);
      const fields = { question: 'Allowed?', choices: ['A', 'B'], audience: [`${bob}@localhost`] };
      expect((await s.iq(createIq(fields))).getChild('created', NS)?.attrs.recipients).toBe('1');
      expect(await iqError(i, createIq(fields))).toEqual({ condition: 'forbidden', type: 'auth' });
      // The ad-hoc command is not even offered to the intern.
      const items = async (c: TestClient) =>
        (await c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#items', node: CMD })))).getChild('query')?.getChildren('item').map((e) => e.attrs.node);
      expect(await items(s)).toContain('urn:parley:polls:create');
      expect(await items(i)).not.toContain('urn:parley:polls:create');
      await Promise.all([s.stop(), i.stop()]);
    } finally {
      await srv.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
