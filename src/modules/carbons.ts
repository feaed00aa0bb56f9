// XEP-0280 Message Carbons (v1.0): §3 disco feature, §4 enable, §5 disable, §6.1 eligibility rules
// (chat; normal with body; XEP-0184/0085/0333 payloads; bounces; MUC rules: no groupchat, no PMs
// received from a room occupant, invitations and PMs sent to occupants copied), §7 received copies,
// §8 sent copies, §9 <private/> with the XEP-0334 §4.3 <no-copy/> hint, §10.1 repeated
// enable/disable, §11 security (forged carbons are stripped, never re-wrapped).
//
// Where it runs:
//  - received copies: hook `message.delivered` (sync, after the router wrote the message to the
//    sessions RFC 6121 chose), so a message refused by blocking or stored offline is never copied.
//  - sent copies: hook `c2s.stanza` at priority 50, below blocking (100), whose veto (HANDLED)
//    stops a message to a blocked contact before it is copied, and below XEP-0313 archiving (60).
//    Copies are made for any destination: remote domains, other users, and the user's own other
//    resources. Before wrapping, the copy passes the `carbons.sent` fold, where the archive adds the
//    <stanza-id/> of the sender's archive entry (XEP-0313 §3 "SHOULD include the element as a child
//    of the forwarded message"); the routed original never carries it.
//  - forgeries: genuine carbons are written straight to sessions and never routed, so a routed
//    message carrying a top-level carbons <sent/>/<received/> is a forgery (CVE-2017-5589): the
//    element is removed both when a local client sends it (c2s.stanza, priority 200, before any
//    other handler sees it) and when it reaches a local account from anywhere (route.user,
//    priority 200), so no client ever gets it, directly or wrapped in a genuine copy.
//
// Not advertised: urn:xmpp:carbons:rules:0, because bounces are recognised heuristically (the
// server keeps no record of which sent messages were eligible).
import { clone, Element } from 'ltx';
import { z } from 'zod';
import { defineModule, type IqRequest } from '../core/module.js';
import type { C2SSession } from '../core/session.js';
import { StanzaError } from '../xmpp/errors.js';
import { Jid } from '../xmpp/jid.js';

export const NS_CARBONS = 'urn:xmpp:carbons:2';
export const NS_FORWARD = 'urn:xmpp:forward:0';
export const NS_HINTS = 'urn:xmpp:hints';
const NS_CLIENT = 'jabber:client';
const NS_RECEIPTS = 'urn:xmpp:receipts';
const NS_CHATSTATES = 'http://jabber.org/protocol/chatstates';
const NS_MARKERS = 'urn:xmpp:chat-markers:0';
const NS_MUC_USER = 'http://jabber.org/protocol/muc#user';
const NS_CONFERENCE = 'jabber:x:conference';

/** Session flag: this resource enabled carbons (§4); absent means disabled. */
const ENABLED = Symbol('carbons.enabled');

declare module '../core/hooks.js' {
  interface FoldMap {
    /**
     * Fold: `copy` (a clone of `original`, the message `session` sent) is about to be wrapped in
     * <sent/> carbons for the account's other resources; handlers may add children to `copy` only
     * (XEP-0313 adds the sender's archive stanza-id). `original` identifies the message; it is
     * routed as it is and must not be changed here.
     */
    'carbons.sent': { session: C2SSession; original: Element; copy: Element };
  }
}

/** Namespaces of the IM payloads that make a message eligible on their own (§6.1, third rule). */
const IM_PAYLOADS = new Set([NS_RECEIPTS, NS_CHATSTATES, NS_MARKERS]);

export default defineModule({
  name: 'carbons',
  xeps: ['0280', '0334'],
  options: z.object({}).strict(),
  setup(ctx) {
    ctx.addFeature(NS_CARBONS);

    /**
     * §4/§5: only a local client may switch its own carbons, addressing its account (no 'to') or its
     * server; anyone else gets not-allowed (§4.1, §5.1). §10.1: repeating either is not an error.
     */
    const toggle = (on: boolean) => (req: IqRequest) => {
      const s = req.session;
      const own = req.self || (!req.to.local && req.to.domain === req.from.domain);
      if (!s || !own || s.jid?.full !== req.from.full) throw new StanzaError('cancel', 'not-allowed', 'carbons can only be switched by a client for its own session');
      if (on) s.data.set(ENABLED, true);
      else s.data.delete(ENABLED);
      return undefined;
    };
    ctx.iq('set', NS_CARBONS, 'enable', toggle(true), 'both');
    ctx.iq('set', NS_CARBONS, 'disable', toggle(false), 'both');

    // ---- §11 forgeries -----------------------------------------------------------------------

    ctx.hook(
      'c2s.stanza',
      ({ stanza }) => {
        if (stanza.name === 'message') stripForgedCarbons(stanza);
        return undefined;
      },
      200,
    );
    ctx.hook(
      'route.user',
      ({ stanza }) => {
        if (stanza.name === 'message') stripForgedCarbons(stanza);
        return undefined;
      },
      200,
    );

    // ---- §8 sent copies ----------------------------------------------------------------------

    ctx.hook(
      'c2s.stanza',
      async ({ session, stanza }) => {
        if (stanza.name !== 'message' || !session.jid) return undefined;
        const me = session.jid;
        if (!enabledSessions(me.bare, (s) => s !== session).length || !eligible(stanza, 'sent')) return undefined;
        const copy = clone(stanza);
        // No 'to' means the account itself (RFC 6120 §10.3); the copy says so explicitly.
        copy.attrs.to ??= me.bare;
        const ev = await ctx.foldValue('carbons.sent', { session, original: stanza, copy });
        // Asked again after the fold: a resource may have gone or switched carbons meanwhile.
        for (const s of enabledSessions(me.bare, (x) => x !== session)) s.send(wrap('sent', ev.copy, me.bare, s));
        return undefined;
      },
      50,
    );

    // ---- §7 received copies ------------------------------------------------------------------

    ctx.fold('message.delivered', (ev) => {
      const { stanza, to, sessions } = ev;
      const from = Jid.tryParse(stanza.attrs.from);
      // A message between the account's own resources was already copied to every other
      // resource as <sent/> (§8); a <received/> copy too would be a duplicate.
      if (from && from.bare === to.bare) return ev;
      const others = enabledSessions(to.bare, (s) => !sessions.includes(s));
      if (!others.length || !eligible(stanza, 'received', from)) return ev;
      for (const s of others) s.send(wrap('received', stanza, to.bare, s));
      return ev;
    });

    function enabledSessions(bare: string, keep: (s: C2SSession) => boolean): C2SSession[] {
      return ctx.sessions.resources(bare).filter((s) => s.data.get(ENABLED) === true && !s.closed && keep(s));
    }
  },
});

/** The §7/§8 wrapper: from the bare JID, to the copy's recipient, same type, original inside. */
function wrap(kind: 'sent' | 'received', original: Element, bare: string, to: C2SSession): Element {
  const attrs: Record<string, string> = { from: bare, to: to.jid?.full ?? bare };
  if (original.attrs.type !== undefined) attrs.type = original.attrs.type;
  const msg = new Element('message', attrs);
  const inner = clone(original);
  // Inside <forwarded/> the default namespace is urn:xmpp:forward:0; the copy must say jabber:client.
  inner.attrs.xmlns = NS_CLIENT;
  msg.c(kind, { xmlns: NS_CARBONS }).c('forwarded', { xmlns: NS_FORWARD }).cnode(inner);
  return msg;
}

function isCarbonWrapper(el: Element): boolean {
  return (el.name === 'sent' || el.name === 'received') && el.attrs.xmlns === NS_CARBONS;
}

/** Removes top-level carbons <sent/>/<received/> elements (only the server creates those). */
export function stripForgedCarbons(msg: Element): boolean {
  const before = msg.children.length;
  msg.children = msg.children.filter((c) => typeof c === 'string' || !isCarbonWrapper(c));
  return msg.children.length !== before;
}

/** §6.1 eligibility, with the §9 exclusions. `from` is the sender, for received messages. */
export function eligible(msg: Element, direction: 'sent' | 'received', from?: Jid | null): boolean {
  const children = msg.getChildElements();
  // Never wrap a carbon in a carbon (forgeries were stripped; this is defence in depth).
  if (children.some(isCarbonWrapper)) return false;
  // §9 and XEP-0334 §4.3. Also applied to errors: the bounce of a private message stays private.
  if (msg.getChild('private', NS_CARBONS) || msg.getChild('no-copy', NS_HINTS)) return false;
  const type = msg.attrs.type ?? 'normal';
  if (type === 'groupchat') return false; // §6.1 MUC rule: the room replicates it
  const mucUser = msg.getChild('x', NS_MUC_USER);
  if (direction === 'received' && mucUser && from?.resource && !mucUser.getChild('invite')) {
    // §6.1: a PM from a room occupant is already replicated by the room to every joined client.
    return false;
  }
  const hasBody = !!msg.getChild('body');
  if (type === 'error') {
    // §6.1: an error answering an eligible message. Bounces of messages sent to a bare JID come
    // from that bare JID (Prosody's rule); ours also carry the original body.
    return direction === 'received' && !mucUser && (!!(from && !from.resource) || hasBody);
  }
  if (type === 'chat') return true;
  if (type === 'normal' && hasBody) return true;
  if (children.some((c) => IM_PAYLOADS.has(c.attrs.xmlns ?? ''))) return true;
  // §6.1: XEP-0249 direct and XEP-0045 mediated invitations.
  if (msg.getChild('x', NS_CONFERENCE) || mucUser?.getChild('invite')) return true;
  return false;
}
