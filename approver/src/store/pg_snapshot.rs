//! PostgreSQL's consistent list: the resource-version counter and every
//! page a list reads, in one REPEATABLE READ, READ ONLY transaction (one
//! snapshot), and the pruning watermark.
//!
//! This module must never write.

use sqlx::Row as _;
use sqlx::postgres::PgPool;

use crate::store::schema::{LATEST_RV, PRUNED_THROUGH, list_query};
use crate::store::types::{Keep, ListFilter, ListPage, StoreError, decode_stored};

/// See [`crate::store::Store::list_snapshot`].
pub(super) async fn list(
    pool: &PgPool,
    filter: &ListFilter,
    mut after: Option<String>,
    limit: u32,
    keep: &Keep,
) -> Result<ListPage, StoreError> {
    let want = limit.max(1) as usize;
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let resource_version: i64 = sqlx::query_scalar(LATEST_RV).fetch_one(&mut *tx).await?;
    let mut items = Vec::new();
    loop {
        let (sql, binds) = list_query(filter, after.as_deref(), limit);
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in binds {
            q = q.bind(b);
        }
        let rows = q.fetch_all(&mut *tx).await?;
        let read = rows.len();
        for row in &rows {
            let name: String = row.try_get("name")?;
            let obj = decode_stored(&name, row.try_get("object")?)?;
            after = Some(name);
            if keep(&obj) {
                items.push(obj);
                if items.len() >= want {
                    break;
                }
            }
        }
        if items.len() >= want || read < want {
            break;
        }
    }
    tx.commit().await?;
    Ok(ListPage {
        items,
        resource_version,
    })
}

/// See [`crate::store::Store::pruned_through`].
pub(super) async fn pruned_through(pool: &PgPool) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(PRUNED_THROUGH).fetch_one(pool).await?)
}
