//! The approver's Kubernetes API face judged by the official Python
//! `kubernetes` client (CertificatesV1Api and its watch) and by raw HTTPS
//! requests (curl): the hostile-input limits the gRPC face has too, watch
//! resume from a list's resource version, aggregated discovery, and the
//! gRPC face's writes seen by a watch on this one.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use certsign_tests::kube::{API_CLIENT, KubeStack, curl, manifest, ok};
use certsign_tests::pki::csr;
use certsign_tests::{repo_root, require_tool, run_ok};

#[test]
fn python_kubernetes_client_lists_creates_reads_watches_and_deletes() {
    require_tool("python3", "apt-get install python3");
    let has_client = Command::new("python3")
        .args(["-c", "import kubernetes"])
        .status()
        .unwrap()
        .success();
    assert!(
        has_client,
        "the Python kubernetes client is not installed (tests/run.sh: pip install kubernetes)"
    );
    let k = KubeStack::start();
    let (_, pem) = csr("py-user", &[]);
    let csr_path = k.stack.dir.join("py.csr");
    std::fs::write(&csr_path, pem).unwrap();
    let out = run_ok(
        Command::new("python3")
            .arg(KubeStack::python_client())
            .arg(k.admin_kubeconfig())
            .arg(&csr_path)
            .arg("py")
            .arg(API_CLIENT),
    );
    assert!(out.contains("python kubernetes client: OK"), "{out}");
    assert!(out.contains("create: py by admin"), "{out}");
    assert!(out.contains("watch: ['ADDED', 'DELETED']"), "{out}");
    assert!(out.contains("approval refused: 403"), "{out}");
}

#[test]
fn hostile_requests_get_kubernetes_statuses_and_slow_clients_do_not_stall() {
    require_tool("curl", "apt-get install curl");
    let k = KubeStack::start();
    let dir = k.stack.dir.clone();
    let csrs = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
    let status = |body: &str| -> serde_json::Value {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    };

    // No credentials: 401 with Kubernetes' Status.
    let (body, code) = curl(
        Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(k.stack.ca())
            .args(["-w", "\n%{http_code}"])
            .arg(format!("{}{csrs}", k.url())),
    );
    assert_eq!(code, 401);
    assert_eq!(
        status(&body),
        serde_json::json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401})
    );

    // An oversized body: refused before it is read whole.
    let big = dir.join("big.json");
    std::fs::write(&big, vec![b' '; 5 << 20]).unwrap();
    let (body, code) = curl(
        k.curl(csrs)
            .args([
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
            ])
            .arg(format!("@{}", big.display())),
    );
    assert_eq!(code, 413, "{body}");
    assert_eq!(status(&body)["reason"], "RequestEntityTooLarge");

    // Bad JSON.
    let (body, code) = curl(k.curl(csrs).args([
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        "{\"spec\":",
    ]));
    assert_eq!(code, 400, "{body}");
    assert!(status(&body)["message"].as_str().unwrap().starts_with("CertificateSigningRequest in version \"v1\" cannot be handled as a CertificateSigningRequest: "), "{body}");

    // Unknown fields: refused with Strict, warned with Warn.
    let (_, pem) = csr("h1", &[]);
    let manifest = serde_json::json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": "h1", "bogus": true},
        "spec": {"request": base64::engine::general_purpose::STANDARD.encode(&pem), "signerName": API_CLIENT, "usages": ["client auth"]},
    });
    let (body, code) = curl(
        k.curl(&format!("{csrs}?fieldValidation=Strict"))
            .args([
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
            ])
            .arg(manifest.to_string()),
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        status(&body)["message"],
        "CertificateSigningRequest in version \"v1\" cannot be handled as a CertificateSigningRequest: strict decoding error: unknown field \"metadata.bogus\""
    );
    let (body, code) = curl(
        k.curl(&format!("{csrs}?fieldValidation=Warn"))
            .args([
                "-i",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
            ])
            .arg(manifest.to_string()),
    );
    assert_eq!(code, 201, "{body}");
    assert!(
        body.to_ascii_lowercase()
            .contains("warning: 299 - \"unknown field \\\"metadata.bogus\\\"\""),
        "{body}"
    );
    // A YAML body.
    let yaml = KubeStack::manifest("h2", &csr("h2", &[]).1, API_CLIENT, &["client auth"]);
    let (body, code) = curl(
        k.curl(csrs)
            .args([
                "-X",
                "POST",
                "-H",
                "Content-Type: application/yaml",
                "--data-binary",
            ])
            .arg(yaml),
    );
    assert_eq!(code, 201, "{body}");
    // An approval on a stale version: Kubernetes' Conflict (kubectl retries).
    let (body, code) = curl(&mut k.curl(&format!("{csrs}/h2")));
    assert_eq!(code, 200, "{body}");
    let mut obj: serde_json::Value = serde_json::from_str(&body).unwrap();
    obj["metadata"]["resourceVersion"] = "1".into();
    obj["status"]["conditions"] = serde_json::json!([{"type": "Denied", "status": "True"}]);
    let (body, code) = curl(
        k.curl(&format!("{csrs}/h2/approval"))
            .args([
                "-X",
                "PUT",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
            ])
            .arg(obj.to_string()),
    );
    assert_eq!(code, 409, "{body}");
    assert_eq!(status(&body)["reason"], "Conflict");
    // An unsupported field selector and an unknown path.
    let (body, code) = curl(&mut k.curl(&format!("{csrs}?fieldSelector=spec.foo%3D1")));
    assert_eq!(
        (code, status(&body)["message"].as_str().unwrap()),
        (400, "field label not supported: spec.foo")
    );
    let (_, code) = curl(&mut k.curl("/api/v1/pods"));
    assert_eq!(code, 404);

    // A slow client (connects, never finishes its handshake) does not
    // stall others, and is cut off.
    let mut slow = std::net::TcpStream::connect(&k.addr).unwrap();
    let started = Instant::now();
    let (body, code) = curl(&mut k.curl("/version"));
    assert_eq!(code, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 16];
    let n = slow.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the stalled connection was not closed");
    assert!(started.elapsed() < Duration::from_secs(25));
}

/// The event lines of a watch that ends by itself (`timeoutSeconds`).
fn watch_events(k: &KubeStack, query: &str) -> Vec<(String, String)> {
    let (body, code) = curl(&mut k.curl(&format!(
        "/apis/certificates.k8s.io/v1/certificatesigningrequests?{query}"
    )));
    assert_eq!(code, 200, "{body}");
    body.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["type"].as_str().unwrap().to_string(),
                v["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn watches_resume_from_a_list_version_and_see_the_grpc_face_writes() {
    require_tool("curl", "apt-get install curl");
    let k = KubeStack::start();
    let dir = k.stack.dir.clone();
    manifest(
        &dir,
        "a.yaml",
        "a",
        "a-user",
        &[],
        API_CLIENT,
        &["client auth"],
    );
    ok(k.admin_kubectl().args(["apply", "-f", "a.yaml"]), &dir);
    let (body, code) = curl(&mut k.curl("/apis/certificates.k8s.io/v1/certificatesigningrequests"));
    assert_eq!(code, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["kind"], "CertificateSigningRequestList");
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(rv.parse::<u64>().unwrap() > 0, "{body}");

    // Written through the gRPC face (certctl).
    manifest(
        &dir,
        "b.yaml",
        "b",
        "b-user",
        &[],
        API_CLIENT,
        &["client auth"],
    );
    run_ok(
        k.stack
            .certctl()
            .arg("apply")
            .arg("-f")
            .arg(dir.join("b.yaml")),
    );

    let ev = |t: &str, n: &str| (t.to_string(), n.to_string());
    // From the list's version: only what came after, no replay.
    assert_eq!(
        watch_events(
            &k,
            &format!("watch=true&resourceVersion={rv}&timeoutSeconds=2")
        ),
        vec![ev("ADDED", "b")]
    );
    // Without a version: the current objects first, as ADDED.
    assert_eq!(
        watch_events(&k, "watch=1&timeoutSeconds=2"),
        vec![ev("ADDED", "a"), ev("ADDED", "b")]
    );
    // One object (kubectl get csr NAME -w): from version 0.
    assert_eq!(
        watch_events(
            &k,
            "watch=true&fieldSelector=metadata.name%3Da&resourceVersion=0&timeoutSeconds=2"
        ),
        vec![ev("ADDED", "a")]
    );
    // A bad version is Kubernetes' BadRequest, not a stream.
    let (body, code) = curl(&mut k.curl(
        "/apis/certificates.k8s.io/v1/certificatesigningrequests?watch=true&resourceVersion=x",
    ));
    assert_eq!(code, 400, "{body}");

    // Aggregated discovery when asked for (kubectl's Accept), labelled so.
    let out = k
        .curl("/apis")
        .args([
            "-i",
            "-H",
            "Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        text.contains(
            "content-type: application/json;g=apidiscovery.k8s.io;v=v2;as=apigroupdiscoverylist"
        ),
        "{text}"
    );
    assert!(
        text.contains("\"kind\":\"apigroupdiscoverylist\""),
        "{text}"
    );
}

/// The hostile manifests of the gRPC face's corpus (tests/corpus/manifest),
/// posted to this face as they are: each is a 4xx with a Status naming the
/// problem, never a 5xx or a crash, and the approver keeps serving.
#[test]
fn the_hostile_manifest_corpus_gets_kubernetes_statuses() {
    require_tool("curl", "apt-get install curl");
    let k = KubeStack::start();
    let csrs = "/apis/certificates.k8s.io/v1/certificatesigningrequests?fieldValidation=Strict";
    let dir = repo_root().join("tests/corpus/manifest");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 20, "{files:?}");
    for f in files {
        let media = if f.extension().is_some_and(|e| e == "json") {
            "application/json"
        } else {
            "application/yaml"
        };
        let (body, code) = curl(
            k.curl(csrs)
                .args(["-X", "POST", "-H", &format!("Content-Type: {media}")])
                .arg("--data-binary")
                .arg(format!("@{}", f.display())),
        );
        assert!((400..500).contains(&code), "{}: {code} {body}", f.display());
        let s: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{}: not a Status ({e}): {body}", f.display()));
        assert_eq!(s["kind"], "Status", "{}: {body}", f.display());
        assert!(
            s["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}: {body}",
            f.display()
        );
    }
    let (body, code) = curl(&mut k.curl("/version"));
    assert_eq!(code, 200, "{body}");
    assert!(!k.stack.approver.log().contains("panicked"));
}

/// Watches one identity holds open are capped across both faces
/// (`limits.max_watches_per_identity`): the next one is refused with
/// Kubernetes' 429 on the REST face and RESOURCE_EXHAUSTED (certctl's one
/// line) on gRPC, and a watch the client left frees its slot at once.
#[test]
fn open_watches_are_capped_per_identity_across_both_faces() {
    require_tool("curl", "apt-get install curl");
    let k = KubeStack::start_with(|t| {
        let limits = t
            .entry("limits")
            .or_insert_with(|| toml::Value::Table(Default::default()));
        limits
            .as_table_mut()
            .unwrap()
            .insert("max_watches_per_identity".into(), 2.into());
    });
    let watch = "/apis/certificates.k8s.io/v1/certificatesigningrequests?watch=1";
    /// A watching curl, killed when dropped (the client leaves).
    struct Watcher(std::process::Child);
    impl Drop for Watcher {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // One object, so a watch shows it has started: its initial ADDED.
    let dir = k.stack.dir.clone();
    manifest(
        &dir,
        "w.yaml",
        "w1",
        "w1",
        &[],
        API_CLIENT,
        &["client auth"],
    );
    ok(k.admin_kubectl().args(["apply", "-f", "w.yaml"]), &dir);
    let open = |n: usize| {
        let out = dir.join(format!("watch-{n}.out"));
        let mut c = k.curl(watch);
        c.args(["--max-time", "120", "-N", "-o"])
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let watcher = Watcher(c.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(&out).map_or(0, |m| m.len()) == 0 {
            assert!(Instant::now() < deadline, "watch {n} never started");
            std::thread::sleep(Duration::from_millis(50));
        }
        watcher
    };
    let first = open(1);
    let _second = open(2);
    let refused = |what: &str| {
        let (body, code) = curl(&mut k.curl(watch));
        assert_eq!(code, 429, "{what}: {body}");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["reason"], "TooManyRequests", "{body}");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("at most 2 at once (limits.max_watches_per_identity)"),
            "{body}"
        );
    };
    refused("a third REST watch");
    // The gRPC face counts the same identity's watches.
    let mut certctl = k
        .stack
        .certctl()
        .args(["get", "csr", "--watch"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = certctl.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = certctl.kill();
            panic!("certctl get csr --watch was not refused");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    let mut err = String::new();
    certctl
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("too many open watches for \"admin\": at most 2 at once"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // The client of the first one leaves: its slot is free again.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, code) = curl(k.curl(watch).args(["--max-time", "2"]));
        // curl's own timeout ends an accepted watch: 200 then exit 28.
        if code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never freed");
        std::thread::sleep(Duration::from_millis(200));
    }
}
