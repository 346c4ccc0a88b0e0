//! Signer rate with a file CA key beside the same with the key in SoftHSM2.
//!
//! `cargo run --release -p certsign-setup --example sign_bench [-- N]`
//!
//! Creates its own throwaway SoftHSM2 token (private SOFTHSM2_CONF in a temp
//! dir, then re-runs itself with it set), runs `init` in-process for each CA
//! key type with a file key and with `--ca-key-uri`, and measures, in process:
//! - CA signatures: `issue::prepare` + `issue::sign` from 1 and 4 threads;
//! - `Sign` end to end: `Authority::sign_with` (CSR checks, profile,
//!   certificate, signature, journal fsynced with group commit), 32 at once.
//!
//! Benchmarks only; never used by the signer.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use certsign_keys::{CaKey, Pkcs11Uri};
use certsign_setup::console::console_issue;
use certsign_setup::init::{IDENTITY_SIGNER, InitOptions, KeyType, Listen, RsaBits, init};
use certsign_signer::authority::Authority;
use certsign_signer::config::Config;
use certsign_signer::csr::VerifiedCsr;
use certsign_signer::issue;
use certsign_signer::profile::Usage;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(4000);
    if std::env::var_os("CERTSIGN_BENCH_CHILD").is_none() {
        // Parent: make a token, then run the measurements with SOFTHSM2_CONF set.
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir(d.join("tokens")).unwrap();
        let conf = d.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!("directories.tokendir = {}/tokens/\n", d.display()),
        )
        .unwrap();
        let ok = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(["--init-token", "--free", "--label", "bench"])
            .args(["--so-pin", "5678", "--pin", "1234"])
            .output()
            .unwrap()
            .status
            .success();
        assert!(
            ok,
            "softhsm2-util --init-token failed (apt-get install softhsm2)"
        );
        let status = Command::new(std::env::current_exe().unwrap())
            .arg(n.to_string())
            .env("SOFTHSM2_CONF", &conf)
            .env("CERTSIGN_BENCH_CHILD", d)
            .env("CERTSIGN_BENCH_PIN", "1234")
            .status()
            .unwrap();
        std::process::exit(status.code().unwrap_or(1));
    }
    let dir = PathBuf::from(std::env::var_os("CERTSIGN_BENCH_CHILD").unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| CA key | where | CA signatures/s, 1 thread | CA signatures/s, 4 threads | Sign end to end/s, 32 concurrent |"
    );
    println!("|---|---|---:|---:|---:|");
    for (name, kt) in [
        ("ECDSA P-256", KeyType::P256),
        ("ECDSA P-384", KeyType::P384),
        ("RSA 3072", KeyType::Rsa(RsaBits::B3072)),
    ] {
        for token in [false, true] {
            let pki = dir.join(format!("{name}-{token}").replace(' ', "_"));
            let uri = token.then(|| {
                Pkcs11Uri::parse(&format!(
                    "pkcs11:token=bench;object={}?module-path={MODULE}&pin-source=env:CERTSIGN_BENCH_PIN",
                    pki.file_name().unwrap().to_str().unwrap()
                ))
                .unwrap()
            });
            rt.block_on(init(&InitOptions {
                dir: pki.clone(),
                key_type: kt,
                signer_listen: Listen::parse("127.0.0.1:0").unwrap(),
                approver_listen: Listen::parse("127.0.0.1:0").unwrap(),
                ca_key_uri: uri,
                kube_listen: None,
            }))
            .unwrap();
            let (r1, r4) = raw_rates(&pki, n);
            let e2e = rt.block_on(end_to_end(&pki, n));
            println!(
                "| {name} | {} | {r1:.0} | {r4:.0} | {e2e:.0} |",
                if token { "SoftHSM2 2.6.1" } else { "file" }
            );
        }
    }
}

fn csrs(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::default();
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name
                .push(rcgen::DnType::CommonName, format!("bench-{i}"));
            p.serialize_request(&key)
                .unwrap()
                .pem()
                .unwrap()
                .into_bytes()
        })
        .collect()
}

/// CA signatures per second from 1 and 4 threads (one CaKey, shared).
fn raw_rates(pki: &Path, n: usize) -> (f64, f64) {
    let config = Config::load(&pki.join("signer/signer.toml")).unwrap();
    let ca = Arc::new(CaKey::open(&config.ca_cert, &config.ca_key, 4).unwrap());
    let csr = Arc::new(VerifiedCsr::from_pem(&csrs(1)[0]).unwrap());
    let profile = config.profile(IDENTITY_SIGNER).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let window = (
        now - time::Duration::minutes(5),
        now + time::Duration::hours(1),
    );
    let rate = |threads: usize| {
        let per = n / threads;
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                let (ca, csr) = (ca.clone(), csr.clone());
                s.spawn(move || {
                    let usages = [Usage::DigitalSignature, Usage::ClientAuth];
                    let checked = profile.check(&csr, &usages).unwrap();
                    for i in 0..per {
                        let mut serial = [0x11u8; 16];
                        serial[..8].copy_from_slice(&(i as u64).to_be_bytes());
                        let p = issue::prepare(
                            &ca,
                            checked,
                            profile,
                            SystemTime::now(),
                            window,
                            serial,
                        )
                        .unwrap();
                        issue::sign(&ca, p).unwrap();
                    }
                });
            }
        });
        (per * threads) as f64 / start.elapsed().as_secs_f64()
    };
    (rate(1), rate(4))
}

/// `Sign` calls per second, 32 in flight, console evidence.
async fn end_to_end(pki: &Path, n: usize) -> f64 {
    let config = Config::load(&pki.join("signer/signer.toml")).unwrap();
    let authority = Arc::new(Authority::open(config).unwrap());
    let csrs = Arc::new(csrs(64));
    let start = Instant::now();
    let tasks: Vec<_> = (0..32)
        .map(|w| {
            let (a, csrs) = (authority.clone(), csrs.clone());
            tokio::spawn(async move {
                for i in (w..n).step_by(32) {
                    console_issue(
                        &a,
                        csrs[i % csrs.len()].clone(),
                        IDENTITY_SIGNER,
                        vec!["digital signature".into(), "client auth".into()],
                        None,
                    )
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}
