//! Revocation: a `RevocationStatement` the signer verified itself
//! (`certsign_evidence::verify_revocation`: the holder with the
//! certificate's key, or one admin in a group of the certificate's issuing
//! profile) is journaled exactly once per serial; from then on the index
//! says the serial is revoked (CRLs list it, renewals from it are refused).
//! A repeat for a revoked serial is answered with the first revocation.
//!
//! This module must never journal a revocation it did not verify, never
//! write a second line for a serial, and never answer before the line is on
//! disk. Refusals are journaled too.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use certsign_evidence as evidence;
use certsign_proto::v1::{Revocation as Asked, SignResponse};
use prost_types::Timestamp;

use crate::authority::{Authority, SignError};
use crate::csr::sha256;
use crate::ids::Serial;
use crate::journal::{Event, Revocation};

impl Authority {
    /// Verify and journal a revocation; the answer names the serial and the
    /// revocation date (`replayed` on a repeat).
    pub async fn revoke(&self, r: &Asked, caller: &str) -> Result<SignResponse, SignError> {
        let now = SystemTime::now();
        let profiles: Vec<_> = (self.config.profiles.iter())
            .map(|p| (p.signer_name.as_str(), p.approver_groups.as_slice()))
            .collect();
        let proof = match &r.statement {
            None => Err(SignError::Invalid(
                "revocation.statement: Required value".into(),
            )),
            Some(st) => Ok(evidence::verify_revocation(
                st,
                &r.certificate,
                self.ca.cert_der(),
                &self.trust,
                &profiles,
                self.config.statement_max_age,
                now,
            )?),
        };
        let certificate_sha256 = hex::encode(sha256(&r.certificate));
        let proof = match proof {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(caller, reason = %e, "revocation refused");
                let (caller, reason) = (caller.to_string(), e.to_string());
                let event = Event::RevocationRefused {
                    certificate_sha256,
                    caller,
                    reason,
                };
                self.journal.append(Arc::new(event)).await?;
                return Err(e);
            }
        };
        let serial = Serial(proof.serial);
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut answer = SignResponse {
            serial_number: serial.0.clone(),
            time: Some(Timestamp::from(UNIX_EPOCH + Duration::from_secs(secs))),
            ..SignResponse::default()
        };
        // One revocation at a time from the index check until its line is
        // indexed: a serial is never journaled twice.
        let guard = self.revoking.clone().lock_owned().await;
        if let Some(first) = self.lock()?.index.revoked.get(&serial) {
            answer.time = Some(Timestamp::from(first.revoked_at));
            answer.replayed = true;
            return Ok(answer);
        }
        let event = Event::Revoked {
            serial,
            certificate_sha256,
            signer_name: proof.signer_name.unwrap_or_default(),
            by: proof.by.to_string(),
            caller: caller.to_string(),
            revocation: Revocation {
                reason: proof.reason as i32,
                revoked_at: UNIX_EPOCH + Duration::from_secs(secs),
                not_after: proof.not_after,
            },
        };
        self.journal_and_index(Arc::new(event), guard).await?;
        tracing::info!(serial = answer.serial_number, caller, "revoked");
        Ok(answer)
    }
}
