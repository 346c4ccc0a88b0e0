//! The load generator and the judge of the fault-injection suites.
//!
//! Several concurrent tasks each play one requestor: create a request
//! (a fresh P-256 CSR), have the admin approve it (a real signed
//! statement), and at the end wait for its certificate, retrying whatever a
//! killed or unreachable daemon made fail. Every acknowledged create and
//! approval is written down in a [`Ledger`]; [`judge`] then checks the
//! promises against the approver's store (through its API), the signer's
//! journal and the SQLite file itself.
//!
//! It must never count an answer it did not receive as acknowledged, and
//! never retry an error that is a decision (those fail the run).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use certsign_proto::v1::approver_client::ApproverClient;
use certsign_proto::v1::{
    CertificateSigningRequest, GetCertificateSigningRequestRequest,
    ListCertificateSigningRequestsRequest,
};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::grpc::{self, Ident, approve_request, create_request, csr};

/// Sizes, from the environment with CI-sized defaults.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Requests to create and approve (`CERTSIGN_RELIABILITY_REQUESTS`).
    pub requests: usize,
    /// Kills to inflict (`CERTSIGN_RELIABILITY_KILLS`).
    pub kills: usize,
    /// Concurrent client tasks (`CERTSIGN_RELIABILITY_WORKERS`).
    pub workers: usize,
    /// Seed of the kill schedule (`CERTSIGN_RELIABILITY_SEED`; default: time).
    pub seed: u64,
}

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{key}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

impl LoadConfig {
    /// Reads the environment.
    pub fn from_env() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        LoadConfig {
            requests: env_num("CERTSIGN_RELIABILITY_REQUESTS", 2000) as usize,
            kills: env_num("CERTSIGN_RELIABILITY_KILLS", 20) as usize,
            workers: env_num("CERTSIGN_RELIABILITY_WORKERS", 8).max(1) as usize,
            seed: env_num("CERTSIGN_RELIABILITY_SEED", now | 1),
        }
    }
}

/// A small xorshift PRNG: kill moments only, reproducible from the seed.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// From a non-zero seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
}

/// What the clients were told.
#[derive(Debug, Default)]
pub struct Ledger {
    /// name → uid, for every create answered OK.
    pub created: Mutex<BTreeMap<String, String>>,
    /// Names whose approval was answered OK (with the Approved condition).
    pub approved: Mutex<BTreeSet<String>>,
    /// Acknowledged operations so far (creates + approvals): the kill clock.
    pub progress: AtomicUsize,
    /// Calls retried after a transport failure or UNAVAILABLE.
    pub retries: AtomicUsize,
    /// Errors that were clear statuses and retried, by code.
    pub retried_codes: Mutex<BTreeMap<String, usize>>,
}

/// Whether a failed call may have been cut short by a fault: retried.
/// Everything else is a decision and fails the run.
pub fn retryable(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::Cancelled | Code::Unknown | Code::DeadlineExceeded
    )
}

/// Count a retried call and its status code in the ledger.
pub fn note_retry(ledger: &Ledger, s: &Status) {
    ledger.retries.fetch_add(1, Ordering::Relaxed);
    *ledger
        .retried_codes
        .lock()
        .unwrap()
        .entry(format!("{:?}", s.code()))
        .or_default() += 1;
}

/// Retries `f` while it fails retryably; gives up (panics) after `limit`.
async fn retry<T, F, Fut>(
    ledger: &Ledger,
    what: &str,
    limit: Duration,
    mut f: F,
) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match f().await {
            Err(s) if retryable(&s) => {
                note_retry(ledger, &s);
                assert!(
                    Instant::now() < deadline,
                    "{what}: still failing after {limit:?}: {s:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// One client task: requestor `user` creates `names`, `admin` approves each.
pub async fn client_task(
    ledger: &Ledger,
    mut user: ApproverClient<Channel>,
    mut admin_client: ApproverClient<Channel>,
    admin: &Ident,
    names: Vec<String>,
) {
    let limit = Duration::from_secs(300);
    for name in names {
        let (_, pem) = csr(&format!("u-{name}"), &[]);
        let req = create_request(&name, &pem);
        let created = retry(ledger, &format!("create {name}"), limit, || {
            let mut c = user.clone();
            let r = req.clone();
            async move { c.create_certificate_signing_request(r).await }
        })
        .await;
        let obj = match created {
            Ok(o) => {
                let o = o.into_inner();
                let uid = o.metadata.as_ref().unwrap().uid.clone();
                ledger.created.lock().unwrap().insert(name.clone(), uid);
                ledger.progress.fetch_add(1, Ordering::Relaxed);
                o
            }
            // An earlier attempt was committed but its answer was lost:
            // not acknowledged, but it exists; carry on with it.
            Err(s) if s.code() == Code::AlreadyExists => get(ledger, &mut user, &name).await,
            Err(s) => panic!("create {name}: {:?}: {}", s.code(), s.message()),
        };
        let approve = approve_request(&obj, admin);
        let approved = retry(ledger, &format!("approve {name}"), limit, || {
            let mut c = admin_client.clone();
            let r = approve.clone();
            async move { c.approve_certificate_signing_request(r).await }
        })
        .await
        .unwrap_or_else(|s| panic!("approve {name}: {:?}: {}", s.code(), s.message()))
        .into_inner();
        assert!(
            has_condition(&approved, "Approved"),
            "approve {name} answered OK without the Approved condition"
        );
        ledger.approved.lock().unwrap().insert(name.clone());
        ledger.progress.fetch_add(1, Ordering::Relaxed);
        let _ = &mut admin_client;
    }
}

/// Waits (as the requestor, like `certctl certificate wait`) until every
/// name has a certificate or a Failed condition; panics after `limit`.
pub async fn wait_all(
    ledger: &Ledger,
    mut user: ApproverClient<Channel>,
    names: Vec<String>,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    for name in names {
        loop {
            let o = get(ledger, &mut user, &name).await;
            let st = o.status.clone().unwrap_or_default();
            if !st.certificate.is_empty() {
                break;
            }
            assert!(
                !has_condition(&o, "Failed"),
                "{name} failed: {:?}",
                st.conditions
            );
            assert!(
                Instant::now() < deadline,
                "{name} was not issued within {limit:?}: {:?}",
                st.conditions
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

async fn get(
    ledger: &Ledger,
    c: &mut ApproverClient<Channel>,
    name: &str,
) -> CertificateSigningRequest {
    retry(
        ledger,
        &format!("get {name}"),
        Duration::from_secs(300),
        || {
            let mut c = c.clone();
            let n = name.to_string();
            async move {
                c.get_certificate_signing_request(GetCertificateSigningRequestRequest { name: n })
                    .await
            }
        },
    )
    .await
    .unwrap_or_else(|s| panic!("get {name}: {:?}: {}", s.code(), s.message()))
    .into_inner()
}

/// True when the object carries a condition of type `ty`.
pub fn has_condition(o: &CertificateSigningRequest, ty: &str) -> bool {
    o.status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.r#type == ty))
}

/// Every object in the store, through the API as the admin.
pub async fn list_all(
    ledger: &Ledger,
    admin: &mut ApproverClient<Channel>,
) -> Vec<CertificateSigningRequest> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = retry(ledger, "list", Duration::from_secs(120), || {
            let mut c = admin.clone();
            let t = token.clone();
            async move {
                c.list_certificate_signing_requests(ListCertificateSigningRequestsRequest {
                    limit: 500,
                    continue_token: t,
                    ..Default::default()
                })
                .await
            }
        })
        .await
        .unwrap()
        .into_inner();
        out.extend(page.items);
        if page.continue_token.is_empty() {
            return out;
        }
        token = page.continue_token;
    }
}

/// The figures of one run.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Objects in the store.
    pub stored: usize,
    /// Acknowledged creates.
    pub acked_creates: usize,
    /// Acknowledged approvals.
    pub acked_approvals: usize,
    /// Certificates in the store (= journal issues by the approver).
    pub issued: usize,
    /// Retried calls.
    pub retries: usize,
}

/// Checks every promise; panics naming the first broken one.
///
/// - every acknowledged create is stored, under the uid it was answered with;
/// - every acknowledged approval is stored (Approved, with the admin's decision);
/// - every approved request has exactly one certificate: one journal
///   `issued` line for its uid, whose serial is the stored certificate's;
/// - the journal's issues by the approver and the store's certificates
///   agree one to one, and no two certificates share a serial.
pub fn judge(
    ledger: &Ledger,
    objects: &[CertificateSigningRequest],
    journal: &[grpc::JournalIssue],
) -> Verdict {
    let by_name: HashMap<&str, &CertificateSigningRequest> = objects
        .iter()
        .map(|o| (o.metadata.as_ref().unwrap().name.as_str(), o))
        .collect();
    let created = ledger.created.lock().unwrap().clone();
    for (name, uid) in &created {
        let o = by_name
            .get(name.as_str())
            .unwrap_or_else(|| panic!("acknowledged create {name} is not in the store"));
        assert_eq!(
            &o.metadata.as_ref().unwrap().uid,
            uid,
            "{name}: stored uid differs from the acknowledged one"
        );
    }
    let approved = ledger.approved.lock().unwrap().clone();
    for name in &approved {
        let o = by_name
            .get(name.as_str())
            .unwrap_or_else(|| panic!("acknowledged approval of {name}: request is gone"));
        assert!(
            has_condition(o, "Approved"),
            "acknowledged approval of {name} is not stored"
        );
        let st = o.status.as_ref().unwrap();
        assert!(
            st.decisions.iter().any(|d| d.username == "admin"),
            "{name}: the admin's decision record is missing"
        );
    }
    let mut journal_by_uid: HashMap<&str, Vec<&grpc::JournalIssue>> = HashMap::new();
    let mut serials = BTreeSet::new();
    for j in journal {
        assert!(
            serials.insert(j.serial.clone()),
            "serial {} issued twice in the journal",
            j.serial
        );
        if j.caller != "console" {
            journal_by_uid.entry(j.uid.as_str()).or_default().push(j);
        }
    }
    let mut issued = 0;
    let mut store_uids = BTreeSet::new();
    for o in objects {
        let name = &o.metadata.as_ref().unwrap().name;
        let uid = o.metadata.as_ref().unwrap().uid.as_str();
        let st = o.status.clone().unwrap_or_default();
        assert!(
            !has_condition(o, "Failed"),
            "{name} is Failed: {:?}",
            st.conditions
        );
        if has_condition(o, "Approved") {
            assert!(
                !st.certificate.is_empty(),
                "{name} is approved but was never issued"
            );
        }
        if st.certificate.is_empty() {
            assert!(
                !journal_by_uid.contains_key(uid),
                "{name}: the journal issued uid {uid} but the store has no certificate"
            );
            continue;
        }
        issued += 1;
        store_uids.insert(uid.to_string());
        let lines = journal_by_uid
            .get(uid)
            .unwrap_or_else(|| panic!("{name}: certificate in the store, none in the journal"));
        assert_eq!(
            lines.len(),
            1,
            "{name}: uid {uid} issued {} times",
            lines.len()
        );
        let serial = grpc::serial_of(&st.certificate);
        assert_eq!(
            serial, lines[0].serial,
            "{name}: stored certificate is not the journaled one"
        );
    }
    let journal_uids: BTreeSet<String> = journal_by_uid.keys().map(|u| u.to_string()).collect();
    assert_eq!(
        journal_uids, store_uids,
        "journal issues and stored certificates differ"
    );
    Verdict {
        stored: objects.len(),
        acked_creates: created.len(),
        acked_approvals: approved.len(),
        issued,
        retries: ledger.retries.load(Ordering::Relaxed),
    }
}
