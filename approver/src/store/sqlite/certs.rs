//! The inventory on SQLite: its writes (run by the writer inside a batch's
//! transaction) and its reads (on the reader connections).
//!
//! This module must never write outside the writer's transaction, and
//! never read on the writer's connection.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension as _, Row, params};

use super::reader::Readers;
use crate::issued::IssuedRecord;
use crate::store::certs::{
    BACKFILL_DONE, BACKFILL_STATE, CERT_BY_SERIAL, CertColumns, CertFilter, CertWrite,
    CertificateRecord, DELIVERED_TO, HELD_UNEXPIRED, INSERT_DELIVERY, INSERT_ISSUED, LATEST_CRL,
    MARK_JOURNALED, MARK_REFUSED, PUBLISH_CRL, REVOKE, StoredCrl, UNDELIVERED, Undelivered,
    list_query,
};
use crate::store::types::StoreError;

/// Records an issued certificate (inside the issuing update's transaction).
pub(super) fn insert_issued(conn: &Connection, r: &IssuedRecord) -> Result<u64, StoreError> {
    let n = conn.prepare_cached(INSERT_ISSUED)?.execute(params![
        r.serial,
        r.subject,
        r.signer_name,
        r.requestor,
        r.request_name,
        r.request_uid,
        r.not_before,
        r.not_after,
        r.certificate_pem,
    ])?;
    Ok(n as u64)
}

/// Runs one inventory write; returns the rows it changed.
pub(super) fn write(conn: &Connection, w: CertWrite) -> Result<u64, StoreError> {
    let n = match w {
        CertWrite::Issued(r) => return insert_issued(conn, &r),
        CertWrite::Revoke {
            serial,
            statement,
            reason,
            at,
        } => conn.prepare_cached(REVOKE)?.execute(params![
            statement,
            i64::from(reason),
            at,
            serial
        ])?,
        CertWrite::Delivered {
            serial,
            endpoint,
            at,
        } => {
            conn.prepare_cached(INSERT_DELIVERY)?
                .execute(params![serial, endpoint, at])?;
            conn.prepare_cached(MARK_JOURNALED)?
                .execute(params![at, serial])?
        }
        CertWrite::Refused {
            serial,
            statement,
            message,
        } => conn
            .prepare_cached(MARK_REFUSED)?
            .execute(params![message, serial, statement])?,
        CertWrite::BackfillDone => conn.prepare_cached(BACKFILL_DONE)?.execute([])?,
        CertWrite::PublishCrl(c) => conn.prepare_cached(PUBLISH_CRL)?.execute(params![
            c.der,
            c.number,
            c.this_update,
            c.next_update
        ])?,
    };
    Ok(n as u64)
}

fn columns(r: &Row<'_>) -> rusqlite::Result<CertColumns> {
    Ok(CertColumns {
        serial: r.get(0)?,
        subject: r.get(1)?,
        signer_name: r.get(2)?,
        requestor: r.get(3)?,
        request_name: r.get(4)?,
        request_uid: r.get(5)?,
        not_before: r.get(6)?,
        not_after: r.get(7)?,
        certificate: r.get(8)?,
        rev_state: r.get(9)?,
        rev_statement: r.get(10)?,
        rev_reason: r.get(11)?,
        rev_time: r.get(12)?,
        rev_refusal: r.get(13)?,
    })
}

impl Readers {
    pub(in crate::store) fn certificate(
        &self,
        serial: &str,
    ) -> Result<Option<CertificateRecord>, StoreError> {
        self.with(|c| {
            Ok(c.prepare_cached(CERT_BY_SERIAL)?
                .query_row(params![serial], columns)
                .optional()?
                .map(CertColumns::into_record))
        })
    }

    pub(in crate::store) async fn list_certificates(
        self: &Arc<Self>,
        filter: CertFilter,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        self.paged(move |r| {
            r.with(|c| {
                let (sql, binds) = list_query(&filter, after.as_deref(), limit);
                let mut stmt = c.prepare(&sql)?;
                let rows = stmt.query_map(rusqlite::params_from_iter(binds.iter()), columns)?;
                let mut out = Vec::new();
                for row in rows {
                    out.push(row?.into_record());
                }
                Ok(out)
            })
        })
        .await
    }

    pub(in crate::store) fn undelivered(
        &self,
        endpoint: &str,
        limit: u32,
    ) -> Result<Vec<Undelivered>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(UNDELIVERED)?;
            let rows = stmt.query_map(params![endpoint, i64::from(limit.max(1))], |r| {
                Ok(Undelivered {
                    serial: r.get(0)?,
                    statement: r.get(1)?,
                    certificate_pem: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub(in crate::store) fn held_unexpired(&self, now: i64) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(HELD_UNEXPIRED)?;
            let rows = stmt.query_map(params![now], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<String>, _>>()?)
        })
    }

    pub(in crate::store) fn delivered_to(&self, serial: &str) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(DELIVERED_TO)?;
            let rows = stmt.query_map(params![serial], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<String>, _>>()?)
        })
    }

    pub(in crate::store) fn backfill_pending(&self) -> Result<bool, StoreError> {
        self.with(|c| {
            let v: Option<i64> = c
                .prepare_cached(BACKFILL_STATE)?
                .query_row([], |r| r.get(0))
                .optional()?;
            Ok(v == Some(1))
        })
    }

    pub(in crate::store) fn latest_crl(&self) -> Result<Option<StoredCrl>, StoreError> {
        self.with(|c| {
            Ok(c.prepare_cached(LATEST_CRL)?
                .query_row([], |r| {
                    Ok(StoredCrl {
                        der: r.get(0)?,
                        number: r.get(1)?,
                        this_update: r.get(2)?,
                        next_update: r.get(3)?,
                    })
                })
                .optional()?)
        })
    }
}
