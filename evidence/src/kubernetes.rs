//! Kubernetes' three built-in signers and their rules, with Kubernetes' exact
//! texts (reference/kubernetes-csr-api.md): the admission plugin
//! `CertificateSubjectRestriction` and the signer controllers' checks.
//!
//! Pure judgments over facts read from an already verified request; this
//! module never parses a request, never looks at evidence and never decides
//! anything for a custom profile. The signer applies it for every built-in
//! profile; anything else may reuse it to refuse early with the same text.

use crate::cert::Sans;
use crate::usage::Usage;

/// The Kubernetes built-in signers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum Builtin {
    /// `kubernetes.io/kube-apiserver-client`
    #[serde(rename = "kubernetes.io/kube-apiserver-client")]
    KubeApiserverClient,
    /// `kubernetes.io/kube-apiserver-client-kubelet`
    #[serde(rename = "kubernetes.io/kube-apiserver-client-kubelet")]
    KubeApiserverClientKubelet,
    /// `kubernetes.io/kubelet-serving`
    #[serde(rename = "kubernetes.io/kubelet-serving")]
    KubeletServing,
}

impl Builtin {
    /// The signer name.
    pub fn name(self) -> &'static str {
        match self {
            Self::KubeApiserverClient => "kubernetes.io/kube-apiserver-client",
            Self::KubeApiserverClientKubelet => "kubernetes.io/kube-apiserver-client-kubelet",
            Self::KubeletServing => "kubernetes.io/kubelet-serving",
        }
    }
    /// All three.
    pub const ALL: [Builtin; 3] = [
        Self::KubeApiserverClient,
        Self::KubeApiserverClientKubelet,
        Self::KubeletServing,
    ];
}

/// Node identities' common-name prefix.
const NODE_PREFIX: &str = "system:node:";

/// Validate `spec.usages` as Kubernetes' API does (required, known, unique),
/// with its field error texts.
pub fn parse_usages(usages: &[String]) -> Result<Vec<Usage>, String> {
    if usages.is_empty() {
        return Err("spec.usages: Required value".into());
    }
    let mut out = Vec::with_capacity(usages.len());
    for (i, s) in usages.iter().enumerate() {
        let u =
            Usage::parse(s).ok_or_else(|| format!("spec.usages[{i}]: Unsupported value: {s:?}"))?;
        if out.contains(&u) {
            return Err(format!("spec.usages[{i}]: Duplicate value: {s:?}"));
        }
        out.push(u);
    }
    Ok(out)
}

fn set_eq(a: &[Usage], b: &[Usage]) -> bool {
    a.iter().all(|u| b.contains(u)) && b.iter().all(|u| a.contains(u))
}

/// The first failing rule of a built-in signer, as Kubernetes words it.
pub fn check_builtin(
    signer: Builtin,
    cn: &str,
    orgs: &[String],
    sans: &Sans,
    usages: &[Usage],
) -> Result<(), String> {
    use Usage::*;
    let fail = |msg: &str| Err(msg.to_owned());
    match signer {
        Builtin::KubeApiserverClient => {
            // Admission plugin CertificateSubjectRestriction, then signer policy.
            if orgs.iter().any(|o| o == "system:masters") {
                return fail(
                    "use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed",
                );
            }
            if let Some(u) = usages
                .iter()
                .find(|u| !matches!(u, DigitalSignature | KeyEncipherment | ClientAuth))
            {
                return Err(format!(
                    "invalid usage for client certificate: {}",
                    u.as_str()
                ));
            }
            if !usages.contains(&ClientAuth) {
                return fail("missing required usage for client certificate: client auth");
            }
        }
        Builtin::KubeApiserverClientKubelet => {
            if orgs != ["system:nodes"] {
                return fail("subject organization is not system:nodes");
            }
            let checks = [
                (!sans.dns.is_empty(), "DNS subjectAltNames are not allowed"),
                (
                    !sans.emails.is_empty(),
                    "Email subjectAltNames are not allowed",
                ),
                (!sans.ips.is_empty(), "IP subjectAltNames are not allowed"),
                (!sans.uris.is_empty(), "URI subjectAltNames are not allowed"),
                (
                    !cn.starts_with(NODE_PREFIX),
                    "subject common name does not begin with system:node:",
                ),
            ];
            if let Some((_, msg)) = checks.iter().find(|(bad, _)| *bad) {
                return fail(msg);
            }
            if !set_eq(usages, &[DigitalSignature, KeyEncipherment, ClientAuth])
                && !set_eq(usages, &[DigitalSignature, ClientAuth])
            {
                return fail(
                    "usages did not match [client auth digital signature key encipherment]",
                );
            }
        }
        Builtin::KubeletServing => {
            if orgs != ["system:nodes"] {
                return fail("subject organization is not system:nodes");
            }
            let checks = [
                (
                    sans.dns.is_empty() && sans.ips.is_empty(),
                    "DNS or IP subjectAltName is required",
                ),
                (
                    !sans.emails.is_empty(),
                    "Email subjectAltNames are not allowed",
                ),
                (!sans.uris.is_empty(), "URI subjectAltNames are not allowed"),
                (
                    !set_eq(usages, &[DigitalSignature, KeyEncipherment, ServerAuth])
                        && !set_eq(usages, &[DigitalSignature, ServerAuth]),
                    "usages did not match [digital signature key encipherment server auth]",
                ),
                (
                    !cn.starts_with(NODE_PREFIX),
                    "subject common name does not begin with system:node:",
                ),
            ];
            if let Some((_, msg)) = checks.iter().find(|(bad, _)| *bad) {
                return fail(msg);
            }
        }
    }
    Ok(())
}
