//! Nothing lost, nothing issued twice: kill -9 the approver (or the signer)
//! at random moments while several clients create, approve and wait on a
//! few thousand requests; make the signer unreachable for a while (stopped
//! with SIGSTOP, then down). Afterwards every acknowledged create and
//! approval is stored, every approved request is issued exactly once, the
//! signer's journal and the approver's records agree one to one, no serial
//! repeats, the journal verifies and the SQLite file passes
//! `PRAGMA integrity_check`.
//!
//! Sizes: `CERTSIGN_RELIABILITY_REQUESTS` (default 2000),
//! `CERTSIGN_RELIABILITY_KILLS` (20), `CERTSIGN_RELIABILITY_WORKERS` (8),
//! `CERTSIGN_RELIABILITY_SEED` (the kill schedule; printed). Each run prints
//! a `FIGURES ...` line for docs/RELIABILITY.md.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use certsign_tests::grpc::{self, MintSpec};
use certsign_tests::load::{self, Ledger, LoadConfig, Rng};
use certsign_tests::{Daemon, Stack, bin, run_ok};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Approver,
    Signer,
}

fn stack() -> Stack {
    let stack = Stack::start_configured(
        &[],
        |_| {},
        |a| {
            let limits = a
                .entry("limits")
                .or_insert(toml::Value::Table(Default::default()))
                .as_table_mut()
                .unwrap();
            // The load comes from a handful of identities on purpose; the
            // limits under test here are durability, not rate.
            limits.insert("requests_per_second".into(), 1_000_000.into());
            limits.insert("max_pending_per_requestor".into(), 1_000_000.into());
            let s = a.get_mut("signer").unwrap().as_table_mut().unwrap();
            s.insert("timeout".into(), "3s".into());
        },
    );
    stack.pin_ports();
    stack
}

/// Kills `daemon` each time the acknowledged-operation count crosses a
/// mark, restarting it after a random pause; for the signer, also one
/// stopped (SIGSTOP) and one down window. Returns (kills, approvals
/// acknowledged while the signer was unreachable, whether the load was
/// still running at the end of those windows).
fn chaos(
    daemon: &mut Daemon,
    target: Target,
    ledger: &Ledger,
    total_ops: usize,
    cfg: &LoadConfig,
    load_done: &AtomicBool,
) -> (usize, usize, bool) {
    let mut rng = Rng::new(cfg.seed);
    let mut marks: Vec<usize> = (0..cfg.kills)
        .map(|_| rng.range((total_ops / 50) as u64, (total_ops * 19 / 20) as u64) as usize)
        .collect();
    marks.sort_unstable();
    let mut outages: Vec<(usize, &str)> = if target == Target::Signer {
        vec![(total_ops * 3 / 10, "STOP"), (total_ops * 6 / 10, "DOWN")]
    } else {
        Vec::new()
    };
    let mut kills = 0;
    let mut during_outage = 0;
    let mut load_running = true;
    let deadline = Instant::now() + Duration::from_secs(1200);
    while !marks.is_empty() || !outages.is_empty() {
        assert!(Instant::now() < deadline, "the load stopped progressing");
        let now = ledger.progress.load(Ordering::Relaxed);
        if let Some(&(at, kind)) = outages.first()
            && now >= at
        {
            outages.remove(0);
            let before = ledger.approved.lock().unwrap().len();
            if kind == "STOP" {
                daemon.signal("STOP");
                std::thread::sleep(Duration::from_secs(5));
                daemon.signal("CONT");
            } else {
                daemon.kill();
                std::thread::sleep(Duration::from_secs(5));
                daemon.restart();
            }
            during_outage += ledger.approved.lock().unwrap().len() - before;
            load_running &= !load_done.load(Ordering::Relaxed);
            continue;
        }
        if marks.first().is_some_and(|&m| now >= m) {
            marks.remove(0);
            // A random moment within the next few milliseconds of work.
            std::thread::sleep(Duration::from_millis(rng.range(0, 40)));
            daemon.kill();
            kills += 1;
            std::thread::sleep(Duration::from_millis(rng.range(0, 300)));
            daemon.restart();
            continue;
        }
        if load_done.load(Ordering::Relaxed) {
            // The load finished before every mark: the rest happen now,
            // while clients wait on their requests.
            if let Some(m) = marks.first_mut() {
                *m = 0;
            }
            if let Some(o) = outages.first_mut() {
                o.0 = 0;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (kills, during_outage, load_running)
}

fn run(target: Target) {
    let cfg = LoadConfig::from_env();
    println!("config: {cfg:?}");
    let started = Instant::now();
    let mut stack = stack();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let admin = stack.admin_ident();
    let users: Vec<_> = (0..cfg.workers)
        .map(|w| stack.mint(&MintSpec::new(&format!("user{w}"), &[])))
        .collect();
    let user_clients: Vec<_> = users
        .iter()
        .map(|u| stack.approver_client(Some(u)))
        .collect();
    let mut admin_client = stack.approver_client(Some(&admin));
    let names: Vec<Vec<String>> = (0..cfg.workers)
        .map(|w| {
            (w..cfg.requests)
                .step_by(cfg.workers)
                .map(|i| format!("load-{i:06}"))
                .collect()
        })
        .collect();
    let ledger = Arc::new(Ledger::default());
    let load_done = AtomicBool::new(false);
    let total_ops = 2 * cfg.requests;

    let (kills, during_outage, outage_under_load) = std::thread::scope(|s| {
        let daemon = match target {
            Target::Approver => &mut stack.approver,
            Target::Signer => &mut stack.signer,
        };
        let (chaos_ledger, load_done, cfg2) = (&*ledger, &load_done, &cfg);
        let killer =
            s.spawn(move || chaos(daemon, target, chaos_ledger, total_ops, cfg2, load_done));
        rt.block_on(async {
            let mut tasks = Vec::new();
            for (w, client) in user_clients.iter().enumerate() {
                let (client, admin_c, admin, names) = (
                    client.clone(),
                    admin_client.clone(),
                    admin.clone(),
                    names[w].clone(),
                );
                let ledger = ledger.clone();
                tasks.push(tokio::spawn(async move {
                    load::client_task(&ledger, client, admin_c, &admin, names).await;
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        load_done.store(true, Ordering::Relaxed);
        let r = killer.join().unwrap();
        // Every client waits for its certificates (like `certctl
        // certificate wait`), after the last fault.
        rt.block_on(async {
            let mut tasks = Vec::new();
            for (w, client) in user_clients.iter().enumerate() {
                let (client, names) = (client.clone(), names[w].clone());
                let ledger = ledger.clone();
                tasks.push(tokio::spawn(async move {
                    load::wait_all(&ledger, client, names, Duration::from_secs(300)).await;
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        r
    });

    let objects = rt.block_on(load::list_all(&ledger, &mut admin_client));
    // Stop both the hard way, then judge the files they left.
    stack.signer.kill();
    stack.approver.kill();
    let journal = grpc::journal_issued(&stack.journal_path());
    let verdict = load::judge(&ledger, &objects, &journal);
    run_ok(
        Command::new(bin("certsign-signer"))
            .args(["audit", "verify", "--config"])
            .arg(stack.dir.join("signer/signer.toml")),
    );
    let integrity = grpc::sqlite_integrity_check(&stack.db_path());
    assert_eq!(integrity, "ok", "PRAGMA integrity_check");
    for (what, log) in [
        ("signer", stack.signer.log()),
        ("approver", stack.approver.log()),
    ] {
        assert!(!log.contains("panicked"), "the {what} panicked:\n{log}");
    }
    assert_eq!(kills, cfg.kills, "every planned kill happened");
    assert_eq!(
        verdict.acked_creates,
        cfg.requests.min(verdict.acked_creates)
    );
    assert!(verdict.issued >= verdict.acked_approvals, "{verdict:?}");
    if target == Target::Signer && outage_under_load {
        assert!(
            during_outage > 0,
            "no approval was accepted while the signer was unreachable"
        );
    }
    let retried = ledger.retried_codes.lock().unwrap().clone();
    println!(
        "FIGURES kill-{} requests={} workers={} kills={kills} seed={} stored={} acked_creates={} acked_approvals={} issued={} issued_twice=0 duplicate_serials=0 approvals_during_signer_outage={during_outage} retried_calls={} retried_codes={retried:?} integrity_check={integrity} elapsed_s={}",
        match target {
            Target::Approver => "approver",
            Target::Signer => "signer",
        },
        cfg.requests,
        cfg.workers,
        cfg.seed,
        verdict.stored,
        verdict.acked_creates,
        verdict.acked_approvals,
        verdict.issued,
        verdict.retries,
        started.elapsed().as_secs()
    );
}

#[test]
fn kill_approver_under_load() {
    run(Target::Approver);
}

#[test]
fn kill_signer_and_cut_it_off_under_load() {
    run(Target::Signer);
}
