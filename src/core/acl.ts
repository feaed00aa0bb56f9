// Access control (issue 7): who may use which service-wide right, and what right a user holds on a
// persistent venue (a conference room or a news channel). Modules ask through ctx.acl; the rules
// come from the access control files (src/auth/policy, with `parley reload`) when they exist, else
// from the defaults below. Groups (from configuration now, from the directory later) are resolved by
// the implementation, not by the modules.
import type { Jid } from '../xmpp/jid.js';

/** Rights on one venue, strongest first (the Sun IM names). */
export type VenueRight = 'MANAGE' | 'WRITE' | 'READ' | 'NONE';

/** Service-wide rights. */
export type ServiceRight = 'room.create' | 'channel.create' | 'alert.send' | 'poll.create' | 'admin';

export interface AccessControl {
  /** Whether `who` holds a service-wide right. */
  allows(right: ServiceRight, who: Jid): boolean;
  /**
   * The right `who` holds on a venue by the venue's access file, or null when no file governs the
   * venue (its own XMPP configuration, e.g. MUC affiliations or pubsub access model, decides).
   */
  venue(kind: 'room' | 'channel', venue: string, who: Jid): VenueRight | null;
}

/**
 * Without access files: local accounts may create rooms and channels and run polls (what Openfire
 * and Prosody allow out of the box); alerts and administration need an explicit grant.
 */
export class DefaultAccessControl implements AccessControl {
  constructor(private readonly isLocal: (domain: string) => boolean) {}

  allows(right: ServiceRight, who: Jid): boolean {
    if (!who.local || !this.isLocal(who.domain)) return false;
    return right === 'room.create' || right === 'channel.create' || right === 'poll.create';
  }

  venue(): VenueRight | null {
    return null;
  }
}
