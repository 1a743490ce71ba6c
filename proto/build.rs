//! Generates the gRPC code with the protoc shipped by the `protoc-bin-vendored` crate, so
//! building Meridian needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts are single-threaded; prost-build reads the variable below.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        // Messages that carry a password or a token secret get a hand-written `Debug`
        // (in lib.rs) that leaves the secret out, so no debug print can log it.
        .skip_debug(["meridian.admin.PutUserRequest", "meridian.admin.CreatedToken"])
        .compile_protos(
            &["proto/meridian/cluster.proto", "proto/meridian/admin.proto", "proto/meridian/replication.proto"],
            &["proto"],
        )?;
    Ok(())
}
