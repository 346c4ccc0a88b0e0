//! The commands: each validates its input completely before connecting, then
//! makes its calls and prints kubectl's lines.
//!
//! Commands never leave partial files: every file goes through
//! [`crate::files`]. Exit codes other than 1 are raised as [`crate::Failure`].

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Result, anyhow, bail};
use certsign_proto::v1 as pb;
use tokio_stream::StreamExt as _;
use x509_parser::prelude::FromDer;

use crate::cli::{self, CertificateCommand, Command, Output};
use crate::config::{Overrides, Settings};
use crate::conn::{self, Conn};
use crate::evidence::StatementSigner;
use crate::kube::{self, KubeCsr, KubeList, RESOURCE};
use crate::manifest::{self, Manifest};
use crate::pkix::{self, PrivateKey, Subject};
use crate::{Failure, emit, files};

/// Exit code: the request was denied.
pub const EXIT_DENIED: u8 = 2;
/// Exit code: the request failed.
pub const EXIT_FAILED: u8 = 3;
/// Exit code: timed out.
pub const EXIT_TIMEOUT: u8 = 4;

/// Runs a parsed command line.
pub async fn run(cli: cli::Cli) -> Result<()> {
    let g = cli.global;
    let overrides = Overrides {
        config: g.config,
        server: g.server,
        ca: g.ca,
        cert: g.cert,
        key: g.key,
        token: g.token,
    };
    let settings = || overrides.resolve(|k| std::env::var_os(k));
    match cli.command {
        Command::Get(a) => get(settings()?, a).await,
        Command::Describe(a) => describe(settings()?, a).await,
        Command::Apply(a) => apply(settings, a).await,
        Command::Create(a) => create(settings, a).await,
        Command::Certificate(CertificateCommand::Approve(a)) => {
            decide(settings()?, a, pb::Decision::Approve).await
        }
        Command::Certificate(CertificateCommand::Deny(a)) => {
            decide(settings()?, a, pb::Decision::Deny).await
        }
        Command::Certificate(CertificateCommand::Wait(a)) => wait_cmd(settings()?, a).await,
        Command::Renew(a) => renew(settings()?, a).await,
        Command::Delete(a) => delete(settings()?, a).await,
        Command::Completion(a) => completion(a),
    }
}

/// Accepts kubectl's spellings of the resource (and `csr/NAME`).
fn csr_resource(resource: &str, names: &mut Vec<String>) -> Result<()> {
    let (kind, name) = match resource.split_once('/') {
        Some((k, n)) => (k, Some(n)),
        None => (resource, None),
    };
    let known = [
        "csr",
        "csrs",
        "certificatesigningrequest",
        "certificatesigningrequests",
        "certificatesigningrequest.certificates.k8s.io",
        "certificatesigningrequests.certificates.k8s.io",
    ];
    if !known.contains(&kind.to_ascii_lowercase().as_str()) {
        bail!("the server doesn't have a resource type {kind:?}");
    }
    if let Some(n) = name {
        if n.is_empty() {
            bail!("arguments in resource/name form must have a single resource and name");
        }
        names.insert(0, n.to_string());
    }
    Ok(())
}

fn name_of(csr: &pb::CertificateSigningRequest) -> String {
    csr.metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default()
}

async fn fetch(conn: &mut Conn, name: &str) -> Result<pb::CertificateSigningRequest> {
    conn.client
        .get_certificate_signing_request(pb::GetCertificateSigningRequestRequest {
            name: name.to_string(),
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| conn::status_error(&s, &conn.url, Some(name)))
}

// === get ===

async fn get(settings: Settings, mut a: cli::GetArgs) -> Result<()> {
    csr_resource(&a.resource, &mut a.names)?;
    let mut conn = conn::connect(&settings).await?;
    let mut items = Vec::new();
    let mut missing = Vec::new();
    let single = a.names.len() == 1;
    if a.names.is_empty() {
        let mut token = String::new();
        loop {
            let page = conn
                .client
                .list_certificate_signing_requests(pb::ListCertificateSigningRequestsRequest {
                    signer_name: a.signer_name.clone().unwrap_or_default(),
                    condition: a.condition.clone().unwrap_or_default(),
                    username: a.requestor.clone().unwrap_or_default(),
                    limit: a.chunk_size.max(0),
                    continue_token: token.clone(),
                })
                .await
                .map_err(|s| conn::status_error(&s, &conn.url, None))?
                .into_inner();
            items.extend(page.items);
            if page.continue_token.is_empty() || page.continue_token == token {
                break;
            }
            token = page.continue_token;
        }
    } else {
        for name in &a.names {
            match fetch(&mut conn, name).await {
                Ok(c) => items.push(c),
                Err(e) => missing.push(e),
            }
        }
    }
    match a.output {
        None | Some(Output::Wide) => {
            if items.is_empty() {
                if missing.is_empty() {
                    eprintln!("No resources found");
                }
            } else {
                emit(&kube::table(&items, SystemTime::now()));
            }
        }
        Some(Output::Name) => {
            for c in &items {
                emit(&format!("{RESOURCE}/{}\n", name_of(c)));
            }
        }
        Some(fmt @ (Output::Json | Output::Yaml)) => {
            let text = if single {
                match items.first() {
                    Some(c) => render(&KubeCsr::from(c), fmt)?,
                    None => String::new(),
                }
            } else {
                render(
                    &KubeList::new(items.iter().map(KubeCsr::from).collect()),
                    fmt,
                )?
            };
            emit(&text);
        }
    }
    finish_errors(missing)
}

fn render<T: serde::Serialize>(value: &T, fmt: Output) -> Result<String> {
    match fmt {
        Output::Yaml => kube::to_yaml(value),
        _ => kube::to_json(value),
    }
}

/// Prints all but the last error, returns the last (so the exit code is 1).
fn finish_errors(mut errors: Vec<anyhow::Error>) -> Result<()> {
    let Some(last) = errors.pop() else {
        return Ok(());
    };
    for e in errors {
        crate::print_error(&e);
    }
    Err(last)
}

// === describe ===

async fn describe(settings: Settings, mut a: cli::DescribeArgs) -> Result<()> {
    csr_resource(&a.resource, &mut a.names)?;
    if a.names.is_empty() {
        bail!("describe needs a name: certctl describe csr NAME");
    }
    let mut conn = conn::connect(&settings).await?;
    let mut errors = Vec::new();
    let mut first = true;
    for name in &a.names {
        match fetch(&mut conn, name).await {
            Ok(c) => {
                if !first {
                    emit("\n\n");
                }
                first = false;
                emit(&crate::describe::describe(&c, SystemTime::now()));
            }
            Err(e) => errors.push(e),
        }
    }
    finish_errors(errors)
}

// === apply ===

fn read_input(path: &Path) -> Result<String> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| anyhow!("cannot read stdin: {}", crate::io_reason(&e)))?;
        return Ok(s);
    }
    match std::fs::read(path) {
        Ok(bytes) => {
            String::from_utf8(bytes).map_err(|_| anyhow!("{}: not UTF-8 text", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("the path {:?} does not exist", path.display().to_string())
        }
        Err(e) => bail!("cannot read {}: {}", path.display(), crate::io_reason(&e)),
    }
}

async fn apply(settings: impl FnOnce() -> Result<Settings>, a: cli::ApplyArgs) -> Result<()> {
    let text = read_input(&a.filename)?;
    let source = if a.filename == Path::new("-") {
        "stdin".to_string()
    } else {
        a.filename.display().to_string()
    };
    let manifests =
        manifest::parse_document(&text).map_err(|e| anyhow!("error validating {source:?}: {e}"))?;
    let mut conn = conn::connect(&settings()?).await?;
    let mut errors = Vec::new();
    for m in &manifests {
        match apply_one(&mut conn, m).await {
            Ok(line) => emit(&line),
            Err(e) => errors.push(e),
        }
    }
    finish_errors(errors)
}

async fn apply_one(conn: &mut Conn, m: &Manifest) -> Result<String> {
    let req = new_request(m);
    match conn
        .client
        .create_certificate_signing_request(pb::CreateCertificateSigningRequestRequest {
            certificate_signing_request: Some(req),
            renewal: None,
        })
        .await
    {
        Ok(resp) => Ok(format!("{RESOURCE}/{} created\n", name_of(resp.get_ref()))),
        Err(s) if s.code() == tonic::Code::AlreadyExists && !m.name.is_empty() => {
            // kubectl apply on an existing object: the spec is immutable, so an
            // identical spec is "unchanged" and anything else an error.
            let existing = fetch(conn, &m.name).await?;
            let spec = existing.spec.unwrap_or_default();
            if spec.request == m.request
                && spec.signer_name == m.signer_name
                && spec.usages == m.usages
                && spec.expiration_seconds == m.expiration_seconds
            {
                Ok(format!("{RESOURCE}/{} unchanged\n", m.name))
            } else {
                bail!(
                    "certificatesigningrequest {:?} already exists with a different spec (the spec is immutable; delete it first)",
                    m.name
                )
            }
        }
        Err(s) => Err(conn::status_error(&s, &conn.url, None)),
    }
}

fn new_request(m: &Manifest) -> pb::CertificateSigningRequest {
    pb::CertificateSigningRequest {
        api_version: "certificates.k8s.io/v1".into(),
        kind: "CertificateSigningRequest".into(),
        metadata: Some(pb::ObjectMeta {
            name: m.name.clone(),
            generate_name: m.generate_name.clone(),
            labels: m.labels.iter().cloned().collect(),
            annotations: m.annotations.iter().cloned().collect(),
            ..Default::default()
        }),
        spec: Some(pb::CertificateSigningRequestSpec {
            request: m.request.clone(),
            signer_name: m.signer_name.clone(),
            expiration_seconds: m.expiration_seconds,
            usages: m.usages.clone(),
            ..Default::default()
        }),
        status: None,
    }
}

// === create csr ===

fn expiration_seconds(d: Option<humantime::Duration>) -> Result<Option<i32>> {
    let Some(d) = d else { return Ok(None) };
    let secs = d.as_secs();
    if secs < 600 {
        bail!(
            "invalid --expiration {d}: may not specify a duration less than 600 seconds (10 minutes)"
        );
    }
    let secs = i32::try_from(secs).map_err(|_| anyhow!("invalid --expiration {d}: too long"))?;
    Ok(Some(secs))
}

async fn create(settings: impl FnOnce() -> Result<Settings>, mut a: cli::CreateArgs) -> Result<()> {
    let mut extra = Vec::new();
    csr_resource(&a.resource, &mut extra)?;
    if !extra.is_empty() {
        // `create csr/NAME` is not a kubectl form; keep the grammar strict.
        bail!("usage: certctl create csr NAME --subject ... --key-out FILE");
    }
    if !manifest::is_dns_subdomain(&a.name) {
        bail!(
            "invalid name {:?}: must be a lowercase RFC 1123 subdomain (lower case alphanumerics, '-' or '.')",
            a.name
        );
    }
    let subject = Subject::parse(&a.subject)?;
    let sans = pkix::sans_from_flags(&a.dns, &a.ip, &a.uri, &a.email)?;
    let usages = pkix::parse_usages(&std::mem::take(&mut a.usages))?;
    let expiration = expiration_seconds(a.expiration)?;
    files::check_target(&a.key_out, a.force)?;
    if let Some(p) = &a.csr_out {
        files::check_target(p, a.force)?;
    }
    let settings = settings()?;
    let key = PrivateKey::generate(a.key_type)?;
    let der = pkix::build_csr(&key, &subject.to_der(), &sans)?;
    let pem = pkix::pem_encode("CERTIFICATE REQUEST", &der);

    let mut conn = conn::connect(&settings).await?;
    // The key is durable on disk (a 0600 temp file) before the request leaves,
    // and takes its final name only once the approver accepted the request.
    let staged_key = files::stage(&a.key_out, key.pkcs8_pem()?.as_bytes(), 0o600)?;
    let staged_csr = match &a.csr_out {
        Some(p) => Some(files::stage(p, pem.as_bytes(), 0o644)?),
        None => None,
    };
    let m = Manifest {
        name: a.name.clone(),
        generate_name: String::new(),
        labels: Vec::new(),
        annotations: Vec::new(),
        request: pem.into_bytes(),
        signer_name: a.signer_name.clone(),
        usages,
        expiration_seconds: expiration,
    };
    let created = conn
        .client
        .create_certificate_signing_request(pb::CreateCertificateSigningRequestRequest {
            certificate_signing_request: Some(new_request(&m)),
            renewal: None,
        })
        .await
        .map_err(|s| conn::status_error(&s, &conn.url, None))?
        .into_inner();
    staged_key.commit(a.force)?;
    if let Some(s) = staged_csr {
        s.commit(a.force)?;
    }
    emit(&format!("{RESOURCE}/{} created\n", name_of(&created)));
    Ok(())
}

// === certificate approve|deny ===

fn has_condition(csr: &pb::CertificateSigningRequest, t: &str) -> bool {
    csr.status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.r#type == t))
}

async fn decide(settings: Settings, a: cli::DecideArgs, decision: pb::Decision) -> Result<()> {
    let approving = decision == pb::Decision::Approve;
    // Load the signing identity before connecting: a bad key is a local error.
    let signer = match (&settings.identity, &settings.token) {
        (Some((cert, key)), None) => Some(StatementSigner::load(cert, key)?),
        _ if approving => bail!(
            "approving needs your own certificate and key to sign the approval: pass --cert and --key or set them in the config file"
        ),
        _ => None,
    };
    let mut conn = conn::connect(&settings).await?;
    let mut errors = Vec::new();
    for name in &a.names {
        match decide_one(&mut conn, signer.as_ref(), name, &a, decision).await {
            Ok(line) => emit(&line),
            Err(e) => errors.push(e),
        }
    }
    finish_errors(errors)
}

async fn decide_one(
    conn: &mut Conn,
    signer: Option<&StatementSigner>,
    name: &str,
    a: &cli::DecideArgs,
    decision: pb::Decision,
) -> Result<String> {
    let (same, opposite, verb) = match decision {
        pb::Decision::Approve => ("Approved", "Denied", "approved"),
        _ => ("Denied", "Approved", "denied"),
    };
    let csr = fetch(conn, name).await?;
    if has_condition(&csr, opposite) {
        bail!("certificate signing request {name:?} is already {opposite}");
    }
    if has_condition(&csr, same) && !a.force {
        // kubectl: nothing to update, same success line.
        return Ok(format!("{RESOURCE}/{name} {verb}\n"));
    }
    let statement = match signer {
        Some(s) => Some(s.approval(&csr, decision, SystemTime::now())?),
        None => None,
    };
    let reason = a.reason.clone().unwrap_or_default();
    let message = a.message.clone().unwrap_or_default();
    let result = if decision == pb::Decision::Approve {
        conn.client
            .approve_certificate_signing_request(pb::ApproveCertificateSigningRequestRequest {
                name: name.to_string(),
                approval: statement,
                reason,
                message,
            })
            .await
    } else {
        conn.client
            .deny_certificate_signing_request(pb::DenyCertificateSigningRequestRequest {
                name: name.to_string(),
                denial: statement,
                reason,
                message,
            })
            .await
    };
    result.map_err(|s| conn::status_error(&s, &conn.url, Some(name)))?;
    Ok(format!("{RESOURCE}/{name} {verb}\n"))
}

// === certificate wait ===

/// How a request ended.
#[derive(Debug)]
enum Outcome {
    Issued(Vec<u8>),
    Denied(String),
    Failed(String),
}

fn condition_text(csr: &pb::CertificateSigningRequest, t: &str) -> String {
    let c = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.r#type == t));
    match c {
        Some(c) if !c.message.is_empty() => format!("{}: {}", c.reason, c.message),
        Some(c) => c.reason.clone(),
        None => String::new(),
    }
}

fn outcome(csr: &pb::CertificateSigningRequest) -> Option<Outcome> {
    if let Some(s) = &csr.status
        && !s.certificate.is_empty()
    {
        return Some(Outcome::Issued(s.certificate.clone()));
    }
    if has_condition(csr, "Denied") {
        return Some(Outcome::Denied(condition_text(csr, "Denied")));
    }
    if has_condition(csr, "Failed") {
        return Some(Outcome::Failed(condition_text(csr, "Failed")));
    }
    None
}

/// Follows the watch stream (re-fetching after any interruption) until the
/// request is issued, denied or failed.
async fn follow(conn: &mut Conn, name: &str, spinner: &indicatif::ProgressBar) -> Result<Outcome> {
    loop {
        let got = conn
            .client
            .get_certificate_signing_request(pb::GetCertificateSigningRequestRequest {
                name: name.to_string(),
            })
            .await;
        let csr = match got {
            Ok(r) => r.into_inner(),
            // The approver restarting or a dropped connection is not an
            // answer: keep trying until the timeout.
            Err(s) if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown) => {
                spinner.set_message(format!(
                    "waiting for {name}: approver unavailable, retrying"
                ));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(s) => return Err(conn::status_error(&s, &conn.url, Some(name))),
        };
        spinner.set_message(format!(
            "waiting for {name}: {}",
            kube::condition_column(&csr)
        ));
        if let Some(o) = outcome(&csr) {
            return Ok(o);
        }
        let watch = conn
            .client
            .watch_certificate_signing_requests(pb::WatchCertificateSigningRequestsRequest {
                name: name.to_string(),
                signer_name: String::new(),
                send_initial_events: true,
            })
            .await;
        if let Ok(resp) = watch {
            let mut stream = resp.into_inner();
            while let Some(Ok(event)) = stream.next().await {
                let Some(obj) = event.object else { continue };
                if name_of(&obj) != name {
                    continue;
                }
                if event.r#type == "DELETED" {
                    bail!("certificatesigningrequest {name:?} was deleted");
                }
                spinner.set_message(format!(
                    "waiting for {name}: {}",
                    kube::condition_column(&obj)
                ));
                if let Some(o) = outcome(&obj) {
                    return Ok(o);
                }
            }
        }
        // Stream ended or could not start: back off, then fetch again.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn spinner() -> indicatif::ProgressBar {
    if std::io::stderr().is_terminal() {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.enable_steady_tick(Duration::from_millis(100));
        pb
    } else {
        indicatif::ProgressBar::hidden()
    }
}

/// Waits for `name`, mapping denial, failure and timeout to their exit codes.
async fn wait_issued(conn: &mut Conn, name: &str, timeout: Duration) -> Result<Vec<u8>> {
    let sp = spinner();
    let result = tokio::time::timeout(timeout, follow(conn, name, &sp)).await;
    sp.finish_and_clear();
    match result {
        Err(_) => Err(Failure {
            code: EXIT_TIMEOUT,
            message: format!(
                "timed out after {} waiting for certificatesigningrequest {name:?}",
                humantime::format_duration(timeout)
            ),
        }
        .into()),
        Ok(Err(e)) => Err(e),
        Ok(Ok(Outcome::Issued(pem))) => Ok(pem),
        Ok(Ok(Outcome::Denied(why))) => Err(Failure {
            code: EXIT_DENIED,
            message: format!(
                "certificatesigningrequest {name:?} was denied{}",
                suffix(&why)
            ),
        }
        .into()),
        Ok(Ok(Outcome::Failed(why))) => Err(Failure {
            code: EXIT_FAILED,
            message: format!("certificatesigningrequest {name:?} failed{}", suffix(&why)),
        }
        .into()),
    }
}

fn suffix(why: &str) -> String {
    if why.is_empty() {
        String::new()
    } else {
        format!(": {why}")
    }
}

async fn wait_cmd(settings: Settings, a: cli::WaitArgs) -> Result<()> {
    let mut conn = conn::connect(&settings).await?;
    let pem = wait_issued(&mut conn, &a.name, a.timeout.into()).await?;
    match &a.out {
        Some(path) => files::write_atomic(path, &pem, 0o644, true)?,
        None => emit(&String::from_utf8_lossy(&pem)),
    }
    Ok(())
}

// === renew ===

/// `--if-expires-within`: a duration or a percentage of the lifetime.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// Renew when less than this remains.
    Within(Duration),
    /// Renew when less than this fraction (0..=1) of the lifetime remains.
    Fraction(f64),
}

impl Threshold {
    /// Parses `720h` or `33%`.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim();
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p
                .trim()
                .parse()
                .map_err(|_| anyhow!("invalid --if-expires-within {text:?}: expected a duration (720h) or a percentage (33%)"))?;
            if !(v > 0.0 && v <= 100.0) {
                bail!("invalid --if-expires-within {text:?}: percentage must be in (0, 100]");
            }
            return Ok(Self::Fraction(v / 100.0));
        }
        humantime::parse_duration(t)
            .map(Self::Within)
            .map_err(|e| anyhow!("invalid --if-expires-within {text:?}: {e}"))
    }

    /// The remaining time under which to renew.
    pub fn limit(self, lifetime: Duration) -> Duration {
        match self {
            Self::Within(d) => d,
            Self::Fraction(f) => lifetime.mul_f64(f),
        }
    }
}

fn to_system_time(t: x509_parser::time::ASN1Time) -> SystemTime {
    let ts = t.timestamp();
    if ts >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(ts as u64)
    } else {
        SystemTime::UNIX_EPOCH
    }
}

fn format_time(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    kube::rfc3339(&prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: 0,
    })
    .unwrap_or_default()
}

fn renewal_name(cn: &str) -> String {
    let mut base: String = cn
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    base.truncate(40);
    let base = base.trim_matches(|c| c == '-' || c == '.');
    let mut suffix = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut suffix);
    let base = if base.is_empty() { "renewal" } else { base };
    format!("{base}-renew-{}", hex::encode(suffix))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A prepared renewal: the new key, its CSR and the signed proof.
#[derive(Debug)]
pub struct Renewal {
    /// The new key (same type as the current one).
    pub key: PrivateKey,
    /// The new PKCS#10 DER.
    pub csr_der: Vec<u8>,
    /// The RenewalStatement signed by the current key.
    pub statement: pb::SignedStatement,
}

/// Builds the renewal of `current`: a new key of `key_type`, a CSR with the
/// current certificate's subject (byte for byte) and SANs, and the
/// RenewalStatement for request `name`.
pub fn build_renewal(
    current: &StatementSigner,
    key_type: pkix::KeyType,
    name: &str,
    signer_name: &str,
    now: SystemTime,
) -> Result<Renewal> {
    let (_, leaf) = x509_parser::certificate::X509Certificate::from_der(current.leaf()?)
        .map_err(|e| anyhow!("cannot parse the current certificate: {e}"))?;
    let sans = pkix::sans_of_certificate(&leaf)?;
    let key = PrivateKey::generate(key_type)?;
    let csr_der = pkix::build_csr(&key, leaf.subject().as_raw(), &sans)?;
    let statement = current.renewal(name, &csr_der, signer_name, now)?;
    Ok(Renewal {
        key,
        csr_der,
        statement,
    })
}

async fn renew(settings: Settings, a: cli::RenewArgs) -> Result<()> {
    let threshold = a
        .if_expires_within
        .as_deref()
        .map(Threshold::parse)
        .transpose()?;
    if settings.token.is_some() {
        bail!("renew authenticates with the current certificate; do not pass --token");
    }
    let Some((cert_path, key_path)) = settings.identity.clone() else {
        bail!("renew needs the current certificate and key: pass --cert and --key");
    };
    let current = StatementSigner::load(&cert_path, &key_path)?;
    let old_cert_pem = conn::read_file("certificate", &cert_path)?;
    let old_key_pem = conn::read_file("key", &key_path)?;
    let (_, leaf) = x509_parser::certificate::X509Certificate::from_der(current.leaf()?)
        .map_err(|e| anyhow!("cannot read certificate {}: {e}", cert_path.display()))?;
    let not_before = to_system_time(leaf.validity().not_before);
    let not_after = to_system_time(leaf.validity().not_after);
    let now = SystemTime::now();
    let remaining = not_after.duration_since(now).unwrap_or_default();
    if remaining.is_zero() {
        bail!(
            "certificate {} expired at {}; a renewal needs a valid certificate, request a new one",
            cert_path.display(),
            format_time(not_after)
        );
    }
    if let Some(t) = threshold {
        let lifetime = not_after.duration_since(not_before).unwrap_or_default();
        let limit = t.limit(lifetime);
        if remaining > limit {
            emit(&format!(
                "certificate {} is not due for renewal: expires in {} ({}), renewing within {}\n",
                cert_path.display(),
                kube::human_duration(remaining.as_secs() as i64),
                format_time(not_after),
                kube::human_duration(limit.as_secs() as i64),
            ));
            return Ok(());
        }
    }
    let key_type = current.key.key_type().ok_or_else(|| {
        anyhow!("cannot renew an RSA key: certctl cannot generate RSA keys (request a new certificate with create csr --key-type)")
    })?;
    let usages = if a.usages.is_empty() {
        let u = pkix::usages_of_certificate(&leaf);
        if u.is_empty() {
            bail!(
                "certificate {} has no key usages to carry over: pass --usages",
                cert_path.display()
            );
        }
        u
    } else {
        pkix::parse_usages(&a.usages)?
    };
    let expiration = expiration_seconds(a.expiration)?;
    let cn = leaf
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or("")
        .to_string();
    let name = match &a.name {
        Some(n) if manifest::is_dns_subdomain(n) => n.clone(),
        Some(n) => bail!("invalid --name {n:?}: must be a lowercase RFC 1123 subdomain"),
        None => renewal_name(&cn),
    };
    let Renewal {
        key: new_key,
        csr_der: der,
        statement,
    } = build_renewal(&current, key_type, &name, &a.signer_name, SystemTime::now())?;
    let csr_pem = pkix::pem_encode("CERTIFICATE REQUEST", &der);

    let mut conn = conn::connect(&settings).await?;
    let staged_key = files::stage(&key_path, new_key.pkcs8_pem()?.as_bytes(), 0o600)?;
    let m = Manifest {
        name: name.clone(),
        generate_name: String::new(),
        labels: Vec::new(),
        annotations: Vec::new(),
        request: csr_pem.into_bytes(),
        signer_name: a.signer_name.clone(),
        usages,
        expiration_seconds: expiration,
    };
    conn.client
        .create_certificate_signing_request(pb::CreateCertificateSigningRequestRequest {
            certificate_signing_request: Some(new_request(&m)),
            renewal: Some(statement),
        })
        .await
        .map_err(|s| conn::status_error(&s, &conn.url, None))?;
    let issued = match wait_issued(&mut conn, &name, a.timeout.into()).await {
        Ok(pem) => pem,
        Err(e) => {
            // Timed out: the request may still be issued later, so keep the
            // new key (it is the only copy) next to the old one.
            let timed_out = e
                .downcast_ref::<Failure>()
                .is_some_and(|f| f.code == EXIT_TIMEOUT);
            if timed_out {
                let kept = with_suffix(&key_path, ".new");
                staged_key.commit_to(&kept)?;
                return Err(Failure {
                    code: EXIT_TIMEOUT,
                    message: format!(
                        "{e:#}; the new key is kept in {} (fetch the certificate later with `certctl certificate wait {name} --out FILE`)",
                        kept.display()
                    ),
                }
                .into());
            }
            return Err(e);
        }
    };

    // Never install a certificate that is not for the new key.
    let issued_der = pkix::certs_der_from_pem(&issued);
    let new_leaf = issued_der.first().ok_or_else(|| {
        anyhow!("certificatesigningrequest {name:?}: issued certificate is not PEM")
    })?;
    let (_, parsed) =
        x509_parser::certificate::X509Certificate::from_der(new_leaf).map_err(|e| {
            anyhow!("certificatesigningrequest {name:?}: issued certificate does not parse: {e}")
        })?;
    if parsed.public_key().subject_public_key.data.as_ref() != new_key.public_key_raw().as_slice() {
        bail!(
            "certificatesigningrequest {name:?}: issued certificate is not for the new key; nothing was replaced"
        );
    }
    let serial = parsed.raw_serial_as_string();
    let valid_until = format_time(to_system_time(parsed.validity().not_after));

    // Backups first, so the old pair survives whatever happens next.
    let cert_bak = with_suffix(&cert_path, ".bak");
    let key_bak = with_suffix(&key_path, ".bak");
    files::write_atomic(&cert_bak, &old_cert_pem, 0o644, true)?;
    files::write_atomic(&key_bak, &old_key_pem, 0o600, true)?;
    let cert_mode = {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(&cert_path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0o644)
    };
    let staged_cert = files::stage(&cert_path, &issued, cert_mode)?;
    // Key then certificate: the window where they disagree is two renames,
    // and the .bak pair restores the old state.
    staged_key.commit(true)?;
    staged_cert.commit(true)?;
    emit(&format!(
        "certificate {} renewed by {RESOURCE}/{name}: serial {serial}, valid until {valid_until} (previous pair kept as {} and {})\n",
        cert_path.display(),
        cert_bak.display(),
        key_bak.display()
    ));
    Ok(())
}

// === delete ===

async fn delete(settings: Settings, mut a: cli::DeleteArgs) -> Result<()> {
    csr_resource(&a.resource, &mut a.names)?;
    let mut conn = conn::connect(&settings).await?;
    let mut errors = Vec::new();
    for name in &a.names {
        let r = conn
            .client
            .delete_certificate_signing_request(pb::DeleteCertificateSigningRequestRequest {
                name: name.clone(),
            })
            .await;
        match r {
            Ok(_) => emit(&format!("{RESOURCE} {name:?} deleted\n")),
            Err(s) => errors.push(conn::status_error(&s, &conn.url, Some(name))),
        }
    }
    finish_errors(errors)
}

// === completion ===

fn completion(a: cli::CompletionArgs) -> Result<()> {
    use clap::CommandFactory as _;
    let shell = match a.shell {
        cli::Shell::Bash => clap_complete::Shell::Bash,
        cli::Shell::Zsh => clap_complete::Shell::Zsh,
        cli::Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cli::Cli::command(), "certctl", &mut buf);
    emit(&String::from_utf8_lossy(&buf));
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn thresholds() {
        assert_eq!(Threshold::parse("33%").unwrap(), Threshold::Fraction(0.33));
        assert_eq!(
            Threshold::parse("720h").unwrap(),
            Threshold::Within(Duration::from_secs(720 * 3600))
        );
        assert_eq!(
            Threshold::parse("50%")
                .unwrap()
                .limit(Duration::from_secs(100)),
            Duration::from_secs(50)
        );
        for bad in ["0%", "101%", "x%", "soon", ""] {
            assert!(Threshold::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resources() {
        let mut names = vec![];
        csr_resource("csr/myuser", &mut names).unwrap();
        assert_eq!(names, ["myuser"]);
        csr_resource("certificatesigningrequests.certificates.k8s.io", &mut names).unwrap();
        let err = csr_resource("pods", &mut names).unwrap_err().to_string();
        assert_eq!(err, "the server doesn't have a resource type \"pods\"");
    }

    #[test]
    fn renewal_names_are_valid() {
        for cn in ["Alice Smith", "system:node:worker-1", "", "---"] {
            let n = renewal_name(cn);
            assert!(manifest::is_dns_subdomain(&n), "{n}");
        }
    }

    #[test]
    fn expirations() {
        assert_eq!(expiration_seconds(None).unwrap(), None);
        assert_eq!(
            expiration_seconds(Some("24h".parse().unwrap())).unwrap(),
            Some(86400)
        );
        assert!(expiration_seconds(Some("5m".parse().unwrap())).is_err());
    }
}
