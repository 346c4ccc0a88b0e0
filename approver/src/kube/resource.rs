//! The `certificatesigningrequests` resource: list (JSON or Table, with
//! `limit`/`continue`, `labelSelector`, `fieldSelector` on `metadata.name`
//! and `spec.signerName`), get, create (`fieldValidation`), delete, and the
//! `approval` subresource (GET, and the PUT of `kubectl certificate
//! approve|deny`). Each handler calls the same service functions as the
//! gRPC face ([`crate::service::ApproverService`]), so authentication,
//! authorization, admission, limits and the store are one.
//!
//! This module must never take an identity from a body, never show a
//! caller a request it may not read, and never record an approval through
//! this face as signed evidence: approvals go through
//! [`Evidence::TrustedApprover`], which the recorder refuses for signer
//! names that need a signed approval.

use std::collections::HashMap;

use certsign_proto::v1::{
    CertificateSigningRequest as Stored, Decision, ListCertificateSigningRequestsRequest,
};
use http::{HeaderMap, Response, StatusCode};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, Status, StatusDetails};

use super::convert;
use super::errors::{KubeError, RESOURCE, from_service};
use super::table::{self, Include};
use super::wire::{self, Body, FieldValidation};
use crate::access;
use crate::authn::Caller;
use crate::config::{BootstrapToken, Config};
use crate::decide::Evidence;
use crate::decision;
use crate::service::{ApproverService, DryRun, Precondition};
use crate::status::ServiceError;

/// One authenticated call on the resource.
#[derive(Debug)]
pub struct Call<'a> {
    pub service: &'a ApproverService,
    pub cfg: std::sync::Arc<Config>,
    pub id: Caller,
    pub token: Option<BootstrapToken>,
    pub query: HashMap<String, String>,
    pub headers: &'a HeaderMap,
}

/// Whether the client asked for a Table (`as=Table` in Accept).
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next()
        .is_some_and(|first| first.split(';').any(|p| p.trim() == "as=Table"))
}

fn svc_err(e: &ServiceError, name: &str) -> KubeError {
    from_service(e, RESOURCE, name)
}

/// What `fieldSelector` asks for: a name and a signer name.
#[derive(Debug, Default)]
pub struct Fields {
    pub name: Option<String>,
    pub signer_name: Option<String>,
}

/// Parse `fieldSelector` (`metadata.name` and `spec.signerName`, `=` or
/// `==`); Kubernetes' text for any other field.
pub fn field_selector(s: Option<&str>) -> Result<Fields, KubeError> {
    let mut f = Fields::default();
    for term in s.unwrap_or("").split(',').filter(|t| !t.trim().is_empty()) {
        let (key, value) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .filter(|(k, _)| !k.ends_with('!'))
            .ok_or_else(|| {
                KubeError::bad_request(format!(
                    "invalid field selector {term:?}: only = and == are supported"
                ))
            })?;
        match key.trim() {
            "metadata.name" => f.name = Some(value.trim().to_string()),
            "spec.signerName" => f.signer_name = Some(value.trim().to_string()),
            other => {
                return Err(KubeError::bad_request(format!(
                    "field label not supported: {other}"
                )));
            }
        }
    }
    Ok(f)
}

impl Call<'_> {
    fn q(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    /// `dryRun`: absent or empty writes, `All` only checks; anything else
    /// is Kubernetes' validation error for the write's options (`kind`).
    fn dry_run(&self, kind: &str) -> Result<DryRun, KubeError> {
        match self.q("dryRun") {
            None | Some("") => Ok(DryRun::No),
            Some("All") => Ok(DryRun::All),
            Some(other) => Err(invalid_dry_run(kind, other)),
        }
    }

    fn respond_object(&self, code: StatusCode, c: &Stored) -> Result<Response<Body>, KubeError> {
        if wants_table(self.headers) {
            let include =
                Include::parse(self.q("includeObject")).map_err(KubeError::bad_request)?;
            let rv = c
                .metadata
                .as_ref()
                .map(|m| m.resource_version.clone())
                .filter(|s| !s.is_empty());
            let meta = ListMeta {
                resource_version: rv,
                ..Default::default()
            };
            let t = table::table(std::slice::from_ref(c), meta, include, true);
            return Ok(wire::json(code, &t));
        }
        Ok(wire::json(code, &convert::to_kube(c)))
    }

    /// `GET .../certificatesigningrequests` (not a watch).
    pub async fn list(&self) -> Result<Response<Body>, KubeError> {
        let fields = field_selector(self.q("fieldSelector"))?;
        let include = Include::parse(self.q("includeObject")).map_err(KubeError::bad_request)?;
        let limit = match self.q("limit") {
            None | Some("") => 0,
            Some(l) => l
                .parse::<i64>()
                .map_err(|_| KubeError::bad_request(format!("limit: {l:?} is not an integer")))?
                .clamp(0, i64::from(i32::MAX)) as i32,
        };
        let req = ListCertificateSigningRequestsRequest {
            signer_name: fields.signer_name.clone().unwrap_or_default(),
            limit,
            continue_token: self.q("continue").unwrap_or("").to_string(),
            label_selector: self.q("labelSelector").unwrap_or("").to_string(),
            ..Default::default()
        };
        let (items, continue_token, mut rv) = match &fields.name {
            // One name: the object if the caller may read it (and it
            // matches the rest of the selection), else nothing.
            Some(name) => {
                let store = &self.service.shared().store;
                let items = match access::readable(store, &self.cfg, &self.id, name).await {
                    Ok(c)
                        if fields.signer_name.as_ref().is_none_or(|s| {
                            c.spec.as_ref().is_some_and(|p| &p.signer_name == s)
                        }) =>
                    {
                        vec![c]
                    }
                    _ => Vec::new(),
                };
                (items, String::new(), String::new())
            }
            None => {
                let page = self
                    .service
                    .list_csrs(&self.cfg, &self.id, &req)
                    .await
                    .map_err(|e| svc_err(&e, ""))?;
                (page.items, page.continue_token, page.resource_version)
            }
        };
        if rv.is_empty() {
            rv = self
                .service
                .shared()
                .store
                .latest_resource_version()
                .await
                .map_err(|e| svc_err(&e.into(), ""))?
                .to_string();
        }
        let meta = ListMeta {
            resource_version: Some(rv),
            continue_: (!continue_token.is_empty()).then_some(continue_token),
            ..Default::default()
        };
        if wants_table(self.headers) {
            return Ok(wire::json(
                StatusCode::OK,
                &table::table(&items, meta, include, true),
            ));
        }
        let list = serde_json::json!({
            "kind": "CertificateSigningRequestList",
            "apiVersion": "certificates.k8s.io/v1",
            "metadata": meta,
            "items": items.iter().map(convert::to_kube).collect::<Vec<_>>(),
        });
        Ok(wire::json(StatusCode::OK, &list))
    }

    /// `GET .../certificatesigningrequests/NAME` (and `/approval`, `/status`).
    pub async fn get(&self, name: &str) -> Result<Response<Body>, KubeError> {
        let c = access::readable(&self.service.shared().store, &self.cfg, &self.id, name)
            .await
            .map_err(|e| svc_err(&e, name))?;
        self.respond_object(StatusCode::OK, &c)
    }

    /// `POST .../certificatesigningrequests`.
    pub async fn create(&self, body: &[u8]) -> Result<Response<Body>, KubeError> {
        let validation = FieldValidation::parse(self.q("fieldValidation"))?;
        let (object, warnings) =
            wire::decode_object(&wire::media_type(self.headers), body, validation)?;
        let name = object.metadata.name.clone().unwrap_or_default();
        let dry_run = self.dry_run("CreateOptions")?;
        let created = self
            .service
            .create_csr(
                &self.cfg,
                self.id.clone(),
                self.token.clone(),
                convert::create_request(&object),
                dry_run,
            )
            .await
            .map_err(|e| svc_err(&e, &name))?;
        let mut r = self.respond_object(StatusCode::CREATED, &created)?;
        wire::warn(&mut r, &warnings);
        Ok(r)
    }

    /// `DELETE .../certificatesigningrequests/NAME`: a success Status.
    /// `DeleteOptions` come in the body (kubectl, client-go) or the query.
    pub async fn delete(&self, name: &str, body: &[u8]) -> Result<Response<Body>, KubeError> {
        let options = wire::decode_delete_options(&wire::media_type(self.headers), body)?;
        let mut dry_run = self.dry_run("DeleteOptions")?;
        match options.dry_run.as_deref().unwrap_or_default() {
            [] => {}
            [all] if all == "All" => dry_run = DryRun::All,
            other => return Err(invalid_dry_run("DeleteOptions", &other.join(","))),
        }
        let precondition = options
            .preconditions
            .map(|p| Precondition {
                uid: p.uid,
                resource_version: p.resource_version,
            })
            .unwrap_or_default();
        let deleted = self
            .service
            .delete_csr(&self.cfg, &self.id, name, dry_run, &precondition)
            .await
            .map_err(|e| svc_err(&e, name))?;
        let uid = deleted.metadata.map(|m| m.uid).filter(|u| !u.is_empty());
        let status = Status {
            status: Some("Success".into()),
            details: Some(StatusDetails {
                name: Some(name.to_string()),
                group: Some(super::errors::GROUP.into()),
                kind: Some(RESOURCE.into()),
                uid,
                ..Default::default()
            }),
            ..Default::default()
        };
        Ok(wire::json(StatusCode::OK, &status))
    }

    /// `PUT .../certificatesigningrequests/NAME/approval`: the body is the
    /// object with the decision appended as a condition (kubectl sends it
    /// as Kubernetes protobuf). A new Approved or Denied condition is
    /// recorded as this caller's decision; anything else leaves the object
    /// as it is.
    pub async fn approval(&self, name: &str, body: &[u8]) -> Result<Response<Body>, KubeError> {
        if self.dry_run("UpdateOptions")? == DryRun::All {
            // Whether the decision would be accepted is only known by
            // recording it; refused rather than answered with a guess.
            return Err(KubeError::bad_request(
                "dryRun is not supported for approval: approve or deny without it",
            ));
        }
        let resource = format!("{RESOURCE}/approval");
        let err = |e: &ServiceError| from_service(e, &resource, name);
        let validation = FieldValidation::parse(self.q("fieldValidation"))?;
        let (object, warnings) =
            wire::decode_object(&wire::media_type(self.headers), body, validation)?;
        if object.metadata.name.as_deref().is_some_and(|n| n != name) {
            return Err(KubeError::bad_request(format!(
                "the name of the object ({:?}) does not match the name on the URL ({name:?})",
                object.metadata.name.unwrap_or_default()
            )));
        }
        let current = access::readable(&self.service.shared().store, &self.cfg, &self.id, name)
            .await
            .map_err(|e| err(&e))?;
        let stored_rv = current
            .metadata
            .as_ref()
            .map(|m| m.resource_version.clone())
            .unwrap_or_default();
        if let Some(rv) = object.metadata.resource_version.as_deref()
            && !rv.is_empty()
            && rv != stored_rv
        {
            return Err(KubeError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {RESOURCE}.{} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                    super::errors::GROUP
                ),
            )
            .named(name));
        }
        let wanted = new_decision(&object, &current)?;
        let updated = match wanted {
            None => current,
            Some((decision, reason, message)) => self
                .service
                .decide_csr(
                    &self.cfg,
                    self.id.clone(),
                    name,
                    decision,
                    Evidence::TrustedApprover,
                    reason,
                    message,
                )
                .await
                .inspect(|_| {
                    let counted = match decision {
                        Decision::Approve => "approve",
                        _ => "deny",
                    };
                    self.service.shared().metrics.decision(counted, "admin");
                })
                .map_err(|e| err(&e))?,
        };
        let mut r = wire::json(StatusCode::OK, &convert::to_kube(&updated));
        wire::warn(&mut r, &warnings);
        Ok(r)
    }
}

impl Call<'_> {
    /// `PATCH .../certificatesigningrequests/NAME` (what `kubectl apply`
    /// sends for a changed manifest): the patch is applied to the stored
    /// object; as in Kubernetes, only metadata (labels, annotations) of a
    /// request can change: its spec is immutable and its status is not
    /// written through the main resource, so changes there are kept out.
    pub async fn patch(&self, name: &str, body: &[u8]) -> Result<Response<Body>, KubeError> {
        let dry_run = self.dry_run("PatchOptions")?;
        let validation = FieldValidation::parse(self.q("fieldValidation"))?;
        let patch = wire::decode_patch(&wire::media_type(self.headers), body)?;
        let store = &self.service.shared().store;
        let current = access::readable(store, &self.cfg, &self.id, name)
            .await
            .map_err(|e| svc_err(&e, name))?;
        let mut doc = serde_json::to_value(convert::to_kube(&current)).unwrap_or_default();
        wire::merge_patch(&mut doc, &patch);
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        let (patched, warnings) = wire::decode_object("application/json", &bytes, validation)?;
        if patched.metadata.name.as_deref() != Some(name) {
            return Err(KubeError::bad_request("metadata.name: may not be changed"));
        }
        let to_map =
            |b: Option<std::collections::BTreeMap<String, String>>| -> HashMap<String, String> {
                b.unwrap_or_default().into_iter().collect()
            };
        let labels = to_map(patched.metadata.labels);
        let annotations = to_map(patched.metadata.annotations);
        let meta = current.metadata.clone().unwrap_or_default();
        let updated = if meta.labels == labels && meta.annotations == annotations {
            current
        } else {
            let errors = crate::validation::validate_metadata(&labels, &annotations);
            if !errors.is_empty() {
                let e = crate::validation::Invalid {
                    name: name.to_string(),
                    errors,
                };
                return Err(svc_err(&e.into(), name));
            }
            if dry_run == DryRun::All {
                let mut would = current;
                let m = would.metadata.get_or_insert_with(Default::default);
                m.labels = labels;
                m.annotations = annotations;
                let mut r = wire::json(StatusCode::OK, &convert::to_kube(&would));
                wire::warn(&mut r, &warnings);
                return Ok(r);
            }
            let updated = store
                .update(name, move |c: &mut Stored| {
                    let m = c.metadata.get_or_insert_with(Default::default);
                    m.labels = labels;
                    m.annotations = annotations;
                    Ok::<bool, ServiceError>(true)
                })
                .await
                .map_err(|e| svc_err(&e.into(), name))?;
            tracing::info!(%name, by = %self.id.username, "updated the metadata of a certificate signing request");
            self.service.shared().hub.notify();
            updated
        };
        let mut r = wire::json(StatusCode::OK, &convert::to_kube(&updated));
        wire::warn(&mut r, &warnings);
        Ok(r)
    }
}

/// Kubernetes' validation error for a `dryRun` other than `All`.
fn invalid_dry_run(kind: &str, value: &str) -> KubeError {
    KubeError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!(
            "{kind}.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: {value:?}: supported values: \"All\""
        ),
    )
}

/// The decision a PUT on `/approval` adds: an Approved or Denied condition
/// (status True) the stored object does not have yet. Both at once is
/// Kubernetes' validation error.
fn new_decision(
    body: &CertificateSigningRequest,
    current: &Stored,
) -> Result<Option<(Decision, String, String)>, KubeError> {
    let conditions = body
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let wants = |ty: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == ty && c.status == "True")
    };
    let (approved, denied) = (wants(decision::APPROVED), wants(decision::DENIED));
    if approved.is_some() && denied.is_some() {
        let name = body.metadata.name.clone().unwrap_or_default();
        let e = crate::validation::Invalid {
            name,
            errors: vec![crate::validation::FieldError::Invalid {
                field: "status.conditions".into(),
                value: crate::validation::Value::Str("Approved".into()),
                detail: "Approved and Denied conditions are mutually exclusive".into(),
            }],
        };
        return Err(from_service(&e.into(), RESOURCE, ""));
    }
    let pick = |c: &k8s_openapi::api::certificates::v1::CertificateSigningRequestCondition,
                d: Decision,
                ty: &str| {
        decision::condition(current, ty).is_none().then(|| {
            (
                d,
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
    };
    Ok(match (approved, denied) {
        (Some(c), _) => pick(c, Decision::Approve, decision::APPROVED),
        (_, Some(c)) => pick(c, Decision::Deny, decision::DENIED),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_selectors() {
        let f = field_selector(Some("metadata.name=a,spec.signerName==x/y")).unwrap_or_default();
        assert_eq!(f.name.as_deref(), Some("a"));
        assert_eq!(f.signer_name.as_deref(), Some("x/y"));
        let e = field_selector(Some("spec.foo=1"))
            .err()
            .map(|e| e.status.message);
        assert_eq!(e, Some(Some("field label not supported: spec.foo".into())));
        assert!(field_selector(Some("metadata.name!=a")).is_err());
    }

    #[test]
    fn table_accept() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
            ),
        );
        assert!(wants_table(&h));
        h.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/json"),
        );
        assert!(!wants_table(&h));
    }
}
