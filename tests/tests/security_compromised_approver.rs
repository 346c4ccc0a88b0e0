//! A fully compromised approver: the test holds the approver's own TLS key
//! (the signer's only allowed client) and direct write access to its SQLite
//! database, and tries every way we know to get a certificate nobody
//! approved. The signer must issue nothing for any of them.
//!
//! Two fronts:
//! 1. `Sign` called directly on the real signer with the approver's
//!    identity and forged, replayed, swapped or mis-signed evidence.
//! 2. Forged state written straight into the approver's database, then
//!    forwarded by the real approver to the real signer.
//!
//! Positive controls (the same construction with real evidence) are issued,
//! so a refusal is never an accident of the setup. The journal is the
//! judge: its `issued` lines must be exactly the controls.
//! Prints `FIGURES compromised-approver ...` for docs/RELIABILITY.md.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use certsign_proto::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, Decision, DecisionRecord,
    RenewalStatement, SignRequest, SignedStatement,
};
use certsign_tests::Stack;
use certsign_tests::evidence::{self, RENEWAL_CONTEXT};
use certsign_tests::grpc::{
    self, CLIENT_SIGNER, IDENTITY_SIGNER, Ident, MintSpec, approve_request, create_request, csr,
    sign, statement_for, ts, wait_final,
};
use prost::Message as _;
use tonic::Code;

/// A request as the approver would hold it after create.
fn held(
    uid: &str,
    name: &str,
    csr_pem: &[u8],
    signer: &str,
    user: &str,
) -> CertificateSigningRequest {
    let mut r = create_request(name, csr_pem)
        .certificate_signing_request
        .unwrap();
    let meta = r.metadata.as_mut().unwrap();
    meta.uid = uid.into();
    let spec = r.spec.as_mut().unwrap();
    spec.signer_name = signer.into();
    spec.username = user.into();
    spec.groups = vec!["system:authenticated".into()];
    if signer == IDENTITY_SIGNER {
        spec.usages = vec!["digital signature".into(), "client auth".into()];
    }
    r
}

fn sign_req(csr: CertificateSigningRequest, approvals: Vec<SignedStatement>) -> SignRequest {
    SignRequest {
        request: Some(certsign_proto::v1::sign_request::Request::CertificateSigningRequest(csr)),
        approvals,
        renewal: None,
    }
}

/// One way to ask for a certificate nobody approved, and how the signer
/// must refuse it.
struct Attempt {
    what: String,
    req: SignRequest,
    /// Accepted refusal codes and a fragment the message must contain (the
    /// rule that caught it).
    codes: &'static [Code],
    rule: &'static str,
}

/// An attempt the signer must refuse as FailedPrecondition for `rule`.
fn refused(what: impl Into<String>, req: SignRequest, rule: &'static str) -> Attempt {
    Attempt {
        what: what.into(),
        req,
        codes: &[Code::FailedPrecondition],
        rule,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compromised_approver_obtains_no_certificate() {
    let stack = Stack::start();
    let admin = stack.admin_ident();
    let admin2 = stack.mint(&MintSpec::new("admin2", &["system:masters"]));
    let approver = stack.approver_ident();
    let mut signer = stack.signer_client(Some(&approver));
    let ca_key = std::fs::read_to_string(stack.dir.join("signer/ca.key")).unwrap();
    let ca_pem = stack.ca_pem();

    {
        // ---- positive controls: real evidence, same construction -------------
        let mut controls: BTreeSet<String> = BTreeSet::new();
        let (_, csr_a) = csr("mallory", &[]);
        let req_a = held("uid-a", "req-a", &csr_a, CLIENT_SIGNER, "mallory");
        let appr_a = sign(&statement_for(&req_a, Decision::Approve), &admin);
        signer
            .sign(sign_req(req_a.clone(), vec![appr_a.clone()]))
            .await
            .expect("control: a request a real admin approved is issued");
        controls.insert("uid-a".into());

        let (_, csr_q) = csr("svc-q", &[]);
        let req_q = held("uid-q", "req-q", &csr_q, IDENTITY_SIGNER, "mallory");
        let q1 = sign(&statement_for(&req_q, Decision::Approve), &admin);
        let q2 = sign(&statement_for(&req_q, Decision::Approve), &admin2);
        signer
            .sign(sign_req(req_q.clone(), vec![q1.clone(), q2]))
            .await
            .expect("control: two distinct admins meet the identity quorum");
        controls.insert("uid-q".into());

        // ---- identities the attacker can muster ------------------------------
        let (rogue_ca, rogue_key) = grpc::rogue_ca("certsign CA");
        let rogue_admin = grpc::mint_with(
            &MintSpec::new("admin", &["system:masters"]),
            &rogue_ca,
            &rogue_key,
        );
        let self_signed_admin = certsign_tests::pki::self_signed("admin", &["system:masters"]);
        let expired_admin = grpc::mint_with(
            &MintSpec {
                not_before: time::Duration::days(-10),
                not_after: time::Duration::days(-1),
                ..MintSpec::new("admin3", &["system:masters"])
            },
            &ca_pem,
            &ca_key,
        );
        let future_admin = grpc::mint_with(
            &MintSpec {
                not_before: time::Duration::days(1),
                not_after: time::Duration::days(10),
                ..MintSpec::new("admin4", &["system:masters"])
            },
            &ca_pem,
            &ca_key,
        );
        let non_admin = stack.mint(&MintSpec::new("bob", &["developers"]));
        // The same admin name with a second key (both certificates real).
        let admin_again = stack.mint(&MintSpec::new("admin", &["system:masters"]));
        let requestor_admin = stack.mint(&MintSpec::new("mallory", &["system:masters"]));

        let fresh = |cn: &str, uid: &str, signer_name: &str| {
            let (_, pem) = csr(cn, &[]);
            held(uid, &format!("{uid}-name"), &pem, signer_name, "mallory")
        };
        let approved_by = |r: &CertificateSigningRequest, who: &Ident| {
            sign(&statement_for(r, Decision::Approve), who)
        };

        let mut attempts: Vec<Attempt> = Vec::new();

        // Forged "approved" with no evidence at all.
        attempts.push(refused(
            "no approval statement (the approver's word alone)",
            sign_req(fresh("m1", "uid-1", CLIENT_SIGNER), vec![]),
            "quorum",
        ));
        // Replay an old approval for a new CSR under a new uid.
        attempts.push(refused(
            "replay an old approval for a new CSR and uid",
            sign_req(fresh("m3", "uid-3", CLIENT_SIGNER), vec![appr_a.clone()]),
            "bound field: statement request_uid",
        ));
        // Replay an old approval with the old uid's name but a new uid, same CSR.
        let mut r = req_a.clone();
        r.metadata.as_mut().unwrap().uid = "uid-4".into();
        attempts.push(refused(
            "replay an old approval and CSR under a new uid",
            sign_req(r, vec![appr_a.clone()]),
            "bound field: statement request_uid",
        ));
        // A field of the request changed under a fresh, genuine approval.
        let r = fresh("m5", "uid-5", CLIENT_SIGNER);
        let st = approved_by(&r, &admin);
        let changes = grpc::bound_field_changes();
        for (what, change, rule) in changes {
            let mut changed = r.clone();
            change(&mut changed);
            attempts.push(refused(
                format!("{what} under a genuine approval"),
                sign_req(changed, vec![st.clone()]),
                rule,
            ));
        }
        // Reuse an issued uid for a new CSR, with a genuine fresh approval of it.
        let mut reuse = fresh("m6", "uid-a", CLIENT_SIGNER);
        reuse.metadata.as_mut().unwrap().name = "req-a".into();
        let st_reuse = approved_by(&reuse, &admin);
        attempts.push(Attempt {
            what: "reuse an issued uid for another CSR (genuinely approved)".into(),
            req: sign_req(reuse, vec![st_reuse]),
            codes: &[Code::AlreadyExists],
            rule: "already issued for another CSR",
        });
        // One approval each, by someone who is not an admin of this CA or
        // may not approve this request, or whose statement was altered
        // after signing.
        let rogue_ca_der = grpc::pem_der(&rogue_ca);
        let keep: &dyn Fn(&mut SignedStatement) = &|_| {};
        let with_rogue_ca: &dyn Fn(&mut SignedStatement) =
            &|st| st.certificate_chain.push(rogue_ca_der.clone());
        let edited: &dyn Fn(&mut SignedStatement) = &|st| {
            let mut edited =
                certsign_proto::v1::ApprovalStatement::decode(st.statement.as_slice()).unwrap();
            edited.requestor = "someone".into();
            st.statement = edited.encode_to_vec();
        };
        let forged_signature: &dyn Fn(&mut SignedStatement) =
            &|st| st.signature = vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01];
        let no_chain: &dyn Fn(&mut SignedStatement) = &|st| st.certificate_chain.clear();
        let one_approval = [
            (
                "m2",
                &approver,
                keep,
                "approval signed with the approver's own TLS key",
                "approver group",
            ),
            (
                "m7",
                &rogue_admin,
                keep,
                "approval by a look-alike admin from another CA (same CA name)",
                "evidence certificate",
            ),
            (
                "m8",
                &rogue_admin,
                with_rogue_ca,
                "approval by a rogue admin with its rogue CA as intermediate",
                "evidence certificate",
            ),
            (
                "m9",
                &self_signed_admin,
                keep,
                "approval by a self-signed system:masters certificate",
                "evidence certificate",
            ),
            (
                "m10",
                &expired_admin,
                keep,
                "approval by an expired admin certificate",
                "evidence certificate",
            ),
            (
                "m11",
                &future_admin,
                keep,
                "approval by a not-yet-valid admin certificate",
                "evidence certificate",
            ),
            (
                "m12",
                &non_admin,
                keep,
                "approval by a non-admin certificate from the real CA",
                "approver group",
            ),
            // The requestor approving their own request (an admin requestor).
            (
                "m13",
                &requestor_admin,
                keep,
                "the requestor (an admin) approves their own request",
                "separation of duties",
            ),
            (
                "m20",
                &admin,
                edited,
                "approval statement edited after signing",
                "evidence signature",
            ),
            (
                "m22",
                &admin,
                forged_signature,
                "approval with a forged signature",
                "evidence signature",
            ),
            (
                "m23",
                &admin,
                no_chain,
                "approval without a certificate chain",
                "certificate_chain is empty",
            ),
        ];
        for (cn, who, tamper, what, rule) in one_approval {
            let uid = format!("uid-{}", &cn[1..]);
            let r = fresh(cn, &uid, CLIENT_SIGNER);
            let mut st = approved_by(&r, who);
            tamper(&mut st);
            attempts.push(refused(what, sign_req(r, vec![st]), rule));
        }
        // A 2-admin quorum faked: one admin twice, one admin name with two
        // certificates, one statement duplicated.
        let r = fresh("m14", "uid-14", IDENTITY_SIGNER);
        let mut st2 = statement_for(&r, Decision::Approve);
        st2.signed_at = Some(ts(-5));
        let twice = vec![approved_by(&r, &admin), sign(&st2, &admin)];
        attempts.push(refused(
            "one admin approves twice for a 2-admin quorum",
            sign_req(r, twice),
            "quorum",
        ));
        let r = fresh("m15", "uid-15", IDENTITY_SIGNER);
        let two_certs = vec![approved_by(&r, &admin), approved_by(&r, &admin_again)];
        attempts.push(refused(
            "one admin name with two certificates for a 2-admin quorum",
            sign_req(r, two_certs),
            "quorum",
        ));
        let r = fresh("m16", "uid-16", IDENTITY_SIGNER);
        let s1 = approved_by(&r, &admin);
        attempts.push(refused(
            "one approval statement duplicated for a 2-admin quorum",
            sign_req(r, vec![s1.clone(), s1]),
            "quorum",
        ));
        // Stale and future-dated statements.
        for (cn, uid, signed_at, what) in [
            (
                "m17",
                "uid-17",
                -2 * 86400,
                "a genuine but stale approval (2 days old)",
            ),
            (
                "m18",
                "uid-18",
                3600,
                "an approval dated an hour in the future",
            ),
        ] {
            let r = fresh(cn, uid, CLIENT_SIGNER);
            let mut st = statement_for(&r, Decision::Approve);
            st.signed_at = Some(ts(signed_at));
            attempts.push(refused(
                what,
                sign_req(r, vec![sign(&st, &admin)]),
                "freshness",
            ));
        }
        // A denial presented as an approval.
        let r = fresh("m19", "uid-19", CLIENT_SIGNER);
        let st = sign(&statement_for(&r, Decision::Deny), &admin);
        attempts.push(refused(
            "an admin's signed denial presented as approval",
            sign_req(r, vec![st]),
            "decision",
        ));
        // A renewal signature presented as an approval (wrong context).
        let r = fresh("m21", "uid-21", CLIENT_SIGNER);
        let st = evidence::sign_bytes(
            RENEWAL_CONTEXT,
            statement_for(&r, Decision::Approve).encode_to_vec(),
            &admin.key(),
            vec![admin.cert_der.clone()],
        );
        attempts.push(refused(
            "approval signed under the renewal context",
            sign_req(r, vec![st]),
            "evidence signature",
        ));
        // A genuinely approved CSR naming the signer's allowed client.
        let (_, pem) = csr("certsign-approver", &[]);
        let r = held("uid-24", "uid-24-name", &pem, IDENTITY_SIGNER, "mallory");
        let s1 = sign(&statement_for(&r, Decision::Approve), &admin);
        let s2 = sign(&statement_for(&r, Decision::Approve), &admin2);
        attempts.push(refused(
            "a 2-admin approved CSR naming the approver's own identity",
            sign_req(r, vec![s1, s2]),
            "allow-listed signer client",
        ));
        // Renewal proofs forged with the approver's own (CA-issued) key.
        let (_, pem) = csr("certsign-approver", &[]);
        let mut r = held(
            "uid-25",
            "uid-25-name",
            &pem,
            IDENTITY_SIGNER,
            "certsign-approver",
        );
        r.spec.as_mut().unwrap().usages = vec!["digital signature".into(), "client auth".into()];
        let der = evidence::csr_der(&pem);
        let renewal = |name: &str, der: &[u8], signer_name: &str| {
            let st = RenewalStatement {
                request_name: name.into(),
                csr_sha256: evidence::sha256(der),
                signer_name: signer_name.into(),
                current_certificate_sha256: evidence::sha256(&approver.cert_der),
                signed_at: Some(ts(0)),
            };
            evidence::sign_renewal(&st, &approver.key(), vec![approver.cert_der.clone()])
        };
        attempts.push(refused(
            "renew the approver's own identity with its own key",
            SignRequest {
                request: Some(
                    certsign_proto::v1::sign_request::Request::CertificateSigningRequest(r),
                ),
                approvals: vec![],
                renewal: Some(renewal("uid-25-name", &der, IDENTITY_SIGNER)),
            },
            "allow-listed signer client",
        ));
        let (_, pem) = csr("mallory-admin", &["system:masters"]);
        let der = evidence::csr_der(&pem);
        let r = held("uid-26", "uid-26-name", &pem, IDENTITY_SIGNER, "mallory");
        attempts.push(refused(
            "renewal proof by the approver's key for another subject",
            SignRequest {
                request: Some(
                    certsign_proto::v1::sign_request::Request::CertificateSigningRequest(r),
                ),
                approvals: vec![],
                renewal: Some(renewal("uid-26-name", &der, IDENTITY_SIGNER)),
            },
            "renewal",
        ));
        // An approval statement presented as a renewal proof.
        let r = fresh("m27", "uid-27", CLIENT_SIGNER);
        let st = sign(&statement_for(&r, Decision::Approve), &admin);
        attempts.push(refused(
            "an admin approval presented as a renewal proof",
            SignRequest {
                request: Some(
                    certsign_proto::v1::sign_request::Request::CertificateSigningRequest(r),
                ),
                approvals: vec![],
                renewal: Some(st),
            },
            "RenewalStatement",
        ));
        // An unknown signer name with a matching genuine approval.
        let mut r = fresh("m28", "uid-28", CLIENT_SIGNER);
        r.spec.as_mut().unwrap().signer_name = "example.com/anything".into();
        let st = sign(&statement_for(&r, Decision::Approve), &admin);
        attempts.push(refused(
            "a genuine approval for a signer name with no profile",
            sign_req(r, vec![st]),
            "unknown signer name",
        ));
        // A CSR asking for CA:TRUE, genuinely approved by two admins.
        let ca_csr = {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name
                .push(rcgen::DnType::CommonName, "sub-ca");
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.serialize_request(&key)
                .unwrap()
                .pem()
                .unwrap()
                .into_bytes()
        };
        let r = held("uid-29", "uid-29-name", &ca_csr, IDENTITY_SIGNER, "mallory");
        let s1 = sign(&statement_for(&r, Decision::Approve), &admin);
        let s2 = sign(&statement_for(&r, Decision::Approve), &admin2);
        attempts.push(Attempt {
            what: "a 2-admin approved CSR asking for CA:TRUE".into(),
            req: sign_req(r, vec![s1, s2]),
            codes: &[Code::FailedPrecondition, Code::InvalidArgument],
            rule: "CA",
        });

        let mut direct_refused = 0;
        for a in &attempts {
            match signer.sign(a.req.clone()).await {
                Ok(resp) => panic!(
                    "{}: the signer ISSUED serial {}",
                    a.what,
                    resp.into_inner().serial_number
                ),
                Err(s) => {
                    assert!(
                        a.codes.contains(&s.code()),
                        "{}: code {:?} ({}), expected one of {:?}",
                        a.what,
                        s.code(),
                        s.message(),
                        a.codes
                    );
                    assert!(
                        s.message().contains(a.rule),
                        "{}: refused for another reason than {:?}: {}",
                        a.what,
                        a.rule,
                        s.message()
                    );
                    println!("refused: {:<62} {:?}: {}", a.what, s.code(), s.message());
                    direct_refused += 1;
                }
            }
        }

        // ---- front 2: forged state in the approver's database ----------------
        let (db_attempts, legit_uid) = forge_in_database(&stack, &admin, &req_a, &appr_a).await;
        controls.insert(legit_uid);

        // ---- the judge: the journal --------------------------------------------
        let issued = grpc::journal_issued(&stack.journal_path());
        let by_request: BTreeSet<String> = issued
            .iter()
            .filter(|i| i.caller != "console")
            .map(|i| i.uid.clone())
            .collect();
        assert_eq!(
            by_request, controls,
            "the journal must show exactly the controls issued through Sign"
        );
        let total = attempts.len() + db_attempts;
        println!(
            "FIGURES compromised-approver attempts={total} direct_sign={} database_forgeries={db_attempts} certificates_obtained=0 controls_issued={}",
            direct_refused,
            controls.len()
        );
        assert!(total >= 30, "the attack table shrank to {total}");
    }
}

/// Writes forged state into the approver's SQLite file, lets the real
/// approver forward it, and checks each ends `Failed` with no certificate.
/// Returns the number of forgeries and the uid of the control request
/// issued legitimately through the approver.
async fn forge_in_database(
    stack: &Stack,
    admin: &Ident,
    issued_req: &CertificateSigningRequest,
    issued_approval: &SignedStatement,
) -> (usize, String) {
    let user = stack.mint(&MintSpec::new("mallory", &[]));
    let mut client = stack.approver_client(Some(&user));
    let mut admin_client = stack.approver_client(Some(admin));
    let db = rusqlite::Connection::open(stack.db_path()).unwrap();
    db.busy_timeout(Duration::from_secs(30)).unwrap();

    // A legitimately issued request through the approver, to steal from.
    let (_, pem) = csr("mallory", &[]);
    let created = client
        .create_certificate_signing_request(create_request("legit", &pem))
        .await
        .unwrap()
        .into_inner();
    admin_client
        .approve_certificate_signing_request(approve_request(&created, admin))
        .await
        .unwrap();
    let legit = wait_final(&mut admin_client, "legit").await;
    assert!(
        !legit.status.as_ref().unwrap().certificate.is_empty(),
        "control: a request approved through the approver is issued"
    );
    let legit_decisions = legit.status.as_ref().unwrap().decisions.clone();

    let approved_cond = || CertificateSigningRequestCondition {
        r#type: "Approved".into(),
        status: "True".into(),
        reason: "KubectlApprove".into(),
        message: "forged".into(),
        last_update_time: Some(ts(0)),
        last_transition_time: Some(ts(0)),
    };
    let forged_record = |st: SignedStatement| DecisionRecord {
        decision: Decision::Approve as i32,
        username: "admin".into(),
        groups: vec!["system:masters".into()],
        reason: "KubectlApprove".into(),
        message: "forged".into(),
        time: Some(ts(0)),
        statement: Some(st),
    };
    // The forged object becomes the row's new version, as the store keeps
    // it: a version from the counter, its event holding the object, the
    // row pointing at it; in one transaction.
    let write = |name: String, obj: CertificateSigningRequest| {
        let tx = db.unchecked_transaction().unwrap();
        tx.execute(
            "UPDATE counters SET value = value + 1 WHERE name = 'resource_version'",
            [],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO csr_events (resource_version, event_type, name, created, object) \
             VALUES ((SELECT value FROM counters WHERE name = 'resource_version'), 'MODIFIED', ?2, 0, ?1)",
            rusqlite::params![obj.encode_to_vec(), name],
        )
        .unwrap();
        let n = tx
            .execute(
                "UPDATE csrs SET state = 'approved', cond = 'Approved', next_attempt = 0, \
                 resource_version = (SELECT value FROM counters WHERE name = 'resource_version') WHERE name = ?1",
                rusqlite::params![name],
            )
            .unwrap();
        assert_eq!(n, 1, "forged row {name} not written");
        tx.commit().unwrap();
    };
    let pending = |name: &'static str| {
        let mut client = client.clone();
        async move {
            let (_, pem) = csr("mallory", &[]);
            client
                .create_certificate_signing_request(create_request(name, &pem))
                .await
                .unwrap()
                .into_inner()
        }
    };

    // Marks `o` Approved, with `decisions` as its decision records when given.
    let mark_approved = |o: &mut CertificateSigningRequest,
                         decisions: Option<Vec<DecisionRecord>>| {
        let st = o.status.get_or_insert_default();
        st.conditions.push(approved_cond());
        if let Some(decisions) = decisions {
            st.decisions = decisions;
        }
    };

    let mut names = Vec::new();
    // 1. An Approved condition with no decision at all.
    // 2. The legit request's decision record (real admin statement) copied
    //    onto a new request.
    // 3. The old direct-Sign approval (uid-a) copied onto a new request
    //    whose uid and CSR are rewritten to the old ones' name only.
    for (name, decisions) in [
        ("forged-condition", None),
        ("forged-replay", Some(legit_decisions.clone())),
        (
            "forged-replay-a",
            Some(vec![forged_record(issued_approval.clone())]),
        ),
    ] {
        let mut o = pending(name).await;
        mark_approved(&mut o, decisions);
        write(name.into(), o);
        names.push(name);
    }
    // 4. Swap the CSR under the issued request's approval, with the issued
    //    request's uid (uid reuse), back to approved and without certificate.
    let mut o = legit.clone();
    o.status.as_mut().unwrap().certificate.clear();
    o.spec.as_mut().unwrap().request = csr("mallory", &[]).1;
    let row_name = "legit".to_string();
    write(row_name, o);
    names.push("legit");
    // 5. A new request whose uid is rewritten to the issued direct-Sign
    //    uid, with that request's CSR swapped for a new one and its
    //    approval attached.
    let mut o = pending("forged-uid").await;
    o.metadata.as_mut().unwrap().uid = issued_req.metadata.as_ref().unwrap().uid.clone();
    mark_approved(&mut o, Some(vec![forged_record(issued_approval.clone())]));
    write("forged-uid".into(), o);
    names.push("forged-uid");
    // 6. A forged admin decision whose statement is signed by the approver's
    //    own key.
    let mut o = pending("forged-approver-key").await;
    let stmt = sign(
        &statement_for(&o, Decision::Approve),
        &stack.approver_ident(),
    );
    mark_approved(&mut o, Some(vec![forged_record(stmt)]));
    write("forged-approver-key".into(), o);
    names.push("forged-approver-key");

    for name in &names {
        let done = wait_final(&mut admin_client, name).await;
        let status = done.status.clone().unwrap_or_default();
        assert!(
            status.certificate.is_empty(),
            "{name}: the forged request was ISSUED"
        );
        let failed = status
            .conditions
            .iter()
            .find(|c| c.r#type == "Failed")
            .unwrap_or_else(|| panic!("{name}: not Failed: {done:?}"));
        assert_eq!(failed.reason, "SignerValidationFailure", "{name}");
        println!("refused (database): {name:<30} {}", failed.message);
    }
    // The database the attacker wrote is still a valid database.
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    drop(db);
    (names.len(), legit.metadata.unwrap().uid)
}
