//! Fuzz target: certctl's `apply -f` manifest parser (YAML or JSON, one or
//! several documents). Must never panic, only return errors.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match certctl::manifest::parse_document(text) {
            Ok(ms) => {
                for m in ms {
                    let _ = (m.name.len(), m.request.len(), m.usages.len());
                }
            }
            Err(e) => {
                let _ = format!("{e:#}");
            }
        }
    }
});
