//! Compiles `proto/quota/v1/*.proto` with protox (a protobuf compiler in pure Rust, so no
//! `protoc` is needed on the build machine) and generates prost messages and tonic clients
//! and servers from the resulting descriptors.

use std::path::{Path, PathBuf};

/// The proto files, relative to the include root.
const PROTOS: [&str; 6] = [
    "quota/v1/common.proto",
    "quota/v1/admin.proto",
    "quota/v1/data.proto",
    "quota/v1/cluster.proto",
    "quota/v1/gateway.proto",
    "quota/v1/raft.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let include = manifest_dir.join("../../proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", include.join(proto).display());
    }
    println!("cargo:rerun-if-changed={}", include.display());

    let files: Vec<PathBuf> = PROTOS.iter().map(|p| include.join(Path::new(p))).collect();
    // protox's errors render the file, line and column of the problem.
    let descriptors = protox::compile(&files, [&include])?;

    // The `connect(addr)` conveniences need tonic's transport; generate them only when this
    // crate's `transport` feature turns it on.
    let transport = std::env::var_os("CARGO_FEATURE_TRANSPORT").is_some();
    tonic_prost_build::configure()
        // Ordered maps: deterministic iteration, so answers and tests are stable.
        .btree_map(".")
        .build_client(true)
        .build_server(true)
        .build_transport(transport)
        .compile_fds(descriptors)?;
    Ok(())
}
