//! One request of the Kubernetes face from start to answer: `/version`
//! (no credentials needed, as kube-apiserver lets anyone read it), then
//! authentication (the same as the gRPC face: the verified client
//! certificate, else `Authorization: Bearer` with a bootstrap token), then
//! the route: discovery, OpenAPI, or the `certificatesigningrequests`
//! resource. Every other path is 404 as a cluster answers for an unknown
//! resource.
//!
//! This module must never serve a resource path without an authenticated
//! caller, and never let a bootstrap token delete or decide (the same
//! `TokenUse` rules as the gRPC handlers).

use std::collections::HashMap;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;

use super::errors::{KubeError, RESOURCE, from_service};
use super::resource::Call;
use super::wire::{self, Body};
use super::{discovery, openapi, review, watch};
use crate::service::{ApproverService, TokenUse};

const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";

/// The query string as a map (last value wins; `+` is a space).
pub fn query(q: Option<&str>) -> HashMap<String, String> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        percent_decode_str(&s).decode_utf8_lossy().into_owned()
    };
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Query booleans as Kubernetes reads them: absent, `0` and `false` are false.
fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Where a path leads.
enum Route<'a> {
    Version,
    Discovery(serde_json::Value),
    OpenApiDoc(serde_json::Value),
    Collection,
    Item(&'a str),
    Approval(&'a str),
    Status(&'a str),
    /// `kubectl auth whoami`.
    SelfSubjectReview,
    /// `kubectl auth can-i`.
    SelfSubjectAccessReview,
    NotFound,
}

fn route(path: &str) -> Route<'_> {
    let path = path.trim_end_matches('/');
    match path {
        "/version" => return Route::Version,
        "/api" => return Route::Discovery(discovery::core()),
        "/apis" => return Route::Discovery(discovery::groups()),
        "/apis/certificates.k8s.io" => return Route::Discovery(discovery::certificates_group()),
        "/apis/certificates.k8s.io/v1" => return Route::Discovery(discovery::resources()),
        "/apis/authentication.k8s.io" => {
            return Route::Discovery(discovery::authentication_group());
        }
        "/apis/authentication.k8s.io/v1" => {
            return Route::Discovery(discovery::authentication_resources());
        }
        "/apis/authentication.k8s.io/v1/selfsubjectreviews" => return Route::SelfSubjectReview,
        "/apis/authorization.k8s.io" => {
            return Route::Discovery(discovery::authorization_group());
        }
        "/apis/authorization.k8s.io/v1" => {
            return Route::Discovery(discovery::authorization_resources());
        }
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" => {
            return Route::SelfSubjectAccessReview;
        }
        "/openapi/v3" => return Route::OpenApiDoc(openapi::root()),
        "/openapi/v3/apis/certificates.k8s.io/v1" => {
            return Route::OpenApiDoc(openapi::group_version().clone());
        }
        CSRS => return Route::Collection,
        _ => {}
    }
    let Some(rest) = path.strip_prefix(CSRS).and_then(|r| r.strip_prefix('/')) else {
        return Route::NotFound;
    };
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        [name] if !name.is_empty() => Route::Item(name),
        [name, "approval"] if !name.is_empty() => Route::Approval(name),
        [name, "status"] if !name.is_empty() => Route::Status(name),
        _ => Route::NotFound,
    }
}

/// Answer one request; `peer` is the verified client certificate (DER).
pub async fn handle<B>(
    service: ApproverService,
    peer: Option<Arc<Vec<u8>>>,
    req: Request<B>,
) -> Response<Body>
where
    B: hyper::body::Body<Data = bytes::Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match respond(service, peer, req).await {
        Ok(r) => r,
        Err(e) => wire::error(&e),
    }
}

async fn respond<B>(
    service: ApproverService,
    peer: Option<Arc<Vec<u8>>>,
    req: Request<B>,
) -> Result<Response<Body>, KubeError>
where
    B: hyper::body::Body<Data = bytes::Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let route = route(&path);
    if let Route::Version = route {
        return Ok(wire::json(StatusCode::OK, &discovery::version()));
    }
    let method = parts.method.clone();
    let token_use = match (&route, &method) {
        (Route::Item(_), &Method::DELETE | &Method::PATCH) | (Route::Approval(_), &Method::PUT) => {
            TokenUse::Refused
        }
        _ => TokenUse::Allowed,
    };
    let cfg = service.shared().config.snapshot();
    let authorization = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let (id, token) = service
        .identify(
            &cfg,
            peer.as_deref().map(Vec::as_slice),
            authorization,
            token_use,
        )
        .map_err(|e| {
            let name = match &route {
                Route::Item(n) | Route::Approval(n) | Route::Status(n) => n,
                _ => "",
            };
            let resource = match &route {
                Route::Approval(_) => format!("{RESOURCE}/approval"),
                _ => RESOURCE.to_string(),
            };
            from_service(&e, &resource, name)
        })?;
    let limit = cfg.transport_max_message();
    let call = Call {
        service: &service,
        cfg: cfg.clone(),
        id,
        token,
        query: query(parts.uri.query()),
        headers: &parts.headers,
    };
    let get_only = |v: serde_json::Value| {
        if method == Method::GET {
            Ok(wire::json(StatusCode::OK, &v))
        } else {
            Err(KubeError::method_not_allowed(&method))
        }
    };
    let accept = parts
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if path.trim_end_matches('/') == "/apis"
        && method == Method::GET
        && discovery::wants_aggregated(accept)
    {
        let mut r = wire::json(StatusCode::OK, &discovery::aggregated());
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(discovery::AGGREGATED_V2),
        );
        return Ok(r);
    }
    match route {
        Route::Version => Ok(wire::json(StatusCode::OK, &discovery::version())),
        Route::Discovery(v) | Route::OpenApiDoc(v) => get_only(v),
        Route::NotFound => Err(KubeError::not_found_path()),
        Route::Collection => match method {
            Method::GET if truthy(call.query.get("watch")) => watch::watch(&call),
            Method::GET => call.list().await,
            Method::POST => {
                let body = wire::read_body(body, limit).await?;
                call.create(&body).await
            }
            m => Err(KubeError::method_not_allowed(&m)),
        },
        Route::Item(name) => match method {
            Method::GET => call.get(name).await,
            Method::DELETE => {
                let body = wire::read_body(body, limit).await?;
                call.delete(name, &body).await
            }
            Method::PATCH => {
                let body = wire::read_body(body, limit).await?;
                call.patch(name, &body).await
            }
            m => Err(KubeError::method_not_allowed(&m)),
        },
        Route::Approval(name) => match method {
            Method::GET => call.get(name).await,
            Method::PUT => {
                let body = wire::read_body(body, limit).await?;
                call.approval(name, &body).await
            }
            m => Err(KubeError::method_not_allowed(&m)),
        },
        Route::Status(name) => match method {
            Method::GET => call.get(name).await,
            m => Err(KubeError::method_not_allowed(&m)),
        },
        Route::SelfSubjectReview => match method {
            Method::POST => {
                // The request carries nothing the answer depends on (it may
                // be JSON or protobuf); it is read within the limit and dropped.
                wire::read_body(body, limit).await?;
                Ok(wire::json(
                    StatusCode::CREATED,
                    &review::self_subject_review(&call.id),
                ))
            }
            m => Err(KubeError::method_not_allowed(&m)),
        },
        Route::SelfSubjectAccessReview => match method {
            Method::POST => {
                let body = wire::read_body(body, limit).await?;
                let media = wire::media_type(&parts.headers);
                let answer =
                    review::self_subject_access_review(&call.cfg, &call.id, &media, &body)?;
                Ok(wire::json(StatusCode::CREATED, &answer))
            }
            m => Err(KubeError::method_not_allowed(&m)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode() {
        let q = query(Some(
            "fieldSelector=metadata.name%3Dx&watch=1&labelSelector=a+in+(b)",
        ));
        assert_eq!(q["fieldSelector"], "metadata.name=x");
        assert_eq!(q["labelSelector"], "a in (b)");
        assert!(truthy(q.get("watch")));
        assert!(!truthy(Some(&"false".to_string())));
        assert!(!truthy(None));
    }

    #[test]
    fn routes() {
        assert!(matches!(
            route("/apis/certificates.k8s.io/v1/certificatesigningrequests/x/approval"),
            Route::Approval("x")
        ));
        assert!(matches!(route(CSRS), Route::Collection));
        assert!(matches!(route("/api/v1/pods"), Route::NotFound));
        assert!(matches!(
            route("/apis/certificates.k8s.io/v1/certificatesigningrequests/x/y"),
            Route::NotFound
        ));
    }
}
