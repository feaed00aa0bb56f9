// A small XEP-0060 publish-subscribe engine over the PubsubStore, independent of who hosts it: PEP
// (XEP-0163) uses it for every account's bare JID, and a standalone pubsub service can reuse it
// with another policy. Implemented: §5.6 subscriptions / §5.7 affiliations (own, read-only), §6.5
// items retrieval (all, by id, max_items), §7.1 publish (item ids, auto-create §7.1.4,
// publish-options §7.1.5), §7.2 retract with notify, §8.1 create (with configure), §8.2 configure,
// §8.3 default configuration, §8.4 delete, §8.5 purge. Not implemented: explicit subscriptions
// (PEP subscribes implicitly through presence and +notify), collections, item expiry.
import { randomBytes } from 'node:crypto';
import { Element, parse } from 'ltx';
import { serializer } from '../../core/serializer.js';
import { standalone } from '../../xmpp/stanza.js';
import { StanzaError, stanzaError } from '../../xmpp/errors.js';
import type { Jid } from '../../xmpp/jid.js';
import type { PubsubItem, PubsubStore } from '../../storage/types.js';
import {
  applyFields,
  configForm,
  defaultConfig,
  formFields,
  fromStored,
  type NodeConfig,
  NS_NODE_CONFIG,
  NS_PUBLISH_OPTIONS,
  NS_PUBSUB,
  NS_PUBSUB_EVENT,
  NS_PUBSUB_OWNER,
  preconditionNotMet,
  pubsubError,
  toStored,
  unmetPrecondition,
} from './config.js';

export interface EngineLimits {
  /** Most nodes one service (account) may hold. */
  maxNodes: number;
  /** Highest pubsub#max_items (also what 'max' means). */
  maxItems: number;
  /** Largest serialized item payload, in bytes. */
  maxPayloadBytes: number;
}

export interface EnginePolicy {
  /** Whether `who` owns `service` (may publish, retract, configure, delete). */
  isOwner(service: Jid, who: Jid): boolean;
  /** Null if `who` may read the node, else the XEP-0060 §6.5.9 error to answer with. */
  checkAccess(service: Jid, config: NodeConfig, who: Jid): Promise<StanzaError | null>;
  /** Delivers an <event/> about a node to the service's subscribers. */
  broadcast(service: Jid, node: string, config: NodeConfig, event: Element): Promise<void>;
}

const MAX_NAME = 1024;

export interface LoadedNode {
  name: string;
  config: NodeConfig;
}

export class PubsubEngine {
  private readonly serial = serializer();

  constructor(
    private readonly store: PubsubStore,
    private readonly limits: EngineLimits,
    private readonly policy: EnginePolicy,
  ) {}

  // ---- reads usable by hosts (last item on presence, disco) ---------------------------------------

  async node(service: Jid, name: string): Promise<LoadedNode | null> {
    const n = await this.store.getNode(service.bare, name);
    return n ? { name, config: fromStored(n.config, this.limits.maxItems) } : null;
  }

  async nodes(service: Jid): Promise<LoadedNode[]> {
    return (await this.store.listNodes(service.bare)).map((n) => ({ name: n.node, config: fromStored(n.config, this.limits.maxItems) }));
  }

  async lastItem(service: Jid, node: string): Promise<PubsubItem | null> {
    return (await this.store.getItems(service.bare, node, { max: 1 }))[0] ?? null;
  }

  /** <event><items node><item id>payload</item></items></event> for stored items. */
  itemsEvent(node: string, items: PubsubItem[], config: NodeConfig): Element {
    const ev = new Element('event', { xmlns: NS_PUBSUB_EVENT });
    const list = ev.c('items', { node });
    for (const it of items) list.cnode(this.itemElement(it, config.deliverPayloads));
    return ev;
  }

  // ---- iq entry points ----------------------------------------------------------------------------

  /** Handles an iq <pubsub/> (user or owner namespace) addressed to `service`. */
  async handle(service: Jid, from: Jid, type: 'get' | 'set', payload: Element): Promise<Element | undefined> {
    const owner = payload.attrs.xmlns === NS_PUBSUB_OWNER;
    const children = payload.getChildElements();
    const action = children.find((c) => c.name !== 'configure' && c.name !== 'publish-options' && c.name !== 'options') ?? children[0];
    if (!action) throw stanzaError('bad-request', 'empty pubsub request');
    const key = `${type} ${owner ? 'owner' : 'user'} ${action.name}`;
    switch (key) {
      case 'get user items':
        return this.items(service, from, action);
      case 'set user publish':
        return this.publishRequest(service, from, action, payload.getChild('publish-options'));
      case 'set user retract':
        return this.retractRequest(service, from, action);
      case 'set user create':
        return this.create(service, from, action, payload.getChild('configure'));
      case 'get user subscriptions':
        // Subscriptions are implicit (presence + caps), never stored: nothing to list.
        return new Element('pubsub', { xmlns: NS_PUBSUB }).c('subscriptions', { node: action.attrs.node }).root();
      case 'get user affiliations':
        return this.affiliations(service, from, action);
      case 'get owner configure':
      case 'set owner configure':
        return this.configure(service, from, type, action);
      case 'get owner default': {
        const res = new Element('pubsub', { xmlns: NS_PUBSUB_OWNER });
        res.c('default').cnode(configForm(defaultConfig(), this.limits.maxItems));
        return res;
      }
      case 'set owner delete':
        return this.deleteRequest(service, from, action);
      case 'set owner purge':
        return this.purgeRequest(service, from, action);
      default:
        throw pubsubError('feature-not-implemented', 'unsupported', `${action.name} is not supported here`, { feature: featureName(action.name) });
    }
  }

  private requireOwner(service: Jid, who: Jid): void {
    if (!this.policy.isOwner(service, who)) throw stanzaError('forbidden', 'only the owner may do this');
  }

  private nodeName(el: Element): string {
    const node = el.attrs.node;
    if (!node) throw pubsubError('not-acceptable', 'nodeid-required', 'a node name is required');
    if (node.length > MAX_NAME) throw stanzaError('not-acceptable', 'node name too long');
    return node;
  }

  private async requireNode(service: Jid, name: string): Promise<LoadedNode> {
    const n = await this.node(service, name);
    if (!n) throw stanzaError('item-not-found', 'no such node');
    return n;
  }

  // ---- §6.5 items ---------------------------------------------------------------------------------

  private async items(service: Jid, from: Jid, el: Element): Promise<Element> {
    const name = this.nodeName(el);
    const node = await this.requireNode(service, name);
    if (!this.policy.isOwner(service, from)) {
      const denied = await this.policy.checkAccess(service, node.config, from);
      if (denied) throw denied;
    }
    let max: number | undefined;
    if (el.attrs.max_items !== undefined) {
      if (!/^\d{1,9}$/.test(el.attrs.max_items)) throw stanzaError('bad-request', 'max_items must be a positive integer');
      max = Number(el.attrs.max_items);
    }
    const ids = el.getChildren('item').map((i) => i.attrs.id).filter((id): id is string => !!id);
    const found = ids.length ? await this.store.getItems(service.bare, name, { ids }) : await this.store.getItems(service.bare, name, { max });
    if (ids.length === 1 && found.length === 0) throw stanzaError('item-not-found', 'no such item');
    const res = new Element('pubsub', { xmlns: NS_PUBSUB });
    const list = res.c('items', { node: name });
    for (const it of found) list.cnode(this.itemElement(it, true));
    return res;
  }

  private itemElement(it: PubsubItem, withPayload: boolean): Element {
    const item = new Element('item', { id: it.id });
    if (withPayload && it.payload) {
      try {
        item.cnode(parse(it.payload));
      } catch {
        /* a damaged stored payload is sent as an empty item rather than failing the whole answer */
      }
    }
    return item;
  }

  private async affiliations(service: Jid, from: Jid, el: Element): Promise<Element> {
    const res = new Element('pubsub', { xmlns: NS_PUBSUB });
    const list = res.c('affiliations');
    if (this.policy.isOwner(service, from)) {
      for (const n of await this.nodes(service)) {
        if (el.attrs.node === undefined || el.attrs.node === n.name) list.c('affiliation', { node: n.name, affiliation: 'owner' });
      }
    }
    return res;
  }

  // ---- §7.1 publish ---------------------------------------------------------------------------------

  private async publishRequest(service: Jid, from: Jid, el: Element, optionsEl: Element | undefined): Promise<Element> {
    const name = this.nodeName(el);
    const items = el.getChildren('item');
    if (items.length === 0) throw pubsubError('bad-request', 'item-required', 'a persistent node needs an item');
    if (items.length > 1) throw pubsubError('bad-request', 'invalid-payload', 'one item per publish request');
    const options = formFields(optionsEl?.getChild('x', 'jabber:x:data'), NS_PUBLISH_OPTIONS);
    const id = await this.publish(service, from, name, items[0] as Element, options);
    return new Element('pubsub', { xmlns: NS_PUBSUB }).c('publish', { node: name }).c('item', { id }).root();
  }

  /** Publishes one <item/> (auto-creating the node with `options` as preconditions); resolves its id. */
  async publish(service: Jid, publisher: Jid, name: string, itemEl: Element, options: Map<string, string[]> = new Map()): Promise<string> {
    this.requireOwner(service, publisher);
    if (name.length > MAX_NAME) throw stanzaError('not-acceptable', 'node name too long');
    const payloads = itemEl.getChildElements();
    if (payloads.length === 0) throw pubsubError('bad-request', 'payload-required', 'the item needs a payload');
    if (payloads.length > 1) throw pubsubError('bad-request', 'invalid-payload', 'an item carries exactly one payload element');
    const id = itemEl.attrs.id || randomBytes(12).toString('hex');
    if (id.length > MAX_NAME) throw stanzaError('not-acceptable', 'item id too long');
    const payload = standaloneString(payloads[0] as Element);
    const size = Buffer.byteLength(payload, 'utf8');
    if (size > this.limits.maxPayloadBytes) {
      throw pubsubError('not-acceptable', 'payload-too-big', `the item payload is ${size} bytes; at most ${this.limits.maxPayloadBytes} are allowed`);
    }
    const now = Date.now();
    const config = await this.serial(service.bare, async () => {
      let node = await this.node(service, name);
      if (node) {
        const unmet = unmetPrecondition(node.config, options, this.limits.maxItems);
        if (unmet) throw preconditionNotMet(`the node's ${unmet} does not match the publish options`);
      } else {
        // §7.1.5: unknown fields can never be met; known ones become the new node's configuration.
        const unmet = unmetPrecondition(applyKnown(defaultConfig(), options, this.limits.maxItems), options, this.limits.maxItems);
        if (unmet) throw preconditionNotMet(`unsupported publish option ${unmet}`);
        node = { name, config: applyFields(defaultConfig(), options, this.limits.maxItems) };
        await this.createNode(service, publisher, node);
      }
      // A transient node still keeps its last item: XEP-0163 sends it on presence.
      const max = node.config.persistItems ? node.config.maxItems : 1;
      await this.store.publish(service.bare, name, { id, publisher: publisher.bare, payload, createdAt: now, updatedAt: now }, max);
      return node.config;
    });
    if (config.deliverNotifications) {
      const it: PubsubItem = { id, publisher: publisher.bare, payload, createdAt: now, updatedAt: now };
      await this.policy.broadcast(service, name, config, this.itemsEvent(name, [it], config));
    }
    return id;
  }

  private async createNode(service: Jid, owner: Jid, node: LoadedNode): Promise<void> {
    if ((await this.store.countNodes(service.bare)) >= this.limits.maxNodes) {
      throw new StanzaError('cancel', 'resource-constraint', `an account may hold at most ${this.limits.maxNodes} nodes`);
    }
    const created = await this.store.createNode({
      service: service.bare,
      node: node.name,
      owner: owner.bare,
      config: toStored(node.config),
      createdAt: Date.now(),
    });
    if (!created) throw stanzaError('conflict', 'the node already exists');
  }

  // ---- §7.2 retract ---------------------------------------------------------------------------------

  private async retractRequest(service: Jid, from: Jid, el: Element): Promise<undefined> {
    const name = this.nodeName(el);
    const items = el.getChildren('item');
    if (items.length !== 1 || !items[0]?.attrs.id) throw pubsubError('bad-request', 'item-required', 'name one item to retract');
    const notifyAttr = el.attrs.notify;
    const notify = notifyAttr === undefined ? undefined : notifyAttr === 'true' || notifyAttr === '1';
    await this.retract(service, from, name, items[0].attrs.id, notify);
    return undefined;
  }

  async retract(service: Jid, who: Jid, name: string, id: string, notify?: boolean): Promise<void> {
    this.requireOwner(service, who);
    const node = await this.requireNode(service, name);
    if (!(await this.store.retract(service.bare, name, id))) throw stanzaError('item-not-found', 'no such item');
    if (notify ?? node.config.notifyRetract) {
      const ev = new Element('event', { xmlns: NS_PUBSUB_EVENT });
      ev.c('items', { node: name }).c('retract', { id });
      await this.policy.broadcast(service, name, node.config, ev);
    }
  }

  // ---- §8 owner use cases ---------------------------------------------------------------------------

  private async create(service: Jid, from: Jid, el: Element, configure: Element | undefined): Promise<undefined> {
    this.requireOwner(service, from);
    const name = this.nodeName(el);
    const fields = formFields(configure?.getChild('x', 'jabber:x:data'), NS_NODE_CONFIG);
    const config = applyFields(defaultConfig(), fields, this.limits.maxItems);
    await this.serial(service.bare, () => this.createNode(service, from, { name, config }));
    return undefined;
  }

  private async configure(service: Jid, from: Jid, type: 'get' | 'set', el: Element): Promise<Element | undefined> {
    this.requireOwner(service, from);
    const name = this.nodeName(el);
    if (type === 'get') {
      const node = await this.requireNode(service, name);
      const res = new Element('pubsub', { xmlns: NS_PUBSUB_OWNER });
      res.c('configure', { node: name }).cnode(configForm(node.config, this.limits.maxItems));
      return res;
    }
    const x = el.getChild('x', 'jabber:x:data');
    if (!x) throw stanzaError('bad-request', 'a configuration form is required');
    const fields = formFields(x, NS_NODE_CONFIG);
    await this.serial(service.bare, async () => {
      const node = await this.requireNode(service, name);
      const next = applyFields(node.config, fields, this.limits.maxItems);
      await this.store.setConfig(service.bare, name, toStored(next));
      // A lower max_items applies at once, not only at the next publish.
      const keep = next.persistItems ? next.maxItems : 1;
      const items = await this.store.getItems(service.bare, name);
      for (const it of items.slice(0, Math.max(0, items.length - keep))) await this.store.retract(service.bare, name, it.id);
    });
    return undefined;
  }

  private async deleteRequest(service: Jid, from: Jid, el: Element): Promise<undefined> {
    this.requireOwner(service, from);
    const name = this.nodeName(el);
    const node = await this.serial(service.bare, async () => {
      const n = await this.requireNode(service, name);
      await this.store.deleteNode(service.bare, name);
      return n;
    });
    if (node.config.notifyDelete) {
      const ev = new Element('event', { xmlns: NS_PUBSUB_EVENT });
      ev.c('delete', { node: name });
      await this.policy.broadcast(service, name, node.config, ev);
    }
    return undefined;
  }

  private async purgeRequest(service: Jid, from: Jid, el: Element): Promise<undefined> {
    this.requireOwner(service, from);
    const name = this.nodeName(el);
    const node = await this.requireNode(service, name);
    await this.store.purge(service.bare, name);
    const ev = new Element('event', { xmlns: NS_PUBSUB_EVENT });
    ev.c('purge', { node: name });
    await this.policy.broadcast(service, name, node.config, ev);
    return undefined;
  }
}

/** Applies the known fields only (to check the unknown ones as unmet preconditions). */
function applyKnown(base: NodeConfig, fields: Map<string, string[]>, limit: number): NodeConfig {
  let c = base;
  for (const [k, v] of fields) {
    try {
      c = applyFields(c, new Map([[k, v]]), limit);
    } catch (err) {
      if (!(err instanceof StanzaError)) throw err;
    }
  }
  return c;
}

/** Serializes a payload so that it parses on its own (inherited xmlns re-declared). */
export function standaloneString(el: Element): string {
  const copy = standalone(el);
  if (copy.attrs.xmlns === undefined) {
    const ns = el.getNS();
    if (ns) copy.attrs.xmlns = ns;
  }
  return copy.toString();
}

function featureName(action: string): string {
  const map: Record<string, string> = { subscribe: 'subscribe', unsubscribe: 'subscribe', options: 'subscription-options' };
  return map[action] ?? action;
}
