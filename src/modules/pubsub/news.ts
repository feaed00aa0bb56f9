// News channels (issue 7): a XEP-0060 (v1.26) publish-subscribe service at `news.<host>` whose
// nodes are channels. Implemented: §5.1/§5.2 disco of the service and of its nodes (disco#items
// lists the channels), §5.4 node meta-data, §5.6 own subscriptions, §5.7 own affiliations, §6.1
// subscribe (multi-subscribe with subids, §6.1.6 authorize model: pending, presence and whitelist
// models, §6.1.7 last item on subscription), §6.2 unsubscribe (subid-required / invalid-subid),
// §6.3 subscription options (deliver, include_body; digests refused), §6.4 default options, §6.5
// items retrieval (all, by id, max_items), §7.1 publish with item ids (publish models publishers,
// subscribers, open; §7.1.5 publish-options as preconditions), §7.2 retract with notify, §8.1
// create (instant nodes, create-and-configure), §8.2 configure, §8.3 default configuration, §8.4
// delete with redirect and notification, §8.2.5.3 configuration change notification
// (pubsub#notify_config), §8.5 purge, §8.6 subscription approval by the owner (authorization form
// message; pending requests are stored with the channel), §8.7 pending requests by the XEP-0050
// command pubsub#get-pending, §8.8 manage subscriptions, §8.9 manage affiliations (owner, publisher,
// publish-only, member, none, outcast) with §8.9.4 notification of the affected entity, §12
// notifications as headline messages with payloads and SHIM SubID headers, pubsub#item_expire
// (expired items are hidden on read and removed by a periodic sweep, without retract notifications:
// nobody retracted them). Not implemented: collections, digests.
//
// Account removal: the account's subscriptions and affiliations leave every channel (done by
// storage.accounts.remove(), so also by `parley user remove`). Its channels stay (Prosody and
// ejabberd delete a removed user's nodes only for PEP); a channel left without an owner is managed
// by accounts with the `admin` right, who may name a new owner through §8.9. Nobody else gains
// rights, and the creator's JID never becomes owner again.
//
// Rights: creating a channel needs the service-wide right `channel.create` (access control files),
// publishing to any channel the right `channel.publish` (publish.acl: refused even to the channel's
// owners and publishers, logged with the deciding rule); on each channel, an access file may grant
// MANAGE/WRITE/READ/NONE, read as owner / publisher / member / outcast, and overrides the channel's
// own affiliations; without one, the affiliations decide (the creator is the first owner).
//
// Offline subscribers: notifications are headlines, which are not stored offline (RFC 6121
// §8.5.2.1.1 behaviour kept for every headline). Storing every item for every offline subscriber
// would copy each channel into each mailbox; instead, when a subscriber sends initial presence, the
// newest items of each channel configured with send_last_published_item=on_sub_and_presence are
// sent with a <delay/> (the XEP-0060 §12.3 behaviour, triggered by login rather than by directed
// presence, so that clients need not share presence with the service).
//
// Hosting: like upload.ts and proxy65.ts, `news.<host>` is registered with `ctx.service`; the
// router hands it its stanzas after the `news` entitlement check, and this module answers them.
import { randomBytes } from 'node:crypto';
import { clone, Element, parse } from 'ltx';
import { z } from 'zod';
import { formatRule } from '../../core/acl.js';
import type { FoldMap } from '../../core/hooks.js';
import { defineModule } from '../../core/module.js';
import { serializer } from '../../core/serializer.js';
import type { PubsubItem } from '../../storage/types.js';
import { commandError, NS_COMMANDS } from '../../xmpp/adhoc.js';
import { StanzaError, stanzaError } from '../../xmpp/errors.js';
import { Jid } from '../../xmpp/jid.js';
import { NS } from '../../xmpp/ns.js';
import { delayElement, errorReply, iqPayload, iqResult } from '../../xmpp/stanza.js';
import {
  type Affiliation,
  AFFILIATIONS,
  applyChannelFields,
  applySubscribeOptions,
  type Channel,
  channelConfigForm,
  defaultChannelConfig,
  fromStoredChannel,
  metaDataForm,
  NS_SUBSCRIBE_AUTHORIZATION,
  NS_SUBSCRIBE_OPTIONS,
  type Subscription,
  subscribeOptionsForm,
  toStoredChannel,
} from './channel.js';
import { formFields, NS_DATA, NS_NODE_CONFIG, NS_PUBLISH_OPTIONS, NS_PUBSUB, NS_PUBSUB_EVENT, NS_PUBSUB_OWNER, parseBool, preconditionNotMet, pubsubError } from './config.js';
import { standaloneString } from './engine.js';

const NS_SHIM = 'http://jabber.org/protocol/shim';
const MAX_NAME = 256;
const MAX_ITEM_ID = 256;
const MAX_BODY = 1000;

const FEATURES = [
  'access-authorize',
  'access-open',
  'access-presence',
  'access-whitelist',
  'config-node',
  'create-and-configure',
  'create-nodes',
  'delete-items',
  'delete-nodes',
  'get-pending',
  'instant-nodes',
  'item-ids',
  'last-published',
  'manage-affiliations',
  'manage-subscriptions',
  'member-affiliation',
  'meta-data',
  'modify-affiliations',
  'multi-subscribe',
  'outcast-affiliation',
  'persistent-items',
  'publish',
  'publish-only-affiliation',
  'publish-options',
  'publisher-affiliation',
  'purge-nodes',
  'retract-items',
  'retrieve-affiliations',
  'retrieve-default',
  'retrieve-items',
  'retrieve-subscriptions',
  'subscribe',
  'subscription-notifications',
  'subscription-options',
].map((f) => `${NS_PUBSUB}#${f}`);

const optionsSchema = z
  .object({
    subdomain: z.string().regex(/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/, 'a DNS label').default('news').describe('The service JID is <subdomain>.<host> for every local host'),
    name: z.string().min(1).max(100).default('News channels').describe('Name of the service in disco#info and disco#items'),
    maxNodes: z.number().int().min(1).default(1000).describe('Most channels one news service holds'),
    maxNodesPerUser: z.number().int().min(1).default(20).describe('Most channels one user may create (owned as creator)'),
    maxItems: z.number().int().min(1).default(1000).describe('Most items kept per channel (the highest pubsub#max_items; what "max" means)'),
    defaultMaxItems: z.number().int().min(1).default(50).describe('pubsub#max_items of a new channel (capped by maxItems)'),
    maxPayloadBytes: z.number().int().min(256).default(64 * 1024).describe('Largest item payload in bytes'),
    maxSubscriptionsPerUser: z.number().int().min(1).default(200).describe('Most subscriptions one user holds on a news service (all channels)'),
    maxSubscribersPerNode: z.number().int().min(1).default(5000).describe('Most subscriptions (including pending ones) on one channel'),
    expirySweepSeconds: z.number().int().min(1).default(60).describe('How often items older than their channel\'s pubsub#item_expire are removed in the background'),
    lastItemsOnLogin: z.number().int().min(0).max(50).default(1).describe('Newest items of each subscribed channel sent at login (send_last_published_item=on_sub_and_presence; 0: none)'),
  })
  .strict();

/** One request to the service: who asked, and work to do once the answer is sent. */
interface Req {
  service: string;
  from: Jid;
  after: (() => Promise<void>)[];
}

const bareOf = (jid: string) => Jid.tryParse(jid)?.bare ?? jid;

// The command descriptor types come from the hook adhoc.ts declares (modules do not import each other).
type AdhocCommand = FoldMap['adhoc.commands']['commands'][number];
type AdhocStage = Parameters<AdhocCommand['run']>[0];
const NODE_GET_PENDING = `${NS_PUBSUB}#get-pending`;

export default defineModule({
  name: 'news',
  xeps: ['0060'],
  options: optionsSchema,
  setup(ctx) {
    const opts = ctx.options;
    const store = ctx.storage.pubsub;
    const serial = serializer();
    const defaultMax = Math.min(opts.defaultMaxItems, opts.maxItems);
    /** Service domain -> the local host it serves. */
    const services = ctx.service(opts.subdomain, opts.name, ({ stanza, to, from }) => answer(stanza, to, from), { entitlement: 'news' });

    // ---- channels and rights --------------------------------------------------------------------

    async function load(service: string, name: string): Promise<Channel | null> {
      const n = await store.getNode(service, name);
      return n ? fromStoredChannel(n, opts.maxItems, defaultMax) : null;
    }

    async function requireChannel(service: string, name: string): Promise<Channel> {
      const ch = await load(service, name);
      if (!ch) throw stanzaError('item-not-found', 'no such channel');
      return ch;
    }

    async function all(service: string): Promise<Channel[]> {
      return (await store.listNodes(service)).map((n) => fromStoredChannel(n, opts.maxItems, defaultMax));
    }

    async function save(service: string, ch: Channel): Promise<void> {
      if (!(await store.setConfig(service, ch.name, toStoredChannel(ch)))) throw stanzaError('item-not-found', 'no such channel');
    }

    /** The access file's right on the channel when one governs it, else the stored affiliation. */
    function affiliationOf(ch: Channel, who: Jid): Affiliation {
      switch (ctx.acl.venue('channel', ch.name, who.toBare())) {
        case 'MANAGE':
          return 'owner';
        case 'WRITE':
          return 'publisher';
        case 'READ':
          return 'member';
        case 'NONE':
          return 'outcast';
        default: {
          const a = ch.affiliations.get(who.bare);
          if (a) return a;
          // A channel whose last owner's account was removed is managed by administrators.
          return owners(ch).length === 0 && ctx.acl.allows('admin', who.toBare()) ? 'owner' : 'none';
        }
      }
    }

    function requireOwner(ch: Channel, who: Jid): void {
      if (affiliationOf(ch, who) !== 'owner') throw new StanzaError('auth', 'forbidden', 'only an owner of the channel may do this');
    }

    const owners = (ch: Channel) => [...ch.affiliations].filter(([, a]) => a === 'owner').map(([j]) => j);

    /** Presence access model: an owner's roster shares presence with `bare` (from or both). */
    async function inOwnersRoster(ch: Channel, bare: string): Promise<boolean> {
      for (const o of owners(ch)) {
        const item = await ctx.storage.roster.getItem(o, bare);
        if (item && (item.subscription === 'from' || item.subscription === 'both')) return true;
      }
      return false;
    }

    const isSubscribed = (ch: Channel, bare: string) => ch.subscriptions.some((s) => s.state === 'subscribed' && bareOf(s.jid) === bare);

    /**
     * Whether `who` may retrieve items (or, `forSubscribe`, subscribe): null if yes, 'pending' when
     * the authorize model makes a subscription wait for an owner, else the §6.1.3 / §6.5.9 error.
     */
    async function readAccess(ch: Channel, who: Jid, forSubscribe: boolean): Promise<StanzaError | 'pending' | null> {
      const aff = affiliationOf(ch, who);
      if (aff === 'outcast') return new StanzaError('auth', 'forbidden', 'you are banned from this channel');
      if (aff === 'owner' || aff === 'publisher' || aff === 'member') return null;
      // §4.1: publish-only may publish, not read.
      if (aff === 'publish-only') return new StanzaError('auth', 'forbidden', 'a publish-only affiliation cannot read the channel');
      switch (ch.config.accessModel) {
        case 'open':
          return null;
        case 'presence':
          return (await inOwnersRoster(ch, who.bare)) ? null : pubsubError('not-authorized', 'presence-subscription-required', 'a presence subscription to an owner is required');
        case 'whitelist':
          return pubsubError('not-allowed', 'closed-node', 'only members may access this channel');
        case 'authorize':
          if (forSubscribe) return 'pending';
          return isSubscribed(ch, who.bare) ? null : pubsubError('not-authorized', 'not-subscribed', 'an approved subscription is required');
      }
    }

    /**
     * Whether a subscription still has the access it needs (issue 16 §2): a subscribed one must be
     * able to read the channel now (presence access: an owner still shares presence with it;
     * whitelist: still a member; never an outcast). A pending one waits for the owners unless its
     * JID was made an outcast.
     */
    async function keepsAccess(ch: Channel, s: Subscription): Promise<boolean> {
      const j = Jid.tryParse(s.jid);
      if (!j) return false;
      if (s.state === 'pending') return affiliationOf(ch, j) !== 'outcast';
      return (await readAccess(ch, j, false)) === null;
    }

    /** The subscriptions of `ch` that lost their access. */
    async function lostAccess(ch: Channel): Promise<Subscription[]> {
      const lost: Subscription[] = [];
      for (const s of ch.subscriptions) if (!(await keepsAccess(ch, s))) lost.push(s);
      return lost;
    }

    /**
     * Cancels subscriptions that lost access (found outside the channel's serial section, e.g.
     * while notifying) and tells each subscriber (§8.8.4, subscription='none').
     */
    async function revoke(service: string, name: string, subids: Set<string>): Promise<void> {
      const removed = await serial(service, async () => {
        const ch = await load(service, name);
        if (!ch) return null;
        // Re-checked on the current record: access may have come back meanwhile.
        const gone: Subscription[] = [];
        for (const s of ch.subscriptions) if (subids.has(s.subid) && !(await keepsAccess(ch, s))) gone.push(s);
        if (!gone.length) return null;
        ch.subscriptions = ch.subscriptions.filter((s) => !gone.includes(s));
        await save(service, ch);
        return { ch, gone };
      });
      if (!removed) return;
      ctx.log.info({ channel: name, subscriptions: removed.gone.length }, 'news subscriptions cancelled: access lost');
      for (const s of removed.gone) await subscriptionNotice(service, removed.ch, s, 'none');
    }

    /** Visible in disco: not to outcasts, nor whitelist channels to non-members. */
    function visible(ch: Channel, who: Jid): boolean {
      const aff = affiliationOf(ch, who);
      if (aff === 'outcast') return false;
      return ch.config.accessModel !== 'whitelist' || aff !== 'none';
    }

    function mayPublish(ch: Channel, who: Jid): boolean {
      const aff = affiliationOf(ch, who);
      if (aff === 'outcast') return false;
      if (aff === 'owner' || aff === 'publisher' || aff === 'publish-only') return true;
      if (ch.config.publishModel === 'open') return true;
      return ch.config.publishModel === 'subscribers' && isSubscribed(ch, who.bare);
    }

    function nodeName(el: Element): string {
      const node = el.attrs.node;
      if (!node) throw pubsubError('bad-request', 'nodeid-required', 'a node name is required');
      if (node.length > MAX_NAME || /[\u0000-\u001f]/.test(node)) throw stanzaError('not-acceptable', 'invalid node name');
      return node;
    }

    // ---- delivery -------------------------------------------------------------------------------

    async function send(el: Element): Promise<void> {
      try {
        await ctx.route(el);
      } catch (err) {
        ctx.log.warn({ err }, 'news notification not delivered');
      }
    }

    function message(service: string, to: string, type?: 'headline'): Element {
      return new Element('message', { from: service, to, type, id: randomBytes(8).toString('hex') });
    }

    function itemElement(it: PubsubItem, withPayload: boolean): Element {
      const item = new Element('item', { id: it.id, publisher: it.publisher });
      if (withPayload && it.payload) {
        try {
          item.cnode(parse(it.payload));
        } catch {
          /* a damaged stored payload is sent as an empty item rather than failing the whole answer */
        }
      }
      return item;
    }

    function itemsEvent(ch: Channel, items: PubsubItem[]): Element {
      const ev = new Element('event', { xmlns: NS_PUBSUB_EVENT });
      const list = ev.c('items', { node: ch.name });
      for (const it of items) list.cnode(itemElement(it, ch.config.deliverPayloads));
      return ev;
    }

    /** include_body text: the Atom title (or summary), else the payload's text, shortened. */
    function bodyOf(ch: Channel, it: PubsubItem): string | null {
      let text: string;
      try {
        const p = parse(it.payload);
        text = p.getChildText('title') ?? p.getChildText('summary') ?? p.getText();
      } catch {
        return null;
      }
      text = text.trim().slice(0, MAX_BODY);
      if (!text) return null;
      return ch.config.title ? `${ch.config.title}: ${text}` : text;
    }

    /** §12: one headline per subscribed JID (with SubID headers when it holds several subscriptions). */
    async function notify(service: string, ch: Channel, event: Element, body: string | null = null): Promise<void> {
      const byJid = new Map<string, Subscription[]>();
      for (const s of ch.subscriptions) {
        if (s.state !== 'subscribed' || !s.deliver) continue;
        const list = byJid.get(s.jid);
        if (list) list.push(s);
        else byJid.set(s.jid, [s]);
      }
      const lost = new Set<string>();
      for (const [jid, subs] of byJid) {
        const j = Jid.tryParse(jid);
        if (!j) continue;
        // Read access is checked for each recipient at each notification: an owner's roster (or
        // the directory behind it), an access file or an affiliation may have changed since.
        if (!(await keepsAccess(ch, subs[0] as Subscription))) {
          for (const s of subs) lost.add(s.subid);
          continue;
        }
        const msg = message(service, jid, 'headline');
        if (body && subs.some((s) => s.includeBody)) msg.c('body').t(body);
        msg.cnode(clone(event));
        if (subs.length > 1) {
          const headers = msg.c('headers', { xmlns: NS_SHIM });
          for (const s of subs) headers.c('header', { name: 'SubID' }).t(s.subid);
        }
        await send(msg);
      }
      if (lost.size) await revoke(service, ch.name, lost);
    }

    /** §6.1.7 / §12.3: the newest items, one message each with its <delay/>, to one JID. */
    async function sendLast(service: string, ch: Channel, to: string, count: number): Promise<void> {
      if (count < 1 || ch.config.sendLast === 'never' || !ch.config.deliverNotifications) return;
      for (const it of unexpired(service, ch, await store.getItems(service, ch.name, { max: count }))) {
        const msg = message(service, to, 'headline');
        msg.cnode(itemsEvent(ch, [it]));
        msg.cnode(delayElement(service, new Date(it.updatedAt)));
        await send(msg);
      }
    }

    /** §8.8.4: tells a subscriber its subscription changed (normal message, so it waits offline). */
    async function subscriptionNotice(service: string, ch: Channel, sub: Pick<Subscription, 'jid' | 'subid'>, state: string): Promise<void> {
      const msg = message(service, sub.jid);
      msg.c('event', { xmlns: NS_PUBSUB_EVENT }).c('subscription', { node: ch.name, jid: sub.jid, subid: sub.subid, subscription: state });
      await send(msg);
    }

    /** §8.9.4: tells an entity its affiliation changed (normal message, so it waits offline). */
    async function affiliationNotice(service: string, ch: Channel, bare: string, affiliation: Affiliation): Promise<void> {
      const msg = message(service, bare);
      msg.c('body').t(`Your affiliation with the news channel "${ch.config.title || ch.name}" is now: ${affiliation}.`);
      msg.c('pubsub', { xmlns: NS_PUBSUB }).c('affiliations', { node: ch.name }).c('affiliation', { jid: bare, affiliation });
      await send(msg);
    }

    /** pubsub#item_expire: the items not yet expired; expired ones found are removed in the background. */
    function unexpired(service: string, ch: Channel, list: PubsubItem[]): PubsubItem[] {
      if (ch.config.itemExpire === 0) return list;
      const cutoff = Date.now() - ch.config.itemExpire * 1000;
      const live = list.filter((it) => it.updatedAt > cutoff);
      if (live.length < list.length) void purgeExpired(service, ch.name).catch((err: unknown) => ctx.log.warn({ err }, 'expired news items not removed'));
      return live;
    }

    /** Removes a channel's expired items; serialized with publish so that a re-published item is kept. */
    async function purgeExpired(service: string, name: string): Promise<void> {
      await serial(service, async () => {
        const ch = await load(service, name);
        if (!ch || ch.config.itemExpire === 0) return;
        const cutoff = Date.now() - ch.config.itemExpire * 1000;
        for (const it of await store.getItems(service, name)) if (it.updatedAt <= cutoff) await store.retract(service, name, it.id);
      });
    }

    /** §8.6.1: asks each owner (or `to`, for §8.7) to approve a pending subscription with a data form. */
    async function askOwners(service: string, ch: Channel, sub: Subscription, to: string[] = owners(ch)): Promise<void> {
      for (const owner of to) {
        const msg = message(service, owner);
        const x = msg.c('x', { xmlns: NS_DATA, type: 'form' });
        x.c('title').t('PubSub subscriber request');
        x.c('instructions').t(`To approve this subscription to "${ch.config.title || ch.name}", set "Allow" and submit the form.`);
        x.c('field', { var: 'FORM_TYPE', type: 'hidden' }).c('value').t(NS_SUBSCRIBE_AUTHORIZATION);
        x.c('field', { var: 'pubsub#subid', type: 'hidden' }).c('value').t(sub.subid);
        x.c('field', { var: 'pubsub#node', type: 'text-single', label: 'Node ID' }).c('value').t(ch.name);
        x.c('field', { var: 'pubsub#subscriber_jid', type: 'jid-single', label: 'Subscriber Address' }).c('value').t(sub.jid);
        x.c('field', { var: 'pubsub#allow', type: 'boolean', label: 'Allow this JID to subscribe to this pubsub node?' }).c('value').t('false');
        await send(msg);
      }
    }

    const subElement = (node: string, s: Subscription) => new Element('subscription', { node, jid: s.jid, subid: s.subid, subscription: s.state });

    // ---- §6 subscriber use cases ----------------------------------------------------------------

    async function subscriptionsOf(service: string, bare: string): Promise<number> {
      let n = 0;
      for (const ch of await all(service)) n += ch.subscriptions.filter((s) => bareOf(s.jid) === bare).length;
      return n;
    }

    async function subscribe(req: Req, el: Element, optionsEl: Element | undefined): Promise<Element> {
      const name = nodeName(el);
      const j = Jid.tryParse(el.attrs.jid);
      if (!j || j.bare !== req.from.bare) throw pubsubError('bad-request', 'invalid-jid', 'the jid must be your own');
      const fields = formFields(optionsEl?.getChild('x', NS_DATA), NS_SUBSCRIBE_OPTIONS);
      const { ch, sub, fresh } = await serial(req.service, async () => {
        const ch = await requireChannel(req.service, name);
        const access = await readAccess(ch, j, true);
        if (access instanceof StanzaError) throw access;
        const existing = ch.subscriptions.find((s) => s.jid === j.full);
        // §6.1.6: subscribing again without options answers with the existing subscription.
        if (existing && !optionsEl) return { ch, sub: existing, fresh: false };
        if (ch.subscriptions.length >= opts.maxSubscribersPerNode) throw pubsubError('not-allowed', 'max-nodes-exceeded', 'this channel has too many subscribers');
        if ((await subscriptionsOf(req.service, j.bare)) >= opts.maxSubscriptionsPerUser) {
          throw pubsubError('policy-violation', 'too-many-subscriptions', `at most ${opts.maxSubscriptionsPerUser} subscriptions per user`);
        }
        const sub = applySubscribeOptions<Subscription>(
          { jid: j.full, subid: randomBytes(8).toString('hex'), state: access === 'pending' ? 'pending' : 'subscribed', deliver: true, includeBody: false },
          fields,
        );
        ch.subscriptions.push(sub);
        await save(req.service, ch);
        return { ch, sub, fresh: true };
      });
      if (fresh && sub.state === 'pending') req.after.push(() => askOwners(req.service, ch, sub));
      if (fresh && sub.state === 'subscribed') req.after.push(() => sendLast(req.service, ch, sub.jid, 1));
      return new Element('pubsub', { xmlns: NS_PUBSUB }).cnode(subElement(name, sub)).root();
    }

    /** The one subscription an <unsubscribe/> or <options/> names (§6.2.3 errors). */
    function pickSubscription(ch: Channel, jid: string, subid: string | undefined): Subscription {
      const subs = ch.subscriptions.filter((s) => s.jid === jid);
      if (subs.length === 0) throw new StanzaError('cancel', 'unexpected-request', 'not subscribed', new Element('not-subscribed', { xmlns: `${NS_PUBSUB}#errors` }));
      if (subid !== undefined) {
        const s = subs.find((x) => x.subid === subid);
        if (!s) throw pubsubError('not-acceptable', 'invalid-subid', 'no such subscription id');
        return s;
      }
      if (subs.length > 1) throw pubsubError('bad-request', 'subid-required', 'several subscriptions: name one with subid');
      return subs[0] as Subscription;
    }

    /** The subscriber JID named by an element: the requester's own, or anyone's for an owner. */
    function subscriberJid(ch: Channel, el: Element, from: Jid): Jid {
      const j = Jid.tryParse(el.attrs.jid);
      if (!j) throw pubsubError('bad-request', 'jid-required', 'a subscriber jid is required');
      if (j.bare !== from.bare && affiliationOf(ch, from) !== 'owner') throw new StanzaError('auth', 'forbidden', 'not your subscription');
      return j;
    }

    async function unsubscribe(req: Req, el: Element): Promise<undefined> {
      const name = nodeName(el);
      await serial(req.service, async () => {
        const ch = await requireChannel(req.service, name);
        const j = subscriberJid(ch, el, req.from);
        const sub = pickSubscription(ch, j.full, el.attrs.subid);
        ch.subscriptions = ch.subscriptions.filter((s) => s !== sub);
        await save(req.service, ch);
      });
      return undefined;
    }

    async function options(req: Req, type: 'get' | 'set', el: Element): Promise<Element | undefined> {
      const name = nodeName(el);
      if (type === 'get') {
        const ch = await requireChannel(req.service, name);
        const j = subscriberJid(ch, el, req.from);
        const sub = pickSubscription(ch, j.full, el.attrs.subid);
        const res = new Element('pubsub', { xmlns: NS_PUBSUB });
        res.c('options', { node: name, jid: sub.jid, subid: sub.subid }).cnode(subscribeOptionsForm(sub));
        return res;
      }
      const x = el.getChild('x', NS_DATA);
      if (!x) throw pubsubError('bad-request', 'invalid-options', 'an options form is required');
      const fields = formFields(x, NS_SUBSCRIBE_OPTIONS);
      await serial(req.service, async () => {
        const ch = await requireChannel(req.service, name);
        const j = subscriberJid(ch, el, req.from);
        const sub = pickSubscription(ch, j.full, el.attrs.subid);
        Object.assign(sub, applySubscribeOptions(sub, fields));
        await save(req.service, ch);
      });
      return undefined;
    }

    async function items(req: Req, el: Element): Promise<Element> {
      const name = nodeName(el);
      const ch = await requireChannel(req.service, name);
      const denied = await readAccess(ch, req.from, false);
      if (denied instanceof StanzaError) throw denied;
      let max: number | undefined;
      if (el.attrs.max_items !== undefined) {
        if (!/^\d{1,9}$/.test(el.attrs.max_items)) throw stanzaError('bad-request', 'max_items must be a positive integer');
        max = Number(el.attrs.max_items);
      }
      const ids = el.getChildren('item').map((i) => i.attrs.id as string | undefined).filter((id): id is string => !!id);
      const found = unexpired(req.service, ch, ids.length ? await store.getItems(req.service, name, { ids }) : await store.getItems(req.service, name, { max }));
      if (ids.length === 1 && found.length === 0) throw stanzaError('item-not-found', 'no such item');
      const res = new Element('pubsub', { xmlns: NS_PUBSUB });
      const list = res.c('items', { node: name });
      for (const it of found) list.cnode(itemElement(it, true));
      return res;
    }

    // ---- §7 publisher use cases -----------------------------------------------------------------

    /** §7.1.5: every publish option must equal the channel's configuration. */
    function checkPreconditions(ch: Channel, fields: Map<string, string[]>): void {
      const stored = toStoredChannel(ch);
      for (const [k, v] of fields) {
        const have = stored[k];
        const want = v[0] ?? '';
        const same = have !== undefined && !k.startsWith('parley#') && (have === want || (parseBool(want) !== null && parseBool(want) === parseBool(have)));
        if (!same) throw preconditionNotMet(`the channel's ${k} does not match the publish options`);
      }
    }

    async function publish(req: Req, el: Element, optionsEl: Element | undefined): Promise<Element> {
      const name = nodeName(el);
      const who = req.from.toBare();
      if (!ctx.acl.allows('channel.publish', who)) {
        ctx.log.info({ user: who.bare, right: 'channel.publish', node: name, rule: formatRule(ctx.acl.explain('channel.publish', who)) }, 'news publish refused: no right');
        throw new StanzaError('auth', 'forbidden', 'you may not publish to news channels');
      }
      const itemEls = el.getChildren('item');
      if (itemEls.length === 0) throw pubsubError('bad-request', 'item-required', 'a channel item is required');
      if (itemEls.length > 1) throw pubsubError('bad-request', 'invalid-payload', 'one item per publish request');
      const itemEl = itemEls[0] as Element;
      const payloads = itemEl.getChildElements();
      if (payloads.length === 0) throw pubsubError('bad-request', 'payload-required', 'the item needs a payload');
      if (payloads.length > 1) throw pubsubError('bad-request', 'invalid-payload', 'an item carries exactly one payload element');
      const id = itemEl.attrs.id || randomBytes(12).toString('hex');
      if (id.length > MAX_ITEM_ID) throw stanzaError('not-acceptable', 'item id too long');
      const payload = standaloneString(payloads[0] as Element);
      const size = Buffer.byteLength(payload, 'utf8');
      if (size > opts.maxPayloadBytes) throw pubsubError('not-acceptable', 'payload-too-big', `the item payload is ${size} bytes; at most ${opts.maxPayloadBytes} are allowed`);
      const preconditions = formFields(optionsEl?.getChild('x', NS_DATA), NS_PUBLISH_OPTIONS);
      const now = Date.now();
      const item: PubsubItem = { id, publisher: req.from.bare, payload, createdAt: now, updatedAt: now };
      // Serialized with deletion, so that an item never lands in a channel being deleted.
      const ch = await serial(req.service, async () => {
        const ch = await requireChannel(req.service, name);
        if (!mayPublish(ch, req.from)) throw new StanzaError('auth', 'forbidden', 'you may not publish to this channel');
        checkPreconditions(ch, preconditions);
        await store.publish(req.service, name, item, ch.config.persistItems ? ch.config.maxItems : 1);
        return ch;
      });
      if (ch.config.deliverNotifications) req.after.push(() => notify(req.service, ch, itemsEvent(ch, [item]), bodyOf(ch, item)));
      return new Element('pubsub', { xmlns: NS_PUBSUB }).c('publish', { node: name }).c('item', { id }).root();
    }

    async function retract(req: Req, el: Element): Promise<undefined> {
      const name = nodeName(el);
      const itemEls = el.getChildren('item');
      const id = itemEls[0]?.attrs.id as string | undefined;
      if (itemEls.length !== 1 || !id) throw pubsubError('bad-request', 'item-required', 'name one item to retract');
      const notifyAttr = el.attrs.notify as string | undefined;
      const ch = await serial(req.service, async () => {
        const ch = await requireChannel(req.service, name);
        const aff = affiliationOf(ch, req.from);
        const [existing] = await store.getItems(req.service, name, { ids: [id] });
        if (!existing) throw stanzaError('item-not-found', 'no such item');
        // §7.2: owners and publishers retract any item; others (publish-only, open models) their own.
        const own = bareOf(existing.publisher) === req.from.bare && aff !== 'outcast';
        if (aff !== 'owner' && aff !== 'publisher' && !own) throw new StanzaError('auth', 'forbidden', 'you may not retract this item');
        await store.retract(req.service, name, id);
        return ch;
      });
      const notifyNow = notifyAttr === undefined ? ch.config.notifyRetract : notifyAttr === 'true' || notifyAttr === '1';
      if (notifyNow && ch.config.deliverNotifications) {
        const ev = new Element('event', { xmlns: NS_PUBSUB_EVENT });
        ev.c('items', { node: name }).c('retract', { id });
        req.after.push(() => notify(req.service, ch, ev));
      }
      return undefined;
    }

    // ---- §8 owner use cases ---------------------------------------------------------------------

    async function create(req: Req, el: Element, configure: Element | undefined): Promise<Element | undefined> {
      if (!ctx.acl.allows('channel.create', req.from.toBare())) throw new StanzaError('auth', 'forbidden', 'you may not create news channels');
      const instant = el.attrs.node === undefined;
      const name = instant ? randomBytes(8).toString('hex') : nodeName(el);
      const fields = formFields(configure?.getChild('x', NS_DATA), NS_NODE_CONFIG);
      const config = applyChannelFields(defaultChannelConfig(defaultMax), fields, opts.maxItems);
      const creator = req.from.bare;
      await serial(req.service, async () => {
        const nodes = await store.listNodes(req.service);
        if (nodes.some((n) => n.node === name)) throw stanzaError('conflict', 'the channel already exists');
        if (nodes.length >= opts.maxNodes) throw new StanzaError('wait', 'resource-constraint', `this service holds at most ${opts.maxNodes} channels`);
        if (nodes.filter((n) => n.owner === creator).length >= opts.maxNodesPerUser) {
          throw pubsubError('not-allowed', 'max-nodes-exceeded', `a user may create at most ${opts.maxNodesPerUser} channels`);
        }
        const ch: Channel = { name, createdAt: Date.now(), config, affiliations: new Map([[creator, 'owner']]), subscriptions: [] };
        if (!(await store.createNode({ service: req.service, node: name, owner: creator, config: toStoredChannel(ch), createdAt: ch.createdAt }))) {
          throw stanzaError('conflict', 'the channel already exists');
        }
      });
      // §8.1.2: an instant node's name is returned; otherwise an empty result is enough.
      return instant ? new Element('pubsub', { xmlns: NS_PUBSUB }).c('create', { node: name }).root() : undefined;
    }

    async function configure(req: Req, type: 'get' | 'set', el: Element): Promise<Element | undefined> {
      const name = nodeName(el);
      if (type === 'get') {
        const ch = await requireChannel(req.service, name);
        requireOwner(ch, req.from);
        const res = new Element('pubsub', { xmlns: NS_PUBSUB_OWNER });
        res.c('configure', { node: name }).cnode(channelConfigForm(ch.config, opts.maxItems));
        return res;
      }
      const x = el.getChild('x', NS_DATA);
      if (!x) throw stanzaError('bad-request', 'a configuration form is required');
      const fields = formFields(x, NS_NODE_CONFIG);
      const dropped = await serial(req.service, async () => {
        const ch = await requireChannel(req.service, name);
        requireOwner(ch, req.from);
        ch.config = applyChannelFields(ch.config, fields, opts.maxItems);
        // Subscribers the new access model shuts out lose their subscriptions (§4.5 for
        // whitelist; presence: those no owner shares presence with).
        const gone = await lostAccess(ch);
        ch.subscriptions = ch.subscriptions.filter((s) => !gone.includes(s));
        await save(req.service, ch);
        // A lower max_items applies at once, not only at the next publish.
        const keep = ch.config.persistItems ? ch.config.maxItems : 1;
        const stored = await store.getItems(req.service, name);
        for (const it of stored.slice(0, Math.max(0, stored.length - keep))) await store.retract(req.service, name, it.id);
        return { ch, gone };
      });
      for (const s of dropped.gone) req.after.push(() => subscriptionNotice(req.service, dropped.ch, s, 'none'));
      const { config } = dropped.ch;
      // §8.2.5.3: the new configuration, as a result form when the channel delivers payloads.
      if (config.notifyConfig && config.deliverNotifications) {
        const ev = new Element('event', { xmlns: NS_PUBSUB_EVENT });
        const c = ev.c('configuration', { node: name });
        if (config.deliverPayloads) {
          const x = channelConfigForm(config, opts.maxItems);
          x.attrs.type = 'result';
          c.cnode(x);
        }
        req.after.push(() => notify(req.service, dropped.ch, ev));
      }
      return undefined;
    }

    async function deleteChannel(req: Req, el: Element): Promise<undefined> {
      const name = nodeName(el);
      const redirect = el.getChild('redirect')?.attrs.uri as string | undefined;
      const ch = await serial(req.service, async () => {
        const ch = await requireChannel(req.service, name);
        requireOwner(ch, req.from);
        await store.deleteNode(req.service, name);
        return ch;
      });
      if (ch.config.notifyDelete && ch.config.deliverNotifications) {
        const ev = new Element('event', { xmlns: NS_PUBSUB_EVENT });
        const d = ev.c('delete', { node: name });
        if (redirect) d.c('redirect', { uri: redirect });
        req.after.push(() => notify(req.service, ch, ev));
      }
      return undefined;
    }

    async function purge(req: Req, el: Element): Promise<undefined> {
      const name = nodeName(el);
      const ch = await serial(req.service, async () => {
        const ch = await requireChannel(req.service, name);
        requireOwner(ch, req.from);
        await store.purge(req.service, name);
        return ch;
      });
      if (ch.config.notifyRetract && ch.config.deliverNotifications) {
        const ev = new Element('event', { xmlns: NS_PUBSUB_EVENT });
        ev.c('purge', { node: name });
        req.after.push(() => notify(req.service, ch, ev));
      }
      return undefined;
    }

    /**
     * After an owner's change (§8.8, §8.9): removed subscribers are told (§8.8.4), approved ones are
     * told and get the last item, once the reply has gone.
     */
    function announceSubscriptions(req: Req, ch: Channel, removed: readonly Subscription[], approved: readonly Subscription[]): void {
      for (const s of removed) req.after.push(() => subscriptionNotice(req.service, ch, s, 'none'));
      for (const s of approved) {
        req.after.push(async () => {
          await subscriptionNotice(req.service, ch, s, 'subscribed');
          await sendLast(req.service, ch, s.jid, 1);
        });
      }
    }

    /** The owner's list of a channel's subscriptions or affiliations (§8.8.1, §8.9.1). */
    async function ownerList(req: Req, name: string, what: 'subscriptions' | 'affiliations'): Promise<Element> {
      const ch = await requireChannel(req.service, name);
      requireOwner(ch, req.from);
      const res = new Element('pubsub', { xmlns: NS_PUBSUB_OWNER });
      const list = res.c(what, { node: name });
      if (what === 'subscriptions') for (const s of ch.subscriptions) list.c('subscription', { jid: s.jid, subid: s.subid, subscription: s.state });
      else for (const [jid, affiliation] of ch.affiliations) list.c('affiliation', { jid, affiliation });
      return res;
    }

    /** §8.8: list or modify a channel's subscriptions. */
    async function manageSubscriptions(req: Req, type: 'get' | 'set', el: Element): Promise<Element | undefined> {
      const name = nodeName(el);
      if (type === 'get') return ownerList(req, name, 'subscriptions');
      const changes = el.getChildren('subscription').map((e) => {
        const j = Jid.tryParse(e.attrs.jid);
        const state = e.attrs.subscription as string | undefined;
        if (!j || (state !== 'subscribed' && state !== 'none')) throw stanzaError('bad-request', 'each subscription needs a jid and subscription="subscribed" or "none"');
        return { jid: j.full, state, subid: e.attrs.subid as string | undefined };
      });
      const { ch, approved, removed } = await serial(req.service, async () => {
        const ch = await requireChannel(req.service, name);
        requireOwner(ch, req.from);
        const approved: Subscription[] = [];
        const removed: Subscription[] = [];
        for (const c of changes) {
          const matching = ch.subscriptions.filter((s) => s.jid === c.jid && (c.subid === undefined || s.subid === c.subid));
          if (c.state === 'none') {
            removed.push(...matching);
            ch.subscriptions = ch.subscriptions.filter((s) => !matching.includes(s));
          } else if (matching.length) {
            for (const s of matching) {
              if (s.state !== 'subscribed') approved.push(s);
              s.state = 'subscribed';
            }
          } else {
            if (c.subid !== undefined) throw pubsubError('not-acceptable', 'invalid-subid', 'no such subscription id');
            if (ch.subscriptions.length >= opts.maxSubscribersPerNode) throw pubsubError('not-allowed', 'max-nodes-exceeded', 'this channel has too many subscribers');
            const s: Subscription = { jid: c.jid, subid: randomBytes(8).toString('hex'), state: 'subscribed', deliver: true, includeBody: false };
            ch.subscriptions.push(s);
            approved.push(s);
          }
        }
        await save(req.service, ch);
        return { ch, approved, removed };
      });
      announceSubscriptions(req, ch, removed, approved);
      return undefined;
    }

    /** §8.9: list or modify a channel's affiliations. */
    async function manageAffiliations(req: Req, type: 'get' | 'set', el: Element): Promise<Element | undefined> {
      const name = nodeName(el);
      if (type === 'get') return ownerList(req, name, 'affiliations');
      const changes = el.getChildren('affiliation').map((e) => {
        const j = Jid.tryParse(e.attrs.jid);
        const a = e.attrs.affiliation as Affiliation | undefined;
        if (!j || !a || !AFFILIATIONS.includes(a)) throw stanzaError('bad-request', 'each affiliation needs a jid and a known affiliation');
        return { bare: j.bare, affiliation: a };
      });
      // §8.9.2.4: one <affiliation/> per entity.
      if (new Set(changes.map((c) => c.bare)).size !== changes.length) throw stanzaError('bad-request', 'an entity is named twice');
      const { ch, removed, approved, changed } = await serial(req.service, async () => {
        const ch = await requireChannel(req.service, name);
        requireOwner(ch, req.from);
        const next = new Map(ch.affiliations);
        const changed = changes.filter((c) => (ch.affiliations.get(c.bare) ?? 'none') !== c.affiliation);
        for (const c of changed) {
          if (c.affiliation === 'none') next.delete(c.bare);
          else next.set(c.bare, c.affiliation);
        }
        // §8.9.2.4: a channel never loses its last owner (an ownerless one, see above, may stay so).
        if (owners(ch).length > 0 && ![...next.values()].includes('owner')) throw stanzaError('not-acceptable', 'a channel needs at least one owner');
        ch.affiliations = next;
        // §4.1: outcasts lose their subscriptions, and so does anyone whose new affiliation no
        // longer grants read access (a member removed from a whitelist channel); §8.7: pending
        // requests of new owners and publishers are approved, those of outcasts denied.
        const removed = await lostAccess(ch);
        ch.subscriptions = ch.subscriptions.filter((s) => !removed.includes(s));
        const approved = ch.subscriptions.filter((s) => s.state === 'pending' && ['owner', 'publisher'].includes(next.get(bareOf(s.jid)) ?? 'none'));
        for (const s of approved) s.state = 'subscribed';
        await save(req.service, ch);
        return { ch, removed, approved, changed };
      });
      for (const c of changed) req.after.push(() => affiliationNotice(req.service, ch, c.bare, c.affiliation));
      announceSubscriptions(req, ch, removed, approved);
      return undefined;
    }

    // ---- §5.6 / §5.7 own subscriptions and affiliations -----------------------------------------

    async function ownSubscriptions(req: Req, el: Element): Promise<Element> {
      const res = new Element('pubsub', { xmlns: NS_PUBSUB });
      const list = res.c('subscriptions', { node: el.attrs.node });
      for (const ch of await all(req.service)) {
        if (el.attrs.node !== undefined && ch.name !== el.attrs.node) continue;
        for (const s of ch.subscriptions) if (bareOf(s.jid) === req.from.bare) list.cnode(subElement(ch.name, s));
      }
      return res;
    }

    async function ownAffiliations(req: Req, el: Element): Promise<Element> {
      const res = new Element('pubsub', { xmlns: NS_PUBSUB });
      const list = res.c('affiliations', { node: el.attrs.node });
      for (const ch of await all(req.service)) {
        if (el.attrs.node !== undefined && ch.name !== el.attrs.node) continue;
        const a = affiliationOf(ch, req.from);
        if (a !== 'none') list.c('affiliation', { node: ch.name, affiliation: a });
      }
      return res;
    }

    // ---- dispatch -------------------------------------------------------------------------------

    async function pubsub(req: Req, type: 'get' | 'set', payload: Element): Promise<Element | undefined> {
      const owner = payload.attrs.xmlns === NS_PUBSUB_OWNER;
      const children = payload.getChildElements();
      // <configure/>, <options/> and <publish-options/> go with another action when there is one.
      const action = children.find((c) => !['configure', 'options', 'publish-options'].includes(c.name)) ?? children[0];
      if (!action) throw stanzaError('bad-request', 'empty pubsub request');
      switch (`${type} ${owner ? 'owner' : 'user'} ${action.name}`) {
        case 'get user items':
          return items(req, action);
        case 'set user publish':
          return publish(req, action, payload.getChild('publish-options'));
        case 'set user retract':
          return retract(req, action);
        case 'set user create':
          return create(req, action, payload.getChild('configure'));
        case 'set user subscribe':
          return subscribe(req, action, payload.getChild('options'));
        case 'set user unsubscribe':
          return unsubscribe(req, action);
        case 'get user options':
        case 'set user options':
          return options(req, type, action);
        case 'get user default': {
          const res = new Element('pubsub', { xmlns: NS_PUBSUB });
          res.c('default').cnode(subscribeOptionsForm({ deliver: true, includeBody: false }));
          return res;
        }
        case 'get user subscriptions':
          return ownSubscriptions(req, action);
        case 'get user affiliations':
          return ownAffiliations(req, action);
        case 'get owner configure':
        case 'set owner configure':
          return configure(req, type, action);
        case 'get owner default': {
          const res = new Element('pubsub', { xmlns: NS_PUBSUB_OWNER });
          res.c('default').cnode(channelConfigForm(defaultChannelConfig(defaultMax), opts.maxItems));
          return res;
        }
        case 'set owner delete':
          return deleteChannel(req, action);
        case 'set owner purge':
          return purge(req, action);
        case 'get owner subscriptions':
        case 'set owner subscriptions':
          return manageSubscriptions(req, type, action);
        case 'get owner affiliations':
        case 'set owner affiliations':
          return manageAffiliations(req, type, action);
        default:
          throw pubsubError('feature-not-implemented', 'unsupported', `${action.name} is not supported here`, { feature: action.name });
      }
    }

    async function discoInfo(req: Req, node: string | undefined): Promise<Element> {
      const q = new Element('query', { xmlns: NS.DISCO_INFO, node });
      if (node === undefined) {
        q.c('identity', { category: 'pubsub', type: 'service', name: opts.name });
        for (const f of [NS.DISCO_INFO, NS.DISCO_ITEMS, NS_COMMANDS, NS_PUBSUB, ...FEATURES]) q.c('feature', { var: f });
        return q;
      }
      if (node === NODE_GET_PENDING) {
        // XEP-0050 §2.2: the command node.
        q.c('identity', { category: 'automation', type: 'command-node', name: getPending.name });
        for (const f of [NS_COMMANDS, NS_DATA]) q.c('feature', { var: f });
        return q;
      }
      const ch = await load(req.service, node);
      if (!ch || !visible(ch, req.from)) throw stanzaError('item-not-found', 'no such channel');
      q.c('identity', { category: 'pubsub', type: 'leaf', name: ch.config.title || undefined });
      q.c('feature', { var: NS_PUBSUB });
      q.cnode(metaDataForm(ch, owners(ch)));
      return q;
    }

    async function discoItems(req: Req, node: string | undefined): Promise<Element> {
      const q = new Element('query', { xmlns: NS.DISCO_ITEMS, node });
      if (node === undefined) {
        for (const ch of await all(req.service)) {
          if (visible(ch, req.from)) q.c('item', { jid: req.service, node: ch.name, name: ch.config.title || undefined });
        }
        return q;
      }
      if (node === NS_COMMANDS) {
        // XEP-0050 §2.1: the service's commands.
        q.c('item', { jid: req.service, node: NODE_GET_PENDING, name: getPending.name });
        return q;
      }
      const ch = await load(req.service, node);
      if (!ch || !visible(ch, req.from)) throw stanzaError('item-not-found', 'no such channel');
      // Item ids only to those who may read them (§5.5).
      if ((await readAccess(ch, req.from, false)) === null) {
        for (const it of unexpired(req.service, ch, await store.getItems(req.service, node))) q.c('item', { jid: req.service, name: it.id });
      }
      return q;
    }

    async function handleIq(req: Req, type: 'get' | 'set', payload: Element): Promise<Element | undefined> {
      const ns = payload.attrs.xmlns;
      if (type === 'get' && payload.name === 'query' && ns === NS.DISCO_INFO) return discoInfo(req, payload.attrs.node);
      if (type === 'get' && payload.name === 'query' && ns === NS.DISCO_ITEMS) return discoItems(req, payload.attrs.node);
      if (payload.name === 'pubsub' && (ns === NS_PUBSUB || ns === NS_PUBSUB_OWNER)) return pubsub(req, type, payload);
      if (type === 'set' && payload.name === 'command' && ns === NS_COMMANDS) return command(req, payload);
      throw stanzaError('service-unavailable');
    }

    // ---- §8.7 pending subscription requests (XEP-0050 command) -----------------------------------

    /**
     * pubsub#get-pending: stage 0 offers the channels the requester owns; once one is chosen, the
     * requester gets one §8.6 authorization form message per pending request on it. One descriptor
     * serves the `adhoc.commands` framework on the host and the service's own address (§8.7 sends
     * the command to the pubsub service, which the host's framework does not answer).
     */
    const getPending: AdhocCommand = {
      node: NODE_GET_PENDING,
      name: 'Get pending subscription requests',
      allowed: (who) => !!who.local,
      async run(stage: AdhocStage) {
        const service = `${opts.subdomain}.${stage.host}`;
        if (!services.has(service)) throw stanzaError('item-not-found');
        const submitted = stage.form?.attrs.type === 'submit' ? formFields(stage.form, NS_SUBSCRIBE_AUTHORIZATION) : null;
        const node = submitted?.get('pubsub#node')?.[0];
        if (!node) {
          if (stage.stage > 0 || stage.form) throw commandError('bad-payload', 'choose a channel (pubsub#node)');
          const mine = (await all(service)).filter((ch) => affiliationOf(ch, stage.from) === 'owner');
          // §8.7.3.3: no channel to approve requests for.
          if (mine.length === 0) throw new StanzaError('cancel', 'forbidden', 'you own no channel on this service');
          const x = new Element('x', { xmlns: NS_DATA, type: 'form' });
          x.c('title').t('Pending subscription requests');
          x.c('field', { var: 'FORM_TYPE', type: 'hidden' }).c('value').t(NS_SUBSCRIBE_AUTHORIZATION);
          const f = x.c('field', { var: 'pubsub#node', type: 'list-single', label: 'Channel' });
          for (const ch of mine) {
            const n = ch.subscriptions.filter((s) => s.state === 'pending').length;
            f.c('option', { label: `${ch.config.title || ch.name} (${n} pending)` }).c('value').t(ch.name);
          }
          return { status: 'executing', actions: ['complete'], execute: 'complete', payload: [x] };
        }
        const ch = await requireChannel(service, node);
        if (affiliationOf(ch, stage.from) !== 'owner') throw new StanzaError('cancel', 'forbidden', 'only an owner of the channel may see its pending requests');
        const pending = ch.subscriptions.filter((s) => s.state === 'pending');
        for (const s of pending) await askOwners(service, ch, s, [stage.from.full]);
        return { status: 'completed', notes: [{ type: 'info', text: `${pending.length} pending subscription request(s) sent as forms.` }] };
      },
    };

    ctx.fold('adhoc.commands', (ev) => {
      if (services.has(`${opts.subdomain}.${ev.host}`)) ev.commands.push(getPending);
      return ev;
    });

    /** §8.7 sends the command to the service: the ad-hoc module runs it there, with its sessions and rules. */
    async function command(req: Req, el: Element): Promise<Element> {
      const host = services.get(req.service) as string;
      const ev = await ctx.foldValue('adhoc.execute', { from: req.from, address: req.service, host, command: el, commands: [getPending], reply: null });
      if (!ev.reply) throw stanzaError('service-unavailable', 'ad-hoc commands are not enabled');
      return ev.reply;
    }

    /** §8.6.2: an owner's answer to a subscription request form. */
    async function authorization(req: Req, x: Element): Promise<void> {
      const fields = formFields(x, NS_SUBSCRIBE_AUTHORIZATION);
      const node = fields.get('pubsub#node')?.[0];
      const subid = fields.get('pubsub#subid')?.[0];
      const jid = fields.get('pubsub#subscriber_jid')?.[0];
      const allow = parseBool(fields.get('pubsub#allow')?.[0]);
      if (!node || !jid || allow === null) throw stanzaError('bad-request', 'incomplete authorization form');
      const done = await serial(req.service, async () => {
        const ch = await requireChannel(req.service, node);
        requireOwner(ch, req.from);
        const sub = ch.subscriptions.find((s) => s.jid === jid && s.state === 'pending' && (subid === undefined || s.subid === subid));
        if (!sub) return null; // already decided (by another owner, or through §8.8)
        if (allow) sub.state = 'subscribed';
        else ch.subscriptions = ch.subscriptions.filter((s) => s !== sub);
        await save(req.service, ch);
        return { ch, sub };
      });
      if (!done) return;
      await subscriptionNotice(req.service, done.ch, done.sub, allow ? 'subscribed' : 'none');
      if (allow) await sendLast(req.service, done.ch, done.sub.jid, 1);
    }

    async function answer(stanza: Element, to: Jid, from: Jid | null): Promise<void> {
      const type = stanza.attrs.type as string | undefined;
      if (stanza.name === 'presence' || type === 'error' || type === 'result' || !from) return;
      const req: Req = { service: to.domain, from, after: [] };
      let reply: Element;
      try {
        if (to.local || to.resource) throw stanzaError('service-unavailable');
        if (stanza.name === 'message') {
          const x = stanza.getChild('x', NS_DATA);
          // Only owners' authorization answers are meaningful; other messages are refused (RFC 6120 §10.4.3).
          if (!x || x.attrs.type === 'cancel') {
            if (!x) throw stanzaError('service-unavailable');
            return;
          }
          await authorization(req, x);
          return;
        }
        if (type !== 'get' && type !== 'set') throw stanzaError('bad-request');
        const payload = iqPayload(stanza);
        if (payload === null || payload === 'many') throw stanzaError('bad-request');
        reply = iqResult(stanza, await handleIq(req, type, payload));
      } catch (err) {
        if (!(err instanceof StanzaError)) ctx.log.error({ err }, 'news request failed');
        reply = errorReply(stanza, err instanceof StanzaError ? err : stanzaError('internal-server-error'));
        req.after = [];
      }
      if (reply.attrs.to) await ctx.route(reply);
      for (const fn of req.after) await fn();
    }

    // ---- hosting ----------------------------------------------------------------------------------

    /** §12.3 at login: the newest items of each subscribed channel that sends them on presence. */
    async function onLogin(full: Jid): Promise<void> {
      const service = `${opts.subdomain}.${full.domain}`;
      if (!services.has(service) || opts.lastItemsOnLogin === 0) return;
      for (const ch of await all(service)) {
        if (ch.config.sendLast !== 'on_sub_and_presence') continue;
        // A subscription of the bare JID, or of this very resource, wants the items.
        const wants = ch.subscriptions.some((s) => s.state === 'subscribed' && s.deliver && (s.jid === full.bare || s.jid === full.full));
        if (!wants) continue;
        const mine = ch.subscriptions.filter((s) => s.state === 'subscribed' && (s.jid === full.bare || s.jid === full.full));
        if (!(await keepsAccess(ch, mine[0] as Subscription))) {
          await revoke(service, ch.name, new Set(mine.map((s) => s.subid)));
          continue;
        }
        await sendLast(service, ch, full.full, opts.lastItemsOnLogin);
      }
    }

    // pubsub#item_expire in the background, for channels nobody reads.
    ctx.every(opts.expirySweepSeconds * 1000, 'news item expiry sweep', async () => {
      for (const service of services.keys()) {
        for (const ch of await all(service)) if (ch.config.itemExpire > 0) await purgeExpired(service, ch.name);
      }
    });

    // Account removal (see the banner): storage.accounts.remove() has already dropped the account
    // from the channel records (so `parley user remove`, run without modules, does too). This pass,
    // serialized with the channel writes, catches a write that read a channel before the removal and
    // saved it after.
    ctx.hook('account.removed', async ({ jid }) => {
      const j = Jid.tryParse(jid);
      const service = j ? `${opts.subdomain}.${j.domain}` : '';
      if (!j || !services.has(service)) return undefined;
      for (const n of await store.listNodes(service)) {
        await serial(service, async () => {
          const ch = await load(service, n.node);
          if (!ch) return;
          const subscriptions = ch.subscriptions.filter((s) => bareOf(s.jid) !== j.bare);
          if (subscriptions.length === ch.subscriptions.length && !ch.affiliations.has(j.bare)) return;
          ch.subscriptions = subscriptions;
          ch.affiliations.delete(j.bare);
          await save(service, ch);
        });
      }
      return undefined;
    });

    // An owner stopped sharing presence with a contact: on channels with the presence access
    // model, that contact's subscriptions end now (with the notice), not at the next item.
    ctx.hook('roster.changed', async ({ user, contact, subscription }) => {
      if (subscription === 'from' || subscription === 'both') return undefined;
      const u = Jid.tryParse(user);
      const service = u ? `${opts.subdomain}.${u.domain}` : '';
      if (!u || !services.has(service)) return undefined;
      for (const ch of await all(service)) {
        if (ch.config.accessModel !== 'presence' || ch.affiliations.get(u.bare) !== 'owner') continue;
        const theirs = ch.subscriptions.filter((s) => bareOf(s.jid) === contact);
        if (theirs.length) await revoke(service, ch.name, new Set(theirs.map((s) => s.subid)));
      }
      return undefined;
    });

    ctx.hook('presence.initial', ({ session }) => {
      const jid = session.jid;
      if (!jid || session.priority < 0) return undefined;
      // Not awaited: offline delivery and presence must not wait for a scan of the channels.
      void onLogin(jid).catch((err) => ctx.log.warn({ err }, 'news items at login not sent'));
      return undefined;
    });
  },
});
