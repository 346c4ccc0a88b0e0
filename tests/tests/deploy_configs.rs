//! The example configs in deploy/config are accepted by the real binaries:
//! the files `certsign-signer init` makes are laid out where the examples
//! (and the systemd units) expect them, under a temp root, and the signer,
//! the approver and certctl run from the examples as written. Likewise the
//! configs in the Kubernetes ConfigMaps, with the files where the pods mount
//! them, and the certctl-renew unit's command line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use certsign_tests::pki::add_bootstrap_token;
use certsign_tests::{bin, free_port, repo_root, require_tool, run, run_ok, serve};
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

/// `data.<key>` of ConfigMap `name` in a deploy/kubernetes manifest.
fn configmap_data(file: &str, name: &str, key: &str) -> String {
    let text = read(&format!("deploy/kubernetes/{file}"));
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name)
        .and_then(|d| d["data"][key].as_str())
        .unwrap_or_else(|| panic!("{file}: no ConfigMap {name} with {key}"))
        .to_string()
}

/// Absolute paths of a pod's config moved under `root` (its file system).
fn rebase(text: &str, root: &Path, prefixes: &[&str]) -> String {
    let mut out = text.to_string();
    for p in prefixes {
        out = out.replace(&format!("\"{p}"), &format!("\"{}{p}", root.display()));
        out = out.replace(
            &format!("sqlite://{p}"),
            &format!("sqlite://{}{p}", root.display()),
        );
    }
    out
}

/// The configs the Kubernetes manifests carry in their ConfigMaps load in the
/// real binaries, with the files where the pods mount them: the Secret's keys
/// (owner-only), the CA ConfigMap, and an empty journal / store volume as a
/// fresh PersistentVolumeClaim gives them.
#[test]
fn kubernetes_configmaps_are_accepted_by_the_real_binaries() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let signer_port = free_port();
    let approver_port = free_port();
    run_ok(
        Command::new(bin("certsign-signer"))
            .arg("init")
            .arg("--dir")
            .arg(&pki)
            .args(["--signer-listen", &format!("127.0.0.1:{signer_port}")])
            .args(["--approver-listen", &format!("127.0.0.1:{approver_port}")]),
    );
    use std::os::unix::fs::PermissionsExt;
    let owner_only = |p: &Path| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o400)).unwrap();
    };

    // The signer pod.
    let sroot = tmp.path().join("signer-pod");
    let s = |p: &str| sroot.join(p.trim_start_matches('/'));
    copy(&pki.join("ca.crt"), &s("/etc/certsign/ca/ca.crt"));
    for f in ["ca.key", "tls.key", "tls.crt"] {
        copy(
            &pki.join("signer").join(f),
            &s(&format!("/etc/certsign/keys/{f}")),
        );
        owner_only(&s(&format!("/etc/certsign/keys/{f}")));
    }
    std::fs::create_dir_all(s("/var/lib/certsign-signer")).unwrap();
    let signer_text = configmap_data("signer.yaml", "certsign-signer-config", "signer.toml")
        .replace(
            "listen = \"0.0.0.0:7443\"",
            &format!("listen = \"127.0.0.1:{signer_port}\""),
        )
        // The pod's probe port, on a loopback port of this test's own.
        .replace(
            "health_listen = \"0.0.0.0:8081\"",
            &format!("health_listen = \"127.0.0.1:{}\"", free_port()),
        );
    let signer_cfg = s("/etc/certsign/config/signer.toml");
    std::fs::create_dir_all(signer_cfg.parent().unwrap()).unwrap();
    std::fs::write(
        &signer_cfg,
        rebase(&signer_text, &sroot, &["/etc/certsign/", "/var/lib/"]),
    )
    .unwrap();

    // The approver pod.
    let aroot = tmp.path().join("approver-pod");
    let a = |p: &str| aroot.join(p.trim_start_matches('/'));
    copy(&pki.join("ca.crt"), &a("/etc/certsign/ca/ca.crt"));
    for f in ["tls.crt", "tls.key"] {
        copy(
            &pki.join("approver").join(f),
            &a(&format!("/etc/certsign/tls/{f}")),
        );
        owner_only(&a(&format!("/etc/certsign/tls/{f}")));
    }
    std::fs::create_dir_all(a("/var/lib/certsign-approver")).unwrap();
    let approver_text =
        configmap_data("approver.yaml", "certsign-approver-config", "approver.toml")
            .replace(
                "listen = \"0.0.0.0:8443\"",
                &format!("listen = \"127.0.0.1:{approver_port}\""),
            )
            .replace(
                "https://certsign-signer.certsign-signer.svc:7443",
                &format!("https://127.0.0.1:{signer_port}"),
            )
            // The pod's probe and metrics ports, on loopback ports of this
            // test's own.
            .replace(
                "health_listen = \"0.0.0.0:8081\"",
                &format!("health_listen = \"127.0.0.1:{}\"", free_port()),
            )
            .replace(
                "metrics_listen = \"0.0.0.0:9464\"",
                &format!("metrics_listen = \"127.0.0.1:{}\"", free_port()),
            );
    let approver_cfg = a("/etc/certsign/config/approver.toml");
    std::fs::create_dir_all(approver_cfg.parent().unwrap()).unwrap();
    std::fs::write(
        &approver_cfg,
        rebase(&approver_text, &aroot, &["/etc/certsign/", "/var/lib/"]),
    )
    .unwrap();

    let (_signer, _) = serve(
        &bin("certsign-signer"),
        &signer_cfg,
        &tmp.path().join("signer.log"),
    );
    let (_approver, _) = serve(
        &bin("certsign-approver"),
        &approver_cfg,
        &tmp.path().join("approver.log"),
    );
    let out = run_ok(
        Command::new(bin("certctl"))
            .arg("--config")
            .arg(pki.join("admin/certctl.toml"))
            .args(["get", "csr"]),
    );
    assert!(!out.contains("error"), "{out}");
    // The signer started its journal on the empty volume.
    assert!(s("/var/lib/certsign-signer/journal.jsonl").exists());
}

/// The command line of deploy/systemd/certctl-renew.service, as certctl runs
/// it: a no-op while the certificate is young (`--if-expires-within 33%`),
/// and a real, openssl-verified rotation when the threshold is met.
#[test]
fn renew_unit_command_line_runs_in_certctl() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let sp = free_port();
    let ap = free_port();
    run_ok(
        Command::new(bin("certsign-signer"))
            .arg("init")
            .arg("--dir")
            .arg(&pki)
            .args(["--signer-listen", &format!("127.0.0.1:{sp}")])
            .args(["--approver-listen", &format!("127.0.0.1:{ap}")]),
    );
    let token = add_bootstrap_token(&pki.join("approver/approver.toml"));
    let (_signer, _) = serve(
        &bin("certsign-signer"),
        &pki.join("signer/signer.toml"),
        &tmp.path().join("signer.log"),
    );
    let (_approver, _) = serve(
        &bin("certsign-approver"),
        &pki.join("approver/approver.toml"),
        &tmp.path().join("approver.log"),
    );
    // A machine identity in /etc/certsign/client (under the temp root).
    let client = tmp.path().join("etc/certsign/client");
    std::fs::create_dir_all(&client).unwrap();
    let admin = |args: &[&str]| {
        run_ok(
            Command::new(bin("certctl"))
                .arg("--config")
                .arg(pki.join("admin/certctl.toml"))
                .args(args)
                .current_dir(&client),
        )
    };
    admin(&[
        "--token",
        &token,
        "create",
        "csr",
        "host1",
        "--subject",
        "/CN=host1/O=dev",
        "--key-out",
        "tls.key",
    ]);
    admin(&["certificate", "approve", "host1"]);
    admin(&[
        "--token",
        &token,
        "certificate",
        "wait",
        "host1",
        "--timeout",
        "2m",
        "--out",
        "tls.crt",
    ]);
    std::fs::write(
        client.join("certctl.toml"),
        format!(
            "server = \"https://127.0.0.1:{ap}\"\nca = \"{}\"\ncert = \"tls.crt\"\nkey = \"tls.key\"\n",
            pki.join("ca.crt").display()
        ),
    )
    .unwrap();

    // The unit's ExecStart and Environment, paths moved under the temp root.
    let unit = read("deploy/systemd/certctl-renew.service");
    let field = |k: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("certctl-renew.service lacks {k}="))
            .replace(
                "/etc/certsign/",
                &format!("{}/etc/certsign/", tmp.path().display()),
            )
    };
    let exec = field("ExecStart");
    let (env_key, env_val) = field("Environment")
        .split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .unwrap();
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert!(words[0].ends_with("/certctl"));
    let run_unit = |threshold: Option<&str>| {
        let mut args: Vec<String> = words[1..].iter().map(|w| w.to_string()).collect();
        if let Some(t) = threshold {
            let i = args
                .iter()
                .position(|a| a == "--if-expires-within")
                .unwrap();
            args[i + 1] = t.to_string();
        }
        let out = run(Command::new(bin("certctl"))
            .args(&args)
            .env(&env_key, &env_val)
            .current_dir(tmp.path()));
        // Success as systemd judges it: 0, or a SuccessExitStatus= code.
        let code = out.status.code().unwrap().to_string();
        assert!(
            code == "0"
                || field("SuccessExitStatus")
                    .split_whitespace()
                    .any(|c| c == code),
            "certctl-renew.service would fail (exit {code}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        code
    };
    let before = std::fs::read(client.join("tls.crt")).unwrap();
    assert_eq!(run_unit(None), "5", "nothing due: exit 5");
    assert_eq!(
        std::fs::read(client.join("tls.crt")).unwrap(),
        before,
        "a fresh certificate must not be renewed at 33%"
    );
    assert_eq!(run_unit(Some("100%")), "0", "renewed: exit 0");
    let after = std::fs::read(client.join("tls.crt")).unwrap();
    assert_ne!(
        after, before,
        "the threshold was met but nothing was renewed"
    );
    let v = run_ok(
        Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(pki.join("ca.crt"))
            .arg(client.join("tls.crt")),
    );
    assert!(v.contains(": OK"), "{v}");
    // The files were replaced as a pair: the new certificate is for the new key.
    let cert_pub = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-pubkey", "-in"])
            .arg(client.join("tls.crt")),
    );
    let key_pub = run_ok(
        Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(client.join("tls.key")),
    );
    assert_eq!(
        cert_pub, key_pub,
        "renewed certificate and key do not match"
    );
}
