//! CPU time per call: what a run cost each server process, the load
//! generator (this process) and the rest of the machine, read from
//! `/proc/<pid>/stat` and `/proc/stat` before and after it.
//!
//! A rate says how fast; CPU per call says where the cores went, and it
//! moves less than a rate when the machine's speed drifts. When the cores
//! are saturated (`busy` near the core count) the rates of two servers
//! driven this way are in the inverse ratio of their CPU per call (all
//! parts together), which is how docs/BENCHMARKS.md reads "twice
//! cfssl". Linux only. It must never judge a test: it is a measurement.

use std::sync::OnceLock;
use std::time::Instant;

/// User + system CPU seconds of process `pid`, all its threads (the
/// kernel adds exited threads' time to the process's).
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("{path} (has the process exited?): {e}"))?;
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

/// Busy CPU seconds of the whole machine (`/proc/stat`: user, nice,
/// system, irq, softirq, steal; not idle or iowait).
pub fn machine_busy_secs() -> anyhow::Result<f64> {
    let stat =
        std::fs::read_to_string("/proc/stat").map_err(|e| anyhow::anyhow!("/proc/stat: {e}"))?;
    let ticks = stat
        .lines()
        .next()
        .and_then(machine_busy_ticks)
        .ok_or_else(|| anyhow::anyhow!("/proc/stat: no aggregate cpu line"))?;
    Ok(ticks as f64 / clock_ticks()?)
}

/// The busy ticks of `/proc/stat`'s aggregate `cpu` line.
fn machine_busy_ticks(line: &str) -> Option<u64> {
    let mut f = line.split_whitespace();
    if f.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = f.take(8).map(|x| x.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal
    (v.len() == 8).then(|| v[0] + v[1] + v[2] + v[5] + v[6] + v[7])
}

/// A run being metered: named groups of server processes, this process
/// (the load generator) and the whole machine, at the run's start.
#[derive(Debug)]
pub struct Processes {
    groups: Vec<(String, Vec<u32>, f64)>,
    driver: (String, f64),
    machine: f64,
    wall: Instant,
}

/// CPU per call of one run, per process group, in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Each group's, then this process's, then `rest of the machine`
    /// (every other process and the kernel's own threads: a database
    /// server, say).
    pub parts: Vec<(String, f64)>,
    /// Cores busy on average over the run, the whole machine.
    pub busy: f64,
}

impl Processes {
    /// Starts metering: each group's processes' CPU summed, and this
    /// process's under `this` ("load generator", or what it runs).
    pub fn start(groups: &[(&str, &[u32])], this: &str) -> anyhow::Result<Self> {
        let mut g = Vec::new();
        for (name, pids) in groups {
            g.push((name.to_string(), pids.to_vec(), sum_cpu(pids)?));
        }
        Ok(Processes {
            groups: g,
            driver: (this.to_string(), cpu_secs(std::process::id())?),
            machine: machine_busy_secs()?,
            wall: Instant::now(),
        })
    }

    /// The CPU since `start`, divided by `calls` completed calls.
    pub fn per_call(&self, calls: usize) -> anyhow::Result<Split> {
        let wall = self.wall.elapsed().as_secs_f64();
        let n = calls.max(1) as f64;
        let machine = machine_busy_secs()? - self.machine;
        let mut parts = Vec::new();
        let mut ours = 0.0;
        for (name, pids, before) in &self.groups {
            let d = sum_cpu(pids)? - before;
            ours += d;
            parts.push((name.clone(), 1000.0 * d / n));
        }
        let driver = cpu_secs(std::process::id())? - self.driver.1;
        ours += driver;
        parts.push((self.driver.0.clone(), 1000.0 * driver / n));
        // Ticks are counted per process and per CPU at different moments:
        // a small negative rest is rounding, not time.
        parts.push((
            "rest of the machine".into(),
            1000.0 * (machine - ours).max(0.0) / n,
        ));
        Ok(Split {
            parts,
            busy: if wall > 0.0 { machine / wall } else { 0.0 },
        })
    }
}

fn sum_cpu(pids: &[u32]) -> anyhow::Result<f64> {
    pids.iter().map(|p| cpu_secs(*p)).sum()
}

impl Split {
    /// `approver 0.461, signer 0.233, load generator 0.109, rest of the
    /// machine 0.010 = 0.813 ms (1.96 cores busy)`.
    pub fn line(&self) -> String {
        let parts: Vec<String> = self
            .parts
            .iter()
            .map(|(n, ms)| format!("{n} {ms:.3}"))
            .collect();
        format!(
            "{} = {:.3} ms ({:.2} cores busy)",
            parts.join(", "),
            self.total_ms(),
            self.busy
        )
    }

    /// The run of `v` with the median total (the upper one of an even
    /// count): one run's parts, so they add up to what the line says.
    pub fn median(v: &[Split]) -> Option<Split> {
        let mut runs: Vec<&Split> = v.iter().collect();
        runs.sort_by(|a, b| a.total_ms().total_cmp(&b.total_ms()));
        runs.get(runs.len() / 2).map(|s| (*s).clone())
    }

    /// All parts together.
    pub fn total_ms(&self) -> f64 {
        self.parts.iter().map(|(_, ms)| ms).sum()
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
    fn the_machine_line_adds_the_busy_columns() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let l = "cpu  100 2 30 5000 40 6 7 8 0 0";
        assert_eq!(machine_busy_ticks(l), Some(100 + 2 + 30 + 6 + 7 + 8));
        assert_eq!(machine_busy_ticks("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(machine_busy_ticks("cpu 1 2 3"), None);
        assert!(machine_busy_secs().unwrap() > 0.0);
    }

    #[test]
    fn a_split_names_each_group_the_load_generator_and_the_rest() {
        let me = std::process::id();
        let p = Processes::start(&[("itself", &[me])], "load generator").unwrap();
        let s = p.per_call(1).unwrap();
        let names: Vec<&str> = s.parts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["itself", "load generator", "rest of the machine"]);
        assert!(s.parts.iter().all(|(_, ms)| *ms >= 0.0));
        assert!(s.line().ends_with("cores busy)"), "{}", s.line());
        assert!(Processes::start(&[("gone", &[u32::MAX])], "x").is_err());
        assert!(Split::median(&[]).is_none());
        // The median is one whole run, by total (0.31, 0.30, 0.25), not
        // each part's median (0.20 + 0.05, a run that never happened).
        let run = |a: f64, b: f64| Split {
            parts: vec![("server".into(), a), ("load generator".into(), b)],
            busy: a + b,
        };
        let runs = [run(0.30, 0.01), run(0.10, 0.20), run(0.20, 0.05)];
        assert_eq!(Split::median(&runs), Some(run(0.10, 0.20)));
        assert_eq!(Split::median(&runs[..2]), Some(run(0.30, 0.01)));
    }

    /// The part named `name` of `s`.
    fn ms(s: &Split, name: &str) -> f64 {
        s.parts.iter().find(|(n, _)| n == name).map_or(0.0, |p| p.1)
    }

    #[test]
    fn this_process_spinning_is_metered() {
        let me = std::process::id();
        // Start metering first: CPU other test threads use between the two
        // readings must not count toward the 200 ms spun below.
        let p = Processes::start(&[("server", &[me])], "load generator").unwrap();
        let before = cpu_secs(me).unwrap();
        // Spin until /proc shows 200 ms of CPU (or give up after a minute:
        // then the reading is wrong and the assertions below fail).
        let t = Instant::now();
        let mut x = 0u64;
        while cpu_secs(me).unwrap() - before < 0.2 && t.elapsed().as_secs() < 60 {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        let s = p.per_call(2).unwrap();
        // 200 ms over 2 calls, seen by both readings of this process.
        assert!(ms(&s, "server") >= 100.0, "{}", s.line());
        assert!(ms(&s, "load generator") >= 100.0, "{}", s.line());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(s.busy > 0.0 && s.busy <= cores as f64 + 0.5, "{}", s.line());
    }
}
