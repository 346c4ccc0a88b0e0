//! The journal: the signer's issuance record and audit log in one file.
//!
//! Append-only JSON lines. Each line carries its sequence number (`seq`,
//! from 1) and `prev`, the SHA-256 (hex) of the previous line's bytes (64
//! zeros for the first line). A line is fsynced before the answer it records
//! leaves the process; concurrent appends share one fsync (group commit: a
//! single writer thread drains every queued line, writes them, fsyncs once;
//! when others are appending too, its oldest line waits up to 2 ms for
//! more).
//!
//! Truncation: a hash chain alone cannot show that lines were cut off the
//! end, so after every batch the writer seals the tail in a small side file
//! `<journal>.head` (`{"seq":N,"hash":"…"}`, written to a temp file, fsynced,
//! renamed, directory fsynced). `verify` requires the line at `head.seq` to
//! exist and hash to `head.hash`. Lines after the head are accepted (a crash
//! between the journal fsync and the head rename) and re-sealed at the next
//! start. Cutting the tail AND forging the head needs write access to both
//! files; ship the head off-host if that matters.
//!
//! At start the whole file is verified (a broken chain refuses to start) and
//! the index (uids, serials, revoked serials) is rebuilt from it, so retries
//! are answered identically and revocations stay revoked after a restart. The index keeps where each issued line is and its hash,
//! not the certificate: a retry reads its line back ([`read_issued`]) and
//! gets nothing unless the bytes still hash to what was written. A final
//! line without its newline (torn write during a crash, after the head) is
//! never an answered request and is cut off.
//! This module never holds key material and never rewrites a sealed line.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::csr::sha256;
use crate::ids::{EvidenceKind, Serial, Uid};
pub use crate::sharded::ShardedMap;

/// A journal problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// I/O failure (the request gets UNAVAILABLE).
    #[error("journal {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// The chain is broken: names the first bad line (1-based).
    #[error("journal {path}: line {line}: {msg}")]
    Corrupt {
        /// Journal path.
        path: PathBuf,
        /// First bad line.
        line: u64,
        /// What is wrong.
        msg: String,
    },
    /// The writer thread is gone.
    #[error("journal writer stopped")]
    Stopped,
}

/// What happened, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A certificate was issued.
    Issued {
        /// metadata.uid (the idempotency key).
        uid: Uid,
        /// metadata.name.
        name: String,
        /// spec.signer_name.
        signer_name: String,
        /// spec.username.
        requestor: String,
        /// SHA-256 of the CSR DER, hex.
        csr_sha256: String,
        /// How approval was proven.
        evidence: EvidenceKind,
        /// Who: the approving admins, the renewed serial, or the OS user.
        by: Vec<String>,
        /// The allow-listed caller (or "console").
        caller: String,
        /// Serial, hex.
        serial: Serial,
        /// Validity end, RFC 3339.
        not_after: String,
        /// The certificate then the CA, PEM.
        certificate: String,
        /// A renewal: SHA-256 (hex) of the certificate it replaces.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        renewal_of: Option<String>,
    },
    /// A request was refused.
    Refused {
        /// metadata.uid.
        uid: Uid,
        /// metadata.name.
        name: String,
        /// spec.signer_name.
        signer_name: String,
        /// spec.username.
        requestor: String,
        /// SHA-256 of the CSR DER when it parsed.
        csr_sha256: String,
        /// The caller.
        caller: String,
        /// The refusal text (names the rule).
        reason: String,
    },
    /// A certificate was revoked (at most one line per serial).
    Revoked {
        /// Serial, hex.
        serial: Serial,
        /// SHA-256 of the certificate DER, hex.
        certificate_sha256: String,
        /// The issuing profile from the certificate's lineage ("" without).
        signer_name: String,
        /// "holder" or "admin NAME".
        by: String,
        /// The allow-listed caller.
        caller: String,
        /// Reason, revocation date and the certificate's notAfter.
        #[serde(flatten)]
        revocation: Revocation,
    },
    /// A revocation was refused.
    RevocationRefused {
        /// SHA-256 of the certificate DER sent, hex.
        certificate_sha256: String,
        /// The caller.
        caller: String,
        /// The refusal text (names the rule).
        reason: String,
    },
}

/// A journal line as read back.
#[derive(Debug, Deserialize)]
struct Line {
    seq: u64,
    prev: String,
    /// Required in every line; verification checks the chain, not times.
    #[allow(dead_code)]
    time: String,
    #[serde(flatten)]
    event: Event,
}

/// A journal line as written: the same fields in the same order as
/// [`Line`], borrowing the event instead of copying it.
#[derive(Debug, Serialize)]
struct LineOut<'a> {
    seq: u64,
    prev: &'a str,
    time: String,
    #[serde(flatten)]
    event: &'a Event,
}

#[derive(Debug, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
}

/// An issued certificate as the index keeps it: not the certificate
/// itself but where its line is, so the index stays small (~0.5 KiB per
/// issued certificate instead of the whole chain) and a retry reads the
/// answer back with [`read_issued`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// SHA-256 of the CSR DER, hex.
    pub csr_sha256: String,
    /// Its journal line.
    pub line: LineAt,
}

/// Where a line sits in the journal, and the SHA-256 of its bytes (what
/// the next line's `prev` chains to), so a read-back can tell it got the
/// very line that was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineAt {
    /// Sequence number.
    pub seq: u64,
    /// Byte offset of the line in the journal.
    pub offset: u64,
    /// Length without the newline.
    pub len: u64,
    /// SHA-256 of those bytes.
    pub sha256: [u8; 32],
}

/// What the journal knows, rebuilt from the file at start.
#[derive(Debug, Default)]
pub struct Index {
    /// uid → issuance.
    pub by_uid: ShardedMap<Uid, Issued>,
    /// CSR hash → uid.
    pub by_csr: ShardedMap<String, Uid>,
    /// Every serial issued.
    pub serials: ShardedMap<Serial, ()>,
    /// Every serial revoked, in serial order (CRLs list them so).
    pub revoked: BTreeMap<Serial, Revocation>,
    /// The highest cRLNumber signed by this process.
    pub last_crl_number: u64,
    /// Renewed certificate (SHA-256, hex) → the uid that renewed it.
    pub renewed: ShardedMap<String, Uid>,
}

/// A journaled revocation, as the index keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// RFC 5280 CRLReason number.
    pub reason: i32,
    /// The revocation date (whole seconds), as every CRL lists it.
    #[serde(with = "humantime_serde")]
    pub revoked_at: SystemTime,
    /// The certificate's notAfter: CRLs list it until then.
    #[serde(with = "humantime_serde")]
    pub not_after: SystemTime,
}

impl Index {
    pub(crate) fn record(&mut self, e: &Event, line: LineAt) {
        if let Event::Issued {
            uid,
            csr_sha256,
            serial,
            renewal_of,
            ..
        } = e
        {
            if let Some(r) = renewal_of {
                self.renewed.insert(r.clone(), uid.clone());
            }
            self.by_uid.insert(
                uid.clone(),
                Issued {
                    csr_sha256: csr_sha256.clone(),
                    line,
                },
            );
            self.by_csr.insert(csr_sha256.clone(), uid.clone());
            self.serials.insert(serial.clone(), ());
        }
        if let Event::Revoked {
            serial, revocation, ..
        } = e
        {
            self.revoked.entry(serial.clone()).or_insert(*revocation);
        }
    }

    /// Whether this serial's revocation was journaled.
    pub fn is_revoked(&self, serial: &Serial) -> bool {
        self.revoked.contains_key(serial)
    }
}

/// The certificate chain and serial of the issued line at `at`, read back
/// from the journal for a retried request. Refuses a line whose bytes no
/// longer hash to what was written, or that is not `uid`'s issuance.
pub fn read_issued(path: &Path, at: &LineAt, uid: &Uid) -> Result<(String, Serial), JournalError> {
    let corrupt = |msg: &str| JournalError::Corrupt {
        path: path.to_path_buf(),
        line: at.seq,
        msg: msg.to_string(),
    };
    let len = usize::try_from(at.len).map_err(|_| corrupt("line too long"))?;
    let mut bytes = vec![0u8; len];
    File::open(path)
        .and_then(|f| f.read_exact_at(&mut bytes, at.offset))
        .map_err(|e| JournalError::Io(path.to_path_buf(), e))?;
    if sha256(&bytes) != at.sha256 {
        return Err(corrupt("changed since it was written"));
    }
    let line: Line = serde_json::from_slice(&bytes).map_err(|_| corrupt("not a journal line"))?;
    match line.event {
        Event::Issued {
            uid: u,
            certificate,
            serial,
            ..
        } if u == *uid && line.seq == at.seq => Ok((certificate, serial)),
        _ => Err(corrupt("not the issuance the index names")),
    }
}

fn head_path(journal: &Path) -> PathBuf {
    let mut s = journal.as_os_str().to_owned();
    s.push(".head");
    PathBuf::from(s)
}

const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Summary of a verified journal.
#[derive(Debug)]
pub struct Verified {
    /// Number of lines.
    pub lines: u64,
    /// Hash of the last line.
    pub last_hash: String,
    /// Byte length of the verified, newline-terminated part.
    pub good_len: u64,
    /// Index rebuilt from the lines.
    pub index: Index,
}

/// Verify the chain and the sealed head. `allow_torn_tail` tolerates one
/// unterminated last line beyond the head (start-up repair).
pub fn verify(path: &Path, allow_torn_tail: bool) -> Result<Verified, JournalError> {
    let corrupt = |line: u64, msg: String| JournalError::Corrupt {
        path: path.to_path_buf(),
        line,
        msg,
    };
    // The head first: it is sealed only after the lines it names are on
    // disk, so reading it first never makes a live journal look truncated.
    let head: Option<Head> = match std::fs::read(head_path(path)) {
        Ok(h) => Some(
            serde_json::from_slice(&h)
                .map_err(|e| corrupt(0, format!("head file unreadable: {e}")))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(JournalError::Io(head_path(path), e)),
    };
    // Read line by line, not the whole file at once: the journal grows
    // with every issuance, and start-up must not need its size in memory.
    let mut reader = match File::open(path) {
        Ok(f) => Some(BufReader::with_capacity(1 << 16, f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(JournalError::Io(path.to_path_buf(), e)),
    };
    let mut prev = ZERO.to_string();
    let mut seq = 0u64;
    let mut good_len = 0u64;
    let mut index = Index::default();
    let mut head_seen = false;
    let mut any = false;
    let mut buf = Vec::new();
    while let Some(r) = reader.as_mut() {
        buf.clear();
        let read = r
            .read_until(b'\n', &mut buf)
            .map_err(|e| JournalError::Io(path.to_path_buf(), e))?;
        if read == 0 {
            break;
        }
        any = true;
        let n = seq + 1;
        let terminated = buf.last() == Some(&b'\n');
        let bytes = if terminated {
            &buf[..buf.len() - 1]
        } else {
            &buf[..]
        };
        if !terminated {
            let beyond_head = head.as_ref().is_none_or(|h| h.seq < n);
            if allow_torn_tail && beyond_head {
                break;
            }
            return Err(corrupt(
                n,
                "line is not newline-terminated (torn or truncated)".into(),
            ));
        }
        let line: Line = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(n, format!("not a journal line: {e}")))?;
        if line.seq != n {
            return Err(corrupt(
                n,
                format!(
                    "sequence number is {}, expected {n} (line dropped or reordered)",
                    line.seq
                ),
            ));
        }
        if line.prev != prev {
            return Err(corrupt(
                n,
                format!(
                    "prev hash does not match line {} (that line was edited, or lines were dropped or reordered)",
                    n - 1
                ),
            ));
        }
        let hash = sha256(bytes);
        prev = hex::encode(hash);
        seq = n;
        let at = LineAt {
            seq: n,
            offset: good_len,
            len: bytes.len() as u64,
            sha256: hash,
        };
        good_len += bytes.len() as u64 + 1;
        if let Some(h) = &head
            && h.seq == n
        {
            {
                if h.hash != prev {
                    return Err(corrupt(
                        n,
                        "hash differs from the sealed head (the line was edited)".into(),
                    ));
                }
                head_seen = true;
            }
        }
        index.record(&line.event, at);
    }
    if head.is_none() && any {
        // open() seals before the first append, so a journal with lines and
        // no head has lost it: deleting the head must not hide a truncation.
        return Err(corrupt(
            1,
            format!(
                "the sealed head file {} is missing (copy it together with the journal: without it a truncated tail cannot be detected)",
                head_path(path).display()
            ),
        ));
    }
    if let Some(h) = &head
        && !head_seen
        && h.seq > 0
    {
        {
            return Err(corrupt(
                seq + 1,
                format!(
                    "missing: the sealed head says {} lines, the file has {seq} (tail truncated)",
                    h.seq
                ),
            ));
        }
    }
    Ok(Verified {
        lines: seq,
        last_hash: prev,
        good_len,
        index,
    })
}

type Reply = tokio::sync::oneshot::Sender<Result<LineAt, JournalError>>;
/// An append waiting for the writer: the event, where to answer, and when
/// it was queued.
type Queued = (Arc<Event>, Reply, Instant);

/// The append side: a writer thread with group commit.
#[derive(Debug, Clone)]
pub struct Journal {
    tx: mpsc::Sender<Queued>,
}

impl Journal {
    /// Verify the file, repair a torn tail, re-seal the head, start the writer.
    pub fn open(path: &Path) -> Result<(Self, Index), JournalError> {
        let io = |e| JournalError::Io(path.to_path_buf(), e);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        // One writer per journal: `issue` while `serve` runs would fork the chain.
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |e| {
                io(std::io::Error::other(format!(
                    "in use by another certsign-signer process (stop `serve` first): {e}"
                )))
            },
        )?;
        let v = verify(path, true)?;
        if file.metadata().map_err(io)?.len() != v.good_len {
            tracing::warn!(journal = %path.display(), "cutting an unterminated last line (torn write, never answered)");
            file.set_len(v.good_len).map_err(io)?;
        }
        file.sync_all().map_err(io)?;
        seal(path, v.lines, &v.last_hash).map_err(io)?;
        let (tx, rx) = mpsc::channel::<Queued>();
        let writer = Writer {
            path: path.to_path_buf(),
            file,
            len: v.good_len,
            seq: v.lines,
            prev: v.last_hash,
        };
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || writer.run(rx))
            .map_err(io)?;
        Ok((Self { tx }, v.index))
    }

    /// Append one event; resolves once it is on disk. Returns where its
    /// line is. Shared, not copied: the caller indexes the same event
    /// afterwards.
    pub async fn append(&self, event: Arc<Event>) -> Result<LineAt, JournalError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send((event, tx, Instant::now()))
            .map_err(|_| JournalError::Stopped)?;
        rx.await.map_err(|_| JournalError::Stopped)?
    }

    /// As [`Journal::append`], for non-async callers (init, issue).
    pub fn append_blocking(&self, event: Event) -> Result<LineAt, JournalError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send((Arc::new(event), tx, Instant::now()))
            .map_err(|_| JournalError::Stopped)?;
        rx.blocking_recv().map_err(|_| JournalError::Stopped)?
    }
}

fn seal(path: &Path, seq: u64, hash: &str) -> std::io::Result<()> {
    let head = head_path(path);
    let tmp = head.with_extension("head.tmp");
    let body = serde_json::to_vec(&Head {
        seq,
        hash: hash.to_string(),
    })?;
    let mut f = File::create(&tmp)?;
    f.write_all(&body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &head)?;
    if let Some(dir) = head.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A batch that drained the queue with at least this many lines shows
/// concurrent appends; a lone append (no concurrency) is written at once.
const COALESCE_MIN: usize = 2;

/// How long the oldest line of such a batch may wait for more lines. Each
/// batch costs three fsyncs and a file rename (the journal, the head's temp
/// file, the directory); under load a 2 ms wait cuts the journal thread's
/// CPU per certificate by about a quarter. Nothing is answered before its
/// batch is on disk, so durability is unchanged.
const COALESCE_WAIT: Duration = Duration::from_millis(2);

/// What is left of [`COALESCE_WAIT`] for a batch whose oldest line has
/// been queued for `waited`. Counted from the line's arrival, not from when
/// the writer picks the batch up: lines that queued while the previous
/// batch was being flushed have already waited, and a full wait after every
/// flush would hold them for the flush and the whole wait, leaving the cores
/// idle at a fixed number of calls in flight.
fn coalesce_wait(waited: Duration) -> Duration {
    COALESCE_WAIT.saturating_sub(waited)
}

struct Writer {
    path: PathBuf,
    file: File,
    /// Bytes of complete, acknowledged lines in `file`.
    len: u64,
    seq: u64,
    prev: String,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Queued>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            if batch.len() >= COALESCE_MIN {
                // Others are appending too: let more of them share this
                // batch's fsyncs and seal.
                let rest = coalesce_wait(batch[0].2.elapsed());
                if !rest.is_zero() {
                    std::thread::sleep(rest);
                }
                batch.extend(rx.try_iter());
            }
            let (seq0, prev0) = (self.seq, self.prev.clone());
            let mut buf = Vec::new();
            let mut lines = Vec::with_capacity(batch.len());
            for (event, _, _) in &batch {
                self.seq += 1;
                let time = time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                let line = LineOut {
                    seq: self.seq,
                    prev: &self.prev,
                    time,
                    event,
                };
                // Serializing our own plain struct cannot fail; fall back to
                // an empty object rather than panic if it somehow did.
                let bytes = serde_json::to_vec(&line).unwrap_or_else(|_| b"{}".to_vec());
                let hash = sha256(&bytes);
                self.prev = hex::encode(hash);
                lines.push(LineAt {
                    seq: self.seq,
                    offset: self.len + buf.len() as u64,
                    len: bytes.len() as u64,
                    sha256: hash,
                });
                buf.extend_from_slice(&bytes);
                buf.push(b'\n');
            }
            let res = self
                .file
                .write_all(&buf)
                .and_then(|()| self.file.sync_data())
                .and_then(|()| seal(&self.path, self.seq, &self.prev));
            match &res {
                Ok(()) => self.len += buf.len() as u64,
                Err(e) => {
                    // Nothing in this batch was acknowledged: roll the
                    // counters back and cut all of it that reached the file.
                    // All of it, even when only the seal failed after the
                    // lines were written in full: their seq numbers are
                    // handed out again, so keeping them would fork the chain.
                    tracing::error!(journal = %self.path.display(), error = %e, "journal append failed");
                    self.seq = seq0;
                    self.prev = prev0;
                    let _ = self.file.set_len(self.len);
                }
            }
            for ((_, reply, _), at) in batch.into_iter().zip(lines) {
                let _ = reply.send(res.as_ref().map(|()| at).map_err(|e| {
                    JournalError::Io(
                        self.path.clone(),
                        std::io::Error::new(e.kind(), e.to_string()),
                    )
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn issued(uid: &str, serial: &str) -> Event {
        Event::Issued {
            uid: uid.into(),
            name: format!("n-{uid}"),
            signer_name: "example.com/x".into(),
            requestor: "alice".into(),
            csr_sha256: format!("{:0>64}", uid),
            evidence: EvidenceKind::Console,
            by: vec!["root".into()],
            caller: "console".into(),
            serial: serial.into(),
            not_after: "2030-01-01T00:00:00Z".into(),
            certificate: format!("-----BEGIN CERTIFICATE-----\n{uid}\n-----END CERTIFICATE-----\n"),
            renewal_of: None,
        }
    }

    #[test]
    fn issued_lines_are_read_back_from_where_the_index_says() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let at_a = {
            let (journal, _) = Journal::open(&path).unwrap();
            journal.append_blocking(refused("r")).unwrap();
            let at_a = journal.append_blocking(issued("a", "0a")).unwrap();
            journal.append_blocking(issued("b", "0b")).unwrap();
            at_a
        };
        let (cert, serial) = read_issued(&path, &at_a, &"a".into()).unwrap();
        assert!(cert.contains("\na\n"), "{cert}");
        assert_eq!(serial, "0a".into());
        // The index rebuilt at start points at the same lines.
        let v = verify(&path, false).unwrap();
        assert_eq!(v.index.by_uid.get("a").unwrap().line, at_a);
        let at_b = v.index.by_uid.get("b").unwrap().line;
        assert_eq!(
            read_issued(&path, &at_b, &"b".into()).unwrap().1,
            "0b".into()
        );
        assert_eq!(v.index.by_uid.len(), 2);
        // Another uid's line is not this uid's answer.
        assert!(matches!(
            read_issued(&path, &at_b, &"a".into()),
            Err(JournalError::Corrupt { .. })
        ));
        // A line changed on disk is refused, not returned.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace("\"serial\":\"0a\"", "\"serial\":\"0c\""),
        )
        .unwrap();
        let err = read_issued(&path, &at_a, &"a".into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("changed since it was written"), "{err}");
    }

    fn refused(uid: &str) -> Event {
        Event::Refused {
            uid: uid.into(),
            name: uid.into(),
            signer_name: "certsign.io/identity".into(),
            requestor: "jane".into(),
            csr_sha256: String::new(),
            caller: "console".into(),
            reason: "test".into(),
        }
    }

    #[test]
    fn a_batch_waits_for_more_lines_only_until_its_oldest_has_waited_2_ms() {
        assert_eq!(coalesce_wait(Duration::ZERO), COALESCE_WAIT);
        assert_eq!(
            coalesce_wait(Duration::from_micros(1_500)),
            Duration::from_micros(500)
        );
        assert_eq!(coalesce_wait(COALESCE_WAIT), Duration::ZERO);
        assert_eq!(coalesce_wait(Duration::from_secs(1)), Duration::ZERO);
    }

    #[test]
    fn a_failed_seal_takes_its_lines_back_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let (journal, _) = Journal::open(&path).unwrap();
        assert_eq!(journal.append_blocking(refused("a")).unwrap().seq, 1);
        // The next batch's line is written and fsynced, then sealing the
        // head fails (its temp file cannot be created): the append is
        // refused and its line must not stay behind, since its seq number
        // is handed out again.
        let tmp = dir.path().join("journal.jsonl.head.tmp");
        std::fs::create_dir(&tmp).unwrap();
        assert!(journal.append_blocking(refused("b")).is_err());
        std::fs::remove_dir(&tmp).unwrap();
        assert_eq!(journal.append_blocking(refused("c")).unwrap().seq, 2);
        let v = verify(&path, false).unwrap();
        assert_eq!(v.lines, 2);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("\"uid\":\"b\""), "{text}");
    }
}
