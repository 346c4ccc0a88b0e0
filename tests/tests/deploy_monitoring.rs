//! deploy/prometheus/certsign-alerts.yaml and deploy/grafana/
//! certsign-dashboard.json against what the daemons really export: the
//! rules file has the shape Prometheus loads (checked by `promtool check
//! rules` when it is installed), covers certificate expiry, queue growth
//! and an unreachable signer, and every metric an expression names is one a
//! running signer or approver declares, with a suffix its type has
//! (`_total` counters, `_bucket`/`_count`/`_sum` histograms, gauges bare).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;

use certsign_tests::metrics::scrape;
use certsign_tests::{Stack, free_port, repo_root, run};
use serde_json::Value;

/// The metric names in a PromQL expression: identifiers outside quotes
/// and label matchers that start with `certsign_`, plus `up`.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let (mut quote, mut braces, mut word) = (None, 0, String::new());
    for c in expr.chars().chain([' ']) {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if braces == 0 && (word.starts_with("certsign_") || word == "up") {
            names.push(word.clone());
        }
        word.clear();
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '{' => braces += 1,
            '}' => braces -= 1,
            _ => {}
        }
    }
    names
}

/// Whether `name` is a sample of a declared family, with a suffix its
/// type allows.
fn exported(name: &str, families: &BTreeMap<String, String>) -> bool {
    if name == "up" {
        return true;
    }
    let kind = |f: &str| families.get(f).map(String::as_str);
    if kind(name) == Some("gauge") {
        return true;
    }
    if let Some(f) = name.strip_suffix("_total") {
        return kind(f) == Some("counter");
    }
    ["_bucket", "_count", "_sum"].iter().any(|s| {
        name.strip_suffix(s)
            .is_some_and(|f| kind(f) == Some("histogram"))
    })
}

#[test]
fn alert_rules_and_dashboard_name_only_exported_metrics() {
    let (am, sm) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let _stack = Stack::start_configured(
        &[],
        |s| {
            s.insert("metrics_listen".into(), sm.clone().into());
        },
        |a| {
            a.insert("metrics_listen".into(), am.clone().into());
        },
    );
    let mut families = scrape(&am).family_types;
    families.extend(scrape(&sm).family_types);
    assert!(families.len() >= 12, "{families:?}");

    // The alert rules.
    let path = repo_root().join("deploy/prometheus/certsign-alerts.yaml");
    if Command::new("promtool").arg("--version").output().is_ok() {
        let out = run(Command::new("promtool").args(["check", "rules"]).arg(&path));
        assert!(out.status.success(), "promtool: {out:?}");
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let rules: Value = serde_saphyr::from_str(&text).expect("rules YAML");
    let mut alerts = BTreeMap::new();
    for group in rules["groups"].as_array().expect("groups") {
        assert!(group["name"].is_string());
        for rule in group["rules"].as_array().expect("rules") {
            let alert = rule["alert"].as_str().expect("alerting rules only");
            let expr = rule["expr"].as_str().expect("expr");
            assert!(
                rule["for"].as_str().is_some_and(|f| !f.is_empty()),
                "{alert}: for"
            );
            assert!(
                matches!(
                    rule["labels"]["severity"].as_str(),
                    Some("warning" | "critical")
                ),
                "{alert}: severity"
            );
            assert!(rule["annotations"]["summary"].is_string(), "{alert}");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{alert}: names no metric");
            for n in &names {
                assert!(exported(n, &families), "{alert}: {n} is not exported");
            }
            alerts.insert(alert.to_string(), names);
        }
    }
    let watches = |metric: &str| alerts.values().any(|ns| ns.iter().any(|n| n == metric));
    for metric in [
        "certsign_approver_certificate_expiry_seconds",
        "certsign_signer_certificate_expiry_seconds",
        "certsign_approver_crl_expiry_seconds",
        "certsign_approver_pending_requests",
        "certsign_approver_forwarder_attempts_total",
    ] {
        assert!(watches(metric), "no alert watches {metric}");
    }
    assert!(alerts.contains_key("CertsignSignerUnreachable"));

    // The dashboard.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/grafana/certsign-dashboard.json"))
            .unwrap(),
    )
    .expect("dashboard JSON");
    assert!(dash["title"].is_string() && dash["uid"].is_string());
    let panels = dash["panels"].as_array().unwrap();
    let mut ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    let mut shown = Vec::new();
    for p in panels {
        for t in p["targets"].as_array().unwrap() {
            for n in metric_names(t["expr"].as_str().unwrap()) {
                assert!(
                    exported(&n, &families),
                    "{}: {n} is not exported",
                    p["title"]
                );
                shown.push(n);
            }
        }
    }
    // Every family appears on the dashboard.
    for (f, kind) in &families {
        let used = shown.iter().any(|n| {
            n == f || n.strip_suffix("_total") == Some(f) || {
                kind == "histogram" && n.strip_suffix("_bucket") == Some(f)
            }
        });
        assert!(used, "the dashboard does not show {f}");
    }
}

#[test]
fn metric_names_skip_labels_and_strings() {
    assert_eq!(
        metric_names(
            "sum by (job) (rate(certsign_a_total{outcome=\"certsign_x\"}[5m])) > 0 or up{job=~\".*certsign.*\"} == 0"
        ),
        vec!["certsign_a_total", "up"]
    );
}
