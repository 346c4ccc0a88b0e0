//! The pipeline: create → approve (a signed admin statement) → issued,
//! through the real approver (SQLite or PostgreSQL) and the real signer,
//! many requests in flight. Measures issued certificates per second and
//! the time from create to issued.
//!
//! With `replicas` > 1 (PostgreSQL only) that many approvers share the
//! database: request `w` is created on replica `w mod N` and approved on
//! the next one, and issuance is watched on replica 0 only, so most events
//! reach the watch from another replica through the database.
//!
//! Issuance is observed on one admin Watch stream; a request whose event
//! has not arrived within 250 ms is checked with a Get, so a lagging watch
//! can slow the count but never fake it. It must never count a request as
//! issued without seeing its certificate.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certsign_proto::v1::approver_client::ApproverClient;
use certsign_proto::v1::{
    GetCertificateSigningRequestRequest, WatchCertificateSigningRequestsRequest,
};
use certsign_tests::Daemon;
use certsign_tests::grpc::{self, Ident, MintSpec};
use tokio::sync::oneshot;
use tonic::transport::Channel;

use crate::cpu::{Processes, Split};
use crate::stats::Summary;

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>;

/// Pipeline options.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// `database_url` for the approver (None: its SQLite default).
    pub database_url: Option<String>,
    /// Requests in flight.
    pub concurrency: usize,
    /// Connections per client identity.
    pub connections: usize,
    /// Seconds to run.
    pub secs: f64,
    /// Approver replicas sharing `database_url` (1: just the one).
    pub replicas: usize,
}

/// Starts `n - 1` more approvers next to the first: copies of its
/// approver.toml (same database, same signer) on their own ports.
pub fn start_more_replicas(dir: &Path, n: usize) -> anyhow::Result<Vec<Daemon>> {
    let mut out = Vec::new();
    for i in 1..n {
        let toml = dir.join(format!("approver/replica{i}.toml"));
        std::fs::copy(dir.join("approver/approver.toml"), &toml)?;
        certsign_tests::edit_toml(&toml, |t| {
            t.insert("listen".into(), "127.0.0.1:0".into());
        });
        out.push(Daemon::start(
            &crate::bin("certsign-approver")?,
            &["serve", "--config", &toml.to_string_lossy()],
            &dir.join(format!("approver{i}.log")),
        ));
    }
    Ok(out)
}

/// init + signer + approver on loopback ports, rate limits opened.
pub fn start_stack(dir: &Path, database_url: Option<&str>) -> anyhow::Result<(Daemon, Daemon)> {
    crate::issue::init(dir, "ecdsa-p256")?;
    let signer_toml = dir.join("signer/signer.toml");
    certsign_tests::edit_toml(&signer_toml, |t| {
        t.insert("listen".into(), "127.0.0.1:0".into());
    });
    let signer = Daemon::start(
        &crate::bin("certsign-signer")?,
        &["serve", "--config", &signer_toml.to_string_lossy()],
        &dir.join("signer.log"),
    );
    let approver_toml = dir.join("approver/approver.toml");
    let endpoint = format!("https://{}", signer.addr);
    certsign_tests::edit_toml(&approver_toml, |t| {
        t.insert("listen".into(), "127.0.0.1:0".into());
        if let Some(s) = t.get_mut("signer").and_then(|s| s.as_table_mut()) {
            s.insert(
                "endpoints".into(),
                toml::Value::Array(vec![endpoint.into()]),
            );
        }
        if let Some(u) = database_url {
            t.insert("database_url".into(), u.into());
        }
        // One bench user makes every request: the per-identity limits
        // would measure the limiter, not the pipeline.
        let mut limits = toml::Table::new();
        limits.insert("requests_per_second".into(), 1_000_000.into());
        limits.insert("max_pending_per_requestor".into(), 1_000_000.into());
        t.insert("limits".into(), limits.into());
    });
    let approver = Daemon::start(
        &crate::bin("certsign-approver")?,
        &["serve", "--config", &approver_toml.to_string_lossy()],
        &dir.join("approver.log"),
    );
    Ok((signer, approver))
}

fn clients(addr: &str, ca: &str, who: &Ident, n: usize) -> Vec<ApproverClient<Channel>> {
    (0..n.max(1))
        .map(|_| {
            ApproverClient::new(grpc::channel(addr, ca, Some(who)))
                .max_decoding_message_size(64 << 20)
        })
        .collect()
}

/// Runs the pipeline; returns the summary (latency = create to issued)
/// and the CPU per issued certificate of each process (the approvers
/// together, the signer, this load generator, the rest of the machine:
/// PostgreSQL's server, when it is the store).
pub async fn pipeline(o: &PipelineOptions) -> anyhow::Result<(Summary, Split)> {
    let tmp = crate::versus::tempfile_dir()?;
    let dir = tmp.join("ca");
    let (signer, approver) = start_stack(&dir, o.database_url.as_deref())?;
    let more = start_more_replicas(&dir, o.replicas)?;
    let addrs: Vec<&str> = std::iter::once(approver.addr.as_str())
        .chain(more.iter().map(|d| d.addr.as_str()))
        .collect();
    let ca = std::fs::read_to_string(dir.join("ca.crt"))?;
    let admin = Ident::load(&dir.join("admin/admin.crt"), &dir.join("admin/admin.key"));
    let ca_key = std::fs::read_to_string(dir.join("signer/ca.key"))?;
    let user = grpc::mint_with(&MintSpec::new("bench-user", &[]), &ca, &ca_key);
    // Per replica: its user and admin connections.
    let users: Vec<_> = addrs
        .iter()
        .map(|a| clients(a, &ca, &user, o.connections))
        .collect();
    let admins: Vec<_> = addrs
        .iter()
        .map(|a| clients(a, &ca, &admin, o.connections))
        .collect();
    let (_, csr_pem) = grpc::csr("bench-client", &["bench"]);
    // Parsed once: each approval is still signed afresh.
    let admin_key = Arc::new(admin.key());

    let waiters: Waiters = Arc::default();
    let mut watch = admins[0][0]
        .clone()
        .watch_certificate_signing_requests(WatchCertificateSigningRequestsRequest::default())
        .await?
        .into_inner();
    let w2 = waiters.clone();
    let watcher = tokio::spawn(async move {
        while let Ok(Some(ev)) = watch.message().await {
            let Some(obj) = ev.object else { continue };
            let issued = obj
                .status
                .as_ref()
                .is_some_and(|s| !s.certificate.is_empty());
            if issued
                && let Some(m) = obj.metadata
                && let Ok(mut w) = w2.lock()
                && let Some(tx) = w.remove(&m.name)
            {
                let _ = tx.send(());
            }
        }
    });

    // Names unique per run: a PostgreSQL store may outlive a run.
    let run = tmp
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .rsplit('-')
                .next()
                .unwrap_or("x")
                .to_string()
        })
        .unwrap_or_default();
    let approver_pids: Vec<u32> = std::iter::once(approver.pid())
        .chain(more.iter().map(|d| d.pid()))
        .collect();
    let meter = Processes::start(
        &[("approver", &approver_pids), ("signer", &[signer.pid()])],
        "load generator",
    )?;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(o.secs);
    let mut tasks = Vec::new();
    for w in 0..o.concurrency {
        let (create_on, approve_on) = (w % addrs.len(), (w + 1) % addrs.len());
        let (mut uc, mut ac) = (
            users[create_on][(w / addrs.len()) % users[create_on].len()].clone(),
            admins[approve_on][(w / addrs.len()) % admins[approve_on].len()].clone(),
        );
        let (admin, admin_key, csr_pem, waiters) = (
            admin.clone(),
            admin_key.clone(),
            csr_pem.clone(),
            waiters.clone(),
        );
        let run = run.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut first) = (Vec::new(), 0usize, None::<String>);
            let mut i = 0usize;
            while Instant::now() < end {
                i += 1;
                let name = format!("p-{run}-{w}-{i}");
                let (tx, mut rx) = oneshot::channel();
                if let Ok(mut m) = waiters.lock() {
                    m.insert(name.clone(), tx);
                }
                let t = Instant::now();
                let r: Result<(), String> = async {
                    let created = uc
                        .create_certificate_signing_request(grpc::create_request(&name, &csr_pem))
                        .await
                        .map_err(|e| format!("create: {}", e.message()))?
                        .into_inner();
                    ac.approve_certificate_signing_request(grpc::approve_request_with_key(
                        &created, &admin, &admin_key,
                    ))
                    .await
                    .map_err(|e| format!("approve: {}", e.message()))?;
                    loop {
                        match tokio::time::timeout(Duration::from_millis(250), &mut rx).await {
                            Ok(_) => return Ok(()),
                            Err(_) => {
                                let got = uc
                                    .get_certificate_signing_request(
                                        GetCertificateSigningRequestRequest { name: name.clone() },
                                    )
                                    .await
                                    .map_err(|e| format!("get: {}", e.message()))?
                                    .into_inner();
                                if got.status.is_some_and(|s| !s.certificate.is_empty()) {
                                    return Ok(());
                                }
                                if t.elapsed() > Duration::from_secs(60) {
                                    return Err("not issued within 60 s".into());
                                }
                            }
                        }
                    }
                }
                .await;
                match r {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert(e);
                    }
                }
                if let Ok(mut m) = waiters.lock() {
                    m.remove(&name);
                }
            }
            (lat, errors, first)
        }));
    }
    let (mut lat, mut errors, mut first) = (Vec::new(), 0, None);
    for t in tasks {
        let (l, e, f) = t.await?;
        lat.extend(l);
        errors += e;
        first = first.or(f);
    }
    let elapsed = start.elapsed();
    let cpu = meter.per_call(lat.len())?;
    watcher.abort();
    drop(more);
    drop(approver);
    let _ = std::fs::remove_dir_all(&tmp);
    Ok((Summary::new(lat, errors, elapsed, first), cpu))
}
