//! RFC 7512 PKCS#11 URIs naming a private key: the signer's CA key and
//! certctl's admin keys parse with this one parser.
//!
//! The PIN comes from `pin-source` only; `pin-value` and unknown attributes
//! are refused (fail closed). This module never reads or shows a PIN.

use std::path::PathBuf;

use cryptoki::object::{Attribute, ObjectClass};

/// Where the PIN comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// A file (absolute path), mode 0600 or stricter; trailing newline ignored.
    File(PathBuf),
    /// An environment variable of the signer process.
    Env(String),
}

/// A parsed RFC 7512 URI naming a private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    text: String,
    /// `module-path`: the PKCS#11 library to load.
    pub module_path: PathBuf,
    /// `token`: the token label.
    pub token: String,
    /// `serial`: the token serial number, when several tokens share a label.
    pub serial: Option<String>,
    /// `object`: the key's label.
    pub object: Option<String>,
    /// `id`: the key's CKA_ID bytes.
    pub id: Option<Vec<u8>>,
    /// `pin-source`.
    pub pin_source: PinSource,
}

impl std::fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Safe to show: pin-value is refused at parse time.
        f.write_str(&self.text)
    }
}

fn pct_decode(s: &str, what: &str) -> Result<Vec<u8>, String> {
    // percent-encoding passes a stray '%' through; RFC 7512 does not allow one.
    let stray = s.split('%').skip(1).any(|rest| {
        rest.get(..2)
            .is_none_or(|h| !h.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    if stray {
        return Err(format!("{what}: bad percent-encoding in {s:?}"));
    }
    Ok(percent_encoding::percent_decode_str(s).collect())
}

fn pct_str(s: &str, what: &str) -> Result<String, String> {
    String::from_utf8(pct_decode(s, what)?).map_err(|_| format!("{what}: not UTF-8"))
}

impl Pkcs11Uri {
    /// Is this text meant as a PKCS#11 URI (rather than a file path)?
    pub fn is_uri(s: &str) -> bool {
        s.starts_with("pkcs11:")
    }

    /// Parse a URI; errors name the attribute and the rule.
    pub fn parse(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("pkcs11:")
            .ok_or("a PKCS#11 URI starts with \"pkcs11:\"")?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (mut token, mut serial, mut object, mut id) = (None, None, None, None);
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (k, v) = attr
                .split_once('=')
                .ok_or_else(|| format!("{attr:?}: an attribute is name=value"))?;
            let dup = || format!("{k}: given twice");
            match k {
                "token" if token.is_none() => token = Some(pct_str(v, k)?),
                "serial" if serial.is_none() => serial = Some(pct_str(v, k)?),
                "object" if object.is_none() => object = Some(pct_str(v, k)?),
                "id" if id.is_none() => id = Some(pct_decode(v, k)?),
                "type" if v == "private" => {}
                "type" => {
                    return Err(format!("type={v}: the key is a private key (type=private)"));
                }
                "token" | "serial" | "object" | "id" => return Err(dup()),
                _ => {
                    return Err(format!(
                        "unsupported path attribute {k:?} (supported: token, serial, object, id, type)"
                    ));
                }
            }
        }
        let (mut module, mut pin) = (None, None);
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
            match k {
                "pin-value" => {
                    return Err("pin-value: a PIN is never accepted in the configuration; use pin-source=file:/path/to/pin (mode 0600) or pin-source=env:NAME".into());
                }
                "module-path" if module.is_none() => module = Some(PathBuf::from(pct_str(v, k)?)),
                "pin-source" if pin.is_none() => {
                    let v = pct_str(v, k)?;
                    pin = Some(if let Some(name) = v.strip_prefix("env:") {
                        if name.is_empty() {
                            return Err("pin-source=env:NAME: NAME is empty".into());
                        }
                        PinSource::Env(name.to_string())
                    } else {
                        // file:/p, file:///p and a bare absolute path.
                        let p = v
                            .strip_prefix("file://")
                            .or_else(|| v.strip_prefix("file:"))
                            .unwrap_or(&v);
                        if !p.starts_with('/') {
                            return Err(format!(
                                "pin-source={v}: use file:/absolute/path or env:NAME"
                            ));
                        }
                        PinSource::File(PathBuf::from(p))
                    });
                }
                "module-path" | "pin-source" => return Err(format!("{k}: given twice")),
                "module-name" => return Err(
                    "module-name: not supported; give module-path (the library's absolute path)"
                        .into(),
                ),
                _ => {
                    return Err(format!(
                        "unsupported query attribute {k:?} (supported: module-path, pin-source)"
                    ));
                }
            }
        }
        let module_path = module
            .ok_or("module-path: required (e.g. ?module-path=/usr/lib/softhsm/libsofthsm2.so)")?;
        if !module_path.is_absolute() {
            return Err("module-path: must be an absolute path".into());
        }
        if object.is_none() && id.is_none() {
            return Err("object or id: required to name the key".into());
        }
        Ok(Self {
            text: s.to_string(),
            module_path,
            token: token.ok_or("token: required (the token label)")?,
            serial,
            object,
            id,
            pin_source: pin.ok_or("pin-source: required (file:/path/to/pin or env:NAME)")?,
        })
    }

    /// The search template for the key's objects of `class`.
    pub fn key_template(&self, class: ObjectClass) -> Vec<Attribute> {
        let mut t = vec![Attribute::Class(class), Attribute::Token(true)];
        if let Some(l) = &self.object {
            t.push(Attribute::Label(l.as_bytes().to_vec()));
        }
        if let Some(id) = &self.id {
            t.push(Attribute::Id(id.clone()));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const M: &str = "module-path=/usr/lib/softhsm/libsofthsm2.so";

    #[test]
    fn parses_rfc7512_uris() {
        let u = Pkcs11Uri::parse(&format!(
            "pkcs11:token=signer%20ca;object=ca;id=%01%02;type=private?{M}&pin-source=file:/etc/pin"
        ))
        .unwrap();
        assert_eq!(u.token, "signer ca");
        assert_eq!(u.object.as_deref(), Some("ca"));
        assert_eq!(u.id, Some(vec![1, 2]));
        assert_eq!(u.pin_source, PinSource::File("/etc/pin".into()));
        let u = Pkcs11Uri::parse(&format!(
            "pkcs11:token=t;object=ca?{M}&pin-source=env:CA_PIN"
        ))
        .unwrap();
        assert_eq!(u.pin_source, PinSource::Env("CA_PIN".into()));
        let u = Pkcs11Uri::parse(&format!(
            "pkcs11:token=t;object=ca?{M}&pin-source=file:///p"
        ))
        .unwrap();
        assert_eq!(u.pin_source, PinSource::File("/p".into()));
    }

    #[test]
    fn refuses_pins_in_the_uri_and_unknown_attributes() {
        let e =
            Pkcs11Uri::parse(&format!("pkcs11:token=t;object=ca?{M}&pin-value=1234")).unwrap_err();
        assert!(e.starts_with("pin-value: a PIN is never accepted"), "{e}");
        for (uri, want) in [
            (
                format!("pkcs11:token=t;object=ca?{M}"),
                "pin-source: required",
            ),
            (
                "pkcs11:token=t;object=ca?pin-source=env:X".to_string(),
                "module-path: required",
            ),
            (
                format!("pkcs11:object=ca?{M}&pin-source=env:X"),
                "token: required",
            ),
            (
                format!("pkcs11:token=t?{M}&pin-source=env:X"),
                "object or id",
            ),
            (
                format!("pkcs11:token=t;object=ca;slot-id=1?{M}&pin-source=env:X"),
                "\"slot-id\"",
            ),
            (
                format!("pkcs11:token=t;object=ca?{M}&pin-source=file:pin"),
                "file:/absolute/path",
            ),
            (
                format!("pkcs11:token=t;object=ca;type=cert?{M}&pin-source=env:X"),
                "type=cert",
            ),
            (
                format!("pkcs11:token=%zz;object=ca?{M}&pin-source=env:X"),
                "percent-encoding",
            ),
        ] {
            let e = Pkcs11Uri::parse(&uri).unwrap_err();
            assert!(e.contains(want), "{uri}: {e}");
        }
    }
}
