//! Readers of what the daemons recorded, to judge a run: the signer's
//! journal, serials of issued chains, and the integrity of the approver's
//! SQLite file (checked with an outside tool).
//!
//! It must never write a record: a judge only reads.

use std::path::Path;

use crate::pki::pem_der;

/// One `issued` line of the signer's journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalIssue {
    /// Request uid.
    pub uid: String,
    /// Request name.
    pub name: String,
    /// Serial, hex.
    pub serial: String,
    /// CSR hash, hex.
    pub csr_sha256: String,
    /// "approvals", "renewal", "approver", "console".
    pub evidence: String,
    /// The Sign caller.
    pub caller: String,
    /// Certificate chain PEM.
    pub certificate: String,
}

/// Every `issued` line of a journal, in order.
pub fn journal_issued(path: &Path) -> Vec<JournalIssue> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("journal line is not JSON ({e}): {l}"));
            if v["event"] != "issued" {
                return None;
            }
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            Some(JournalIssue {
                uid: s("uid"),
                name: s("name"),
                serial: s("serial"),
                csr_sha256: s("csr_sha256"),
                evidence: s("evidence"),
                caller: s("caller"),
                certificate: s("certificate"),
            })
        })
        .collect()
}

/// The reasons of the `refused` lines of a journal, in order.
pub fn journal_refusals(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "refused")
        .map(|v| v["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The serial (lowercase hex, no leading zeros stripped beyond DER) of the
/// first certificate in a PEM chain.
pub fn serial_of(pem: &[u8]) -> String {
    let der = pem_der(std::str::from_utf8(pem).unwrap());
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    hex::encode(cert.raw_serial())
}

/// `PRAGMA integrity_check` on a SQLite file with an outside tool (the
/// sqlite3 CLI when installed, else python3's sqlite3 module): its output.
pub fn sqlite_integrity_check(db: &Path) -> String {
    let cli = std::process::Command::new("sqlite3")
        .arg(db)
        .arg("PRAGMA integrity_check;")
        .output();
    if let Ok(out) = cli
        && out.status.success()
    {
        return String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    crate::run_ok(
        std::process::Command::new("python3")
            .arg("-c")
            .arg("import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])")
            .arg(db),
    )
    .trim()
    .to_string()
}

/// `openssl verify` (an outside judge) of the chain in `cert_pem` against
/// the CA file `ca`; panics with openssl's output unless it verifies.
pub fn openssl_verify(ca: &Path, cert_pem: &[u8], scratch: &Path) {
    std::fs::write(scratch, cert_pem).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(ca)
        .arg(scratch)
        .output()
        .expect("openssl must be installed");
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
