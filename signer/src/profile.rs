//! Signing profiles: what a signer name may issue.
//!
//! One [`Profile`] per signer name. The three Kubernetes built-in signers
//! carry exactly Kubernetes' rules and error texts; custom profiles carry
//! usage, subject and SAN rules from the config. This module only judges a
//! `VerifiedCsr` plus the requested usages; it never looks at evidence and
//! never builds a certificate. The approver may reuse [`Profile::check`].

use std::time::Duration;

use serde::Deserialize;

use crate::csr::VerifiedCsr;

pub use certsign_evidence::Usage;
pub use certsign_evidence::kubernetes::Builtin;

/// Validate `spec.usages` as Kubernetes' API does (required, known, unique).
pub fn parse_usages(usages: &[String]) -> Result<Vec<Usage>, ProfileError> {
    certsign_evidence::kubernetes::parse_usages(usages).map_err(ProfileError::Request)
}

/// A profile check failed. The message is the rule (Kubernetes' text for
/// the built-in signers).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProfileError {
    /// The request is malformed (Kubernetes API validation texts).
    #[error("{0}")]
    Request(String),
    /// A signer policy rule failed.
    #[error("{0}")]
    Policy(String),
}

/// How approval is proven for a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalMode {
    /// Signed admin ApprovalStatements (the default).
    #[default]
    Signed,
    /// Trust the allow-listed approver's word (Kubernetes-style automation).
    Approver,
}

/// Rules of a custom (non-built-in) profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomRules {
    /// Usages a request may ask for.
    pub allowed_usages: Vec<Usage>,
    /// Usages a request must ask for.
    pub required_usages: Vec<Usage>,
    /// DNS SANs must equal or end in `.`+ one of these; `None` = any name.
    pub allowed_dns_suffixes: Option<Vec<String>>,
    /// Whether IP / URI / email SANs are allowed.
    pub allow_ip_sans: bool,
    /// See above.
    pub allow_uri_sans: bool,
    /// See above.
    pub allow_email_sans: bool,
    /// The subject CN must start with this.
    pub common_name_prefix: Option<String>,
    /// When set, every subject O must be one of these.
    pub allowed_organizations: Option<Vec<String>>,
    /// No subject O may be one of these.
    pub forbidden_organizations: Vec<String>,
}

/// The rule set of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rules {
    /// Kubernetes' rules for a built-in signer.
    Builtin(Builtin),
    /// Rules from the config.
    Custom(CustomRules),
}

/// A validated signing profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The signer name this profile serves.
    pub signer_name: String,
    /// What the CSR may ask for.
    pub rules: Rules,
    /// How approval is proven.
    pub approval: ApprovalMode,
    /// Distinct admins required (approval = signed).
    pub required_approvals: usize,
    /// Groups whose members may approve.
    pub approver_groups: Vec<String>,
    /// Whether renewal proofs are accepted instead of approvals.
    pub allow_renewal: bool,
    /// How long a line of renewals may run after its last human approval
    /// (`None`: forever, only when configured as "none").
    pub renewal_horizon: Option<Duration>,
    /// CRL distribution point URL written into issued certificates.
    pub crl_distribution_point: Option<String>,
    /// Longest lifetime issued.
    pub max_lifetime: Duration,
    /// Lifetime when the request names none.
    pub default_lifetime: Duration,
}

/// Proof that a CSR and its usages passed a profile's rules. Only
/// [`Profile::check`] makes one, and `issue::prepare` requires it, so no
/// certificate is built from an unchecked request.
#[derive(Debug, Clone, Copy)]
pub struct Checked<'a> {
    csr: &'a VerifiedCsr,
    usages: &'a [Usage],
}

impl<'a> Checked<'a> {
    /// The checked request.
    pub fn csr(&self) -> &'a VerifiedCsr {
        self.csr
    }
    /// The checked usages.
    pub fn usages(&self) -> &'a [Usage] {
        self.usages
    }
}

fn policy(msg: impl Into<String>) -> ProfileError {
    ProfileError::Policy(msg.into())
}

impl Profile {
    /// Check a CSR and its requested usages against this profile.
    pub fn check<'a>(
        &self,
        csr: &'a VerifiedCsr,
        usages: &'a [Usage],
    ) -> Result<Checked<'a>, ProfileError> {
        use Usage::*;
        // Signer-wide rule, before any profile: never a CA-capable certificate.
        if let Some(u) = usages.iter().find(|u| matches!(u, CertSign | CrlSign)) {
            return Err(policy(format!(
                "usage {:?} is never issued: this signer issues only CA:FALSE certificates",
                u.as_str()
            )));
        }
        if csr.subject_der().len() <= 2 && csr.sans.is_empty() {
            return Err(policy(
                "the request has neither a subject nor a subjectAltName",
            ));
        }
        let cn = csr.common_name.as_deref().unwrap_or("");
        let orgs = &csr.organizations;
        let sans = &csr.sans;
        match &self.rules {
            Rules::Builtin(b) => {
                certsign_evidence::kubernetes::check_builtin(*b, cn, orgs, sans, usages)
                    .map_err(ProfileError::Policy)?;
            }
            Rules::Custom(r) => self.check_custom(r, csr, usages)?,
        }
        Ok(Checked { csr, usages })
    }

    fn check_custom(
        &self,
        r: &CustomRules,
        csr: &VerifiedCsr,
        usages: &[Usage],
    ) -> Result<(), ProfileError> {
        let name = &self.signer_name;
        if let Some(u) = usages.iter().find(|u| !r.allowed_usages.contains(u)) {
            return Err(policy(format!(
                "usage {:?} is not allowed by profile {name}",
                u.as_str()
            )));
        }
        if let Some(u) = r.required_usages.iter().find(|u| !usages.contains(u)) {
            return Err(policy(format!(
                "missing required usage for profile {name}: {}",
                u.as_str()
            )));
        }
        let cn = csr.common_name.as_deref().unwrap_or("");
        if let Some(p) = &r.common_name_prefix
            && !cn.starts_with(p.as_str())
        {
            {
                return Err(policy(format!(
                    "subject common name does not begin with {p}"
                )));
            }
        }
        for o in &csr.organizations {
            if r.forbidden_organizations.contains(o) {
                return Err(policy(format!(
                    "subject organization {o:?} is not allowed by profile {name}"
                )));
            }
            if r.allowed_organizations
                .as_ref()
                .is_some_and(|a| !a.contains(o))
            {
                return Err(policy(format!(
                    "subject organization {o:?} is not allowed by profile {name}"
                )));
            }
        }
        let sans = &csr.sans;
        if let Some(suffixes) = &r.allowed_dns_suffixes {
            let ok = |d: &str| {
                suffixes
                    .iter()
                    .any(|s| d == s || d.ends_with(&format!(".{s}")))
            };
            if let Some(d) = sans.dns.iter().find(|d| !ok(d)) {
                return Err(policy(format!(
                    "DNS subjectAltName {d:?} is outside the allowed suffixes {suffixes:?}"
                )));
            }
        }
        let checks = [
            (
                !r.allow_ip_sans && !sans.ips.is_empty(),
                "IP subjectAltNames are not allowed",
            ),
            (
                !r.allow_uri_sans && !sans.uris.is_empty(),
                "URI subjectAltNames are not allowed",
            ),
            (
                !r.allow_email_sans && !sans.emails.is_empty(),
                "Email subjectAltNames are not allowed",
            ),
        ];
        if let Some((_, msg)) = checks.iter().find(|(bad, _)| *bad) {
            return Err(policy(*msg));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn csr(cn: &str, orgs: &[&str], dns: &[&str], ip: bool) -> VerifiedCsr {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p =
            rcgen::CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        for (i, o) in orgs.iter().enumerate() {
            // rcgen's DN is a map; a second O needs a distinct key of the same OID.
            let ty = if i == 0 {
                rcgen::DnType::OrganizationName
            } else {
                rcgen::DnType::CustomDnType(vec![2, 5, 4, 10])
            };
            p.distinguished_name.push(ty, *o);
        }
        if ip {
            p.subject_alt_names
                .push(rcgen::SanType::IpAddress("10.0.0.1".parse().unwrap()));
        }
        VerifiedCsr::from_pem(p.serialize_request(&key).unwrap().pem().unwrap().as_bytes()).unwrap()
    }

    fn builtin(b: Builtin) -> Profile {
        Profile {
            signer_name: b.name().into(),
            rules: Rules::Builtin(b),
            approval: ApprovalMode::Signed,
            required_approvals: 1,
            approver_groups: vec!["system:masters".into()],
            allow_renewal: true,
            renewal_horizon: None,
            crl_distribution_point: None,
            max_lifetime: Duration::from_secs(3600),
            default_lifetime: Duration::from_secs(3600),
        }
    }

    fn err(p: &Profile, c: &VerifiedCsr, u: &[&str]) -> String {
        let u: Vec<String> = u.iter().map(|s| s.to_string()).collect();
        p.check(c, &parse_usages(&u).unwrap())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn kubernetes_builtin_texts() {
        use Builtin::*;
        let node = csr("system:node:n1", &["system:nodes"], &[], false);
        let p = builtin(KubeApiserverClientKubelet);
        assert!(
            p.check(&node, &[Usage::DigitalSignature, Usage::ClientAuth])
                .is_ok()
        );
        assert_eq!(
            err(&p, &node, &["client auth"]),
            "usages did not match [client auth digital signature key encipherment]"
        );
        assert_eq!(
            err(
                &p,
                &csr("system:node:n1", &["system:nodes"], &["n1"], false),
                &["client auth"]
            ),
            "DNS subjectAltNames are not allowed"
        );
        assert_eq!(
            err(
                &p,
                &csr("n1", &["system:nodes"], &[], false),
                &["client auth"]
            ),
            "subject common name does not begin with system:node:"
        );
        assert_eq!(
            err(
                &p,
                &csr("system:node:n1", &["system:nodes", "x"], &[], false),
                &["client auth"]
            ),
            "subject organization is not system:nodes"
        );
        let s = builtin(KubeletServing);
        assert_eq!(
            err(&s, &node, &["server auth"]),
            "DNS or IP subjectAltName is required"
        );
        let served = csr("system:node:n1", &["system:nodes"], &[], true);
        assert_eq!(
            err(&s, &served, &["server auth"]),
            "usages did not match [digital signature key encipherment server auth]"
        );
        assert!(
            s.check(
                &served,
                &[
                    Usage::KeyEncipherment,
                    Usage::DigitalSignature,
                    Usage::ServerAuth
                ]
            )
            .is_ok()
        );
        let c = builtin(KubeApiserverClient);
        let alice = csr("alice", &["dev"], &[], false);
        assert_eq!(
            err(&c, &alice, &["digital signature"]),
            "missing required usage for client certificate: client auth"
        );
        assert_eq!(
            err(&c, &alice, &["client auth", "cert sign"]),
            "usage \"cert sign\" is never issued: this signer issues only CA:FALSE certificates"
        );
        assert_eq!(
            err(
                &c,
                &csr("eve", &["dev", "system:masters"], &[], false),
                &["client auth"]
            ),
            "use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed"
        );
    }

    #[test]
    fn usages_are_validated_like_the_api() {
        let u = |v: &[&str]| {
            parse_usages(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(u(&[]), "spec.usages: Required value");
        assert_eq!(
            u(&["client auth", "nope"]),
            "spec.usages[1]: Unsupported value: \"nope\""
        );
        assert_eq!(
            u(&["client auth", "client auth"]),
            "spec.usages[1]: Duplicate value: \"client auth\""
        );
    }
}
