//! The Kubernetes manifests' operations side, parsed as YAML the way
//! Kubernetes reads them: both daemons' probes are native `grpc:` probes
//! on their plaintext `health_listen` ports (the approver's readiness on
//! the service that turns NOT_SERVING with the database, its liveness on
//! `liveness`), every
//! image is pinned (no `latest`, the certsign image at the workspace's
//! version), a PodDisruptionBudget covers the approver's pods, and the
//! metrics port is declared, exposed, admitted and scraped by the
//! ServiceMonitor in monitoring/. probes.rs runs the health port for real.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use certsign_tests::repo_root;
use serde_json::Value;

/// Every document of the `.yaml` files directly in `dir`.
fn docs_in(dir: &Path) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let opts = serde_saphyr::options! { legacy_octal_numbers: true };
        let parsed: Vec<Value> = serde_saphyr::from_multiple_with_options(&text, opts)
            .unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", f.display()));
        out.extend(parsed.into_iter().filter(|d| !d.is_null()));
    }
    out
}

fn manifests() -> Vec<Value> {
    docs_in(&repo_root().join("deploy/kubernetes"))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} named {name}"))
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

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The approver's config from its ConfigMap.
fn approver_config(docs: &[Value]) -> toml::Table {
    let cm = find(docs, "ConfigMap", "certsign-approver-config");
    toml::from_str(cm["data"]["approver.toml"].as_str().unwrap()).unwrap()
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn approver_probes_are_native_grpc_on_the_plaintext_health_port() {
    let docs = manifests();
    let approver = find(&docs, "Deployment", "certsign-approver");
    let container = &approver["spec"]["template"]["spec"]["containers"][0];
    let cfg = approver_config(&docs);
    let health = port_of(cfg["health_listen"].as_str().expect("health_listen set"));
    let grpc = port_of(cfg["listen"].as_str().unwrap());
    assert_ne!(health, grpc, "the health port must not be the mTLS port");
    let declared: Vec<u64> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap())
        .collect();
    assert!(declared.contains(&health), "{declared:?}");
    for (probe, service) in [
        // NOT_SERVING while the database does not answer: not ready.
        ("readinessProbe", "certsign.v1.Approver"),
        // Only the process's end: a database outage restarts nothing.
        ("livenessProbe", "liveness"),
    ] {
        let p = &container[probe];
        assert!(
            p.get("tcpSocket").is_none() && p.get("httpGet").is_none(),
            "{probe}: {p}"
        );
        assert_eq!(p["grpc"]["port"].as_u64(), Some(health), "{probe}: {p}");
        assert_eq!(p["grpc"]["service"], service, "{probe}: {p}");
    }
}

#[test]
fn signer_probes_are_native_grpc_on_its_plaintext_health_port() {
    let docs = manifests();
    let signer = find(&docs, "Deployment", "certsign-signer");
    let container = &signer["spec"]["template"]["spec"]["containers"][0];
    let cm = find(&docs, "ConfigMap", "certsign-signer-config");
    let cfg: toml::Table = toml::from_str(cm["data"]["signer.toml"].as_str().unwrap()).unwrap();
    let health = port_of(cfg["health_listen"].as_str().expect("health_listen set"));
    assert_ne!(health, port_of(cfg["listen"].as_str().unwrap()));
    for (probe, service) in [
        ("readinessProbe", Some("certsign.v1.Signer")),
        ("livenessProbe", None),
    ] {
        let p = &container[probe];
        assert_eq!(p["grpc"]["port"].as_u64(), Some(health), "{probe}: {p}");
        assert_eq!(p["grpc"]["service"].as_str(), service, "{probe}: {p}");
    }
}

#[test]
fn every_image_is_pinned() {
    let version = {
        let cargo: toml::Table =
            toml::from_str(&std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap())
                .unwrap();
        cargo["workspace"]["package"]["version"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut seen = 0;
    for d in manifests().iter().filter(|d| d["kind"] == "Deployment") {
        let pod = &d["spec"]["template"]["spec"];
        for list in ["containers", "initContainers"] {
            for c in pod[list].as_array().into_iter().flatten() {
                let image = c["image"].as_str().unwrap();
                let (repo, tag) = image
                    .rsplit_once(':')
                    .filter(|(_, t)| !t.contains('/'))
                    .unwrap_or_else(|| panic!("{image}: no tag"));
                assert!(
                    !tag.is_empty() && tag != "latest",
                    "{image}: tag must be pinned"
                );
                if repo.ends_with("/certsign") {
                    assert_eq!(tag, version, "{image}: the workspace's version");
                }
                seen += 1;
            }
        }
    }
    assert!(seen >= 3, "{seen} images");
}

#[test]
fn a_disruption_budget_covers_the_approver_pods() {
    let docs = manifests();
    let approver = find(&docs, "Deployment", "certsign-approver");
    let pod_labels = labels(&approver["spec"]["template"]["metadata"]["labels"]);
    let pdbs: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "PodDisruptionBudget")
        .collect();
    assert_eq!(pdbs.len(), 1, "one PodDisruptionBudget");
    let pdb = pdbs[0];
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(
        pdb["metadata"]["namespace"],
        approver["metadata"]["namespace"]
    );
    assert!(selects(
        &labels(&pdb["spec"]["selector"]["matchLabels"]),
        &pod_labels
    ));
    // It must let a drain proceed with the single SQLite replica:
    // maxUnavailable 1 (minAvailable 1 would block it forever).
    assert_eq!(pdb["spec"]["maxUnavailable"].as_u64(), Some(1), "{pdb}");
    assert!(pdb["spec"].get("minAvailable").is_none());
    // The signer has none: one replica, its key's single home.
    let signer = find(&docs, "Deployment", "certsign-signer");
    assert!(!selects(
        &labels(&pdb["spec"]["selector"]["matchLabels"]),
        &labels(&signer["spec"]["template"]["metadata"]["labels"])
    ));
}

#[test]
fn metrics_port_is_declared_exposed_admitted_and_scraped() {
    let docs = manifests();
    let cfg = approver_config(&docs);
    let metrics = port_of(cfg["metrics_listen"].as_str().expect("metrics_listen set"));
    let approver = find(&docs, "Deployment", "certsign-approver");
    let container = &approver["spec"]["template"]["spec"]["containers"][0];
    let named = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a container port named metrics");
    assert_eq!(named["containerPort"].as_u64(), Some(metrics));
    let svc = find(&docs, "Service", "certsign-approver");
    let svc_port = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("the Service exposes metrics");
    assert_eq!(svc_port["targetPort"], "metrics");
    // The approver's NetworkPolicy admits the metrics port, from a
    // namespace selector only (not from everyone).
    let policy = find(&docs, "NetworkPolicy", "certsign-approver");
    let rule = policy["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["port"].as_u64() == Some(metrics))
        })
        .expect("an ingress rule for the metrics port");
    let from = rule["from"]
        .as_array()
        .expect("metrics only from somewhere");
    assert!(!from.is_empty() && from.iter().all(|p| p.get("namespaceSelector").is_some()));

    // The ServiceMonitor (apart: it needs the Prometheus Operator's CRDs).
    let mon = docs_in(&repo_root().join("deploy/kubernetes/monitoring"));
    let kust = mon.iter().find(|d| d["kind"] == "Kustomization").unwrap();
    assert_eq!(
        kust["resources"],
        serde_json::json!(["servicemonitor.yaml"])
    );
    let sm = find(&mon, "ServiceMonitor", "certsign-approver");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["namespace"], svc["metadata"]["namespace"]);
    assert!(selects(
        &labels(&sm["spec"]["selector"]["matchLabels"]),
        &labels(&svc["metadata"]["labels"])
    ));
    let ep = &sm["spec"]["endpoints"][0];
    assert_eq!(ep["port"], "metrics");
    assert_eq!(ep["path"], "/metrics");
}
