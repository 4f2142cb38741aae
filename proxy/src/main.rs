//! The `sitesteer` binary: everything lives in the library.
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_docs)]

/// mimalloc: per request, pingora allocates and frees dozens of small objects (headers,
/// buffers, boxed futures); glibc malloc spent about a fifth of the proxy's instructions on
/// them. See BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sitesteer::cli::main()
}
