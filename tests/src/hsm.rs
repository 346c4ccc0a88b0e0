//! SoftHSM2 tokens for tests: each in its own directory (a private
//! `SOFTHSM2_CONF` handed to the child processes, so tests run in
//! parallel), a PIN in a 0600 file, and keys generated inside the token
//! with `pkcs11-tool` (the private key never exists outside it).
//!
//! It only sets tokens up; it never signs anything itself.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{require_tool, run_ok};

/// SoftHSM2's PKCS#11 module (Debian/Ubuntu path).
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// One SoftHSM2 token.
#[derive(Debug)]
pub struct SoftHsm {
    _tmp: tempfile::TempDir,
    /// The token directory's parent (config, PIN files, exports).
    pub dir: PathBuf,
    /// The `SOFTHSM2_CONF` file.
    pub conf: PathBuf,
    /// The token label.
    pub label: String,
    /// The user PIN.
    pub pin: String,
}

impl SoftHsm {
    /// A fresh token labelled `label` with user PIN `pin` (SO PIN 5678),
    /// the PIN also in the 0600 file [`SoftHsm::pin_file`].
    pub fn new(label: &str, pin: &str) -> SoftHsm {
        require_tool("softhsm2-util", "apt-get install softhsm2");
        require_tool("pkcs11-tool", "apt-get install opensc");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir(dir.join("tokens")).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!("directories.tokendir = {}/tokens/\n", dir.display()),
        )
        .unwrap();
        run_ok(
            Command::new("softhsm2-util")
                .env("SOFTHSM2_CONF", &conf)
                .args(["--init-token", "--free", "--label", label])
                .args(["--so-pin", "5678", "--pin", pin]),
        );
        let hsm = SoftHsm {
            _tmp: tmp,
            dir,
            conf,
            label: label.to_string(),
            pin: pin.to_string(),
        };
        hsm.write_pin_file("pin", pin);
        hsm
    }

    /// The file holding the right PIN.
    pub fn pin_file(&self) -> PathBuf {
        self.dir.join("pin")
    }

    /// Writes `pin` to DIR/`name` (mode 0600) and returns the path.
    pub fn write_pin_file(&self, name: &str, pin: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, format!("{pin}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// The environment a process needs to see this token.
    pub fn env(&self) -> (&'static str, &Path) {
        ("SOFTHSM2_CONF", &self.conf)
    }

    /// Generates an EC P-256 key pair labelled `label` inside the token and
    /// returns its public key (SubjectPublicKeyInfo DER).
    pub fn generate_ec_p256(&self, label: &str) -> Vec<u8> {
        let pkcs11_tool = || {
            let mut c = Command::new("pkcs11-tool");
            c.env("SOFTHSM2_CONF", &self.conf).args([
                "--module",
                SOFTHSM_MODULE,
                "--token-label",
                &self.label,
            ]);
            c
        };
        run_ok(
            pkcs11_tool()
                .args(["--login", "--pin", &self.pin, "--keypairgen"])
                .args(["--key-type", "EC:prime256v1", "--label", label]),
        );
        let out = self.dir.join(format!("{label}.pub.der"));
        run_ok(
            pkcs11_tool()
                .args(["--read-object", "--type", "pubkey", "--label", label, "-o"])
                .arg(&out),
        );
        std::fs::read(out).unwrap()
    }

    /// The RFC 7512 URI of the private key `object`, PIN from `pin_file`,
    /// with or without `module-path`.
    pub fn uri(&self, object: &str, pin_file: &Path, with_module: bool) -> String {
        let module = if with_module {
            format!("module-path={SOFTHSM_MODULE}&")
        } else {
            String::new()
        };
        format!(
            "pkcs11:token={};object={object};type=private?{module}pin-source=file:{}",
            self.label,
            pin_file.display()
        )
    }
}
