// News channel nodes (XEP-0060 on the `news.<host>` service): §16.4.4 pubsub#node_config fields a
// channel supports (a wider set than a PEP node: description, the authorize access model, publish
// models), §16.4.3 pubsub#meta-data for node disco#info, §16.4.2 pubsub#subscribe_options, §4.1
// affiliations, and the node state (affiliations and subscriptions) kept with the node.
//
// Storage: the PubsubStore contract holds nodes (with a free-form config record) and items only.
// A channel's affiliations and subscriptions are small, change rarely and are always read with the
// node, so they are kept in that record under two `parley#` keys (JSON) rather than in new tables:
// no migration for every backend, and one read gives a request everything it needs. Writes go
// through the module's per-service serializer. The cost: each subscribe rewrites the node record,
// which is why subscribers per node are capped. Pending subscriptions (§8.6) are kept there too, so
// they survive a restart.
import { Element } from 'ltx';
import { stanzaError } from '../../xmpp/errors.js';
import { CHANNEL_AFFILIATIONS_KEY, CHANNEL_SUBSCRIPTIONS_KEY } from '../../storage/pubsub-channels.js';
import type { PubsubNode } from '../../storage/types.js';
import { applyCommonField, MAX_TITLE, NS_DATA, NS_NODE_CONFIG, parseBool, pubsubError, SEND_LAST, type SendLast } from './config.js';

export const NS_META_DATA = 'http://jabber.org/protocol/pubsub#meta-data';
export const NS_SUBSCRIBE_OPTIONS = 'http://jabber.org/protocol/pubsub#subscribe_options';
export const NS_SUBSCRIBE_AUTHORIZATION = 'http://jabber.org/protocol/pubsub#subscribe_authorization';

export type ChannelAccess = 'open' | 'authorize' | 'whitelist' | 'presence';
export type PublishModel = 'publishers' | 'subscribers' | 'open';
/** §4.1 affiliations, strongest first. */
export type Affiliation = 'owner' | 'publisher' | 'publish-only' | 'member' | 'none' | 'outcast';
export type SubState = 'subscribed' | 'pending';

export const ACCESS: readonly ChannelAccess[] = ['open', 'authorize', 'whitelist', 'presence'];
export const PUBLISH_MODELS: readonly PublishModel[] = ['publishers', 'subscribers', 'open'];
export const AFFILIATIONS: readonly Affiliation[] = ['owner', 'publisher', 'publish-only', 'member', 'none', 'outcast'];

export interface ChannelConfig {
  title: string;
  description: string;
  /** pubsub#type: the payload namespace (Atom by default). */
  type: string;
  accessModel: ChannelAccess;
  publishModel: PublishModel;
  maxItems: number;
  persistItems: boolean;
  sendLast: SendLast;
  notifyRetract: boolean;
  notifyDelete: boolean;
  /** §8.2.5.3 pubsub#notify_config: subscribers hear of configuration changes. */
  notifyConfig: boolean;
  deliverNotifications: boolean;
  deliverPayloads: boolean;
  /** pubsub#item_expire in seconds (0: items never expire). */
  itemExpire: number;
}

export interface Subscription {
  jid: string;
  subid: string;
  state: SubState;
  /** pubsub#deliver: false keeps the subscription but stops notifications. */
  deliver: boolean;
  /** pubsub#include_body: add a human-readable <body/> to notifications. */
  includeBody: boolean;
}

export interface Channel {
  name: string;
  createdAt: number;
  config: ChannelConfig;
  /** Bare JID -> affiliation (entries with 'none' are not kept). */
  affiliations: Map<string, Affiliation>;
  subscriptions: Subscription[];
}

// The keys are storage's: accounts.remove() takes a removed account out of these records.
const AFF_KEY = CHANNEL_AFFILIATIONS_KEY;
const SUBS_KEY = CHANNEL_SUBSCRIPTIONS_KEY;
const MAX_DESCRIPTION = 4096;

export function defaultChannelConfig(maxItems: number): ChannelConfig {
  return {
    title: '',
    description: '',
    type: 'http://www.w3.org/2005/Atom',
    accessModel: 'open',
    publishModel: 'publishers',
    maxItems,
    persistItems: true,
    sendLast: 'on_sub_and_presence',
    notifyRetract: true,
    notifyDelete: true,
    notifyConfig: false,
    deliverNotifications: true,
    deliverPayloads: true,
    itemExpire: 0,
  };
}

/** Applies submitted pubsub#node_config fields; an unknown field or bad value is not-acceptable. */
export function applyChannelFields(base: ChannelConfig, fields: Map<string, string[]>, maxItemsLimit: number): ChannelConfig {
  const c = { ...base };
  for (const [name, values] of fields) {
    const v = values[0];
    if (applyCommonField(c, name, v, maxItemsLimit)) continue;
    const bad = () => stanzaError('not-acceptable', `unsupported value for ${name}`);
    switch (name) {
      case 'pubsub#description':
        if ((v ?? '').length > MAX_DESCRIPTION) throw bad();
        c.description = v ?? '';
        break;
      case 'pubsub#type':
        if ((v ?? '').length > MAX_TITLE) throw bad();
        c.type = v ?? '';
        break;
      case 'pubsub#access_model':
        if (!ACCESS.includes(v as ChannelAccess)) throw bad();
        c.accessModel = v as ChannelAccess;
        break;
      case 'pubsub#publish_model':
        if (!PUBLISH_MODELS.includes(v as PublishModel)) throw bad();
        c.publishModel = v as PublishModel;
        break;
      case 'pubsub#notify_config': {
        const b = parseBool(v);
        if (b === null) throw bad();
        c.notifyConfig = b;
        break;
      }
      case 'pubsub#item_expire': {
        // §16.4.4 integer-or-max: 'max' means no limit but the service's (none here), as does 0.
        if (v === 'max') c.itemExpire = 0;
        else if (v !== undefined && /^\d{1,9}$/.test(v)) c.itemExpire = Number(v);
        else throw bad();
        break;
      }
      case 'pubsub#notification_type':
        // Notifications are headlines (never stored offline: subscribers get the last items at login).
        if (v !== 'headline') throw bad();
        break;
      default:
        throw stanzaError('not-acceptable', `unsupported node configuration field ${name}`);
    }
  }
  return c;
}

/** §8.2.1 configuration form (type 'form', current values) for configure and default. */
export function channelConfigForm(c: ChannelConfig, maxItemsLimit: number): Element {
  const x = new Element('x', { xmlns: NS_DATA, type: 'form' });
  x.c('field', { var: 'FORM_TYPE', type: 'hidden' }).c('value').t(NS_NODE_CONFIG);
  const text = (name: string, label: string, value: string, type = 'text-single') => x.c('field', { var: name, type, label }).c('value').t(value);
  const list = (name: string, label: string, value: string, options: readonly string[]) => {
    const f = x.c('field', { var: name, type: 'list-single', label });
    f.c('value').t(value);
    for (const o of options) f.c('option').c('value').t(o);
  };
  const bool = (name: string, label: string, value: boolean) => x.c('field', { var: name, type: 'boolean', label }).c('value').t(value ? '1' : '0');
  text('pubsub#title', 'A friendly name for the channel', c.title);
  text('pubsub#description', 'A description of the channel', c.description, 'text-multi');
  text('pubsub#type', 'The type of payload (namespace)', c.type);
  list('pubsub#access_model', 'Who may subscribe and retrieve items', c.accessModel, ACCESS);
  list('pubsub#publish_model', 'Who may publish', c.publishModel, PUBLISH_MODELS);
  text('pubsub#max_items', `Max number of items to persist (at most ${maxItemsLimit})`, String(c.maxItems));
  bool('pubsub#persist_items', 'Persist items to storage', c.persistItems);
  list('pubsub#send_last_published_item', 'When to send the last published item', c.sendLast, SEND_LAST);
  bool('pubsub#notify_retract', 'Notify subscribers when items are removed', c.notifyRetract);
  bool('pubsub#notify_delete', 'Notify subscribers when the channel is deleted', c.notifyDelete);
  bool('pubsub#notify_config', 'Notify subscribers when the configuration changes', c.notifyConfig);
  text('pubsub#item_expire', 'Number of seconds after which items are removed (0: never)', String(c.itemExpire));
  bool('pubsub#deliver_notifications', 'Deliver event notifications', c.deliverNotifications);
  bool('pubsub#deliver_payloads', 'Deliver payloads with event notifications', c.deliverPayloads);
  list('pubsub#notification_type', 'Message type of notifications', 'headline', ['headline']);
  return x;
}

/** §5.4 node meta-data (disco#info of a node). */
export function metaDataForm(ch: Channel, owners: string[]): Element {
  const x = new Element('x', { xmlns: NS_DATA, type: 'result' });
  x.c('field', { var: 'FORM_TYPE', type: 'hidden' }).c('value').t(NS_META_DATA);
  const field = (name: string, type: string, values: string[]) => {
    const f = x.c('field', { var: name, type });
    for (const v of values) f.c('value').t(v);
  };
  field('pubsub#title', 'text-single', [ch.config.title]);
  field('pubsub#description', 'text-single', [ch.config.description]);
  field('pubsub#type', 'text-single', [ch.config.type]);
  field('pubsub#owner', 'jid-multi', owners);
  field('pubsub#access_model', 'list-single', [ch.config.accessModel]);
  field('pubsub#publish_model', 'list-single', [ch.config.publishModel]);
  field('pubsub#max_items', 'text-single', [String(ch.config.maxItems)]);
  field('pubsub#num_subscribers', 'text-single', [String(new Set(ch.subscriptions.filter((s) => s.state === 'subscribed').map((s) => s.jid)).size)]);
  field('pubsub#creation_date', 'text-single', [new Date(ch.createdAt).toISOString()]);
  return x;
}

/** §6.3 subscription options form, with a subscription's values (or the defaults). */
export function subscribeOptionsForm(sub: Pick<Subscription, 'deliver' | 'includeBody'>): Element {
  const x = new Element('x', { xmlns: NS_DATA, type: 'form' });
  x.c('field', { var: 'FORM_TYPE', type: 'hidden' }).c('value').t(NS_SUBSCRIBE_OPTIONS);
  x.c('field', { var: 'pubsub#deliver', type: 'boolean', label: 'Enable delivery?' }).c('value').t(sub.deliver ? '1' : '0');
  x.c('field', { var: 'pubsub#digest', type: 'boolean', label: 'Receive digest notifications (not supported)?' }).c('value').t('0');
  x.c('field', { var: 'pubsub#include_body', type: 'boolean', label: 'Receive message body in addition to payload?' }).c('value').t(sub.includeBody ? '1' : '0');
  return x;
}

/** Applies submitted subscribe options; §6.3.5: anything not understood is bad-request/invalid-options. */
export function applySubscribeOptions<T extends Pick<Subscription, 'deliver' | 'includeBody'>>(sub: T, fields: Map<string, string[]>): T {
  const next = { ...sub };
  for (const [name, values] of fields) {
    const b = parseBool(values[0]);
    const invalid = () => pubsubError('bad-request', 'invalid-options', `unsupported value for ${name}`);
    if (b === null) throw invalid();
    if (name === 'pubsub#deliver') next.deliver = b;
    else if (name === 'pubsub#include_body') next.includeBody = b;
    else if (name === 'pubsub#digest') {
      if (b) throw invalid(); // digests are not offered
    } else throw invalid();
  }
  return next;
}

/** The stored record of a channel (PubsubNode.config). */
export function toStoredChannel(ch: Channel): Record<string, string> {
  const c = ch.config;
  return {
    'pubsub#title': c.title,
    'pubsub#description': c.description,
    'pubsub#type': c.type,
    'pubsub#access_model': c.accessModel,
    'pubsub#publish_model': c.publishModel,
    'pubsub#max_items': String(c.maxItems),
    'pubsub#persist_items': String(c.persistItems),
    'pubsub#send_last_published_item': c.sendLast,
    'pubsub#notify_retract': String(c.notifyRetract),
    'pubsub#notify_delete': String(c.notifyDelete),
    'pubsub#notify_config': String(c.notifyConfig),
    'pubsub#deliver_notifications': String(c.deliverNotifications),
    'pubsub#deliver_payloads': String(c.deliverPayloads),
    'pubsub#item_expire': String(c.itemExpire),
    [AFF_KEY]: JSON.stringify(Object.fromEntries(ch.affiliations)),
    [SUBS_KEY]: JSON.stringify(ch.subscriptions),
  };
}

/** Reads a stored channel; damaged values fall back to defaults rather than losing the channel. */
export function fromStoredChannel(n: PubsubNode, maxItemsLimit: number, defaultMaxItems: number): Channel {
  let config = defaultChannelConfig(Math.min(defaultMaxItems, maxItemsLimit));
  const affiliations = new Map<string, Affiliation>();
  let subscriptions: Subscription[] = [];
  for (const [k, raw] of Object.entries(n.config)) {
    const v = Array.isArray(raw) ? raw[0] : raw;
    if (k === AFF_KEY) {
      for (const [jid, a] of Object.entries(parseJson(v) ?? {})) if (AFFILIATIONS.includes(a as Affiliation)) affiliations.set(jid, a as Affiliation);
    } else if (k === SUBS_KEY) {
      const list = parseJson(v);
      if (Array.isArray(list)) subscriptions = list.filter(isSubscription);
    } else {
      try {
        config = applyChannelFields(config, new Map([[k, [v ?? '']]]), maxItemsLimit);
      } catch {
        /* a value a later limit no longer allows keeps the default */
      }
    }
  }
  // Only a record without the key falls back to the creator: a channel whose last owner's account
  // was removed stays ownerless (the creator's JID may be registered again by someone else).
  if (!(AFF_KEY in n.config)) affiliations.set(n.owner, 'owner');
  return { name: n.node, createdAt: n.createdAt, config, affiliations, subscriptions };
}

function parseJson(v: string | undefined): Record<string, unknown> | unknown[] | null {
  try {
    const r: unknown = JSON.parse(v ?? '');
    return typeof r === 'object' && r !== null ? (r as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

function isSubscription(v: unknown): v is Subscription {
  const s = v as Partial<Subscription> | null;
  return (
    typeof s === 'object' && s !== null && typeof s.jid === 'string' && typeof s.subid === 'string' && (s.state === 'subscribed' || s.state === 'pending') && typeof s.deliver === 'boolean' && typeof s.includeBody === 'boolean'
  );
}
