//! Scale: an approver holding N (default 1,000,000) requests. The store
//! (its SQLite file, or a PostgreSQL database with `--database-url`) is
//! filled directly with bulk SQL (setup, not a measured write: SQLite's
//! `synchronous = OFF`, PostgreSQL's `synchronous_commit = off` while
//! filling), then the real approver starts on it and is measured: start-up time, resident memory, and the latency of
//! filtered, paged lists and of gets over real mTLS.
//!
//! It must never fill a store the approver could not have written itself:
//! objects are real encoded `CertificateSigningRequest`s with the same
//! indexed columns (`state_of`, `condition_column`) the store computes.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use certsign_approver::decision::{condition_column, state_of};
use certsign_approver::store::Store;
use certsign_proto::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestSpec,
    CertificateSigningRequestStatus, GetCertificateSigningRequestRequest,
    ListCertificateSigningRequestsRequest, ObjectMeta,
};
use certsign_tests::grpc::{self, Ident};
use prost::Message as _;
use rusqlite::types::Value;

use crate::stats::Summary;

/// Distinct requestors in the synthetic population.
const REQUESTORS: usize = 10_000;

const SIGNERS: [&str; 3] = [
    "kubernetes.io/kube-apiserver-client",
    "kubernetes.io/kube-apiserver-client-kubelet",
    "kubernetes.io/kubelet-serving",
];

/// Request `i` of the synthetic population: 10% pending, 45% denied,
/// 45% approved and issued; 10,000 requestors; the three built-in signers.
pub fn object(i: usize, csr_pem: &[u8], cert_pem: &[u8], now: i64) -> CertificateSigningRequest {
    let ts = Some(prost_types::Timestamp {
        seconds: now,
        nanos: 0,
    });
    let cond = |t: &str| CertificateSigningRequestCondition {
        r#type: t.into(),
        status: "True".into(),
        reason: format!("Bench{t}"),
        message: String::new(),
        last_update_time: ts,
        last_transition_time: ts,
    };
    let (conditions, certificate) = match i % 20 {
        0 | 1 => (vec![], vec![]),
        k if k % 2 == 0 => (vec![cond("Denied")], vec![]),
        _ => (vec![cond("Approved")], cert_pem.to_vec()),
    };
    CertificateSigningRequest {
        api_version: "certificates.k8s.io/v1".into(),
        kind: "CertificateSigningRequest".into(),
        metadata: Some(ObjectMeta {
            name: format!("csr-{i:08}"),
            uid: format!("00000000-0000-4000-8000-{i:012}"),
            resource_version: (i + 1).to_string(),
            creation_timestamp: ts,
            ..Default::default()
        }),
        spec: Some(CertificateSigningRequestSpec {
            request: csr_pem.to_vec(),
            signer_name: SIGNERS[i % 3].into(),
            usages: vec!["digital signature".into(), "client auth".into()],
            username: format!("user-{}", i % REQUESTORS),
            expiration_seconds: Some(86_400),
            ..Default::default()
        }),
        status: Some(CertificateSigningRequestStatus {
            conditions,
            certificate,
            ..Default::default()
        }),
    }
}

/// Fills the store at `url` (created by the approver's own migrations)
/// with `n` requests.
pub async fn populate(url: &str, n: usize, csr_pem: &[u8], cert_pem: &[u8]) -> anyhow::Result<()> {
    Store::open(url).await?.close().await;
    let rest = url.strip_prefix("sqlite://").unwrap_or(url);
    let path = rest.split_once('?').map_or(rest, |(p, _)| p);
    let mut conn = rusqlite::Connection::open(path)?;
    conn.execute_batch("PRAGMA synchronous = OFF")?;
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    const BATCH: usize = 80; // 11 parameters per row: 880 per statement (limit 32766)
    // The store's indexed `expires` column, as the approver computes it.
    let issued_expiry =
        certsign_approver::cleaner::expiry_column(&object(1, csr_pem, cert_pem, now));
    let mut tx = conn.transaction()?;
    let mut i = 0;
    while i < n {
        let rows = BATCH.min(n - i);
        let mut sql = String::from(
            "INSERT INTO csrs (name, uid, signer_name, username, state, cond, created, resource_version, next_attempt, attempts, renewal, expires) VALUES ",
        );
        // Each object is stored once, as its version's event (as the
        // approver's writer does).
        let mut events = String::from(
            "INSERT INTO csr_events (resource_version, event_type, name, created, object) VALUES ",
        );
        for r in 0..rows {
            if r > 0 {
                sql.push(',');
                events.push(',');
            }
            sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?)");
            events.push_str("(?, 'ADDED', ?, ?, ?)");
        }
        let mut q: Vec<Value> = Vec::with_capacity(rows * 10);
        let mut ev: Vec<Value> = Vec::with_capacity(rows * 4);
        for k in i..i + rows {
            let o = object(k, csr_pem, cert_pem, now);
            let (meta, spec) = (
                o.metadata.clone().unwrap_or_default(),
                o.spec.clone().unwrap_or_default(),
            );
            let rv = i64::try_from(k + 1)?;
            ev.extend([
                Value::Integer(rv),
                Value::Text(meta.name.clone()),
                Value::Integer(now),
                Value::Blob(o.encode_to_vec()),
            ]);
            q.extend([
                Value::Text(meta.name),
                Value::Text(meta.uid),
                Value::Text(spec.signer_name),
                Value::Text(spec.username),
                Value::Text(state_of(&o).as_str().to_string()),
                Value::Text(condition_column(&o)),
                Value::Integer(now),
                Value::Integer(rv),
                Value::Blob(Vec::new()),
                // The same certificate in every issued row: parsed once.
                Value::Integer(
                    if o.status.as_ref().is_some_and(|s| !s.certificate.is_empty()) {
                        issued_expiry
                    } else {
                        0
                    },
                ),
            ]);
        }
        tx.execute(&sql, rusqlite::params_from_iter(q))?;
        tx.execute(&events, rusqlite::params_from_iter(ev))?;
        i += rows;
        if i % 100_000 == 0 {
            tx.commit()?;
            tx = conn.transaction()?;
            eprintln!("  {i} rows");
        }
    }
    tx.execute(
        "UPDATE counters SET value = ?1 WHERE name = 'resource_version'",
        [i64::try_from(n)?],
    )?;
    tx.commit()?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); ANALYZE")?;
    conn.close().map_err(|(_, e)| e)?;
    Ok(())
}

/// The columns of the `csrs` rows and `csr_events` rows of requests
/// `from..to`, one vector per column (PostgreSQL binds each as an array).
#[derive(Default)]
struct Columns {
    names: Vec<String>,
    uids: Vec<String>,
    signers: Vec<String>,
    users: Vec<String>,
    states: Vec<&'static str>,
    conds: Vec<String>,
    rvs: Vec<i64>,
    expires: Vec<i64>,
    objects: Vec<Vec<u8>>,
}

impl Columns {
    fn of(range: std::ops::Range<usize>, pems: (&[u8], &[u8]), now: i64, expiry: i64) -> Self {
        let mut c = Columns::default();
        for k in range {
            let o = object(k, pems.0, pems.1, now);
            let (meta, spec) = (
                o.metadata.clone().unwrap_or_default(),
                o.spec.clone().unwrap_or_default(),
            );
            let issued = o.status.as_ref().is_some_and(|s| !s.certificate.is_empty());
            c.names.push(meta.name);
            c.uids.push(meta.uid);
            c.signers.push(spec.signer_name);
            c.users.push(spec.username);
            c.states.push(state_of(&o).as_str());
            c.conds.push(condition_column(&o));
            c.rvs.push(i64::try_from(k + 1).unwrap_or(i64::MAX));
            c.expires.push(if issued { expiry } else { 0 });
            c.objects.push(o.encode_to_vec());
        }
        c
    }
}

/// Fills the PostgreSQL store at `url` (created by the approver's own
/// migrations) with `n` requests, unless it holds some already (a kept
/// store is reused).
pub async fn populate_postgres(
    url: &str,
    n: usize,
    csr_pem: &[u8],
    cert_pem: &[u8],
) -> anyhow::Result<bool> {
    use sqlx::Connection as _;
    Store::open(url).await?.close().await;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM csrs")
        .fetch_one(&mut conn)
        .await?;
    if held > 0 {
        conn.close().await?;
        return Ok(false);
    }
    sqlx::raw_sql("SET synchronous_commit = off")
        .execute(&mut conn)
        .await?;
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    let expiry = certsign_approver::cleaner::expiry_column(&object(1, csr_pem, cert_pem, now));
    const BATCH: usize = 5000;
    let mut i = 0;
    while i < n {
        let rows = BATCH.min(n - i);
        let c = Columns::of(i..i + rows, (csr_pem, cert_pem), now, expiry);
        let mut tx = conn.begin().await?;
        sqlx::query(
            "INSERT INTO csrs (name, uid, signer_name, username, state, cond, created, \
             resource_version, next_attempt, attempts, renewal, expires) \
             SELECT n, u, s, us, st, c, $7, rv, 0, 0, ''::bytea, e FROM UNNEST($1::text[], \
             $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $8::int8[], $9::int8[]) \
             AS t(n, u, s, us, st, c, rv, e)",
        )
        .bind(&c.names)
        .bind(&c.uids)
        .bind(&c.signers)
        .bind(&c.users)
        .bind(&c.states)
        .bind(&c.conds)
        .bind(now)
        .bind(&c.rvs)
        .bind(&c.expires)
        .execute(&mut *tx)
        .await?;
        // Each object is stored once, as its version's event (as the
        // approver's writer does).
        sqlx::query(
            "INSERT INTO csr_events (resource_version, event_type, name, created, object) \
             SELECT rv, 'ADDED', n, $3, o FROM UNNEST($1::int8[], $2::text[], $4::bytea[]) \
             AS t(rv, n, o)",
        )
        .bind(&c.rvs)
        .bind(&c.names)
        .bind(now)
        .bind(&c.objects)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        i += rows;
        if i % 100_000 == 0 {
            eprintln!("  {i} rows");
        }
    }
    sqlx::query("UPDATE counters SET value = $1 WHERE name = 'resource_version'")
        .bind(i64::try_from(n)?)
        .execute(&mut conn)
        .await?;
    // One statement per call: VACUUM cannot run in the implicit
    // transaction of a multi-statement query.
    for table in ["VACUUM ANALYZE csrs", "VACUUM ANALYZE csr_events"] {
        sqlx::raw_sql(table).execute(&mut conn).await?;
    }
    conn.close().await?;
    Ok(true)
}

/// The size of the database at `url`, in MiB.
async fn postgres_mib(url: &str) -> anyhow::Result<f64> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let bytes: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(bytes as f64 / (1u64 << 20) as f64)
}

/// (VmRSS, VmHWM) of `pid` in MiB.
pub fn memory_mib(pid: u32) -> (f64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        s.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

/// The whole scale run (on the approver's SQLite file, or on the
/// PostgreSQL database at `database_url`); returns a Markdown report.
pub async fn scale(
    n: usize,
    calls: usize,
    keep: Option<&Path>,
    database_url: Option<&str>,
) -> anyhow::Result<String> {
    let tmp = crate::versus::tempfile_dir()?;
    let dir = keep
        .map(Path::to_path_buf)
        .unwrap_or_else(|| tmp.join("ca"));
    let db = dir.join("approver/approver.db");
    if !dir.join("ca.crt").exists() {
        crate::issue::init(&dir, "ecdsa-p256")?;
    }
    let (_, csr_pem) = grpc::csr("bench-client", &["bench"]);
    let cert = std::fs::read(dir.join("approver/tls.crt"))?;
    let t = Instant::now();
    let filled = match database_url {
        Some(url) => populate_postgres(url, n, &csr_pem, &cert).await?,
        None if !db.exists() => {
            let url = format!("sqlite://{}?mode=rwc", db.display());
            populate(&url, n, &csr_pem, &cert).await?;
            true
        }
        None => false,
    };
    if filled {
        println!(
            "populated {n} requests in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let size = match database_url {
        Some(url) => postgres_mib(url).await?,
        None => std::fs::metadata(&db)?.len() as f64 / (1u64 << 20) as f64,
    };
    let toml = dir.join("approver/approver.toml");
    certsign_tests::edit_toml(&toml, |t| {
        t.insert("listen".into(), "127.0.0.1:0".into());
        match database_url {
            Some(url) => t.insert("database_url".into(), url.into()),
            None => t.remove("database_url"),
        };
        let mut limits = toml::Table::new();
        // The bench is one admin asking fast; the default per-identity
        // rate limit (50/s) would measure the limiter, not the store.
        limits.insert("requests_per_second".into(), 1_000_000.into());
        t.insert("limits".into(), limits.into());
    });
    println!("# {}", crate::machine_note());
    let t = Instant::now();
    let approver = certsign_tests::Daemon::start(
        &crate::bin("certsign-approver")?,
        &["serve", "--config", &toml.to_string_lossy()],
        &dir.join("approver.log"),
    );
    let startup = t.elapsed();
    let (rss0, _) = memory_mib(approver.pid());
    let ca_pem = std::fs::read_to_string(dir.join("ca.crt"))?;
    let admin = Ident::load(&dir.join("admin/admin.crt"), &dir.join("admin/admin.key"));
    let mut client = certsign_proto::v1::approver_client::ApproverClient::new(grpc::channel(
        &approver.addr,
        &ca_pem,
        Some(&admin),
    ))
    .max_decoding_message_size(64 << 20);
    let mut report = format!(
        "requests: {n}; {} database {size:.0} MiB; approver start-up (spawn to listening) {:.0} ms; RSS after start {rss0:.0} MiB\n\n| call | calls | p50 ms | p99 ms | p99.9 ms |\n|---|---|---|---|---|\n",
        if database_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        startup.as_secs_f64() * 1000.0
    );
    // Request i belongs to user-(i % REQUESTORS): with a million requests
    // user-4242 has 100; a smaller store measures a user it does have.
    let user = 4242 % n.clamp(1, REQUESTORS);
    let user_objects = n.saturating_sub(user).div_ceil(REQUESTORS);
    let filters: [(String, ListCertificateSigningRequestsRequest); 3] = [
        (
            "list condition=Pending, limit 100, paging on".into(),
            ListCertificateSigningRequestsRequest {
                condition: "Pending".into(),
                limit: 100,
                ..Default::default()
            },
        ),
        (
            "list signerName=kubelet-serving, limit 500, paging on".into(),
            ListCertificateSigningRequestsRequest {
                signer_name: SIGNERS[2].into(),
                limit: 500,
                ..Default::default()
            },
        ),
        (
            format!("list username=user-{user} ({user_objects} objects), limit 50, paging on"),
            ListCertificateSigningRequestsRequest {
                username: format!("user-{user}"),
                limit: 50,
                ..Default::default()
            },
        ),
    ];
    for (label, first) in filters {
        let mut lat = Vec::with_capacity(calls);
        let mut req = first.clone();
        let (mut errors, mut err) = (0, None);
        let t0 = Instant::now();
        for _ in 0..calls {
            let t = Instant::now();
            match client.list_certificate_signing_requests(req.clone()).await {
                Ok(r) => {
                    lat.push(t.elapsed());
                    let r = r.into_inner();
                    anyhow::ensure!(!r.items.is_empty(), "{label}: empty page");
                    req.continue_token = r.continue_token;
                    if req.continue_token.is_empty() {
                        req = first.clone();
                    }
                }
                Err(e) => {
                    errors += 1;
                    err.get_or_insert(e.to_string());
                }
            }
        }
        let s = Summary::new(lat, errors, t0.elapsed(), err);
        println!("{label}: {}", s.line());
        report.push_str(&format!(
            "| {label} | {} | {:.2} | {:.2} | {:.2} |\n",
            s.ok,
            s.ms(50.0),
            s.ms(99.0),
            s.ms(99.9)
        ));
    }
    let mut lat = Vec::with_capacity(calls);
    let (mut errors, mut err) = (0, None);
    let t0 = Instant::now();
    for k in 0..calls {
        // A spread of names over the whole key space.
        let i = (k * 7_919_993) % n;
        let t = Instant::now();
        match client
            .get_certificate_signing_request(GetCertificateSigningRequestRequest {
                name: format!("csr-{i:08}"),
            })
            .await
        {
            Ok(_) => lat.push(t.elapsed()),
            Err(e) => {
                errors += 1;
                err.get_or_insert(e.to_string());
            }
        }
    }
    let s = Summary::new(lat, errors, t0.elapsed(), err);
    println!("get: {}", s.line());
    report.push_str(&format!(
        "| get (random names) | {} | {:.2} | {:.2} | {:.2} |\n",
        s.ok,
        s.ms(50.0),
        s.ms(99.0),
        s.ms(99.9)
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (rss, hwm) = memory_mib(approver.pid());
    report.push_str(&format!(
        "\nresident memory after the calls: {rss:.0} MiB (peak {hwm:.0} MiB)\n"
    ));
    println!("# {}", crate::machine_note());
    drop(approver);
    // With --keep the store lives in the kept directory and `tmp` is
    // empty: removed either way.
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(report)
}
