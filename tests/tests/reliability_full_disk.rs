//! Full filesystems: the approver's SQLite store, then the signer's journal,
//! each on a small tmpfs the test mounts (as root) and fills. Clients get a
//! clear error (UNAVAILABLE, retry later) instead of a hang or a crash, no
//! acknowledged write is lost, nothing is corrupted, and the service
//! recovers by itself once space returns (no restart).
//!
//! Needs root (mount). Without it the test fails with the reason unless
//! `CERTSIGN_SKIP_MOUNT=1` is set.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use certsign_proto::v1::GetCertificateSigningRequestRequest;
use certsign_tests::grpc::{self, MintSpec, approve_request, create_request, csr};
use certsign_tests::{Stack, bin, run_ok};
use tonic::Code;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir)
            .output()
            .ok()?;
        out.status.success().then(|| Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Fills the filesystem holding `dir` with a file, leaving nothing free.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    // The last partial chunk, byte by byte in bigger and smaller steps.
    for size in [4096, 512, 1] {
        while f.write_all(&chunk[..size]).is_ok() {}
    }
    let _ = f.flush();
    path
}

fn mounts_allowed() -> bool {
    if std::env::var("CERTSIGN_SKIP_MOUNT").is_ok_and(|v| v == "1") {
        return false;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_store_and_full_journal_give_clear_errors_and_recover() {
    if !mounts_allowed() {
        println!("skipped: CERTSIGN_SKIP_MOUNT=1");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let db_fs = Tmpfs::mount(&tmp.path().join("db"), "4m")
        .expect("mount -t tmpfs failed: this test needs root (or set CERTSIGN_SKIP_MOUNT=1)");
    let journal_fs = Tmpfs::mount(&tmp.path().join("journal"), "4m").expect("second tmpfs");
    let db = db_fs.dir.join("approver.db");
    let journal = journal_fs.dir.join("journal.jsonl");
    let db_url = format!("sqlite://{}", db.display());
    let journal_s = journal.display().to_string();
    let stack = Stack::start_configured(
        &[],
        |s| {
            s.insert("journal".into(), journal_s.clone().into());
        },
        |a| {
            a.insert("database_url".into(), db_url.clone().into());
        },
    );
    // init's journal is not the one the signer now uses: the new one starts
    // empty on the tmpfs, which is what this test needs.
    let admin = stack.admin_ident();
    let alice = stack.mint(&MintSpec::new("alice", &[]));
    let mut user = stack.approver_client(Some(&alice));
    let mut admin_c = stack.approver_client(Some(&admin));
    let mut acked = Vec::new();
    let mut figures = Vec::new();

    // --- phase 1: the store's filesystem is full ------------------------------
    for i in 0..5 {
        let (_, pem) = csr("alice", &[]);
        let o = user
            .create_certificate_signing_request(create_request(&format!("before-{i}"), &pem))
            .await
            .unwrap()
            .into_inner();
        acked.push(o);
    }
    let filler = fill(&db_fs.dir);
    let mut refused = 0;
    for i in 0..20 {
        let (_, pem) = csr("alice", &[]);
        match user
            .create_certificate_signing_request(create_request(&format!("full-{i}"), &pem))
            .await
        {
            Ok(o) => acked.push(o.into_inner()),
            Err(s) => {
                assert_eq!(
                    s.code(),
                    Code::Unavailable,
                    "{s:?}\napprover log:\n{}",
                    stack.approver.log()
                );
                assert!(s.message().contains("retry"), "{s:?}");
                refused += 1;
            }
        }
    }
    // SQLite may fit a few writes into pages it already has; most must fail.
    assert!(refused >= 15, "only {refused} of 20 creates were refused");
    let approve = admin_c
        .approve_certificate_signing_request(approve_request(&acked[0], &admin))
        .await;
    let approve_code = approve.as_ref().map(|_| ()).map_err(|s| s.code());
    assert!(
        matches!(approve_code, Err(Code::Unavailable) | Ok(())),
        "{approve:?}"
    );
    // Reads still work.
    admin_c
        .get_certificate_signing_request(GetCertificateSigningRequestRequest {
            name: "before-0".into(),
        })
        .await
        .unwrap();
    figures.push(format!("store_full_creates_refused={refused}/20"));
    std::fs::remove_file(&filler).unwrap();
    // Recovers without a restart.
    let (_, pem) = csr("alice", &[]);
    let o = user
        .create_certificate_signing_request(create_request("after-store", &pem))
        .await
        .expect("a create succeeds once space returns");
    acked.push(o.into_inner());

    // --- phase 2: the journal's filesystem is full ------------------------------
    let filler = fill(&journal_fs.dir);
    let target = acked.last().unwrap().clone();
    admin_c
        .approve_certificate_signing_request(approve_request(&target, &admin))
        .await
        .expect("approvals are accepted while the signer cannot journal");
    // The signer refuses to answer without its journal line: UNAVAILABLE to
    // the forwarder, which keeps the request approved and retries.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = stack.signer.log();
        if log.contains("journal append failed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the signer never hit the full disk"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let o = admin_c
        .get_certificate_signing_request(GetCertificateSigningRequestRequest {
            name: "after-store".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let st = o.status.clone().unwrap_or_default();
    assert!(st.certificate.is_empty(), "issued without a journal line");
    assert!(
        !st.conditions.iter().any(|c| c.r#type == "Failed"),
        "a full journal must not fail the request: {:?}",
        st.conditions
    );
    std::fs::remove_file(&filler).unwrap();
    let issued = grpc::wait_issued(&mut admin_c, "after-store").await;
    figures.push("journal_full_request_failed=false issued_after_space_returned=true".into());
    if approve_code.is_ok() {
        // Approved while the store was full: it must be issued too.
        grpc::wait_issued(&mut admin_c, &acked[0].metadata.as_ref().unwrap().name).await;
    }
    figures.push(format!(
        "store_full_approval_acknowledged={}",
        approve_code.is_ok()
    ));

    // --- the judges ---------------------------------------------------------
    for o in &acked {
        let name = &o.metadata.as_ref().unwrap().name;
        let got = admin_c
            .get_certificate_signing_request(GetCertificateSigningRequestRequest {
                name: name.clone(),
            })
            .await
            .unwrap_or_else(|s| panic!("acknowledged {name} lost: {s:?}"))
            .into_inner();
        assert_eq!(got.metadata.unwrap().uid, o.metadata.as_ref().unwrap().uid);
    }
    // Exactly the approved requests were issued, each once: the one
    // approved after the store had room again, and the one approved while
    // it was full if that approval found room (SQLite can reuse WAL space
    // once it is checkpointed) and was acknowledged.
    let lines = grpc::journal_issued(&journal);
    let mut journaled: Vec<&str> = lines.iter().map(|l| l.name.as_str()).collect();
    journaled.sort_unstable();
    let mut approved = vec!["after-store"];
    if approve_code.is_ok() {
        approved.push(acked[0].metadata.as_ref().unwrap().name.as_str());
    }
    approved.sort_unstable();
    assert_eq!(journaled, approved, "the journal's issuances");
    let serial = grpc::serial_of(&issued.status.unwrap().certificate);
    assert!(
        lines
            .iter()
            .any(|l| l.name == "after-store" && l.serial == serial),
        "after-store's certificate is not the journaled one"
    );
    let mut stack = stack;
    assert!(stack.approver.is_running() && stack.signer.is_running());
    stack.signer.kill();
    stack.approver.kill();
    run_ok(
        Command::new(bin("certsign-signer"))
            .args(["audit", "verify", "--config"])
            .arg(stack.dir.join("signer/signer.toml")),
    );
    assert_eq!(grpc::sqlite_integrity_check(&db), "ok");
    println!(
        "FIGURES full-disk acked_creates={} {} integrity_check=ok audit_verify=ok",
        acked.len(),
        figures.join(" ")
    );
}
