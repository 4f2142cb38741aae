//! One demo site in its own process (`sitesteer demo-site`): its runtime, its listeners, the
//! lines it prints once listening, and serving until Ctrl-C.

use crate::site::{BindError, DemoSite};

/// Why a demo site run by [`run_site`] did not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    /// The tokio runtime could not be built.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Serving failed.
    #[error("demo site stopped: {0}")]
    Serve(#[source] std::io::Error),
}

/// Runs `site` on a runtime of its own until Ctrl-C (SIGINT), then shuts it down gracefully.
///
/// Once its listeners are bound it prints `demo site listening on ADDR` (and `demo site tcp
/// listening on ADDR` when it has a TCP listener) on stdout, with the real ports when 0 was
/// asked.
pub fn run_site(site: DemoSite) -> Result<(), SiteError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(SiteError::Runtime)?;
    runtime.block_on(async move {
        let bound = site.bind().await?;
        println!("demo site listening on {}", bound.local_addr());
        if let Some(tcp) = bound.local_tcp_addr() {
            println!("demo site tcp listening on {tcp}");
        }
        bound
            .serve(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(SiteError::Serve)
    })
}
