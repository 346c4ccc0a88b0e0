//! Latency statistics: nearest-rank percentiles over every sample.
//!
//! It must never interpolate or drop samples: p99.9 of 1,000 samples is
//! the largest but one, as a reader checking by hand would expect.

use std::time::Duration;

/// The median of `v` (the upper one of an even count; 0 for none), as
/// the runs' medians are taken: per-round ratios, rates, CPU per call.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The nearest-rank percentile `p` (0 < p ≤ 100) of `sorted` (ascending).
/// `None` for no samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    // The epsilon keeps binary rounding (0.999 * 1000 = 999.0000000000001)
    // from pushing the rank one sample too far.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    let i = rank.clamp(1, sorted.len()) - 1;
    sorted.get(i).copied()
}

/// A run's outcome.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Completed, checked operations.
    pub ok: usize,
    /// Failed operations.
    pub errors: usize,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Every latency, ascending.
    pub latencies: Vec<Duration>,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// The run stopped early because its pre-made requests were used up
    /// (the rate is then over the time it ran, and `line` says so).
    pub ran_out: bool,
}

impl Summary {
    /// From raw samples (sorted here).
    pub fn new(
        mut latencies: Vec<Duration>,
        errors: usize,
        elapsed: Duration,
        first_error: Option<String>,
    ) -> Self {
        latencies.sort_unstable();
        Summary {
            ok: latencies.len(),
            errors,
            elapsed,
            latencies,
            first_error,
            ran_out: false,
        }
    }

    /// Completed operations per second.
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.ok as f64 / s } else { 0.0 }
    }

    /// Percentile in milliseconds (0 without samples).
    pub fn ms(&self, p: f64) -> f64 {
        percentile(&self.latencies, p)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    }

    /// One line: rate, p50/p99/p99.9, errors.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{:>9.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  ok {}  errors {}",
            self.rate(),
            self.ms(50.0),
            self.ms(99.0),
            self.ms(99.9),
            self.ok,
            self.errors
        );
        if self.ran_out {
            s.push_str(&format!(
                "  (request pool used up after {:.1} s: a larger --pool measures the whole run)",
                self.elapsed.as_secs_f64()
            ));
        }
        if let Some(e) = &self.first_error {
            s.push_str(&format!("  first error: {e}"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn median_of_odd_even_and_none() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 3.0);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn nearest_rank() {
        let s = ms(&(1..=1000).collect::<Vec<_>>());
        assert_eq!(percentile(&s, 50.0), Some(Duration::from_millis(500)));
        assert_eq!(percentile(&s, 99.0), Some(Duration::from_millis(990)));
        assert_eq!(percentile(&s, 99.9), Some(Duration::from_millis(999)));
        assert_eq!(percentile(&s, 100.0), Some(Duration::from_millis(1000)));
        assert_eq!(percentile(&ms(&[7]), 99.9), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_sorts_and_rates() {
        let s = Summary::new(ms(&[30, 10, 20]), 1, Duration::from_secs(2), None);
        assert_eq!(s.ok, 3);
        assert!((s.rate() - 1.5).abs() < 1e-9);
        assert!((s.ms(50.0) - 20.0).abs() < 1e-9);
        assert!(!s.line().contains("used up"), "{}", s.line());
    }

    #[test]
    fn a_run_cut_short_by_its_pool_says_so() {
        let mut s = Summary::new(ms(&[5, 6]), 0, Duration::from_millis(2500), None);
        s.ran_out = true;
        assert!(
            s.line().contains("request pool used up after 2.5 s"),
            "{}",
            s.line()
        );
    }
}
