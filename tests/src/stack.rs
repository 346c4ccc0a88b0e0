//! A whole local deployment: the `init` PKI in a temp dir, the signer and
//! the approver running on loopback ports chosen by the kernel, and the
//! clients (certctl, tonic) that drive it as its users would.
//!
//! It must never fake a part that can run for real here.

use std::path::{Path, PathBuf};
use std::process::Command;

use certsign_proto::v1::approver_client::ApproverClient;
use certsign_proto::v1::signer_client::SignerClient;
use tonic::transport::Channel;

use crate::config::edit_toml;
use crate::grpc::channel;
use crate::pki::{Ident, MintSpec, Pki};
use crate::process::{Daemon, Spawn, bin, run_ok};

/// How to start the signer of `pki` listening on `listen`; `edit` may
/// change `signer.toml` after the listen address is set.
pub fn signer_spawn(pki: &Pki, listen: &str, edit: impl FnOnce(&mut toml::Table)) -> Spawn {
    let config = pki.signer_toml();
    edit_toml(&config, |t| {
        t.insert("listen".into(), listen.into());
        edit(t);
    });
    Spawn::new(bin("certsign-signer"), pki.p("signer.log")).args([
        std::ffi::OsString::from("serve"),
        "--config".into(),
        config.into(),
    ])
}

/// How to start the approver of `pki` on 127.0.0.1:0 with the signer at
/// `signer_addr`; `edit` may change `approver.toml` after that.
pub fn approver_spawn(pki: &Pki, signer_addr: &str, edit: impl FnOnce(&mut toml::Table)) -> Spawn {
    let config = pki.approver_toml();
    let endpoint = format!("https://{signer_addr}");
    edit_toml(&config, |t| {
        t.insert("listen".into(), "127.0.0.1:0".into());
        // init's fixed metrics port would be contended by parallel stacks.
        t.insert("metrics_listen".into(), "127.0.0.1:0".into());
        let s = t.get_mut("signer").unwrap().as_table_mut().unwrap();
        s.insert(
            "endpoints".into(),
            toml::Value::Array(vec![endpoint.into()]),
        );
        edit(t);
    });
    Spawn::new(bin("certsign-approver"), pki.p("approver.log")).args([
        std::ffi::OsString::from("serve"),
        "--config".into(),
        config.into(),
    ])
}

/// A whole local deployment: `init` output in a temp dir, the signer and the
/// approver running on loopback ports chosen by the kernel.
#[derive(Debug)]
pub struct Stack {
    /// The `init` directory.
    pub dir: PathBuf,
    /// The signer process.
    pub signer: Daemon,
    /// The approver process.
    pub approver: Daemon,
    /// The PKI (holds the temp dir).
    pub pki: Pki,
}

impl Stack {
    /// `init` with the default key type, then start both daemons.
    pub fn start() -> Stack {
        Stack::start_with(&[])
    }

    /// `init` with extra arguments (e.g. `["--key-type", "ed25519"]`), then
    /// start both daemons.
    pub fn start_with(init_args: &[&str]) -> Stack {
        Stack::start_configured(init_args, |_| {}, |_| {})
    }

    /// `init` with `init_args`, then `signer_cfg` and `approver_cfg` may
    /// edit `signer.toml` and `approver.toml` (after the harness set the
    /// listen addresses and the signer endpoint) before both daemons start.
    pub fn start_configured(
        init_args: &[&str],
        signer_cfg: impl FnOnce(&mut toml::Table),
        approver_cfg: impl FnOnce(&mut toml::Table),
    ) -> Stack {
        let pki = Pki::init_with(&bin("certsign-signer"), "ca", init_args, &[]);
        let signer = signer_spawn(&pki, "127.0.0.1:0", signer_cfg).start();
        let approver = approver_spawn(&pki, &signer.addr, approver_cfg).start();
        Stack {
            dir: pki.dir.clone(),
            signer,
            approver,
            pki,
        }
    }

    /// Pins both daemons' listen addresses in their configs to the ports
    /// they got, so [`Daemon::restart`] brings them back where clients and
    /// the approver's signer endpoint expect them.
    pub fn pin_ports(&self) {
        let signer = self.signer.addr.clone();
        edit_toml(&self.pki.signer_toml(), |t| {
            t.insert("listen".into(), signer.into());
        });
        let approver = self.approver.addr.clone();
        edit_toml(&self.pki.approver_toml(), |t| {
            t.insert("listen".into(), approver.into());
        });
    }

    /// Stops the approver and starts it again on the same address (the
    /// ports pinned first), as an operator's restart: open connections
    /// drop, clients reconnect to the same URL.
    pub fn restart_approver(&mut self) {
        self.pin_ports();
        self.approver.restart();
    }

    /// `DIR/ca.crt`.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The CA certificate PEM.
    pub fn ca_pem(&self) -> String {
        self.pki.ca_pem()
    }

    /// The admin's certificate and key.
    pub fn admin(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.join("admin/admin.crt"),
            self.dir.join("admin/admin.key"),
        )
    }

    /// The init admin (CN admin, O system:masters).
    pub fn admin_ident(&self) -> Ident {
        self.pki.admin_ident()
    }

    /// The approver's own TLS identity (the signer's only allowed client).
    pub fn approver_ident(&self) -> Ident {
        self.pki.approver_ident()
    }

    /// Mints an identity with the stack's CA (test setup only).
    pub fn mint(&self, spec: &MintSpec<'_>) -> Ident {
        self.pki.mint(spec)
    }

    /// An approver client as `ident` (None: no client certificate).
    pub fn approver_client(&self, ident: Option<&Ident>) -> ApproverClient<Channel> {
        ApproverClient::new(channel(&self.approver.addr, &self.ca_pem(), ident))
            .max_decoding_message_size(64 << 20)
    }

    /// A signer client as `ident`.
    pub fn signer_client(&self, ident: Option<&Ident>) -> SignerClient<Channel> {
        SignerClient::new(channel(&self.signer.addr, &self.ca_pem(), ident))
    }

    /// The signer's journal path.
    pub fn journal_path(&self) -> PathBuf {
        self.dir.join("signer/journal.jsonl")
    }

    /// The approver's SQLite database path.
    pub fn db_path(&self) -> PathBuf {
        self.dir.join("approver/approver.db")
    }

    /// A `certctl` command configured as the admin against this stack.
    pub fn certctl(&self) -> Command {
        let mut c = Command::new(bin("certctl"));
        c.arg("--config")
            .arg(self.dir.join("admin/certctl.toml"))
            .arg("--server")
            .arg(format!("https://{}", self.approver.addr));
        c
    }

    /// The whole user-and-admin flow with `certctl`: `user` (cert, key)
    /// applies the manifest file `manifest`, the admin approves `name`,
    /// and `certctl certificate wait` writes the issued chain to `out`.
    pub fn apply_approve_wait(
        &self,
        user: &(PathBuf, PathBuf),
        manifest: &Path,
        name: &str,
        out: &Path,
    ) {
        run_ok(
            self.certctl()
                .arg("--cert")
                .arg(&user.0)
                .arg("--key")
                .arg(&user.1)
                .args(["apply", "-f"])
                .arg(manifest),
        );
        run_ok(self.certctl().args(["certificate", "approve", name]));
        run_ok(
            self.certctl()
                .args(["certificate", "wait", name, "--timeout", "60s", "--out"])
                .arg(out),
        );
    }

    /// A certificate issued the way a user gets one with `certctl`: a
    /// requestor makes the key and request `name` with `create csr`
    /// (`subject`, `signer_name`, lifetime `expiration` such as "10m"), the
    /// admin approves it and `certificate wait` writes the chain. Returns
    /// (`DIR/<name>.crt`, `DIR/<name>.key`).
    pub fn issue_with_certctl(
        &self,
        name: &str,
        subject: &str,
        signer_name: &str,
        expiration: &str,
    ) -> (PathBuf, PathBuf) {
        let requestor = self.user(&format!("{name}-requestor"), &["dev"]);
        let (crt, key) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        run_ok(
            self.certctl()
                .arg("--cert")
                .arg(&requestor.0)
                .arg("--key")
                .arg(&requestor.1)
                .args(["create", "csr", name, "--subject", subject])
                .args(["--signer-name", signer_name, "--expiration", expiration])
                .arg("--key-out")
                .arg(&key),
        );
        run_ok(self.certctl().args(["certificate", "approve", name]));
        run_ok(
            self.certctl()
                .args(["certificate", "wait", name, "--timeout", "60s", "--out"])
                .arg(&crt),
        );
        (crt, key)
    }

    /// Makes a user identity `cn` (groups `orgs`) signed by the CA with
    /// `openssl` (setup only: the CA key is read from the init directory),
    /// returning (cert, key).
    pub fn user(&self, cn: &str, orgs: &[&str]) -> (PathBuf, PathBuf) {
        let key = self.dir.join(format!("{cn}.key"));
        let csr = self.dir.join(format!("{cn}.csr"));
        let crt = self.dir.join(format!("{cn}.crt"));
        let ext = self.dir.join(format!("{cn}.ext"));
        let mut subj = format!("/CN={cn}");
        for o in orgs {
            subj.push_str(&format!("/O={o}"));
        }
        run_ok(
            Command::new("openssl")
                .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
                .args([
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-subj",
                    &subj,
                    "-keyout",
                    key.to_str().unwrap(),
                    "-out",
                    csr.to_str().unwrap(),
                ]),
        );
        std::fs::write(
            &ext,
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
        )
        .unwrap();
        run_ok(Command::new("openssl").args([
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            self.ca().to_str().unwrap(),
            "-CAkey",
            self.dir.join("signer/ca.key").to_str().unwrap(),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            ext.to_str().unwrap(),
            "-out",
            crt.to_str().unwrap(),
        ]));
        (crt, key)
    }
}
