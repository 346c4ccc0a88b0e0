//! The example configs in deploy/config are accepted by the real binaries:
//! the files `certsign-signer init` makes are laid out where the examples
//! (and the systemd units) expect them, under a temp root, and the signer,
//! the approver and certctl run from the examples as written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod deploy_common;

use deploy_common::{bin, free_port, repo_root, require_tool, run_ok, serve};
use std::path::Path;
use std::process::Command;

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The example file with its absolute paths moved under `root`, listen and
/// endpoint addresses replaced.
fn localise(example: &str, root: &Path, replace: &[(&str, String)]) -> String {
    let mut text = read(&format!("deploy/config/{example}"));
    for (from, to) in replace {
        assert!(text.contains(from), "{example} no longer contains {from}");
        text = text.replace(from, to);
    }
    for prefix in ["/etc/certsign/", "/var/lib/", "/run/credentials/"] {
        text = text.replace(
            &format!("\"{prefix}"),
            &format!("\"{}{prefix}", root.display()),
        );
        text = text.replace(
            &format!("sqlite://{prefix}"),
            &format!("sqlite://{}{prefix}", root.display()),
        );
    }
    text
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
}

/// The example configs are not just well-formed: the real binaries accept
/// them. The files `certsign-signer init` makes are laid out where the
/// examples (and the systemd units) expect them, under a temp root.
#[test]
fn example_configs_are_accepted_by_the_real_binaries() {
    require_tool("openssl", "apt-get install openssl");
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let root = tmp.path().join("root");
    let signer_port = free_port();
    let approver_port = free_port();
    run_ok(
        Command::new(bin("certsign-signer"))
            .arg("init")
            .arg("--dir")
            .arg(&pki)
            .arg("--signer-listen")
            .arg(format!("127.0.0.1:{signer_port}"))
            .arg("--approver-listen")
            .arg(format!("127.0.0.1:{approver_port}")),
    );
    // The production layout (deploy/README.md, key ceremony).
    let r = |p: &str| root.join(p.trim_start_matches('/'));
    copy(&pki.join("ca.crt"), &r("/etc/certsign/ca.crt"));
    copy(
        &pki.join("signer/tls.crt"),
        &r("/etc/certsign/signer/tls.crt"),
    );
    for f in ["ca.key", "tls.key", "journal.jsonl", "journal.jsonl.head"] {
        if !pki.join("signer").join(f).exists() && f.ends_with(".head") {
            continue; // the sealed head is optional
        }
        copy(
            &pki.join("signer").join(f),
            &r(&format!("/var/lib/certsign-signer/{f}")),
        );
    }
    copy(
        &pki.join("approver/tls.crt"),
        &r("/etc/certsign/approver/tls.crt"),
    );
    copy(
        &pki.join("approver/tls.key"),
        &r("/run/credentials/certsign-approver.service/tls.key"),
    );
    std::fs::create_dir_all(r("/var/lib/certsign-approver")).unwrap();
    copy(
        &pki.join("admin/admin.crt"),
        &r("/etc/certsign/client/tls.crt"),
    );
    copy(
        &pki.join("admin/admin.key"),
        &r("/etc/certsign/client/tls.key"),
    );
    // Keys keep owner-only modes, as the ceremony installs them.
    use std::os::unix::fs::PermissionsExt;
    for k in [
        "/var/lib/certsign-signer/ca.key",
        "/var/lib/certsign-signer/tls.key",
        "/run/credentials/certsign-approver.service/tls.key",
        "/etc/certsign/client/tls.key",
    ] {
        std::fs::set_permissions(r(k), std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    let signer_cfg = r("/etc/certsign/signer/signer.toml");
    std::fs::write(
        &signer_cfg,
        localise(
            "signer.example.toml",
            &root,
            &[(
                "listen = \"0.0.0.0:7443\"",
                format!("listen = \"127.0.0.1:{signer_port}\""),
            )],
        ),
    )
    .unwrap();
    let approver_cfg = r("/etc/certsign/approver/approver.toml");
    std::fs::write(
        &approver_cfg,
        localise(
            "approver.example.toml",
            &root,
            &[
                (
                    "listen = \"0.0.0.0:8443\"",
                    format!("listen = \"127.0.0.1:{approver_port}\""),
                ),
                (
                    "https://signer.example.internal:7443",
                    format!("https://127.0.0.1:{signer_port}"),
                ),
            ],
        ),
    )
    .unwrap();
    let certctl_cfg = r("/etc/certsign/client/certctl.toml");
    std::fs::write(
        &certctl_cfg,
        localise(
            "certctl.example.toml",
            &root,
            &[(
                "https://approver.example.internal:8443",
                format!("https://127.0.0.1:{approver_port}"),
            )],
        ),
    )
    .unwrap();

    let (_signer, saddr) = serve(
        &bin("certsign-signer"),
        &signer_cfg,
        &tmp.path().join("signer.log"),
    );
    assert!(
        saddr.ends_with(&format!(":{signer_port}")),
        "signer on {saddr}"
    );
    let (_approver, aaddr) = serve(
        &bin("certsign-approver"),
        &approver_cfg,
        &tmp.path().join("approver.log"),
    );
    assert!(
        aaddr.ends_with(&format!(":{approver_port}")),
        "approver on {aaddr}"
    );
    // The certctl example, used as is (relative cert/key next to it), talks
    // to the approver loaded from the approver example.
    let out = run_ok(
        Command::new(bin("certctl"))
            .arg("--config")
            .arg(&certctl_cfg)
            .args(["get", "csr"]),
    );
    assert!(!out.contains("error"), "{out}");
    // The signer's audit log from the example layout verifies.
    run_ok(
        Command::new(bin("certsign-signer"))
            .args(["audit", "verify", "--config"])
            .arg(&signer_cfg),
    );
}
