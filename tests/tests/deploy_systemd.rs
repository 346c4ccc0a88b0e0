//! The systemd units in deploy/systemd: their sandbox is measured with
//! `systemd-analyze security --offline=true` (signer ≤ 1.5, approver ≤ 2.5),
//! the scores written in deploy/README.md are the measured ones, and the
//! units run the binaries, users and paths the rest of deploy/ describes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use certsign_tests::{repo_root, require_tool, run};
use std::path::PathBuf;
use std::process::Command;

fn unit(name: &str) -> PathBuf {
    repo_root().join("deploy/systemd").join(name)
}

fn read_unit(name: &str) -> String {
    std::fs::read_to_string(unit(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The exposure score `systemd-analyze security --offline=true` gives a unit
/// file ("Overall exposure level for X: 0.9 SAFE").
fn exposure(name: &str) -> f64 {
    require_tool("systemd-analyze", "apt-get install systemd");
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit(name)));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!("no exposure level for {name}:\n{stdout}\n{stderr}");
        });
    let after = line.rsplit(':').next().unwrap_or_default();
    let number = after.split_whitespace().next().unwrap_or_default();
    number
        .parse()
        .unwrap_or_else(|e| panic!("cannot read the score in {line:?}: {e}"))
}

/// `Key=value` lines of a unit (all of them, in order).
fn directives(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn directive(text: &str, key: &str) -> Option<String> {
    directives(text)
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .next_back()
}

/// The score for `unit` recorded in deploy/README.md's table row.
fn readme_score(unit_name: &str) -> f64 {
    let readme = std::fs::read_to_string(repo_root().join("deploy/README.md")).unwrap();
    let row = readme
        .lines()
        .find(|l| l.starts_with('|') && l.contains(&format!("`{unit_name}`")))
        .unwrap_or_else(|| panic!("deploy/README.md has no score row for `{unit_name}`"));
    row.split('|')
        .map(str::trim)
        .find_map(|cell| cell.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no score in README row {row:?}"))
}

#[test]
fn signer_unit_scores_1_5_or_lower_and_readme_says_so() {
    let score = exposure("certsign-signer.service");
    assert!(score <= 1.5, "signer unit exposure {score} > 1.5");
    assert_eq!(
        readme_score("certsign-signer.service"),
        score,
        "deploy/README.md records a different signer score than measured"
    );
}

#[test]
fn approver_unit_scores_2_5_or_lower_and_readme_says_so() {
    let score = exposure("certsign-approver.service");
    assert!(score <= 2.5, "approver unit exposure {score} > 2.5");
    assert_eq!(
        readme_score("certsign-approver.service"),
        score,
        "deploy/README.md records a different approver score than measured"
    );
}

#[test]
fn renew_unit_is_sandboxed_and_readme_says_how_much() {
    let score = exposure("certctl-renew.service");
    assert!(score <= 2.5, "certctl-renew unit exposure {score} > 2.5");
    assert_eq!(readme_score("certctl-renew.service"), score);
}

#[test]
fn renew_agent_template_scores_like_the_renew_unit_and_runs_the_daemon() {
    let score = exposure("certctl-renew@.service");
    assert_eq!(
        score,
        exposure("certctl-renew.service"),
        "the agent's sandbox must score like the oneshot unit's"
    );
    assert_eq!(readme_score("certctl-renew@.service"), score);
    let agent = read_unit("certctl-renew@.service");
    let oneshot = read_unit("certctl-renew.service");
    let exec = directive(&agent, "ExecStart").expect("ExecStart");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert!(words[0].ends_with("/certctl"), "{exec}");
    assert_eq!(&words[1..], ["renew", "--daemon"], "{exec}");
    assert_eq!(
        directive(&agent, "Environment").as_deref(),
        Some("CERTCTL_CONFIG=/etc/certsign/%i/certctl.toml")
    );
    assert_eq!(
        directive(&agent, "ReadWritePaths").as_deref(),
        Some("/etc/certsign/%i"),
        "each instance writes only its own directory"
    );
    assert_eq!(directive(&agent, "Restart").as_deref(), Some("on-failure"));
    for key in [
        "User",
        "CapabilityBoundingSet",
        "NoNewPrivileges",
        "SystemCallFilter",
    ] {
        assert_eq!(directive(&agent, key), directive(&oneshot, key), "{key}");
    }
}

#[test]
fn daemons_run_as_their_own_unprivileged_users() {
    let signer = read_unit("certsign-signer.service");
    let approver = read_unit("certsign-approver.service");
    let signer_user = directive(&signer, "User").expect("signer unit sets User=");
    assert_ne!(signer_user, "root");
    assert!(
        directive(&approver, "DynamicUser").as_deref() == Some("yes")
            || directive(&approver, "User").is_some_and(|u| u != "root" && u != signer_user),
        "approver needs its own user (DynamicUser=yes or a User= other than the signer's)"
    );
    for (name, text) in [("signer", &signer), ("approver", &approver)] {
        assert_eq!(
            directive(text, "CapabilityBoundingSet").as_deref(),
            Some(""),
            "{name}: no capabilities at all"
        );
        assert_eq!(directive(text, "NoNewPrivileges").as_deref(), Some("yes"));
        assert_eq!(directive(text, "ProtectSystem").as_deref(), Some("strict"));
        assert_eq!(
            directive(text, "LimitCORE").as_deref(),
            Some("0"),
            "{name}: no core dumps"
        );
    }
    // The users the units name are the ones sysusers.d creates.
    let sysusers =
        std::fs::read_to_string(repo_root().join("deploy/systemd/certsign.sysusers.conf"))
            .expect("deploy/systemd/certsign.sysusers.conf");
    assert!(
        sysusers
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(signer_user.as_str())),
        "sysusers.d file does not create {signer_user}"
    );
}

#[test]
fn units_start_the_contract_commands_with_the_example_config_paths() {
    let cases = [
        (
            "certsign-signer.service",
            "certsign-signer",
            "signer.example.toml",
        ),
        (
            "certsign-approver.service",
            "certsign-approver",
            "approver.example.toml",
        ),
    ];
    for (unit_name, binary, example) in cases {
        let text = read_unit(unit_name);
        let exec = directive(&text, "ExecStart").expect("ExecStart");
        let words: Vec<&str> = exec.split_whitespace().collect();
        assert!(
            words[0].ends_with(&format!("/{binary}")),
            "{unit_name}: {exec}"
        );
        assert_eq!(&words[1..3], ["serve", "--config"], "{unit_name}: {exec}");
        // The example config says (first line) where it is installed.
        let example_text =
            std::fs::read_to_string(repo_root().join("deploy/config").join(example)).unwrap();
        let first = example_text.lines().next().unwrap_or_default();
        assert!(
            first.ends_with(words[3]),
            "{unit_name} reads {} but {example} says {first:?}",
            words[3]
        );
        // The unit lets the daemon bind exactly the port its example config listens on.
        let listen: toml::Table = toml::from_str(&example_text).unwrap();
        let port = listen["listen"]
            .as_str()
            .and_then(|a| a.rsplit(':').next())
            .unwrap()
            .to_string();
        assert_eq!(
            directive(&text, "SocketBindAllow").as_deref(),
            Some(format!("tcp:{port}").as_str()),
            "{unit_name}: SocketBindAllow does not match {example}'s listen port"
        );
    }
}

#[test]
fn renew_timer_drives_certctl_renew_with_the_threshold() {
    let service = read_unit("certctl-renew.service");
    let timer = read_unit("certctl-renew.timer");
    let exec = directive(&service, "ExecStart").expect("ExecStart");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert!(words[0].ends_with("/certctl"), "{exec}");
    assert_eq!(words[1], "renew");
    for flag in ["--cert", "--key", "--if-expires-within"] {
        assert!(words.contains(&flag), "renew lacks {flag}: {exec}");
    }
    let pos = words
        .iter()
        .position(|w| *w == "--if-expires-within")
        .unwrap();
    assert_eq!(words.get(pos + 1), Some(&"33%"));
    assert_eq!(directive(&service, "Type").as_deref(), Some("oneshot"));
    // certctl's "nothing was due" exit code is no failure.
    assert_eq!(
        directive(&service, "SuccessExitStatus").as_deref(),
        Some("5")
    );
    assert!(directive(&timer, "OnCalendar").is_some());
    assert!(
        matches!(
            directive(&timer, "Persistent").as_deref(),
            Some("yes" | "true")
        ),
        "timer must catch up after downtime (Persistent=)"
    );
    assert_eq!(
        directive(&timer, "WantedBy").as_deref(),
        Some("timers.target")
    );
}
