//! Kubernetes' key usage vocabulary (certificates.k8s.io/v1 KeyUsage): the
//! 23 words, written once, and what each means in a certificate.
//!
//! Every component reads usage words through this table: the signer's
//! profiles, the approver's create validation, certctl's `--usages` and its
//! display of a certificate. It must never hold policy (which usages a
//! signer allows) or error texts: callers keep Kubernetes' own messages.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ExtendedKeyUsage;

/// Defines [`Usage`], [`NAMES`], `parse` and `as_str` from one list, so
/// each word is written once.
macro_rules! usages {
    ($($word:literal => $usage:ident,)*) => {
        /// One Kubernetes key usage.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[allow(missing_docs)] // Each variant is the Kubernetes word of the same name.
        pub enum Usage { $($usage,)* }

        /// The 23 words in Kubernetes' declaration order.
        pub const NAMES: [&str; 23] = [$($word,)*];

        impl Usage {
            /// Parse a Kubernetes usage word.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($word => Some(Self::$usage),)*
                    _ => None,
                }
            }

            /// The Kubernetes word.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$usage => $word,)*
                }
            }
        }
    };
}

// The table, in Kubernetes' declaration order.
usages! {
    "signing" => Signing,
    "digital signature" => DigitalSignature,
    "content commitment" => ContentCommitment,
    "key encipherment" => KeyEncipherment,
    "key agreement" => KeyAgreement,
    "data encipherment" => DataEncipherment,
    "cert sign" => CertSign,
    "crl sign" => CrlSign,
    "encipher only" => EncipherOnly,
    "decipher only" => DecipherOnly,
    "any" => Any,
    "server auth" => ServerAuth,
    "client auth" => ClientAuth,
    "code signing" => CodeSigning,
    "email protection" => EmailProtection,
    "s/mime" => SMime,
    "ipsec end system" => IpsecEndSystem,
    "ipsec tunnel" => IpsecTunnel,
    "ipsec user" => IpsecUser,
    "timestamping" => Timestamping,
    "ocsp signing" => OcspSigning,
    "microsoft sgc" => MicrosoftSgc,
    "netscape sgc" => NetscapeSgc,
}

/// The 23 words sorted, as Kubernetes' `sets.List()` lists them in
/// "supported values" messages.
pub fn sorted_names() -> Vec<&'static str> {
    let mut v = NAMES.to_vec();
    v.sort_unstable();
    v
}

impl Usage {
    /// Whether this is a keyUsage bit (else an extended key usage).
    pub fn is_key_usage(self) -> bool {
        use Usage::*;
        matches!(
            self,
            Signing
                | DigitalSignature
                | ContentCommitment
                | KeyEncipherment
                | KeyAgreement
                | DataEncipherment
                | CertSign
                | CrlSign
                | EncipherOnly
                | DecipherOnly
        )
    }

    /// The word a certificate shows for this usage ([`Usage::of_certificate`]):
    /// `signing` is `digital signature`, `s/mime` is `email protection`.
    pub fn canonical(self) -> Self {
        match self {
            Usage::Signing => Usage::DigitalSignature,
            Usage::SMime => Usage::EmailProtection,
            u => u,
        }
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
            // In table order, one word per purpose (`s/mime` is `email protection`).
            let granted = |u: &Usage| *u != SMime && u.in_eku(eku.value) == Some(true);
            out.extend(NAMES.iter().filter_map(|n| Usage::parse(n)).filter(granted));
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
