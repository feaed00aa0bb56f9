// Alerts (issue 7) over XEP-0050 ad-hoc commands with real clients: command discovery filtered by
// the requester's rights, the two-stage urn:parley:alerts:send form (next / prev / complete /
// cancel and the XEP-0050 §4.6 errors), online delivery (headline, XEP-0066 URL, XEP-0131 Urgency,
// XEP-0184 request), delivery at the next login (delayed), the receipt report, ACL refusal, the
// XEP-0133 announce command to online sessions, and bad forms.
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { barrier, connect, type TestClient, xml } from '../helpers/client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';
import type { AccessControl, ServiceRight } from '../../src/core/acl.js';
import type { Jid } from '../../src/xmpp/jid.js';

const CMD = 'http://jabber.org/protocol/commands';
const SEND = 'urn:parley:alerts:send';
const REPORT = 'urn:parley:alerts:report';
const ANNOUNCE = 'http://jabber.org/protocol/admin#announce';
const DATA = 'jabber:x:data';

function submit(fields: Record<string, string | string[]>, formType = 'urn:parley:alerts:0'): Element {
  const all: Record<string, string | string[]> = { FORM_TYPE: formType, ...fields };
  return xml(
    'x',
    { xmlns: DATA, type: 'submit' },
    ...Object.entries(all).map(([k, v]) => xml('field', { var: k }, ...(Array.isArray(v) ? v : [v]).map((x) => xml('value', {}, x)))),
  );
}

function command(node: string, attrs: { action?: string; sessionid?: string } = {}, form?: Element): Element {
  return xml('iq', { type: 'set', to: 'localhost' }, xml('command', { xmlns: CMD, node, ...attrs }, ...(form ? [form] : [])));
}

function fieldValues(x: Element | undefined, name: string): string[] {
  const f = x?.getChildren('field').find((e) => e.attrs.var === name);
  return f ? f.getChildren('value').map((v) => v.getText()) : [];
}

/** The error of a failing iq: general condition and the XEP-0050 specific one, if any. */
async function commandFailure(c: TestClient, el: Element): Promise<{ condition: string; specific?: string; type: string }> {
  try {
    const r = await c.iq(el);
    throw new Error(`expected an error, got ${String(r)}`);
  } catch (e) {
    const err = e as { condition?: string; application?: Element; element?: Element };
    if (!err.condition) throw e;
    return { condition: err.condition, specific: err.application?.name, type: err.element?.attrs.type ?? '' };
  }
}

describe('alerts (issue 7) over ad-hoc commands', () => {
  let srv: TestServer;
  let port: number;
  const clients: TestClient[] = [];
  // Rights granted by the test's access control: sender may send alerts, admin administers.
  let sender: string;
  let admin: string;

  async function newUser(prefix: string): Promise<string> {
    const u = uniqueUser(prefix);
    await srv.addUser(u);
    return `${u}@localhost`;
  }

  async function login(bare: string, opts: { resource?: string; available?: boolean } = {}): Promise<TestClient> {
    const c = await connect({ port, username: bare.split('@')[0] as string, resource: opts.resource, mechanism: 'PLAIN' });
    clients.push(c);
    if (opts.available !== false) {
      await c.send(xml('presence'));
      await c.waitFor((el) => el.name === 'presence' && el.attrs.from === c.jid);
    }
    return c;
  }

  const isAlert = (el: Element) => el.name === 'message' && el.attrs.type === 'headline';

  /** Runs urn:parley:alerts:send to completion; resolves the alert id. */
  async function sendAlert(c: TestClient, fields: Record<string, string | string[]>): Promise<string> {
    const first = await c.iq(command(SEND, { action: 'execute' }));
    const sid = first.getChild('command', CMD)?.attrs.sessionid as string;
    await c.iq(command(SEND, { sessionid: sid, action: 'next' }, submit(fields)));
    const done = await c.iq(command(SEND, { sessionid: sid, action: 'complete' }));
    return fieldValues(done.getChild('command', CMD)?.getChild('x', DATA), 'id')[0] as string;
  }

  async function report(c: TestClient, id: string): Promise<Element> {
    const first = await c.iq(command(REPORT));
    const sid = first.getChild('command', CMD)?.attrs.sessionid as string;
    const done = await c.iq(command(REPORT, { sessionid: sid, action: 'complete' }, submit({ id })));
    const cmd = done.getChild('command', CMD);
    expect(cmd?.attrs.status).toBe('completed');
    return cmd?.getChild('x', DATA) as Element;
  }

  beforeAll(async () => {
    // Group `ops` (acl.groups) names two accounts created below.
    srv = await startTestServer({ modules: { alerts: { pollSeconds: 0.2 } }, acl: { groups: { ops: ['opsone@localhost', 'opstwo@localhost'] } } });
    port = srv.ports.c2s as number;
    sender = await newUser('sender');
    admin = await newUser('admin');
    const grants: Record<string, ServiceRight[]> = { [sender]: ['alert.send'], [admin]: ['admin'] };
    const acl: AccessControl = {
      allows: (right: ServiceRight, who: Jid) => grants[who.bare]?.includes(right) ?? false,
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

  it('lists only the commands the requester may run, and describes a command node', async () => {
    const plain = await login(await newUser('plain'));
    const s = await login(sender);
    const itemsOf = async (c: TestClient) =>
      (await c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#items', node: CMD }))))
        .getChild('query')
        ?.getChildren('item')
        .map((i) => i.attrs.node);
    expect(await itemsOf(s)).toEqual(expect.arrayContaining([SEND, REPORT, ANNOUNCE]));
    // Commands of other modules (polls, news) may be offered to everyone; the alert ones are not.
    const plainItems = await itemsOf(plain);
    for (const node of [SEND, REPORT, ANNOUNCE]) expect(plainItems).not.toContain(node);

    const info = await s.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info', node: SEND })));
    const q = info.getChild('query');
    expect(q?.getChild('identity')?.attrs).toMatchObject({ category: 'automation', type: 'command-node' });
    expect(q?.getChildren('feature').map((f) => f.attrs.var)).toEqual(expect.arrayContaining([CMD, DATA]));
    const serverInfo = await s.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    expect(serverInfo.getChild('query')?.getChildren('feature').map((f) => f.attrs.var)).toContain(CMD);
    // XEP-0050 §2.2: a command the requester may not run is forbidden, an unknown node not found.
    const denied = await commandFailure(plain, xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info', node: SEND })));
    expect(denied.condition).toBe('forbidden');
    const unknown = await commandFailure(s, xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info', node: 'urn:nope' })));
    expect(unknown.condition).toBe('item-not-found');
  });

  it('refuses a user without the alert.send right (forbidden) and an unknown node (item-not-found)', async () => {
    const plain = await login(await newUser('plain'));
    for (const node of [SEND, REPORT, ANNOUNCE]) {
      const e = await commandFailure(plain, command(node, { action: 'execute' }));
      expect(e).toMatchObject({ condition: 'forbidden', type: 'auth' });
    }
    const s = await login(sender);
    expect((await commandFailure(s, command('urn:parley:no-such-command'))).condition).toBe('item-not-found');
  });

  it('runs the two-stage send form (next, prev, complete), delivers online at once and offline at next login, and reports receipts', async () => {
    const online = await newUser('online');
    const offline = await newUser('offline');
    const on = await login(online, { resource: 'desk' });
    const s = await login(sender);

    // Stage 0: the compose form, with "next" as the only and default action.
    const r0 = (await s.iq(command(SEND, { action: 'execute' }))).getChild('command', CMD) as Element;
    expect(r0.attrs.status).toBe('executing');
    const sid = r0.attrs.sessionid as string;
    expect(sid).toBeTruthy();
    expect(r0.getChild('actions')?.attrs.execute).toBe('next');
    expect(r0.getChild('actions')?.getChildElements().map((a) => a.name)).toEqual(['next']);
    const form0 = r0.getChild('x', DATA);
    expect(form0?.attrs.type).toBe('form');
    expect(form0?.getChildren('field').map((f) => f.attrs.var)).toEqual(expect.arrayContaining(['recipients', 'subject', 'body', 'url', 'priority', 'receipts']));

    const fields = {
      recipients: [online, offline],
      subject: 'Fire drill',
      body: ['Leave the building', 'by the east stairs.'],
      url: 'https://intranet.example/drill',
      priority: 'high',
      receipts: '1',
    };
    // Stage 1: the confirmation, with prev and complete (default).
    const r1 = (await s.iq(command(SEND, { sessionid: sid, action: 'next' }, submit(fields)))).getChild('command', CMD) as Element;
    expect(r1.attrs).toMatchObject({ status: 'executing', sessionid: sid });
    expect(r1.getChild('actions')?.attrs.execute).toBe('complete');
    expect(fieldValues(r1.getChild('x', DATA), 'count')).toEqual(['2']);

    // prev: back to the compose form, values kept.
    const back = (await s.iq(command(SEND, { sessionid: sid, action: 'prev' }))).getChild('command', CMD) as Element;
    expect(fieldValues(back.getChild('x', DATA), 'subject')).toEqual(['Fire drill']);
    expect(fieldValues(back.getChild('x', DATA), 'recipients')).toEqual([online, offline]);
    // "complete" is not offered at stage 0: bad-action.
    expect(await commandFailure(s, command(SEND, { sessionid: sid, action: 'complete' }))).toMatchObject({ condition: 'bad-request', specific: 'bad-action' });
    await s.iq(command(SEND, { sessionid: sid, action: 'next' }, submit(fields)));
    // execute = the stage's default action (complete).
    const done = (await s.iq(command(SEND, { sessionid: sid, action: 'execute' }))).getChild('command', CMD) as Element;
    expect(done.attrs.status).toBe('completed');
    const id = fieldValues(done.getChild('x', DATA), 'id')[0] as string;
    expect(id).toMatch(/^alert-/);
    expect(fieldValues(done.getChild('x', DATA), 'delivered')).toEqual(['1']);
    expect(done.getChild('note')?.attrs.type).toBe('info');
    // The session has ended.
    expect(await commandFailure(s, command(SEND, { sessionid: sid, action: 'next' }, submit(fields)))).toMatchObject({ condition: 'not-allowed', specific: 'session-expired' });

    // Online: a headline from the host with subject, body, URL, urgency and a receipt request.
    const m = await on.waitFor(isAlert);
    expect(m.attrs).toMatchObject({ from: 'localhost', id, type: 'headline' });
    expect(m.getChildText('subject')).toBe('Fire drill');
    expect(m.getChildText('body')).toBe('Leave the building\nby the east stairs.');
    expect(m.getChild('x', 'jabber:x:oob')?.getChildText('url')).toBe('https://intranet.example/drill');
    const header = m.getChild('headers', 'http://jabber.org/protocol/shim')?.getChild('header');
    expect(header?.attrs.name).toBe('Urgency');
    expect(header?.getText()).toBe('high');
    expect(m.getChild('request', 'urn:xmpp:receipts')).toBeTruthy();
    expect(m.getChild('delay', 'urn:xmpp:delay')).toBeUndefined();

    // Before any receipt or login: one delivered, one pending.
    let rep = await report(s, id);
    expect(fieldValues(rep, 'total')).toEqual(['2']);
    expect(fieldValues(rep, 'delivered')).toEqual(['1']);
    expect(fieldValues(rep, 'pending')).toEqual(['1']);
    expect(fieldValues(rep, 'received')).toEqual(['0']);
    expect(fieldValues(rep, 'pending-jids')).toEqual([offline]);

    // The online recipient's client acknowledges (XEP-0184 §5).
    await on.send(xml('message', { to: 'localhost', id: 'ack-1' }, xml('received', { xmlns: 'urn:xmpp:receipts', id })));
    // Not bounced: the host takes receipts for alerts.
    await on.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
    expect(on.received.some((el) => el.name === 'message' && el.attrs.type === 'error')).toBe(false);

    // The offline recipient: connected but not yet available gets nothing; initial presence delivers it, delayed.
    const off = await login(offline, { available: false });
    await barrier(off); // binding (and what it triggers) is handled before the ping
    expect(off.received.filter(isAlert)).toEqual([]);
    await off.send(xml('presence'));
    const held = await off.waitFor(isAlert);
    expect(held.attrs.id).toBe(id);
    expect(held.getChildText('subject')).toBe('Fire drill');
    expect(held.getChild('delay', 'urn:xmpp:delay')?.attrs.from).toBe('localhost');
    // Delivered once: a second login gets nothing more.
    const again = await login(offline, { resource: 'second' });
    await barrier(again); // held alerts go out while initial presence is handled, before the pong
    expect(again.received.filter(isAlert)).toEqual([]);

    rep = await report(s, id);
    expect(fieldValues(rep, 'delivered')).toEqual(['2']);
    expect(fieldValues(rep, 'pending')).toEqual(['0']);
    expect(fieldValues(rep, 'received')).toEqual(['1']);
    expect(fieldValues(rep, 'received-jids')).toEqual([online]);
    expect(fieldValues(rep, 'delivered-jids')).toEqual([offline]);
  });

  it('cancels a session; rejects unknown, foreign and malformed session use', async () => {
    const s = await login(sender, { resource: 'a' });
    const s2 = await login(sender, { resource: 'b' });
    const sid = (await s.iq(command(SEND))).getChild('command', CMD)?.attrs.sessionid as string;
    // Another resource (even of the same account) cannot continue it (XEP-0050 §3.3: bound to the full JID).
    expect(await commandFailure(s2, command(SEND, { sessionid: sid, action: 'next' }, submit({})))).toMatchObject({ condition: 'bad-request', specific: 'bad-sessionid' });
    expect(await commandFailure(s, command(SEND, { sessionid: 'no-such-session', action: 'next' }))).toMatchObject({ condition: 'bad-request', specific: 'bad-sessionid' });
    expect(await commandFailure(s, command(SEND, { sessionid: sid, action: 'jump' }))).toMatchObject({ condition: 'bad-request', specific: 'malformed-action' });
    // A new session starts with execute only.
    expect(await commandFailure(s, command(SEND, { action: 'complete' }))).toMatchObject({ condition: 'bad-request', specific: 'bad-action' });

    const canceled = (await s.iq(command(SEND, { sessionid: sid, action: 'cancel' }))).getChild('command', CMD);
    expect(canceled?.attrs).toMatchObject({ status: 'canceled', sessionid: sid, node: SEND });
    expect(await commandFailure(s, command(SEND, { sessionid: sid, action: 'next' }, submit({})))).toMatchObject({ condition: 'not-allowed', specific: 'session-expired' });
  });

  it('answers a bad form with bad-payload and keeps the session at its stage', async () => {
    const s = await login(sender);
    const sid = (await s.iq(command(SEND))).getChild('command', CMD)?.attrs.sessionid as string;
    const good = { recipients: [sender], subject: 'S', body: 'B' };
    const cases: Record<string, string | string[]>[] = [
      { ...good, recipients: ['nobody-here@localhost'] },
      { ...good, recipients: ['someone@elsewhere.example'] },
      { ...good, recipients: ['group:no-such-group'] },
      { ...good, subject: '' },
      { ...good, priority: 'apocalyptic' },
      { ...good, receipts: 'maybe' },
      { recipients: [], subject: 'S', body: 'B' },
    ];
    for (const fields of cases) {
      const e = await commandFailure(s, command(SEND, { sessionid: sid, action: 'next' }, submit(fields)));
      expect(e, JSON.stringify(fields)).toMatchObject({ condition: 'bad-request', specific: 'bad-payload', type: 'modify' });
    }
    // No form at all.
    expect(await commandFailure(s, command(SEND, { sessionid: sid, action: 'next' }))).toMatchObject({ specific: 'bad-payload' });
    // A bad URL is caught when the alert is stored.
    await s.iq(command(SEND, { sessionid: sid, action: 'next' }, submit({ ...good, url: 'javascript:alert(1)' })));
    expect(await commandFailure(s, command(SEND, { sessionid: sid, action: 'complete' }))).toMatchObject({ specific: 'bad-payload' });
    // The session is still usable after errors.
    await s.iq(command(SEND, { sessionid: sid, action: 'prev' }));
    await s.iq(command(SEND, { sessionid: sid, action: 'next' }, submit(good)));
    const done = await s.iq(command(SEND, { sessionid: sid, action: 'complete' }));
    expect(done.getChild('command', CMD)?.attrs.status).toBe('completed');
  });

  it('does not show one sender the report of another sender\'s alert; an admin may read any', async () => {
    const other = await newUser('other');
    const grantsAcl = srv.server.acl;
    srv.server.acl = { allows: (r, who) => (who.bare === other && r === 'alert.send') || grantsAcl.allows(r, who), venue: () => null, entitled: () => true, explain: () => ({ allowed: true, rule: 'test' }) };
    try {
      const s = await login(sender);
      const o = await login(other);
      const id = await sendAlert(s, { recipients: [other], subject: 'private', body: 'x' });
      await o.waitFor(isAlert);
      const first = await o.iq(command(REPORT));
      const sid = first.getChild('command', CMD)?.attrs.sessionid as string;
      expect(await commandFailure(o, command(REPORT, { sessionid: sid, action: 'complete' }, submit({ id })))).toMatchObject({ specific: 'bad-payload' });
      const a = await login(admin);
      expect(fieldValues(await report(a, id), 'delivered')).toEqual(['1']);
    } finally {
      srv.server.acl = grantsAcl;
    }
  });

  it('announces (XEP-0133) to every online session of the host and stores nothing for the others', async () => {
    const u1 = await newUser('ann');
    const u2 = await newUser('ann');
    const absent = await newUser('absent');
    const c1 = await login(u1, { resource: 'r1' });
    const c1b = await login(u1, { resource: 'r2' });
    const c2 = await login(u2);
    const a = await login(admin);

    const r0 = (await a.iq(command(ANNOUNCE, { action: 'execute' }))).getChild('command', CMD) as Element;
    expect(r0.attrs.status).toBe('executing');
    const form = r0.getChild('x', DATA);
    expect(fieldValues(form, 'FORM_TYPE')).toEqual(['http://jabber.org/protocol/admin']);
    // XEP-0133's own example submits without an action: execute = complete.
    const done = (
      await a.iq(command(ANNOUNCE, { sessionid: r0.attrs.sessionid as string }, submit({ announcement: ['Server restart', 'in 5 minutes'] }, 'http://jabber.org/protocol/admin')))
    ).getChild('command', CMD);
    expect(done?.attrs.status).toBe('completed');
    for (const c of [c1, c1b, c2]) {
      const m = await c.waitFor(isAlert);
      expect(m.attrs.from).toBe('localhost');
      expect(m.getChildText('body')).toBe('Server restart\nin 5 minutes');
    }
    const late = await login(absent);
    await barrier(late);
    expect(late.received.filter(isAlert)).toEqual([]);

    // An empty announcement is a bad payload.
    const sid = (await a.iq(command(ANNOUNCE))).getChild('command', CMD)?.attrs.sessionid as string;
    expect(await commandFailure(a, command(ANNOUNCE, { sessionid: sid, action: 'complete' }, submit({ announcement: '' }, 'http://jabber.org/protocol/admin')))).toMatchObject({
      specific: 'bad-payload',
    });
  });

  it('resolves group:NAME from acl.groups and everyone to every account of the host', async () => {
    await srv.addUser('opsone');
    await srv.addUser('opstwo');
    const o1 = await login('opsone@localhost');
    const s = await login(sender);
    const first = await s.iq(command(SEND));
    const sid = first.getChild('command', CMD)?.attrs.sessionid as string;
    const conf = await s.iq(command(SEND, { sessionid: sid, action: 'next' }, submit({ recipients: ['group:ops', 'opsone@localhost'], subject: 'Ops', body: 'b' })));
    expect(fieldValues(conf.getChild('command', CMD)?.getChild('x', DATA), 'count')).toEqual(['2']);
    const done = await s.iq(command(SEND, { sessionid: sid, action: 'complete' }));
    const id = fieldValues(done.getChild('command', CMD)?.getChild('x', DATA), 'id')[0] as string;
    expect((await o1.waitFor(isAlert)).attrs.id).toBe(id);
    expect((await srv.storage.alerts.recipients(id)).map((r) => [r.user, r.state])).toEqual([
      ['opsone@localhost', 'delivered'],
      ['opstwo@localhost', 'pending'],
    ]);

    const { storeAlert } = await import('../../src/modules/alerts.js');
    const all = await storeAlert({ storage: srv.storage, config: srv.config }, { host: 'localhost', sender: 'cli', to: ['everyone'], subject: 'All', body: 'b' }, 10_000);
    expect(all.recipients).toEqual(await srv.storage.accounts.list('localhost'));
    await expect(storeAlert({ storage: srv.storage, config: srv.config }, { host: 'localhost', sender: 'cli', to: ['everyone'], subject: 'All', body: 'b' }, 2)).rejects.toThrow(/more than 2 recipients/);
  });

  it('delivers alerts another process stored (the poll) to online recipients', async () => {
    const u = await newUser('polled');
    const c = await login(u);
    const { storeAlert } = await import('../../src/modules/alerts.js');
    // Written straight into storage, as `parley alert send` does from its own process.
    const { alert } = await storeAlert({ storage: srv.storage, config: srv.config }, { host: 'localhost', sender: 'cli', to: [u], subject: 'From the CLI', body: 'hello' }, 100);
    const m = await c.waitFor(isAlert, 5000);
    expect(m.attrs.id).toBe(alert.id);
    expect(m.getChild('headers', 'http://jabber.org/protocol/shim')?.getChild('header')?.getText()).toBe('medium');
    expect((await srv.storage.alerts.recipients(alert.id))[0]?.state).toBe('delivered');
  });
});
