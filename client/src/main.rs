//! `certctl`: thin entry point; all logic lives in the library (see `certctl::cmd`).
//! It must stay free of logic so that every behaviour is testable in the lib.

fn main() -> std::process::ExitCode {
    certctl::main_entry()
}
