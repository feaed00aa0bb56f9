// XEP-0198 Stream Management (urn:xmpp:sm:3): acks (§4), resumption (§5) and what happens to
// stanzas the client never acknowledged (§5 "the server SHOULD treat unacknowledged stanzas as
// undelivered"). The session keeps the counters' raw material (stanzasIn, the send path) and the
// mechanics of hibernation and take-over (src/core/session.ts); this module keeps the protocol state.
//
// - `h` counts stanzas (message, presence, iq) modulo 2^32, inbound from the session's counter at
//   <enable/>, outbound as they pass the c2s.send fold (the last folder: what CSI holds back is
//   counted when it is really sent).
// - Unacknowledged stanzas are kept (bounded by maxUnacked) until an <a/> or a <resume/> covers them.
// - A resumable session whose connection drops hibernates for `max` seconds: it stays bound and
//   available, stanzas for it are queued (and announced on `session.held` for push). A <resume/> on a
//   new stream of the same account, over any transport or mux, takes the session over; the queued
//   stanzas the client has not acknowledged are sent again after <resumed/>.
// - When a session ends with stanzas unacknowledged (not resumed in time, closed, replaced), its
//   messages are delivered again: to the account's other sessions, else to offline storage.
import { randomBytes } from 'node:crypto';
import { Element } from 'ltx';
import { z } from 'zod';
import { HANDLED } from '../core/hooks.js';
import { defineModule } from '../core/module.js';
import type { C2SSession } from '../core/session.js';
import { StreamError } from '../xmpp/errors.js';
import { NS } from '../xmpp/ns.js';

const NS_SM = 'urn:xmpp:sm:3';
const NS_CARBONS = 'urn:xmpp:carbons:2';
const NS_MAM = 'urn:xmpp:mam:2';

interface SmState {
  /** Resumption id (CSPRNG), or null when resumption was not enabled. */
  id: string | null;
  /** session.stanzasIn when stream management was enabled. */
  inBase: number;
  /** The last `h` the client acknowledged (stanzas sent to it, modulo 2^32). */
  acked: number;
  /** Sent and not yet acknowledged; unacked[0] is stanza number acked + 1. */
  unacked: Element[];
}

const STATE = Symbol('sm');

const options = z
  .object({
    resume: z.boolean().default(true).describe('Offer session resumption'),
    resumeSeconds: z.number().int().min(1).max(3600).default(300).describe('How long a dropped session waits for resumption (the most a client may ask for)'),
    maxUnacked: z.number().int().min(10).max(1_000_000).default(5000).describe('Stanzas kept unacknowledged (also while hibernated) before the session is ended'),
    ackEvery: z.number().int().min(1).max(1000).default(5).describe('Ask the client for an ack after this many unacknowledged stanzas'),
  })
  .strict();

export default defineModule({
  name: 'sm',
  xeps: ['0198'],
  options,
  setup(ctx) {
    const o = ctx.options;
    const byId = new Map<string, C2SSession>();
    const state = (s: C2SSession) => s.data.get(STATE) as SmState | undefined;
    const nonza = (name: string, attrs: Record<string, string | number> = {}, condition?: string) => {
      const el = new Element(name, { xmlns: NS_SM, ...attrs });
      if (condition) el.c(condition, { xmlns: NS.STANZAS });
      return el.toString();
    };
    const outCount = (st: SmState) => (st.acked + st.unacked.length) >>> 0;
    const inCount = (s: C2SSession, st: SmState) => (s.stanzasIn - st.inBase) >>> 0;

    /** Applies an `h` from the client; false if it acknowledges more than was sent. */
    const ack = (st: SmState, h: number): boolean => {
      const n = (h - st.acked) >>> 0;
      if (n > st.unacked.length) return false;
      st.unacked.splice(0, n);
      st.acked = h;
      return true;
    };

    ctx.fold('c2s.features', (ev) => {
      if (ev.stage === 'post-auth') ev.features.c('sm', { xmlns: NS_SM });
      return ev;
    });

    ctx.hook('c2s.nonza', ({ session, element }) => {
      if (element.attrs.xmlns !== NS_SM) return;
      const st = state(session);
      switch (element.name) {
        case 'enable': {
          if (session.state !== 'bound' || st) {
            session.write(nonza('failed', {}, 'unexpected-request'));
            return HANDLED;
          }
          const wantResume = element.attrs.resume === 'true' || element.attrs.resume === '1';
          const next: SmState = { id: null, inBase: session.stanzasIn, acked: 0, unacked: [] };
          session.data.set(STATE, next);
          if (wantResume && o.resume) {
            const asked = Number(element.attrs.max);
            const max = Number.isInteger(asked) && asked > 0 ? Math.min(asked, o.resumeSeconds) : o.resumeSeconds;
            next.id = randomBytes(18).toString('base64url');
            byId.set(next.id, session);
            session.resumeTimeoutMs = max * 1000;
            session.write(nonza('enabled', { id: next.id, resume: 'true', max }));
          } else {
            session.write(nonza('enabled'));
          }
          return HANDLED;
        }
        case 'r':
          if (!st) throw new StreamError('unsupported-stanza-type', 'stream management is not enabled');
          session.write(nonza('a', { h: inCount(session, st) }));
          return HANDLED;
        case 'a': {
          if (!st) throw new StreamError('unsupported-stanza-type', 'stream management is not enabled');
          const h = parseH(element.attrs.h);
          if (h === null) throw new StreamError('invalid-xml', "<a/> needs an 'h' between 0 and 2^32-1");
          if (!ack(st, h)) throw handledCountTooHigh(h, outCount(st));
          return HANDLED;
        }
        case 'resume':
          resume(session, element);
          return HANDLED;
        default:
          throw new StreamError('unsupported-stanza-type', `unknown stream management element <${element.name}/>`);
      }
    });

    const resume = (fresh: C2SSession, element: Element): void => {
      if (fresh.state !== 'authenticated') {
        fresh.write(nonza('failed', {}, 'unexpected-request'));
        return;
      }
      const h = parseH(element.attrs.h);
      if (h === null) throw new StreamError('invalid-xml', "<resume/> needs an 'h' between 0 and 2^32-1");
      const previd = element.attrs.previd ?? '';
      const old = byId.get(previd);
      const st = old && state(old);
      // Another account's session id is answered exactly like an unknown one.
      if (!old || !st || old.state !== 'bound' || old.username !== fresh.username || old.host !== fresh.host) {
        fresh.write(nonza('failed', {}, 'item-not-found'));
        return;
      }
      if (!ack(st, h)) {
        fresh.write(nonza('failed', { h: inCount(old, st) }, 'unexpected-request'));
        return;
      }
      old.takeOver(fresh, () => {
        old.write(nonza('resumed', { previd, h: inCount(old, st) }));
        // Sent again, not counted again: they keep their numbers in the unacked queue.
        for (const stanza of st.unacked) old.write(stanza.toString());
        requestAck(old, st);
      });
    };

    const requestAck = (session: C2SSession, st: SmState) => {
      if (st.unacked.length) session.write(nonza('r'));
    };

    // Last folder: only what is really written counts.
    ctx.fold(
      'c2s.send',
      (ev) => {
        const st = ev.stanza && state(ev.session);
        if (!st || !ev.stanza) return ev;
        const session = ev.session;
        st.unacked.push(ev.stanza);
        if (st.unacked.length > o.maxUnacked) {
          // A client that never acks (or a hibernated session nobody resumes) must not grow forever.
          const why = `more than ${o.maxUnacked} stanzas unacknowledged`;
          queueMicrotask(() => (session.hibernated ? session.close(why) : session.fail(new StreamError('resource-constraint', why))));
        } else if (session.hibernated) {
          void ctx.fire('session.held', { session, stanza: ev.stanza }).catch((err) => ctx.log.error({ err }, 'session.held hook failed'));
        } else if (st.unacked.length % o.ackEvery === 0) {
          // After the stanza itself is written.
          queueMicrotask(() => session.write(nonza('r')));
        }
        return ev;
      },
      -1000,
    );

    ctx.hook('session.closed', async ({ session }) => {
      const st = state(session);
      if (!st) return;
      if (st.id) byId.delete(st.id);
      const pending = st.unacked.splice(0);
      for (const stanza of pending) {
        if (stanza.name !== 'message' || !worthRedelivering(stanza)) continue;
        try {
          await ctx.redeliver(stanza);
        } catch (err) {
          ctx.log.error({ err, user: session.jid?.bare }, 'could not redeliver an unacknowledged message');
        }
      }
    });

    ctx.onUnload(() => byId.clear());
  },
});

function parseH(v: string | undefined): number | null {
  if (v === undefined || !/^\d{1,10}$/.test(v)) return null;
  const n = Number(v);
  return n <= 0xffffffff ? n : null;
}

function handledCountTooHigh(h: number, sent: number): StreamError {
  const app = new Element('handled-count-too-high', { xmlns: NS_SM, h, 'send-count': sent });
  return new StreamError('undefined-condition', `acknowledged ${h} stanzas but only ${sent} were sent`, app);
}

/** Copies of other deliveries (carbons, archive results) would only duplicate what the user has. */
function worthRedelivering(stanza: Element): boolean {
  for (const c of stanza.children) {
    if (typeof c === 'string') continue;
    const ns = c.attrs.xmlns;
    if (ns === NS_CARBONS && (c.name === 'sent' || c.name === 'received')) return false;
    if (ns === NS_MAM && c.name === 'result') return false;
  }
  return true;
}
