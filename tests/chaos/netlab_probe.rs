//! Whether this machine can run the real-distance scenarios (network namespaces, veth links
//! and a traffic shaper): `make test` asks it before it runs the ignored netns test.
//!
//! Exits 0 when it can, 2 with the reason on stdout when it cannot (a skip), 1 when it should
//! and setting up failed (so that the test runs and fails with the details).
#![warn(unreachable_pub, missing_docs)]

use sitesteer_test_support::chaos::netlab::{LabError, NetLab};

fn main() {
    match NetLab::probe() {
        Ok(()) => println!("network namespaces and a traffic shaper are available"),
        Err(LabError::Unsupported(why)) => {
            println!("{why}");
            std::process::exit(2);
        }
        Err(broken @ LabError::Broken(_)) => {
            println!("{broken}");
            std::process::exit(1);
        }
    }
}
