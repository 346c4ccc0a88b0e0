//! The syntax of configured names: signer names and `domain/*` patterns,
//! bootstrap token ids and secrets, and database URLs (a relative SQLite
//! path resolved against the config directory).
//!
//! This module must never read a file; it only checks and rewrites text.

use std::path::Path;

/// Whether `pattern` (exact or `domain/*`) covers `signer_name`.
pub fn pattern_matches(pattern: &str, signer_name: &str) -> bool {
    if pattern == signer_name {
        return true;
    }
    match (pattern.strip_suffix("/*"), signer_name.split_once('/')) {
        (Some(domain), Some((name_domain, _))) => domain == name_domain,
        _ => false,
    }
}

pub(super) fn is_signer_name_pattern(name: &str) -> bool {
    let Some((domain, path)) = name.split_once('/') else {
        return false;
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    domain.contains('.')
        && domain.split('.').all(label_ok)
        && !path.is_empty()
        && !path.contains('/')
        && (path == "*" || !path.contains('*'))
}

fn is_token_part(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Whether `s` is a well-formed bootstrap token secret (`[a-z0-9]{16}`).
pub fn is_token_secret(s: &str) -> bool {
    is_token_part(s, 16)
}

/// Whether `s` is a well-formed bootstrap token id (`[a-z0-9]{6}`).
pub fn is_token_id(s: &str) -> bool {
    is_token_part(s, 6)
}

/// Resolve a relative SQLite path against the config directory; leave
/// other URLs untouched. `mode=rwc` is added so a fresh deployment starts.
pub(super) fn resolve_database_url(url: &str, base: &Path) -> Result<String, String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(url.to_string());
    }
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Err(format!("{url:?} must start with sqlite:// or postgres://"));
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (file, query) = match rest.split_once('?') {
        Some((f, q)) => (f, Some(q)),
        None => (rest, None),
    };
    if file.is_empty() || file == ":memory:" {
        return Err("an in-memory SQLite database would lose every request on restart".into());
    }
    let file_path = Path::new(file);
    let full = if file_path.is_absolute() {
        file_path.to_path_buf()
    } else {
        base.join(file_path)
    };
    let query = match query {
        Some(q) if q.contains("mode=") => q.to_string(),
        Some(q) => format!("{q}&mode=rwc"),
        None => "mode=rwc".to_string(),
    };
    Ok(format!("sqlite://{}?{query}", full.display()))
}
