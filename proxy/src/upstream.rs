//! Where the data planes connect for a chosen site: the endpoint steering chose, or, while a
//! drill's `hang` fault is on the site, the hang sink ([`sitesteer_probes::hang_sink`]), so
//! that the drill acts where a real hang would and sitesteer has to detect it by timeouts,
//! hedge and rescue like a real one. Steering never sees the fault.

use std::net::SocketAddr;

use sitesteer_probes::{Fault, Snapshot};

/// The address to connect to for `addr`, an endpoint of site `site` in `snapshot`.
pub(crate) fn connect_addr(snapshot: &Snapshot, site: usize, addr: SocketAddr) -> SocketAddr {
    let hung = snapshot
        .sites
        .get(site)
        .is_some_and(|s| s.fault == Some(Fault::Hang));
    if hung {
        sitesteer_probes::hang_sink().unwrap_or(addr)
    } else {
        addr
    }
}
