//! Waiting for a request to finish, as a client sees it: by polling Get or
//! by following Watch. Every wait has a bound, so a hang fails the test
//! (naming the request) instead of stalling it; the bound is never an
//! assertion about speed.

use std::time::Duration;

use certsign_proto::v1::approver_client::ApproverClient;
use certsign_proto::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
    GetCertificateSigningRequestRequest, WatchCertificateSigningRequestsRequest,
};
use tonic::transport::Channel;

/// How long a request may take to finish before the test fails.
const FINISH_BOUND: Duration = Duration::from_secs(120);

/// Polls `name` every 100 ms, as `client` sees it, until it is final:
/// it has a certificate or a Failed or Denied condition. Returns it then;
/// fails the test, naming the request, after 120 s.
pub async fn wait_final(
    client: &mut ApproverClient<Channel>,
    name: &str,
) -> CertificateSigningRequest {
    let deadline = std::time::Instant::now() + FINISH_BOUND;
    loop {
        let csr = client
            .get_certificate_signing_request(GetCertificateSigningRequestRequest {
                name: name.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let status = csr.status.clone().unwrap_or_default();
        if !status.certificate.is_empty() || ended(&status).next().is_some() {
            return csr;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never finished within 120 s: {csr:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`wait_final`], and the request must have ended issued: fails the test,
/// naming the request and its conditions, when it ended Failed or Denied.
pub async fn wait_issued(
    client: &mut ApproverClient<Channel>,
    name: &str,
) -> CertificateSigningRequest {
    let csr = wait_final(client, name).await;
    let status = csr.status.clone().unwrap_or_default();
    let ended: Vec<_> = ended(&status)
        .map(|c| (c.r#type.as_str(), c.reason.as_str(), c.message.as_str()))
        .collect();
    assert!(
        !status.certificate.is_empty(),
        "{name} ended without a certificate: {ended:?}"
    );
    csr
}

/// Follows Watch until `name` has a certificate or a Failed condition;
/// returns the object. Gives up after two minutes.
pub async fn wait_done(c: &mut ApproverClient<Channel>, name: &str) -> CertificateSigningRequest {
    let fut = async {
        let mut stream = c
            .watch_certificate_signing_requests(WatchCertificateSigningRequestsRequest {
                name: name.into(),
                signer_name: String::new(),
                send_initial_events: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        while let Some(ev) = stream.message().await.unwrap() {
            let obj = ev.object.unwrap();
            let status = obj.status.clone().unwrap_or_default();
            if !status.certificate.is_empty()
                || status.conditions.iter().any(|c| c.r#type == "Failed")
            {
                return obj;
            }
        }
        panic!("watch ended before {name} was done");
    };
    tokio::time::timeout(FINISH_BOUND, fut)
        .await
        .unwrap_or_else(|_| panic!("{name} was not issued or failed within two minutes"))
}

/// The conditions that end a request without a certificate: Failed and
/// Denied.
fn ended(
    status: &CertificateSigningRequestStatus,
) -> impl Iterator<Item = &CertificateSigningRequestCondition> {
    status
        .conditions
        .iter()
        .filter(|c| c.r#type == "Failed" || c.r#type == "Denied")
}

/// The condition types of `csr`, in order.
pub fn condition_types(csr: &CertificateSigningRequest) -> Vec<String> {
    csr.status
        .as_ref()
        .map(|s| s.conditions.iter().map(|c| c.r#type.clone()).collect())
        .unwrap_or_default()
}

/// Runs an async block on a fresh multi-threaded runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
