//! Batch approvals: one signature over many requests' bound fields.
//!
//! A `BatchApprovalStatement` signs the root of a Merkle tree over the
//! serialized `ApprovalEntry` of each request (RFC 9162 section 2.1
//! hashing: leaf = SHA-256(0x00 || entry), node = SHA-256(0x01 || l || r)).
//! Each request travels with a `SignedStatement` holding the same signed
//! statement plus its own `BatchInclusion` (entry bytes, index, audit path).
//! [`batch_statements`] builds those for the signing side; [`included`]
//! recomputes the root from one inclusion for the verifying side, which
//! `approval.rs` compares with the signed root.
//!
//! It must never accept an entry whose path does not lead to the signed
//! root for the signed entry count, nor decode an entry before that.

use certsign_proto::v1::{
    ApprovalEntry, BatchApprovalStatement, BatchInclusion, CertificateSigningRequest, Decision,
    SignedStatement,
};
use prost::Message;

use crate::cert::{csr_der_from_pem, sha256};
use crate::statement::{BATCH_APPROVAL_CONTEXT, EvidenceError, StatementKey, signed_bytes};

/// Entries one batch statement may hold at most (a path of at most 16
/// hashes; certctl splits larger sets into several statements).
pub const MAX_BATCH_ENTRIES: usize = 65_536;
/// Longest audit path accepted (a tree of 2^64 leaves).
const MAX_PATH: usize = 64;

fn leaf_hash(entry: &[u8]) -> [u8; 32] {
    let mut v = Vec::with_capacity(1 + entry.len());
    v.push(0);
    v.extend_from_slice(entry);
    sha256(&v)
}

fn node_hash(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    let mut v = [0u8; 65];
    v[0] = 1;
    v[1..33].copy_from_slice(l);
    v[33..].copy_from_slice(r);
    sha256(&v)
}

/// The root over `leaves` (leaf hashes), appending to `paths[i]` the audit
/// path of leaf `i`, leaf to root. `leaves` must not be empty.
fn build(leaves: &[[u8; 32]], paths: &mut [Vec<Vec<u8>>]) -> [u8; 32] {
    let n = leaves.len();
    if n <= 1 {
        return leaves.first().copied().unwrap_or_default();
    }
    // The largest power of two smaller than n.
    let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
    let (lp, rp) = paths.split_at_mut(k);
    let l = build(&leaves[..k], lp);
    let r = build(&leaves[k..], rp);
    lp.iter_mut().for_each(|p| p.push(r.to_vec()));
    rp.iter_mut().for_each(|p| p.push(l.to_vec()));
    node_hash(&l, &r)
}

/// The Merkle tree hash over serialized entries and each entry's audit path.
pub fn merkle_tree(entries: &[Vec<u8>]) -> ([u8; 32], Vec<Vec<Vec<u8>>>) {
    let leaves: Vec<[u8; 32]> = entries.iter().map(|e| leaf_hash(e)).collect();
    let mut paths = vec![Vec::new(); entries.len()];
    let root = build(&leaves, &mut paths);
    (root, paths)
}

/// The root that `inclusion` leads to in a tree of `count` entries
/// (RFC 9162 section 2.1.3.2), or why it leads nowhere.
pub fn included(inclusion: &BatchInclusion, count: u64) -> Result<[u8; 32], EvidenceError> {
    let bad = |why: &str| EvidenceError::Inclusion(why.to_string());
    if inclusion.index >= count {
        return Err(bad("index is not below entry_count"));
    }
    if inclusion.path.len() > MAX_PATH {
        return Err(bad("path longer than 64 hashes"));
    }
    let (mut f, mut s) = (inclusion.index, count - 1);
    let mut r = leaf_hash(&inclusion.entry);
    for p in &inclusion.path {
        let p: [u8; 32] = p
            .as_slice()
            .try_into()
            .map_err(|_| bad("a path hash is not 32 bytes"))?;
        if s == 0 {
            return Err(bad("path longer than the tree is deep"));
        }
        if f & 1 == 1 || f == s {
            r = node_hash(&p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, &p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(bad("path shorter than the tree is deep"));
    }
    Ok(r)
}

/// The entry binding every field of `request` the verifier compares.
pub fn approval_entry(request: &CertificateSigningRequest) -> Result<ApprovalEntry, EvidenceError> {
    let meta = request.metadata.clone().unwrap_or_default();
    let spec = request
        .spec
        .as_ref()
        .ok_or_else(|| EvidenceError::Malformed("request has no spec".into()))?;
    let der = csr_der_from_pem(&spec.request).ok_or_else(|| {
        EvidenceError::Malformed("PEM block type must be CERTIFICATE REQUEST".into())
    })?;
    Ok(ApprovalEntry {
        request_uid: meta.uid,
        request_name: meta.name,
        csr_sha256: sha256(&der).to_vec(),
        signer_name: spec.signer_name.clone(),
        usages: spec.usages.clone(),
        expiration_seconds: spec.expiration_seconds,
        requestor: spec.username.clone(),
    })
}

/// The batch statement over `entries` (what is signed) and, for each entry
/// in order, its inclusion (what travels beside the signature).
pub fn batch_statement(
    entries: &[ApprovalEntry],
    decision: Decision,
    signed_at: prost_types::Timestamp,
) -> Result<(Vec<u8>, Vec<BatchInclusion>), EvidenceError> {
    if entries.is_empty() || entries.len() > MAX_BATCH_ENTRIES {
        return Err(EvidenceError::Malformed(format!(
            "a batch statement holds 1 to {MAX_BATCH_ENTRIES} entries, not {}",
            entries.len()
        )));
    }
    let bytes: Vec<Vec<u8>> = entries.iter().map(Message::encode_to_vec).collect();
    let (root, paths) = merkle_tree(&bytes);
    let statement = BatchApprovalStatement {
        root_sha256: root.to_vec(),
        entry_count: entries.len() as u64,
        decision: decision as i32,
        signed_at: Some(signed_at),
    };
    let inclusions = bytes
        .into_iter()
        .zip(paths)
        .enumerate()
        .map(|(i, (entry, path))| BatchInclusion {
            entry,
            index: i as u64,
            path,
        })
        .collect();
    Ok((statement.encode_to_vec(), inclusions))
}

/// Sign one batch statement over `entries` with `key`: one signature, one
/// `SignedStatement` per entry, in order.
pub fn sign_batch<K: StatementKey + ?Sized>(
    entries: &[ApprovalEntry],
    decision: Decision,
    signed_at: prost_types::Timestamp,
    key: &K,
    chain: Vec<Vec<u8>>,
) -> Result<Vec<SignedStatement>, EvidenceError> {
    let (statement, inclusions) = batch_statement(entries, decision, signed_at)?;
    let signature = key
        .sign_bytes(&signed_bytes(BATCH_APPROVAL_CONTEXT, &statement))
        .map_err(|e| EvidenceError::Malformed(format!("signing failed: {e}")))?;
    Ok(inclusions
        .into_iter()
        .map(|inc| SignedStatement {
            statement: statement.clone(),
            signature: signature.clone(),
            certificate_chain: chain.clone(),
            batch: Some(inc),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entries(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("entry-{i}").into_bytes()).collect()
    }

    /// RFC 9162's recursive definition, for comparison.
    fn mth(d: &[Vec<u8>]) -> [u8; 32] {
        match d.len() {
            1 => leaf_hash(&d[0]),
            n => {
                let k = (0..)
                    .map(|i| 1usize << i)
                    .take_while(|&p| p < n)
                    .last()
                    .unwrap();
                node_hash(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    #[test]
    fn every_proof_of_every_size_leads_to_the_root_and_no_other_does() {
        for n in 1..=33 {
            let d = entries(n);
            let (root, paths) = merkle_tree(&d);
            assert_eq!(root, mth(&d), "n={n}");
            for (i, path) in paths.iter().enumerate() {
                let inc = BatchInclusion {
                    entry: d[i].clone(),
                    index: i as u64,
                    path: path.clone(),
                };
                assert_eq!(included(&inc, n as u64).unwrap(), root, "n={n} i={i}");
                // Another entry, index or count with this path: another root.
                let moved = BatchInclusion {
                    entry: d[(i + 1) % n].clone(),
                    ..inc.clone()
                };
                if n > 1 {
                    assert_ne!(included(&moved, n as u64).ok(), Some(root));
                    let shifted = BatchInclusion {
                        index: ((i + 1) % n) as u64,
                        ..inc.clone()
                    };
                    assert_ne!(included(&shifted, n as u64).ok(), Some(root));
                }
            }
        }
    }

    #[test]
    fn malformed_inclusions_are_refused_by_rule() {
        let d = entries(5);
        let (_, paths) = merkle_tree(&d);
        let inc = BatchInclusion {
            entry: d[2].clone(),
            index: 2,
            path: paths[2].clone(),
        };
        let e = included(
            &BatchInclusion {
                index: 5,
                ..inc.clone()
            },
            5,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("index is not below entry_count"),
            "{e}"
        );
        let mut short = inc.clone();
        short.path.pop();
        assert!(
            included(&short, 5)
                .unwrap_err()
                .to_string()
                .contains("shorter")
        );
        let mut long = inc.clone();
        long.path.push(vec![0; 32]);
        assert!(
            included(&long, 5)
                .unwrap_err()
                .to_string()
                .contains("longer")
        );
        let mut odd = inc;
        odd.path[0].push(0);
        assert!(
            included(&odd, 5)
                .unwrap_err()
                .to_string()
                .contains("32 bytes")
        );
    }

    // Verification of batch statements against requests (the rules shared
    // with single statements run for both in approval.rs's tests).
    use std::time::{Duration, SystemTime};

    use crate::approval::{ApprovalTrust, verify_approval};
    use crate::statement::{APPROVAL_CONTEXT, EvidenceError, sign_statement};
    use crate::testkit::*;

    const MAX_AGE: Duration = Duration::from_secs(3600);

    fn verify(
        trust: &ApprovalTrust,
        s: &SignedStatement,
        req: &CertificateSigningRequest,
        now: SystemTime,
    ) -> Result<crate::Identity, EvidenceError> {
        let groups = vec!["system:masters".to_string()];
        verify_approval(s, req, Decision::Approve, trust, &groups, MAX_AGE, now)
    }

    /// Two distinct requests and one batch approving both: (requests, signed).
    fn two(pki: &Pki) -> (Vec<CertificateSigningRequest>, Vec<SignedStatement>) {
        let (k, c) = admin(pki, "admin", "system:masters", false);
        let a = request();
        let mut b = request();
        b.metadata = Some(certsign_proto::v1::ObjectMeta {
            name: "alice-2".into(),
            uid: "u-2".into(),
            ..Default::default()
        });
        let entries = [approval_entry(&a).unwrap(), approval_entry(&b).unwrap()];
        let signed_at = statement(&a, 0).signed_at.unwrap();
        let s = sign_batch(&entries, Decision::Approve, signed_at, &k, vec![c]).unwrap();
        (vec![a, b], s)
    }

    #[test]
    fn one_signature_approves_each_request_by_its_own_entry() {
        let pki = pki();
        let trust = ApprovalTrust::from_der(vec![pki.ca_der.clone()]);
        let (reqs, s) = two(&pki);
        let now = SystemTime::now();
        assert_eq!(s[0].signature, s[1].signature);
        for (r, s) in reqs.iter().zip(&s) {
            assert_eq!(verify(&trust, s, r, now).unwrap().username, "admin");
        }
        // One statement verified once, then each request by its entry.
        assert_eq!(trust.statement_cache().verifications(), 1);
        assert_eq!(trust.statement_cache().len(), 1);
    }

    #[test]
    fn an_entry_cannot_be_moved_to_another_request() {
        let pki = pki();
        let trust = ApprovalTrust::from_der(vec![pki.ca_der.clone()]);
        let (reqs, s) = two(&pki);
        let now = SystemTime::now();
        // A's entry, intact, presented with B.
        assert_eq!(
            verify(&trust, &s[0], &reqs[1], now).unwrap_err(),
            EvidenceError::FieldMismatch("request_uid")
        );
        // A's entry rewritten to name B (uid, name, CSR hash), A's path kept.
        let mut moved = s[0].clone();
        let inc = moved.batch.as_mut().unwrap();
        inc.entry = approval_entry(&reqs[1]).unwrap().encode_to_vec();
        let e = verify(&trust, &moved, &reqs[1], now).unwrap_err();
        assert!(matches!(e, EvidenceError::Inclusion(_)), "{e}");
        // B's entry with A's position.
        let mut shifted = s[1].clone();
        shifted.batch.as_mut().unwrap().index = 0;
        let e = verify(&trust, &shifted, &reqs[1], now).unwrap_err();
        assert!(matches!(e, EvidenceError::Inclusion(_)), "{e}");
        // An entry of one batch under another batch's signature.
        let (_, other) = two(&pki);
        let mut grafted = other[0].clone();
        grafted.batch = Some(BatchInclusion {
            entry: approval_entry(&reqs[1]).unwrap().encode_to_vec(),
            ..s[1].batch.clone().unwrap()
        });
        let mut foreign_req = reqs[1].clone();
        foreign_req.spec.as_mut().unwrap().usages = vec!["server auth".into()];
        let mut forged = s[1].clone();
        forged.batch.as_mut().unwrap().entry =
            approval_entry(&foreign_req).unwrap().encode_to_vec();
        let e = verify(&trust, &forged, &foreign_req, now).unwrap_err();
        assert!(matches!(e, EvidenceError::Inclusion(_)), "{e}");
        let e = verify(&trust, &grafted, &reqs[1], now).unwrap_err();
        assert!(matches!(e, EvidenceError::Inclusion(_)), "{e}");
    }

    #[test]
    fn a_cached_statement_cannot_outlive_its_freshness() {
        let pki = pki();
        let trust = ApprovalTrust::from_der(vec![pki.ca_der.clone()]);
        let (reqs, s) = two(&pki);
        let now = SystemTime::now();
        verify(&trust, &s[0], &reqs[0], now).unwrap();
        assert_eq!(trust.statement_cache().len(), 1);
        // Inside the window: from the cache.
        verify(
            &trust,
            &s[1],
            &reqs[1],
            now + MAX_AGE - Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(trust.statement_cache().verifications(), 1);
        // Past it: refused as stale, and dropped from the cache.
        let late = now + MAX_AGE + Duration::from_secs(5);
        let e = verify(&trust, &s[1], &reqs[1], late).unwrap_err();
        assert!(matches!(e, EvidenceError::Stale { .. }), "{e}");
        assert_eq!(trust.statement_cache().len(), 0);
        // A stricter max_age for another signer name applies to a cached one.
        verify(&trust, &s[0], &reqs[0], now).unwrap();
        let groups = vec!["system:masters".to_string()];
        let strict = Duration::from_secs(60);
        let e = verify_approval(
            &s[0],
            &reqs[0],
            Decision::Approve,
            &trust,
            &groups,
            strict,
            now + Duration::from_secs(120),
        )
        .unwrap_err();
        assert!(matches!(e, EvidenceError::Stale { .. }), "{e}");
    }

    #[test]
    fn an_evicted_statement_is_verified_again() {
        let pki = pki();
        let trust =
            ApprovalTrust::from_der(vec![pki.ca_der.clone()]).with_statement_cache(1, 1 << 20);
        let (ra, sa) = two(&pki);
        let (rb, sb) = two(&pki);
        let now = SystemTime::now();
        let count = || trust.statement_cache().verifications();
        verify(&trust, &sa[0], &ra[0], now).unwrap();
        verify(&trust, &sa[1], &ra[1], now).unwrap();
        assert_eq!(count(), 1);
        verify(&trust, &sb[0], &rb[0], now).unwrap();
        assert_eq!((count(), trust.statement_cache().len()), (2, 1));
        // The first statement was evicted: verified again, in full.
        verify(&trust, &sa[0], &ra[0], now).unwrap();
        assert_eq!(count(), 3);
        // A cached statement never hides a forgery: another signature or
        // another certificate is another key, verified in full.
        let mut forged = sa[1].clone();
        forged.signature[10] ^= 1;
        assert_eq!(
            verify(&trust, &forged, &ra[1], now).unwrap_err(),
            EvidenceError::Signature(BATCH_APPROVAL_CONTEXT)
        );
        let (_, rogue_cert) = admin(&pki, "admin", "system:masters", false);
        let mut swapped = sa[1].clone();
        swapped.certificate_chain = vec![rogue_cert];
        assert_eq!(
            verify(&trust, &swapped, &ra[1], now).unwrap_err(),
            EvidenceError::Signature(BATCH_APPROVAL_CONTEXT)
        );
    }

    #[test]
    fn a_batch_is_never_read_as_a_single_statement_nor_the_reverse() {
        let pki = pki();
        let trust = ApprovalTrust::from_der(vec![pki.ca_der.clone()]);
        let (k, c) = admin(&pki, "admin", "system:masters", false);
        let (reqs, s) = two(&pki);
        let now = SystemTime::now();
        let mut bare = s[0].clone();
        bare.batch = None;
        assert_eq!(
            verify(&trust, &bare, &reqs[0], now).unwrap_err(),
            EvidenceError::Signature(APPROVAL_CONTEXT)
        );
        let st = statement(&reqs[0], 0);
        let mut single = sign_statement(APPROVAL_CONTEXT, st.encode_to_vec(), &k, vec![c]).unwrap();
        verify(&trust, &single, &reqs[0], now).unwrap();
        single.batch = s[0].batch.clone();
        assert_eq!(
            verify(&trust, &single, &reqs[0], now).unwrap_err(),
            EvidenceError::Signature(BATCH_APPROVAL_CONTEXT)
        );
    }

    #[test]
    fn a_batch_denial_is_no_approval() {
        let pki = pki();
        let trust = ApprovalTrust::from_der(vec![pki.ca_der.clone()]);
        let (k, c) = admin(&pki, "admin", "system:masters", false);
        let req = request();
        let entries = [approval_entry(&req).unwrap()];
        let at = statement(&req, 0).signed_at.unwrap();
        let s = sign_batch(&entries, Decision::Deny, at, &k, vec![c]).unwrap();
        let groups = vec!["system:masters".to_string()];
        let now = SystemTime::now();
        let v = |d| verify_approval(&s[0], &req, d, &trust, &groups, MAX_AGE, now);
        v(Decision::Deny).unwrap();
        assert!(matches!(
            v(Decision::Approve).unwrap_err(),
            EvidenceError::Decision { .. }
        ));
    }
}
