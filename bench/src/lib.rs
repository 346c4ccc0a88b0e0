//! certsign benchmarks: the measuring parts shared by the `certsign-bench`
//! subcommands (latency statistics, the closed- and open-loop drivers, the
//! gRPC `Sign` and cfssl HTTP targets, host facts for the record).
//!
//! It must never be part of a service, never measure in the CI test run
//! (there `tests/smoke.rs` only checks that the commands run and report),
//! and never report a number it did not measure: every rate is completed,
//! checked answers over wall-clock time.

#![forbid(unsafe_code)]

pub mod cpu;
pub mod h2grpc;
pub mod http;
pub mod issue;
pub mod pipeline;
pub mod scale;
pub mod stats;
pub mod versus;

/// `uptime`'s load averages and the date, for the record next to a result.
pub fn machine_note() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    format!("{date}, {cores} cores, load average {}", load.join(" "))
}

/// A workspace binary built next to this one (`target/<profile>/<name>`);
/// the bench measures the build it was compiled with.
pub fn bin(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe
        .parent()
        .map(|d| d.join(name))
        .ok_or_else(|| anyhow::anyhow!("no directory for {}", exe.display()))?;
    anyhow::ensure!(
        p.exists(),
        "{} not built: run `cargo build --release --workspace --bins` first",
        p.display()
    );
    Ok(p)
}
