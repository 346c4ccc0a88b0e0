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
//! With `batch` > 1 the admin signs one batch statement for every `batch`
//! requests (as `certctl certificate approve -f` does) and sends it with
//! each request's approve call.
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
    ApproveCertificateSigningRequestRequest, Decision, GetCertificateSigningRequestRequest,
    WatchCertificateSigningRequestsRequest,
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
    /// Requests per signed approval: above 1, each worker creates this
    /// many, approves them with one signed batch statement and waits for
    /// each (`concurrency` ÷ `batch` workers).
    pub batch: usize,
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
    // Each worker keeps `batch` requests in flight: it creates them, has
    // them approved (one signed batch statement for all, or one statement
    // each when `batch` is 1) and waits until each is issued.
    let batch = o.batch.max(1);
    let workers = o.concurrency.div_ceil(batch).max(1);
    for w in 0..workers {
        let (create_on, approve_on) = (w % addrs.len(), (w + 1) % addrs.len());
        let (uc, ac) = (
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
                let t = Instant::now();
                let names: Vec<String> =
                    (0..batch).map(|k| format!("p-{run}-{w}-{i}-{k}")).collect();
                let mut rxs = Vec::new();
                if let Ok(mut m) = waiters.lock() {
                    for name in &names {
                        let (tx, rx) = oneshot::channel();
                        m.insert(name.clone(), tx);
                        rxs.push(rx);
                    }
                }
                let creates: Vec<_> = names
                    .iter()
                    .map(|name| {
                        let (mut uc, req) = (uc.clone(), grpc::create_request(name, &csr_pem));
                        tokio::spawn(async move {
                            uc.create_certificate_signing_request(req)
                                .await
                                .map(tonic::Response::into_inner)
                                .map_err(|e| format!("create: {}", e.message()))
                        })
                    })
                    .collect();
                let mut created = Vec::new();
                for c in creates {
                    match c.await.map_err(|e| e.to_string()).and_then(|r| r) {
                        Ok(o) => created.push(o),
                        Err(e) => {
                            errors += 1;
                            first.get_or_insert(e);
                        }
                    }
                }
                let statements: Vec<_> = created
                    .iter()
                    .map(|c| grpc::statement_for(c, Decision::Approve))
                    .collect();
                let approvals = if batch > 1 && !statements.is_empty() {
                    grpc::sign_batch(&statements, &admin)
                } else {
                    statements
                        .iter()
                        .map(|st| grpc::sign_with_key(st, &admin, &admin_key))
                        .collect()
                };
                let mut rx_by_name: HashMap<String, oneshot::Receiver<()>> =
                    names.iter().cloned().zip(rxs).collect();
                let waits: Vec<_> = created
                    .into_iter()
                    .zip(approvals)
                    .map(|(c, approval)| {
                        let name = c.metadata.map(|m| m.name).unwrap_or_default();
                        let rx = rx_by_name.remove(&name);
                        let (mut uc, mut ac) = (uc.clone(), ac.clone());
                        tokio::spawn(async move {
                            let mut rx = rx.ok_or("no waiter")?;
                            ac.approve_certificate_signing_request(
                                ApproveCertificateSigningRequestRequest {
                                    name: name.clone(),
                                    approval: Some(approval),
                                    reason: String::new(),
                                    message: String::new(),
                                },
                            )
                            .await
                            .map_err(|e| format!("approve: {}", e.message()))?;
                            loop {
                                if tokio::time::timeout(Duration::from_millis(250), &mut rx)
                                    .await
                                    .is_ok()
                                {
                                    return Ok(t.elapsed());
                                }
                                let got = uc
                                    .get_certificate_signing_request(
                                        GetCertificateSigningRequestRequest { name: name.clone() },
                                    )
                                    .await
                                    .map_err(|e| format!("get: {}", e.message()))?
                                    .into_inner();
                                if got.status.is_some_and(|s| !s.certificate.is_empty()) {
                                    return Ok(t.elapsed());
                                }
                                if t.elapsed() > Duration::from_secs(60) {
                                    return Err("not issued within 60 s".to_string());
                                }
                            }
                        })
                    })
                    .collect();
                for wait in waits {
                    match wait.await.map_err(|e| e.to_string()).and_then(|r| r) {
                        Ok(d) => lat.push(d),
                        Err(e) => {
                            errors += 1;
                            first.get_or_insert(e);
                        }
                    }
                }
                if let Ok(mut m) = waiters.lock() {
                    for name in &names {
                        m.remove(name);
                    }
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
