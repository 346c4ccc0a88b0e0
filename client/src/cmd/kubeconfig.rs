//! `certctl config kubeconfig [--token T] [--kube-server URL]`: prints a
//! kubeconfig for the approver's Kubernetes API face, so the real kubectl
//! and Kubernetes client libraries work as this certctl user: the CA this
//! certctl trusts, the Kubernetes API URL, and the identity (the client
//! certificate and key embedded, or the bootstrap token).
//!
//! It must never print a kubeconfig without credentials (kubectl would
//! prompt for a user name), and never speak plain http (kubectl sends
//! credentials only over https).

use anyhow::{Context as _, Result, anyhow, bail};
use base64::Engine as _;

use crate::cli::KubeconfigArgs;
use crate::config::Settings;
use crate::output::emit;

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
}

pub(super) fn kubeconfig(s: Settings, a: KubeconfigArgs) -> Result<()> {
    let server = a.kube_server.or(s.kube_server).ok_or_else(|| {
        anyhow!(
            "no Kubernetes API server: pass --kube-server https://HOST:PORT or set `kube_server` in the config file (init --kube-listen writes it)"
        )
    })?;
    if !server.starts_with("https://") {
        bail!(
            "invalid --kube-server {server:?}: must be an https:// URL (kubectl sends credentials only over https)"
        );
    }
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let ca = read(&s.ca, "CA bundle")?;
    let (name, user) = match (&s.token, &s.identity) {
        (Some(token), _) => {
            let id = token.split('.').next().unwrap_or("token");
            (
                format!("system:bootstrap:{id}"),
                serde_json::json!({ "token": token }),
            )
        }
        (None, Some((cert, key))) => {
            if key.to_string_lossy().starts_with("pkcs11:") {
                bail!("config kubeconfig: the key is a PKCS#11 URI; kubectl needs a key file");
            }
            (
                "certctl".to_string(),
                serde_json::json!({
                    "client-certificate-data": b64(&read(cert, "client certificate")?),
                    "client-key-data": b64(&read(key, "client key")?),
                }),
            )
        }
        (None, None) => bail!(
            "config kubeconfig: no identity: pass --token, or --cert and --key (or set them in the config file)"
        ),
    };
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "certsign", "cluster": {
            "server": server,
            "certificate-authority-data": b64(&ca),
        }}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": "certsign", "context": {"cluster": "certsign", "user": name}}],
        "current-context": "certsign",
    });
    let mut text = serde_json::to_string_pretty(&doc)?;
    text.push('\n');
    emit(&text);
    Ok(())
}
