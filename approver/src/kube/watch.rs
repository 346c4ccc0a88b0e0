//! `GET .../certificatesigningrequests?watch=true`: the change events of
//! the requests the caller may read, as Kubernetes' watch stream: one
//! `{"type","object"}` JSON object and a newline per event, chunked and
//! flushed per event; each object a CertificateSigningRequest, or a
//! one-row Table when kubectl asks for one (column definitions in the
//! first event only). With no resourceVersion (or `0`) the current objects
//! come first as ADDED; with a version, only later changes. A watch that
//! falls behind, or asks for a version too old, ends with an ERROR event
//! (410 Expired). The events come from the same watch as the gRPC face
//! (`ApproverService::watch_csrs`).
//!
//! This module must never decide who may see an event: the service's
//! watch filters by the caller's access.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use certsign_proto::v1::WatchCertificateSigningRequestsRequest;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use super::convert;
use super::errors::{KubeError, RESOURCE, from_service};
use super::resource::{Call, field_selector, wants_table};
use super::table::{self, Include};
use super::wire::Body;

/// How long a watch stays open unless `timeoutSeconds` says otherwise
/// (clients re-watch from the last version they saw).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// One event line.
fn line(kind: &str, object: serde_json::Value) -> Bytes {
    let mut v = serde_json::to_vec(&serde_json::json!({"type": kind, "object": object}))
        .unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Start the watch `call` asks for.
pub fn watch(call: &Call<'_>) -> Result<Response<Body>, KubeError> {
    let q = |k: &str| call.query.get(k).map(String::as_str);
    let fields = field_selector(q("fieldSelector"))?;
    let include = Include::parse(q("includeObject")).map_err(KubeError::bad_request)?;
    let rv = q("resourceVersion").unwrap_or("").to_string();
    if !rv.is_empty() && rv.parse::<u64>().is_err() {
        return Err(KubeError::bad_request(format!(
            "resourceVersion: {rv:?} is not a resource version this server issued"
        )));
    }
    let timeout = match q("timeoutSeconds") {
        None | Some("") => DEFAULT_TIMEOUT,
        Some(t) => Duration::from_secs(t.parse::<u64>().map_err(|_| {
            KubeError::bad_request(format!("timeoutSeconds: {t:?} is not an integer"))
        })?),
    };
    let initial = rv.is_empty() || rv == "0";
    let req = WatchCertificateSigningRequestsRequest {
        name: fields.name.unwrap_or_default(),
        signer_name: fields.signer_name.unwrap_or_default(),
        send_initial_events: initial,
        resource_version: if initial { String::new() } else { rv },
        label_selector: q("labelSelector").unwrap_or("").to_string(),
    };
    let as_table = wants_table(call.headers);
    let mut events = call
        .service
        .watch_csrs(call.id.clone(), req)
        .map_err(|e| from_service(&e, RESOURCE, ""))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut headers = true;
        loop {
            let next = tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                e = events.next() => e,
            };
            let Some(event) = next else { return };
            let bytes = match event {
                Ok(ev) => {
                    let Some(obj) = ev.object else { continue };
                    let object = if as_table {
                        let rv = obj.metadata.as_ref().map(|m| m.resource_version.clone());
                        let meta = ListMeta {
                            resource_version: rv,
                            ..Default::default()
                        };
                        let t = table::table(std::slice::from_ref(&obj), meta, include, headers);
                        headers = false;
                        serde_json::to_value(t).unwrap_or_default()
                    } else {
                        serde_json::to_value(convert::to_kube(&obj)).unwrap_or_default()
                    };
                    line(&ev.r#type, object)
                }
                Err(e) => {
                    let k = from_service(&e, RESOURCE, "");
                    let bytes = line("ERROR", serde_json::to_value(&k.status).unwrap_or_default());
                    let _ = tx.send(bytes).await;
                    return;
                }
            };
            if tx.send(bytes).await.is_err() {
                return;
            }
        }
    });
    let body =
        StreamBody::new(ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b))));
    let mut r = Response::new(body.boxed());
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}
