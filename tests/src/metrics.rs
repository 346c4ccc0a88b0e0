//! Scraping a daemon's Prometheus `/metrics` the way Prometheus' own
//! client library reads it: the Python `prometheus_client` parsers are the
//! outside judge (the strict OpenMetrics parser must accept the exposition,
//! and the text-format parser yields the samples the tests check).
//!
//! It must never parse the exposition itself: a test that agrees with our
//! own encoder proves nothing.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use crate::process::require_tool;

/// One sample of a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The family's name (a counter's without `_total`).
    pub family: String,
    /// The family's type as the parser read it (`counter`, `gauge`, ...).
    pub kind: String,
    /// The sample's own name (`..._total`, `..._bucket`, ...).
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// The response's Content-Type.
    pub content_type: String,
    pub samples: Vec<Sample>,
    /// Every family the exposition declares (samples or not), with its
    /// type.
    pub family_types: BTreeMap<String, String>,
}

const SCRAPER: &str = r#"
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
    ctype = r.headers.get("Content-Type", "")
    text = r.read().decode("utf-8")
list(openmetrics(text))  # strict: raises on anything OpenMetrics forbids
out, families = [], {}
for f in text_string_to_metric_families(text):
    families[f.name] = f.type
    for s in f.samples:
        out.append({"family": f.name, "kind": f.type, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps({"content_type": ctype, "samples": out, "families": families}))
"#;

/// Scrape `http://{addr}/metrics`; `None` while nothing answers there.
pub fn try_scrape(addr: &str) -> Option<Scrape> {
    require_tool("python3", "Python 3 with prometheus-client: tests/run.sh");
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRAPER)
        .arg(format!("http://{addr}/metrics"))
        .output()
        .expect("run python3");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("URLError") || err.contains("Connection refused"),
            "the prometheus_client parsers refused the exposition of {addr}:\n{err}"
        );
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("scraper JSON");
    let samples = v["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| Sample {
            family: s["family"].as_str().unwrap().to_string(),
            kind: s["kind"].as_str().unwrap().to_string(),
            name: s["name"].as_str().unwrap().to_string(),
            labels: s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect(),
            value: s["value"].as_f64().unwrap(),
        })
        .collect();
    let family_types = v["families"]
        .as_object()
        .expect("families")
        .iter()
        .map(|(k, t)| (k.clone(), t.as_str().unwrap().to_string()))
        .collect();
    Some(Scrape {
        content_type: v["content_type"].as_str().unwrap_or("").to_string(),
        samples,
        family_types,
    })
}

/// Scrape `addr`, waiting up to 30 s for the listener to answer.
pub fn scrape(addr: &str) -> Scrape {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(s) = try_scrape(addr) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing serves http://{addr}/metrics"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

impl Scrape {
    /// The value of sample `name` whose labels include all of `labels`
    /// (summed over the matching series); 0 when none matches.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// Whether some sample `name` has all of `labels`.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// Every value of label `label` in samples of family `family`.
    pub fn label_values(&self, family: &str, label: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .samples
            .iter()
            .filter(|s| s.family == family)
            .filter_map(|s| s.labels.get(label).cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The family names declared (with samples or not).
    pub fn families(&self) -> Vec<String> {
        self.family_types.keys().cloned().collect()
    }
}
