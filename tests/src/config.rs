//! Editing the TOML configs `init` wrote, before a daemon starts.
//!
//! It must never write a config the daemon could not have been given by an
//! operator: it parses and re-serialises, so a typo fails here.

use std::path::Path;

/// Rewrites a TOML file through `f`.
pub fn edit_toml(path: &Path, f: impl FnOnce(&mut toml::Table)) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut table: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f(&mut table);
    std::fs::write(path, toml::to_string(&table).unwrap()).unwrap();
}
