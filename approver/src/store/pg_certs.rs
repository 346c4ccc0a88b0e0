//! The inventory on PostgreSQL: its writes (run by the writer inside a
//! batch's transaction, each in the batch's savepoint for its operation)
//! and its reads (on the read pool).
//!
//! This module must never write outside the writer's transaction.

use sqlx::Row as _;
use sqlx::postgres::{PgConnection, PgPool, PgRow};

use crate::issued::IssuedRecord;
use crate::store::certs::{
    BACKFILL_DONE, BACKFILL_STATE, CERT_BY_SERIAL, CertColumns, CertFilter, CertWrite,
    CertificateRecord, DELIVERED_TO, HELD_UNEXPIRED, INSERT_DELIVERY, INSERT_ISSUED, LATEST_CRL,
    MARK_JOURNALED, MARK_REFUSED, PUBLISH_CRL, REVOKE, StoredCrl, UNDELIVERED, Undelivered,
    list_query,
};
use crate::store::types::StoreError;

/// Records an issued certificate (inside the issuing update's transaction).
pub(super) async fn insert_issued(
    conn: &mut PgConnection,
    r: &IssuedRecord,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(INSERT_ISSUED)
        .bind(&r.serial)
        .bind(&r.subject)
        .bind(&r.signer_name)
        .bind(&r.requestor)
        .bind(&r.request_name)
        .bind(&r.request_uid)
        .bind(r.not_before)
        .bind(r.not_after)
        .bind(&r.certificate_pem)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}

/// Runs one inventory write; returns the rows it changed.
pub(super) async fn write(conn: &mut PgConnection, w: CertWrite) -> Result<u64, StoreError> {
    let r = match w {
        CertWrite::Issued(r) => return insert_issued(conn, &r).await,
        CertWrite::Revoke {
            serial,
            statement,
            reason,
            at,
        } => {
            sqlx::query(REVOKE)
                .bind(statement)
                .bind(i64::from(reason))
                .bind(at)
                .bind(serial)
                .execute(&mut *conn)
                .await?
        }
        CertWrite::Delivered {
            serial,
            endpoint,
            at,
        } => {
            sqlx::query(INSERT_DELIVERY)
                .bind(&serial)
                .bind(endpoint)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            sqlx::query(MARK_JOURNALED)
                .bind(at)
                .bind(serial)
                .execute(&mut *conn)
                .await?
        }
        CertWrite::Refused {
            serial,
            statement,
            message,
        } => {
            sqlx::query(MARK_REFUSED)
                .bind(message)
                .bind(serial)
                .bind(statement)
                .execute(&mut *conn)
                .await?
        }
        CertWrite::BackfillDone => sqlx::query(BACKFILL_DONE).execute(&mut *conn).await?,
        CertWrite::PublishCrl(c) => {
            sqlx::query(PUBLISH_CRL)
                .bind(c.der)
                .bind(c.number)
                .bind(c.this_update)
                .bind(c.next_update)
                .execute(&mut *conn)
                .await?
        }
    };
    Ok(r.rows_affected())
}

fn columns(r: &PgRow) -> Result<CertColumns, sqlx::Error> {
    Ok(CertColumns {
        serial: r.try_get("serial")?,
        subject: r.try_get("subject")?,
        signer_name: r.try_get("signer_name")?,
        requestor: r.try_get("requestor")?,
        request_name: r.try_get("request_name")?,
        request_uid: r.try_get("request_uid")?,
        not_before: r.try_get("not_before")?,
        not_after: r.try_get("not_after")?,
        certificate: r.try_get("certificate")?,
        rev_state: r.try_get("rev_state")?,
        rev_statement: r.try_get("rev_statement")?,
        rev_reason: r.try_get("rev_reason")?,
        rev_time: r.try_get("rev_time")?,
        rev_refusal: r.try_get("rev_refusal")?,
    })
}

pub(super) async fn certificate(
    pool: &PgPool,
    serial: &str,
) -> Result<Option<CertificateRecord>, StoreError> {
    let row = sqlx::query(CERT_BY_SERIAL)
        .bind(serial)
        .fetch_optional(pool)
        .await?;
    Ok(row
        .as_ref()
        .map(columns)
        .transpose()?
        .map(CertColumns::into_record))
}

pub(super) async fn list(
    pool: &PgPool,
    filter: &CertFilter,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<CertificateRecord>, StoreError> {
    let (sql, binds) = list_query(filter, after, limit);
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for b in binds {
        q = q.bind(b);
    }
    let rows = q.fetch_all(pool).await?;
    Ok(rows
        .iter()
        .map(|r| columns(r).map(CertColumns::into_record))
        .collect::<Result<_, _>>()?)
}

pub(super) async fn undelivered(
    pool: &PgPool,
    endpoint: &str,
    limit: u32,
) -> Result<Vec<Undelivered>, StoreError> {
    let rows = sqlx::query(UNDELIVERED)
        .bind(endpoint)
        .bind(i64::from(limit.max(1)))
        .fetch_all(pool)
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            Ok::<_, sqlx::Error>(Undelivered {
                serial: r.try_get("serial")?,
                statement: r.try_get("rev_statement")?,
                certificate_pem: r.try_get("certificate")?,
            })
        })
        .collect::<Result<_, _>>()?)
}

pub(super) async fn held_unexpired(pool: &PgPool, now: i64) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(HELD_UNEXPIRED)
        .bind(now)
        .fetch_all(pool)
        .await?)
}

pub(super) async fn delivered_to(pool: &PgPool, serial: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(DELIVERED_TO)
        .bind(serial)
        .fetch_all(pool)
        .await?)
}

pub(super) async fn backfill_pending(pool: &PgPool) -> Result<bool, StoreError> {
    let v: Option<i64> = sqlx::query_scalar(BACKFILL_STATE)
        .fetch_optional(pool)
        .await?;
    Ok(v == Some(1))
}

pub(super) async fn latest_crl(pool: &PgPool) -> Result<Option<StoredCrl>, StoreError> {
    let row = sqlx::query(LATEST_CRL).fetch_optional(pool).await?;
    Ok(row
        .map(|r| {
            Ok::<_, sqlx::Error>(StoredCrl {
                der: r.try_get("der")?,
                number: r.try_get("number")?,
                this_update: r.try_get("this_update")?,
                next_update: r.try_get("next_update")?,
            })
        })
        .transpose()?)
}
