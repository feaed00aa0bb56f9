// Storage contracts. Every backend (SQLite, PostgreSQL) implements all of them; one contract test
// suite (test/storage/contract.ts) runs against each. Users are keyed by their normalized bare JID
// ("alice@example.com"). All methods are async so that network backends fit; a rejected promise
// means the write did not happen and the caller must report an error to whoever asked for it.

/** SCRAM secrets for one hash (RFC 5802 §3): the password itself is never stored. */
export interface ScramSecret {
  salt: string; // base64
  iterations: number;
  storedKey: string; // base64
  serverKey: string; // base64
}

export type ScramHash = 'SHA-1' | 'SHA-256';

export interface AccountRecord {
  jid: string; // bare JID
  username: string;
  host: string;
  scram: Partial<Record<ScramHash, ScramSecret>>;
  createdAt: number; // ms since epoch
}

export interface AccountStore {
  /** Creates an account; resolves false if it already exists. */
  create(record: AccountRecord): Promise<boolean>;
  get(jid: string): Promise<AccountRecord | null>;
  /** Replaces the SCRAM secrets; resolves false if the account does not exist. */
  setScram(jid: string, scram: AccountRecord['scram']): Promise<boolean>;
  /** Deletes the account and every piece of data keyed by it (roster, offline, keyval, blocklist). */
  remove(jid: string): Promise<boolean>;
  /** Usernames' bare JIDs on one host, sorted. */
  list(host: string): Promise<string[]>;
  count(host: string): Promise<number>;
}

export type Subscription = 'none' | 'to' | 'from' | 'both';

export interface RosterItem {
  jid: string; // contact's bare JID
  name?: string;
  subscription: Subscription;
  /** Outbound subscription request pending (RFC 6121 ask='subscribe'). */
  ask: boolean;
  /** Subscription pre-approved by the user (RFC 6121 §3.4). */
  approved: boolean;
  groups: string[];
}

export interface Roster {
  /** Roster version (RFC 6121 §2.6): a counter bumped on every change, as a string. */
  version: string;
  items: RosterItem[];
}

export interface RosterStore {
  get(user: string): Promise<Roster>;
  getItem(user: string, contact: string): Promise<RosterItem | null>;
  /** Inserts or replaces an item; resolves the new roster version. */
  setItem(user: string, item: RosterItem): Promise<string>;
  /** Removes an item; resolves the new roster version, or null if there was no such item. */
  removeItem(user: string, contact: string): Promise<string | null>;
  count(user: string): Promise<number>;
  /** Inbound subscription requests not yet answered (RFC 6121 §3.1.3), kept as serialized stanzas. */
  addPendingIn(user: string, contact: string, stanza: string): Promise<void>;
  removePendingIn(user: string, contact: string): Promise<void>;
  listPendingIn(user: string): Promise<{ contact: string; stanza: string }[]>;
}

export interface OfflineMessage {
  id: number;
  stanza: string; // serialized stanza, already carrying its <delay/>
  stamp: number; // ms since epoch
}

export interface OfflineStore {
  /**
   * Stores a message, committed durably before the promise resolves. Resolves the new id, or null
   * if the user already holds `quota` messages (nothing stored).
   */
  push(user: string, stanza: string, stamp: number, quota: number): Promise<number | null>;
  list(user: string, limit?: number): Promise<OfflineMessage[]>;
  remove(user: string, ids: number[]): Promise<void>;
  count(user: string): Promise<number>;
}

/** Small per-user documents: private XML (XEP-0049), vCards (XEP-0054), last activity (XEP-0012). */
export interface KeyValStore {
  get(user: string, store: string, key: string): Promise<string | null>;
  set(user: string, store: string, key: string, value: string): Promise<void>;
  delete(user: string, store: string, key: string): Promise<void>;
  /** Number of keys a user has in one store (for caps). */
  count(user: string, store: string): Promise<number>;
}

/** XEP-0191 block lists. */
export interface BlockStore {
  list(user: string): Promise<string[]>;
  add(user: string, jids: string[]): Promise<void>;
  remove(user: string, jids: string[]): Promise<void>;
  clear(user: string): Promise<void>;
}

export interface Storage {
  readonly kind: 'sqlite' | 'postgres';
  accounts: AccountStore;
  roster: RosterStore;
  offline: OfflineStore;
  keyval: KeyValStore;
  blocks: BlockStore;
  /** Cheap round trip, for readiness checks. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
