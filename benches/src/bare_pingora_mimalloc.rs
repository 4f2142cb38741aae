//! `bare-pingora-mimalloc`: `bare-pingora` (see `bare_pingora.rs`) with mimalloc as the
//! global allocator, the one sitesteer links: the framework's ceiling with the same
//! allocator, so the benchmark can tell the allocator's share from the rest.
//!
//! `bare-pingora-mimalloc --listen 127.0.0.1:PORT --upstream 127.0.0.1:P1 [--upstream ...]`
#![warn(unreachable_pub, missing_docs)]

mod bare;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    bare::main()
}
