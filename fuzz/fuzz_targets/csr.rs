//! Fuzz target: CSR parsing (`VerifiedCsr`, PEM and DER) and every signing
//! profile `init` writes (`Profile::check`), plus the usage parser.
//!
//! Input: byte 0 picks the usages (a bit mask over the usage list) and
//! whether the rest is fed as PEM or DER. Must never panic.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use certsign_signer::config::Config;
use certsign_signer::csr::VerifiedCsr;
use certsign_signer::profile::parse_usages;
use libfuzzer_sys::fuzz_target;

const USAGES: [&str; 8] = [
    "digital signature",
    "key encipherment",
    "client auth",
    "server auth",
    "cert sign",
    "any",
    "code signing",
    "bogus",
];

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| {
        // The configuration `certsign-signer init` writes (paths are never
        // opened by `parse`).
        #[allow(clippy::expect_used)] // a fixed, known-good file
        Config::parse(include_str!("../signer.toml"), Path::new("/fuzz/signer.toml"))
            .expect("init's signer.toml parses")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let parsed = if sel & 0x80 != 0 {
        VerifiedCsr::from_pem(rest)
    } else {
        VerifiedCsr::from_der(rest)
    };
    let usages: Vec<String> = USAGES
        .iter()
        .enumerate()
        .filter(|(i, _)| sel & (1 << (i % 7)) != 0 || (*i == 7 && sel & 0x40 != 0))
        .map(|(_, u)| u.to_string())
        .collect();
    let usages = match parse_usages(&usages) {
        Ok(u) => u,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    match parsed {
        Ok(csr) => {
            for p in &config().profiles {
                let _ = p.check(&csr, &usages).map_err(|e| e.to_string());
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
