//! Several approver replicas on one PostgreSQL database, and two signers
//! (issue 9), with the real binaries on loopback and real mTLS:
//!
//! 1. three replicas under concurrent load (creates and approvals spread
//!    over all of them), one killed with -9 and another restarted mid-run:
//!    no acknowledged request or decision lost, every approved request
//!    issued exactly once (the signer's journal), watches on the replicas
//!    see every change in resource-version order without gaps (compared
//!    with the `csr_events` table), and a create on one replica is readable
//!    and listable on the others at once;
//! 2. the same request approved on one replica and denied on another at
//!    the same moment, many times: exactly one outcome each time;
//! 3. two signers (same CA, identical profiles, each its own journal) as two
//!    endpoints of every replica, one killed with -9 mid-run: issuance
//!    continues, and no uid is issued by both signers except the documented
//!    residual case (a signer that journaled a uid and died before
//!    answering), which the test reports and bounds;
//! 4. a replica killed with -9 while it holds a forwarding claim: another
//!    replica takes the work over once the lease has expired, and the
//!    signer's uid journal keeps it to one certificate.
//!
//! Each test works in a PostgreSQL database of its own (created and
//! dropped here). Needs `CERTSIGN_TEST_DATABASE_URL` (tests/run.sh sets it);
//! FAILS without it unless `CERTSIGN_SKIP_PG=1`. Sizes:
//! `CERTSIGN_REPLICAS_REQUESTS` (default 300), `CERTSIGN_REPLICAS_WORKERS`
//! (6), `CERTSIGN_REPLICAS_SIGNER_TIMEOUT` (the takeover test's signer
//! timeout, default 2s; the lease follows it). Each run prints a `FIGURES ...` line for docs/RELIABILITY.md.
//! Nothing asserts timing: waits are for conditions, with generous limits.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certsign_proto::v1::approver_client::ApproverClient;
use certsign_proto::v1::{
    CertificateSigningRequest, DenyCertificateSigningRequestRequest,
    GetCertificateSigningRequestRequest, ListCertificateSigningRequestsRequest,
    WatchCertificateSigningRequestsRequest,
};
use certsign_tests::grpc::{self, Ident, MintSpec, approve_request, create_request, csr};
use certsign_tests::load::{self, Ledger, Rng, has_condition, note_retry, retryable};
use certsign_tests::{Daemon, bin, edit_toml, run_ok};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// One test of this file at a time: each runs up to three approvers with
/// up to 11 PostgreSQL connections apiece, and the machine and the
/// server's connection limit are shared with the rest of the suite.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next test may still run.
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

// === the database ===

/// A PostgreSQL database of the test's own, dropped at the end.
struct Db {
    base: String,
    name: String,
    url: String,
}

fn db_url_or_skip() -> Option<String> {
    match std::env::var("CERTSIGN_TEST_DATABASE_URL") {
        Ok(u) => Some(u),
        Err(_) if std::env::var("CERTSIGN_SKIP_PG").as_deref() == Ok("1") => {
            eprintln!("CERTSIGN_SKIP_PG=1: skipping the PostgreSQL replica test");
            None
        }
        Err(_) => panic!(
            "CERTSIGN_TEST_DATABASE_URL is not set (tests/run.sh starts PostgreSQL); \
             set CERTSIGN_SKIP_PG=1 to skip explicitly"
        ),
    }
}

/// `postgres://u:p@h:port/db?x` with the database replaced.
fn with_database(base: &str, db: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base, None),
    };
    let after_scheme = head.find("://").unwrap() + 3;
    let path = head[after_scheme..]
        .find('/')
        .map(|i| after_scheme + i)
        .unwrap_or(head.len());
    let mut url = format!("{}/{db}", &head[..path]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

async fn admin_exec(base: &str, sql: String) {
    let pool = sqlx::PgPool::connect(base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

impl Db {
    fn create(base: String) -> Db {
        let name = format!("replicas_{}", std::process::id()) + &format!("_{}", rand_suffix());
        let (b, sql) = (base.clone(), format!("CREATE DATABASE {name}"));
        // Its own thread and runtime: the test's runtime may be entered.
        std::thread::spawn(move || grpc::block_on(admin_exec(&b, sql)))
            .join()
            .unwrap();
        let url = with_database(&base, &name);
        Db { base, name, url }
    }

    /// One query's rows of a single BIGINT column.
    fn ints(&self, sql: &str) -> Vec<i64> {
        let (url, sql) = (self.url.clone(), sql.to_string());
        std::thread::spawn(move || {
            grpc::block_on(async move {
                let pool = sqlx::PgPool::connect(&url).await.unwrap();
                let v: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                pool.close().await;
                v
            })
        })
        .join()
        .unwrap()
    }

    /// One query's rows of a single TEXT column.
    fn texts(&self, sql: &str) -> Vec<String> {
        let (url, sql) = (self.url.clone(), sql.to_string());
        std::thread::spawn(move || {
            grpc::block_on(async move {
                let pool = sqlx::PgPool::connect(&url).await.unwrap();
                let v: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                pool.close().await;
                v
            })
        })
        .join()
        .unwrap()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        // Its own thread and runtime: drop may run inside or outside one.
        let _ = std::thread::spawn(move || {
            grpc::block_on(admin_exec(
                &base,
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            ))
        })
        .join();
    }
}

fn rand_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut rng = Rng::new(u64::try_from(nanos % u128::from(u64::MAX)).unwrap() | 1);
    format!("{:016x}", rng.next_u64())
}

// === the deployment ===

/// One `init` directory, `signers` signer processes (the second one a copy
/// of the first's state with a journal of its own) and approver replicas
/// sharing one PostgreSQL database.
struct Cluster {
    dir: PathBuf,
    signers: Vec<Daemon>,
    /// Journal lines each signer's journal had before the test (init's).
    journal_start: Vec<usize>,
    replicas: Vec<Daemon>,
    db: Db,
    _tmp: tempfile::TempDir,
}

fn signer_dir(dir: &Path, i: usize) -> PathBuf {
    if i == 0 {
        dir.join("signer")
    } else {
        dir.join(format!("signer{i}"))
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

impl Cluster {
    /// Init, then start the signers and `replicas` approvers (not started:
    /// see [`Cluster::start_replica`]).
    fn new(base: String, signers: usize) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        run_ok(
            Command::new(bin("certsign-signer"))
                .arg("init")
                .arg("--dir")
                .arg(&dir),
        );
        for i in 1..signers {
            copy_dir(&signer_dir(&dir, 0), &signer_dir(&dir, i));
        }
        let mut started = Vec::new();
        let mut journal_start = Vec::new();
        for i in 0..signers {
            let sdir = signer_dir(&dir, i);
            let toml = sdir.join("signer.toml");
            edit_toml(&toml, |t| {
                t.insert("listen".into(), "127.0.0.1:0".into());
            });
            journal_start.push(grpc::journal_issued(&sdir.join("journal.jsonl")).len());
            let d = Daemon::start(
                &bin("certsign-signer"),
                &["serve", "--config", toml.to_str().unwrap()],
                &dir.join(format!("signer{i}.log")),
            );
            // Pinned, so a restart comes back where the replicas expect it.
            let addr = d.addr.clone();
            edit_toml(&toml, |t| {
                t.insert("listen".into(), addr.into());
            });
            started.push(d);
        }
        Cluster {
            dir,
            signers: started,
            journal_start,
            replicas: Vec::new(),
            db: Db::create(base),
            _tmp: tmp,
        }
    }

    /// Start one more replica: its own copy of approver.toml (own listen
    /// port, pinned after start), the shared database and every signer.
    fn start_replica(&mut self, signer_timeout: &str) -> usize {
        let i = self.replicas.len();
        let adir = self.dir.join("approver");
        let toml = adir.join(format!("replica{i}.toml"));
        std::fs::copy(adir.join("approver.toml"), &toml).unwrap();
        let endpoints: Vec<toml::Value> = self
            .signers
            .iter()
            .map(|s| format!("https://{}", s.addr).into())
            .collect();
        let url = self.db.url.clone();
        edit_toml(&toml, |t| {
            t.insert("listen".into(), "127.0.0.1:0".into());
            t.insert("database_url".into(), url.into());
            let s = t.get_mut("signer").unwrap().as_table_mut().unwrap();
            s.insert("endpoints".into(), toml::Value::Array(endpoints));
            s.insert("timeout".into(), signer_timeout.into());
            let limits = t
                .entry("limits")
                .or_insert(toml::Value::Table(Default::default()))
                .as_table_mut()
                .unwrap();
            // A handful of identities make all the load on purpose.
            limits.insert("requests_per_second".into(), 1_000_000.into());
            limits.insert("max_pending_per_requestor".into(), 1_000_000.into());
        });
        let d = Daemon::start(
            &bin("certsign-approver"),
            &["serve", "--config", toml.to_str().unwrap()],
            &self.dir.join(format!("replica{i}.log")),
        );
        let addr = d.addr.clone();
        edit_toml(&toml, |t| {
            t.insert("listen".into(), addr.into());
        });
        self.replicas.push(d);
        i
    }

    fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.join("ca.crt")).unwrap()
    }

    fn admin(&self) -> Ident {
        Ident::load(
            &self.dir.join("admin/admin.crt"),
            &self.dir.join("admin/admin.key"),
        )
    }

    fn mint(&self, cn: &str) -> Ident {
        let key = std::fs::read_to_string(self.dir.join("signer/ca.key")).unwrap();
        grpc::mint_with(&MintSpec::new(cn, &[]), &self.ca_pem(), &key)
    }

    /// One client per replica, as `ident`.
    fn clients(&self, ident: &Ident) -> Vec<ApproverClient<Channel>> {
        self.replicas
            .iter()
            .map(|r| {
                ApproverClient::new(grpc::channel(&r.addr, &self.ca_pem(), Some(ident)))
                    .max_decoding_message_size(64 << 20)
            })
            .collect()
    }

    fn journal(&self, i: usize) -> Vec<grpc::JournalIssue> {
        let all = grpc::journal_issued(&signer_dir(&self.dir, i).join("journal.jsonl"));
        all[self.journal_start[i]..].to_vec()
    }

    fn audit_verify(&self) {
        for i in 0..self.signers.len() {
            run_ok(
                Command::new(bin("certsign-signer"))
                    .args(["audit", "verify", "--config"])
                    .arg(signer_dir(&self.dir, i).join("signer.toml")),
            );
        }
    }

    fn assert_no_panics(&self) {
        for d in self.signers.iter().chain(&self.replicas) {
            let log = d.log();
            assert!(!log.contains("panicked"), "a daemon panicked:\n{log}");
        }
    }
}

// === clients that fail over between replicas ===

/// Calls `f` on replica `first`, moving on to the next replica whenever
/// the answer may have been cut short (a dead or restarting replica).
async fn on_any<T, F, Fut>(
    ledger: &Ledger,
    what: &str,
    clients: &[ApproverClient<Channel>],
    first: usize,
    mut f: F,
) -> Result<T, Status>
where
    F: FnMut(ApproverClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut at = first;
    loop {
        match f(clients[at % clients.len()].clone()).await {
            Err(s) if retryable(&s) => {
                note_retry(ledger, &s);
                assert!(Instant::now() < deadline, "{what}: still failing: {s:?}");
                at += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

async fn get_any(
    ledger: &Ledger,
    clients: &[ApproverClient<Channel>],
    first: usize,
    name: &str,
) -> CertificateSigningRequest {
    on_any(ledger, &format!("get {name}"), clients, first, |mut c| {
        let n = name.to_string();
        async move {
            c.get_certificate_signing_request(GetCertificateSigningRequestRequest { name: n })
                .await
        }
    })
    .await
    .unwrap_or_else(|s| panic!("get {name}: {:?}: {}", s.code(), s.message()))
    .into_inner()
}

/// One requestor: creates `names`, each on the next replica in turn; the
/// admin approves each on a random replica.
async fn spread_client(
    ledger: Arc<Ledger>,
    users: Vec<ApproverClient<Channel>>,
    admins: Vec<ApproverClient<Channel>>,
    admin: Ident,
    names: Vec<String>,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    for (k, name) in names.into_iter().enumerate() {
        let (_, pem) = csr(&format!("u-{name}"), &[]);
        let req = create_request(&name, &pem);
        let created = on_any(&ledger, &format!("create {name}"), &users, k, |mut c| {
            let r = req.clone();
            async move { c.create_certificate_signing_request(r).await }
        })
        .await;
        let obj = match created {
            Ok(o) => {
                let o = o.into_inner();
                let uid = o.metadata.as_ref().unwrap().uid.clone();
                ledger.created.lock().unwrap().insert(name.clone(), uid);
                ledger.progress.fetch_add(1, Ordering::Relaxed);
                o
            }
            // An earlier attempt committed but its answer was lost.
            Err(s) if s.code() == Code::AlreadyExists => get_any(&ledger, &users, k, &name).await,
            Err(s) => panic!("create {name}: {:?}: {}", s.code(), s.message()),
        };
        let approve = approve_request(&obj, &admin);
        let pick = usize::try_from(rng.range(0, admins.len() as u64)).unwrap();
        let approved = on_any(
            &ledger,
            &format!("approve {name}"),
            &admins,
            pick,
            |mut c| {
                let r = approve.clone();
                async move { c.approve_certificate_signing_request(r).await }
            },
        )
        .await
        .unwrap_or_else(|s| panic!("approve {name}: {:?}: {}", s.code(), s.message()))
        .into_inner();
        assert!(
            has_condition(&approved, "Approved"),
            "approve {name} answered OK without the Approved condition"
        );
        ledger.approved.lock().unwrap().insert(name.clone());
        ledger.progress.fetch_add(1, Ordering::Relaxed);
    }
}

/// Waits until every name has a certificate (asking any replica).
async fn wait_issued(
    ledger: &Ledger,
    clients: &[ApproverClient<Channel>],
    names: &[String],
) -> Duration {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    for (k, name) in names.iter().enumerate() {
        loop {
            let o = get_any(ledger, clients, k, name).await;
            let st = o.status.clone().unwrap_or_default();
            if !st.certificate.is_empty() {
                break;
            }
            assert!(!has_condition(&o, "Failed"), "{name}: {:?}", st.conditions);
            assert!(
                Instant::now() < deadline,
                "{name} was not issued: {:?}",
                st.conditions
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    started.elapsed()
}

async fn list_names(c: &mut ApproverClient<Channel>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_certificate_signing_requests(ListCertificateSigningRequestsRequest {
                limit: 500,
                continue_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(
            page.items
                .iter()
                .map(|o| o.metadata.as_ref().unwrap().name.clone()),
        );
        if page.continue_token.is_empty() {
            return out;
        }
        token = page.continue_token;
    }
}

// === watches ===

#[derive(Debug, Clone)]
struct Seen {
    rv: i64,
    kind: String,
    name: String,
    issued: bool,
}

/// A watch's events as they arrive, and how it ended.
#[derive(Clone, Default)]
struct WatchLog {
    events: Arc<Mutex<Vec<Seen>>>,
    ended: Arc<Mutex<Option<String>>>,
}

impl WatchLog {
    fn snapshot(&self) -> Vec<Seen> {
        self.events.lock().unwrap().clone()
    }
    fn has(&self, pred: impl Fn(&Seen) -> bool) -> bool {
        self.events.lock().unwrap().iter().any(pred)
    }
}

async fn open_watch(mut c: ApproverClient<Channel>, initial: bool) -> WatchLog {
    let log = WatchLog::default();
    let mut stream = c
        .watch_certificate_signing_requests(WatchCertificateSigningRequestsRequest {
            send_initial_events: initial,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let l = log.clone();
    tokio::spawn(async move {
        loop {
            match stream.message().await {
                Ok(Some(ev)) => {
                    let o = ev.object.unwrap_or_default();
                    let meta = o.metadata.clone().unwrap_or_default();
                    l.events.lock().unwrap().push(Seen {
                        rv: meta.resource_version.parse().unwrap_or(-1),
                        kind: ev.r#type,
                        name: meta.name,
                        issued: o.status.is_some_and(|s| !s.certificate.is_empty()),
                    });
                }
                Ok(None) => {
                    *l.ended.lock().unwrap() = Some("end of stream".into());
                    return;
                }
                Err(s) => {
                    *l.ended.lock().unwrap() = Some(format!("{:?}: {}", s.code(), s.message()));
                    return;
                }
            }
        }
    });
    log
}

async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The watch's events from `from_rv` on are exactly the stored events in
/// that range, in resource-version order: nothing skipped, nothing repeated.
fn assert_gapless(who: &str, events: &[Seen], db_rvs: &[i64], from_rv: i64) {
    let got: Vec<i64> = events
        .iter()
        .map(|e| e.rv)
        .skip_while(|rv| *rv < from_rv)
        .collect();
    let Some(&last) = got.last() else {
        panic!("{who}: no events from resource version {from_rv}")
    };
    let want: Vec<i64> = db_rvs
        .iter()
        .copied()
        .filter(|rv| *rv >= from_rv && *rv <= last)
        .collect();
    if got != want {
        let gs: BTreeSet<i64> = got.iter().copied().collect();
        let ws: BTreeSet<i64> = want.iter().copied().collect();
        panic!(
            "{who}: watch events differ from csr_events in {from_rv}..={last}: missing {:?}, extra {:?}, in order: {}",
            ws.difference(&gs).take(20).collect::<Vec<_>>(),
            gs.difference(&ws).take(20).collect::<Vec<_>>(),
            got.windows(2).all(|w| w[0] < w[1])
        );
    }
}

fn sizes() -> (usize, usize) {
    let num = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .map(|v| v.parse().unwrap_or_else(|_| panic!("{k}={v:?}")))
            .unwrap_or(d)
    };
    (
        num("CERTSIGN_REPLICAS_REQUESTS", 300),
        num("CERTSIGN_REPLICAS_WORKERS", 6).max(1),
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

fn names_for(workers: usize, requests: usize, prefix: &str) -> Vec<Vec<String>> {
    (0..workers)
        .map(|w| {
            (w..requests)
                .step_by(workers)
                .map(|i| format!("{prefix}-{i:05}"))
                .collect()
        })
        .collect()
}

/// Runs the spread load on `rt` while `chaos` runs on this thread (it gets
/// the cluster and the ledger, and returns when its faults are done).
fn load_with_chaos<R: Send>(
    rt: &tokio::runtime::Runtime,
    cluster: &mut Cluster,
    ledger: &Arc<Ledger>,
    names: &[Vec<String>],
    chaos: impl FnOnce(&mut Cluster, &Ledger, &AtomicBool) -> R + Send,
) -> R {
    let admin = cluster.admin();
    let admins = cluster.clients(&admin);
    let users: Vec<Vec<ApproverClient<Channel>>> = (0..names.len())
        .map(|w| cluster.clients(&cluster.mint(&format!("user{w}"))))
        .collect();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (done_ref, ledger_ref) = (&done, &**ledger);
        let killer = s.spawn(move || chaos(cluster, ledger_ref, done_ref));
        rt.block_on(async {
            let mut tasks = Vec::new();
            for (w, ns) in names.iter().enumerate() {
                tasks.push(tokio::spawn(spread_client(
                    ledger.clone(),
                    users[w].clone(),
                    admins.clone(),
                    admin.clone(),
                    ns.clone(),
                    0x9e37_79b9 + w as u64,
                )));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        done.store(true, Ordering::Relaxed);
        killer.join().unwrap()
    })
}

/// Blocks until `at` operations are acknowledged (or the load is over).
fn wait_progress(ledger: &Ledger, done: &AtomicBool, at: usize) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while ledger.progress.load(Ordering::Relaxed) < at && !done.load(Ordering::Relaxed) {
        assert!(Instant::now() < deadline, "the load stopped progressing");
        std::thread::sleep(Duration::from_millis(5));
    }
}

// === 1. three replicas, one killed, one restarted ===

#[test]
fn three_replicas_under_load_with_a_kill_and_a_restart() {
    let Some(base) = db_url_or_skip() else { return };
    let _serial = one_at_a_time();
    let (requests, workers) = sizes();
    let started = Instant::now();
    let mut cluster = Cluster::new(base, 1);
    for _ in 0..3 {
        cluster.start_replica("3s");
    }
    let rt = rt();
    let _entered = rt.enter();
    let admin = cluster.admin();
    let admins = cluster.clients(&admin);
    let ledger = Arc::new(Ledger::default());

    // A create on one replica is readable and listable on the others at
    // once (the store is the only state; no cache to catch up).
    let alice = cluster.mint("alice");
    let alices = cluster.clients(&alice);
    rt.block_on(async {
        for (i, on) in alices.iter().enumerate() {
            let name = format!("first-{i}");
            let (_, pem) = csr("alice", &[]);
            let made = on
                .clone()
                .create_certificate_signing_request(create_request(&name, &pem))
                .await
                .unwrap()
                .into_inner();
            for j in (0..3).filter(|j| *j != i) {
                let got = admins[j]
                    .clone()
                    .get_certificate_signing_request(GetCertificateSigningRequestRequest {
                        name: name.clone(),
                    })
                    .await
                    .unwrap_or_else(|s| panic!("{name} created on {i}, not readable on {j}: {s:?}"))
                    .into_inner();
                assert_eq!(got.metadata, made.metadata, "{name} on replica {j}");
                let listed = list_names(&mut admins[j].clone()).await;
                assert!(listed.contains(&name), "{name} not listed on replica {j}");
            }
        }
    });

    // Watches on replicas 0 and 1 before the load; a marker create that
    // both have seen fixes where their gap-free record starts.
    let (w0, w1) = rt.block_on(async {
        let w0 = open_watch(admins[0].clone(), false).await;
        let w1 = open_watch(admins[1].clone(), false).await;
        let (_, pem) = csr("alice", &[]);
        let marker = alices[2]
            .clone()
            .create_certificate_signing_request(create_request("marker", &pem))
            .await
            .unwrap()
            .into_inner();
        for w in [&w0, &w1] {
            wait_for("the marker on a watch", Duration::from_secs(60), || {
                w.has(|e| e.name == "marker")
            })
            .await;
        }
        let rv: i64 = marker.metadata.unwrap().resource_version.parse().unwrap();
        ((w0, rv), (w1, rv))
    });

    let names = names_for(workers, requests, "rep");
    let total_ops = 2 * requests;
    let leases_at_kill = load_with_chaos(&rt, &mut cluster, &ledger, &names, move |c, l, done| {
        // kill -9 replica 2 at 30 % (it stays down for the rest of the
        // load), kill -9 and restart replica 1 at 60 %.
        wait_progress(l, done, total_ops * 3 / 10);
        let pid = c.replicas[2].pid();
        c.replicas[2].kill();
        // Lease owners are "<pid>-<random>": the dead replica's claims.
        let leased = c.db.ints(&format!(
            "SELECT COUNT(*) FROM csrs WHERE state = 'approved' AND lease_owner LIKE '{pid}-%'"
        ));
        wait_progress(l, done, total_ops * 6 / 10);
        c.replicas[1].restart();
        leased[0]
    });
    let all_names: Vec<String> = names.iter().flatten().cloned().collect();
    let (issue_wait, objects) = rt.block_on(async {
        let d = wait_issued(&ledger, &admins[..2], &all_names).await;
        (d, load::list_all(&ledger, &mut admins[0].clone()).await)
    });
    // The killed replica comes back and serves the same state.
    cluster.replicas[2].restart();
    let admins = cluster.clients(&admin);
    let relisted = rt.block_on(list_names(&mut admins[2].clone()));
    let stored: BTreeSet<String> = objects
        .iter()
        .map(|o| o.metadata.as_ref().unwrap().name.clone())
        .collect();
    assert_eq!(
        relisted, stored,
        "the restarted replica lists the same objects"
    );

    // Replica 0's watch: every change, in order, without gaps.
    let last_rv = *cluster
        .db
        .ints("SELECT MAX(resource_version) FROM csr_events")
        .first()
        .unwrap();
    let (w0, from) = w0;
    rt.block_on(wait_for(
        "replica 0's watch to reach the last change",
        Duration::from_secs(120),
        || w0.has(|e| e.rv >= last_rv),
    ));
    let db_rvs = cluster
        .db
        .ints("SELECT resource_version FROM csr_events ORDER BY resource_version");
    let ev0 = w0.snapshot();
    assert_gapless("replica 0", &ev0, &db_rvs, from);
    for name in &all_names {
        assert!(
            ev0.iter().any(|e| &e.name == name && e.kind == "ADDED"),
            "replica 0's watch missed the ADDED of {name}"
        );
        assert!(
            ev0.iter()
                .any(|e| &e.name == name && e.kind == "MODIFIED" && e.issued),
            "replica 0's watch missed the issuance of {name}"
        );
    }
    assert!(
        w0.ended.lock().unwrap().is_none(),
        "replica 0's watch ended"
    );
    // Replica 1's watch, up to its replica's restart: gap-free too.
    let (w1, from1) = w1;
    let ev1 = w1.snapshot();
    assert_gapless("replica 1 (before its restart)", &ev1, &db_rvs, from1);

    // Nothing lost, each approved request issued exactly once.
    cluster.signers[0].kill();
    let journal = cluster.journal(0);
    let verdict = load::judge(&ledger, &objects, &journal);
    assert_eq!(verdict.acked_approvals, requests, "{verdict:?}");
    assert!(verdict.issued >= verdict.acked_approvals, "{verdict:?}");
    cluster.audit_verify();
    cluster.assert_no_panics();
    println!(
        "FIGURES replicas-kill requests={requests} workers={workers} replicas=3 stored={} acked_creates={} acked_approvals={} issued={} issued_twice=0 dead_replica_claims_at_kill={leases_at_kill} watch0_events={} watch1_events_before_restart={} retried_calls={} retried_codes={:?} wait_for_last_issue_ms={} elapsed_s={}",
        verdict.stored,
        verdict.acked_creates,
        verdict.acked_approvals,
        verdict.issued,
        ev0.len(),
        ev1.len(),
        verdict.retries,
        ledger.retried_codes.lock().unwrap(),
        issue_wait.as_millis(),
        started.elapsed().as_secs()
    );
}

// === 2. racing decisions ===

#[test]
fn approve_and_deny_racing_on_two_replicas_end_with_one_outcome() {
    let Some(base) = db_url_or_skip() else { return };
    let _serial = one_at_a_time();
    let mut cluster = Cluster::new(base, 1);
    cluster.start_replica("3s");
    cluster.start_replica("3s");
    let rt = rt();
    let _entered = rt.enter();
    let admin = cluster.admin();
    let admins = cluster.clients(&admin);
    let bob = cluster.mint("bob");
    let bobs = cluster.clients(&bob);
    let rounds = 40;
    let mut outcomes = BTreeMap::new();
    rt.block_on(async {
        for i in 0..rounds {
            let name = format!("race-{i:03}");
            let (_, pem) = csr("bob", &[]);
            let obj = bobs[i % 2]
                .clone()
                .create_certificate_signing_request(create_request(&name, &pem))
                .await
                .unwrap()
                .into_inner();
            // Approve on one replica, deny on the other, at the same time
            // (which replica does which alternates).
            let (ai, di) = (i % 2, (i + 1) % 2);
            let mut ac = admins[ai].clone();
            let mut dc = admins[di].clone();
            let approve = approve_request(&obj, &admin);
            let deny = DenyCertificateSigningRequestRequest {
                name: name.clone(),
                ..Default::default()
            };
            let (a, d) = tokio::join!(
                ac.approve_certificate_signing_request(approve),
                dc.deny_certificate_signing_request(deny)
            );
            let a_ok = match &a {
                Ok(_) => true,
                Err(s) => {
                    assert_eq!(s.code(), Code::FailedPrecondition, "{name} approve: {s:?}");
                    false
                }
            };
            let d_ok = match &d {
                Ok(_) => true,
                Err(s) => {
                    assert_eq!(s.code(), Code::FailedPrecondition, "{name} deny: {s:?}");
                    false
                }
            };
            assert!(a_ok ^ d_ok, "{name}: approve ok={a_ok}, deny ok={d_ok}");
            for (j, c) in admins.iter().enumerate() {
                let o = c
                    .clone()
                    .get_certificate_signing_request(GetCertificateSigningRequestRequest {
                        name: name.clone(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let approved = has_condition(&o, "Approved");
                let denied = has_condition(&o, "Denied");
                assert!(
                    approved ^ denied,
                    "{name} on replica {j}: approved={approved} denied={denied}"
                );
                assert_eq!(
                    approved, a_ok,
                    "{name} on replica {j}: the stored outcome is the answered one"
                );
                let decisions = o.status.unwrap_or_default().decisions;
                assert_eq!(decisions.len(), 1, "{name}: one decision on record");
            }
            outcomes.insert(name, a_ok);
        }
    });
    let approved: Vec<String> = outcomes
        .iter()
        .filter(|(_, a)| **a)
        .map(|(n, _)| n.clone())
        .collect();
    let ledger = Ledger::default();
    rt.block_on(wait_issued(&ledger, &admins, &approved));
    cluster.signers[0].kill();
    let journal = cluster.journal(0);
    let issued: BTreeSet<String> = journal.iter().map(|j| j.name.clone()).collect();
    for (name, a) in &outcomes {
        assert_eq!(issued.contains(name), *a, "{name}: issued iff approved");
    }
    assert_eq!(
        journal.len(),
        approved.len(),
        "one issuance per approved request"
    );
    cluster.audit_verify();
    cluster.assert_no_panics();
    println!(
        "FIGURES replicas-race rounds={rounds} approve_won={} deny_won={} both=0",
        approved.len(),
        rounds - approved.len()
    );
}

// === 3. two signers, one killed ===

#[test]
fn two_signers_one_killed_mid_run_issuance_continues() {
    let Some(base) = db_url_or_skip() else { return };
    let _serial = one_at_a_time();
    let (requests, workers) = sizes();
    let started = Instant::now();
    let mut cluster = Cluster::new(base, 2);
    cluster.start_replica("3s");
    cluster.start_replica("3s");
    let rt = rt();
    let _entered = rt.enter();
    let ledger = Arc::new(Ledger::default());
    let names = names_for(workers, requests, "sig");
    let total_ops = 2 * requests;
    let journal_1_len_at_kill =
        load_with_chaos(&rt, &mut cluster, &ledger, &names, move |c, l, done| {
            wait_progress(l, done, total_ops * 4 / 10);
            c.signers[1].kill();
            c.journal(1).len()
        });
    let all_names: Vec<String> = names.iter().flatten().cloned().collect();
    let admin = cluster.admin();
    let admins = cluster.clients(&admin);
    let objects = rt.block_on(async {
        wait_issued(&ledger, &admins, &all_names).await;
        load::list_all(&ledger, &mut admins[0].clone()).await
    });
    cluster.signers[0].kill();
    let j0 = cluster.journal(0);
    let j1 = cluster.journal(1);
    assert_eq!(
        j1.len(),
        journal_1_len_at_kill,
        "signer 1 wrote after its kill"
    );
    assert!(
        !j0.is_empty() && !j1.is_empty(),
        "both signers issued: {} and {}",
        j0.len(),
        j1.len()
    );
    // Each journal alone: one issuance per uid.
    for (i, j) in [&j0, &j1].into_iter().enumerate() {
        let mut uids = BTreeSet::new();
        for line in j {
            assert!(
                uids.insert(&line.uid),
                "signer {i} issued uid {} twice",
                line.uid
            );
        }
    }
    // Across the two: a uid in both is only the residual case: signer 1
    // journaled it and died before its answer arrived, so the request was
    // retried on signer 0. Such lines can only be signer 1's last ones
    // (in flight at the kill: at most 4 workers per replica), and the
    // stored certificate is then signer 0's.
    let stored_serial: HashMap<String, String> = objects
        .iter()
        .filter(|o| o.status.as_ref().is_some_and(|s| !s.certificate.is_empty()))
        .map(|o| {
            (
                o.metadata.as_ref().unwrap().uid.clone(),
                grpc::serial_of(&o.status.as_ref().unwrap().certificate),
            )
        })
        .collect();
    let uids0: BTreeSet<&str> = j0.iter().map(|l| l.uid.as_str()).collect();
    let in_flight_bound = 4 * cluster.replicas.len();
    let tail_start = j1.len().saturating_sub(in_flight_bound);
    let mut residual = 0;
    let mut merged = j0.clone();
    for (pos, line) in j1.iter().enumerate() {
        if uids0.contains(line.uid.as_str()) {
            residual += 1;
            assert!(
                pos >= tail_start,
                "uid {} issued by both signers, but signer 1 had answered for it (line {pos} of {})",
                line.uid,
                j1.len()
            );
            assert_ne!(stored_serial.get(&line.uid), Some(&line.serial));
        } else {
            merged.push(line.clone());
        }
    }
    let verdict = load::judge(&ledger, &objects, &merged);
    assert_eq!(verdict.acked_approvals, requests, "{verdict:?}");
    cluster.audit_verify();
    cluster.assert_no_panics();
    let failovers: usize = cluster
        .replicas
        .iter()
        .map(|r| r.log().matches("Sign failed on this endpoint").count())
        .sum();
    println!(
        "FIGURES replicas-two-signers requests={requests} workers={workers} replicas=2 issued={} by_signer0={} by_signer1={} issued_by_both={residual} failed_over_calls={failovers} elapsed_s={}",
        verdict.issued,
        j0.len(),
        j1.len(),
        started.elapsed().as_secs()
    );
}

// === 4. a dead replica's claim is taken over ===

#[test]
fn a_dead_replicas_claim_is_taken_over_after_the_lease() {
    let Some(base) = db_url_or_skip() else { return };
    let _serial = one_at_a_time();
    let mut cluster = Cluster::new(base, 1);
    // Only replica A runs while the claim is made, so the claim is its.
    // The lease (and so the takeover time) grows with the signer timeout.
    let timeout = std::env::var("CERTSIGN_REPLICAS_SIGNER_TIMEOUT").unwrap_or_else(|_| "2s".into());
    cluster.start_replica(&timeout);
    let rt = rt();
    let _entered = rt.enter();
    let admin = cluster.admin();
    let carol = cluster.mint("carol");
    // The signer hangs: A's Sign calls stay in flight until the deadline.
    cluster.signers[0].signal("STOP");
    let obj = rt.block_on(async {
        let (_, pem) = csr("carol", &[]);
        let obj = cluster.clients(&carol)[0]
            .clone()
            .create_certificate_signing_request(create_request("orphan", &pem))
            .await
            .unwrap()
            .into_inner();
        cluster.clients(&admin)[0]
            .clone()
            .approve_certificate_signing_request(approve_request(&obj, &admin))
            .await
            .unwrap();
        obj
    });
    // Wait until A holds the lease (the Sign call is in flight), then kill
    // it with -9 right there.
    let deadline = Instant::now() + Duration::from_secs(300);
    let owner = loop {
        let owners = cluster
            .db
            .texts("SELECT lease_owner FROM csrs WHERE name = 'orphan' AND lease_until > 0");
        if let Some(o) = owners.into_iter().find(|o| !o.is_empty()) {
            break o;
        }
        assert!(
            Instant::now() < deadline,
            "replica A never claimed the request"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    cluster.replicas[0].kill();
    let killed = Instant::now();
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let lease_until = cluster
        .db
        .ints("SELECT lease_until FROM csrs WHERE name = 'orphan'")[0];
    let lease_left = lease_until - i64::try_from(now_unix).unwrap();
    cluster.signers[0].signal("CONT");
    // Replica B starts after the death; it must not steal a live lease,
    // and must take the work over once it has expired.
    let b = cluster.start_replica(&timeout);
    // While A's lease lives (by the database's clock), the row is still
    // A's: B started and looked for work, and left it alone.
    let row = cluster.db.texts(
        "SELECT lease_owner || ' ' || lease_until || ' ' || CAST(EXTRACT(EPOCH FROM now()) AS BIGINT) \
         FROM csrs WHERE name = 'orphan'",
    );
    let parts: Vec<&str> = row[0].split(' ').collect();
    let db_now: i64 = parts[2].parse().unwrap();
    let checked_live_lease = db_now < lease_until;
    if checked_live_lease {
        assert_eq!(parts[0], owner, "B took a live lease");
        assert_eq!(parts[1], lease_until.to_string());
    }
    let admins = cluster.clients(&admin);
    let ledger = Ledger::default();
    rt.block_on(wait_issued(&ledger, &admins[b..], &["orphan".to_string()]));
    let takeover = killed.elapsed();
    let final_owner = cluster
        .db
        .texts("SELECT lease_owner FROM csrs WHERE name = 'orphan'");
    assert_ne!(final_owner[0], owner, "the issuing claim was not B's");
    let attempts = cluster
        .db
        .ints("SELECT attempts FROM csrs WHERE name = 'orphan'")[0];
    assert!(attempts >= 2, "attempts = {attempts}");
    // A's in-flight Sign may have reached the signer after all: the uid
    // journal keeps it to one certificate, the one stored.
    cluster.signers[0].kill();
    let uid = obj.metadata.unwrap().uid;
    let journal = cluster.journal(0);
    let lines: Vec<_> = journal.iter().filter(|j| j.uid == uid).collect();
    assert_eq!(lines.len(), 1, "one issuance for the request");
    let stored = rt.block_on(get_any(&ledger, &admins[b..], 0, "orphan"));
    assert_eq!(
        grpc::serial_of(&stored.status.unwrap().certificate),
        lines[0].serial
    );
    cluster.audit_verify();
    cluster.assert_no_panics();
    println!(
        "FIGURES replicas-takeover signer_timeout={timeout} lease_left_at_kill_s={lease_left} takeover_after_kill_ms={} attempts={attempts} live_lease_respected_checked={checked_live_lease}",
        takeover.as_millis()
    );
}
