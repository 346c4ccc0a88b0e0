//! Compiles `proto/certsign/v1/*.proto` with protox (pure Rust), so building
//! needs no system `protoc`, and writes the encoded descriptor set that the
//! services register for gRPC reflection.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protos = [
        "proto/certsign/v1/csr.proto",
        "proto/certsign/v1/signer.proto",
        "proto/certsign/v1/approver.proto",
    ];

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(protos)?;

    // prost-build ignores file_descriptor_set_path() under compile_fds(), so
    // the reflection descriptor set is written here.
    std::fs::write(
        out_dir.join("certsign_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(compiler.file_descriptor_set())?;

    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
