//! Who is calling: a verified client certificate (CN = username, O values =
//! groups, plus `system:authenticated`) or, for creating a request, a
//! bootstrap token (`authorization: Bearer <id>.<secret>`, identity
//! `system:bootstrap:<id>` in `system:bootstrappers`).
//!
//! The TLS layer has already verified the chain to the client CA (client
//! auth is optional there so newcomers with a token can connect). This
//! module must never take an identity from a request body and must fail
//! closed: anything unparseable is unauthenticated.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use certsign_evidence::{Identity, sha256};
use ring::digest;
use x509_parser::prelude::*;

use crate::config::{BootstrapToken, is_token_id, is_token_secret};

/// Group every authenticated caller is in, as in Kubernetes.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// Group of bootstrap-token callers.
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";

/// How the caller proved who it is.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A client certificate that chains to the client CA (DER of the leaf).
    Certificate(Vec<u8>),
    /// A bootstrap token, by id.
    BootstrapToken(String),
}

/// An authenticated caller: who (the one [`Identity`] type of certsign,
/// with `system:authenticated` among the groups) and how it proved it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Identity,
    pub credential: Credential,
}

/// `caller.username` and `caller.groups` read the identity.
impl std::ops::Deref for Caller {
    type Target = Identity;
    fn deref(&self) -> &Identity {
        &self.identity
    }
}

impl Caller {
    /// The client certificate, if the caller used one.
    pub fn certificate(&self) -> Option<&[u8]> {
        match &self.credential {
            Credential::Certificate(der) => Some(der),
            Credential::BootstrapToken(_) => None,
        }
    }

    /// The bootstrap token id, if the caller used one.
    pub fn token_id(&self) -> Option<&str> {
        match &self.credential {
            Credential::BootstrapToken(id) => Some(id),
            Credential::Certificate(_) => None,
        }
    }
}

/// Why a caller is not authenticated. Messages never echo a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthnError {
    #[error("a client certificate or a bootstrap token is required")]
    Missing,
    #[error("client certificate has no subject common name")]
    NoCommonName,
    #[error("client certificate could not be parsed")]
    BadCertificate,
    #[error("malformed authorization header (expected \"Bearer <id>.<secret>\")")]
    MalformedToken,
    #[error("invalid bootstrap token")]
    InvalidToken,
    #[error("bootstrap token {0:?} has expired")]
    ExpiredToken(String),
    #[error("bootstrap tokens may only create certificate signing requests or read their own")]
    TokenNotAllowed,
}

/// Identity from a verified client certificate (leaf DER).
pub fn from_certificate(der: &[u8]) -> Result<Caller, AuthnError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| AuthnError::BadCertificate)?;
    let subject = cert.subject();
    let username = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .filter(|s| !s.is_empty())
        .ok_or(AuthnError::NoCommonName)?
        .to_string();
    let mut groups: Vec<String> = Vec::new();
    for o in subject.iter_organization() {
        let o = o.as_str().map_err(|_| AuthnError::BadCertificate)?;
        if !groups.iter().any(|g| g == o) {
            groups.push(o.to_string());
        }
    }
    if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
        groups.push(AUTHENTICATED_GROUP.to_string());
    }
    Ok(Caller {
        identity: Identity { username, groups },
        credential: Credential::Certificate(der.to_vec()),
    })
}

/// Identities of client certificates already seen: SHA-256 of the leaf DER
/// → (username, groups). A caller presents the same certificate on every
/// call, and parsing it per call cost ~1.5 % of the approver's CPU under
/// load. The identity is a function of the certificate's bytes alone
/// ([`from_certificate`]), so the same bytes always give the same identity;
/// whether the certificate is trusted is decided by TLS at the handshake,
/// before any call, and is not remembered here. Only successes are
/// remembered.
#[derive(Debug, Default)]
pub struct CertificateIdentities {
    seen: Mutex<HashMap<[u8; 32], Remembered>>,
}

/// A remembered identity.
type Remembered = Identity;

/// Certificates remembered at most (then the memory starts over).
const IDENTITIES_MAX: usize = 4096;

impl CertificateIdentities {
    /// [`from_certificate`], answered from memory for a certificate seen before.
    pub fn identify(&self, der: &[u8]) -> Result<Caller, AuthnError> {
        let key = sha256(der);
        if let Some(identity) = self.seen.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(Caller {
                identity,
                credential: Credential::Certificate(der.to_vec()),
            });
        }
        let id = from_certificate(der)?;
        if let Ok(mut m) = self.seen.lock() {
            if m.len() >= IDENTITIES_MAX {
                m.clear();
            }
            m.insert(key, id.identity.clone());
        }
        Ok(id)
    }
}

/// Identity from an `authorization` header value, checked against the
/// configured tokens (hash compared in constant time, expiry checked).
/// The use limit is counted by the store when a request is created.
pub fn from_bearer(
    header: &str,
    tokens: &[BootstrapToken],
    now: SystemTime,
) -> Result<(Caller, BootstrapToken), AuthnError> {
    let value = header
        .strip_prefix("Bearer ")
        .ok_or(AuthnError::MalformedToken)?
        .trim();
    let (id, secret) = value.split_once('.').ok_or(AuthnError::MalformedToken)?;
    if !is_token_id(id) || !is_token_secret(secret) {
        return Err(AuthnError::MalformedToken);
    }
    let token = tokens
        .iter()
        .find(|t| t.id == id)
        .ok_or(AuthnError::InvalidToken)?;
    let hash = digest::digest(&digest::SHA256, secret.as_bytes());
    // Constant-time comparison: the secret must not leak through timing.
    let mut diff = 0u8;
    for (a, b) in hash.as_ref().iter().zip(token.secret_sha256.iter()) {
        diff |= a ^ b;
    }
    if diff != 0 {
        return Err(AuthnError::InvalidToken);
    }
    if now >= token.expires {
        return Err(AuthnError::ExpiredToken(id.to_string()));
    }
    Ok((
        Caller {
            identity: Identity {
                username: format!("system:bootstrap:{id}"),
                groups: vec![
                    BOOTSTRAPPERS_GROUP.to_string(),
                    AUTHENTICATED_GROUP.to_string(),
                ],
            },
            credential: Credential::BootstrapToken(id.to_string()),
        },
        token.clone(),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn token() -> BootstrapToken {
        let h = digest::digest(&digest::SHA256, b"0123456789abcdef");
        BootstrapToken {
            id: "abcdef".into(),
            secret_sha256: h.as_ref().try_into().unwrap(),
            expires: SystemTime::now() + Duration::from_secs(3600),
            signer_names: vec!["example.com/x".into()],
            max_uses: 1,
        }
    }

    #[test]
    fn bearer_tokens() {
        let t = vec![token()];
        let now = SystemTime::now();
        let (id, _) = from_bearer("Bearer abcdef.0123456789abcdef", &t, now).unwrap();
        assert_eq!(id.username, "system:bootstrap:abcdef");
        assert_eq!(id.groups[0], "system:bootstrappers");
        assert_eq!(
            from_bearer("Bearer abcdef.0123456789abcdee", &t, now).unwrap_err(),
            AuthnError::InvalidToken
        );
        assert_eq!(
            from_bearer("Bearer zzzzzz.0123456789abcdef", &t, now).unwrap_err(),
            AuthnError::InvalidToken
        );
        assert_eq!(
            from_bearer("Basic abc", &t, now).unwrap_err(),
            AuthnError::MalformedToken
        );
        assert!(matches!(
            from_bearer(
                "Bearer abcdef.0123456789abcdef",
                &t,
                now + Duration::from_secs(7200)
            )
            .unwrap_err(),
            AuthnError::ExpiredToken(_)
        ));
    }

    #[test]
    fn certificate_identity() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "bob");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        let cert = p.self_signed(&key).unwrap();
        let id = from_certificate(cert.der()).unwrap();
        assert_eq!(id.username, "bob");
        assert_eq!(id.groups, vec!["system:masters", "system:authenticated"]);
    }

    fn cert_der(cn: &str, org: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        if !cn.is_empty() {
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        }
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, org);
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn remembered_identities_belong_to_their_own_certificate() {
        let ids = CertificateIdentities::default();
        let (bob, eve) = (cert_der("bob", "system:masters"), cert_der("eve", "team"));
        for _ in 0..2 {
            let b = ids.identify(&bob).unwrap();
            assert_eq!(b.username, "bob");
            assert_eq!(b.groups, vec!["system:masters", "system:authenticated"]);
            assert_eq!(b.certificate(), Some(bob.as_slice()));
            let e = ids.identify(&eve).unwrap();
            assert_eq!(e.username, "eve");
            assert_eq!(e.groups, vec!["team", "system:authenticated"]);
            assert_eq!(e.certificate(), Some(eve.as_slice()));
        }
        // A refusal is decided afresh each time, never remembered as someone.
        let nameless = cert_der("", "team");
        for _ in 0..2 {
            assert_eq!(
                ids.identify(&nameless).unwrap_err(),
                AuthnError::NoCommonName
            );
        }
    }
}
