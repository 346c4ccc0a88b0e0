//! The command line, kubectl-shaped. Declarations only: no I/O here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::engine::{ArgValueCandidates, ArgValueCompleter};

use crate::complete;
use crate::pkix::KeyType;

/// certctl: request, inspect, approve, renew and revoke certificates with certsign.
#[derive(Debug, Parser)]
#[command(name = "certctl", version, about, long_about = None)]
pub struct Cli {
    /// Connection settings.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Connection flags, valid before or after the subcommand.
#[derive(Debug, Args)]
pub struct Global {
    /// Config file (TOML: server, ca, cert, key). Default: $XDG_CONFIG_HOME/certctl/config.toml
    /// or ~/.config/certctl/config.toml when present.
    #[arg(long, global = true, env = "CERTCTL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Approver URL, e.g. https://127.0.0.1:8443 (overrides the config file).
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// CA bundle the approver's certificate must chain to.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM). For `renew`: the certificate to renew; for
    /// `certificate revoke` without names: the certificate to revoke.
    #[arg(long, global = true, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM), or a key in a PKCS#11 token as an RFC 7512
    /// URI, e.g. `pkcs11:token=admins;object=alice?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/pin`
    /// (PIN from `pin-source` only: file:/path or env:NAME; the module may
    /// come from `pkcs11_module` in the config). For `renew` and
    /// `certificate revoke`: its key.
    #[arg(long, global = true, value_name = "FILE|URI")]
    pub key: Option<PathBuf>,
    /// Bootstrap token <id>.<secret>: authenticate with it instead of a certificate.
    #[arg(
        long,
        global = true,
        env = "CERTCTL_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Display requests (`get csr [NAME...]`), issued certificates
    /// (`get certificates`) or the current CRL (`get crl`).
    Get(GetArgs),
    /// Show a request in detail, decoding its CSR and certificate.
    Describe(DescribeArgs),
    /// Create requests from a CertificateSigningRequest manifest (YAML or JSON).
    Apply(ApplyArgs),
    /// Generate a key and CSR and submit it (`create csr NAME`).
    Create(CreateArgs),
    /// Approve, deny, wait for requests; revoke certificates.
    #[command(subcommand)]
    Certificate(CertificateCommand),
    /// Rotate a certificate: new key, new CSR, renewal proven by the current key.
    ///
    /// `certctl renew --cert F --key K` authenticates with F/K, asks for a
    /// certificate with the same subject and SANs for a new key of the same
    /// type, waits for it, then replaces F and K as a pair (one symlink
    /// switch when they share a directory). The previous pair is kept as F.bak and K.bak
    /// (replacing older backups); the old certificate stays valid until it
    /// expires. With --if-expires-within it is safe to run from cron or a
    /// systemd timer: while the certificate is young it prints one line and
    /// exits 5 (EXIT_NOT_DUE), 0 only when it renewed.
    ///
    /// Without --cert, it renews every `[[renew]]` entry of the config
    /// (cert, key, exec, renew_before, signer_name, expiration). --daemon
    /// keeps running and renews each at two thirds of its lifetime (with
    /// jitter) or at its renew_before, runs --exec after each renewal, and
    /// retries with backoff. The signer name comes from the certificate.
    /// Exit codes: 0 renewed, 5 nothing due, 2 denied, 3 failed, 4 timed
    /// out (the renewal stays pending; the next run resumes it), 1 other
    /// errors, 64 usage.
    Renew(RenewArgs),
    /// Delete requests (`delete csr NAME...`).
    Delete(DeleteArgs),
    /// Print a shell completion script (request names are completed from
    /// the server): `source <(certctl completion bash)`.
    Completion(CompletionArgs),
    /// Client configuration for other tools (`config kubeconfig`).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Who you are to certsign (`auth whoami`).
    #[command(subcommand)]
    Auth(AuthCommand),
}

/// `config`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a kubeconfig for the approver's Kubernetes API (kube_listen),
    /// so kubectl and Kubernetes client libraries work as this user: the
    /// CA, the server, and this certctl identity (client certificate and
    /// key embedded) or, with --token, the bootstrap token.
    Kubeconfig(KubeconfigArgs),
}

/// `auth`.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Print the username and groups the approver took from this
    /// credential (a client certificate's CN and O, or a bootstrap token),
    /// as `kubectl auth whoami` does: what authorization sees.
    Whoami(WhoamiArgs),
}

/// `auth whoami`.
#[derive(Debug, Args)]
pub struct WhoamiArgs {
    /// json or yaml: the SelfSubjectReview in Kubernetes' shape (default: a table).
    #[arg(short = 'o', long = "output", value_name = "FORMAT")]
    pub output: Option<Output>,
}

/// `config kubeconfig`.
#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// The Kubernetes API URL, e.g. https://127.0.0.1:6443 (default: the
    /// config file's `kube_server`).
    #[arg(long, value_name = "URL")]
    pub kube_server: Option<String>,
}

/// Output formats of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// kubectl's table (CSRs have no extra wide columns, as in kubectl;
    /// certificates add REQUEST and REASON).
    Wide,
    /// The object(s) in Kubernetes' JSON shape.
    Json,
    /// The object(s) in Kubernetes' YAML shape.
    Yaml,
    /// resource/name lines.
    Name,
    /// `get crl` only: PEM (`X509 CRL`), the default.
    Pem,
    /// `get crl` only: DER (never to a terminal; use --out).
    Der,
}

/// `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Resource type: csr (or certificatesigningrequest[s], optionally
    /// csr/NAME), certificates (certificate, certs: the inventory of issued
    /// certificates), crl (the current certificate revocation list) or
    /// trustbundle (the CA certificates to trust, PEM).
    #[arg(add = ArgValueCandidates::new(complete::get_resources))]
    pub resource: String,
    /// Names (requests) or serial numbers (certificates); all when empty.
    #[arg(add = ArgValueCompleter::new(complete::csr_names))]
    pub names: Vec<String>,
    /// Output format: wide, json, yaml, name; for crl: pem (default) or der.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
    /// `get crl` and `get trustbundle` only: write it here atomically (temp
    /// file and rename) instead of to stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Only requests or certificates for this signer name.
    #[arg(long)]
    pub signer_name: Option<String>,
    /// Only requests whose CONDITION is this (Pending, Approved, Denied, Failed, Issued).
    #[arg(long)]
    pub condition: Option<String>,
    /// Only requests made by this user.
    #[arg(long)]
    pub requestor: Option<String>,
    /// Page size for listing (0: the server's default); all pages are fetched.
    #[arg(long, default_value_t = 0)]
    pub chunk_size: i32,
    /// After listing, watch for changes: one more row per change, as
    /// kubectl's -w (resumes after a dropped connection; Ctrl-C ends it).
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Watch for changes without listing first.
    #[arg(long)]
    pub watch_only: bool,
    /// Print the table without its header line.
    #[arg(long)]
    pub no_headers: bool,
    /// Label selector, as kubectl's -l: `app=web`, `tier!=db`,
    /// `env in (a,b)`, `env notin (a)`, `app`, `!app`, comma-joined.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
}

/// `describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Resource type: csr.
    #[arg(add = ArgValueCandidates::new(complete::csr_resource))]
    pub resource: String,
    /// Names.
    #[arg(add = ArgValueCompleter::new(complete::csr_names))]
    pub names: Vec<String>,
}

/// `apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Manifest file, or - for stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub filename: PathBuf,
}

/// `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Resource type: csr.
    #[arg(add = ArgValueCandidates::new(complete::csr_resource))]
    pub resource: String,
    /// Request name.
    pub name: String,
    /// Subject, openssl style "/CN=alice/O=dev" or "CN=alice,O=dev" (written order kept).
    #[arg(long)]
    pub subject: String,
    /// DNS name SAN (repeatable).
    #[arg(long)]
    pub dns: Vec<String>,
    /// IP address SAN (repeatable).
    #[arg(long)]
    pub ip: Vec<String>,
    /// URI SAN (repeatable).
    #[arg(long)]
    pub uri: Vec<String>,
    /// Email SAN (repeatable).
    #[arg(long)]
    pub email: Vec<String>,
    /// Signer name.
    #[arg(long, default_value = "kubernetes.io/kube-apiserver-client")]
    pub signer_name: String,
    /// Key usages, comma separated Kubernetes strings (repeatable).
    #[arg(long, default_value = "digital signature,client auth")]
    pub usages: Vec<String>,
    /// Requested lifetime (humantime, e.g. 24h, 90d; at least 10m).
    #[arg(long)]
    pub expiration: Option<humantime::Duration>,
    /// Key type.
    #[arg(long, value_enum, default_value_t = KeyType::P256)]
    pub key_type: KeyType,
    /// Where to write the new private key (PKCS#8 PEM, mode 0600). The key is
    /// written to a 0600 temp file next to FILE before the request is sent and
    /// renamed to FILE once the approver accepted it; if the request fails it
    /// is removed, so FILE never holds a key nobody asked a certificate for,
    /// and a key the approver knows about is never lost.
    #[arg(long, value_name = "FILE")]
    pub key_out: PathBuf,
    /// Also write the CSR (PEM) here.
    #[arg(long, value_name = "FILE")]
    pub csr_out: Option<PathBuf>,
    /// Overwrite existing output files.
    #[arg(long)]
    pub force: bool,
}

/// `certificate ...`.
#[derive(Debug, Subcommand)]
pub enum CertificateCommand {
    /// Approve requests, signing with your own key: one ApprovalStatement for
    /// one request, one batch statement covering all of them for several.
    ///
    /// SECURITY NOTICE: depending on the signer, the issued certificate may grant
    /// its holder access; check who asked and for what before approving.
    Approve(DecideArgs),
    /// Deny requests.
    Deny(DecideArgs),
    /// Wait until a request is issued, denied or failed.
    ///
    /// Exit codes: 0 issued, 2 denied, 3 failed, 4 timed out, 64 usage error,
    /// 1 any other error.
    Wait(WaitArgs),
    /// Revoke issued certificates (RFC 5280 reasons; a revocation is final).
    ///
    /// As an admin: `revoke NAME...` revokes the certificate issued for each
    /// request, `revoke --serial HEX` one from the inventory; the revocation
    /// is signed with your own key, as approvals are. As the holder:
    /// `revoke --cert F --key K` revokes the certificate F, signed with its
    /// own key K (and authenticated with F and K). The signer verifies the
    /// signed statement itself and lists the certificate on every CRL until
    /// it expires; renewals from it are refused.
    Revoke(RevokeArgs),
}

/// `certificate revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Request names whose issued certificates to revoke (as an admin).
    #[arg(add = ArgValueCompleter::new(complete::csr_names))]
    pub names: Vec<String>,
    /// Also revoke the certificate with this serial number (hex, colons
    /// allowed; repeatable), found in the inventory (as an admin).
    #[arg(long, value_name = "HEX")]
    pub serial: Vec<String>,
    /// RFC 5280 reason: unspecified (default), keyCompromise, cACompromise,
    /// affiliationChanged, superseded, cessationOfOperation,
    /// privilegeWithdrawn (case-insensitive).
    #[arg(long, value_name = "R")]
    pub reason: Option<String>,
}

/// `certificate approve|deny`: the requests by name, from a manifest file,
/// or every pending one. An approval of several requests is one signed
/// statement covering all of them.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("requests").required(true).multiple(true).args(["names", "filename", "all_pending"])))]
pub struct DecideArgs {
    /// Request names.
    #[arg(add = ArgValueCompleter::new(complete::csr_names))]
    pub names: Vec<String>,
    /// A manifest (YAML or JSON; one object, several, or a list) naming the requests.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub filename: Option<PathBuf>,
    /// Every Pending request you may decide (not your own).
    #[arg(long)]
    pub all_pending: bool,
    /// With --all-pending: only requests for this signer name.
    #[arg(long, requires = "all_pending")]
    pub signer_name: Option<String>,
    /// Condition reason (default KubectlApprove / KubectlDeny).
    #[arg(long)]
    pub reason: Option<String>,
    /// Condition message.
    #[arg(long)]
    pub message: Option<String>,
    /// Send the decision even if the request already has it.
    #[arg(long)]
    pub force: bool,
}

/// `certificate wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Request name.
    #[arg(add = ArgValueCompleter::new(complete::csr_names))]
    pub name: String,
    /// Give up after this long (humantime), exit code 4.
    #[arg(long, default_value = "5m")]
    pub timeout: humantime::Duration,
    /// Write the issued certificate (PEM: the leaf, then any intermediates)
    /// here atomically; otherwise print it.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also write the CA bundle of the request's signer (GetTrustBundle,
    /// PEM) here atomically: what peers verify the certificate against.
    #[arg(long, value_name = "FILE")]
    pub ca_out: Option<PathBuf>,
}

/// `renew`.
#[derive(Debug, Args)]
pub struct RenewArgs {
    /// Signer name for the new request (default: the one the certificate's
    /// lineage extension names, the signer name it was issued under).
    #[arg(long)]
    pub signer_name: Option<String>,
    /// Usages (default: the current certificate's KU/EKU as Kubernetes strings).
    #[arg(long)]
    pub usages: Vec<String>,
    /// Requested lifetime of the new certificate (humantime); default and
    /// maximum: the current certificate's lifetime.
    #[arg(long)]
    pub expiration: Option<humantime::Duration>,
    /// Only renew when the certificate expires within this duration (e.g. 720h)
    /// or this share of its lifetime (e.g. 33%); otherwise exit 5 without
    /// change. With --daemon: when to renew (`renew_before` in [[renew]]).
    #[arg(long, visible_alias = "renew-before", value_name = "D|N%")]
    pub if_expires_within: Option<String>,
    /// Name of the new request (default: derived from the CN plus a random suffix).
    #[arg(long)]
    pub name: Option<String>,
    /// How long to wait for the new certificate.
    #[arg(long, default_value = "5m")]
    pub timeout: humantime::Duration,
    /// Keep running: renew each certificate at two thirds of its lifetime
    /// (with jitter) or at --renew-before / `renew_before`, retrying with
    /// backoff.
    #[arg(long)]
    pub daemon: bool,
    /// Command run with `sh -c` after each renewal (not when nothing was
    /// due), with CERTCTL_CERT and CERTCTL_KEY naming the files.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
}

/// `delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Resource type: csr.
    #[arg(add = ArgValueCandidates::new(complete::csr_resource))]
    pub resource: String,
    /// Names.
    #[arg(required = true, add = ArgValueCompleter::new(complete::csr_names))]
    pub names: Vec<String>,
}

/// `completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// Shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Shells with completion scripts.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    /// bash.
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
    /// PowerShell.
    Powershell,
}
