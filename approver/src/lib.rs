//! The certsign approver: the queue and the record.
#![forbid(unsafe_code)]
