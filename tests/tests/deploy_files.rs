//! The deployment files in deploy/: the Containerfile (multi-stage, non-root,
//! secret-free), the Kubernetes manifests (parsed as YAML the way Kubernetes
//! reads them, then checked structurally: kinds, labels the NetworkPolicy
//! selects, securityContext), and the example configs (every key commented,
//! every key `init` writes; deploy_configs.rs runs them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use certsign_tests::{bin, repo_root};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// --- Containerfile -----------------------------------------------------------

/// One instruction: keyword and the rest, continuation lines joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let t = line.trim();
        if pending.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if t.starts_with('#') {
            continue; // comment inside a continued instruction
        }
        if let Some(head) = t.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(t);
        let (kw, rest) = pending
            .split_once(char::is_whitespace)
            .unwrap_or((&pending, ""));
        out.push((kw.to_ascii_uppercase(), rest.trim().to_string()));
        pending.clear();
    }
    assert!(
        pending.is_empty(),
        "Containerfile ends inside a continued line"
    );
    out
}

/// The binary names the workspace's crates declare in `[[bin]]`.
fn workspace_binaries() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for krate in ["setup", "approver", "client"] {
        let manifest: toml::Table = toml::from_str(&read(&format!("{krate}/Cargo.toml"))).unwrap();
        for b in manifest
            .get("bin")
            .and_then(|b| b.as_array())
            .expect("[[bin]]")
        {
            names.insert(b["name"].as_str().unwrap().to_string());
        }
    }
    names
}

#[test]
fn containerfile_is_multi_stage_non_root_and_carries_no_secrets() {
    let text = read("deploy/Containerfile");
    let ins = instructions(&text);
    let stages: Vec<usize> = ins
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| k == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert!(stages.len() >= 2, "Containerfile must be multi-stage");

    let builder_from = &ins[stages[0]].1;
    assert!(
        builder_from.contains("rust:1.95-bookworm") && builder_from.ends_with(" AS builder"),
        "first stage must be `rust:1.95-bookworm AS builder`, got {builder_from:?}"
    );
    let final_start = *stages.last().unwrap();
    let final_from = &ins[final_start].1;
    assert!(
        final_from.contains("gcr.io/distroless/cc-debian12:nonroot")
            || final_from.contains("debian:bookworm-slim"),
        "runtime stage must be distroless cc or bookworm-slim, got {final_from:?}"
    );
    let builder_stage = &ins[stages[0]..stages[1]];
    let final_stage = &ins[final_start..];

    // The build is locked and release.
    assert!(
        builder_stage
            .iter()
            .any(|(k, v)| k == "RUN" && v.contains("cargo build --release --locked")),
        "builder must run `cargo build --release --locked`"
    );
    // The runtime image holds only what the builder produced: every COPY in
    // it comes from the builder, and it never runs a package manager.
    for (k, v) in final_stage {
        match k.as_str() {
            "COPY" => assert!(
                v.contains("--from=builder"),
                "runtime COPY not from builder: {v}"
            ),
            "ADD" => panic!("ADD in the runtime stage: {v}"),
            "RUN" => panic!("RUN in the runtime stage (keep it minimal): {v}"),
            _ => {}
        }
    }
    // Every workspace binary is installed, by the name its crate gives it.
    let copied: String = final_stage
        .iter()
        .filter(|(k, _)| k == "COPY")
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    for b in workspace_binaries() {
        assert!(copied.contains(&format!("/{b}")), "runtime stage lacks {b}");
    }
    assert!(
        copied.contains("/usr/local/bin/"),
        "binaries go to /usr/local/bin"
    );

    // The last USER of the runtime stage is not root, by number or name.
    let user = final_stage
        .iter()
        .filter(|(k, _)| k == "USER")
        .map(|(_, v)| v.clone())
        .next_back()
        .expect("runtime stage must set USER");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        !matches!(uid, "" | "0" | "root"),
        "runtime USER must be non-root, got {user:?}"
    );
    assert!(
        uid.parse::<u32>().is_ok_and(|n| n > 0),
        "runtime USER must be numeric so runAsNonRoot can verify it, got {user:?}"
    );

    // No secrets: nothing key-like copied in, no credentials in ARG/ENV, no
    // downloads at build time.
    let secret_words = [
        "SECRET",
        "PASSWORD",
        "TOKEN",
        "PRIVATE",
        "CREDENTIAL",
        "API_KEY",
    ];
    for (k, v) in &ins {
        if k == "ARG" || k == "ENV" {
            let upper = v.to_ascii_uppercase();
            for w in secret_words {
                assert!(!upper.contains(w), "{k} {v} looks like a secret");
            }
        }
        if k == "COPY" || k == "ADD" {
            for w in [".key", ".pem", "id_rsa", ".p12", ".pfx", ".env"] {
                assert!(!v.contains(w), "{k} {v} copies key material");
            }
            assert!(
                !v.contains("http://") && !v.contains("https://"),
                "{k} downloads: {v}"
            );
        }
        if k == "RUN" {
            assert!(!v.contains("--mount=type=secret"), "secret mount in {v}");
        }
    }
    // The build context leaves out build output, VCS data and key material.
    let ignore = read("deploy/Containerfile.dockerignore");
    let lines: BTreeSet<&str> = ignore.lines().map(str::trim).collect();
    for must in ["target", ".git", ".quickstart", "**/*.key"] {
        assert!(
            lines.contains(must),
            "Containerfile.dockerignore lacks {must}"
        );
    }
}

// --- Kubernetes --------------------------------------------------------------

/// All documents of all manifests, parsed as Kubernetes does (YAML 1.1
/// octals: `0400` is 256).
fn manifests() -> Vec<(PathBuf, Value)> {
    let dir = repo_root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let opts = serde_saphyr::options! { legacy_octal_numbers: true };
        let parsed: Vec<Value> = serde_saphyr::from_multiple_with_options(&text, opts)
            .unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", f.display()));
        for d in parsed.into_iter().filter(|d| !d.is_null()) {
            docs.push((f.clone(), d));
        }
    }
    docs
}

fn kind(d: &Value) -> &str {
    d["kind"].as_str().unwrap_or_default()
}
fn name(d: &Value) -> &str {
    d["metadata"]["name"].as_str().unwrap_or_default()
}
fn namespace(d: &Value) -> &str {
    d["metadata"]["namespace"].as_str().unwrap_or_default()
}
fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}
/// `selector` (matchLabels) selects an object carrying `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn find<'a>(docs: &'a [(PathBuf, Value)], k: &str, n: &str) -> &'a Value {
    docs.iter()
        .map(|(_, d)| d)
        .find(|d| kind(d) == k && name(d) == n)
        .unwrap_or_else(|| panic!("no {k} named {n} in deploy/kubernetes"))
}

#[test]
fn kubernetes_manifests_parse_and_every_object_is_accounted_for() {
    let docs = manifests();
    let kinds: BTreeSet<&str> = docs.iter().map(|(_, d)| kind(d)).collect();
    for k in [
        "Namespace",
        "Deployment",
        "Service",
        "ConfigMap",
        "PersistentVolumeClaim",
        "NetworkPolicy",
    ] {
        assert!(kinds.contains(k), "no {k} in deploy/kubernetes");
    }
    for (f, d) in &docs {
        assert!(
            d["apiVersion"].is_string(),
            "{}: object without apiVersion",
            f.display()
        );
        assert!(
            !name(d).is_empty() || kind(d) == "Kustomization",
            "{}: unnamed",
            f.display()
        );
    }
    // kustomization.yaml lists every other manifest, so `kubectl apply -k` is complete.
    let kust = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| kind(d) == "Kustomization")
        .expect("kustomization.yaml");
    let listed: BTreeSet<&str> = kust["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let files: BTreeSet<String> = docs
        .iter()
        .filter(|(_, d)| kind(d) != "Kustomization")
        .map(|(f, _)| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for f in &files {
        assert!(
            listed.contains(f.as_str()),
            "kustomization.yaml does not list {f}"
        );
    }
    // Namespaced objects live in namespaces the manifests create.
    let namespaces: BTreeSet<&str> = docs
        .iter()
        .filter(|(_, d)| kind(d) == "Namespace")
        .map(|(_, d)| name(d))
        .collect();
    for (_, d) in &docs {
        if !matches!(kind(d), "Namespace" | "Kustomization") {
            assert!(
                namespaces.contains(namespace(d)),
                "{} {} is in namespace {:?}, which no manifest creates",
                kind(d),
                name(d),
                namespace(d)
            );
        }
    }
}

#[test]
fn deployments_are_hardened_non_root_and_read_only() {
    let docs = manifests();
    let binaries = workspace_binaries();
    let deployments: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| kind(d) == "Deployment")
        .collect();
    assert_eq!(
        deployments.len(),
        2,
        "one Deployment for the signer, one for the approver"
    );
    for d in deployments {
        let n = name(d);
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(
            pod["automountServiceAccountToken"], false,
            "{n}: no API token"
        );
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"], true,
            "{n}: pod runAsNonRoot"
        );
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{n}: seccomp"
        );
        assert!(
            pod["securityContext"]["runAsUser"]
                .as_u64()
                .is_some_and(|u| u > 0),
            "{n}: runAsUser must be a non-zero uid"
        );
        let selector = labels(&d["spec"]["selector"]["matchLabels"]);
        let pod_labels = labels(&d["spec"]["template"]["metadata"]["labels"]);
        assert!(
            selects(&selector, &pod_labels),
            "{n}: selector does not match its pods"
        );
        let mounts_ok: BTreeSet<&str> = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        for c in pod["containers"].as_array().unwrap() {
            let sc = &c["securityContext"];
            assert_eq!(sc["runAsNonRoot"], true, "{n}: container runAsNonRoot");
            assert_eq!(
                sc["readOnlyRootFilesystem"], true,
                "{n}: readOnlyRootFilesystem"
            );
            assert_eq!(
                sc["allowPrivilegeEscalation"], false,
                "{n}: allowPrivilegeEscalation"
            );
            assert_eq!(sc["privileged"], false, "{n}: privileged");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{n}: caps"
            );
            let cmd = c["command"][0].as_str().expect("explicit command");
            let b = cmd.rsplit('/').next().unwrap();
            assert!(
                binaries.contains(b),
                "{n}: runs {cmd}, not a certsign binary"
            );
            assert_eq!(c["command"][1], "serve", "{n}: serve");
            for m in c["volumeMounts"].as_array().unwrap() {
                assert!(
                    mounts_ok.contains(m["name"].as_str().unwrap()),
                    "{n}: dangling mount"
                );
            }
        }
    }
}

/// The TOML config a Deployment's ConfigMap carries, and the container's
/// mounts: every absolute path in the config must lie under a mount.
fn check_config_paths(
    docs: &[(PathBuf, Value)],
    deployment: &Value,
    cm_name: &str,
    key: &str,
) -> toml::Table {
    let ns = namespace(deployment);
    let cm = find(docs, "ConfigMap", cm_name);
    assert_eq!(namespace(cm), ns);
    let text = cm["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{cm_name} lacks {key}"));
    let table: toml::Table =
        toml::from_str(text).unwrap_or_else(|e| panic!("{cm_name}/{key} is not TOML: {e}"));
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mounts: Vec<String> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap().to_string())
        .collect();
    let mut paths = Vec::new();
    collect_paths(&toml::Value::Table(table.clone()), &mut paths);
    assert!(!paths.is_empty());
    for p in paths {
        assert!(
            mounts.iter().any(|m| p.starts_with(&format!("{m}/"))),
            "{cm_name}/{key} names {p}, which no volumeMount of {} provides",
            name(deployment)
        );
    }
    // The command reads the config from where the ConfigMap is mounted.
    let cfg_path = container["command"][3].as_str().unwrap();
    assert!(cfg_path.ends_with(&format!("/{key}")), "{cfg_path}");
    table
}

fn collect_paths(v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::String(s) => {
            let s = s.strip_prefix("sqlite://").unwrap_or(s);
            if s.starts_with('/') {
                out.push(s.to_string());
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|x| collect_paths(x, out)),
        toml::Value::Table(t) => t.values().for_each(|x| collect_paths(x, out)),
        _ => {}
    }
}

#[test]
fn signer_is_alone_single_and_reachable_only_from_the_approver() {
    let docs = manifests();
    let signer = find(&docs, "Deployment", "certsign-signer");
    let approver = find(&docs, "Deployment", "certsign-approver");
    let signer_ns = namespace(signer);
    let approver_ns = namespace(approver);
    assert_ne!(signer_ns, approver_ns, "the signer gets its own namespace");
    assert_eq!(
        signer["spec"]["replicas"], 1,
        "one signer: one key, one journal"
    );
    assert_eq!(
        signer["spec"]["strategy"]["type"], "Recreate",
        "never two signers at once"
    );
    // Nothing else runs in the signer's namespace.
    let others: Vec<&str> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| {
            matches!(
                kind(d),
                "Deployment" | "StatefulSet" | "DaemonSet" | "Pod" | "Job"
            )
        })
        .filter(|d| namespace(d) == signer_ns && name(d) != name(signer))
        .map(name)
        .collect();
    assert!(
        others.is_empty(),
        "other workloads in the signer namespace: {others:?}"
    );

    // The key comes from a Secret, 0400, mounted read-only.
    let pod = &signer["spec"]["template"]["spec"];
    let secret_vols: Vec<&Value> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v.get("secret").is_some())
        .collect();
    assert_eq!(
        secret_vols.len(),
        1,
        "the signer's key material comes from one Secret"
    );
    let kv = secret_vols[0];
    assert_eq!(
        kv["secret"]["defaultMode"], 0o400,
        "key Secret must be mounted 0400"
    );
    // Only the init container sees the Secret (0440 once fsGroup applies);
    // it copies the keys 0600 into a memory emptyDir that the signer reads.
    let init = &pod["initContainers"][0];
    let mount = init["volumeMounts"]
        .as_array()
        .expect("an init container installs the keys")
        .iter()
        .find(|m| m["name"] == kv["name"])
        .expect("key Secret is mounted into the init container");
    assert_eq!(mount["readOnly"], true);
    let script = init["command"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap();
    assert!(
        script.contains("chmod 0600"),
        "keys must be installed 0600: {script}"
    );
    assert_eq!(init["securityContext"]["runAsNonRoot"], true);
    assert!(
        !pod["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == kv["name"]),
        "the signer container must not mount the Secret itself"
    );
    let keys_vol = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "keys")
        .expect("a keys volume");
    assert_eq!(
        keys_vol["emptyDir"]["medium"], "Memory",
        "keys stay in memory"
    );
    let cfg = check_config_paths(&docs, signer, "certsign-signer-config", "signer.toml");
    let key_dir = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "keys")
        .expect("the signer mounts the installed keys")["mountPath"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        cfg["ca_key"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{key_dir}/")),
        "ca_key must be read from the installed-keys volume"
    );
    assert_eq!(
        cfg["allowed_clients"],
        toml::Value::Array(vec!["certsign-approver".into()])
    );
    let port = pod["containers"][0]["ports"][0]["containerPort"]
        .as_u64()
        .unwrap();
    let listen_port: u64 = cfg["listen"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        port, listen_port,
        "containerPort matches the config's listen port"
    );

    // Network: a default deny for the namespace...
    let policies: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| kind(d) == "NetworkPolicy" && namespace(d) == signer_ns)
        .collect();
    let deny_all = policies.iter().find(|p| {
        p["spec"]["podSelector"]
            .as_object()
            .is_some_and(|m| m.is_empty())
            && p["spec"].get("ingress").is_none()
            && p["spec"]["policyTypes"]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x == "Ingress"))
    });
    assert!(
        deny_all.is_some(),
        "no default-deny ingress policy in {signer_ns}"
    );
    let deny_all = deny_all.unwrap();
    assert!(
        deny_all["spec"]["policyTypes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "Egress")
            && deny_all["spec"].get("egress").is_none(),
        "the signer dials nothing: deny egress too"
    );
    // ...and exactly one way in: the approver's pods, on the signer's port.
    let signer_labels = labels(&signer["spec"]["template"]["metadata"]["labels"]);
    let approver_labels = labels(&approver["spec"]["template"]["metadata"]["labels"]);
    let approver_ns_labels = labels(&find(&docs, "Namespace", approver_ns)["metadata"]["labels"]);
    let mut admitted = 0;
    for p in &policies {
        let Some(rules) = p["spec"]["ingress"].as_array() else {
            continue;
        };
        assert!(
            selects(
                &labels(&p["spec"]["podSelector"]["matchLabels"]),
                &signer_labels
            ),
            "ingress policy {} does not select the signer",
            name(p)
        );
        for rule in rules {
            let from = rule["from"]
                .as_array()
                .expect("every ingress rule names its peers");
            assert!(
                !from.is_empty(),
                "an ingress rule without `from` admits everyone"
            );
            for peer in from {
                assert!(
                    peer.get("ipBlock").is_none(),
                    "ipBlock peer admits more than the approver"
                );
                let pods = labels(&peer["podSelector"]["matchLabels"]);
                assert!(
                    selects(&pods, &approver_labels),
                    "peer {peer} is not the approver's pods"
                );
                // Namespace: the approver's, by the label Kubernetes sets itself.
                let ns_sel = labels(&peer["namespaceSelector"]["matchLabels"]);
                assert_eq!(
                    ns_sel
                        .get("kubernetes.io/metadata.name")
                        .map(String::as_str),
                    Some(approver_ns),
                    "peer must name the approver's namespace"
                );
                assert!(
                    !ns_sel.is_empty()
                        && ns_sel.keys().all(|k| k == "kubernetes.io/metadata.name"
                            || approver_ns_labels.contains_key(k))
                );
                admitted += 1;
            }
            let ports = rule["ports"].as_array().expect("ingress rule limits ports");
            assert_eq!(ports.len(), 1);
            assert_eq!(ports[0]["port"].as_u64(), Some(port));
        }
    }
    assert_eq!(admitted, 1, "exactly one peer admitted to the signer");

    // The signer Service exposes that port and selects the signer.
    let svc = find(&docs, "Service", "certsign-signer");
    assert_eq!(namespace(svc), signer_ns);
    assert!(selects(&labels(&svc["spec"]["selector"]), &signer_labels));
    assert_eq!(svc["spec"]["ports"][0]["port"].as_u64(), Some(port));

    // The approver dials that Service by its cluster DNS name.
    let acfg = check_config_paths(&docs, approver, "certsign-approver-config", "approver.toml");
    let endpoint = acfg["signer"]["endpoints"][0].as_str().unwrap();
    assert_eq!(
        endpoint,
        format!("https://{}.{}.svc:{}", name(svc), signer_ns, port),
        "approver's signer endpoint must be the signer Service"
    );
}

#[test]
fn approver_has_service_store_and_secret_tls() {
    let docs = manifests();
    let approver = find(&docs, "Deployment", "certsign-approver");
    let ns = namespace(approver);
    let pod = &approver["spec"]["template"]["spec"];
    let pod_labels = labels(&approver["spec"]["template"]["metadata"]["labels"]);
    let svc = find(&docs, "Service", "certsign-approver");
    assert_eq!(namespace(svc), ns);
    assert!(selects(&labels(&svc["spec"]["selector"]), &pod_labels));
    let vols = pod["volumes"].as_array().unwrap();
    let pvc_claim = vols
        .iter()
        .find_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .expect("approver store on a PVC");
    assert_eq!(
        namespace(find(&docs, "PersistentVolumeClaim", pvc_claim)),
        ns
    );
    let tls = vols
        .iter()
        .find(|v| v.get("secret").is_some())
        .expect("approver TLS identity from a Secret");
    assert_eq!(tls["secret"]["defaultMode"], 0o400);
    let cfg = check_config_paths(&docs, approver, "certsign-approver-config", "approver.toml");
    assert!(
        cfg["database_url"]
            .as_str()
            .unwrap()
            .starts_with("sqlite:///")
    );
    // SQLite has one writer: one replica, replaced not rolled.
    assert_eq!(approver["spec"]["replicas"], 1);
    assert_eq!(approver["spec"]["strategy"]["type"], "Recreate");
}

// --- example configs ---------------------------------------------------------

/// The key paths of a config file as `certsign-signer init` writes it: the
/// schema every deployment starts from (ARCHITECTURE.md links the examples
/// rather than reprinting it).
fn init_schema(file: &str) -> BTreeSet<String> {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin("certsign-signer"))
        .arg("init")
        .arg("--dir")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "certsign-signer init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rel = match file {
        "signer.toml" => "signer/signer.toml",
        "approver.toml" => "approver/approver.toml",
        "certctl.toml" => "admin/certctl.toml",
        other => panic!("init writes no {other}"),
    };
    let text = std::fs::read_to_string(tmp.path().join(rel)).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("init's {file}: {e}"));
    let mut keys = BTreeSet::new();
    key_paths(&table, "", &mut keys);
    assert!(!keys.is_empty(), "init wrote an empty {file}");
    keys
}

/// Dotted key paths of a table (array-of-table entries merged).
fn key_paths(t: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (k, v) in t {
        let p = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(sub) => key_paths(sub, &p, out),
            toml::Value::Array(a) if a.iter().all(toml::Value::is_table) && !a.is_empty() => {
                for e in a {
                    key_paths(e.as_table().unwrap(), &p, out);
                }
            }
            _ => {
                out.insert(p);
            }
        }
    }
}

#[test]
fn example_configs_follow_architecture_and_comment_every_key() {
    for (example, schema) in [
        ("signer.example.toml", "signer.toml"),
        ("approver.example.toml", "approver.toml"),
        ("certctl.example.toml", "certctl.toml"),
    ] {
        let text = read(&format!("deploy/config/{example}"));
        let parsed: toml::Table =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{example} is not TOML: {e}"));
        let mut have = BTreeSet::new();
        key_paths(&parsed, "", &mut have);
        let want = init_schema(schema);
        // Everything init writes is shown; extra keys are the binaries'
        // own (deploy_configs.rs proves the binaries, which deny unknown
        // keys, accept them).
        let missing: Vec<&String> = want.difference(&have).collect();
        assert!(
            missing.is_empty(),
            "{example}: lacks the {schema} keys init writes {missing:?}"
        );

        // Every key (and table header) has a comment line right above it.
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let is_key = t.contains('=') && !t.starts_with('[');
            let is_table = t.starts_with('[');
            if !(is_key || is_table) {
                continue;
            }
            // A table header's comment may sit right above it; a key directly
            // under its header is covered by the header's comment.
            let above = if i == 0 { "" } else { lines[i - 1].trim() };
            let header_above =
                above.starts_with('[') && is_key && i >= 2 && lines[i - 2].trim().starts_with('#');
            assert!(
                above.starts_with('#') || header_above,
                "{example}:{}: `{t}` has no comment above it",
                i + 1
            );
        }
    }
}
