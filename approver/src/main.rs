//! `certsign-approver`: thin entry point; all logic lives in the library.

fn main() {}
