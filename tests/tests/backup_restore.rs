//! Backup and restore of the approver's store (issue 30), end to end with the
//! real binaries: `certsign-approver backup` copies a serving SQLite store;
//! the copy, put back in place, serves every request it held; and the
//! signer's journal stays the authority for what was issued: a request that
//! was approved but not yet issued at backup time, and issued after it, is
//! sent again by the restored approver and answered with the SAME
//! certificate (the signer replays its uid), never a second one.
//!
//! The copy is judged by an outside tool too (`PRAGMA integrity_check`).

#![allow(clippy::unwrap_used)]

use std::process::Command;

use certsign_proto::v1::GetCertificateSigningRequestRequest;
use certsign_tests::grpc::{approve_request, create_request};
use certsign_tests::pki::{MintSpec, csr};
use certsign_tests::records::{journal_issued, serial_of, sqlite_integrity_check};
use certsign_tests::wait::wait_issued;
use certsign_tests::{Stack, bin, edit_toml, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_store_serves_what_it_held_and_the_journal_prevents_a_second_issue() {
    let mut stack = Stack::start();
    stack.pin_ports();
    let admin = stack.admin_ident();
    let user = stack.mint(&MintSpec::client("backup-user", &[]));

    // "before": issued before the backup.
    let (_k, pem) = csr("backup-user", &[]);
    let created = stack
        .approver_client(Some(&user))
        .create_certificate_signing_request(create_request("before", &pem))
        .await
        .unwrap()
        .into_inner();
    let mut a = stack.approver_client(Some(&admin));
    a.approve_certificate_signing_request(approve_request(&created, &admin))
        .await
        .unwrap();
    let before = wait_issued(&mut a, "before").await;

    // "after": approved while the signer is down, so at backup time it is
    // approved and not issued yet.
    let (_k, pem) = csr("backup-user", &[]);
    let created = stack
        .approver_client(Some(&user))
        .create_certificate_signing_request(create_request("after", &pem))
        .await
        .unwrap()
        .into_inner();
    let after_uid = created.metadata.clone().unwrap().uid;
    stack.signer.kill();
    a.approve_certificate_signing_request(approve_request(&created, &admin))
        .await
        .unwrap();

    // The backup, taken while the approver serves.
    let approver_toml = stack.dir.join("approver/approver.toml");
    let backup = stack.dir.join("approver-backup.db");
    let out = run(Command::new(bin("certsign-approver"))
        .args(["backup", "--config"])
        .arg(&approver_toml)
        .arg("--out")
        .arg(&backup));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("backed up 2 requests"), "{said}");
    assert_eq!(sqlite_integrity_check(&backup).trim(), "ok");
    // Never over an existing file.
    let again = run(Command::new(bin("certsign-approver"))
        .args(["backup", "--config"])
        .arg(&approver_toml)
        .arg("--out")
        .arg(&backup));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));

    // The signer returns; "after" is issued after the backup.
    stack.signer.restart();
    let after = wait_issued(&mut a, "after").await;
    let after_serial = serial_of(&after.status.clone().unwrap().certificate);

    // Restore: stop the approver, put the copy in place, start it again.
    stack.approver.kill();
    let db = stack.db_path();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(db.with_file_name(format!("approver.db{suffix}")));
    }
    std::fs::copy(&backup, &db).unwrap();
    stack.approver.restart();
    let mut a = stack.approver_client(Some(&admin));

    // Every request it held is served, "before" with its certificate.
    let got = a
        .get_certificate_signing_request(GetCertificateSigningRequestRequest {
            name: "before".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.status.unwrap().certificate,
        before.status.clone().unwrap().certificate
    );
    // "after" was approved-not-issued in the copy: the restored approver
    // sends it again and gets the certificate already journaled.
    let again = wait_issued(&mut a, "after").await;
    assert_eq!(
        serial_of(&again.status.unwrap().certificate),
        after_serial,
        "the restored approver got a second certificate for one request"
    );
    let issued: Vec<_> = journal_issued(&stack.journal_path())
        .into_iter()
        .filter(|i| i.uid == after_uid)
        .collect();
    assert_eq!(issued.len(), 1, "{issued:?}");
}

#[test]
fn backup_of_a_postgresql_store_says_pg_dump() {
    let stack = Stack::start();
    let config = stack.dir.join("approver/approver.toml");
    edit_toml(&config, |t| {
        t.insert(
            "database_url".into(),
            "postgres://certsign@127.0.0.1:1/certsign".into(),
        );
    });
    let out = run(Command::new(bin("certsign-approver"))
        .args(["backup", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(stack.dir.join("pg.backup")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("pg_dump"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!stack.dir.join("pg.backup").exists());
}
