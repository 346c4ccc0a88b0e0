//! The built `certctl` binary on bad input: every error is one `error: ...`
//! line on stderr with a non-zero exit, no panic, and no file left behind.
//! None of these need a running approver (the "server down" cases dial a
//! loopback port nobody listens on).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;

/// certctl with a clean environment: no user config, no token.
fn certctl(home: &Path) -> Command {
    let mut c = Command::cargo_bin("certctl").unwrap();
    c.env_remove("CERTCTL_CONFIG")
        .env_remove("CERTCTL_TOKEN")
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("xdg"))
        .current_dir(home);
    c
}

/// Asserts a failure with exactly one stderr line starting `error: ` and
/// containing `want`.
fn one_line_error(out: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    assert!(stderr.starts_with("error: "), "{stderr:?}");
    assert!(stderr.contains(want), "missing {want:?} in {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn closed_port() -> u16 {
    certsign_tests::free_port()
}

fn make_ca(dir: &Path) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec![]).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = p.self_signed(&key).unwrap();
    std::fs::write(dir.join("ca.crt"), cert.pem()).unwrap();
}

/// A client certificate valid from 1 day ago for `days` days.
fn make_client(dir: &Path, days: i64) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["me.example".into()]).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, "me");
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(days);
    let cert = p.self_signed(&key).unwrap();
    std::fs::write(dir.join("me.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("me.key"), key.serialize_pem()).unwrap();
}

fn manifest(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.to_str().unwrap().to_string()
}

/// Runs `cmd` and checks it failed with one error line containing every
/// `want`; returns its output.
fn fails_with(cmd: &mut Command, wants: &[&str]) -> Output {
    let out = cmd.output().unwrap();
    for want in wants {
        one_line_error(&out, want);
    }
    out
}

/// The names of the files in `dir`, sorted.
fn files_in(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    names
}

/// One `certctl apply -f FILE` that must fail: the file's name, its body
/// (None: the file does not exist) and every error the one line names.
type ApplyRow<'a> = (&'a str, Option<&'a str>, &'a [&'a str]);

/// Runs each row in a fresh home.
fn apply_fails(rows: &[ApplyRow<'_>]) {
    for (name, body, wants) in rows {
        let t = tempfile::tempdir().unwrap();
        let f = match body {
            Some(body) => manifest(t.path(), name, body),
            None => name.to_string(),
        };
        fails_with(certctl(t.path()).args(["apply", "-f", &f]), wants);
    }
}

#[test]
fn apply_missing_file() {
    apply_fails(&[(
        "nope.yaml",
        None,
        &["the path \"nope.yaml\" does not exist"],
    )]);
}

#[test]
fn apply_bad_yaml() {
    apply_fails(&[(
        "bad.yaml",
        Some("apiVersion: [unclosed\nkind: x\n"),
        &["invalid YAML"],
    )]);
}

#[test]
fn apply_bad_json() {
    apply_fails(&[("bad.json", Some("{\"apiVersion\": "), &["invalid JSON"])]);
}

#[test]
fn apply_reports_wrong_kind_api_version_and_bad_base64_together() {
    // Shape errors read as the server's Invalid answer does (kubectl's
    // line, no `error: ` prefix), all of them on one line, before any
    // connection.
    let t = tempfile::tempdir().unwrap();
    let f = manifest(
        t.path(),
        "m.yaml",
        "apiVersion: certificates.k8s.io/v1beta1\nkind: ConfigMap\nmetadata:\n  name: x\nspec:\n  request: '%%%'\n  signerName: example.com/x\n  usages: [client auth]\n",
    );
    let out = certctl(t.path())
        .args(["apply", "-f", &f])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.starts_with("The CertificateSigningRequest \"x\" is invalid: ["),
        "{stderr:?}"
    );
    for want in [
        "apiVersion: Unsupported value: \"certificates.k8s.io/v1beta1\"",
        "kind: Unsupported value: \"ConfigMap\"",
        "spec.request: Invalid value: \"%%%\": illegal base64 data",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in {stderr:?}");
    }
}

#[test]
fn server_down_is_one_readable_line() {
    let t = tempfile::tempdir().unwrap();
    make_ca(t.path());
    let port = closed_port();
    let server = format!("https://127.0.0.1:{port}");
    fails_with(
        certctl(t.path()).args(["--server", &server, "--ca", "ca.crt", "get", "csr"]),
        &[&format!(
            "cannot reach approver at {server}: connection refused"
        )],
    );
}

#[test]
fn unreadable_or_bad_key() {
    let t = tempfile::tempdir().unwrap();
    make_ca(t.path());
    make_client(t.path(), 30);
    let server = format!("https://127.0.0.1:{}", closed_port());
    std::fs::write(t.path().join("garbage.key"), "not a key\n").unwrap();
    for (key, want) in [
        (
            "missing.key",
            "cannot read key missing.key: No such file or directory",
        ),
        ("garbage.key", "cannot read key garbage.key"),
    ] {
        fails_with(
            certctl(t.path())
                .args(["--server", &server, "--ca", "ca.crt"])
                .args(["--cert", "me.crt", "--key", key])
                .args(["certificate", "approve", "x"]),
            &[want],
        );
    }
}

#[test]
fn config_errors_name_the_key() {
    let t = tempfile::tempdir().unwrap();
    let cfg = t.path().join("c.toml");
    std::fs::write(
        &cfg,
        "server = \"https://127.0.0.1:1\"\nca = \"ca.crt\"\ncertificate = \"x\"\n",
    )
    .unwrap();
    let none = t.path().join("none.toml");
    let rows: [(&[&std::ffi::OsStr], Option<&Path>, &str); 3] = [
        (&["--config".as_ref(), cfg.as_os_str()], None, "certificate"),
        (&[], Some(&none), "cannot read config"),
        (&[], None, "no server configured"),
    ];
    for (flags, config_env, want) in rows {
        let mut c = certctl(t.path());
        if let Some(path) = config_env {
            c.env("CERTCTL_CONFIG", path);
        }
        fails_with(c.args(flags).args(["get", "csr"]), &[want]);
    }
}

#[test]
fn user_config_dir_is_used() {
    let t = tempfile::tempdir().unwrap();
    make_ca(t.path());
    let port = closed_port();
    let dir = t.path().join("xdg/certctl");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        format!("server = \"https://127.0.0.1:{port}\"\nca = \"../../ca.crt\"\n"),
    )
    .unwrap();
    fails_with(
        certctl(t.path()).args(["get", "csr"]),
        &[&format!(
            "cannot reach approver at https://127.0.0.1:{port}"
        )],
    );
}

#[test]
fn create_csr_leaves_no_files_when_the_server_is_down() {
    let t = tempfile::tempdir().unwrap();
    make_ca(t.path());
    let server = format!("https://127.0.0.1:{}", closed_port());
    fails_with(
        certctl(t.path())
            .args([
                "--server", &server, "--ca", "ca.crt", "create", "csr", "alice",
            ])
            .args(["--subject", "/CN=alice/O=dev", "--dns", "alice.example"])
            .args(["--key-out", "alice.key", "--expiration", "24h"]),
        &["cannot reach approver"],
    );
    let names = files_in(t.path());
    assert_eq!(names, ["ca.crt"], "files left behind");
}

#[test]
fn create_csr_refuses_to_overwrite_a_key_and_bad_flags() {
    let t = tempfile::tempdir().unwrap();
    make_ca(t.path());
    std::fs::write(t.path().join("alice.key"), "precious").unwrap();
    let server = format!("https://127.0.0.1:{}", closed_port());
    let base = [
        "--server", &server, "--ca", "ca.crt", "create", "csr", "alice",
    ];
    fails_with(
        certctl(t.path())
            .args(base)
            .args(["--subject", "/CN=alice", "--key-out", "alice.key"]),
        &["alice.key already exists (use --force to overwrite)"],
    );
    assert_eq!(
        std::fs::read(t.path().join("alice.key")).unwrap(),
        b"precious"
    );
    for (flags, want) in [
        (vec!["--subject", "/XX=alice"], "unknown attribute type"),
        (
            vec!["--subject", "/CN=a", "--ip", "300.1.1.1"],
            "invalid --ip",
        ),
        (
            vec!["--subject", "/CN=a", "--usages", "client auth,bogus"],
            "unsupported value \"bogus\"",
        ),
        (
            vec!["--subject", "/CN=a", "--expiration", "5m"],
            "less than 600 seconds",
        ),
    ] {
        fails_with(
            certctl(t.path())
                .args(base)
                .args(flags)
                .args(["--key-out", "new.key"]),
            &[want],
        );
    }
    assert!(!t.path().join("new.key").exists());
}

#[test]
fn renew_does_nothing_while_the_certificate_is_young() {
    let t = tempfile::tempdir().unwrap();
    make_ca(t.path());
    make_client(t.path(), 364);
    let before = std::fs::read(t.path().join("me.crt")).unwrap();
    let server = format!("https://127.0.0.1:{}", closed_port());
    let base = [
        "--server", &server, "--ca", "ca.crt", "renew", "--cert", "me.crt", "--key", "me.key",
    ];
    for threshold in ["30d", "33%"] {
        let out = certctl(t.path())
            .args(base)
            .args(["--if-expires-within", threshold])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        assert!(stdout.contains("not due for renewal"), "{stdout}");
    }
    // Longer than the current lifetime (365 days): refused before dialing.
    fails_with(
        certctl(t.path()).args(base).args(["--expiration", "8761h"]),
        &[
            "invalid --expiration: 31539600s is longer than the current certificate's lifetime (31536000s)",
        ],
    );
    // Due: it tries the approver, fails, and changes nothing.
    fails_with(
        certctl(t.path())
            .args(base)
            .args(["--if-expires-within", "100%"]),
        &["cannot reach approver"],
    );
    assert_eq!(std::fs::read(t.path().join("me.crt")).unwrap(), before);
    let names = files_in(t.path());
    assert_eq!(names, ["ca.crt", "me.crt", "me.key"]);
    fails_with(
        certctl(t.path())
            .args(base)
            .args(["--if-expires-within", "soon"]),
        &["invalid --if-expires-within"],
    );
}

#[test]
fn unknown_resource_type_and_completion() {
    let t = tempfile::tempdir().unwrap();
    make_ca(t.path());
    fails_with(
        certctl(t.path())
            .args(["--server", "https://127.0.0.1:1", "--ca", "ca.crt"])
            .args(["get", "pods"]),
        &["the server doesn't have a resource type \"pods\""],
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = certctl(t.path())
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("certctl"));
    }
}

#[test]
fn wait_help_documents_exit_codes() {
    let t = tempfile::tempdir().unwrap();
    let out = certctl(t.path())
        .args(["certificate", "wait", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("0 issued, 2 denied, 3 failed, 4 timed out"),
        "{help}"
    );
}

#[test]
fn usage_errors_are_one_line_with_exit_64() {
    let t = tempfile::tempdir().unwrap();
    let rows: [(&[&str], &str); 2] = [
        (
            &["create", "csr"],
            "required arguments were not provided: --subject <SUBJECT> --key-out <FILE> <NAME>",
        ),
        (&["get", "csr", "-o", "table"], "invalid value 'table'"),
    ];
    for (args, want) in rows {
        let out = fails_with(certctl(t.path()).args(args), &[want]);
        assert_eq!(out.status.code(), Some(64));
    }
    let out = certctl(t.path()).arg("--version").output().unwrap();
    assert!(out.status.success());
}
