//! The group-commit batch, as both backends' writers run it: the queued
//! write operations, their answers, and the rules every writer follows.
//! A writer takes everything queued (up to [`MAX_BATCH`] operations), runs
//! it in one transaction, advances the resource version only for
//! operations whose writes stand, and answers each caller through
//! [`settle`] once the transaction's fate is known: its own result after
//! the commit, an error for every operation otherwise.
//!
//! This module must never answer an operation before its batch's
//! transaction has committed, and never decide policy (update functions
//! and guards come from callers).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use certsign_proto::v1::CertificateSigningRequest;
use tokio::sync::oneshot;

use super::types::{CreateGuard, ForwardItem, StoreError, UpdateError, WriterStats, set_rv};
use crate::decision::state_of;

/// The most write operations one transaction (one fsync) carries.
pub const MAX_BATCH: usize = 512;

/// Write operations that may wait for the writer before callers are slowed
/// down (back-pressure, not a limit on anything a client can see).
pub(super) const QUEUE: usize = 8192;

/// Counts of the writer's work since the store was opened.
#[derive(Debug, Default)]
pub(super) struct Counts {
    /// Transactions committed.
    commits: AtomicU64,
    /// Operations answered from committed transactions.
    ops: AtomicU64,
}

impl Counts {
    pub(super) fn stats(&self) -> WriterStats {
        WriterStats {
            commits: self.commits.load(Ordering::Relaxed),
            ops: self.ops.load(Ordering::Relaxed),
        }
    }
}

/// Holds the writer between batches while alive (see
/// [`super::Store::pause_writes`]); dropping it lets the writer go on.
#[derive(Debug)]
pub struct WritePause {
    pub(super) _release: oneshot::Sender<()>,
}

pub(super) fn writer_gone() -> StoreError {
    StoreError::NotStored("the store's writer stopped or failed before answering".into())
}

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What an update function did with the object.
pub(super) enum Applied {
    Changed,
    Unchanged,
    Refused,
    Panicked,
}

/// An update function with its caller's typed answer channel, so the writer
/// can run functions of any refusal type.
pub(super) trait UpdateFn: Send {
    fn apply(&mut self, obj: &mut CertificateSigningRequest) -> Applied;
    fn answer(self: Box<Self>, r: Result<CertificateSigningRequest, StoreError>);
}

pub(super) struct TypedUpdate<F, E> {
    pub(super) f: Option<F>,
    pub(super) refused: Option<E>,
    pub(super) reply: oneshot::Sender<Result<CertificateSigningRequest, UpdateError<E>>>,
}

impl<F, E> UpdateFn for TypedUpdate<F, E>
where
    F: FnOnce(&mut CertificateSigningRequest) -> Result<bool, E> + Send,
    E: Send,
{
    fn apply(&mut self, obj: &mut CertificateSigningRequest) -> Applied {
        let Some(f) = self.f.take() else {
            return Applied::Unchanged;
        };
        // A panicking update function must not take the writer (and every
        // other caller's write) down with it.
        match std::panic::catch_unwind(AssertUnwindSafe(|| f(obj))) {
            Ok(Ok(true)) => Applied::Changed,
            Ok(Ok(false)) => Applied::Unchanged,
            Ok(Err(e)) => {
                self.refused = Some(e);
                Applied::Refused
            }
            Err(_) => Applied::Panicked,
        }
    }

    fn answer(self: Box<Self>, r: Result<CertificateSigningRequest, StoreError>) {
        let out = match (r, self.refused) {
            (Err(e), _) => Err(UpdateError::Store(e)),
            (Ok(_), Some(e)) => Err(UpdateError::Rejected(e)),
            (Ok(obj), None) => Ok(obj),
        };
        let _ = self.reply.send(out);
    }
}

/// Statements without an object result.
pub(super) enum Exec {
    /// Release `owner`'s lease and schedule the next attempt.
    RetryAt {
        name: String,
        at: i64,
        owner: Arc<str>,
    },
    /// Make unleased approved requests due at `at`.
    RetryAll {
        now: i64,
        at: i64,
    },
    /// SQLite start-up: make the queue due and void old leases.
    ResumeAll,
    /// Fill in a row's `expires` column where it was not computed yet.
    SetExpires {
        name: String,
        expires: i64,
    },
    Prune {
        cutoff: i64,
    },
    /// An inventory, revocation or CRL write.
    Certs(super::certs::CertWrite),
}

/// One queued write (or a pause of the writer).
pub(super) enum Op {
    Create {
        obj: Box<CertificateSigningRequest>,
        renewal: Vec<u8>,
        guard: CreateGuard,
        reply: Reply<CertificateSigningRequest>,
    },
    Update {
        name: String,
        f: Box<dyn UpdateFn>,
    },
    Delete {
        name: String,
        expected_rv: Option<i64>,
        reply: Reply<Option<CertificateSigningRequest>>,
    },
    Claim {
        now: i64,
        lease_until: i64,
        limit: u32,
        owner: Arc<str>,
        reply: Reply<Vec<ForwardItem>>,
    },
    Exec {
        what: Exec,
        reply: Reply<u64>,
    },
    /// Not a write: hold the writer until released (tests use it to make a
    /// batch of known content).
    Pause {
        started: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
    },
}

/// An operation's answer, sent once its transaction's fate is known:
/// `None` = committed (send the operation's own result), `Some(msg)` = not
/// committed (send an error).
pub(super) type Answer = Box<dyn FnOnce(Option<&str>) + Send>;

pub(super) fn answer<T: Send + 'static>(reply: Reply<T>, r: Result<T, StoreError>) -> Answer {
    Box::new(move |failed| {
        let _ = reply.send(match failed {
            Some(m) => Err(StoreError::NotStored(m.to_string())),
            None => r,
        });
    })
}

impl Op {
    /// The answer of an operation that never ran (its batch failed first).
    pub(super) fn unrun(self) -> Answer {
        match self {
            Op::Create { reply, .. } => answer(reply, Err(StoreError::NotStored(String::new()))),
            Op::Update { f, .. } => Box::new(move |m| {
                f.answer(Err(StoreError::NotStored(
                    m.unwrap_or_default().to_string(),
                )))
            }),
            Op::Delete { reply, .. } => answer(reply, Err(StoreError::NotStored(String::new()))),
            Op::Claim { reply, .. } => answer(reply, Err(StoreError::NotStored(String::new()))),
            Op::Exec { reply, .. } => answer(reply, Err(StoreError::NotStored(String::new()))),
            Op::Pause { .. } => Box::new(|_| {}),
        }
    }
}

/// Answers a batch's operations once its transaction's fate is known:
/// each its own result after a commit, every one an error otherwise
/// (`ops`: those the batch did not reach, which fail with it).
pub(super) fn settle(
    counts: &Counts,
    ops: std::vec::IntoIter<Op>,
    mut answers: Vec<Answer>,
    result: Result<(), StoreError>,
) {
    answers.extend(ops.map(Op::unrun));
    let n = answers.len();
    let failed = match result {
        Ok(()) => {
            counts.commits.fetch_add(1, Ordering::Relaxed);
            counts.ops.fetch_add(n as u64, Ordering::Relaxed);
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, operations = n, "store: a write transaction failed; none of its writes were stored");
            Some(e.to_string())
        }
    };
    for a in answers {
        a(failed.as_deref());
    }
}

/// An operation's answer and whether its savepoint must be rolled back;
/// `rv` advances to `next` when `wrote` says its result was written.
/// (Updates: [`update_outcome`].)
pub(super) fn outcome<T: Send + 'static>(
    reply: Reply<T>,
    r: Result<T, StoreError>,
    wrote: impl FnOnce(&T) -> bool,
    rv: &mut i64,
    next: i64,
) -> (Answer, bool) {
    let undo = match &r {
        Ok(v) => {
            if wrote(v) {
                *rv = next;
            }
            false
        }
        Err(_) => true,
    };
    (answer(reply, r), undo)
}

/// An update's answer and whether its savepoint must be rolled back; `rv`
/// advances to `next` when it wrote.
pub(super) fn update_outcome(
    f: Box<dyn UpdateFn>,
    r: Result<(CertificateSigningRequest, bool), StoreError>,
    rv: &mut i64,
    next: i64,
) -> (Answer, bool) {
    match r {
        Ok((obj, wrote)) => {
            if wrote {
                *rv = next;
            }
            let answer: Answer = Box::new(move |failed| match failed {
                Some(m) => f.answer(Err(StoreError::NotStored(m.to_string()))),
                None => f.answer(Ok(obj)),
            });
            (answer, false)
        }
        Err(e) => (
            Box::new(move |m| match m {
                Some(m) => f.answer(Err(StoreError::NotStored(m.to_string()))),
                None => f.answer(Err(e)),
            }),
            true,
        ),
    }
}

/// Runs an update function on the stored object. `Ok(None)`: nothing to
/// write (unchanged, or refused: the answer carries the refusal).
/// `Ok(Some(moved))`: write it, at version `rv`; `moved` says its state
/// changed (a request that has just become approved is due for
/// forwarding now).
pub(super) fn apply_update(
    name: &str,
    obj: &mut CertificateSigningRequest,
    f: &mut dyn UpdateFn,
    rv: i64,
) -> Result<Option<bool>, StoreError> {
    let before = state_of(obj);
    match f.apply(obj) {
        Applied::Changed => {}
        Applied::Unchanged | Applied::Refused => return Ok(None),
        Applied::Panicked => {
            return Err(StoreError::NotStored(format!(
                "the update of {name:?} panicked"
            )));
        }
    }
    set_rv(obj, rv);
    Ok(Some(before != state_of(obj)))
}
