// News channel state inside pubsub node records, as far as storage must understand it: the keys
// under which src/modules/pubsub/channel.ts keeps a channel's affiliations and subscriptions (JSON
// strings in PubsubNode.config), and what accounts.remove() takes out of them. Removal is done here,
// in the backends' account-removal transaction, rather than only by the news module's
// account.removed hook, because `parley user remove` runs in another process without modules.
import type { PubsubNode } from './types.js';

/** Bare JID -> affiliation, as a JSON object in a string. */
export const CHANNEL_AFFILIATIONS_KEY = 'parley#affiliations';
/** Subscription records ({ jid, subid, state, ... }), as a JSON array in a string. */
export const CHANNEL_SUBSCRIPTIONS_KEY = 'parley#subscriptions';

/**
 * A substring of the stored config text (JSON of the record) wherever `bare` is named in a channel's
 * state: the state is JSON inside a JSON string, so the JID appears escaped twice. Used to narrow the
 * nodes read on account removal; a false positive only costs a parse.
 */
export function channelMention(bare: string): string {
  return JSON.stringify(JSON.stringify(bare)).slice(3, -3);
}

function parse(raw: string | string[] | undefined): unknown {
  try {
    return JSON.parse((Array.isArray(raw) ? raw[0] : raw) ?? '');
  } catch {
    return undefined;
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The config of `node` without the subscriptions (of `bare` and of its full JIDs) and the
 * affiliation of the account `bare`, or null when there is nothing to change. Records without
 * either key are not channels (PEP nodes) and are left alone. A channel record without the
 * affiliations key makes its creator (`owner`) its owner when read, so when the creator is removed
 * an empty map is written: the channel becomes ownerless (managed by administrators, see news.ts)
 * instead of going back to whoever registers that JID again. Damaged values are left as they are,
 * as the reader ignores them.
 */
/**
 * channelConfigWithout() on a node row as stored (config as JSON text): the new config text, or
 * null when there is nothing to change or the record is damaged (unreadable anyway; it must not
 * block the removal).
 */
export function storedChannelWithout(row: { owner: string; config: string }, bare: string): string | null {
  let config: PubsubNode['config'];
  try {
    config = JSON.parse(row.config) as PubsubNode['config'];
  } catch {
    return null;
  }
  const next = channelConfigWithout({ owner: row.owner, config }, bare);
  return next ? JSON.stringify(next) : null;
}

export function channelConfigWithout(node: Pick<PubsubNode, 'owner' | 'config'>, bare: string): PubsubNode['config'] | null {
  const config = node.config;
  const hasAffs = CHANNEL_AFFILIATIONS_KEY in config;
  const hasSubs = CHANNEL_SUBSCRIPTIONS_KEY in config;
  if (!hasAffs && !hasSubs) return null;
  const next = { ...config };
  let changed = false;
  if (hasAffs) {
    const affs = parse(config[CHANNEL_AFFILIATIONS_KEY]);
    if (isRecord(affs) && Object.hasOwn(affs, bare)) {
      delete affs[bare];
      next[CHANNEL_AFFILIATIONS_KEY] = JSON.stringify(affs);
      changed = true;
    }
  } else if (node.owner === bare) {
    next[CHANNEL_AFFILIATIONS_KEY] = '{}';
    changed = true;
  }
  if (hasSubs) {
    const subs = parse(config[CHANNEL_SUBSCRIPTIONS_KEY]);
    if (Array.isArray(subs)) {
      const prefix = `${bare}/`;
      const kept = subs.filter((s) => !(isRecord(s) && typeof s.jid === 'string' && (s.jid === bare || s.jid.startsWith(prefix))));
      if (kept.length !== subs.length) {
        next[CHANNEL_SUBSCRIPTIONS_KEY] = JSON.stringify(kept);
        changed = true;
      }
    }
  }
  return changed ? next : null;
}
