//! Isolation shown, not claimed: deploy/test/netns.sh puts the signer, the
//! approver and an outsider in three network namespaces and proves the full
//! flow works from the outsider while the signer stays unreachable from it.
//! Needs root and iproute2; fails loudly without them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use certsign_tests::{bin, repo_root, require_tool, run};
use std::process::Command;

#[test]
fn signer_is_reachable_only_through_the_approver() {
    require_tool("ip", "apt-get install iproute2");
    require_tool("openssl", "apt-get install openssl");
    let uid = run(Command::new("id").arg("-u"));
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "deploy_netns must run as root (it creates network namespaces)"
    );
    // All three binaries must exist; the script takes their directory.
    let bin_dir = bin("certsign-signer").parent().unwrap().to_path_buf();
    bin("certsign-approver");
    bin("certctl");
    let work = tempfile::tempdir().unwrap();
    let out = run(Command::new("bash")
        .arg(repo_root().join("deploy/test/netns.sh"))
        .arg(&bin_dir)
        .arg(work.path()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "netns.sh failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for expected in [
        "outsider -> signer 10.77.0.1:7443: refused/unreachable",
        "outsider -> approver 10.78.0.1:8443: reachable",
        "Approved,Issued",
        "jane.crt: OK",
        "NETNS PASS",
    ] {
        assert!(
            stdout.contains(expected),
            "netns.sh output lacks {expected:?}:\n{stdout}"
        );
    }
    // The script removed its namespaces.
    let list = run(Command::new("ip").args(["netns", "list"]));
    let pid_tag = String::from_utf8_lossy(&list.stdout).into_owned();
    let ours: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("NETNS: namespaces "))
        .flat_map(str::split_whitespace)
        .collect();
    assert_eq!(
        ours.len(),
        3,
        "script did not report its namespaces:\n{stdout}"
    );
    for ns in ours {
        assert!(!pid_tag.contains(ns), "namespace {ns} left behind");
    }
}
