//! Generates the prost types of `proto/seqmpc/v1/*.proto` (included by `src/wire.rs`) with
//! protox, a protobuf compiler in Rust: the build needs no `protoc`.

use std::error::Error;

/// The compiled files, relative to [`INCLUDE`]; both are package `seqmpc.v1`, so prost-build
/// writes one file, `$OUT_DIR/seqmpc.v1.rs`.
const PROTOS: [&str; 2] = ["seqmpc/v1/tx.proto", "seqmpc/v1/p2p.proto"];

/// The import root of the `.proto` files.
const INCLUDE: &str = "proto";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={INCLUDE}");
    let descriptors = protox::compile(PROTOS, [INCLUDE])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
