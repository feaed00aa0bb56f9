// XEP-0050 ad-hoc commands on the server's own domain: discovery (§2.1 disco#items of the
// `http://jabber.org/protocol/commands` node, §2.2 disco#info of a command node), execution
// (§3.2-3.4 with sessionid, stages, <actions/>, cancel §3.5) and the errors of §4.6 (bad-action,
// malformed-action, bad-sessionid, session-expired, bad-payload, forbidden, item-not-found).
//
// Modules offer commands by folding `adhoc.commands`; they never import this file. A command is a
// descriptor with a stage function: the framework keeps the session (owner, stage, state, allowed
// actions) between stages, so a command only answers "what does this stage show or do".
import { randomBytes } from 'node:crypto';
import { Element } from 'ltx';
import { z } from 'zod';
import { defineModule } from '../core/module.js';
import { stanzaError } from '../xmpp/errors.js';
import type { Jid } from '../xmpp/jid.js';
import { NS } from '../xmpp/ns.js';
import { commandError, NS_COMMANDS, note, type NoteType } from '../xmpp/adhoc.js';

/** An action a requester may take at a stage (XEP-0050 §3.4; `execute` names the default one). */
export type AdhocAction = 'prev' | 'next' | 'complete';

export interface AdhocStage {
  from: Jid;
  /** The local host the command was sent to. */
  host: string;
  /** The action taken (`execute` already resolved to the stage's default). */
  action: 'execute' | AdhocAction;
  /** 0 on the first call; +1 after next/complete, -1 after prev. */
  stage: number;
  /** The submitted jabber:x:data form of this request, if any. */
  form: Element | null;
  /** Per-session state, kept between stages (the command's own scratch space). */
  state: Record<string, unknown>;
}

export type AdhocReply =
  | {
      status: 'executing';
      /** The payload shown at this stage (usually one jabber:x:data form). */
      payload: Element[];
      actions: AdhocAction[];
      /** The default action (the `execute` attribute of <actions/>); one of `actions`. */
      execute: AdhocAction;
      notes?: { type: NoteType; text: string }[];
    }
  | { status: 'completed'; payload?: Element[]; notes?: { type: NoteType; text: string }[] };

export interface AdhocCommand {
  node: string;
  name: string;
  /** Whether `who` may see (disco) and run the command. */
  allowed(who: Jid): boolean;
  /** Runs one stage; a thrown StanzaError is the reply (use commandError('bad-payload') for bad forms). */
  run(stage: AdhocStage): AdhocReply | Promise<AdhocReply>;
}

declare module '../core/hooks.js' {
  interface FoldMap {
    /** XEP-0050: the commands a local host offers; modules push their descriptors. */
    'adhoc.commands': { host: string; commands: AdhocCommand[] };
    /**
     * XEP-0050 at another address than the host (a hosted service such as news.<host>, whose
     * stanzas its module receives): the module folds this with its own commands and the received
     * <command/>; this module runs the stage with the same sessions and rules as on the host and
     * sets `reply`. `reply` stays null when ad-hoc commands are off.
     */
    'adhoc.execute': { from: Jid; address: string; host: string; command: Element; commands: AdhocCommand[]; reply: Element | null };
  }
}

interface Session {
  id: string;
  node: string;
  /** Where the command runs: the host, or a service of it (`adhoc.execute`). */
  address: string;
  /** Full JID of the requester: XEP-0050 §3.3 binds a session to it. */
  owner: string;
  ownerBare: string;
  stage: number;
  state: Record<string, unknown>;
  actions: AdhocAction[];
  execute: AdhocAction;
  expires: number;
}

const ACTIONS = new Set(['execute', 'prev', 'next', 'complete', 'cancel']);

export default defineModule({
  name: 'adhoc',
  xeps: ['0050'],
  options: z
    .object({
      sessionTimeoutSeconds: z.number().int().min(10).default(600).describe('A multi-stage command session idle this long ends (session-expired)'),
      maxSessionsPerUser: z.number().int().min(1).default(10).describe('Open command sessions per account; the oldest is dropped beyond it'),
    })
    .strict(),
  setup(ctx) {
    const opts = ctx.options;
    const sessions = new Map<string, Session>();
    // Ended sessions, remembered briefly so that a late request gets session-expired, not bad-sessionid.
    const ended = new Map<string, number>();
    const ENDED_CAP = 1000;

    const commandsFor = async (host: string) => (await ctx.foldValue('adhoc.commands', { host, commands: [] })).commands;

    const end = (s: Session) => {
      sessions.delete(s.id);
      ended.set(s.id, Date.now());
      if (ended.size > ENDED_CAP) ended.delete(ended.keys().next().value as string);
    };

    ctx.every(30_000, 'adhoc: session sweep', async () => {
      const now = Date.now();
      for (const s of sessions.values()) if (s.expires <= now) end(s);
      for (const [id, at] of ended) if (at < now - opts.sessionTimeoutSeconds * 1000) ended.delete(id);
    });

    // ---- discovery (§2) ------------------------------------------------------------------------

    ctx.fold('disco.server-items', async (ev) => {
      if (ev.node !== NS_COMMANDS) return ev;
      for (const c of await commandsFor(ev.host)) {
        if (c.allowed(ev.from)) ev.items.push(new Element('item', { jid: ev.host, node: c.node, name: c.name }));
      }
      return ev;
    });

    ctx.fold('disco.server-node-info', async (ev) => {
      if (ev.found) return ev;
      if (ev.node === NS_COMMANDS) {
        ev.query.c('identity', { category: 'automation', type: 'command-list', name: 'Commands' });
        ev.query.c('feature', { var: NS_COMMANDS });
        ev.found = true;
        return ev;
      }
      const cmd = (await commandsFor(ev.host)).find((c) => c.node === ev.node);
      if (!cmd) return ev;
      // §2.2: a command the requester may not run answers forbidden.
      if (!cmd.allowed(ev.from)) throw stanzaError('forbidden');
      ev.query.c('identity', { category: 'automation', type: 'command-node', name: cmd.name });
      ev.query.c('feature', { var: NS_COMMANDS });
      ev.query.c('feature', { var: NS.DATA_FORMS });
      ev.found = true;
      return ev;
    });

    // ---- execution (§3) ------------------------------------------------------------------------

    ctx.iq('set', NS_COMMANDS, 'command', async (req) => execute(req.from, req.to.domain, req.to.domain, req.payload, await commandsFor(req.to.domain)));

    ctx.fold('adhoc.execute', async (ev) => {
      if (ev.reply || !ctx.isLocalHost(ev.host)) return ev;
      return { ...ev, reply: await execute(ev.from, ev.address, ev.host, ev.command, ev.commands) };
    });

    /** Runs one request on `address` (the host, or a service of it); sessions are bound to the address too. */
    async function execute(from: Jid, address: string, host: string, p: Element, commands: AdhocCommand[]): Promise<Element> {
      const node = p.attrs.node;
      if (!node) throw commandError('bad-payload', 'the command has no node');
      const rawAction = p.attrs.action ?? 'execute';
      if (!ACTIONS.has(rawAction)) throw commandError('malformed-action', `unknown action ${rawAction}`);
      const cmd = commands.find((c) => c.node === node);
      if (!cmd) throw stanzaError('item-not-found');
      if (!cmd.allowed(from)) throw stanzaError('forbidden');

      const sid = p.attrs.sessionid;
      let session: Session | undefined;
      let action: AdhocStage['action'];
      if (sid) {
        session = sessions.get(sid);
        if (!session || session.expires <= Date.now()) {
          if (session) end(session);
          if (ended.has(sid)) throw commandError('session-expired');
          throw commandError('bad-sessionid');
        }
        // Another requester (or another command or address) naming this session gets no hint that it exists.
        if (session.owner !== from.full || session.node !== node || session.address !== address) throw commandError('bad-sessionid');
        if (rawAction === 'cancel') {
          end(session);
          return commandElement(node, sid, 'canceled');
        }
        action = rawAction === 'execute' ? session.execute : (rawAction as AdhocAction);
        if (!session.actions.includes(action)) throw commandError('bad-action', `${action} is not allowed at this stage`);
      } else {
        // A new session starts with execute only; cancelling nothing is a bad action.
        if (rawAction !== 'execute') throw commandError('bad-action', 'a command starts with execute');
        action = 'execute';
      }

      const stage = session ? session.stage + (action === 'prev' ? -1 : 1) : 0;
      const state = session?.state ?? {};
      const form = p.getChildElements().find((c) => c.name === 'x' && c.attrs.xmlns === NS.DATA_FORMS) ?? null;
      // XEP-0050 §3.4.5: a requester's <x type='cancel'/> counts as a submission of the stage.
      const reply = await cmd.run({ from: from, host, action, stage, form, state });

      const id = session?.id ?? `${Date.now().toString(36)}-${randomBytes(8).toString('hex')}`;
      if (reply.status === 'completed') {
        if (session) end(session);
        const el = commandElement(node, id, 'completed');
        for (const n of reply.notes ?? []) el.cnode(note(n.type, n.text));
        for (const c of reply.payload ?? []) el.cnode(c);
        return el;
      }
      if (!reply.actions.includes(reply.execute)) throw new Error(`command ${node}: default action ${reply.execute} is not among its actions`);
      const expires = Date.now() + opts.sessionTimeoutSeconds * 1000;
      if (session) {
        Object.assign(session, { stage, actions: reply.actions, execute: reply.execute, expires });
      } else {
        const mine = [...sessions.values()].filter((s) => s.ownerBare === from.bare);
        if (mine.length >= opts.maxSessionsPerUser && mine[0]) end(mine[0]);
        sessions.set(id, { id, node, address, owner: from.full, ownerBare: from.bare, stage, state, actions: reply.actions, execute: reply.execute, expires });
      }
      const el = commandElement(node, id, 'executing');
      const actions = el.c('actions', { execute: reply.execute });
      for (const a of reply.actions) actions.c(a);
      for (const n of reply.notes ?? []) el.cnode(note(n.type, n.text));
      for (const c of reply.payload) el.cnode(c);
      return el;
    }
  },
});

function commandElement(node: string, sessionid: string, status: 'executing' | 'completed' | 'canceled'): Element {
  return new Element('command', { xmlns: NS_COMMANDS, node, sessionid, status });
}
