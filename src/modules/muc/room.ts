// XEP-0045 room state: configuration, affiliations (§5.2), occupants with their roles (§5.1), the
// discussion history kept for §7.2.14, and the XEP-0421 occupant id. No I/O here: the service
// (index.ts) routes stanzas and persists; this file only answers questions about one room.
import { createHmac } from 'node:crypto';
import type { Element } from 'ltx';
import { TokenBucket } from '../../core/bucket.js';
import type { MucAffiliationKind } from '../../storage/types.js';
import type { RoomConfig } from './config.js';

export type Role = 'moderator' | 'participant' | 'visitor' | 'none';
export type Affiliation = MucAffiliationKind | 'none';

/** Strength of affiliations, for "may X act on Y" comparisons (§5.2). */
export const AFF_RANK: Record<Affiliation, number> = { outcast: -1, none: 0, member: 1, admin: 2, owner: 3 };

export interface AffiliationEntry {
  affiliation: MucAffiliationKind;
  nick: string | null;
  reason: string | null;
}

export interface Occupant {
  nick: string;
  /** Real bare JID. */
  bare: string;
  /** Full JIDs of the sessions joined under this nick (§7.2: one user may join from several clients), with their last presence. */
  sessions: Map<string, Element>;
  role: Role;
  affiliation: Affiliation;
  bucket: TokenBucket;
}

export interface HistoryEntry {
  /** The reflected message without `to`. */
  stanza: Element;
  at: number;
  chars: number;
}

export class Room {
  readonly affiliations = new Map<string, AffiliationEntry>();
  readonly occupants = new Map<string, Occupant>();
  /** Full JID -> occupant. */
  readonly byJid = new Map<string, Occupant>();
  history: HistoryEntry[] = [];
  subject = '';
  subjectBy = '';
  /** §10.1.1: a new room admits nobody but its creator until it is configured. */
  locked = false;
  /** §7.13 voice requests: real bare JID -> when it last asked (the rate limit). */
  readonly voiceRequests = new Map<string, number>();
  /** §9.9 registration requests waiting for an admin: real bare JID -> the nick asked for. */
  readonly pendingRegistrations = new Map<string, string>();

  constructor(
    readonly jid: string,
    public config: RoomConfig,
    readonly secret: Buffer,
    readonly creator: string,
    readonly createdAt: number,
  ) {}

  /** XEP-0421: stable per real bare JID within this room, unlinkable across rooms. */
  occupantId(bare: string): string {
    return createHmac('sha256', this.secret).update(bare).digest('base64');
  }

  storedAffiliation(bare: string): Affiliation {
    const domain = bare.slice(bare.indexOf('@') + 1);
    return this.affiliations.get(bare)?.affiliation ?? (this.affiliations.get(domain)?.affiliation === 'outcast' ? 'outcast' : 'none');
  }

  owners(): string[] {
    return [...this.affiliations].filter(([, a]) => a.affiliation === 'owner').map(([j]) => j);
  }

  /** Whether `viewer` may see real JIDs (§7.2.3/§7.2.4). */
  seesJids(viewer: Occupant): boolean {
    return this.config.whois === 'anyone' || viewer.role === 'moderator';
  }

  addHistory(stanza: Element, max: number): void {
    if (max <= 0) return;
    this.history.push({ stanza, at: Date.now(), chars: String(stanza).length });
    if (this.history.length > max) this.history.splice(0, this.history.length - max);
  }

  /** §7.2.14: the entries a joiner asked for, oldest first. */
  historyFor(req: Element | undefined, now: number): HistoryEntry[] {
    let entries = this.history.slice(-this.config.historyLength);
    if (this.config.historyLength === 0) entries = [];
    if (req) {
      const ms = req.attrs.maxstanzas;
      if (ms !== undefined && /^\d+$/.test(ms)) entries = Number(ms) === 0 ? [] : entries.slice(-Number(ms));
      const secs = req.attrs.seconds;
      if (secs !== undefined && /^\d+$/.test(secs)) entries = entries.filter((e) => e.at >= now - Number(secs) * 1000);
      const since = req.attrs.since ? Date.parse(req.attrs.since) : NaN;
      if (!Number.isNaN(since)) entries = entries.filter((e) => e.at > since);
      const mc = req.attrs.maxchars;
      if (mc !== undefined && /^\d+$/.test(mc)) {
        let budget = Number(mc);
        const kept: HistoryEntry[] = [];
        for (let i = entries.length - 1; i >= 0; i--) {
          const e = entries[i] as HistoryEntry;
          if (e.chars > budget) break;
          budget -= e.chars;
          kept.unshift(e);
        }
        entries = kept;
      }
    }
    return entries;
  }
}

/** §5.1.2 the default role for an affiliation on entering. */
export function defaultRole(aff: Affiliation, moderated: boolean): Role {
  if (aff === 'owner' || aff === 'admin') return 'moderator';
  if (aff === 'member') return 'participant';
  if (aff === 'outcast') return 'none';
  return moderated ? 'visitor' : 'participant';
}

export function newBucket(rate: number, burst: number): TokenBucket {
  return new TokenBucket(rate, burst);
}
