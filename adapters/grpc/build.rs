//! Generates the protobuf types and the tonic client and server from `proto/kommander.proto`.
//! The proto is parsed by `protox` (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/kommander.proto");
    let descriptors = protox::compile(["proto/kommander.proto"], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
