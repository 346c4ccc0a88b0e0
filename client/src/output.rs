//! What certctl prints and how it ends: stdout lines, one-line errors on
//! stderr, io errors in a few words, and errors that carry their own exit code.
//!
//! It is the leaf every other module prints through; it imports no other
//! certctl module, and it never prints anything but what it is handed.

use std::io::Write as _;

/// An error with a specific exit code (e.g. `certificate wait`: 2 denied,
/// 3 failed, 4 timed out).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// The process exit code.
    pub code: u8,
    /// The one-line message.
    pub message: String,
}

/// A line kubectl prints as it is, without certctl's `error: ` prefix:
/// the server's own words (`Error from server (NotFound): ...`,
/// `The CertificateSigningRequest "x" is invalid: ...`). Exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KubectlLine(pub String);

/// An io error in a few words (`connection refused`, `No such file or directory`).
pub fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::NotFound => "No such file or directory".into(),
        ErrorKind::PermissionDenied => "permission denied".into(),
        ErrorKind::TimedOut => "timed out".into(),
        _ => {
            let s = e.to_string();
            // Drop " (os error N)": it helps nobody reading one line.
            match s.find(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        }
    }
}

/// Writes to stdout; a closed pipe (`certctl get csr | head -1`) is not an error.
pub fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

/// Prints `error: ...` (or a [`KubectlLine`] as it is) as one line on stderr.
pub fn print_error(e: &anyhow::Error) {
    let (prefix, msg) = match e.downcast_ref::<KubectlLine>() {
        Some(line) => ("", line.0.clone()),
        None => ("error: ", format!("{e:#}")),
    };
    let msg = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    let _ = writeln!(std::io::stderr().lock(), "{prefix}{msg}");
}
