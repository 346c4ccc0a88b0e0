//! The approver's Kubernetes API face judged by the real `kubectl` 1.32:
//! discovery, server-side Table, apply with strict validation, Kubernetes'
//! error lines, approval by protobuf PUT, watch, a token user's view. One
//! store behind both faces: what kubectl writes, certctl and gRPC read.
//! (The Python client, raw HTTPS limits and watch resume are in
//! kube_face_clients.rs.)

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use certsign_proto::v1::GetCertificateSigningRequestRequest;
use certsign_tests::kube::{API_CLIENT, KUBELET_CLIENT, KubeStack, fails, kc, manifest, ok};
use certsign_tests::run_ok;
use certsign_tests::wait::block_on;

const HEADER: [&str; 6] = [
    "NAME",
    "AGE",
    "SIGNERNAME",
    "REQUESTOR",
    "REQUESTEDDURATION",
    "CONDITION",
];

/// The CONDITION cell of `name` in `kubectl get csr` (as `kubectl`).
fn condition(k: &KubeStack, kubectl: &mut Command, name: &str) -> String {
    let out = ok(
        kubectl.args(["get", "csr", name, "--no-headers"]),
        &k.stack.dir,
    );
    out.split_whitespace().last().unwrap_or("").to_string()
}

#[test]
fn kubectl_gets_applies_and_deletes_with_kubernetes_texts() {
    let k = KubeStack::start();
    let dir = k.stack.dir.clone();
    // init wrote the admin's kubeconfig with the key embedded: owner only.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(k.admin_kubeconfig())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let none = fails_or_empty(&k);
    assert_eq!(none, "No resources found");
    // certctl prints an equivalent kubeconfig for its own identity.
    let printed = run_ok(k.stack.certctl().args(["config", "kubeconfig"]));
    std::fs::write(dir.join("certctl.kubeconfig"), printed).unwrap();
    let (success, _, err) = kc(
        k.kubectl(&dir.join("certctl.kubeconfig"))
            .args(["get", "csr"]),
        &dir,
    );
    assert!(success && err == "No resources found", "{err}");

    // The Kubernetes tutorial's manifest with a real CSR.
    manifest(
        &dir,
        "csr.yaml",
        "myuser",
        "myuser",
        &[],
        API_CLIENT,
        &["client auth"],
    );
    assert_eq!(
        ok(k.admin_kubectl().args(["apply", "-f", "csr.yaml"]), &dir),
        "certificatesigningrequest.certificates.k8s.io/myuser created"
    );
    assert_eq!(
        ok(k.admin_kubectl().args(["apply", "-f", "csr.yaml"]), &dir),
        "certificatesigningrequest.certificates.k8s.io/myuser unchanged"
    );

    // A changed manifest: metadata changes, the spec stays (immutable).
    let text = std::fs::read_to_string(dir.join("csr.yaml")).unwrap();
    std::fs::write(
        dir.join("changed.yaml"),
        text.replace(
            "  name: myuser\n",
            "  name: myuser\n  labels:\n    team: blue\n",
        )
        .replace("expirationSeconds: 86400", "expirationSeconds: 3600"),
    )
    .unwrap();
    assert_eq!(
        ok(
            k.admin_kubectl().args(["apply", "-f", "changed.yaml"]),
            &dir
        ),
        "certificatesigningrequest.certificates.k8s.io/myuser configured"
    );
    assert_eq!(
        ok(
            k.admin_kubectl().args([
                "get",
                "csr",
                "myuser",
                "-o",
                "jsonpath={.metadata.labels.team} {.spec.expirationSeconds}"
            ]),
            &dir
        ),
        "blue 86400"
    );
    assert_eq!(
        ok(
            k.admin_kubectl()
                .args(["get", "csr", "-l", "team=blue", "-o", "name"]),
            &dir
        ),
        "certificatesigningrequest.certificates.k8s.io/myuser"
    );
    assert_eq!(
        kc(
            k.admin_kubectl().args(["get", "csr", "-l", "team=red"]),
            &dir
        )
        .2,
        "No resources found"
    );

    // The server-side Table, as against a cluster.
    let table = ok(k.admin_kubectl().args(["get", "csr"]), &dir);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        HEADER,
        "{table}"
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[0], "myuser");
    assert_eq!(
        &row[2..],
        [API_CLIENT, "admin", "24h", "Pending"],
        "{table}"
    );
    let bare = ok(k.admin_kubectl().args(["get", "csr", "--no-headers"]), &dir);
    assert!(
        bare.starts_with("myuser ") && bare.lines().count() == 1,
        "{bare}"
    );

    // Output formats.
    let json: serde_json::Value = serde_json::from_str(&ok(
        k.admin_kubectl()
            .args(["get", "csr", "myuser", "-o", "json"]),
        &dir,
    ))
    .unwrap();
    assert_eq!(json["kind"], "CertificateSigningRequest");
    assert_eq!(json["apiVersion"], "certificates.k8s.io/v1");
    assert_eq!(json["spec"]["username"], "admin");
    assert_eq!(json["spec"]["expirationSeconds"], 86400);
    assert!(
        json["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .is_some_and(|s| s.contains("myuser")),
        "{json}"
    );
    let yaml = ok(
        k.admin_kubectl()
            .args(["get", "csr", "myuser", "-o", "yaml"]),
        &dir,
    );
    assert!(yaml.contains("kind: CertificateSigningRequest"), "{yaml}");
    assert!(
        yaml.contains(&format!("signerName: {API_CLIENT}")),
        "{yaml}"
    );
    assert_eq!(
        ok(
            k.admin_kubectl()
                .args(["get", "csr", "myuser", "-o", "jsonpath={.spec.username}"]),
            &dir
        ),
        "admin"
    );
    let cols = ok(
        k.admin_kubectl().args([
            "get",
            "csr",
            "-o",
            "custom-columns=NAME:.metadata.name,SIGNER:.spec.signerName",
        ]),
        &dir,
    );
    assert_eq!(
        cols.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        vec![vec!["NAME", "SIGNER"], vec!["myuser", API_CLIENT]]
    );
    assert_eq!(
        ok(k.admin_kubectl().args(["get", "csr", "-o", "name"]), &dir),
        "certificatesigningrequest.certificates.k8s.io/myuser"
    );

    // One store: certctl (gRPC) sees what kubectl created.
    let via_grpc: serde_json::Value = serde_json::from_str(&run_ok(
        k.stack
            .certctl()
            .args(["get", "csr", "myuser", "-o", "json"]),
    ))
    .unwrap();
    assert_eq!(via_grpc["metadata"]["uid"], json["metadata"]["uid"]);
    assert_eq!(
        via_grpc["metadata"]["resourceVersion"],
        json["metadata"]["resourceVersion"]
    );

    // Kubernetes' error lines.
    assert_eq!(
        fails(k.admin_kubectl().args(["get", "csr", "nope"]), &dir),
        "Error from server (NotFound): certificatesigningrequests.certificates.k8s.io \"nope\" not found"
    );
    assert_eq!(
        fails(k.admin_kubectl().args(["create", "-f", "csr.yaml"]), &dir),
        "Error from server (AlreadyExists): error when creating \"csr.yaml\": certificatesigningrequests.certificates.k8s.io \"myuser\" already exists"
    );
    manifest(
        &dir,
        "invalid.yaml",
        "bob",
        "bob",
        &[],
        "",
        &["client auth"],
    );
    let text = std::fs::read_to_string(dir.join("invalid.yaml")).unwrap();
    std::fs::write(
        dir.join("invalid.yaml"),
        text.replace("signerName: \n", "signerName: \"\"\n"),
    )
    .unwrap();
    assert_eq!(
        fails(
            k.admin_kubectl().args(["create", "-f", "invalid.yaml"]),
            &dir
        ),
        "The CertificateSigningRequest \"bob\" is invalid: spec.signerName: Required value"
    );
    let text = std::fs::read_to_string(dir.join("csr.yaml")).unwrap();
    std::fs::write(
        dir.join("unknown.yaml"),
        text.replace("name: myuser", "name: other")
            .replace("  usages:", "  foo: 1\n  usages:"),
    )
    .unwrap();
    assert_eq!(
        fails(
            k.admin_kubectl().args(["create", "-f", "unknown.yaml"]),
            &dir
        ),
        "Error from server (BadRequest): error when creating \"unknown.yaml\": CertificateSigningRequest in version \"v1\" cannot be handled as a CertificateSigningRequest: strict decoding error: unknown field \"spec.foo\""
    );
    // An unknown resource is 404, as a cluster answers it.
    let (success, _, err) = kc(k.admin_kubectl().args(["get", "pods"]), &dir);
    assert!(!success);
    assert!(
        err.contains("the server doesn't have a resource type \"pods\""),
        "{err}"
    );

    assert_eq!(
        ok(k.admin_kubectl().args(["delete", "csr", "myuser"]), &dir),
        "certificatesigningrequest.certificates.k8s.io \"myuser\" deleted"
    );
    assert_eq!(
        fails(k.admin_kubectl().args(["get", "csr", "myuser"]), &dir),
        "Error from server (NotFound): certificatesigningrequests.certificates.k8s.io \"myuser\" not found"
    );
}

/// `kubectl get csr` on an empty store: its stderr.
fn fails_or_empty(k: &KubeStack) -> String {
    let (success, out, err) = kc(k.admin_kubectl().args(["get", "csr"]), &k.stack.dir);
    assert!(success && out.is_empty(), "{out}\n{err}");
    err
}

#[test]
fn kubectl_approval_only_where_the_signer_trusts_the_approver() {
    let k = KubeStack::start();
    let dir = k.stack.dir.clone();
    let (crt, key) = k.stack.user("system:node:n1", &["system:nodes"]);
    let node = k.kubeconfig_for_cert("node", &crt, &key);

    // A kubelet client request (approval = "approver"): kubectl's approval
    // is recorded and the signer issues.
    manifest(
        &dir,
        "kn1.yaml",
        "kn1",
        "system:node:n1",
        &["system:nodes"],
        KUBELET_CLIENT,
        &["digital signature", "client auth"],
    );
    ok(k.kubectl(&node).args(["apply", "-f", "kn1.yaml"]), &dir);
    // `kubectl wait` on a condition not there yet times out, as on a cluster.
    let err = fails(
        k.admin_kubectl().args([
            "wait",
            "--for=condition=Approved",
            "csr/kn1",
            "--timeout=1s",
        ]),
        &dir,
    );
    assert_eq!(
        err,
        "error: timed out waiting for the condition on certificatesigningrequests/kn1"
    );
    // The requestor is no approver.
    let refused = fails(
        k.kubectl(&node).args(["certificate", "approve", "kn1"]),
        &dir,
    );
    assert!(refused.starts_with("Error from server (Forbidden): certificatesigningrequests.certificates.k8s.io \"kn1\" is forbidden: "), "{refused}");
    assert_eq!(
        ok(
            k.admin_kubectl().args(["certificate", "approve", "kn1"]),
            &dir
        ),
        "certificatesigningrequest.certificates.k8s.io/kn1 approved"
    );
    // `kubectl wait` (a list, then a watch by field selector) sees the
    // approval and then the certificate.
    for condition in [
        "--for=condition=Approved",
        "--for=jsonpath={.status.certificate}",
    ] {
        assert_eq!(
            ok(
                k.admin_kubectl()
                    .args(["wait", condition, "csr/kn1", "--timeout=60s"]),
                &dir
            ),
            "certificatesigningrequest.certificates.k8s.io/kn1 condition met"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let pem = loop {
        let b64 = ok(
            k.admin_kubectl()
                .args(["get", "csr", "kn1", "-o", "jsonpath={.status.certificate}"]),
            &dir,
        );
        if !b64.is_empty() {
            break base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
        }
        assert!(Instant::now() < deadline, "kn1 was not issued");
        std::thread::sleep(Duration::from_millis(200));
    };
    // The leaf only, as the gRPC face serves it (the root is the trust bundle).
    assert_eq!(
        String::from_utf8_lossy(&pem)
            .matches("BEGIN CERTIFICATE")
            .count(),
        1
    );
    assert_eq!(
        condition(&k, &mut k.admin_kubectl(), "kn1"),
        "Approved,Issued"
    );
    // The decision is on record as the admin's, with no signed statement.
    let stored = block_on(async {
        let mut grpc = k.stack.approver_client(Some(&k.stack.admin_ident()));
        grpc.get_certificate_signing_request(GetCertificateSigningRequestRequest {
            name: "kn1".into(),
        })
        .await
    })
    .unwrap()
    .into_inner();
    let decisions = stored.status.unwrap().decisions;
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].username, "admin");
    assert!(decisions[0].statement.is_none());

    // A request whose signer needs signed evidence: kubectl's approval is
    // refused, pointing at certctl; nothing is recorded. Denial works.
    manifest(
        &dir,
        "a2.yaml",
        "a2",
        "alice2",
        &[],
        API_CLIENT,
        &["client auth"],
    );
    ok(k.kubectl(&node).args(["apply", "-f", "a2.yaml"]), &dir);
    assert_eq!(
        fails(
            k.admin_kubectl().args(["certificate", "approve", "a2"]),
            &dir
        ),
        "Error from server (Forbidden): certificatesigningrequests.certificates.k8s.io \"a2\" is forbidden: signerName \"kubernetes.io/kube-apiserver-client\" requires a signed approval: approve it with `certctl certificate approve` (an approval through the Kubernetes API carries no signature)"
    );
    assert_eq!(condition(&k, &mut k.admin_kubectl(), "a2"), "Pending");
    assert_eq!(
        ok(k.admin_kubectl().args(["certificate", "deny", "a2"]), &dir),
        "certificatesigningrequest.certificates.k8s.io/a2 denied"
    );
    assert_eq!(condition(&k, &mut k.admin_kubectl(), "a2"), "Denied");
}

#[test]
fn a_token_user_sees_only_its_own_requests() {
    let k = KubeStack::start();
    let dir = k.stack.dir.clone();
    manifest(
        &dir,
        "adm.yaml",
        "adm",
        "someone",
        &[],
        API_CLIENT,
        &["client auth"],
    );
    ok(k.admin_kubectl().args(["apply", "-f", "adm.yaml"]), &dir);

    // The token user's kubeconfig, from certctl (the server from the
    // `kube_server` init wrote into certctl.toml).
    let printed = run_ok(
        k.stack
            .certctl()
            .args(["config", "kubeconfig", "--token", &k.token]),
    );
    let tok = dir.join("tok.kubeconfig");
    std::fs::write(&tok, &printed).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(doc["clusters"][0]["cluster"]["server"], k.url());
    assert_eq!(doc["users"][0]["user"]["token"], k.token.as_str());
    manifest(
        &dir,
        "tok.yaml",
        "tok",
        "tok-user",
        &[],
        API_CLIENT,
        &["client auth"],
    );
    assert_eq!(
        ok(k.kubectl(&tok).args(["create", "-f", "tok.yaml"]), &dir),
        "certificatesigningrequest.certificates.k8s.io/tok created"
    );
    let names = ok(k.kubectl(&tok).args(["get", "csr", "-o", "name"]), &dir);
    assert_eq!(names, "certificatesigningrequest.certificates.k8s.io/tok");
    let requestor = ok(
        k.kubectl(&tok)
            .args(["get", "csr", "tok", "-o", "jsonpath={.spec.username}"]),
        &dir,
    );
    assert!(requestor.starts_with("system:bootstrap:"), "{requestor}");
    assert_eq!(
        fails(k.kubectl(&tok).args(["get", "csr", "adm"]), &dir),
        "Error from server (NotFound): certificatesigningrequests.certificates.k8s.io \"adm\" not found"
    );
    let refused = fails(k.kubectl(&tok).args(["delete", "csr", "tok"]), &dir);
    assert!(refused.starts_with("Error from server (Forbidden): certificatesigningrequests.certificates.k8s.io \"tok\" is forbidden: "), "{refused}");
    // A wrong token is not a user.
    let bad = k.kubeconfig_for_token("bad", "abcdef.0123456789abcdef");
    let err = fails(k.kubectl(&bad).args(["get", "csr"]), &dir);
    assert!(err.contains("You must be logged in to the server"), "{err}");
}

#[test]
fn kubectl_get_watch_sees_create_approve_and_issue() {
    let k = KubeStack::start();
    let dir = k.stack.dir.clone();
    let (crt, key) = k.stack.user("system:node:w1", &["system:nodes"]);
    let node = k.kubeconfig_for_cert("node", &crt, &key);
    manifest(
        &dir,
        "first.yaml",
        "first",
        "system:node:w1",
        &["system:nodes"],
        KUBELET_CLIENT,
        &["digital signature", "client auth"],
    );
    ok(k.kubectl(&node).args(["apply", "-f", "first.yaml"]), &dir);

    let mut watch = k
        .admin_kubectl()
        .args(["get", "csr", "-w"])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines: Vec<String> = Vec::new();
    let wait_for = |want: &dyn Fn(&str) -> bool, lines: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if lines.iter().any(|l| want(l)) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => lines.push(l),
                Err(_) => panic!("watch did not show it; got {lines:?}"),
            }
        }
    };
    wait_for(&|l| l.starts_with("first "), &mut lines);
    // The watch is open once the list is printed; a moment for its request.
    std::thread::sleep(Duration::from_millis(500));
    manifest(
        &dir,
        "w1.yaml",
        "w1",
        "system:node:w1",
        &["system:nodes"],
        KUBELET_CLIENT,
        &["digital signature", "client auth"],
    );
    ok(k.kubectl(&node).args(["apply", "-f", "w1.yaml"]), &dir);
    let row = |cond: &'static str| {
        move |l: &str| l.starts_with("w1 ") && l.split_whitespace().last() == Some(cond)
    };
    wait_for(&row("Pending"), &mut lines);
    ok(
        k.admin_kubectl().args(["certificate", "approve", "w1"]),
        &dir,
    );
    wait_for(&row("Approved"), &mut lines);
    wait_for(&row("Approved,Issued"), &mut lines);
    let _ = watch.kill();
    let _ = watch.wait();
    // One header, printed once.
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("NAME ")).count(),
        1,
        "{lines:?}"
    );
}

/// `--dry-run=server` (`dryRun=All`) admits, authorizes and answers as a
/// write would, and stores nothing: create, apply of a change, label and
/// delete; a bad value is Kubernetes' Invalid; approval refuses it.
#[test]
fn kubectl_server_dry_runs_check_everything_and_store_nothing() {
    let k = KubeStack::start();
    let dir = k.stack.dir.clone();
    let kubectl = || k.admin_kubectl();
    manifest(
        &dir,
        "dr.yaml",
        "dr1",
        "dr1",
        &[],
        API_CLIENT,
        &["client auth"],
    );
    assert_eq!(
        ok(
            kubectl().args(["create", "-f", "dr.yaml", "--dry-run=server"]),
            &dir
        ),
        "certificatesigningrequest.certificates.k8s.io/dr1 created (server dry run)"
    );
    let not_found = "Error from server (NotFound): certificatesigningrequests.certificates.k8s.io \"dr1\" not found";
    assert_eq!(
        fails(kubectl().args(["get", "csr", "dr1"]), &dir),
        not_found
    );
    // Admission runs: a request kubectl would be refused is refused.
    manifest(&dir, "bad.yaml", "dr2", "dr2", &[], API_CLIENT, &["bogus"]);
    let err = fails(
        kubectl().args(["create", "-f", "bad.yaml", "--dry-run=server"]),
        &dir,
    );
    assert!(
        err.starts_with("The CertificateSigningRequest \"dr2\" is invalid: spec.usages[0]: Unsupported value: \"bogus\""),
        "{err}"
    );

    // On a stored object: nothing changes, nothing is deleted.
    ok(kubectl().args(["create", "-f", "dr.yaml"]), &dir);
    let err = fails(
        kubectl().args(["create", "-f", "dr.yaml", "--dry-run=server"]),
        &dir,
    );
    assert!(err.contains("\"dr1\" already exists"), "{err}");
    assert_eq!(
        ok(
            kubectl().args(["label", "csr", "dr1", "team=red", "--dry-run=server"]),
            &dir
        ),
        "certificatesigningrequest.certificates.k8s.io/dr1 labeled (server dry run)"
    );
    assert_eq!(
        ok(
            kubectl().args(["delete", "csr", "dr1", "--dry-run=server"]),
            &dir
        ),
        "certificatesigningrequest.certificates.k8s.io \"dr1\" deleted (server dry run)"
    );
    assert_eq!(
        ok(
            kubectl().args([
                "get",
                "csr",
                "dr1",
                "-o",
                "jsonpath={.metadata.name} [{.metadata.labels}]"
            ]),
            &dir
        ),
        "dr1 []"
    );

    // Raw: an unknown dryRun value is Invalid; approval refuses a dry run.
    let csrs = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
    let (body, code) = certsign_tests::kube::curl(
        k.curl(&format!("{csrs}/dr1?dryRun=Some"))
            .args(["-X", "DELETE"]),
    );
    assert_eq!(code, 422, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        status["message"],
        "DeleteOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: \"Some\": supported values: \"All\""
    );
    let (body, code) =
        certsign_tests::kube::curl(k.curl(&format!("{csrs}/dr1/approval?dryRun=All")).args([
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "{}",
        ]));
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("dryRun is not supported for approval"),
        "{body}"
    );
    assert_eq!(condition(&k, &mut kubectl(), "dr1"), "Pending");
}

/// `kubectl auth whoami` (SelfSubjectReview) names the identity certsign
/// took from the credential: a client certificate's CN and O (plus
/// `system:authenticated`), a bootstrap token's `system:bootstrap:<id>`.
#[test]
fn kubectl_auth_whoami_names_the_identity_certsign_sees() {
    let k = KubeStack::start();
    let dir = k.stack.dir.clone();
    let whoami =
        |kubeconfig: &std::path::PathBuf| ok(k.kubectl(kubeconfig).args(["auth", "whoami"]), &dir);
    assert_eq!(
        whoami(&k.admin_kubeconfig()),
        "ATTRIBUTE   VALUE\nUsername    admin\nGroups      [system:masters system:authenticated]"
    );
    let (crt, key) = k.stack.user("carol", &["team-a", "team-b"]);
    let carol = k.kubeconfig_for_cert("carol", &crt, &key);
    let json: serde_json::Value = serde_json::from_str(&ok(
        k.kubectl(&carol).args(["auth", "whoami", "-o", "json"]),
        &dir,
    ))
    .unwrap();
    assert_eq!(json["kind"], "SelfSubjectReview");
    assert_eq!(
        json["status"]["userInfo"],
        serde_json::json!({"username": "carol", "groups": ["team-a", "team-b", "system:authenticated"]})
    );
    let tok = k.kubeconfig_for_token("tok", &k.token);
    let id = k.token.split('.').next().unwrap();
    assert_eq!(
        whoami(&tok),
        format!(
            "ATTRIBUTE   VALUE\nUsername    system:bootstrap:{id}\nGroups      [system:bootstrappers system:authenticated]"
        )
    );
    // certctl (the gRPC face) sees each identity the same way.
    let certctl_whoami =
        |extra: &[&str]| run_ok(k.stack.certctl().args(extra).args(["auth", "whoami"]));
    assert_eq!(
        certctl_whoami(&[]).trim_end(),
        whoami(&k.admin_kubeconfig())
    );
    let (crt_s, key_s) = (crt.display().to_string(), key.display().to_string());
    assert_eq!(
        certctl_whoami(&["--cert", &crt_s, "--key", &key_s]).trim_end(),
        "ATTRIBUTE   VALUE\nUsername    carol\nGroups      [team-a team-b system:authenticated]"
    );
    assert_eq!(
        certctl_whoami(&["--token", &k.token]).trim_end(),
        whoami(&tok)
    );
    let yaml = run_ok(k.stack.certctl().args(["auth", "whoami", "-o", "yaml"]));
    assert!(yaml.contains("kind: SelfSubjectReview\n"), "{yaml}");
    assert!(yaml.contains("username: admin\n"), "{yaml}");

    // Discovery lists it, as a cluster does; it is only ever created.
    assert_eq!(
        ok(k.admin_kubectl().args(["api-versions"]), &dir),
        "authentication.k8s.io/v1\nauthorization.k8s.io/v1\ncertificates.k8s.io/v1"
    );
    let err = fails(k.admin_kubectl().args(["get", "selfsubjectreviews"]), &dir);
    assert!(
        err.starts_with("Error from server (MethodNotAllowed): the server does not allow this method on the requested resource"),
        "{err}"
    );
}

/// `kubectl auth can-i` (SelfSubjectAccessReview, sent as protobuf) answers
/// as certsign enforces: an admin may approve, a user may create, read and
/// delete its own requests but not approve (and is refused when it tries),
/// a bootstrap token may only create and read; nothing but CSRs exists.
#[test]
fn kubectl_auth_can_i_answers_as_certsign_enforces() {
    let k = KubeStack::start();
    let dir = k.stack.dir.clone();
    let (crt, key) = k.stack.user("carol", &["team-a"]);
    let carol = k.kubeconfig_for_cert("carol", &crt, &key);
    let tok = k.kubeconfig_for_token("tok", &k.token);
    let can_i = |kubeconfig: &std::path::PathBuf, args: &[&str]| {
        let (yes, out, _) = kc(
            k.kubectl(kubeconfig).args(["auth", "can-i"]).args(args),
            &dir,
        );
        assert_eq!(yes, out == "yes", "exit status and answer disagree: {out}");
        out
    };
    let admin = k.admin_kubeconfig();
    let approve = ["update", "csr", "--subresource=approval"];
    for (who, kubeconfig, create, delete, approval) in [
        ("admin", &admin, "yes", "yes", "yes"),
        (
            "carol",
            &carol,
            "yes",
            "yes",
            "no - user not permitted to approve requests",
        ),
        (
            "token",
            &tok,
            "yes",
            "no - a bootstrap token may only create and read requests",
            "no - user not permitted to approve requests",
        ),
    ] {
        assert_eq!(can_i(kubeconfig, &["create", "csr"]), create, "{who}");
        assert_eq!(can_i(kubeconfig, &["list", "csr"]), "yes", "{who}");
        assert_eq!(can_i(kubeconfig, &["delete", "csr"]), delete, "{who}");
        assert_eq!(can_i(kubeconfig, &approve), approval, "{who}");
        assert_eq!(
            can_i(kubeconfig, &["get", "pods"]),
            "no - certsign serves only certificatesigningrequests",
            "{who}"
        );
        assert_eq!(can_i(kubeconfig, &["get", "/version"]), "yes", "{who}");
        assert_eq!(
            can_i(kubeconfig, &["deletecollection", "csr"]),
            "no - certsign does not serve this verb on this resource",
            "{who}"
        );
    }
    // What it said no to is refused when carol tries it.
    manifest(
        &dir,
        "c1.yaml",
        "c1",
        "carol",
        &[],
        KUBELET_CLIENT,
        &["client auth", "digital signature"],
    );
    ok(k.kubectl(&carol).args(["create", "-f", "c1.yaml"]), &dir);
    let refused = fails(
        k.kubectl(&carol).args(["certificate", "approve", "c1"]),
        &dir,
    );
    assert!(refused.contains("not permitted to approve"), "{refused}");
    assert_eq!(condition(&k, &mut k.admin_kubectl(), "c1"), "Pending");
}
