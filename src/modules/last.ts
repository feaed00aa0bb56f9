// XEP-0012 Last Activity (v2.0): §3 offline user query (bare JID, answered by the server), §4 online
// user query (full JID, delivered to the client), §5 server uptime, §6 disco feature, §8 no presence
// leaks: only the account itself and contacts allowed to see its presence (roster subscription
// 'from' or 'both') get an answer; anyone else gets forbidden (§3 and §4 MUST), and a request to a
// full JID from them is not delivered. Requests from blocked JIDs never get here (XEP-0191 drops
// them first in route.user).
//
// The last logout is recorded in the KeyValStore (store 'last', key '') as {t: ms, s: status} when
// the account's last resource goes unavailable or its last session ends; the status is the <status/>
// of the last unavailable presence the resource sent. With a resource connected the answer is 0.
// No record yet (never logged out): item-not-found.
import { Element } from 'ltx';
import { z } from 'zod';
import { defineModule } from '../core/module.js';
import type { C2SSession } from '../core/session.js';
import { StanzaError, stanzaError } from '../xmpp/errors.js';
import { NS } from '../xmpp/ns.js';

const STORE = 'last';
const KEY = '';
const MAX_STATUS = 1024;
/** Session data: the status of the resource's last unavailable presence. */
const STATUS = Symbol('last.status');

interface LastRecord {
  t: number;
  s: string;
}

export default defineModule({
  name: 'last',
  xeps: ['0012'],
  options: z.object({}).strict(),
  setup(ctx) {
    const kv = ctx.storage.keyval;
    const startedAt = Date.now();

    const query = (seconds: number, text?: string) => {
      const q = new Element('query', { xmlns: NS.LAST, seconds: String(Math.max(0, Math.floor(seconds))) });
      if (text) q.t(text);
      return q;
    };

    /** Whether `requester` may see `user`'s presence (RFC 6121: subscription from/both). */
    async function authorized(user: string, requester: string): Promise<boolean> {
      const item = await ctx.storage.roster.getItem(user, requester);
      return !!item && (item.subscription === 'from' || item.subscription === 'both');
    }

    ctx.iq(
      'get',
      NS.LAST,
      'query',
      async (req) => {
        // §5: the server (a bare domain) answers with its uptime.
        if (!req.to.local) return query((Date.now() - startedAt) / 1000);
        if (!req.self && !(await authorized(req.to.bare, req.from.bare))) throw new StanzaError('auth', 'forbidden');
        // §3: a connected resource means "active now".
        if (ctx.sessions.count(req.to.bare) > 0) return query(0);
        const raw = await kv.get(req.to.bare, STORE, KEY);
        const rec = raw === null ? null : readRecord(raw);
        if (!rec) throw stanzaError('item-not-found', 'no logout recorded yet');
        return query((Date.now() - rec.t) / 1000, rec.s);
      },
      'both',
    );

    // §4: a query to a full JID goes to the client, but only from someone allowed to see presence.
    ctx.hook(
      'route.user',
      async ({ stanza, to, from }) => {
        if (stanza.name !== 'iq' || stanza.attrs.type !== 'get' || !to.resource || !from || from.bare === to.bare) return;
        if (!stanza.getChild('query', NS.LAST)) return;
        if (!(await authorized(to.bare, from.bare))) throw new StanzaError('auth', 'forbidden');
        return undefined;
      },
      50,
    );

    async function record(user: string, status: string): Promise<void> {
      try {
        const rec: LastRecord = { t: Date.now(), s: status };
        await kv.set(user, STORE, KEY, JSON.stringify(rec));
      } catch (err) {
        ctx.log.error({ err, user }, 'cannot record last activity');
      }
    }

    // Observe broadcast presence (before the roster module takes it; never handled here).
    ctx.hook(
      'c2s.stanza',
      async ({ session, stanza }) => {
        if (stanza.name !== 'presence' || stanza.attrs.to !== undefined || !session.jid) return;
        const type = stanza.attrs.type;
        if (type === undefined) {
          session.data.delete(STATUS);
          return;
        }
        if (type !== 'unavailable') return;
        const status = (stanza.getChildText('status') ?? '').slice(0, MAX_STATUS);
        session.data.set(STATUS, status);
        const bare = session.jid.bare;
        if (!ctx.sessions.available(bare).some((s) => s !== session)) await record(bare, status);
        return;
      },
      20,
    );

    ctx.hook('session.closed', async ({ session }: { session: C2SSession }) => {
      const jid = session.jid;
      if (!jid || ctx.sessions.count(jid.bare) > 0) return;
      // A removed account must not get a fresh record.
      if (!(await ctx.accountExists(jid.bare))) return;
      await record(jid.bare, (session.data.get(STATUS) as string | undefined) ?? '');
      return;
    });
  },
});

function readRecord(raw: string): LastRecord | null {
  try {
    const v = JSON.parse(raw) as Partial<LastRecord>;
    if (typeof v.t !== 'number') return null;
    return { t: v.t, s: typeof v.s === 'string' ? v.s : '' };
  } catch {
    return null;
  }
}
