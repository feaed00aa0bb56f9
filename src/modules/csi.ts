// XEP-0352 Client State Indication (v1.0): §4.1 stream feature after authentication, §4.2 the
// <active/>/<inactive/> nonzas (no reply), §5 business rules: every stream starts active, the state
// is independent of presence, in-order processing (§5.1: an <active/> flushes before the next
// stanza is handled) and resumed streams start active again (§5.2).
//
// The optimisation (§3.2, left to the server): while a session is inactive, stanzas that only update
// what the client would show (available/unavailable presence, chat-state-only messages) are held
// in the `c2s.send` fold, keeping only the newest per sender (and per conversation for chat
// states). Anything else is important: it first flushes what is held, then goes out itself, so the
// client sees everything in the order the server produced it. The held set is bounded; reaching the
// bound flushes it. Flushed stanzas pass through `session.send` again (a re-entrancy flag lets them
// out), so the later `c2s.send` folders (XEP-0198 counting) see every stanza once, in wire order:
// that is why this fold runs at a high priority (1000).
import { clone, type Element } from 'ltx';
import { z } from 'zod';
import { HANDLED } from '../core/hooks.js';
import { defineModule } from '../core/module.js';
import type { C2SSession } from '../core/session.js';

export const NS_CSI = 'urn:xmpp:csi:0';
const NS_CHATSTATES = 'http://jabber.org/protocol/chatstates';
const NS_CARBONS = 'urn:xmpp:carbons:2';
const NS_FORWARD = 'urn:xmpp:forward:0';
const NS_HINTS = 'urn:xmpp:hints';
const NS_SID = 'urn:xmpp:sid:0';
const NS_MUC_USER = 'http://jabber.org/protocol/muc#user';
const NS_PING = 'urn:xmpp:ping';

/** Runs before every other c2s.send folder (see the banner). */
const PRIORITY = 1000;

interface CsiState {
  /** Held stanzas by key, in the order they were (last) held: Map keeps insertion order. */
  held: Map<string, Element>;
  /** Set while held stanzas are being sent, so that they pass the fold. */
  flushing: boolean;
}

/** Present only while the session is inactive. */
const STATE = Symbol('csi.state');

export default defineModule({
  name: 'csi',
  xeps: ['0352'],
  options: z
    .object({
      maxHeld: z.number().int().min(1).max(10_000).default(100).describe('Held stanzas per inactive session; reaching it flushes them all'),
      holdChatStates: z.boolean().default(true).describe('Also hold messages that carry only a XEP-0085 chat state'),
    })
    .strict(),
  setup(ctx) {
    const { maxHeld, holdChatStates } = ctx.options;

    ctx.fold('c2s.features', (ev) => {
      if (ev.stage === 'post-auth') ev.features.c('csi', { xmlns: NS_CSI });
      return ev;
    });

    ctx.hook('c2s.nonza', ({ session, element }) => {
      // The state belongs to a bound stream (nonzas also reach this hook before binding, for XEP-0198).
      if (element.attrs.xmlns !== NS_CSI || session.state !== 'bound') return undefined;
      if (element.name === 'inactive') {
        if (!session.data.has(STATE)) session.data.set(STATE, { held: new Map(), flushing: false } satisfies CsiState);
        return HANDLED;
      }
      if (element.name === 'active') {
        activate(session);
        return HANDLED;
      }
      return undefined; // unknown element: the session answers unsupported-stanza-type
    });

    ctx.fold(
      'c2s.send',
      (ev) => {
        const state = ev.session.data.get(STATE) as CsiState | undefined;
        const stanza = ev.stanza;
        if (!state || state.flushing || !stanza) return ev;
        // The server's idle ping (XEP-0199) only checks the connection: it goes out without waking
        // what is held (it carries nothing to show, and its answer does not depend on order).
        if (isServerPing(stanza, ev.session)) return ev;
        const key = holdKey(stanza, holdChatStates);
        if (key !== null && (state.held.size < maxHeld || state.held.has(key))) {
          // Newest wins, and moves to the end: it is now the latest thing to show.
          // A copy: the router may reuse one element for several recipients.
          state.held.delete(key);
          state.held.set(key, clone(stanza));
          return { session: ev.session, stanza: null };
        }
        // Important (or the bound is reached): what is held goes first, then this stanza.
        flush(ev.session, state);
        return ev;
      },
      PRIORITY,
    );

    /** §5.2: a resumed stream starts active. */
    ctx.hook('session.resumed', ({ session }) => {
      activate(session);
      return undefined;
    });

    ctx.hook('session.closed', ({ session }) => {
      // Held presence and chat states are not worth keeping for a session that is gone.
      session.data.delete(STATE);
      return undefined;
    });
  },
});

function activate(session: C2SSession): void {
  const state = session.data.get(STATE) as CsiState | undefined;
  if (!state) return;
  flush(session, state);
  session.data.delete(STATE);
}

function flush(session: C2SSession, state: CsiState): void {
  if (state.held.size === 0) return;
  const held = [...state.held.values()];
  state.held.clear();
  state.flushing = true;
  try {
    for (const el of held) session.send(el);
  } finally {
    state.flushing = false;
  }
}

function isServerPing(stanza: Element, session: C2SSession): boolean {
  return stanza.name === 'iq' && stanza.attrs.type === 'get' && stanza.attrs.from === session.host && !!stanza.getChild('ping', NS_PING);
}

/**
 * The key under which an unimportant stanza is held (a newer one with the same key replaces it),
 * or null when the stanza is important and must go out now.
 */
export function holdKey(stanza: Element, holdChatStates: boolean): string | null {
  if (stanza.name === 'presence') {
    const type = stanza.attrs.type;
    // Subscription requests and errors need the user; probes never reach clients.
    if (type !== undefined && type !== 'unavailable') return null;
    // A MUC presence about ourselves (status 110) completes a join or reports a kick: important.
    const mucStatus = stanza.getChild('x', NS_MUC_USER)?.getChildren('status') ?? [];
    if (mucStatus.some((s) => s.attrs.code === '110')) return null;
    return `p\u0000${stanza.attrs.from ?? ''}`;
  }
  if (stanza.name === 'message' && holdChatStates) {
    // A carbon of a chat state is as unimportant as the chat state itself.
    const wrapper = stanza.getChildElements().find((c) => (c.name === 'sent' || c.name === 'received') && c.attrs.xmlns === NS_CARBONS);
    const inner = wrapper ? wrapper.getChild('forwarded', NS_FORWARD)?.getChild('message') : stanza;
    if (!inner || (wrapper && stanza.getChildElements().length !== 1)) return null;
    if (!isChatStateOnly(inner)) return null;
    return `m\u0000${wrapper?.name ?? ''}\u0000${inner.attrs.from ?? ''}\u0000${inner.attrs.to ?? ''}`;
  }
  return null;
}

/** A message whose only payload is a chat state (plus thread, hints and ids that mean nothing alone). */
function isChatStateOnly(msg: Element): boolean {
  if (msg.attrs.type === 'error') return false;
  let state = false;
  for (const c of msg.getChildElements()) {
    const ns = c.attrs.xmlns;
    if (ns === NS_CHATSTATES) state = true;
    else if (c.name === 'thread' && (ns === undefined || ns === 'jabber:client')) continue;
    else if (ns === NS_HINTS || ns === NS_SID) continue;
    else return false;
  }
  return state;
}
