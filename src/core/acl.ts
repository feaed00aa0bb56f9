// Access control (issue 7): who may use which service-wide right, and what right a user holds on a
// persistent venue (a conference room or a news channel). Modules ask through ctx.acl; the rules
// come from the access control files (src/auth/policy, with `parley reload`) when they exist, else
// from the defaults below. Groups (from configuration now, from the directory later) are resolved by
// the implementation, not by the modules.
import type { Jid } from '../xmpp/jid.js';

/** Rights on one venue, strongest first (the Sun IM names). */
export type VenueRight = 'MANAGE' | 'WRITE' | 'READ' | 'NONE';

/**
 * Service-wide rights. channel.publish: publish items to news channels (on top of the channel's
 * own rights); settings.save: change one's own stored settings (vCard, password).
 */
export const SERVICE_RIGHTS = ['room.create', 'channel.create', 'channel.publish', 'alert.send', 'poll.create', 'settings.save', 'admin'] as const;
export type ServiceRight = (typeof SERVICE_RIGHTS)[number];

/**
 * The Sun Java System IM 7.2 privilege names (its access file names without `.acl`), accepted
 * wherever a right is named. Sun had no polls or publish privilege; its sysWatch (watching other
 * users' presence) has no equivalent here.
 */
export const SUN_RIGHT_NAMES: Readonly<Partial<Record<ServiceRight, string>>> = {
  'room.create': 'sysRoomsAdd',
  'channel.create': 'sysTopicsAdd',
  'alert.send': 'sysSendAlerts',
  'settings.save': 'sysSaveUserSettings',
  admin: 'sysAdmin',
};

/** The right a Parley name or a Sun alias (case-insensitive) names, or undefined. */
export function rightByName(name: string): ServiceRight | undefined {
  if ((SERVICE_RIGHTS as readonly string[]).includes(name)) return name as ServiceRight;
  const lower = name.toLowerCase();
  return SERVICE_RIGHTS.find((r) => SUN_RIGHT_NAMES[r]?.toLowerCase() === lower);
}

/**
 * IM services a user may use (issue 9, "service entitlements"): one file each under services/ in
 * the access control directory; no file means local accounts may use it (the behaviour before).
 */
export const ENTITLEMENTS = ['chat', 'conferences', 'news', 'polls', 'filetransfer', 'federation', 'gateways'] as const;
export type Entitlement = (typeof ENTITLEMENTS)[number];

export function isEntitlement(s: string): s is Entitlement {
  return (ENTITLEMENTS as readonly string[]).includes(s);
}

/** What `explain` answers: the decision and the rule that made it. */
export interface AclExplanation {
  allowed: boolean;
  /** The file (relative to the access directory) and line that decided; absent: a default decided. */
  file?: string;
  line?: number;
  /** The matching entry as written (`deny @contractors`), or the default that applied. */
  rule: string;
  /** Why the entry matched (`alice is in group contractors`), when it was not the user itself. */
  via?: string;
}

export interface AccessControl {
  /** Whether `who` may use an IM service at all. */
  entitled(service: Entitlement, who: Jid): boolean;
  /** The decision on a service right or an entitlement, and the rule that decided. */
  explain(question: ServiceRight | Entitlement, who: Jid): AclExplanation;
  /** Whether `who` holds a service-wide right. */
  allows(right: ServiceRight, who: Jid): boolean;
  /**
   * The right `who` holds on a venue by the venue's access file, or null when no file governs the
   * venue (its own XMPP configuration, e.g. MUC affiliations or pubsub access model, decides).
   */
  venue(kind: 'room' | 'channel', venue: string, who: Jid): VenueRight | null;
}

/** The rights local accounts hold without a file for them. */
const LOCAL_BY_DEFAULT: ReadonlySet<ServiceRight> = new Set(['room.create', 'channel.create', 'channel.publish', 'poll.create', 'settings.save']);

/**
 * Without access files: local accounts may create rooms and channels, publish to channels, run
 * polls and save their settings (what Openfire and Prosody allow out of the box); alerts and
 * administration need an explicit grant.
 */
export class DefaultAccessControl implements AccessControl {
  constructor(private readonly isLocal: (domain: string) => boolean) {}

  allows(right: ServiceRight, who: Jid): boolean {
    if (!who.local || !this.isLocal(who.domain)) return false;
    return LOCAL_BY_DEFAULT.has(right);
  }

  venue(): VenueRight | null {
    return null;
  }

  /** Local accounts use every service, as before entitlements existed. */
  entitled(_service: Entitlement, who: Jid): boolean {
    return !!who.local && this.isLocal(who.domain);
  }

  explain(question: ServiceRight | Entitlement, who: Jid): AclExplanation {
    const allowed = isEntitlement(question) ? this.entitled(question, who) : this.allows(question, who);
    return { allowed, rule: `no file: default (${allowed ? 'allowed' : 'denied'} for ${who.local && this.isLocal(who.domain) ? 'local accounts' : 'non-local users'})` };
  }
}

/** `services/conferences.acl:3 (deny @contractors; alice is in group contractors)`, or the default. */
export function formatRule(e: AclExplanation): string {
  if (!e.file) return e.rule;
  const where = e.line ? `${e.file}:${e.line}` : e.file;
  return `${where} (${e.rule}${e.via ? `; ${e.via}` : ''})`;
}
