//! Configuration reload on SIGHUP (issue 9), end to end: the real signer and
//! approver processes, the approver's real `approver.toml` edited on disk,
//! a real SIGHUP with kill(1), and the effect judged by real gRPC calls over
//! mTLS (or a bootstrap token). Every wait is for a log line or a condition,
//! with a generous timeout; nothing asserts timing.
//!
//! The PostgreSQL test (three replicas) needs `CERTSIGN_TEST_DATABASE_URL`
//! (tests/run.sh sets it) and FAILS without it unless `CERTSIGN_SKIP_PG=1`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use certsign_proto::v1::approver_client::ApproverClient;
use certsign_proto::v1::{
    CertificateSigningRequest, CreateCertificateSigningRequestRequest,
    GetCertificateSigningRequestRequest,
};
use certsign_tests::grpc::{self, CLIENT_SIGNER, MintSpec, approve_request, create_request};
use certsign_tests::{Daemon, Stack, bin, edit_toml, repo_root};
use tonic::Code;
use tonic::transport::Channel;

const KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const RELOADED: &str = "config reloaded from";
const REFUSED: &str = "refused; the running configuration stays in force";
const SECRET: &str = "0123456789abcdef";

/// A `[[bootstrap_tokens]]` entry for `id` (secret [`SECRET`]) allowed to
/// request client certificates.
fn token(id: &str) -> toml::Value {
    let mut t = toml::Table::new();
    t.insert("id".into(), id.into());
    t.insert(
        "secret_sha256".into(),
        hex::encode(certsign_signer::csr::sha256(SECRET.as_bytes())).into(),
    );
    t.insert("expires".into(), "2099-01-01T00:00:00Z".into());
    t.insert(
        "signer_names".into(),
        toml::Value::Array(vec![CLIENT_SIGNER.into(), KUBELET.into()]),
    );
    t.insert("max_uses".into(), 100.into());
    toml::Value::Table(t)
}

fn set_tokens(t: &mut toml::Table, ids: &[&str]) {
    t.insert(
        "bootstrap_tokens".into(),
        toml::Value::Array(ids.iter().map(|id| token(id)).collect()),
    );
}

/// `list` entries whose `key` is `name`: set `field` to `value`.
fn set_entry(
    t: &mut toml::Table,
    list: &str,
    key: &str,
    name: &str,
    field: &str,
    value: toml::Value,
) {
    let mut found = false;
    for p in t.get_mut(list).unwrap().as_array_mut().unwrap() {
        let p = p.as_table_mut().unwrap();
        if p.get(key).and_then(|v| v.as_str()) == Some(name) {
            p.insert(field.into(), value.clone());
            found = true;
        }
    }
    assert!(found, "no {list} entry with {key} = {name:?}");
}

fn approver_toml(stack: &Stack) -> PathBuf {
    stack.dir.join("approver/approver.toml")
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// Waits (generously) until `log()` holds more than `before` lines with
/// `needle`; returns the log.
async fn wait_for_more(log: impl Fn() -> String, needle: &str, before: usize) -> String {
    for _ in 0..600 {
        let text = log();
        if count(&text, needle) > before {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no new {needle:?} line within 60 s; log:\n{}", log());
}

/// Sends SIGHUP to `daemon` and waits for its next log line with `needle`
/// (the reload's outcome); returns the log from before the signal on.
async fn hup(daemon: &Daemon, needle: &str) -> String {
    let before_text = daemon.log();
    let before = count(&before_text, needle);
    daemon.signal("HUP");
    let after = wait_for_more(|| daemon.log(), needle, before).await;
    after[before_text.len().min(after.len())..].to_string()
}

fn with_token<T>(msg: T, id: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {id}.{SECRET}").parse().unwrap(),
    );
    r
}

fn client_csr(name: &str, cn: &str) -> CreateCertificateSigningRequestRequest {
    let (_, pem) = grpc::csr(cn, &[]);
    create_request(name, &pem)
}

fn kubelet_csr(name: &str, node: &str) -> CreateCertificateSigningRequestRequest {
    let (_, pem) = grpc::csr(node, &["system:nodes"]);
    let mut r = create_request(name, &pem);
    r.certificate_signing_request
        .as_mut()
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .signer_name = KUBELET.into();
    r
}

async fn create_with_token(
    client: &mut ApproverClient<Channel>,
    name: &str,
    id: &str,
) -> Result<CertificateSigningRequest, tonic::Status> {
    client
        .create_certificate_signing_request(with_token(client_csr(name, name), id))
        .await
        .map(tonic::Response::into_inner)
}

fn conditions(csr: &CertificateSigningRequest) -> Vec<(String, String)> {
    csr.status
        .as_ref()
        .map(|s| {
            s.conditions
                .iter()
                .map(|c| (c.r#type.clone(), c.reason.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn code_of<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_tokens_are_added_and_removed_by_reload() {
    let mut stack = Stack::start();
    let path = approver_toml(&stack);
    let mut anon = stack.approver_client(None);

    // Not configured: refused.
    let r = create_with_token(&mut anon, "tok-before", "reload").await;
    assert_eq!(code_of(r), Code::Unauthenticated);

    // Added to the file; applied on SIGHUP.
    edit_toml(&path, |t| set_tokens(t, &["reload"]));
    let log = hup(&stack.approver, RELOADED).await;
    assert!(
        log.contains(&format!(
            "{RELOADED} {}: 1 bootstrap tokens",
            path.display()
        )),
        "{log}"
    );
    let created = create_with_token(&mut anon, "tok-added", "reload")
        .await
        .unwrap();
    assert_eq!(created.spec.unwrap().username, "system:bootstrap:reload");

    // Removed again: refused again.
    edit_toml(&path, |t| {
        t.remove("bootstrap_tokens");
    });
    let log = hup(&stack.approver, RELOADED).await;
    assert!(log.contains(": 0 bootstrap tokens"), "{log}");
    let r = create_with_token(&mut anon, "tok-removed", "reload").await;
    assert_eq!(code_of(r), Code::Unauthenticated);
    // One process served throughout: no restart happened.
    assert!(stack.approver.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_approve_rule_added_by_reload_approves_and_issues() {
    // Both sides trust the approver for kubelet client certificates from
    // the start; only the rule arrives by reload.
    let stack = Stack::start_configured(
        &[],
        |s| {
            set_entry(
                s,
                "profiles",
                "signer_name",
                KUBELET,
                "approval",
                "approver".into(),
            )
        },
        |a| {
            set_entry(
                a,
                "signer_names",
                "name",
                KUBELET,
                "approval",
                "approver".into(),
            )
        },
    );
    let node = stack.mint(&MintSpec::new("system:node:n1", &["system:nodes"]));
    let mut n = stack.approver_client(Some(&node));

    let before = n
        .create_certificate_signing_request(kubelet_csr("node-before", "system:node:n1"))
        .await
        .unwrap()
        .into_inner();
    assert!(conditions(&before).is_empty(), "{:?}", conditions(&before));

    edit_toml(&approver_toml(&stack), |t| {
        let mut rule = toml::Table::new();
        rule.insert(
            "signer_names".into(),
            toml::Value::Array(vec![KUBELET.into()]),
        );
        rule.insert(
            "groups".into(),
            toml::Value::Array(vec!["system:nodes".into()]),
        );
        rule.insert("cn_equals_username".into(), true.into());
        rule.insert("message".into(), "Auto approved after reload.".into());
        t.insert("auto_approve".into(), toml::Value::Array(vec![rule.into()]));
    });
    let log = hup(&stack.approver, RELOADED).await;
    assert!(log.contains("1 auto-approve rules"), "{log}");

    let after = n
        .create_certificate_signing_request(kubelet_csr("node-after", "system:node:n1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        conditions(&after),
        vec![("Approved".to_string(), "AutoApproved".to_string())]
    );
    let issued = grpc::wait_issued(&mut n, "node-after").await;
    assert!(!issued.status.unwrap().certificate.is_empty());
    // The earlier request is untouched: reload does not re-judge the queue.
    let still = n
        .get_certificate_signing_request(GetCertificateSigningRequestRequest {
            name: "node-before".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(conditions(&still).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approver_group_added_by_reload_may_approve() {
    // The signer verifies approvals itself against its own allow-list in
    // signer.toml, which a reload of the approver does not change: it
    // admits `ops` from the start. Only the approver's list changes.
    let groups = toml::Value::Array(vec!["system:masters".into(), "ops".into()]);
    let stack = Stack::start_configured(
        &[],
        |s| {
            set_entry(
                s,
                "profiles",
                "signer_name",
                CLIENT_SIGNER,
                "approver_groups",
                groups.clone(),
            )
        },
        |_| {},
    );
    let alice = stack.mint(&MintSpec::new("alice", &[]));
    let olivia = stack.mint(&MintSpec::new("olivia", &["ops"]));
    let mut a = stack.approver_client(Some(&alice));
    let mut o = stack.approver_client(Some(&olivia));
    let created = a
        .create_certificate_signing_request(client_csr("alice-req", "alice"))
        .await
        .unwrap()
        .into_inner();

    // Not an approver (nor an admin): the request is not even visible.
    let r = o
        .approve_certificate_signing_request(approve_request(&created, &olivia))
        .await;
    assert_eq!(code_of(r), Code::NotFound);

    edit_toml(&approver_toml(&stack), |t| {
        set_entry(
            t,
            "signer_names",
            "name",
            CLIENT_SIGNER,
            "approver_groups",
            groups.clone(),
        );
    });
    hup(&stack.approver, RELOADED).await;

    let approved = o
        .approve_certificate_signing_request(approve_request(&created, &olivia))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        conditions(&approved),
        vec![("Approved".to_string(), "KubectlApprove".to_string())]
    );
    // ... and the signer, with its own allow-list, issues it.
    grpc::wait_issued(&mut a, "alice-req").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_is_refused_and_a_fixed_one_applies() {
    let mut stack = Stack::start_configured(&[], |_| {}, |a| set_tokens(a, &["keep01"]));
    let path = approver_toml(&stack);
    let mut anon = stack.approver_client(None);

    edit_toml(&path, |t| {
        set_tokens(t, &["keep01", "new001"]);
        t.insert("bogus".into(), 1.into());
    });
    let log = hup(&stack.approver, REFUSED).await;
    let line = log.lines().find(|l| l.contains(REFUSED)).unwrap();
    assert!(line.contains("bogus"), "the error names the key: {line}");
    assert!(!log.contains(RELOADED), "{log}");
    // Still serving, entirely on the old configuration.
    assert!(stack.approver.is_running());
    create_with_token(&mut anon, "broken-old", "keep01")
        .await
        .unwrap();
    let r = create_with_token(&mut anon, "broken-new", "new001").await;
    assert_eq!(code_of(r), Code::Unauthenticated);

    edit_toml(&path, |t| {
        t.remove("bogus");
    });
    let log = hup(&stack.approver, RELOADED).await;
    assert!(log.contains("2 bootstrap tokens"), "{log}");
    create_with_token(&mut anon, "fixed-new", "new001")
        .await
        .unwrap();
    create_with_token(&mut anon, "fixed-old", "keep01")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_only_key_is_named_and_the_rest_applies() {
    let stack = Stack::start();
    let path = approver_toml(&stack);
    edit_toml(&path, |t| {
        t.insert("listen".into(), "127.0.0.1:1".into());
        set_tokens(t, &["listen"]);
    });
    let log = hup(&stack.approver, RELOADED).await;
    let warning = log
        .lines()
        .find(|l| l.contains("restart to apply"))
        .unwrap_or_else(|| panic!("no restart warning: {log}"));
    assert!(warning.contains("listen changed"), "{warning}");
    assert_eq!(
        log.matches("restart to apply").count(),
        1,
        "only `listen` changed: {log}"
    );
    // Still on the old address, with the new token in force.
    let mut anon = stack.approver_client(None);
    create_with_token(&mut anon, "listen-tok", "listen")
        .await
        .unwrap();
}

// === replicas ===

/// A fresh schema in the test PostgreSQL (dropped by [`Schema::drop`]), or
/// `None` when explicitly skipped.
struct Schema {
    base: String,
    name: String,
    url: String,
}

impl Schema {
    async fn create() -> Option<Schema> {
        let Ok(base) = std::env::var("CERTSIGN_TEST_DATABASE_URL") else {
            if std::env::var("CERTSIGN_SKIP_PG").as_deref() == Ok("1") {
                eprintln!("CERTSIGN_SKIP_PG=1: skipping the three-replica reload test");
                return None;
            }
            panic!(
                "CERTSIGN_TEST_DATABASE_URL is not set (tests/run.sh starts PostgreSQL); \
                 set CERTSIGN_SKIP_PG=1 to skip explicitly"
            );
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("reload_{}_{nanos}", std::process::id());
        let pool = sqlx::PgPool::connect(&base).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options[search_path]={name}");
        Some(Schema { base, name, url })
    }

    async fn drop(self) {
        let pool = sqlx::PgPool::connect(&self.base).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.name
        )))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
}

fn start_replica(config: &Path, log: &Path) -> Daemon {
    Daemon::start(
        &bin("certsign-approver"),
        &["serve", "--config", config.to_str().unwrap()],
        log,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_reloads_its_own_file() {
    let Some(schema) = Schema::create().await else {
        return;
    };
    let url = schema.url.clone();
    let stack = Stack::start_configured(
        &[],
        |_| {},
        |a| {
            a.insert("database_url".into(), url.clone().into());
        },
    );
    // Two more replicas on the same database, each with its own file (in
    // the same directory, so the relative paths stay right).
    let first = approver_toml(&stack);
    let mut files = vec![first.clone()];
    let mut replicas = Vec::new();
    for i in 2..=3 {
        let file = stack.dir.join(format!("approver/approver-{i}.toml"));
        std::fs::copy(&first, &file).unwrap();
        replicas.push(start_replica(
            &file,
            &stack.dir.join(format!("approver-{i}.log")),
        ));
        files.push(file);
    }
    let daemons: Vec<&Daemon> = std::iter::once(&stack.approver).chain(&replicas).collect();
    let ca = stack.ca_pem();
    let clients = |d: &Daemon| ApproverClient::new(grpc::channel(&d.addr, &ca, None));

    for (i, d) in daemons.iter().enumerate() {
        let r = create_with_token(&mut clients(d), &format!("rep-before-{i}"), "everyw").await;
        assert_eq!(code_of(r), Code::Unauthenticated);
    }
    for f in &files {
        edit_toml(f, |t| set_tokens(t, &["everyw"]));
    }
    for d in &daemons {
        let log = hup(d, RELOADED).await;
        assert!(log.contains("1 bootstrap tokens"), "{log}");
    }
    for (i, d) in daemons.iter().enumerate() {
        let created = create_with_token(&mut clients(d), &format!("rep-after-{i}"), "everyw")
            .await
            .unwrap();
        assert_eq!(created.spec.unwrap().username, "system:bootstrap:everyw");
    }
    // One store: every replica sees the others' requests (as their owner).
    let mut c = clients(daemons[0]);
    for i in 0..3 {
        c.get_certificate_signing_request(with_token(
            GetCertificateSigningRequestRequest {
                name: format!("rep-after-{i}"),
            },
            "everyw",
        ))
        .await
        .unwrap();
    }
    drop(replicas);
    drop(stack);
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_systemd_units_reload_command_reloads() {
    // What `systemctl reload certsign-approver` runs, with $MAINPID as
    // systemd substitutes it, against a running approver.
    let unit =
        std::fs::read_to_string(repo_root().join("deploy/systemd/certsign-approver.service"))
            .unwrap();
    let exec = unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ExecReload="))
        .next_back()
        .expect("the approver unit has ExecReload=");
    let stack = Stack::start();
    edit_toml(&approver_toml(&stack), |t| set_tokens(t, &["unit01"]));
    let before = count(&stack.approver.log(), RELOADED);
    let words: Vec<String> = exec
        .split_whitespace()
        .map(|w| w.replace("$MAINPID", &stack.approver.pid().to_string()))
        .collect();
    certsign_tests::run_ok(std::process::Command::new(&words[0]).args(&words[1..]));
    let log = wait_for_more(|| stack.approver.log(), RELOADED, before).await;
    assert!(log.contains("1 bootstrap tokens"), "{log}");
    let mut anon = stack.approver_client(None);
    create_with_token(&mut anon, "unit-tok", "unit01")
        .await
        .unwrap();
}
