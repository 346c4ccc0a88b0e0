//! `certsign-bench`: one documented command per benchmark of
//! docs/BENCHMARKS.md. Build with `cargo build --release --workspace`
//! (it starts the release `certsign-signer` / `certsign-approver` next to
//! it).
//!
//! It must never run as part of the test suite: these are measurements,
//! not timed tests.

use clap::{Parser, Subcommand};

// The load generator shares the cores with what it measures; the same
// allocator as the approver keeps its own share small.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "certsign-bench",
    about = "certsign benchmarks (docs/BENCHMARKS.md)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// (1) In-process issuance per second, per CA key type, 1 thread and all cores.
    Issue {
        /// CA key types (init --key-type values).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "ecdsa-p256,ed25519,rsa2048,rsa"
        )]
        key_types: Vec<String>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// (2)+(3) Sign over mTLS vs cfssl serve (plain HTTP and mutual TLS),
    /// alternating, same concurrency, with (1) in every round; CPU per call
    /// of each.
    Versus {
        /// Calls in flight.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// HTTP/2 connections the signer's calls share.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 8.0)]
        secs: f64,
        /// Alternating peak rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// The fewest requests pre-made per signer run (more are made when
        /// the rate seen so far needs them).
        #[arg(long, default_value_t = 40_000)]
        pool: usize,
        /// Load generator threads: 1 runs it on one thread (a
        /// current-thread Tokio runtime), more on a multi-thread runtime.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        threads: u16,
        /// Requests per Sign call: above 1, batched calls of requests
        /// approved by one signed batch statement per call (at most 500).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=500))]
        batch: u16,
    },
    /// (4) create → approve → issued through the approver, many in flight;
    /// CPU per certificate of each process.
    Pipeline {
        /// Approver database (default: its SQLite file); e.g. postgres://certsign:certsign@127.0.0.1:5432/certsign_bench
        #[arg(long)]
        database_url: Option<String>,
        /// Requests in flight.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Connections per client identity.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 20.0)]
        secs: f64,
        /// Approver replicas sharing --database-url (PostgreSQL); creates
        /// and approvals are spread over them.
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        /// Load generator threads: 1 runs it on one thread (a
        /// current-thread Tokio runtime), more on a multi-thread runtime.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        threads: u16,
        /// Requests per signed approval: above 1, one batch statement per
        /// this many requests (concurrency ÷ batch workers).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        batch: u16,
    },
    /// (5) An approver over a store of N requests (SQLite, or PostgreSQL
    /// with --database-url): start-up, memory, list and get latency.
    Scale {
        /// Approver database (default: its SQLite file); e.g.
        /// postgres://certsign:certsign@127.0.0.1:5432/certsign_scale (filled
        /// unless it holds requests already).
        #[arg(long)]
        database_url: Option<String>,
        /// Requests in the store.
        #[arg(long, default_value_t = 1_000_000)]
        requests: usize,
        /// Calls per measured operation.
        #[arg(long, default_value_t = 2000)]
        calls: usize,
        /// Keep (or reuse) the init directory and its database here.
        #[arg(long)]
        keep: Option<std::path::PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Issue { key_types, secs } => {
            let cores = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            println!("# {}", certsign_bench::machine_note());
            println!("| CA key | 1 thread /s | {cores} threads /s |\n|---|---|---|");
            let mut steps = Vec::new();
            for kt in key_types {
                let tmp = certsign_bench::versus::tempfile_dir()?;
                let dir = tmp.join("ca");
                certsign_bench::issue::init(&dir, &kt)?;
                let limit = certsign_bench::issue::Limit::load(&dir)?;
                limit.issue_one(0).map_err(anyhow::Error::msg)?;
                let one = limit.run(1, secs).map_err(anyhow::Error::msg)?;
                let all = limit.run(cores, secs).map_err(anyhow::Error::msg)?;
                println!("| {kt} | {one:.0} | {all:.0} |");
                let s = limit.steps(secs / 5.0).map_err(anyhow::Error::msg)?;
                steps.push(format!(
                    "# {kt}, one thread, µs per certificate: CSR (parse, self-signature) {:.1} | usages and profile {:.1} | approval (admin's signature, chain, rules) {:.1} | certificate built {:.1} | CA signature {:.1} | sum {:.1}; approval from a batch statement of 64, verified once {:.1}",
                    s.csr_us,
                    s.profile_us,
                    s.approval_us,
                    s.build_us,
                    s.sign_us,
                    s.total_us(),
                    s.batch_approval_us
                ));
                let _ = std::fs::remove_dir_all(&tmp);
            }
            for line in steps {
                println!("{line}");
            }
            let (verify, sign) = certsign_bench::issue::p256_primitives_us(secs / 5.0)
                .map_err(anyhow::Error::msg)?;
            println!(
                "# ring P-256 alone, one thread: ECDSA verification {verify:.1} µs, signature {sign:.1} µs; a P-256 CA's required crypto per certificate (2 verifications, 1 signature) {:.1} µs",
                2.0 * verify + sign
            );
            println!("# {}", certsign_bench::machine_note());
        }
        Cmd::Versus {
            concurrency,
            connections,
            secs,
            rounds,
            pool,
            threads,
            batch,
        } => {
            let o = certsign_bench::versus::VersusOptions {
                concurrency,
                connections,
                secs,
                rounds,
                pool,
                batch: usize::from(batch),
            };
            let rt = load_generator_runtime(threads)?;
            println!("# load generator: {threads} thread(s)");
            let table = rt.block_on(certsign_bench::versus::versus(&o))?;
            println!("\n{table}");
        }
        Cmd::Pipeline {
            database_url,
            concurrency,
            connections,
            secs,
            replicas,
            threads,
            batch,
        } => {
            let shared = database_url
                .as_deref()
                .is_some_and(|u| u.starts_with("postgres"));
            if replicas == 0 || (replicas > 1 && !shared) {
                anyhow::bail!(
                    "--replicas: {replicas} is not allowed; use 1, or more with a postgres:// --database-url (replicas share only PostgreSQL)"
                );
            }
            let o = certsign_bench::pipeline::PipelineOptions {
                database_url,
                concurrency,
                connections,
                secs,
                replicas,
                batch: usize::from(batch),
            };
            let rt = load_generator_runtime(threads)?;
            println!("# {}", certsign_bench::machine_note());
            println!("# load generator: {threads} thread(s)");
            let (s, cpu) = rt.block_on(certsign_bench::pipeline::pipeline(&o))?;
            println!("replicas: {replicas}; requests per signed approval: {batch}");
            println!("issued (create to issued): {}", s.line());
            println!("CPU per issued certificate: {}", cpu.line());
            println!("# {}", certsign_bench::machine_note());
        }
        Cmd::Scale {
            database_url,
            requests,
            calls,
            keep,
        } => {
            if let Some(u) = &database_url {
                anyhow::ensure!(
                    u.starts_with("postgres://") || u.starts_with("postgresql://"),
                    "--database-url: {u:?} is not a postgres:// URL (the SQLite store is the default)"
                );
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let report = rt.block_on(certsign_bench::scale::scale(
                requests,
                calls,
                keep.as_deref(),
                database_url.as_deref(),
            ))?;
            println!("\n{report}");
        }
    }
    Ok(())
}

/// The load generator's runtime. It shares the cores with the servers it
/// measures, so its own CPU per call counts against them; on one thread
/// (the default) a call's tasks wake each other without waking another
/// thread, which costs about a fifth less CPU per call than two workers at
/// 256 in flight on a 2-core machine.
/// More threads are for machines where one cannot keep up.
fn load_generator_runtime(threads: u16) -> std::io::Result<tokio::runtime::Runtime> {
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(threads))
            .enable_all()
            .build()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_arguments() {
        let c =
            Cli::try_parse_from(["certsign-bench", "issue", "--key-types", "rsa,ed25519"]).unwrap();
        assert!(
            matches!(c.cmd, Cmd::Issue { ref key_types, .. } if key_types == &["rsa", "ed25519"])
        );
        let c = Cli::try_parse_from(["certsign-bench", "versus", "--concurrency", "8"]).unwrap();
        assert!(matches!(
            c.cmd,
            Cmd::Versus {
                concurrency: 8,
                connections: 4,
                ..
            }
        ));
        assert!(Cli::try_parse_from(["certsign-bench", "versus", "--concurrency", "x"]).is_err());
        // The load generator runs on one thread unless told otherwise, and
        // on at least one.
        assert!(matches!(c.cmd, Cmd::Versus { threads: 1, .. }));
        assert!(matches!(c.cmd, Cmd::Versus { batch: 1, .. }));
        let c = Cli::try_parse_from(["certsign-bench", "versus", "--batch", "100"]).unwrap();
        assert!(matches!(c.cmd, Cmd::Versus { batch: 100, .. }));
        assert!(Cli::try_parse_from(["certsign-bench", "versus", "--batch", "501"]).is_err());
        let c = Cli::try_parse_from(["certsign-bench", "pipeline", "--threads", "3"]).unwrap();
        assert!(matches!(c.cmd, Cmd::Pipeline { threads: 3, .. }));
        for cmd in ["versus", "pipeline"] {
            let e = Cli::try_parse_from(["certsign-bench", cmd, "--threads", "0"]).unwrap_err();
            assert!(e.to_string().contains("--threads"), "{e}");
        }
    }
}
