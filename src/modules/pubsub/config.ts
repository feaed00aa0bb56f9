// XEP-0060 node configuration: §16.4.4 pubsub#node_config fields this service supports, the
// XEP-0004 forms that carry them (§8.2 configure, §8.1.3 create-and-configure), and §7.1.5
// publish-options preconditions (every field must match the node's configuration; an unknown field
// is a precondition that cannot be met).
import { Element } from 'ltx';
import { StanzaError, stanzaError } from '../../xmpp/errors.js';

export const NS_PUBSUB = 'http://jabber.org/protocol/pubsub';
export const NS_PUBSUB_OWNER = 'http://jabber.org/protocol/pubsub#owner';
export const NS_PUBSUB_EVENT = 'http://jabber.org/protocol/pubsub#event';
export const NS_PUBSUB_ERRORS = 'http://jabber.org/protocol/pubsub#errors';
export const NS_NODE_CONFIG = 'http://jabber.org/protocol/pubsub#node_config';
export const NS_PUBLISH_OPTIONS = 'http://jabber.org/protocol/pubsub#publish-options';
export const NS_DATA = 'jabber:x:data';

export type AccessModel = 'open' | 'presence' | 'whitelist';
export type SendLast = 'never' | 'on_sub' | 'on_sub_and_presence';

export interface NodeConfig {
  title: string;
  accessModel: AccessModel;
  persistItems: boolean;
  maxItems: number;
  sendLast: SendLast;
  notifyRetract: boolean;
  notifyDelete: boolean;
  deliverNotifications: boolean;
  deliverPayloads: boolean;
}

export const ACCESS_MODELS: readonly AccessModel[] = ['open', 'presence', 'whitelist'];
export const SEND_LAST: readonly SendLast[] = ['never', 'on_sub', 'on_sub_and_presence'];
/** Longest pubsub#title (and pubsub#type) accepted. */
export const MAX_TITLE = 1024;

/** XEP-0163 §4 defaults for a PEP node: presence access, last item kept and sent on presence. */
export function defaultConfig(): NodeConfig {
  return {
    title: '',
    accessModel: 'presence',
    persistItems: true,
    maxItems: 1,
    sendLast: 'on_sub_and_presence',
    notifyRetract: true,
    notifyDelete: true,
    deliverNotifications: true,
    deliverPayloads: true,
  };
}

/** pubsub#... error with its application condition (XEP-0060 §7, §6.5). */
export function pubsubError(condition: StanzaError['condition'], app: string, text?: string, attrs: Record<string, string> = {}): StanzaError {
  return stanzaError(condition, text, new Element(app, { xmlns: NS_PUBSUB_ERRORS, ...attrs }));
}

export function preconditionNotMet(text: string): StanzaError {
  return new StanzaError('cancel', 'conflict', text, new Element('precondition-not-met', { xmlns: NS_PUBSUB_ERRORS }));
}

/** The fields of a submitted form, by var (FORM_TYPE checked and left out). */
export function formFields(x: Element | undefined, formType: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  if (!x) return out;
  if (x.name !== 'x' || x.attrs.xmlns !== NS_DATA) throw stanzaError('bad-request', 'expected a jabber:x:data form');
  if (x.attrs.type === 'cancel') return out;
  if (x.attrs.type !== 'submit') throw stanzaError('bad-request', "the form must be of type 'submit'");
  for (const f of x.getChildren('field')) {
    const v = f.attrs.var;
    if (!v) continue;
    const values = f.getChildren('value').map((e) => e.getText());
    if (v === 'FORM_TYPE') {
      if (values[0] !== formType) throw stanzaError('bad-request', `FORM_TYPE must be ${formType}`);
      continue;
    }
    out.set(v, values);
  }
  return out;
}

export function parseBool(v: string | undefined): boolean | null {
  if (v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  return null;
}

/** A max_items value: a positive integer, or 'max' (the service's limit). */
export function parseMax(v: string | undefined, limit: number): number | null {
  if (v === 'max') return limit;
  if (v === undefined || !/^\d{1,9}$/.test(v)) return null;
  const n = Number(v);
  return n >= 1 ? n : null;
}

/** The node settings PEP nodes and news channels share. */
export type CommonNodeConfig = Omit<NodeConfig, 'accessModel'>;

/**
 * Applies one of the pubsub#node_config fields every node has (title, max_items, persistence,
 * notification and last-item settings) to `c`; false when `name` is not one of them. A bad value is
 * not-acceptable, so that a client never believes a setting took effect when it did not.
 */
export function applyCommonField(c: CommonNodeConfig, name: string, v: string | undefined, maxItemsLimit: number): boolean {
  const bad = () => stanzaError('not-acceptable', `unsupported value for ${name}`);
  const bool = () => {
    const b = parseBool(v);
    if (b === null) throw bad();
    return b;
  };
  switch (name) {
    case 'pubsub#title':
      if ((v ?? '').length > MAX_TITLE) throw bad();
      c.title = v ?? '';
      return true;
    case 'pubsub#send_last_published_item':
      if (!SEND_LAST.includes(v as SendLast)) throw bad();
      c.sendLast = v as SendLast;
      return true;
    case 'pubsub#max_items': {
      const n = parseMax(v, maxItemsLimit);
      if (n === null) throw bad();
      if (n > maxItemsLimit) throw stanzaError('not-acceptable', `pubsub#max_items is limited to ${maxItemsLimit}`);
      c.maxItems = n;
      return true;
    }
    case 'pubsub#persist_items':
      c.persistItems = bool();
      return true;
    case 'pubsub#notify_retract':
      c.notifyRetract = bool();
      return true;
    case 'pubsub#notify_delete':
      c.notifyDelete = bool();
      return true;
    case 'pubsub#deliver_notifications':
      c.deliverNotifications = bool();
      return true;
    case 'pubsub#deliver_payloads':
      c.deliverPayloads = bool();
      return true;
    default:
      return false;
  }
}

/** Applies submitted fields to a PEP node's configuration (configure and create); unknown fields: not-acceptable. */
export function applyFields(base: NodeConfig, fields: Map<string, string[]>, maxItemsLimit: number): NodeConfig {
  const c = { ...base };
  for (const [name, values] of fields) {
    const v = values[0];
    if (applyCommonField(c, name, v, maxItemsLimit)) continue;
    switch (name) {
      case 'pubsub#access_model':
        if (!ACCESS_MODELS.includes(v as AccessModel)) throw stanzaError('not-acceptable', `unsupported value for ${name}`);
        c.accessModel = v as AccessModel;
        break;
      case 'pubsub#publish_model':
        // Only the owner publishes on a PEP node (XEP-0163 §4.1).
        if (v !== 'publishers') throw stanzaError('not-acceptable', `unsupported value for ${name}`);
        break;
      default:
        throw stanzaError('not-acceptable', `unsupported node configuration field ${name}`);
    }
  }
  return c;
}

/** §7.1.5: whether every precondition matches the configuration; resolves the first that does not. */
export function unmetPrecondition(config: NodeConfig, fields: Map<string, string[]>, maxItemsLimit: number): string | null {
  for (const [name, values] of fields) {
    const v = values[0];
    let ok: boolean;
    switch (name) {
      case 'pubsub#access_model':
        ok = v === config.accessModel;
        break;
      case 'pubsub#send_last_published_item':
        ok = v === config.sendLast;
        break;
      case 'pubsub#max_items':
        ok = parseMax(v, maxItemsLimit) === config.maxItems;
        break;
      case 'pubsub#persist_items':
        ok = parseBool(v) === config.persistItems;
        break;
      case 'pubsub#notify_retract':
        ok = parseBool(v) === config.notifyRetract;
        break;
      case 'pubsub#notify_delete':
        ok = parseBool(v) === config.notifyDelete;
        break;
      case 'pubsub#deliver_notifications':
        ok = parseBool(v) === config.deliverNotifications;
        break;
      case 'pubsub#deliver_payloads':
        ok = parseBool(v) === config.deliverPayloads;
        break;
      case 'pubsub#title':
        ok = (v ?? '') === config.title;
        break;
      case 'pubsub#publish_model':
        ok = v === 'publishers';
        break;
      default:
        ok = false;
    }
    if (!ok) return name;
  }
  return null;
}

/** The stored form of a configuration (PubsubNode.config). */
export function toStored(c: NodeConfig): Record<string, string> {
  return {
    'pubsub#title': c.title,
    'pubsub#access_model': c.accessModel,
    'pubsub#persist_items': String(c.persistItems),
    'pubsub#max_items': String(c.maxItems),
    'pubsub#send_last_published_item': c.sendLast,
    'pubsub#notify_retract': String(c.notifyRetract),
    'pubsub#notify_delete': String(c.notifyDelete),
    'pubsub#deliver_notifications': String(c.deliverNotifications),
    'pubsub#deliver_payloads': String(c.deliverPayloads),
  };
}

/** Reads a stored configuration; missing or damaged values fall back to the defaults. */
export function fromStored(stored: Record<string, string | string[]>, maxItemsLimit: number): NodeConfig {
  const fields = new Map<string, string[]>();
  for (const [k, v] of Object.entries(stored)) fields.set(k, Array.isArray(v) ? v : [v]);
  let c = defaultConfig();
  for (const [k, v] of fields) {
    try {
      c = applyFields(c, new Map([[k, v]]), maxItemsLimit);
    } catch {
      /* a value a later limit no longer allows keeps the default */
    }
  }
  return c;
}

/** The configuration form (§8.2.1), type 'form' for a get, with the current values. */
export function configForm(c: NodeConfig, maxItemsLimit: number): Element {
  const x = new Element('x', { xmlns: NS_DATA, type: 'form' });
  x.c('field', { var: 'FORM_TYPE', type: 'hidden' }).c('value').t(NS_NODE_CONFIG);
  x.c('field', { var: 'pubsub#title', type: 'text-single', label: 'A friendly name for the node' }).c('value').t(c.title);
  const list = (name: string, label: string, value: string, options: readonly string[]) => {
    const f = x.c('field', { var: name, type: 'list-single', label });
    f.c('value').t(value);
    for (const o of options) f.c('option').c('value').t(o);
  };
  const bool = (name: string, label: string, value: boolean) => x.c('field', { var: name, type: 'boolean', label }).c('value').t(value ? '1' : '0');
  list('pubsub#access_model', 'Who may subscribe and retrieve items', c.accessModel, ACCESS_MODELS);
  bool('pubsub#persist_items', 'Persist items to storage', c.persistItems);
  x.c('field', { var: 'pubsub#max_items', type: 'text-single', label: `Max number of items to persist (at most ${maxItemsLimit})` })
    .c('value')
    .t(String(c.maxItems));
  list('pubsub#send_last_published_item', 'When to send the last published item', c.sendLast, SEND_LAST);
  bool('pubsub#notify_retract', 'Notify subscribers when items are removed', c.notifyRetract);
  bool('pubsub#notify_delete', 'Notify subscribers when the node is deleted', c.notifyDelete);
  bool('pubsub#deliver_notifications', 'Deliver event notifications', c.deliverNotifications);
  bool('pubsub#deliver_payloads', 'Deliver payloads with event notifications', c.deliverPayloads);
  list('pubsub#publish_model', 'Who may publish', 'publishers', ['publishers']);
  return x;
}
