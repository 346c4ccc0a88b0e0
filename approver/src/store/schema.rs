//! The schema: its migrations for each backend, and the SQL both backends
//! share (an object read through its current event, event pruning, token
//! counting, the forwarding time, list and page queries). Placeholders are
//! `$1`, `$2`, ...: PostgreSQL's own, and numbered parameters to SQLite.
//!
//! This module must never run a statement; the backends do.

use super::types::{ListFilter, PageBy};

/// One schema version, in each backend's dialect.
pub(super) struct Migration {
    pub(super) version: i64,
    pub(super) sqlite: &'static [&'static str],
    pub(super) postgres: &'static [&'static str],
}

/// Every schema version, in order.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: &[
            "CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
            "INSERT INTO counters (name, value) VALUES ('resource_version', 0)",
            "CREATE TABLE csrs (name TEXT PRIMARY KEY, uid TEXT NOT NULL UNIQUE, signer_name TEXT NOT NULL, username TEXT NOT NULL, state TEXT NOT NULL, cond TEXT NOT NULL, created BIGINT NOT NULL, resource_version BIGINT NOT NULL, next_attempt BIGINT NOT NULL DEFAULT 0, attempts BIGINT NOT NULL DEFAULT 0, object BLOB NOT NULL, renewal BLOB NOT NULL)",
            "CREATE INDEX csrs_state ON csrs (state, next_attempt)",
            "CREATE INDEX csrs_username ON csrs (username, state)",
            "CREATE INDEX csrs_signer ON csrs (signer_name)",
            "CREATE TABLE csr_events (resource_version BIGINT PRIMARY KEY, event_type TEXT NOT NULL, name TEXT NOT NULL, created BIGINT NOT NULL, object BLOB NOT NULL)",
            "CREATE TABLE bootstrap_token_uses (id TEXT PRIMARY KEY, uses BIGINT NOT NULL)",
        ],
        postgres: &[
            "CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
            "INSERT INTO counters (name, value) VALUES ('resource_version', 0)",
            "CREATE TABLE csrs (name TEXT PRIMARY KEY, uid TEXT NOT NULL UNIQUE, signer_name TEXT NOT NULL, username TEXT NOT NULL, state TEXT NOT NULL, cond TEXT NOT NULL, created BIGINT NOT NULL, resource_version BIGINT NOT NULL, next_attempt BIGINT NOT NULL DEFAULT 0, attempts BIGINT NOT NULL DEFAULT 0, object BYTEA NOT NULL, renewal BYTEA NOT NULL)",
            "CREATE INDEX csrs_state ON csrs (state, next_attempt)",
            "CREATE INDEX csrs_username ON csrs (username, state)",
            "CREATE INDEX csrs_signer ON csrs (signer_name)",
            "CREATE TABLE csr_events (resource_version BIGINT PRIMARY KEY, event_type TEXT NOT NULL, name TEXT NOT NULL, created BIGINT NOT NULL, object BYTEA NOT NULL)",
            "CREATE TABLE bootstrap_token_uses (id TEXT PRIMARY KEY, uses BIGINT NOT NULL)",
        ],
    },
    // Forwarding leases apart from the backoff schedule, so that making the
    // queue due never voids a lease another worker or replica holds.
    Migration {
        version: 2,
        sqlite: &[
            "ALTER TABLE csrs ADD COLUMN lease_owner TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE csrs ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0",
        ],
        postgres: &[
            "ALTER TABLE csrs ADD COLUMN lease_owner TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE csrs ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0",
        ],
    },
    // The cleaner reads only candidates, by indexed ranges, instead of
    // every row: per state by creation time, and issued requests by their
    // certificate's expiry (`expires`: notAfter in unix seconds; 0 = no
    // readable certificate; -1 = not computed yet, rows written before
    // this version). A signer-name list reads its page straight from an
    // index in name order instead of filtering the name-ordered table.
    Migration {
        version: 3,
        sqlite: &[
            "ALTER TABLE csrs ADD COLUMN expires BIGINT NOT NULL DEFAULT -1",
            "CREATE INDEX csrs_state_created ON csrs (state, created, name)",
            "CREATE INDEX csrs_state_expires ON csrs (state, expires, name)",
            "CREATE INDEX csrs_signer_name ON csrs (signer_name, name)",
            "DROP INDEX csrs_signer",
        ],
        postgres: &[
            "ALTER TABLE csrs ADD COLUMN expires BIGINT NOT NULL DEFAULT -1",
            "CREATE INDEX csrs_state_created ON csrs (state, created, name)",
            "CREATE INDEX csrs_state_expires ON csrs (state, expires, name)",
            "CREATE INDEX csrs_signer_name ON csrs (signer_name, name)",
            "DROP INDEX csrs_signer",
        ],
    },
    // Objects live only in `csr_events` (see the module header): the
    // current object of every row whose event was pruned is put back as
    // that version's event, then the row's copy is dropped. SQLite also
    // rebuilds `csr_events` keyed by its rowid (`INTEGER PRIMARY KEY`), so
    // reading an object by version is one B-tree lookup, not two.
    Migration {
        version: 4,
        sqlite: &[
            "CREATE TABLE csr_events_v4 (resource_version INTEGER PRIMARY KEY, event_type TEXT NOT NULL, name TEXT NOT NULL, created BIGINT NOT NULL, object BLOB NOT NULL)",
            "INSERT INTO csr_events_v4 (resource_version, event_type, name, created, object) \
             SELECT resource_version, event_type, name, created, object FROM csr_events",
            "INSERT INTO csr_events_v4 (resource_version, event_type, name, created, object) \
             SELECT resource_version, 'MODIFIED', name, created, object FROM csrs \
             WHERE resource_version NOT IN (SELECT resource_version FROM csr_events_v4)",
            "DROP TABLE csr_events",
            "ALTER TABLE csr_events_v4 RENAME TO csr_events",
            "ALTER TABLE csrs DROP COLUMN object",
        ],
        postgres: &[
            "INSERT INTO csr_events (resource_version, event_type, name, created, object) \
             SELECT c.resource_version, 'MODIFIED', c.name, c.created, c.object FROM csrs c \
             WHERE NOT EXISTS (SELECT 1 FROM csr_events e WHERE e.resource_version = c.resource_version)",
            "ALTER TABLE csrs DROP COLUMN object",
        ],
    },
    // The inventory of issued certificates, the revocations held and their
    // delivery to each signer endpoint, the published CRL (`certs`).
    // Certificates issued before this version are recorded at start-up
    // from the requests still stored (`Store::backfill_inventory`).
    Migration {
        version: 5,
        sqlite: super::certs::MIGRATION_SQLITE,
        postgres: super::certs::MIGRATION_POSTGRES,
    },
    // PostgreSQL: statistics on the expression a condition filter matches
    // (`list_query`), so the planner knows how many rows a condition has.
    // Without them it guessed 0.01 % and read the first page of a list by
    // condition with a scan of the whole table and a sort (262 ms at
    // 1,000,000 requests) instead of walking the name index.
    Migration {
        version: 6,
        sqlite: &[],
        postgres: &[
            "CREATE STATISTICS IF NOT EXISTS csrs_cond_list ON ((',' || cond || ',')) FROM csrs",
            "ANALYZE csrs",
        ],
    },
    // The newest resource version pruning removed (`prune_watermark!`), so
    // a watch resumed from an older version is told its events are gone
    // instead of silently missing them. Stores pruned before this version
    // cannot say what they removed: every version handed out so far counts
    // as pruned (a resume from one of them lists again).
    Migration {
        version: 7,
        sqlite: &[
            "INSERT INTO counters (name, value) SELECT 'pruned_through', value FROM counters WHERE name = 'resource_version'",
        ],
        postgres: &[
            "INSERT INTO counters (name, value) SELECT 'pruned_through', value FROM counters WHERE name = 'resource_version'",
        ],
    },
];

/// The encoded object of a `csrs` row, as an SQL expression over the row:
/// its current version's event (see the module header). NULL only if that
/// event is missing, which the backends report as corruption.
macro_rules! object_of_row {
    () => {
        "(SELECT csr_events.object FROM csr_events \
         WHERE csr_events.resource_version = csrs.resource_version)"
    };
}
pub(super) use object_of_row;

/// Deletes events older than `?1`/`$1` except those a row still reads its
/// object from (both backends; the placeholder is the argument).
macro_rules! prune_events {
    ($p:literal) => {
        concat!(
            "DELETE FROM csr_events WHERE created < ",
            $p,
            " AND NOT EXISTS (SELECT 1 FROM csrs WHERE csrs.name = csr_events.name \
             AND csrs.resource_version = csr_events.resource_version)"
        )
    };
}
pub(super) use prune_events;

/// Records the newest version the matching `prune_events!` (same
/// placeholder) is about to delete, in the same transaction, before it.
macro_rules! prune_watermark {
    ($p:literal) => {
        concat!(
            "UPDATE counters SET value = COALESCE((SELECT MAX(csr_events.resource_version) \
             FROM csr_events WHERE csr_events.resource_version > counters.value \
             AND csr_events.created < ",
            $p,
            " AND NOT EXISTS (SELECT 1 FROM csrs WHERE csrs.name = csr_events.name \
             AND csrs.resource_version = csr_events.resource_version)), counters.value) \
             WHERE counters.name = 'pruned_through'"
        )
    };
}
pub(super) use prune_watermark;

/// Counts a bootstrap token's use only while it is under its limit: `$1`
/// the token id, `$2` the limit (`?1`/`?2` on SQLite).
macro_rules! count_token_use {
    ($p:literal) => {
        concat!(
            "INSERT INTO bootstrap_token_uses (id, uses) VALUES (",
            $p,
            "1, 1) ON CONFLICT (id) DO UPDATE SET uses = bootstrap_token_uses.uses + 1 \
             WHERE bootstrap_token_uses.uses < ",
            $p,
            "2"
        )
    };
}
pub(super) use count_token_use;

/// The PostgreSQL notification channel every write transaction signals.
macro_rules! change_channel {
    () => {
        "certsign_csr_events"
    };
}
pub(super) const CHANGE_CHANNEL: &str = change_channel!();
pub(super) use change_channel;

/// The earliest time an approved request becomes claimable (both backends).
pub(super) const NEXT_FORWARD_TIME: &str = "SELECT MIN(CASE WHEN lease_until > next_attempt THEN lease_until ELSE next_attempt END) \
     FROM csrs WHERE state = 'approved'";

/// The statement that creates the migrations' own bookkeeping table.
pub(super) const SCHEMA_MIGRATIONS: &str =
    "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)";

/// One row's object by name.
pub(super) const OBJECT_BY_NAME: &str =
    concat!("SELECT ", object_of_row!(), " FROM csrs WHERE name = $1");

/// One row's object and resource version by name (a delete's read).
pub(super) const OBJECT_AND_RV_BY_NAME: &str = concat!(
    "SELECT ",
    object_of_row!(),
    ", resource_version FROM csrs WHERE name = $1"
);

/// The events after a resource version, oldest first: `$1` the version,
/// `$2` the limit.
pub(super) const EVENTS_AFTER: &str = "SELECT resource_version, event_type, name, object \
     FROM csr_events WHERE resource_version > $1 ORDER BY resource_version LIMIT $2";

/// The newest resource version handed out.
pub(super) const LATEST_RV: &str = "SELECT value FROM counters WHERE name = 'resource_version'";

/// The newest resource version pruning removed (0: none).
pub(super) const PRUNED_THROUGH: &str =
    "SELECT COALESCE(MAX(value), 0) FROM counters WHERE name = 'pruned_through'";
/// Requests per state and signer name (the metrics' gauges).
pub(super) const COUNT_BY_STATE: &str =
    "SELECT state, signer_name, COUNT(*) FROM csrs GROUP BY state, signer_name";

/// Pending requests of one requestor (`$1`).
pub(super) const COUNT_PENDING: &str =
    "SELECT COUNT(*) FROM csrs WHERE username = $1 AND state = 'pending'";

/// The renewal statement of one row (`$1`).
pub(super) const RENEWAL_BY_NAME: &str = "SELECT renewal FROM csrs WHERE name = $1";

/// One page of a list: SQL selecting the name, then the object, ordered by
/// name, and the values of its `$1`, `$2`, ... in order. Built only from
/// fixed clauses and numbered placeholders; every value is bound, never
/// interpolated.
pub(super) fn list_query(
    filter: &ListFilter,
    after: Option<&str>,
    limit: u32,
) -> (String, Vec<String>) {
    let mut sql = String::from(concat!(
        "SELECT name, ",
        object_of_row!(),
        " AS object FROM csrs WHERE 1 = 1"
    ));
    let mut binds: Vec<String> = Vec::new();
    let mut add = |clause: &str, v: String, binds: &mut Vec<String>| {
        binds.push(v);
        sql.push_str(&clause.replace("$?", &format!("${}", binds.len())));
    };
    if let Some(s) = &filter.signer_name {
        add(" AND signer_name = $?", s.clone(), &mut binds);
    }
    if let Some(u) = &filter.username {
        add(" AND username = $?", u.clone(), &mut binds);
    }
    if let Some(c) = &filter.condition {
        if c.contains(',') {
            add(" AND cond = $?", c.clone(), &mut binds);
        } else {
            add(
                " AND (',' || cond || ',') LIKE $?",
                format!("%,{c},%"),
                &mut binds,
            );
        }
    }
    if let Some(a) = after {
        add(" AND name > $?", a.to_string(), &mut binds);
    }
    sql.push_str(&format!(" ORDER BY name LIMIT {}", limit.max(1)));
    (sql, binds)
}

/// One cleaner page: SQL selecting the name, the `by` column as `k` and
/// the object, for `$1` the state, `$2..$3` the range and `($4, $5)` the
/// key after which the page starts. Only a fixed column name and an
/// integer are formatted in.
pub(super) fn page_query(by: PageBy, limit: u32) -> String {
    let column = by.column();
    format!(
        "SELECT name, {column} AS k, {object} AS object FROM csrs WHERE state = $1 \
         AND {column} >= $2 AND {column} < $3 \
         AND ({column}, name) > ($4, $5) ORDER BY {column}, name LIMIT {}",
        limit.max(1),
        object = object_of_row!(),
    )
}
