//! Seconds until the certificates a daemon runs on expire, and the log
//! warning [`WARN_BEFORE`] ahead, repeated once a day per certificate
//! until it is renewed. Files are read again at every check, so a renewed
//! certificate is seen without a restart.
//!
//! It only reads certificates; it must never log anything but labels,
//! paths and dates.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use x509_parser::prelude::{FromDer as _, X509Certificate};

/// How long before a certificate expires the warnings start.
pub const WARN_BEFORE: Duration = Duration::from_secs(30 * 86400);

/// How often the files are checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);

/// How often a warning about the same certificate is repeated.
const REPEAT_WARNING: Duration = Duration::from_secs(86400);

/// The earliest notAfter (unix seconds) of the certificates in a PEM file
/// (a bundle's first expiry is when it starts to fail).
pub fn earliest_not_after(path: &Path) -> Result<i64, String> {
    let certs = crate::tls::load_certs(path).map_err(|e| e.to_string())?;
    certs
        .iter()
        .map(|der| {
            X509Certificate::from_der(der.as_ref())
                .map(|(_, c)| c.validity().not_after.timestamp())
                .map_err(|e| format!("{}: {e}", path.display()))
        })
        .try_fold(None, |min: Option<i64>, t| {
            t.map(|t| Some(min.map_or(t, |m| m.min(t))))
        })?
        .ok_or_else(|| format!("{}: no certificate", path.display()))
}

/// The renewal window when none is configured: 30 days, or a third of the
/// lifetime of a certificate that lives less than 90 days.
const DEFAULT_RENEWAL_WINDOW: Duration = Duration::from_secs(30 * 86400);

/// Whether a certificate valid from `not_before` to `not_after` (unix
/// seconds) is within its renewal window at `now`: `window` when set, else
/// the shorter of 30 days and a third of its lifetime.
pub fn renewal_due(
    not_before: i64,
    not_after: i64,
    now: SystemTime,
    window: Option<Duration>,
) -> bool {
    let secs = |t: i64| u64::try_from(t).unwrap_or(0);
    let lifetime = Duration::from_secs(secs(not_after - not_before));
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let left = Duration::from_secs(secs(not_after).saturating_sub(now));
    left <= window.unwrap_or_else(|| DEFAULT_RENEWAL_WINDOW.min(lifetime / 3))
}

/// When each label was last warned about.
#[derive(Debug, Default)]
pub struct Warnings {
    warned: HashMap<&'static str, Instant>,
}

impl Warnings {
    /// Whether a warning about `label` is due now (and note it).
    pub fn due(&mut self, label: &'static str) -> bool {
        if self
            .warned
            .get(label)
            .is_some_and(|t| t.elapsed() < REPEAT_WARNING)
        {
            return false;
        }
        self.warned.insert(label, Instant::now());
        true
    }

    /// Seconds until the certificate file `path` (called `label`) expires,
    /// warning in the log when that is within [`WARN_BEFORE`]. A file that
    /// cannot be read is a warning naming `daemon` ("the signer") and
    /// `None`. Both warnings are repeated at most daily.
    pub fn check(
        &mut self,
        label: &'static str,
        path: &Path,
        now: i64,
        daemon: &str,
    ) -> Option<i64> {
        let not_after = match earliest_not_after(path) {
            Ok(t) => t,
            Err(e) => {
                if self.due(label) {
                    tracing::warn!(certificate = label, error = %e, "cannot read a certificate {daemon} runs on");
                }
                return None;
            }
        };
        let left = not_after - now;
        let warn_before = i64::try_from(WARN_BEFORE.as_secs()).unwrap_or(i64::MAX);
        if left < warn_before && self.due(label) {
            let days_left = left.div_euclid(86400);
            let path = path.display().to_string();
            if left <= 0 {
                tracing::warn!(
                    certificate = label,
                    path,
                    days_left,
                    "certificate has expired; renew it"
                );
            } else {
                tracing::warn!(
                    certificate = label,
                    path,
                    days_left,
                    "certificate expires in {days_left} days; renew it"
                );
            }
        }
        Some(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_in_the_window_a_third_of_a_short_lifetime_by_default() {
        let at = |t: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(t);
        let year = 365 * 86400;
        // A year's certificate: 30 days before its end, not 31.
        assert!(!renewal_due(0, year, at(year as u64 - 31 * 86400), None));
        assert!(renewal_due(0, year, at(year as u64 - 30 * 86400), None));
        // A 3-day certificate: from its last day.
        assert!(!renewal_due(0, 3 * 86400, at(86400 + 3600), None));
        assert!(renewal_due(0, 3 * 86400, at(2 * 86400), None));
        // A configured window wins; an expired certificate is due.
        assert!(renewal_due(
            0,
            year,
            at(year as u64 - 40 * 86400),
            Some(Duration::from_secs(41 * 86400))
        ));
        assert!(renewal_due(0, 100, at(200), None));
    }

    #[test]
    fn warnings_repeat_daily_not_every_check() {
        let mut warned = Warnings::default();
        assert!(warned.due("tls"));
        assert!(!warned.due("tls"));
        assert!(warned.due("ca"));
    }
}
