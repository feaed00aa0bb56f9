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
  /** Deletes the account and every piece of data keyed by it (roster, offline, keyval, blocklist, archive and its prefs, PEP nodes and items). */
  remove(jid: string): Promise<boolean>;
  /** Usernames' bare JIDs on one host, sorted. */
  list(host: string): Promise<string[]>;
  count(host: string): Promise<number>;
  /** Which of these bare JIDs have no account (removed by another process, say). */
  missingAmong(jids: readonly string[]): Promise<string[]>;
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
  /** Messages stored for all accounts together (the /metrics offline gauge). */
  total(): Promise<number>;
}

/** Small per-user documents: private XML (XEP-0049), vCards (XEP-0054), last activity (XEP-0012). */
export interface KeyValStore {
  get(user: string, store: string, key: string): Promise<string | null>;
  set(user: string, store: string, key: string, value: string): Promise<void>;
  delete(user: string, store: string, key: string): Promise<void>;
  /** Number of keys a user has in one store (for caps). */
  count(user: string, store: string): Promise<number>;
}

/** One archived message (XEP-0313). */
export interface ArchiveEntry {
  /** Opaque archive UID, unique per user; also the XEP-0359 stanza-id handed to clients. */
  id: string;
  /** The contact's bare JID (the user's own for messages to self). */
  withBare: string;
  /** The contact's JID as it appeared on the message (full when it had a resource). */
  withFull: string;
  /** 'out': sent by the user; 'in': received. */
  direction: 'in' | 'out';
  stamp: number; // ms since epoch
  stanza: string; // serialized message
  /** Text searched by `withtext` (the body), or null. */
  body: string | null;
}

export interface ArchiveQuery {
  /** A bare JID matches every resource of it; a full JID matches that resource only. */
  with?: string;
  /** Inclusive bounds on `stamp`, ms since epoch. */
  start?: number;
  end?: number;
  /** Every word must occur in the body (case-insensitive; full-text index where the backend has one). */
  text?: string;
  /** Form-level bounds (XEP-0313 before-id/after-id), exclusive. */
  afterId?: string;
  beforeId?: string;
  /** Only these UIDs. */
  ids?: string[];
  /** Page size; 0 returns no items but still the count. */
  max: number;
  /** RSM: the page right after this UID (forward paging). */
  after?: string;
  /** RSM: the page right before this UID; '' means the last page (backward paging). */
  before?: string;
}

export interface ArchivePage {
  /** In archive order (oldest first), whatever the paging direction. */
  items: ArchiveEntry[];
  /** Entries matching the filters, ignoring RSM after/before and max. */
  count: number;
  /** Position of items[0] among those `count` entries (RSM first@index). */
  index: number;
  /** No more matching entries beyond this page in the paging direction. */
  complete: boolean;
}

export type ArchiveDefault = 'always' | 'never' | 'roster';

export interface ArchivePrefs {
  default: ArchiveDefault;
  always: string[];
  never: string[];
}

/** XEP-0313 per-user message archives. */
export interface ArchiveStore {
  /**
   * Appends an entry. With `cap` > 0, the user's oldest entries beyond `cap` are deleted in the same
   * transaction (under concurrent appends on PostgreSQL the count may exceed it by a few briefly).
   */
  append(user: string, entry: ArchiveEntry, cap?: number): Promise<void>;
  /** Resolves null when a UID named by afterId/beforeId/ids/after/before is not in the user's archive. */
  query(user: string, q: ArchiveQuery): Promise<ArchivePage | null>;
  /** The oldest and newest entries (XEP-0313 §6 metadata), or null for an empty archive. */
  bounds(user: string): Promise<{ first: { id: string; stamp: number }; last: { id: string; stamp: number } } | null>;
  count(user: string): Promise<number>;
  /**
   * Deletes every user's entries with stamp < cutoff, or with `domains` only the archives of bare
   * JIDs on those domains (user archives, not the rooms of a conference service); resolves how many went.
   */
  purge(cutoff: number, domains?: readonly string[]): Promise<number>;
  /** Deletes one archive's entries with stamp < cutoff (a room's own retention); resolves how many went. */
  purgeOwner(user: string, cutoff: number): Promise<number>;
  /** Deletes one user's entries (not the preferences). */
  clear(user: string): Promise<void>;
  getPrefs(user: string): Promise<ArchivePrefs | null>;
  setPrefs(user: string, prefs: ArchivePrefs): Promise<void>;
}

/** A pubsub node (XEP-0060); for PEP (XEP-0163) the service is the owner's bare JID. */
export interface PubsubNode {
  service: string;
  node: string;
  /** Bare JID of the node's owner. */
  owner: string;
  /** Node configuration: XEP-0004 field values keyed by var (pubsub#access_model ...). */
  config: Record<string, string | string[]>;
  createdAt: number; // ms since epoch
}

export interface PubsubItem {
  id: string;
  /** JID of the entity that published it. */
  publisher: string;
  /** Serialized payload (the children of <item/>). */
  payload: string;
  createdAt: number; // first published, ms since epoch
  updatedAt: number; // last (re)published
}

/** XEP-0060 nodes and items, shared by PEP and pubsub services. */
export interface PubsubStore {
  getNode(service: string, node: string): Promise<PubsubNode | null>;
  /** A service's nodes, sorted by name. */
  listNodes(service: string): Promise<PubsubNode[]>;
  countNodes(service: string): Promise<number>;
  /** Creates a node; resolves false if it already exists (nothing changed). */
  createNode(node: PubsubNode): Promise<boolean>;
  /** Replaces a node's configuration; resolves false if there is no such node. */
  setConfig(service: string, node: string, config: PubsubNode['config']): Promise<boolean>;
  /** Deletes a node and its items; resolves false if there was no such node. */
  deleteNode(service: string, node: string): Promise<boolean>;
  /**
   * Publishes (inserts, or replaces the item with the same id, which then becomes the newest) and
   * deletes the oldest items beyond `maxItems`, in one transaction. Resolves the ids trimmed.
   */
  publish(service: string, node: string, item: PubsubItem, maxItems: number): Promise<string[]>;
  /** Items oldest first: the newest `max` of them, or only those with the given ids. */
  getItems(service: string, node: string, opts?: { ids?: string[]; max?: number }): Promise<PubsubItem[]>;
  countItems(service: string, node: string): Promise<number>;
  /** Resolves false if there was no such item. */
  retract(service: string, node: string, id: string): Promise<boolean>;
  /** Deletes every item of a node (XEP-0060 §8.5 purge). */
  purge(service: string, node: string): Promise<void>;
  /** Deletes a whole service: every node and item (account removal deletes the account's PEP service). */
  deleteService(service: string): Promise<void>;
}

/** XEP-0191 block lists. */
export interface BlockStore {
  list(user: string): Promise<string[]>;
  add(user: string, jids: string[]): Promise<void>;
  remove(user: string, jids: string[]): Promise<void>;
  clear(user: string): Promise<void>;
}

/**
 * One XEP-0363 upload: a slot handed out by the upload service, then (after its HTTP PUT) a stored
 * file. The bytes live on disk under the slot id; the row is the metadata.
 */
export interface UploadRecord {
  /** Random slot id (also the file's name on disk). */
  slot: string;
  /** Bare JID of the account that requested the slot. */
  owner: string;
  /** Sanitized file name (the last segment of the URLs). */
  name: string;
  size: number; // bytes
  /** Content type the client announced (application/octet-stream when it gave none). */
  contentType: string;
  createdAt: number; // ms since epoch
  /** While pending: the PUT deadline; once uploaded: when the file goes (null: kept). */
  expiresAt: number | null;
  /** When the PUT completed; null while the slot waits for its upload. */
  uploadedAt: number | null;
}

/** XEP-0363 upload metadata. "Live" uploads are the uploaded ones plus the pending slots not yet expired. */
export interface UploadStore {
  /**
   * Records a new pending slot unless the owner's live uploads would then hold more than
   * `quotaBytes` bytes or `maxFiles` files (0: no limit; `rec.createdAt` is "now"). Resolves
   * false when refused.
   */
  reserve(rec: UploadRecord, quotaBytes: number, maxFiles?: number): Promise<boolean>;
  get(slot: string): Promise<UploadRecord | null>;
  /** Marks a pending slot whose deadline is after `at` uploaded, with its new expiry; resolves false otherwise. */
  complete(slot: string, at: number, expiresAt: number | null): Promise<boolean>;
  /** The owner's live uploads at `now`: count and bytes. */
  usage(owner: string, now: number): Promise<{ files: number; bytes: number }>;
  /** Resolves false if there was no such slot. */
  remove(slot: string): Promise<boolean>;
  /** Uploads and slots with expiresAt <= now, earliest first, at most `limit`. */
  expired(now: number, limit: number): Promise<UploadRecord[]>;
}

/** A persistent XEP-0045 room (temporary rooms never reach storage). */
export interface MucRoomRecord {
  /** Bare room JID (room@conference.host). */
  jid: string;
  /** Room configuration, JSON (owned by the MUC module, which validates it on load). */
  config: string;
  subject: string;
  /** Nickname that set the subject (empty when none). */
  subjectBy: string;
  /** Key of the room's XEP-0421 occupant ids (base64). */
  secret: string;
  /** Bare JID of the creator (counted against rooms-per-user). */
  creator: string;
  createdAt: number; // ms since epoch
}

export type MucAffiliationKind = 'owner' | 'admin' | 'member' | 'outcast';

export interface MucAffiliationRecord {
  room: string;
  /** Bare JID (or a domain, for a server ban). */
  jid: string;
  affiliation: MucAffiliationKind;
  /** Registered nickname (XEP-0045 §7.10), null when none. */
  nick: string | null;
  reason: string | null;
}

/** XEP-0045 persistent rooms and their affiliations. */
export interface MucStore {
  /** Inserts or replaces a room (its affiliations are kept). */
  saveRoom(rec: MucRoomRecord): Promise<void>;
  getRoom(jid: string): Promise<MucRoomRecord | null>;
  listRooms(): Promise<MucRoomRecord[]>;
  /** Deletes a room and its affiliations; resolves false if there was no such room. */
  deleteRoom(jid: string): Promise<boolean>;
  /** Sets (or with 'none' removes) one affiliation. */
  setAffiliation(room: string, jid: string, affiliation: MucAffiliationKind | 'none', nick?: string | null, reason?: string | null): Promise<void>;
  affiliations(room: string): Promise<MucAffiliationRecord[]>;
}

/** Alert urgency, the XEP-0131 SHIM `Urgency` header values. */
export type AlertPriority = 'low' | 'medium' | 'high';

/** One alert (issue 7): a headline from a host to many recipients (src/modules/alerts.ts). */
export interface AlertRecord {
  /** Random id; also the message id, so XEP-0184 receipts name it. */
  id: string;
  /** The local host the alert comes from (`from` of the message). */
  host: string;
  /** Who sent it: a bare JID, or `cli` for `parley alert send`. */
  sender: string;
  subject: string;
  body: string;
  /** XEP-0066 out-of-band URL, or null. */
  url: string | null;
  priority: AlertPriority;
  /** The sender asked for XEP-0184 receipts. */
  receipts: boolean;
  createdAt: number; // ms since epoch
}

export type AlertState = 'pending' | 'delivered' | 'received';

export interface AlertRecipient {
  alertId: string;
  user: string; // bare JID
  /** pending: not yet handed to a session; delivered: written to one; received: a receipt came back. */
  state: AlertState;
  deliveredAt: number | null;
  receivedAt: number | null;
}

/** Alerts and their per-recipient delivery state. */
export interface AlertStore {
  /** Stores an alert with one pending row per recipient, in one transaction. */
  create(alert: AlertRecord, recipients: string[]): Promise<void>;
  get(id: string): Promise<AlertRecord | null>;
  /** A sender's alerts, newest first. */
  listBySender(sender: string, limit: number): Promise<AlertRecord[]>;
  /** Alerts still pending for a user, oldest first. */
  pendingFor(user: string, limit: number): Promise<AlertRecord[]>;
  /** Pending recipient rows stored after `seq` (a row counter), oldest first: for the delivery poll. */
  pendingSince(seq: number, limit: number): Promise<{ seq: number; alertId: string; user: string }[]>;
  /** The newest recipient row counter (0 when there is none). */
  maxSeq(): Promise<number>;
  /** pending → delivered; resolves false when the row was not pending (someone else delivered it). */
  markDelivered(alertId: string, user: string, at: number): Promise<boolean>;
  /** delivered/pending → received; resolves false when there is no such row or it already was. */
  markReceived(alertId: string, user: string, at: number): Promise<boolean>;
  recipients(alertId: string): Promise<AlertRecipient[]>;
  /** Deletes alerts created before `cutoff` with their recipient rows; resolves how many alerts went. */
  purge(cutoff: number): Promise<number>;
}

/** Who sees a poll's results (docs/polls.md §4): the creator only; recipients too, live; recipients too, once closed. */
export type PollResults = 'creator' | 'participants' | 'closed';

/** One poll (issue 7, src/modules/polls/): a question with numbered choices sent to many recipients. */
export interface PollRecord {
  /** Random id; the poll's JID is `<id>@polls.<host>`. */
  id: string;
  /** The local host whose polls service runs it. */
  host: string;
  /** Bare JID of the creator. */
  creator: string;
  question: string;
  /** The choices, in order; answers name them by number, 1-based. */
  choices: string[];
  /** Whether a recipient may pick more than one choice. */
  multiple: boolean;
  results: PollResults;
  /** The recipient specifications as the creator gave them (user JIDs, group:NAME, room:JID, everyone). */
  audience: string[];
  createdAt: number; // ms since epoch
  /** Deadline, or null for a poll closed by hand. */
  closesAt: number | null;
  closedAt: number | null;
}

export interface PollTally {
  /** Votes per choice, index 0 for choice 1. */
  counts: number[];
  /** Recipients who answered. */
  answered: number;
  recipients: number;
}

export type PollAnswerOutcome = 'ok' | 'closed' | 'not-recipient' | 'no-such-poll';

/** Polls with their recipients and answers. */
export interface PollStore {
  /** Stores a poll with one row per recipient, in one transaction. */
  create(poll: PollRecord, recipients: string[]): Promise<void>;
  get(id: string): Promise<PollRecord | null>;
  isRecipient(id: string, user: string): Promise<boolean>;
  recipients(id: string): Promise<string[]>;
  /** Records (or replaces) a recipient's answer, as 1-based choice numbers, if the poll is open. */
  answer(id: string, user: string, choices: number[], at: number): Promise<PollAnswerOutcome>;
  /** A recipient's current answer, or null when it has not answered (or is not a recipient). */
  answerOf(id: string, user: string): Promise<number[] | null>;
  tally(id: string): Promise<PollTally>;
  /** Closes an open poll; resolves false when it was closed already (or does not exist). */
  close(id: string, at: number): Promise<boolean>;
  /** Open polls whose deadline is at or before `now`, earliest first. */
  due(now: number, limit: number): Promise<PollRecord[]>;
  /** The earliest deadline of an open poll, or null. */
  nextDeadline(): Promise<number | null>;
  /** A creator's polls, newest first. */
  listByCreator(creator: string, limit: number): Promise<PollRecord[]>;
  /** Polls a user was asked, newest first. */
  listForRecipient(user: string, limit: number): Promise<PollRecord[]>;
  /** Deletes polls closed before `cutoff` with their recipient rows; resolves how many polls went. */
  purge(cutoff: number): Promise<number>;
}

/**
 * One XMPP bearer token (issue 9, src/auth/tokens.ts): the row never holds the token itself, only
 * the SHA-256 of it (the lookup key, kept apart from this record).
 */
export interface TokenRecord {
  /** Random public id, for listing and revoking. */
  id: string;
  /** Bare JID of the user the token logs in. */
  user: string;
  /** The host domain the token is valid for. */
  audience: string;
  label: string | null;
  /** Who issued it (`cli`, the web layer ...), or null. */
  issuer: string | null;
  createdAt: number; // ms since epoch
  expiresAt: number;
  revokedAt: number | null;
}

/** XMPP tokens (migration 8), keyed by the hex SHA-256 of the token. */
export interface TokenStore {
  insert(rec: TokenRecord, hash: string): Promise<void>;
  /** The token whose hash this is (expired and revoked ones too: the caller decides), or null. */
  byHash(hash: string): Promise<TokenRecord | null>;
  /** Marks a token revoked; resolves false when there is no such token or it was revoked already. */
  revoke(id: string, at: number): Promise<boolean>;
  /** Revokes every unrevoked token of a user; resolves how many. */
  revokeAll(user: string, at: number): Promise<number>;
  /** A user's tokens, newest first. */
  list(user: string): Promise<TokenRecord[]>;
  /** Deletes tokens that expired at or before `now` (revoked or not); resolves how many went. */
  purge(now: number): Promise<number>;
  /** Which of these token ids are revoked (sessions that logged in with them must end). */
  revokedAmong(ids: readonly string[]): Promise<string[]>;
}

/**
 * A small key/value cache with expiry shared by every process on the database (issue 9 SSO: flow
 * state, SAML InResponseTo, assertion replay ids). Keys are namespaced by the caller
 * (`oidc:<state>`, `saml-req:<id>`, `saml-seen:<id>`). Expired entries are as good as absent.
 */
export interface SsoCache {
  /** Stores `value` unless a live entry has the key; resolves whether it stored (false: a replay). */
  add(key: string, value: string, ttlMs: number): Promise<boolean>;
  /** The live value, or null. */
  get(key: string): Promise<string | null>;
  /** Removes the entry and resolves its live value (null if absent or expired): single use, atomic. */
  take(key: string): Promise<string | null>;
  delete(key: string): Promise<void>;
  /** Drops expired entries; resolves how many. */
  purge(now: number): Promise<number>;
}

/** A signed-in browser (issue 9). The cookie carries the id; only its SHA-256 is stored. */
export interface WebSessionRecord {
  /** Random public id (logs, listings); not the cookie value. */
  id: string;
  /** Bare JID signed in. */
  user: string;
  host: string;
  provider: string;
  subject: string;
  /** Anti-CSRF token for state-changing requests (random, per session). */
  csrf: string;
  /** The provider's logout data (SsoIdentity.logout), or null. */
  logout: Record<string, string> | null;
  /** SAML SessionIndex (IdP-initiated logout matches on it), or null. */
  sessionIndex: string | null;
  /** Ids of the XMPP tokens issued to this session (revoked with it). */
  tokens: string[];
  createdAt: number;
  lastSeenAt: number;
  expiresAt: number;
}

export interface WebSessionStore {
  insert(rec: WebSessionRecord, hash: string): Promise<void>;
  byHash(hash: string): Promise<WebSessionRecord | null>;
  /** Records use (sliding idle limit); resolves false when the session is gone. */
  touch(hash: string, at: number): Promise<boolean>;
  addToken(hash: string, tokenId: string): Promise<void>;
  /** Deletes one session; resolves it (null if it was gone). */
  remove(hash: string): Promise<WebSessionRecord | null>;
  /** Deletes the sessions of one identity at a provider (optionally one SAML session index); resolves them. */
  removeBySubject(provider: string, subject: string, sessionIndex?: string): Promise<WebSessionRecord[]>;
  /** A user's sessions, newest first. */
  list(user: string): Promise<WebSessionRecord[]>;
  /** Deletes every session of a user; resolves them. */
  removeByUser(user: string): Promise<WebSessionRecord[]>;
  /** Deletes sessions past `expiresAt`, or unused since `idleBefore`; resolves them (their tokens are revoked next). */
  purge(now: number, idleBefore: number): Promise<WebSessionRecord[]>;
}

/** Which account an IdP identity (issuer + subject) is bound to on a host (issue 9). */
export interface SsoIdentityRecord {
  host: string;
  issuer: string;
  subject: string;
  user: string;
  provider: string;
  displayName: string | null;
  /** Groups from the last sign-in's claims (policy @groups). */
  groups: string[];
  createdAt: number;
  lastLoginAt: number;
}

export interface SsoIdentityStore {
  get(host: string, issuer: string, subject: string): Promise<SsoIdentityRecord | null>;
  /** Bindings of an account (any issuer). */
  byUser(user: string): Promise<SsoIdentityRecord[]>;
  /**
   * Binds issuer+subject to `rec.user` unless that account is already bound to another subject of
   * the same issuer (resolves false); an existing binding of this identity is updated.
   */
  bind(rec: SsoIdentityRecord): Promise<boolean>;
  /** Every binding that carries groups (loaded at start for the policy engine). */
  withGroups(): Promise<SsoIdentityRecord[]>;
  remove(host: string, issuer: string, subject: string): Promise<boolean>;
}

export interface Storage {
  readonly kind: 'sqlite' | 'postgres';
  accounts: AccountStore;
  roster: RosterStore;
  offline: OfflineStore;
  keyval: KeyValStore;
  blocks: BlockStore;
  archive: ArchiveStore;
  pubsub: PubsubStore;
  uploads: UploadStore;
  alerts: AlertStore;
  polls: PollStore;
  muc: MucStore;
  tokens: TokenStore;
  /** Issue 9 SSO: shared cache, browser sessions, identity bindings. */
  ssoCache: SsoCache;
  webSessions: WebSessionStore;
  ssoIdentities: SsoIdentityStore;
  /** Cheap round trip, for readiness checks. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
