//! The daemon's global flags and exit codes: `--help`, `--version`,
//! `--log-format text|json` (the approver's switch), and exit 64 for a
//! configuration that does not load, as the approver does.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_prints_the_usage_and_exits_0() {
    for flag in ["--help", "-h"] {
        let out = run(&[flag]);
        assert_eq!(out.status.code(), Some(0), "{flag}");
        let usage = text(&out.stdout);
        assert!(usage.starts_with("usage: certsign-signer"), "{usage}");
        for cmd in [
            "init --dir",
            "serve --config",
            "audit verify",
            "issue --config",
        ] {
            assert!(usage.contains(cmd), "{cmd} missing from {usage}");
        }
        assert!(usage.contains("--log-format text|json"), "{usage}");
    }
}

#[test]
fn version_prints_the_version_and_exits_0() {
    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("certsign-signer {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_config_that_does_not_load_exits_64() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.toml");
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:0\"\nbogus = 1\n").unwrap();
    for cfg in [&missing, &bad] {
        let cfg = cfg.to_str().unwrap();
        for args in [
            &["serve", "--config", cfg][..],
            &["audit", "verify", "--config", cfg],
            &["--log-format", "json", "serve", "--config", cfg],
        ] {
            let out = run(args);
            assert_eq!(
                out.status.code(),
                Some(64),
                "{args:?}: {}",
                text(&out.stderr)
            );
            assert!(
                text(&out.stderr).contains(cfg),
                "{args:?}: {}",
                text(&out.stderr)
            );
        }
    }
    // A config that loads but whose CA key is unusable is not a config error.
    let pki = init(&[]);
    std::fs::remove_file(pki.p("signer/ca.key")).unwrap();
    let out = run(&["serve", "--config", pki.config().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

#[test]
fn log_format_json_writes_json_lines_and_text_does_not() {
    let pki = init(&[]);
    let (_, _) = openssl_csr(&pki, "alice", P256, "/CN=alice", &[]);
    let cfg = pki.config();
    let issue = |format: &str| {
        run(&[
            "--log-format",
            format,
            "issue",
            "--config",
            cfg.to_str().unwrap(),
            "--csr",
            pki.p("alice.csr").to_str().unwrap(),
            "--signer-name",
            "example.com/unknown",
            "--usages",
            "client auth",
            "--out",
            pki.p("alice.crt").to_str().unwrap(),
        ])
    };
    // The refusal is logged (one line per event) and the command fails.
    let out = issue("json");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("refused"))
        .unwrap_or_else(|| panic!("no refused log line: {err}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(v["fields"]["message"], "refused", "{line}");
    let out = issue("text");
    let err = text(&out.stderr);
    let line = err.lines().find(|l| l.contains("refused")).unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(line).is_err(),
        "{line}"
    );
    // The switch takes text or json only.
    let out = run(&["--log-format", "yaml", "serve", "--config", "x"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("--log-format \"yaml\": use text or json"));
}
