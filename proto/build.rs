//! Generates the gRPC code with the protoc shipped by the `protoc-bin-vendored` crate, so
//! building Meridian needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; the variable is read by prost-build below.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure().compile_protos(&["proto/meridian/raft.proto"], &["proto"])?;
    Ok(())
}
