//! Compiles every `proto/quota/v1/*.proto` with protox (a protobuf compiler in pure Rust,
//! so no `protoc` is needed on the build machine) and generates prost messages and tonic
//! clients and servers from the resulting descriptors.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let include = manifest_dir.join("../../proto");
    let package_dir = include.join("quota/v1");
    // Cargo rescans a directory given here, so added, changed or removed files all rebuild.
    println!("cargo:rerun-if-changed={}", package_dir.display());

    let mut files = Vec::new();
    for entry in std::fs::read_dir(&package_dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "proto") {
            files.push(path);
        }
    }
    // A stable order keeps the generated file identical from build to build.
    files.sort();
    if files.is_empty() {
        return Err(format!("no .proto files in {}", package_dir.display()).into());
    }

    // protox's errors name the file, line and column of the problem.
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
