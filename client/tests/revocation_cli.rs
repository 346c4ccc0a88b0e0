//! The built `certctl` binary's revocation, CRL and inventory commands on
//! bad input: one `error: ...` line, a non-zero exit, and nothing sent (a
//! listening socket that must see no connection), plus their help texts
//! and completion. The commands against a real stack are in
//! tests/tests/revocation.rs.

#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
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

fn one_line_error(out: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    assert!(stderr.starts_with("error: "), "{stderr:?}");
    assert!(stderr.contains(want), "missing {want:?} in {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A CA and a client certificate `me.crt`/`me.key` signed by nobody in
/// particular (self-signed): enough for every check made before connecting.
fn make_files(dir: &Path) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec![]).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(dir.join("ca.crt"), p.self_signed(&key).unwrap().pem()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["me.example".into()]).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, "me");
    std::fs::write(dir.join("me.crt"), p.self_signed(&key).unwrap().pem()).unwrap();
    std::fs::write(dir.join("me.key"), key.serialize_pem()).unwrap();
    std::fs::write(
        dir.join("certctl.toml"),
        "ca = \"ca.crt\"\ncert = \"me.crt\"\nkey = \"me.key\"\n",
    )
    .unwrap();
}

/// A listening approver address that must never be dialled.
struct Silent(TcpListener);

impl Silent {
    fn new() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        Self(l)
    }
    fn url(&self) -> String {
        format!("https://{}", self.0.local_addr().unwrap())
    }
    fn assert_untouched(&self) {
        match self.0.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("certctl connected although the input was bad: {other:?}"),
        }
    }
}

const ALLOWED: &str = "must be one of unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn";

#[test]
fn revoke_refuses_bad_input_before_sending_anything() {
    let t = tempfile::tempdir().unwrap();
    make_files(t.path());
    let server = Silent::new();
    let rows: &[(&[&str], &str)] = &[
        // Reasons outside RFC 5280's final ones, by an admin and a holder.
        (
            &["certificate", "revoke", "r1", "--reason", "certificateHold"],
            ALLOWED,
        ),
        (
            &["certificate", "revoke", "r1", "r2", "--reason", "stolen"],
            "invalid --reason \"stolen\"",
        ),
        (
            &[
                "certificate",
                "revoke",
                "--cert",
                "me.crt",
                "--key",
                "me.key",
                "--reason",
                "removeFromCRL",
            ],
            ALLOWED,
        ),
        (
            &["certificate", "revoke", "--serial", "not-hex"],
            "invalid --serial \"not-hex\": must be a hexadecimal serial number",
        ),
        // No target, and no explicit --cert: never the configured identity.
        (
            &["certificate", "revoke"],
            "certificate revoke needs request names or --serial HEX (as an admin), or --cert FILE --key FILE",
        ),
        (
            &[
                "certificate",
                "revoke",
                "r1",
                "--token",
                "abcdef.0123456789abcdef",
            ],
            "do not pass --token",
        ),
        (
            &["certificate", "revoke", "r1", "--key", "missing.key"],
            "cannot read key missing.key",
        ),
    ];
    for (args, want) in rows {
        let out = certctl(t.path())
            .args(["--config", "certctl.toml", "--server", &server.url()])
            .args(*args)
            .output()
            .unwrap();
        one_line_error(&out, want);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        server.assert_untouched();
    }
    // Without a certificate at all, the error says what is needed.
    std::fs::write(t.path().join("anon.toml"), "ca = \"ca.crt\"\n").unwrap();
    let out = certctl(t.path())
        .args(["--config", "anon.toml", "--server", &server.url()])
        .args(["certificate", "revoke", "r1"])
        .output()
        .unwrap();
    one_line_error(&out, "revoking needs your own certificate and key");
    server.assert_untouched();
}

#[test]
fn get_crl_and_certificates_refuse_bad_flags_before_sending_anything() {
    let t = tempfile::tempdir().unwrap();
    make_files(t.path());
    let server = Silent::new();
    let rows: &[(&[&str], &str)] = &[
        (
            &["get", "crl", "-o", "json"],
            "unable to match a printer suitable for the output format \"json\", allowed formats are: der, pem",
        ),
        (&["get", "crl", "x"], "get crl takes no names"),
        (&["get", "certificates", "-o", "pem"], "are for get crl"),
        (&["get", "certs", "--out", "x.pem"], "are for get crl"),
        (&["get", "csr", "-o", "der"], "are for get crl"),
        (&["get", "certificates", "zz"], "invalid --serial \"zz\""),
        (
            &["get", "certificate", "--requestor", "bob"],
            "get certificates filters by --signer-name",
        ),
    ];
    for (args, want) in rows {
        let out = certctl(t.path())
            .args(["--config", "certctl.toml", "--server", &server.url()])
            .args(*args)
            .output()
            .unwrap();
        one_line_error(&out, want);
        server.assert_untouched();
    }
    assert!(!t.path().join("x.pem").exists());
}

#[test]
fn get_crl_der_is_refused_on_a_terminal() {
    let t = tempfile::tempdir().unwrap();
    make_files(t.path());
    let server = Silent::new();
    let bin = assert_cmd::cargo::cargo_bin("certctl");
    // script(1) gives certctl a pseudo-terminal as stdout.
    let cmd = format!(
        "{} --config certctl.toml --server {} get crl -o der; echo exit=$?",
        bin.display(),
        server.url()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(t.path())
        .env("HOME", t.path())
        .env_remove("CERTCTL_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "error: refusing to write a DER CRL to a terminal: pass --out FILE, redirect stdout, or use -o pem"
        ),
        "{text}"
    );
    assert!(text.contains("exit=1"), "{text}");
    server.assert_untouched();
}

#[test]
fn help_and_completion_name_the_new_commands() {
    let t = tempfile::tempdir().unwrap();
    let help = |args: &[&str]| {
        let out = certctl(t.path()).args(args).output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let h = help(&["certificate", "--help"]);
    assert!(h.contains("revoke"), "{h}");
    let h = help(&["certificate", "revoke", "--help"]);
    for want in [
        "--serial <HEX>",
        "--reason <R>",
        "keyCompromise",
        "cACompromise",
        "privilegeWithdrawn",
        "--cert F --key K",
    ] {
        assert!(h.contains(want), "missing {want:?} in {h}");
    }
    let h = help(&["get", "--help"]);
    for want in ["crl", "certificates", "--out <FILE>", "pem", "der"] {
        assert!(h.contains(want), "missing {want:?} in {h}");
    }
    // Completion is dynamic (the shell asks certctl): the scripts call it,
    // and what it offers names the new commands and flags.
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let script = help(&["completion", shell]);
        assert!(script.contains("_CERTCTL_COMPLETE"), "{shell}: {script}");
        let offered = |words: &[&str]| {
            let out = certctl(t.path())
                .env("_CERTCTL_COMPLETE", shell)
                .env("_CLAP_COMPLETE_INDEX", (words.len() - 1).to_string())
                .arg("--")
                .args(words)
                .output()
                .unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        };
        for (words, word) in [
            (&["certctl", "certificate", ""][..], "revoke"),
            (&["certctl", "certificate", "revoke", "--se"], "--serial"),
            (&["certctl", "certificate", "revoke", "--re"], "--reason"),
            (&["certctl", "get", "crl", "--ou"], "--out"),
            (&["certctl", "get", "crl", "-o", "d"], "der"),
        ] {
            let got = offered(words);
            assert!(
                got.contains(word),
                "{shell} {words:?}: missing {word:?} in {got:?}"
            );
        }
    }
}
