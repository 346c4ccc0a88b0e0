//! Continue tokens of paged lists: base64url of the list's kind and the
//! last key sent, opaque to clients. A token of one list is refused by the
//! other, and anything this server did not issue is an error naming the
//! field.
//!
//! A token only says where to resume; it must never widen what the caller
//! may read (the list's own filter always applies).

use base64::Engine as _;

use crate::status::ServiceError;

/// Which list a token pages through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pages {
    /// CertificateSigningRequests, by name.
    Requests,
    /// The issued-certificate inventory, by serial.
    Certificates,
}

impl Pages {
    fn prefix(self) -> &'static str {
        match self {
            Pages::Requests => "v1:",
            Pages::Certificates => "certs1:",
        }
    }

    /// The token that resumes after `last`.
    pub fn token(self, last: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}{last}", self.prefix()))
    }

    /// The key to resume after, `None` for the first page.
    pub fn after(self, token: &str) -> Result<Option<String>, ServiceError> {
        if token.is_empty() {
            return Ok(None);
        }
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix(self.prefix()).map(str::to_string))
            .map(Some)
            .ok_or_else(|| {
                ServiceError::BadRequest("continue_token: not a token this server issued".into())
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_foreign_ones_are_refused() {
        let t = Pages::Certificates.token("01ff");
        assert_eq!(
            Pages::Certificates.after(&t).unwrap().as_deref(),
            Some("01ff")
        );
        assert!(Pages::Certificates.after("bm9wZQ").is_err());
        assert_eq!(Pages::Certificates.after("").unwrap(), None);
        // One list's token is not another's.
        assert!(Pages::Requests.after(&t).is_err());
        let r = Pages::Requests.token("alice-1");
        assert_eq!(
            Pages::Requests.after(&r).unwrap().as_deref(),
            Some("alice-1")
        );
    }
}
