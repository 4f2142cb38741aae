//! Tests of the cap and the queue: the load an attempt holds, the next site past a full one,
//! the wait for a slot and the shed at `proxy.queue_timeout` or a full queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sitesteer_probes::Snapshot;

use super::tests::snapshot;
use super::tests_attempts::Rig;
use super::*;

/// Two sites with `max_in_flight = 1`, the queue as given.
fn capped(queue_timeout: Duration, queue_length: usize) -> Snapshot {
    let mut snap = snapshot(&[(0, 100, "a"), (0, 100, "a")]);
    let mut config = (*snap.config).clone();
    for s in &mut config.sites {
        s.max_in_flight = Some(1);
    }
    config.proxy.queue_timeout = queue_timeout;
    config.proxy.queue_length = queue_length;
    snap.config = Arc::new(config);
    snap
}

#[test]
fn a_full_site_sends_the_next_request_to_the_other_and_a_freed_slot_serves_the_queue() {
    let rig = Rig::new(capped(Duration::from_secs(5), 8));
    rig.block_on(async {
        let mut first = rig.attempts();
        let a = next_queued(&mut first, &rig.steering, None, "http")
            .await
            .expect("a site");
        let mut second = rig.attempts();
        let b = next_queued(&mut second, &rig.steering, None, "http")
            .await
            .expect("the other site");
        assert_ne!(a.site, b.site);
        // Both full: the third waits until the first ends, then takes its site.
        let mut third = rig.attempts();
        let started = Instant::now();
        let (got, ()) = tokio::join!(
            next_queued(&mut third, &rig.steering, None, "http"),
            async {
                tokio::time::sleep(Duration::from_millis(30)).await;
                drop(first);
            }
        );
        assert_eq!(got.expect("a freed slot").site, a.site);
        assert!(started.elapsed() < Duration::from_secs(2));
    });
}

#[test]
fn with_every_site_full_a_request_is_shed_at_the_queue_timeout_or_at_once_when_the_queue_is_full() {
    let rig = Rig::new(capped(Duration::from_millis(40), 1));
    rig.block_on(async {
        let mut held = [rig.attempts(), rig.attempts()];
        for a in &mut held {
            next_queued(a, &rig.steering, None, "http")
                .await
                .expect("a slot");
        }
        let started = Instant::now();
        let (waited, at_once) = tokio::join!(
            async {
                let mut a = rig.attempts();
                next_queued(&mut a, &rig.steering, None, "http").await
            },
            async {
                // The one place in the queue is taken by then.
                tokio::time::sleep(Duration::from_millis(5)).await;
                let mut b = rig.attempts();
                let r = next_queued(&mut b, &rig.steering, None, "tcp").await;
                (r, started.elapsed())
            }
        );
        assert_eq!(waited, Err(NoSite::Full));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(40) && took < Duration::from_secs(1),
            "{took:?}"
        );
        assert_eq!(at_once.0, Err(NoSite::Full));
        assert!(at_once.1 < Duration::from_millis(35), "{:?}", at_once.1);
        // A success ends the attempt's load: a slot is free again.
        held[0].succeeded(&rig.steering);
        let mut next = rig.attempts();
        assert!(next_queued(&mut next, &rig.steering, None, "http")
            .await
            .is_ok());
    });
}
