// Service entitlements (issue 9): the `chat` entitlement, checked where a client's stanza enters
// the server. A user without it cannot send one-to-one chat or normal messages to other users
// (local or remote); messages to services (rooms, news, polls), to the server and to the user's
// own resources pass. The other entitlements are checked by the router for hosted services
// (ctx.service with `entitlement`) and for remote domains (`federation`).
import { z } from 'zod';
import { formatRule } from '../core/acl.js';
import { HANDLED } from '../core/hooks.js';
import { defineModule } from '../core/module.js';
import { stanzaError } from '../xmpp/errors.js';
import { Jid } from '../xmpp/jid.js';

export default defineModule({
  name: 'entitlements',
  options: z.object({}).strict(),
  setup(ctx) {
    /** Whether a domain is one of the services hosted here (a room JID has a localpart too). */
    const isService = (domain: string) => ctx.hostNames().some((h) => ctx.servicesOf(h).some((s) => s.jid === domain));

    ctx.hook(
      'c2s.stanza',
      ({ session, stanza }) => {
        if (stanza.name !== 'message') return;
        const type = stanza.attrs.type ?? 'normal';
        if (type !== 'chat' && type !== 'normal') return;
        const me = session.jid;
        const to = Jid.tryParse(stanza.attrs.to);
        if (!me || !to || !to.local || to.bare === me.bare) return;
        if (!ctx.isLocalHost(to.domain) && isService(to.domain)) return;
        if (ctx.acl.entitled('chat', me)) return;
        ctx.log.info({ user: me.bare, service: 'chat', rule: formatRule(ctx.acl.explain('chat', me)) }, 'chat refused: no entitlement');
        session.bounce(stanza, stanzaError('forbidden'));
        return HANDLED;
      },
      // Ahead of blocking (100), archiving and carbons: a refused message leaves no trace.
      1000,
    );
  },
});
