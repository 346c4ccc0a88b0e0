//! The inventory's part of the store: issued certificates (which outlive
//! their requests: the cleaner never touches them), the revocations the
//! approver holds with their delivery to each signer endpoint, and the
//! latest published CRL. Types, the writes the group-commit writer runs
//! (`CertWrite`) and the SQL both backends share (`$1`, `$2`, ... placeholders,
//! each first used in numeric order so SQLite numbers them the same way).
//!
//! This module must never run a statement (the backends do) and never
//! decide who may read or revoke what (the inventory and revocation modules
//! do).

use crate::issued::IssuedRecord;

/// Where a held revocation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationState {
    /// Stored; no signer has journaled it yet.
    Pending,
    /// At least one signer endpoint journaled it.
    Journaled,
    /// A signer refused it (its message kept); not retried, not held.
    Refused,
}

impl RevocationState {
    pub(super) fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(RevocationState::Pending),
            "journaled" => Some(RevocationState::Journaled),
            "refused" => Some(RevocationState::Refused),
            _ => None,
        }
    }
}

/// A revocation as the approver stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRevocation {
    pub state: RevocationState,
    /// The encoded `SignedStatement` (a RevocationStatement).
    pub statement: Vec<u8>,
    /// RFC 5280 reason number.
    pub reason: i32,
    /// Unix seconds: when it was stored, then the revocation date of the
    /// first signer that journaled it.
    pub time: i64,
    /// A refusal's message.
    pub refusal: String,
}

impl StoredRevocation {
    /// Whether the approver holds it (stored and not refused): it must be
    /// delivered everywhere and be on every CRL published.
    pub fn held(&self) -> bool {
        self.state != RevocationState::Refused
    }
}

/// One inventory row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    pub issued: IssuedRecord,
    pub revocation: Option<StoredRevocation>,
}

/// ListCertificates' filters (all optional).
#[derive(Debug, Clone, Default)]
pub struct CertFilter {
    pub signer_name: Option<String>,
    pub serial: Option<String>,
    pub request_name: Option<String>,
    pub requestor: Option<String>,
}

/// A held revocation one endpoint has not journaled yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undelivered {
    pub serial: String,
    pub statement: Vec<u8>,
    pub certificate_pem: Vec<u8>,
}

/// A CRL as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCrl {
    pub der: Vec<u8>,
    /// Decimal.
    pub number: String,
    /// Unix seconds.
    pub this_update: i64,
    pub next_update: i64,
}

/// The inventory's writes, run by the store's writer like every write.
#[derive(Debug)]
pub(super) enum CertWrite {
    /// Record an issued certificate (kept if its serial is known).
    Issued(Box<IssuedRecord>),
    /// Store a revocation unless one is held already.
    Revoke {
        serial: String,
        statement: Vec<u8>,
        reason: i32,
        at: i64,
    },
    /// `endpoint` journaled it at `at` (the signer's revocation date).
    Delivered {
        serial: String,
        endpoint: String,
        at: i64,
    },
    /// Every signer answer so far refused it: no longer held.
    Refused {
        serial: String,
        statement: Vec<u8>,
        message: String,
    },
    /// Publish `crl` unless a CRL with a number at least as high is.
    PublishCrl(StoredCrl),
    /// The start-up backfill has recorded every older certificate.
    BackfillDone,
}

/// The inventory's schema (migration 5), SQLite's dialect.
pub(super) const MIGRATION_SQLITE: &[&str] = &[
    "CREATE TABLE certificates (serial TEXT PRIMARY KEY, subject TEXT NOT NULL, signer_name TEXT NOT NULL, requestor TEXT NOT NULL, request_name TEXT NOT NULL, request_uid TEXT NOT NULL, not_before BIGINT NOT NULL, not_after BIGINT NOT NULL, certificate BLOB NOT NULL, rev_state TEXT NOT NULL DEFAULT '', rev_statement BLOB NOT NULL DEFAULT X'', rev_reason BIGINT NOT NULL DEFAULT 0, rev_time BIGINT NOT NULL DEFAULT 0, rev_refusal TEXT NOT NULL DEFAULT '')",
    "CREATE INDEX certificates_requestor ON certificates (requestor, serial)",
    "CREATE INDEX certificates_signer_name ON certificates (signer_name, serial)",
    "CREATE INDEX certificates_request_name ON certificates (request_name, serial)",
    "CREATE INDEX certificates_rev_state ON certificates (rev_state, serial)",
    "CREATE TABLE revocation_deliveries (serial TEXT NOT NULL, endpoint TEXT NOT NULL, at BIGINT NOT NULL, PRIMARY KEY (serial, endpoint))",
    "CREATE TABLE crls (id BIGINT PRIMARY KEY, der BLOB NOT NULL, number TEXT NOT NULL, this_update BIGINT NOT NULL, next_update BIGINT NOT NULL)",
    BACKFILL_PENDING,
];

/// The inventory's schema (migration 5), PostgreSQL's dialect.
pub(super) const MIGRATION_POSTGRES: &[&str] = &[
    "CREATE TABLE certificates (serial TEXT PRIMARY KEY, subject TEXT NOT NULL, signer_name TEXT NOT NULL, requestor TEXT NOT NULL, request_name TEXT NOT NULL, request_uid TEXT NOT NULL, not_before BIGINT NOT NULL, not_after BIGINT NOT NULL, certificate BYTEA NOT NULL, rev_state TEXT NOT NULL DEFAULT '', rev_statement BYTEA NOT NULL DEFAULT '', rev_reason BIGINT NOT NULL DEFAULT 0, rev_time BIGINT NOT NULL DEFAULT 0, rev_refusal TEXT NOT NULL DEFAULT '')",
    "CREATE INDEX certificates_requestor ON certificates (requestor, serial)",
    "CREATE INDEX certificates_signer_name ON certificates (signer_name, serial)",
    "CREATE INDEX certificates_request_name ON certificates (request_name, serial)",
    "CREATE INDEX certificates_rev_state ON certificates (rev_state, serial)",
    "CREATE TABLE revocation_deliveries (serial TEXT NOT NULL, endpoint TEXT NOT NULL, at BIGINT NOT NULL, PRIMARY KEY (serial, endpoint))",
    "CREATE TABLE crls (id BIGINT PRIMARY KEY, der BYTEA NOT NULL, number TEXT NOT NULL, this_update BIGINT NOT NULL, next_update BIGINT NOT NULL)",
    BACKFILL_PENDING,
];

/// Certificates issued before the inventory existed are still to be
/// recorded (1) or have been (0): the start-up backfill runs once.
const BACKFILL_PENDING: &str = "INSERT INTO counters (name, value) VALUES ('inventory_backfill', 1) \
     ON CONFLICT (name) DO UPDATE SET value = 1";

pub(super) const BACKFILL_STATE: &str =
    "SELECT value FROM counters WHERE name = 'inventory_backfill'";

pub(super) const BACKFILL_DONE: &str =
    "UPDATE counters SET value = 0 WHERE name = 'inventory_backfill'";

/// The columns every inventory read selects, in [`CertColumns`]' order.
macro_rules! cert_columns {
    () => {
        "serial, subject, signer_name, requestor, request_name, request_uid, not_before, \
         not_after, certificate, rev_state, rev_statement, rev_reason, rev_time, rev_refusal"
    };
}

pub(super) const INSERT_ISSUED: &str = "INSERT INTO certificates (serial, subject, signer_name, requestor, request_name, request_uid, not_before, not_after, certificate) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (serial) DO NOTHING";

pub(super) const REVOKE: &str = "UPDATE certificates SET rev_state = 'pending', rev_statement = $1, rev_reason = $2, rev_time = $3, rev_refusal = '' \
     WHERE serial = $4 AND rev_state IN ('', 'refused')";

pub(super) const INSERT_DELIVERY: &str = "INSERT INTO revocation_deliveries (serial, endpoint, at) VALUES ($1, $2, $3) \
     ON CONFLICT (serial, endpoint) DO NOTHING";

pub(super) const MARK_JOURNALED: &str = "UPDATE certificates SET rev_state = 'journaled', rev_time = $1 \
     WHERE serial = $2 AND rev_state = 'pending'";

/// Only the statement that was refused: a newer one stored meanwhile
/// (replacing it) stays held.
pub(super) const MARK_REFUSED: &str = "UPDATE certificates SET rev_state = 'refused', rev_refusal = $1 \
     WHERE serial = $2 AND rev_state = 'pending' AND rev_statement = $3";

/// Replaces the published CRL only by one with a higher number (decimal
/// strings: longer is higher, equal lengths compare as text).
pub(super) const PUBLISH_CRL: &str = "INSERT INTO crls (id, der, number, this_update, next_update) VALUES (1, $1, $2, $3, $4) \
     ON CONFLICT (id) DO UPDATE SET der = excluded.der, number = excluded.number, \
     this_update = excluded.this_update, next_update = excluded.next_update \
     WHERE length(crls.number) < length(excluded.number) \
     OR (length(crls.number) = length(excluded.number) AND crls.number < excluded.number)";

pub(super) const LATEST_CRL: &str =
    "SELECT der, number, this_update, next_update FROM crls WHERE id = 1";

pub(super) const CERT_BY_SERIAL: &str = concat!(
    "SELECT ",
    cert_columns!(),
    " FROM certificates WHERE serial = $1"
);

/// Held revocations `$1` (an endpoint) has not journaled, `$2` at most.
pub(super) const UNDELIVERED: &str = "SELECT c.serial, c.rev_statement, c.certificate FROM certificates c \
     WHERE c.rev_state IN ('pending', 'journaled') AND NOT EXISTS \
     (SELECT 1 FROM revocation_deliveries d WHERE d.serial = c.serial AND d.endpoint = $1) \
     ORDER BY c.serial LIMIT $2";

/// Serials of held revocations of certificates unexpired at `$1`.
pub(super) const HELD_UNEXPIRED: &str = "SELECT serial FROM certificates \
     WHERE rev_state IN ('pending', 'journaled') AND not_after > $1 ORDER BY serial";

/// The endpoints that journaled serial `$1`.
pub(super) const DELIVERED_TO: &str =
    "SELECT endpoint FROM revocation_deliveries WHERE serial = $1 ORDER BY endpoint";

/// One page of the inventory ordered by serial, strictly after `after`:
/// SQL and the values of its placeholders in order. Only fixed clauses and
/// numbered placeholders; every value is bound.
pub(super) fn list_query(
    filter: &CertFilter,
    after: Option<&str>,
    limit: u32,
) -> (String, Vec<String>) {
    let mut sql = String::from(concat!(
        "SELECT ",
        cert_columns!(),
        " FROM certificates WHERE 1 = 1"
    ));
    let mut binds: Vec<String> = Vec::new();
    let clauses = [
        ("signer_name", &filter.signer_name),
        ("serial", &filter.serial),
        ("request_name", &filter.request_name),
        ("requestor", &filter.requestor),
    ];
    for (column, value) in clauses {
        if let Some(v) = value {
            binds.push(v.clone());
            sql.push_str(&format!(" AND {column} = ${}", binds.len()));
        }
    }
    if let Some(a) = after {
        binds.push(a.to_string());
        sql.push_str(&format!(" AND serial > ${}", binds.len()));
    }
    sql.push_str(&format!(" ORDER BY serial LIMIT {}", limit.max(1)));
    (sql, binds)
}

/// An inventory row's columns as read (both backends fill it).
pub(super) struct CertColumns {
    pub(super) serial: String,
    pub(super) subject: String,
    pub(super) signer_name: String,
    pub(super) requestor: String,
    pub(super) request_name: String,
    pub(super) request_uid: String,
    pub(super) not_before: i64,
    pub(super) not_after: i64,
    pub(super) certificate: Vec<u8>,
    pub(super) rev_state: String,
    pub(super) rev_statement: Vec<u8>,
    pub(super) rev_reason: i64,
    pub(super) rev_time: i64,
    pub(super) rev_refusal: String,
}

impl CertColumns {
    pub(super) fn into_record(self) -> CertificateRecord {
        let revocation = RevocationState::parse(&self.rev_state).map(|state| StoredRevocation {
            state,
            statement: self.rev_statement,
            reason: i32::try_from(self.rev_reason).unwrap_or(0),
            time: self.rev_time,
            refusal: self.rev_refusal,
        });
        CertificateRecord {
            issued: IssuedRecord {
                serial: self.serial,
                subject: self.subject,
                signer_name: self.signer_name,
                requestor: self.requestor,
                request_name: self.request_name,
                request_uid: self.request_uid,
                not_before: self.not_before,
                not_after: self.not_after,
                certificate_pem: self.certificate,
            },
            revocation,
        }
    }
}
