//! The store tests' shared vocabulary: request objects as the service would
//! hand them to the store, decision inputs, and the two backends (a SQLite
//! file in a temporary directory; a fresh schema in the test PostgreSQL).
//!
//! PostgreSQL comes from `CERTSIGN_TEST_DATABASE_URL` (tests/run.sh starts
//! one). Without it the PostgreSQL tests FAIL, unless `CERTSIGN_SKIP_PG=1`
//! says to skip them. Nothing here talks to a signer or starts a process.

#![allow(clippy::unwrap_used, dead_code)] // each test binary uses a part

use certsign_approver::decision::{self, Actor, DecisionInput};
use certsign_approver::store::{CreateGuard, Store};
use certsign_proto::v1::{CertificateSigningRequest, CertificateSigningRequestSpec, ObjectMeta};

pub const S1: &str = "kubernetes.io/kube-apiserver-client";
pub const S2: &str = "example.com/serving";

/// The uid [`csr`] gives the request `name`.
pub fn uid_of(name: &str) -> String {
    format!("uid-{name}")
}

/// A stored-shape request `name` by `user` for `signer` (the request bytes
/// are an empty PEM block: the store never parses them).
pub fn csr(name: &str, user: &str, signer: &str) -> CertificateSigningRequest {
    CertificateSigningRequest {
        api_version: "certificates.k8s.io/v1".into(),
        kind: "CertificateSigningRequest".into(),
        metadata: Some(ObjectMeta {
            name: name.into(),
            uid: uid_of(name),
            creation_timestamp: Some(decision::now()),
            ..Default::default()
        }),
        spec: Some(CertificateSigningRequestSpec {
            request: b"-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"
                .to_vec(),
            signer_name: signer.into(),
            usages: vec!["client auth".into()],
            username: user.into(),
            ..Default::default()
        }),
        status: Some(Default::default()),
    }
}

/// At most `max` pending requests per requestor, no bootstrap token.
pub fn guard(max: u32) -> CreateGuard {
    CreateGuard {
        max_pending_per_requestor: max,
        token: None,
    }
}

/// A decision by `admin` of group system:masters, no reason or statement.
pub fn by(admin: &str) -> DecisionInput {
    DecisionInput {
        actor: Actor {
            username: admin.into(),
            groups: vec!["system:masters".into()],
        },
        reason: String::new(),
        message: String::new(),
        statement: None,
    }
}

/// The object's resource version as a number.
pub fn rv(c: &CertificateSigningRequest) -> i64 {
    c.metadata
        .as_ref()
        .unwrap()
        .resource_version
        .parse()
        .unwrap()
}

/// A store on a SQLite file in a fresh temporary directory, and its URL.
pub async fn sqlite() -> (Store, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
    (Store::open(&url).await.unwrap(), url, dir)
}

/// The URL of a fresh, empty schema in the test PostgreSQL (no store opened
/// yet), or `None` when explicitly skipped.
pub async fn postgres_url() -> Option<String> {
    let Ok(base) = std::env::var("CERTSIGN_TEST_DATABASE_URL") else {
        if std::env::var("CERTSIGN_SKIP_PG").as_deref() == Ok("1") {
            eprintln!("CERTSIGN_SKIP_PG=1: skipping the PostgreSQL store tests");
            return None;
        }
        panic!(
            "CERTSIGN_TEST_DATABASE_URL is not set: the PostgreSQL store tests need a database \
             (tests/run.sh starts one); set CERTSIGN_SKIP_PG=1 to skip them explicitly"
        );
    };
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options[search_path]={schema}"))
}

/// A store on a fresh PostgreSQL schema and its URL, or `None` when skipped.
pub async fn postgres() -> Option<(Store, String)> {
    let url = postgres_url().await?;
    Some((Store::open(&url).await.unwrap(), url))
}

/// Runs each named suite once on SQLite (module `on_sqlite`) and once on
/// PostgreSQL (`on_postgres`). Suites are `async fn(Store)`, or with
/// `url:` first, `async fn(Store, String)` (the store and its URL).
#[allow(unused_macros)] // watch_resume uses only the backends
macro_rules! both {
    (url: $($name:ident),* $(,)?) => {
        $crate::store_kit::both!(@emit with_url $($name),*);
    };
    ($($name:ident),* $(,)?) => {
        $crate::store_kit::both!(@emit store_only $($name),*);
    };
    (@call with_url $f:path, $store:ident, $url:ident) => { $f($store, $url) };
    (@call store_only $f:path, $store:ident, $url:ident) => { $f($store) };
    (@emit $mode:ident $($name:ident),*) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                #[allow(unused_variables)]
                async fn $name() {
                    let (store, url, _dir) = $crate::store_kit::sqlite().await;
                    $crate::store_kit::both!(@call $mode super::$name, store, url).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                #[allow(unused_variables)]
                async fn $name() {
                    if let Some((store, url)) = $crate::store_kit::postgres().await {
                        $crate::store_kit::both!(@call $mode super::$name, store, url).await;
                    }
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use both;
