//! Where the data planes connect for a chosen site: the endpoint steering chose, or, while a
//! drill fault that acts in the path (`hang`, `drop`, `slow`, `errors`) is on the site, the
//! fault's stand-in ([`sitesteer_probes::in_path`]), so that the drill acts where a real
//! failure would and sitesteer has to detect it, hedge and rescue like a real one. Steering
//! never sees the fault.

use std::net::SocketAddr;

use sitesteer_probes::Snapshot;

/// The address to connect to for `addr`, an endpoint of site `site` in `snapshot`.
pub(crate) fn connect_addr(snapshot: &Snapshot, site: usize, addr: SocketAddr) -> SocketAddr {
    sitesteer_probes::in_path_of(snapshot, site, addr).unwrap_or(addr)
}
