//! The approver's global flags and exit codes, the same as the signer's:
//! `--log-format text|json` (or `CERTSIGN_LOG_FORMAT`), exit 64 for a usage
//! error or a configuration that does not load, `--help` and `--version`.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use common::*;

fn approver() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_certsign-approver"));
    c.env_remove("CERTSIGN_LOG_FORMAT");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(args: &[&str]) -> Output {
    approver().args(args).output().unwrap()
}

#[test]
fn usage_and_config_errors_exit_64_help_and_version_0() {
    let out = run(&["--log-format", "yaml", "serve", "--config", "x"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("yaml"), "{}", text(&out.stderr));
    let out = run(&["serve"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));

    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.toml");
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:0\"\nbogus = 1\n").unwrap();
    for cfg in [&missing, &bad] {
        let cfg = cfg.to_str().unwrap();
        for args in [
            &["serve", "--config", cfg][..],
            &["--log-format", "json", "serve", "--config", cfg],
            &["serve", "--config", cfg, "--log-format", "text"],
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

    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("--log-format"), "{:?}", out);
    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("certsign-approver {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Start the approver with `args` after `serve --config FILE`, wait for
/// `listening on`, make it reload (SIGHUP, which it logs), stop it and return
/// what it logged.
fn log_of(pki: &Pki, args: &[&str], env: Option<&str>) -> String {
    let log = pki.dir.join("flags.log");
    let mut cmd = approver();
    if let Some(v) = env {
        cmd.env("CERTSIGN_LOG_FORMAT", v);
    }
    let mut child = cmd
        .args(["serve", "--config"])
        .arg(pki.approver_toml())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let first = BufReader::new(stdout).lines().next();
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_to_string(&log).unwrap().contains("reload")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        matches!(&first, Some(Ok(l)) if l.starts_with("listening on ")),
        "{first:?}: {logged}"
    );
    logged
}

fn all_json(logged: &str) -> bool {
    let lines: Vec<&str> = logged.lines().filter(|l| !l.trim().is_empty()).collect();
    !lines.is_empty()
        && lines
            .iter()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
}

#[test]
fn log_format_json_writes_json_lines_and_text_does_not() {
    let pki = Pki::init();
    let signer = dead_addr();
    pki.edit_approver(|t| {
        t.insert("listen".into(), "127.0.0.1:0".into());
        let s = t.get_mut("signer").unwrap().as_table_mut().unwrap();
        s.insert(
            "endpoints".into(),
            toml::Value::Array(vec![format!("https://{signer}").into()]),
        );
    });
    for (args, env) in [
        (&["--log-format", "json"][..], None),
        (&[][..], Some("json")),
        (&["--log-json"][..], None),
    ] {
        let logged = log_of(&pki, args, env);
        assert!(all_json(&logged), "{args:?} {env:?}: {logged}");
    }
    for (args, env) in [
        (&[][..], None),
        (&["--log-format", "text"][..], Some("json")),
    ] {
        let logged = log_of(&pki, args, env);
        assert!(
            !logged.trim().is_empty() && !all_json(&logged),
            "{args:?} {env:?}: {logged}"
        );
    }
}
