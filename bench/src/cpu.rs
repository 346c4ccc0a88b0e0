//! CPU time per call: what a run cost the server process and the load
//! generator (this process), read from `/proc/<pid>/stat` before and
//! after it.
//!
//! A rate says how fast; CPU per call says where the cores went, and it
//! moves less than a rate when the machine's speed drifts. When the cores
//! are saturated (`busy` near the core count) the rates of two servers
//! driven this way are in the inverse ratio of their CPU per call (server
//! plus load generator), which is how docs/BENCHMARKS.md reads "twice
//! cfssl". Linux only. It must never judge a test: it is a measurement.

use std::sync::OnceLock;
use std::time::Instant;

/// User + system CPU seconds of process `pid`, all its threads (the
/// kernel adds exited threads' time to the process's).
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = utime_stime(&stat)
        .ok_or_else(|| anyhow::anyhow!("/proc/{pid}/stat: no utime and stime fields"))?;
    Ok(ticks as f64 / clock_ticks()?)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The
/// command name (field 2) is in parentheses and may itself contain spaces
/// and parentheses, so the fields are counted after the last `)`.
fn utime_stime(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, so utime (14) is the 12th.
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second of `/proc`'s times (`getconf CLK_TCK`).
fn clock_ticks() -> anyhow::Result<f64> {
    static TICKS: OnceLock<Option<f64>> = OnceLock::new();
    let t = TICKS.get_or_init(|| {
        let out = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()?;
        let t: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        (t > 0.0).then_some(t)
    });
    t.ok_or_else(|| anyhow::anyhow!("`getconf CLK_TCK` gave no clock tick rate"))
}

/// A run being metered: the server's and this process's CPU at its start.
#[derive(Debug)]
pub struct Meter {
    server: Option<(u32, f64)>,
    driver: f64,
    wall: Instant,
}

/// CPU per call of one run, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PerCall {
    /// The server process (0 when there is none: the in-process limit).
    pub server_ms: f64,
    /// This process: the load generator, or the limit's own work.
    pub driver_ms: f64,
    /// Cores busy on average over the run (server plus this process).
    pub busy: f64,
}

impl Meter {
    /// Starts metering `server` (if any) and this process.
    pub fn start(server: Option<u32>) -> anyhow::Result<Self> {
        let server = match server {
            Some(pid) => Some((pid, cpu_secs(pid)?)),
            None => None,
        };
        Ok(Meter {
            server,
            driver: cpu_secs(std::process::id())?,
            wall: Instant::now(),
        })
    }

    /// The CPU since `start`, divided by `calls` completed calls.
    pub fn per_call(&self, calls: usize) -> anyhow::Result<PerCall> {
        let wall = self.wall.elapsed().as_secs_f64();
        let driver = cpu_secs(std::process::id())? - self.driver;
        let server = match self.server {
            Some((pid, before)) => cpu_secs(pid)? - before,
            None => 0.0,
        };
        let n = calls.max(1) as f64;
        Ok(PerCall {
            server_ms: 1000.0 * server / n,
            driver_ms: 1000.0 * driver / n,
            busy: if wall > 0.0 {
                (server + driver) / wall
            } else {
                0.0
            },
        })
    }
}

impl PerCall {
    /// Server plus load generator.
    pub fn total_ms(&self) -> f64 {
        self.server_ms + self.driver_ms
    }

    /// `0.196 + 0.048 = 0.244 ms (1.95 cores busy)`.
    pub fn line(&self) -> String {
        format!(
            "{:.3} + {:.3} = {:.3} ms ({:.2} cores busy)",
            self.server_ms,
            self.driver_ms,
            self.total_ms(),
            self.busy
        )
    }

    /// The per-field medians of `v` (each field on its own).
    pub fn median(v: &[PerCall]) -> PerCall {
        let m = |f: fn(&PerCall) -> f64| {
            let mut x: Vec<f64> = v.iter().map(f).collect();
            x.sort_by(f64::total_cmp);
            x.get(x.len() / 2).copied().unwrap_or(0.0)
        };
        PerCall {
            server_ms: m(|p| p.server_ms),
            driver_ms: m(|p| p.driver_ms),
            busy: m(|p| p.busy),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fields_are_counted_after_the_last_parenthesis() {
        // A command name with a space and a ')' of its own.
        let stat = "4242 (tokio (rt) w) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    731 269 0 0 20 0 4 0 100 0 0";
        assert_eq!(utime_stime(stat), Some(1000));
        assert_eq!(utime_stime("4242 (x) S 1 2"), None);
        assert_eq!(utime_stime("no parenthesis"), None);
    }

    #[test]
    fn this_process_spinning_is_metered() {
        let m = Meter::start(Some(std::process::id())).unwrap();
        // Spin until /proc shows 200 ms of CPU (or give up after a minute:
        // then the reading is wrong and the assertions below fail).
        let t = Instant::now();
        let mut x = 0u64;
        while cpu_secs(std::process::id()).unwrap() - m.driver < 0.2 && t.elapsed().as_secs() < 60 {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        let p = m.per_call(2).unwrap();
        // 200 ms over 2 calls, seen by both readings of this process.
        assert!(p.driver_ms >= 100.0, "driver {} ms per call", p.driver_ms);
        assert!(p.server_ms >= 100.0, "server {} ms per call", p.server_ms);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Both readings are this process: at most twice its cores.
        assert!(
            p.busy > 0.0 && p.busy <= 2.0 * cores as f64 + 0.5,
            "busy {}",
            p.busy
        );
    }
}
