//! Kubernetes' key usage vocabulary (certificates.k8s.io/v1 KeyUsage): the
//! 23 words, written once, and what each means in a certificate.
//!
//! Every component reads usage words through this table: the signer's
//! profiles, the approver's create validation, certctl's `--usages` and its
//! display of a certificate. It must never hold policy (which usages a
//! signer allows) or error texts: callers keep Kubernetes' own messages.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ExtendedKeyUsage;

/// One Kubernetes key usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[allow(missing_docs)] // Each variant is the Kubernetes string of the same name.
pub enum Usage {
    Signing,
    DigitalSignature,
    ContentCommitment,
    KeyEncipherment,
    KeyAgreement,
    DataEncipherment,
    CertSign,
    CrlSign,
    EncipherOnly,
    DecipherOnly,
    Any,
    ServerAuth,
    ClientAuth,
    CodeSigning,
    EmailProtection,
    SMime,
    IpsecEndSystem,
    IpsecTunnel,
    IpsecUser,
    Timestamping,
    OcspSigning,
    MicrosoftSgc,
    NetscapeSgc,
}

/// The table: every word with its usage, in Kubernetes' declaration order.
const TABLE: [(&str, Usage); 23] = [
    ("signing", Usage::Signing),
    ("digital signature", Usage::DigitalSignature),
    ("content commitment", Usage::ContentCommitment),
    ("key encipherment", Usage::KeyEncipherment),
    ("key agreement", Usage::KeyAgreement),
    ("data encipherment", Usage::DataEncipherment),
    ("cert sign", Usage::CertSign),
    ("crl sign", Usage::CrlSign),
    ("encipher only", Usage::EncipherOnly),
    ("decipher only", Usage::DecipherOnly),
    ("any", Usage::Any),
    ("server auth", Usage::ServerAuth),
    ("client auth", Usage::ClientAuth),
    ("code signing", Usage::CodeSigning),
    ("email protection", Usage::EmailProtection),
    ("s/mime", Usage::SMime),
    ("ipsec end system", Usage::IpsecEndSystem),
    ("ipsec tunnel", Usage::IpsecTunnel),
    ("ipsec user", Usage::IpsecUser),
    ("timestamping", Usage::Timestamping),
    ("ocsp signing", Usage::OcspSigning),
    ("microsoft sgc", Usage::MicrosoftSgc),
    ("netscape sgc", Usage::NetscapeSgc),
];

/// The 23 words in Kubernetes' declaration order.
pub const NAMES: [&str; 23] = {
    let mut out = [""; 23];
    let mut i = 0;
    while i < TABLE.len() {
        out[i] = TABLE[i].0;
        i += 1;
    }
    out
};

/// The 23 words sorted, as Kubernetes' `sets.List()` lists them in
/// "supported values" messages.
pub fn sorted_names() -> Vec<&'static str> {
    let mut v = NAMES.to_vec();
    v.sort_unstable();
    v
}

impl Usage {
    /// Parse a Kubernetes usage word.
    pub fn parse(s: &str) -> Option<Self> {
        TABLE.iter().find(|(n, _)| *n == s).map(|(_, u)| *u)
    }

    /// The Kubernetes word.
    pub fn as_str(self) -> &'static str {
        TABLE
            .iter()
            .find(|(_, u)| *u == self)
            .map_or("", |(n, _)| n)
    }

    /// Whether a certificate's extendedKeyUsage grants this usage; `None`
    /// for the keyUsage words, which no EKU grants. The ipsec and SGC
    /// purposes count as absent (x509-parser reports no flag for them).
    pub fn in_eku(self, e: &ExtendedKeyUsage<'_>) -> Option<bool> {
        use Usage::*;
        Some(match self {
            Any => e.any,
            ServerAuth => e.server_auth,
            ClientAuth => e.client_auth,
            CodeSigning => e.code_signing,
            EmailProtection | SMime => e.email_protection,
            Timestamping => e.time_stamping,
            OcspSigning => e.ocsp_signing,
            IpsecEndSystem | IpsecTunnel | IpsecUser | MicrosoftSgc | NetscapeSgc => false,
            _ => return None,
        })
    }

    /// The usages a certificate carries: its keyUsage bits, then its
    /// extended key usages, one word each (`digital signature`, not
    /// `signing`; `email protection`, not `s/mime`).
    pub fn of_certificate(cert: &X509Certificate<'_>) -> Vec<Self> {
        use Usage::*;
        let mut out = Vec::new();
        if let Ok(Some(ku)) = cert.key_usage() {
            let ku = &ku.value;
            let bits = [
                (ku.digital_signature(), DigitalSignature),
                (ku.non_repudiation(), ContentCommitment),
                (ku.key_encipherment(), KeyEncipherment),
                (ku.key_agreement(), KeyAgreement),
                (ku.data_encipherment(), DataEncipherment),
                (ku.key_cert_sign(), CertSign),
                (ku.crl_sign(), CrlSign),
                (ku.encipher_only(), EncipherOnly),
                (ku.decipher_only(), DecipherOnly),
            ];
            out.extend(bits.iter().filter(|(set, _)| *set).map(|(_, u)| *u));
        }
        if let Ok(Some(eku)) = cert.extended_key_usage() {
            let eku = &eku.value;
            out.extend(
                [
                    Any,
                    ServerAuth,
                    ClientAuth,
                    CodeSigning,
                    EmailProtection,
                    Timestamping,
                    OcspSigning,
                ]
                .into_iter()
                .filter(|u| u.in_eku(eku) == Some(true)),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_round_trips_and_sorted_order_is_kubernetes() {
        for n in NAMES {
            assert_eq!(Usage::parse(n).map(Usage::as_str), Some(n));
        }
        assert_eq!(Usage::parse("clientauth"), None);
        let sorted = sorted_names();
        assert_eq!(sorted[..3], ["any", "cert sign", "client auth"]);
        assert_eq!(sorted[22], "timestamping");
    }
}
