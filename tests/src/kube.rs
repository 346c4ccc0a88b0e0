//! A stack with the approver's Kubernetes API face on (`init
//! --kube-listen`), and the outside clients that judge it: the real
//! `kubectl` (with the kubeconfig `init` writes, or one for another user or
//! a bootstrap token), `curl` for raw HTTPS requests, and the Python
//! `kubernetes` client.
//!
//! It must never fake a part that can run for real here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;

use crate::config::edit_toml;
use crate::pki::{Pki, add_bootstrap_token, csr};
use crate::process::{bin, free_port, repo_root, require_tool};
use crate::stack::{Stack, approver_spawn, signer_spawn};

/// The built-in kubelet client signer, which tests configure as trusting
/// the approver's decision (`approval = "approver"`) on both sides.
pub const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// A signer name whose approvals must be signed (init's default).
pub const API_CLIENT: &str = "kubernetes.io/kube-apiserver-client";

/// A running stack serving the Kubernetes API at `addr`.
#[derive(Debug)]
pub struct KubeStack {
    pub stack: Stack,
    /// The Kubernetes API address (`host:port`).
    pub addr: String,
    /// A bootstrap token (`<id>.<secret>`) for `kubernetes.io/kube-apiserver-client`.
    pub token: String,
}

fn set_approval_mode(t: &mut toml::Table, list: &str, key: &str, name: &str, mode: &str) {
    for p in t.get_mut(list).unwrap().as_array_mut().unwrap() {
        let p = p.as_table_mut().unwrap();
        if p.get(key).and_then(|v| v.as_str()) == Some(name) {
            p.insert("approval".into(), mode.into());
        }
    }
}

impl KubeStack {
    /// `init --kube-listen` on a free loopback port, [`KUBELET_CLIENT`]
    /// trusting the approver's decision, one bootstrap token, both daemons
    /// started.
    pub fn start() -> KubeStack {
        Self::start_with(|_| {})
    }

    /// [`KubeStack::start`] with `edit` applied to approver.toml last.
    pub fn start_with(edit: impl FnOnce(&mut toml::Table)) -> KubeStack {
        require_tool("kubectl", "apt-get install kubectl (1.32)");
        let addr = format!("127.0.0.1:{}", free_port());
        let pki = Pki::init_with(
            &bin("certsign-signer"),
            "ca",
            &["--kube-listen", &addr],
            &[],
        );
        edit_toml(&pki.signer_toml(), |t| {
            set_approval_mode(t, "profiles", "signer_name", KUBELET_CLIENT, "approver");
        });
        pki.edit_approver(|t| {
            set_approval_mode(t, "signer_names", "name", KUBELET_CLIENT, "approver");
        });
        let token = add_bootstrap_token(&pki.approver_toml());
        pki.edit_approver(edit);
        let signer = signer_spawn(&pki, "127.0.0.1:0", |_| {}).start();
        let approver = approver_spawn(&pki, &signer.addr, |_| {}).start();
        let stack = Stack {
            dir: pki.dir.clone(),
            signer,
            approver,
            pki,
        };
        KubeStack { stack, addr, token }
    }

    /// `https://<addr>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The admin kubeconfig `init` wrote.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.stack.dir.join("admin/kubeconfig")
    }

    /// A kubeconfig for a user with a client certificate (cert, key files).
    pub fn kubeconfig_for_cert(&self, user: &str, cert: &PathBuf, key: &PathBuf) -> PathBuf {
        let b64 = |p: &PathBuf| {
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(p).unwrap())
        };
        self.write_kubeconfig(
            user,
            serde_json::json!({
                "client-certificate-data": b64(cert),
                "client-key-data": b64(key),
            }),
        )
    }

    /// A kubeconfig for a bootstrap-token user.
    pub fn kubeconfig_for_token(&self, user: &str, token: &str) -> PathBuf {
        self.write_kubeconfig(user, serde_json::json!({ "token": token }))
    }

    fn write_kubeconfig(&self, user: &str, creds: serde_json::Value) -> PathBuf {
        let ca = base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(self.stack.ca()).unwrap());
        let doc = serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "certsign", "cluster": {"server": self.url(), "certificate-authority-data": ca}}],
            "users": [{"name": user, "user": creds}],
            "contexts": [{"name": "c", "context": {"cluster": "certsign", "user": user}}],
            "current-context": "c",
        });
        let path = self.stack.dir.join(format!("{user}.kubeconfig"));
        std::fs::write(&path, doc.to_string()).unwrap();
        path
    }

    /// `kubectl` with `kubeconfig` and a cache of its own (discovery is
    /// fetched fresh per stack).
    pub fn kubectl(&self, kubeconfig: &PathBuf) -> Command {
        let mut c = Command::new("kubectl");
        c.env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .arg("--cache-dir")
            .arg(self.stack.dir.join("kube-cache"));
        c
    }

    /// `kubectl` as the init admin.
    pub fn admin_kubectl(&self) -> Command {
        self.kubectl(&self.admin_kubeconfig())
    }

    /// `curl` as the init admin to `path` on the Kubernetes API (prints the
    /// HTTP code on the last line with `-w`).
    pub fn curl(&self, path: &str) -> Command {
        let (cert, key) = self.stack.admin();
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "30", "--cacert"])
            .arg(self.stack.ca())
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .args(["-w", "\n%{http_code}"])
            .arg(format!("{}{path}", self.url()));
        c
    }

    /// A Kubernetes manifest (the Kubernetes tutorial's) for a CSR PEM.
    pub fn manifest(name: &str, csr_pem: &[u8], signer: &str, usages: &[&str]) -> String {
        let request = base64::engine::general_purpose::STANDARD.encode(csr_pem);
        let usages: String = usages.iter().map(|u| format!("  - {u}\n")).collect();
        format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {request}\n  signerName: {signer}\n  expirationSeconds: 86400  # one day\n  usages:\n{usages}"
        )
    }

    /// The Python client script (tests/python/kube_client.py).
    pub fn python_client() -> PathBuf {
        repo_root().join("tests/python/kube_client.py")
    }
}

/// Runs `cmd` in `dir`: (success, stdout, stderr), trimmed.
pub fn kc(cmd: &mut Command, dir: &Path) -> (bool, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.current_dir(dir).output().unwrap();
    (
        status.success(),
        String::from_utf8_lossy(&stdout).trim().to_string(),
        String::from_utf8_lossy(&stderr).trim().to_string(),
    )
}

/// [`kc`], asserting success: stdout.
pub fn ok(cmd: &mut Command, dir: &Path) -> String {
    let (success, out, err) = kc(cmd, dir);
    assert!(success, "{cmd:?} failed: {out}\n{err}");
    out
}

/// [`kc`], asserting failure: stderr.
pub fn fails(cmd: &mut Command, dir: &Path) -> String {
    let (success, out, err) = kc(cmd, dir);
    assert!(!success, "{cmd:?} succeeded: {out}");
    err
}

/// Writes the manifest of a fresh CSR for `cn`/`orgs` to `dir/file`.
#[allow(clippy::too_many_arguments)]
pub fn manifest(
    dir: &Path,
    file: &str,
    name: &str,
    cn: &str,
    orgs: &[&str],
    signer: &str,
    usages: &[&str],
) {
    let (_, pem) = csr(cn, orgs);
    std::fs::write(
        dir.join(file),
        KubeStack::manifest(name, &pem, signer, usages),
    )
    .unwrap();
}

/// (body, HTTP code) of a curl call.
pub fn curl(cmd: &mut Command) -> (String, u16) {
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (body.to_string(), code.trim().parse().unwrap_or(0))
}
