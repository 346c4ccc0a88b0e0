//! The documented benchmark commands still run: `certsign-bench issue`,
//! `versus`, `pipeline` (SQLite) and `scale` (SQLite and PostgreSQL), each
//! for a moment against
//! the debug build of the daemons, must exit 0 and print every part of
//! their report with answers that were all accepted.
//!
//! It never judges a number's size: speed is measured by the benchmarks
//! themselves (docs/BENCHMARKS.md), not asserted here. `versus` runs
//! against the real `cfssl serve` (Debian golang-cfssl, which the test
//! command installs).

#![allow(clippy::unwrap_used)]

use std::process::Command;

use certsign_tests::run_ok;

/// Runs `certsign-bench args...`; its stdout, or a panic with both streams.
fn bench(args: &[&str]) -> String {
    run_ok(Command::new(env!("CARGO_BIN_EXE_certsign-bench")).args(args))
}

/// The number right after `key` in `line` (e.g. `ok 123`).
fn after(line: &str, key: &str) -> f64 {
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == key {
            let v = words.next().unwrap_or_default();
            return v
                .trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .unwrap_or_else(|_| panic!("{key} is followed by {v:?} in {line:?}"));
        }
    }
    panic!("no {key:?} in {line:?}")
}

/// The one line of `out` that contains `needle`, Markdown table rows
/// aside unless `needle` is one.
fn line_with<'a>(out: &'a str, needle: &str) -> &'a str {
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(needle) && (needle.starts_with('|') || !l.starts_with('|')))
        .collect();
    assert_eq!(lines.len(), 1, "{needle:?} in:\n{out}");
    lines[0]
}

#[test]
fn issue_prints_rates_steps_and_primitives() {
    let out = bench(&["issue", "--key-types", "ecdsa-p256", "--secs", "0.2"]);
    let row: Vec<&str> = line_with(&out, "| ecdsa-p256 |")
        .split('|')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(row.len(), 3, "{row:?}");
    for rate in &row[1..] {
        assert!(rate.parse::<f64>().unwrap() > 0.0, "{row:?}");
    }
    let steps = line_with(&out, "# ecdsa-p256, one thread, µs per certificate:");
    for step in [
        "CSR (parse, self-signature)",
        "usages and profile",
        "approval (admin's signature, chain, rules)",
        "certificate built",
        "CA signature",
    ] {
        assert!(steps.contains(step), "{steps}");
    }
    assert!(after(steps, "sum") > 0.0, "{steps}");
    // The batch path: requests approved by one verified, cached statement.
    assert!(
        steps.contains("approval from a batch statement of 64, verified once"),
        "{steps}"
    );
    assert!(after(steps, "once") > 0.0, "{steps}");
    let primitives = line_with(&out, "# ring P-256 alone");
    assert!(after(primitives, "verification") > 0.0, "{primitives}");
    assert!(after(primitives, "signature") > 0.0, "{primitives}");
}

#[test]
fn pipeline_issues_through_the_approver_without_errors() {
    let out = bench(&[
        "pipeline",
        "--concurrency",
        "16",
        "--connections",
        "2",
        "--secs",
        "1",
    ]);
    let issued = line_with(&out, "issued (create to issued):");
    assert!(after(issued, "ok") > 0.0, "{issued}");
    assert_eq!(after(issued, "errors"), 0.0, "{issued}");
    let cpu = line_with(&out, "CPU per issued certificate:");
    for part in ["approver", "signer", "load generator", "cores busy"] {
        assert!(cpu.contains(part), "{cpu}");
    }
}

#[test]
fn scale_fills_a_store_and_reports_every_call() {
    let out = bench(&["scale", "--requests", "3000", "--calls", "20"]);
    for call in [
        "list condition=Pending",
        "list signerName=kubelet-serving",
        "list username=",
        "get:",
    ] {
        let l = line_with(&out, call);
        assert_eq!(after(l, "ok"), 20.0, "{l}");
        assert_eq!(after(l, "errors"), 0.0, "{l}");
    }
    let report = line_with(&out, "requests: 3000;");
    assert!(report.contains("approver start-up"), "{report}");
    let rss = line_with(&out, "resident memory after the calls:");
    assert!(rss.contains("peak"), "{rss}");
}

/// `scale --database-url` on a fresh database of the test PostgreSQL
/// (`CERTSIGN_TEST_DATABASE_URL`; FAILS without it unless
/// `CERTSIGN_SKIP_PG=1`): filled, measured, every call answered.
#[test]
fn scale_on_postgres_fills_the_database_and_reports_every_call() {
    let Ok(base) = std::env::var("CERTSIGN_TEST_DATABASE_URL") else {
        if std::env::var("CERTSIGN_SKIP_PG").as_deref() == Ok("1") {
            eprintln!("CERTSIGN_SKIP_PG=1: skipping scale on PostgreSQL");
            return;
        }
        panic!(
            "CERTSIGN_TEST_DATABASE_URL is not set (tests/run.sh starts PostgreSQL); \
             set CERTSIGN_SKIP_PG=1 to skip explicitly"
        );
    };
    let db = format!("scale_smoke_{}", std::process::id());
    let admin = |sql: String| {
        let base = base.clone();
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move {
                let pool = sqlx::PgPool::connect(&base).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
            });
    };
    admin(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    admin(format!("CREATE DATABASE {db}"));
    let (head, _) = base.rsplit_once('/').unwrap();
    let url = format!("{head}/{db}");
    let out = bench(&[
        "scale",
        "--requests",
        "3000",
        "--calls",
        "20",
        "--database-url",
        &url,
    ]);
    admin(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    assert!(out.contains("populated 3000 requests"), "{out}");
    for call in [
        "list condition=Pending",
        "list signerName=kubelet-serving",
        "list username=",
        "get:",
    ] {
        let l = line_with(&out, call);
        assert_eq!(after(l, "ok"), 20.0, "{l}");
        assert_eq!(after(l, "errors"), 0.0, "{l}");
    }
    let report = line_with(&out, "requests: 3000;");
    assert!(report.contains("PostgreSQL database"), "{report}");
    let rss = line_with(&out, "resident memory after the calls:");
    assert!(rss.contains("peak"), "{rss}");
}

#[test]
fn versus_measures_certsign_cfssl_and_the_limit_in_one_run() {
    let out = bench(&[
        "versus",
        "--concurrency",
        "8",
        "--connections",
        "1",
        "--secs",
        "0.3",
        "--rounds",
        "1",
        "--pool",
        "100",
    ]);
    for peak in [
        "round 0 certsign peak",
        "round 0 cfssl    peak",
        "round 0 cfssl mTLS peak",
        "certsign  at 50%",
        "cfssl     at 50%",
        "cfssl mTLS at 50%",
        "certsign  at 90%",
        "cfssl     at 90%",
        "cfssl mTLS at 90%",
    ] {
        let l = line_with(&out, peak);
        assert!(after(l, "ok") > 0.0, "{l}");
        assert_eq!(after(l, "errors"), 0.0, "{l}");
    }
    assert!(after(line_with(&out, "round 0 limit (1)"), "(1)") > 0.0);
    for what in ["certsign", "limit (1)", "cfssl", "cfssl mTLS"] {
        line_with(&out, &format!("median CPU per call, {what}:"));
    }
    for row in [
        "| certsign Sign (mTLS, journal) |",
        "| cfssl serve (HTTP) |",
        "| cfssl serve (mTLS) |",
    ] {
        line_with(&out, row);
    }
    let ratio = line_with(&out, "median per-round ratio certsign/cfssl:");
    assert!(after(ratio, "certsign/cfssl:") > 0.0, "{ratio}");
    let budget = line_with(&out, "2× cfssl needs certsign's CPU per call");
    assert!(after(budget, "measured") > 0.0, "{budget}");
}

/// The batch path: `versus --batch` sends batched Sign calls of requests
/// approved by one signed batch statement each, counts every certificate
/// (each batch fully answered, none refused or replayed) and runs (1) on
/// batch-approved requests.
#[test]
fn versus_batch_sends_batched_calls_of_batch_approved_requests() {
    let out = bench(&[
        "versus",
        "--concurrency",
        "4",
        "--connections",
        "1",
        "--secs",
        "0.3",
        "--rounds",
        "1",
        "--pool",
        "100",
        "--batch",
        "10",
    ]);
    line_with(&out, "# batch: 10 requests per Sign call");
    for peak in [
        "round 0 certsign peak",
        "certsign  at 50%",
        "certsign  at 90%",
    ] {
        let l = line_with(&out, peak);
        let ok = after(l, "ok");
        assert!(ok > 0.0 && ok % 10.0 == 0.0, "whole batches only: {l}");
        assert_eq!(after(l, "errors"), 0.0, "{l}");
    }
    assert!(after(line_with(&out, "round 0 limit (1)"), "(1)") > 0.0);
    line_with(&out, "| certsign Sign (mTLS, journal), batches of 10 |");
    let budget = line_with(&out, "2× cfssl needs certsign's CPU per call");
    assert!(
        budget.contains("1 verification(s), 1 signature"),
        "{budget}"
    );
}

/// The pipeline with batch approvals: one signed batch statement per 4
/// requests, every request issued.
#[test]
fn pipeline_with_batch_approvals_issues_every_request() {
    let out = bench(&[
        "pipeline",
        "--concurrency",
        "8",
        "--connections",
        "2",
        "--secs",
        "1",
        "--batch",
        "4",
    ]);
    line_with(&out, "requests per signed approval: 4");
    let issued = line_with(&out, "issued (create to issued):");
    let ok = after(issued, "ok");
    assert!(
        ok > 0.0 && ok % 4.0 == 0.0,
        "whole batches issued: {issued}"
    );
    assert_eq!(after(issued, "errors"), 0.0, "{issued}");
}
