// Schema migrations, kept as data so that both backends evolve in lock step: every entry carries the
// SQLite and the PostgreSQL text of the same change. A backend applies the entries it has not yet
// recorded in `schema_migrations`, in version order, inside one transaction, and refuses to open a
// database whose recorded version is newer than the last entry here (an older Parley must not write
// into a schema it does not understand).
//
// Rules for new entries: append only, never edit a released entry, keep versions consecutive.
// Column `user` is reserved in PostgreSQL, hence `user_jid` everywhere.

export interface Migration {
  version: number;
  name: string;
  sqlite: string;
  postgres: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial schema',
    sqlite: `
      CREATE TABLE accounts (
        jid        TEXT PRIMARY KEY,
        username   TEXT NOT NULL,
        host       TEXT NOT NULL,
        scram      TEXT NOT NULL,            -- JSON: Partial<Record<ScramHash, ScramSecret>>
        created_at INTEGER NOT NULL
      ) WITHOUT ROWID;
      CREATE INDEX accounts_host ON accounts (host, jid);

      CREATE TABLE roster_items (
        user_jid     TEXT NOT NULL,
        contact      TEXT NOT NULL,
        name         TEXT,
        subscription TEXT NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
        ask          INTEGER NOT NULL,       -- 0/1
        approved     INTEGER NOT NULL,       -- 0/1
        groups       TEXT NOT NULL,          -- JSON array of strings
        PRIMARY KEY (user_jid, contact)
      ) WITHOUT ROWID;

      CREATE TABLE roster_versions (
        user_jid TEXT PRIMARY KEY,
        version  INTEGER NOT NULL
      ) WITHOUT ROWID;

      CREATE TABLE roster_pending (
        user_jid TEXT NOT NULL,
        contact  TEXT NOT NULL,
        stanza   TEXT NOT NULL,
        PRIMARY KEY (user_jid, contact)
      ) WITHOUT ROWID;

      -- AUTOINCREMENT: ids are never reused, even after the newest rows were deleted.
      CREATE TABLE offline (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        user_jid TEXT NOT NULL,
        stanza   TEXT NOT NULL,
        stamp    INTEGER NOT NULL
      );
      CREATE INDEX offline_user ON offline (user_jid, id);

      CREATE TABLE keyval (
        user_jid TEXT NOT NULL,
        store    TEXT NOT NULL,
        key      TEXT NOT NULL,
        value    TEXT NOT NULL,
        PRIMARY KEY (user_jid, store, key)
      ) WITHOUT ROWID;

      CREATE TABLE blocks (
        user_jid TEXT NOT NULL,
        jid      TEXT NOT NULL,
        PRIMARY KEY (user_jid, jid)
      ) WITHOUT ROWID;
    `,
    postgres: `
      CREATE TABLE accounts (
        jid        text PRIMARY KEY,
        username   text NOT NULL,
        host       text NOT NULL,
        scram      text NOT NULL,
        created_at bigint NOT NULL
      );
      CREATE INDEX accounts_host ON accounts (host, jid);

      CREATE TABLE roster_items (
        user_jid     text NOT NULL,
        contact      text NOT NULL,
        name         text,
        subscription text NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
        ask          boolean NOT NULL,
        approved     boolean NOT NULL,
        groups       text NOT NULL,
        PRIMARY KEY (user_jid, contact)
      );

      CREATE TABLE roster_versions (
        user_jid text PRIMARY KEY,
        version  bigint NOT NULL
      );

      CREATE TABLE roster_pending (
        user_jid text NOT NULL,
        contact  text NOT NULL,
        stanza   text NOT NULL,
        PRIMARY KEY (user_jid, contact)
      );

      CREATE TABLE offline (
        id       bigserial PRIMARY KEY,
        user_jid text NOT NULL,
        stanza   text NOT NULL,
        stamp    bigint NOT NULL
      );
      CREATE INDEX offline_user ON offline (user_jid, id);

      CREATE TABLE keyval (
        user_jid text NOT NULL,
        store    text NOT NULL,
        key      text NOT NULL,
        value    text NOT NULL,
        PRIMARY KEY (user_jid, store, key)
      );

      CREATE TABLE blocks (
        user_jid text NOT NULL,
        jid      text NOT NULL,
        PRIMARY KEY (user_jid, jid)
      );
    `,
  },
  {
    // XEP-0313 message archive (src/storage/archive-*.ts). `seq` is the ordering key (monotonic,
    // never reused); `id` is the opaque archive UID handed to clients (XEP-0359 stanza-id).
    version: 2,
    name: 'message archive',
    sqlite: `
      CREATE TABLE archive (
        seq       INTEGER PRIMARY KEY AUTOINCREMENT,
        user_jid  TEXT NOT NULL,
        id        TEXT NOT NULL,
        with_bare TEXT NOT NULL,
        with_full TEXT NOT NULL,
        direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
        stamp     INTEGER NOT NULL,      -- ms since epoch
        stanza    TEXT NOT NULL,
        body      TEXT                   -- text for withtext search
      );
      CREATE UNIQUE INDEX archive_user_id ON archive (user_jid, id);
      CREATE INDEX archive_user_seq ON archive (user_jid, seq);
      CREATE INDEX archive_user_with ON archive (user_jid, with_bare, seq);
      CREATE INDEX archive_stamp ON archive (stamp);

      -- Full-text index over archive.body (external content: the text is not stored twice).
      CREATE VIRTUAL TABLE archive_fts USING fts5(
        body, content='archive', content_rowid='seq', tokenize='unicode61 remove_diacritics 2'
      );
      CREATE TRIGGER archive_fts_insert AFTER INSERT ON archive WHEN new.body IS NOT NULL BEGIN
        INSERT INTO archive_fts (rowid, body) VALUES (new.seq, new.body);
      END;
      CREATE TRIGGER archive_fts_delete AFTER DELETE ON archive WHEN old.body IS NOT NULL BEGIN
        INSERT INTO archive_fts (archive_fts, rowid, body) VALUES ('delete', old.seq, old.body);
      END;

      -- Entries per user, kept by the store, so that the per-user cap costs no count(*) per message.
      CREATE TABLE archive_users (
        user_jid TEXT PRIMARY KEY,
        n        INTEGER NOT NULL
      ) WITHOUT ROWID;

      CREATE TABLE archive_prefs (
        user_jid     TEXT PRIMARY KEY,
        default_mode TEXT NOT NULL CHECK (default_mode IN ('always', 'never', 'roster')),
        always_jids  TEXT NOT NULL,      -- JSON array of JIDs
        never_jids   TEXT NOT NULL       -- JSON array of JIDs
      ) WITHOUT ROWID;
    `,
    postgres: `
      CREATE TABLE archive (
        seq       bigserial PRIMARY KEY,
        user_jid  text NOT NULL,
        id        text NOT NULL,
        with_bare text NOT NULL,
        with_full text NOT NULL,
        direction text NOT NULL CHECK (direction IN ('in', 'out')),
        stamp     bigint NOT NULL,
        stanza    text NOT NULL,
        body      text
      );
      CREATE UNIQUE INDEX archive_user_id ON archive (user_jid, id);
      CREATE INDEX archive_user_seq ON archive (user_jid, seq);
      CREATE INDEX archive_user_with ON archive (user_jid, with_bare, seq);
      CREATE INDEX archive_stamp ON archive (stamp);
      -- 'simple': no language-specific stemming or stop words, the same for every user.
      CREATE INDEX archive_body_fts ON archive USING gin (to_tsvector('simple', COALESCE(body, '')));

      CREATE TABLE archive_users (
        user_jid text PRIMARY KEY,
        n        bigint NOT NULL
      );

      CREATE TABLE archive_prefs (
        user_jid     text PRIMARY KEY,
        default_mode text NOT NULL CHECK (default_mode IN ('always', 'never', 'roster')),
        always_jids  text NOT NULL,
        never_jids   text NOT NULL
      );
    `,
  },  {
    // XEP-0060 pubsub nodes and items: XEP-0163 PEP services (service = the account's bare JID) and
    // later standalone pubsub services. `seq` orders items (a re-published id gets a new seq: it
    // becomes the newest); config is a JSON object of node_config field values.
    version: 3,
    name: 'pubsub',
    sqlite: `
      CREATE TABLE pubsub_nodes (
        service    TEXT NOT NULL,
        node       TEXT NOT NULL,
        owner      TEXT NOT NULL,
        config     TEXT NOT NULL,        -- JSON: Record<string, string | string[]>
        created_at INTEGER NOT NULL,
        PRIMARY KEY (service, node)
      ) WITHOUT ROWID;

      CREATE TABLE pubsub_items (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        service    TEXT NOT NULL,
        node       TEXT NOT NULL,
        item_id    TEXT NOT NULL,
        publisher  TEXT NOT NULL,
        payload    TEXT NOT NULL,        -- serialized <item/> children
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
      );
      CREATE UNIQUE INDEX pubsub_items_id ON pubsub_items (service, node, item_id);
      CREATE INDEX pubsub_items_seq ON pubsub_items (service, node, seq);
    `,
    postgres: `
      CREATE TABLE pubsub_nodes (
        service    text NOT NULL,
        node       text NOT NULL,
        owner      text NOT NULL,
        config     text NOT NULL,
        created_at bigint NOT NULL,
        PRIMARY KEY (service, node)
      );

      CREATE TABLE pubsub_items (
        seq        bigserial PRIMARY KEY,
        service    text NOT NULL,
        node       text NOT NULL,
        item_id    text NOT NULL,
        publisher  text NOT NULL,
        payload    text NOT NULL,
        created_at bigint NOT NULL,
        updated_at bigint NOT NULL
      );
      CREATE UNIQUE INDEX pubsub_items_id ON pubsub_items (service, node, item_id);
      CREATE INDEX pubsub_items_seq ON pubsub_items (service, node, seq);
    `,
  },
  {
    // XEP-0363 HTTP file upload metadata (src/modules/upload.ts); the bytes are files named by
    // `slot` in the upload directory. expires_at: the PUT deadline while uploaded_at is NULL, then
    // the file's expiry (NULL: kept). Not keyed by user for accounts.remove(): a shared link
    // outlives its uploader until it expires.
    version: 4,
    name: 'http upload',
    sqlite: `
      CREATE TABLE uploads (
        slot         TEXT PRIMARY KEY,
        owner        TEXT NOT NULL,
        name         TEXT NOT NULL,
        size         INTEGER NOT NULL,
        content_type TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER,
        uploaded_at  INTEGER
      ) WITHOUT ROWID;
      CREATE INDEX uploads_owner ON uploads (owner);
      CREATE INDEX uploads_expires ON uploads (expires_at) WHERE expires_at IS NOT NULL;
    `,
    postgres: `
      CREATE TABLE uploads (
        slot         text PRIMARY KEY,
        owner        text NOT NULL,
        name         text NOT NULL,
        size         bigint NOT NULL,
        content_type text NOT NULL,
        created_at   bigint NOT NULL,
        expires_at   bigint,
        uploaded_at  bigint
      );
      CREATE INDEX uploads_owner ON uploads (owner);
      CREATE INDEX uploads_expires ON uploads (expires_at) WHERE expires_at IS NOT NULL;
    `,
  },
  {
    version: 5,
    name: 'muc rooms and affiliations',
    sqlite: `
      CREATE TABLE muc_rooms (
        jid        TEXT PRIMARY KEY,
        config     TEXT NOT NULL,            -- JSON, validated by the MUC module
        subject    TEXT NOT NULL,
        subject_by TEXT NOT NULL,
        secret     TEXT NOT NULL,
        creator    TEXT NOT NULL,
        created_at INTEGER NOT NULL
      ) WITHOUT ROWID;
      CREATE TABLE muc_affiliations (
        room        TEXT NOT NULL REFERENCES muc_rooms (jid) ON DELETE CASCADE,
        jid         TEXT NOT NULL,
        affiliation TEXT NOT NULL CHECK (affiliation IN ('owner', 'admin', 'member', 'outcast')),
        nick        TEXT,
        reason      TEXT,
        PRIMARY KEY (room, jid)
      ) WITHOUT ROWID;
    `,
    postgres: `
      CREATE TABLE muc_rooms (
        jid        text PRIMARY KEY,
        config     text NOT NULL,
        subject    text NOT NULL,
        subject_by text NOT NULL,
        secret     text NOT NULL,
        creator    text NOT NULL,
        created_at bigint NOT NULL
      );
      CREATE TABLE muc_affiliations (
        room        text NOT NULL REFERENCES muc_rooms (jid) ON DELETE CASCADE,
        jid         text NOT NULL,
        affiliation text NOT NULL CHECK (affiliation IN ('owner', 'admin', 'member', 'outcast')),
        nick        text,
        reason      text,
        PRIMARY KEY (room, jid)
      );
    `,
  },
  {
    // Alerts (issue 7, src/modules/alerts.ts, src/storage/alerts-*.ts): one row per alert, one per
    // recipient with its delivery state. `seq` orders recipient rows and lets a running server find
    // the rows `parley alert send` added from another process since it last looked.
    version: 6,
    name: 'alerts',
    sqlite: `
      CREATE TABLE alerts (
        id         TEXT PRIMARY KEY,
        host       TEXT NOT NULL,
        sender     TEXT NOT NULL,
        subject    TEXT NOT NULL,
        body       TEXT NOT NULL,
        url        TEXT,
        priority   TEXT NOT NULL CHECK (priority IN ('low', 'medium', 'high')),
        receipts   INTEGER NOT NULL,        -- 0/1
        created_at INTEGER NOT NULL
      ) WITHOUT ROWID;
      CREATE INDEX alerts_sender ON alerts (sender, created_at);
      CREATE INDEX alerts_created ON alerts (created_at);

      CREATE TABLE alert_recipients (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        alert_id     TEXT NOT NULL,
        user_jid     TEXT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'received')),
        delivered_at INTEGER,
        received_at  INTEGER
      );
      CREATE UNIQUE INDEX alert_recipients_alert ON alert_recipients (alert_id, user_jid);
      CREATE INDEX alert_recipients_user ON alert_recipients (user_jid, seq);
    `,
    postgres: `
      CREATE TABLE alerts (
        id         text PRIMARY KEY,
        host       text NOT NULL,
        sender     text NOT NULL,
        subject    text NOT NULL,
        body       text NOT NULL,
        url        text,
        priority   text NOT NULL CHECK (priority IN ('low', 'medium', 'high')),
        receipts   boolean NOT NULL,
        created_at bigint NOT NULL
      );
      CREATE INDEX alerts_sender ON alerts (sender, created_at);
      CREATE INDEX alerts_created ON alerts (created_at);

      CREATE TABLE alert_recipients (
        seq          bigserial PRIMARY KEY,
        alert_id     text NOT NULL,
        user_jid     text NOT NULL,
        state        text NOT NULL CHECK (state IN ('pending', 'delivered', 'received')),
        delivered_at bigint,
        received_at  bigint
      );
      CREATE UNIQUE INDEX alert_recipients_alert ON alert_recipients (alert_id, user_jid);
      CREATE INDEX alert_recipients_user ON alert_recipients (user_jid, seq);
    `,
  },
  {
    // Polls (issue 7, src/modules/polls/, src/storage/polls-*.ts, docs/polls.md): one row per poll,
    // one per recipient holding its current answer (choice numbers, comma-separated; NULL until it
    // answers). `closes_at` drives the deadline; `closed_at` is set once, by whoever closes it first.
    version: 7,
    name: 'polls',
    sqlite: `
      CREATE TABLE polls (
        id         TEXT PRIMARY KEY,
        host       TEXT NOT NULL,
        creator    TEXT NOT NULL,
        question   TEXT NOT NULL,
        choices    TEXT NOT NULL,           -- JSON array of strings
        multiple   INTEGER NOT NULL,        -- 0/1
        results    TEXT NOT NULL CHECK (results IN ('creator', 'participants', 'closed')),
        audience   TEXT NOT NULL,           -- JSON array: the recipient specifications as given
        created_at INTEGER NOT NULL,
        closes_at  INTEGER,
        closed_at  INTEGER
      ) WITHOUT ROWID;
      CREATE INDEX polls_creator ON polls (creator, created_at);
      CREATE INDEX polls_open_deadline ON polls (closes_at) WHERE closed_at IS NULL AND closes_at IS NOT NULL;

      CREATE TABLE poll_recipients (
        poll_id     TEXT NOT NULL,
        user_jid    TEXT NOT NULL,
        answer      TEXT,
        answered_at INTEGER,
        PRIMARY KEY (poll_id, user_jid)
      ) WITHOUT ROWID;
      CREATE INDEX poll_recipients_user ON poll_recipients (user_jid);
    `,
    postgres: `
      CREATE TABLE polls (
        id         text PRIMARY KEY,
        host       text NOT NULL,
        creator    text NOT NULL,
        question   text NOT NULL,
        choices    text NOT NULL,
        multiple   boolean NOT NULL,
        results    text NOT NULL CHECK (results IN ('creator', 'participants', 'closed')),
        audience   text NOT NULL,
        created_at bigint NOT NULL,
        closes_at  bigint,
        closed_at  bigint
      );
      CREATE INDEX polls_creator ON polls (creator, created_at);
      CREATE INDEX polls_open_deadline ON polls (closes_at) WHERE closed_at IS NULL AND closes_at IS NOT NULL;

      CREATE TABLE poll_recipients (
        poll_id     text NOT NULL,
        user_jid    text NOT NULL,
        answer      text,
        answered_at bigint,
        PRIMARY KEY (poll_id, user_jid)
      );
      CREATE INDEX poll_recipients_user ON poll_recipients (user_jid);
    `,
  },
  {
    // XMPP bearer tokens (issue 9, src/auth/tokens.ts, src/storage/tokens-*.ts): only the SHA-256 of
    // a token is stored, as the primary key, so a login looks it up by key and a database dump
    // yields nothing usable. Rows go at expiry (purge), revoked or not.
    version: 8,
    name: 'xmpp tokens',
    sqlite: `
      CREATE TABLE xmpp_tokens (
        hash       TEXT PRIMARY KEY,        -- lowercase hex SHA-256 of the token
        id         TEXT NOT NULL UNIQUE,
        user_jid   TEXT NOT NULL,
        audience   TEXT NOT NULL,
        label      TEXT,
        issuer     TEXT,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked_at INTEGER
      ) WITHOUT ROWID;
      CREATE INDEX xmpp_tokens_user ON xmpp_tokens (user_jid, created_at);
      CREATE INDEX xmpp_tokens_expires ON xmpp_tokens (expires_at);
    `,
    postgres: `
      CREATE TABLE xmpp_tokens (
        hash       text PRIMARY KEY,
        id         text NOT NULL UNIQUE,
        user_jid   text NOT NULL,
        audience   text NOT NULL,
        label      text,
        issuer     text,
        created_at bigint NOT NULL,
        expires_at bigint NOT NULL,
        revoked_at bigint
      );
      CREATE INDEX xmpp_tokens_user ON xmpp_tokens (user_jid, created_at);
      CREATE INDEX xmpp_tokens_expires ON xmpp_tokens (expires_at);
    `,
  },
  {
    // Single sign-on (issue 9, src/auth/sso/): a small cache shared by every process on the
    // database (flow state, SAML InResponseTo and assertion ids: single use, with expiry), browser
    // sessions (only the SHA-256 of the cookie value is stored), and which IdP identity
    // (issuer + subject) each account is bound to, with the groups of its last sign-in.
    version: 9,
    name: 'single sign-on',
    sqlite: `
      CREATE TABLE sso_cache (
        key        TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        expires_at INTEGER NOT NULL
      ) WITHOUT ROWID;
      CREATE INDEX sso_cache_expires ON sso_cache (expires_at);
      CREATE TABLE web_sessions (
        hash          TEXT PRIMARY KEY,
        id            TEXT NOT NULL UNIQUE,
        user_jid      TEXT NOT NULL,
        host          TEXT NOT NULL,
        provider      TEXT NOT NULL,
        subject       TEXT NOT NULL,
        csrf          TEXT NOT NULL,
        logout        TEXT,
        session_index TEXT,
        tokens        TEXT NOT NULL DEFAULT '[]',
        created_at    INTEGER NOT NULL,
        last_seen_at  INTEGER NOT NULL,
        expires_at    INTEGER NOT NULL
      ) WITHOUT ROWID;
      CREATE INDEX web_sessions_user ON web_sessions (user_jid, created_at);
      CREATE INDEX web_sessions_subject ON web_sessions (provider, subject);
      CREATE INDEX web_sessions_expires ON web_sessions (expires_at);
      CREATE TABLE sso_identities (
        host          TEXT NOT NULL,
        issuer        TEXT NOT NULL,
        subject       TEXT NOT NULL,
        user_jid      TEXT NOT NULL,
        provider      TEXT NOT NULL,
        display_name  TEXT,
        groups        TEXT NOT NULL DEFAULT '[]',
        created_at    INTEGER NOT NULL,
        last_login_at INTEGER NOT NULL,
        PRIMARY KEY (host, issuer, subject),
        UNIQUE (user_jid, issuer)
      ) WITHOUT ROWID;
    `,
    postgres: `
      CREATE TABLE sso_cache (
        key        text PRIMARY KEY,
        value      text NOT NULL,
        expires_at bigint NOT NULL
      );
      CREATE INDEX sso_cache_expires ON sso_cache (expires_at);
      CREATE TABLE web_sessions (
        hash          text PRIMARY KEY,
        id            text NOT NULL UNIQUE,
        user_jid      text NOT NULL,
        host          text NOT NULL,
        provider      text NOT NULL,
        subject       text NOT NULL,
        csrf          text NOT NULL,
        logout        text,
        session_index text,
        tokens        text NOT NULL DEFAULT '[]',
        created_at    bigint NOT NULL,
        last_seen_at  bigint NOT NULL,
        expires_at    bigint NOT NULL
      );
      CREATE INDEX web_sessions_user ON web_sessions (user_jid, created_at);
      CREATE INDEX web_sessions_subject ON web_sessions (provider, subject);
      CREATE INDEX web_sessions_expires ON web_sessions (expires_at);
      CREATE TABLE sso_identities (
        host          text NOT NULL,
        issuer        text NOT NULL,
        subject       text NOT NULL,
        user_jid      text NOT NULL,
        provider      text NOT NULL,
        display_name  text,
        groups        text NOT NULL DEFAULT '[]',
        created_at    bigint NOT NULL,
        last_login_at bigint NOT NULL,
        PRIMARY KEY (host, issuer, subject),
        UNIQUE (user_jid, issuer)
      );
    `,
  },
];

// Catch a malformed list at startup rather than half-way through migrating somebody's database.
for (const [i, m] of MIGRATIONS.entries()) {
  if (m.version !== i + 1) throw new Error(`migrations must be numbered 1, 2, 3…: entry ${i} is version ${m.version}`);
}

export const LATEST_SCHEMA_VERSION = MIGRATIONS.length;

/** DDL for the bookkeeping table; the same text works on both backends. */
export const SCHEMA_MIGRATIONS_DDL = `CREATE TABLE IF NOT EXISTS schema_migrations (
  version    INTEGER PRIMARY KEY,
  name       TEXT NOT NULL,
  applied_at BIGINT NOT NULL
)`;

export class SchemaTooNewError extends Error {
  override name = 'SchemaTooNewError';
  constructor(
    readonly databaseVersion: number,
    readonly codeVersion: number,
  ) {
    super(
      `database schema is at version ${databaseVersion}, but this Parley only knows versions up to ` +
        `${codeVersion}: it was written by a newer Parley; upgrade Parley or point it at another database`,
    );
  }
}

/** The migrations still to apply, given the versions already recorded; throws SchemaTooNewError. */
export function pendingMigrations(applied: Iterable<number>): Migration[] {
  const done = new Set<number>();
  for (const v of applied) done.add(Number(v));
  const newest = Math.max(0, ...done);
  if (newest > LATEST_SCHEMA_VERSION) throw new SchemaTooNewError(newest, LATEST_SCHEMA_VERSION);
  return MIGRATIONS.filter((m) => !done.has(m.version));
}
