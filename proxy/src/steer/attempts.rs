//! The one selection loop: a request's (or a TCP connection's) attempts at sites, used by
//! the HTTP streaming path, checked exchanges and TCP. [`Attempts`] owns the tried set, the
//! Snapshot the next attempt is steered by (the newest one after a failure, so a retry
//! avoids sites that just failed), drill faults, the retry budget (`proxy.retries`), the
//! passive reports of each outcome, and the retry, panic and unroutable accounting, so that
//! every data plane counts the same things the same way:
//!
//! - `sitesteer_retries_total{site}` counts a failed attempt at `site` once another site
//!   takes the request: never a retry that did not happen.
//! - A drill's blackhole is a connect that fails at once: it uses the budget like any
//!   failed attempt.
//! - `sitesteer_panic_decisions_total` counts the attempts steered in panic mode.
//! - `sitesteer_unroutable_requests_total` counts requests that no site could take at all
//!   (not those whose every try failed).
//! - The fleet-wide retry budget (`proxy.retry_budget`, `retry_budget.rs`): every request
//!   deposits on its first attempt, every further attempt (a retry after a failed connect,
//!   an error or a 5xx, a hedge, a rescue) withdraws before it is made.
//!   `sitesteer_retries_refused_total{reason="budget"}` counts the requests that wanted one
//!   more attempt and were refused (once per request); a refused request passes on the
//!   site's own answer when a site answered.
//! - Each attempt counts in its site's load (`load.rs`) from the moment it is steered until
//!   it succeeds, fails or the request ends; sites are chosen by [`super::choose_loaded`],
//!   and when every candidate is at its cap the answer is [`NoSite::Full`] (the data planes
//!   wait in the queue through [`super::next_queued`]).
//!
//! The client's region ([`Attempts::locate`], from `[[geo]]`) steers every attempt of the
//! request, retries included, as it steers DNS answers.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use prometheus::{IntCounter, IntCounterVec};
use sitesteer_config::EndpointKind;
use sitesteer_probes::Fault;
use sitesteer_probes::{Failure, HealthHandle, Snapshot};

use super::connect_times::ConnectTimes;
use super::hedge::HedgeBudget;
use super::load::{LoadGuard, LoadTable};
use super::p2c::{choose_loaded_indexed, Loaded};
use super::retry_budget::RetryBudget;
use super::{Choice, Mode, Published, PublishedCell, RequestCtx, Tried};

/// The steering metrics that [`Attempts`] keeps (the panic-mode gauge is the publish
/// hook's, see [`PublishedCell::hook`]).
#[derive(Clone, Debug)]
pub(crate) struct SteerMetrics {
    /// `sitesteer_retries_total`, by the site that failed.
    pub(crate) retries: IntCounterVec,
    /// `sitesteer_panic_decisions_total`.
    pub(crate) panic_decisions: IntCounter,
    /// `sitesteer_unroutable_requests_total`.
    pub(crate) unroutable: IntCounter,
    /// `sitesteer_hedges_total`, by the site that was too slow.
    pub(crate) hedges: IntCounterVec,
    /// `sitesteer_rescues_total`, by the site judged down, in maintenance or suspect while the
    /// request was on it.
    pub(crate) rescues: IntCounterVec,
    /// `sitesteer_retries_refused_total`, by reason (`budget`: the fleet-wide retry budget).
    pub(crate) retries_refused: IntCounterVec,
}

/// What the data planes share to steer: the published Snapshots with their indexes, the
/// health owner (for passive reports), the hedge and retry budgets and the steering metrics.
pub(crate) struct Steering {
    published: Arc<PublishedCell>,
    health: HealthHandle,
    metrics: SteerMetrics,
    hedges: HedgeBudget,
    retry_budget: RetryBudget,
    connects: ConnectTimes,
}

impl Steering {
    /// Steering by the publications in `published` (whose hook `health` calls).
    pub(crate) fn new(
        published: Arc<PublishedCell>,
        health: HealthHandle,
        metrics: SteerMetrics,
    ) -> Self {
        Self {
            published,
            health,
            metrics,
            hedges: HedgeBudget::default(),
            retry_budget: RetryBudget::new(Instant::now()),
            connects: ConnectTimes::default(),
        }
    }

    /// A new connection to `site` took `took` to connect.
    pub(crate) fn connected(&self, site: &str, took: std::time::Duration) {
        self.connects.record(site, took);
    }

    /// How long a new connection to `site` may take to connect (see `connect_times.rs`).
    pub(crate) fn connect_timeout(
        &self,
        site: &str,
        proxy: &sitesteer_config::ProxySettings,
    ) -> std::time::Duration {
        self.connects.timeout(site, proxy)
    }

    /// A safe request started: earns its share (`proxy.hedge_budget`) of a hedge.
    pub(crate) fn earn_hedge(&self, share: f64) {
        self.hedges.earn(share);
    }

    /// A request in flight on `site` was sent elsewhere because `site` was judged out of
    /// service.
    pub(crate) fn count_rescue(&self, snapshot: &Snapshot, site: usize) {
        count_by_site(&self.metrics.rescues, snapshot, site);
    }

    /// The newest publication.
    pub(crate) fn current(&self) -> Arc<Published> {
        self.published.load().unwrap_or_else(|| {
            Arc::new(Published::with_loads(
                self.health.snapshot(),
                self.published.loads(),
                None,
            ))
        })
    }

    /// The sites' load counters (and the queue of requests waiting for a slot).
    pub(super) fn loads(&self) -> &Arc<LoadTable> {
        self.published.loads()
    }

    /// A request or connection on `listener` was shed (`sitesteer_shed_total`).
    pub(super) fn count_shed(&self, listener: &str) {
        self.published.loads().count_shed(listener);
    }
}

/// Why no attempt can be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoSite {
    /// No site can take the request at all (counted as unroutable).
    Unroutable,
    /// The request's MCP session is bound to a site that is out of service (or failed it).
    SessionLost,
    /// Sites were tried and failed, and the budget or the sites are used up.
    Exhausted,
    /// Every site that could take the request is at its cap (`max_in_flight`); from
    /// [`super::next_queued`], the request waited its turn in vain and is shed.
    Full,
}

/// One request's attempts at sites.
#[derive(Debug)]
pub(crate) struct Attempts {
    kind: EndpointKind,
    random: u64,
    tried: Tried,
    published: Arc<Published>,
    /// The site of the current (or last) attempt.
    site: Option<usize>,
    /// Failed attempts not yet counted as retries (counted once another site takes the
    /// request), and the publication of the last one, whose config names them.
    uncounted: Tried,
    uncounted_in: Option<Arc<Published>>,
    /// The client's region (`[[geo]]`), once located.
    region: Option<Arc<str>>,
    /// One further attempt was granted by the retry budget and not yet made.
    granted: bool,
    /// The retry budget refused this request once (counted once).
    refused: bool,
    /// The attempts in flight (two while hedged), counted in their sites' load.
    load: Vec<LoadGuard>,
}

/// How [`pick`] ended.
enum Pick {
    Site(Choice),
    None,
    Exhausted,
    Full,
}

impl Attempts {
    /// A request for `kind` steered by `published`, with a random draw of its own.
    pub(crate) fn new(kind: EndpointKind, published: Arc<Published>) -> Self {
        Self {
            kind,
            random: fastrand::u64(..),
            tried: Tried::default(),
            published,
            site: None,
            uncounted: Tried::default(),
            uncounted_in: None,
            region: None,
            granted: false,
            refused: false,
            load: Vec::new(),
        }
    }

    /// Whether `[[geo]]` places any client (so [`Attempts::locate`] can find a region).
    pub(crate) fn places_clients(&self) -> bool {
        !self.published.regions.is_empty()
    }

    /// Places the client at `client` by `[[geo]]` (see `region.rs`): every attempt from now
    /// on prefers the sites of its region, as DNS does. Returns the region, `None` when no
    /// entry holds the client (or its address is unknown).
    pub(crate) fn locate(&mut self, client: Option<IpAddr>) -> Option<&str> {
        self.region = client.and_then(|ip| self.published.regions.locate(ip).cloned());
        self.region.as_deref()
    }

    /// Sets the endpoint kind (known once the request is routed; before the first attempt).
    pub(crate) fn set_kind(&mut self, kind: EndpointKind) {
        self.kind = kind;
    }

    /// The endpoint kind.
    pub(crate) fn kind(&self) -> EndpointKind {
        self.kind
    }

    /// The Snapshot of the current attempt (before any, the one the request started with).
    pub(crate) fn snapshot(&self) -> &Arc<Snapshot> {
        &self.published.snapshot
    }

    /// The site of the current (or last) attempt.
    pub(crate) fn site(&self) -> Option<usize> {
        self.site
    }

    /// The answer passed on is `site`'s (a checked exchange whose every site answered wrong
    /// passes on an earlier site's answer): labels and logs name it.
    pub(crate) fn answered_by(&mut self, site: usize) {
        self.site = Some(site);
    }

    /// How many attempts were made.
    #[cfg(test)]
    pub(crate) fn made(&self) -> usize {
        self.tried.len()
    }

    /// The next attempt: the site to try, by `pinned` (an MCP session's site, by name) or by
    /// the steering rules over the sites not yet tried. Skips blackholed sites as failed
    /// connects (they draw nothing from the retry budget: no attempt leaves). The first
    /// attempt deposits into the retry budget; any later one spends the grant taken by
    /// [`Attempts::grant`], or withdraws one now, and is `Exhausted` when refused.
    pub(crate) fn next(
        &mut self,
        steering: &Steering,
        pinned: Option<&str>,
    ) -> Result<Choice, NoSite> {
        if !self.tried.is_empty() {
            // A retry sees the newest health state, so it avoids sites that just failed.
            self.published = steering.current();
        }
        let pinned_id = pinned.map(|name| site_id(&self.published.snapshot, name));
        let first = self.tried.is_empty();
        if first {
            let settings = &self.published.snapshot.config.proxy.retry_budget;
            steering.retry_budget.deposit(settings, Instant::now());
        }
        let mut blackholed = Tried::default();
        let picked = pick(
            &self.published,
            self.kind,
            self.random,
            self.region.as_deref(),
            &mut self.tried,
            pinned_id,
            &mut blackholed,
        );
        for site in ids(&blackholed, self.published.snapshot.sites.len()) {
            self.site = Some(site);
            self.failed(steering, Failure::Connect);
        }
        match picked {
            Pick::Site(choice) => {
                let granted = first || self.grant(steering);
                self.granted = false;
                if !granted {
                    return Err(NoSite::Exhausted);
                }
                self.site = Some(choice.site);
                self.load.extend(self.published.loads.start(choice.site));
                self.count_retries(steering);
                if choice.mode == Mode::Panic {
                    steering.metrics.panic_decisions.inc();
                }
                Ok(choice)
            }
            Pick::None if pinned.is_some() => Err(NoSite::SessionLost),
            Pick::None if first && blackholed.is_empty() => {
                steering.metrics.unroutable.inc();
                Err(NoSite::Unroutable)
            }
            Pick::None | Pick::Exhausted => Err(NoSite::Exhausted),
            Pick::Full => Err(NoSite::Full),
        }
    }

    /// Whether another attempt would find a site: the budget has a try left and a site not
    /// yet tried can take the request in the newest Snapshot. No side effects.
    pub(crate) fn may_retry(&self, steering: &Steering) -> bool {
        let published = steering.current();
        let mut tried = self.tried;
        let picked = pick(
            &published,
            self.kind,
            self.random,
            self.region.as_deref(),
            &mut tried,
            None,
            &mut Tried::default(),
        );
        matches!(picked, Pick::Site(_))
    }

    /// Asks the retry budget for one further attempt before it is decided on (pingora's
    /// retry, a rescue, a hedge): `true` when granted (held for the next [`Attempts::next`],
    /// so asking twice takes one), `false` when refused (counted once per request).
    pub(crate) fn grant(&mut self, steering: &Steering) -> bool {
        if self.granted {
            return true;
        }
        let settings = &self.published.snapshot.config.proxy.retry_budget;
        if steering.retry_budget.withdraw(settings, Instant::now()) {
            self.granted = true;
            return true;
        }
        if !self.refused {
            self.refused = true;
            steering
                .metrics
                .retries_refused
                .with_label_values(&["budget"])
                .inc();
        }
        false
    }

    /// Whether a request too slow at `site` (in `snapshot`) may be hedged: the hedge budget
    /// (`proxy.hedge_budget`, hedges only) and the retry budget (every further attempt) must
    /// both allow it. Counted by `site` as a hedge when they do; the next
    /// [`Attempts::next`] makes it.
    pub(crate) fn hedge(&mut self, steering: &Steering, snapshot: &Snapshot, site: usize) -> bool {
        if !steering.hedges.take() {
            return false;
        }
        if !self.grant(steering) {
            steering.hedges.refund();
            return false;
        }
        count_by_site(&steering.metrics.hedges, snapshot, site);
        true
    }

    /// The attempt at `site` (one of two in flight, when a request is hedged) failed with
    /// `failure`: reported against it at once, as [`Attempts::failed`].
    pub(crate) fn failed_at(&mut self, steering: &Steering, site: usize, failure: Failure) {
        self.site = Some(site);
        self.failed(steering, failure);
    }

    /// The current attempt failed with `failure`: reported against its site at once.
    pub(crate) fn failed(&mut self, steering: &Steering, failure: Failure) {
        let Some(site) = self.site else {
            return;
        };
        if let Some(guard) = self.end_load(site) {
            // A timeout is the slowest answer there is; a fast failure says nothing of speed.
            if failure == Failure::Timeout {
                guard.observe();
            }
        }
        steering
            .health
            .reporter()
            .failure(&self.published.snapshot, site, failure);
        let generation = self.published.snapshot.generation;
        if self
            .uncounted_in
            .as_ref()
            .is_some_and(|p| p.snapshot.generation != generation)
        {
            // A reload between two failures renumbers the sites: the older ones go uncounted.
            self.uncounted = Tried::default();
        }
        self.uncounted_in = Some(self.published.clone());
        self.uncounted.push(site);
    }

    /// The current attempt succeeded: counted for its site (folded by the health owner on
    /// its next tick; no message per request), and its latency fed to the site's load.
    pub(crate) fn succeeded(&mut self, steering: &Steering) {
        if let Some(site) = self.site {
            if let Some(guard) = self.end_load(site) {
                guard.observe();
            }
            steering
                .health
                .reporter()
                .success(&self.published.snapshot, site);
        }
    }

    /// The current attempt became a long-lived stream (WebSocket, SSE, TCP): its load
    /// counts as an open stream, while the returned guard lives. Its connect time is no
    /// answer's latency: the estimate is left to requests.
    pub(crate) fn take_stream(&mut self) -> Option<LoadGuard> {
        let guard = self.end_load(self.site?)?;
        Some(guard.into_stream())
    }

    /// Takes the attempt at `site` out of the in-flight load.
    fn end_load(&mut self, site: usize) -> Option<LoadGuard> {
        let at = self.load.iter().position(|g| g.site() == site)?;
        Some(self.load.swap_remove(at))
    }

    /// Counts the uncounted failures as retries: another site took the request.
    fn count_retries(&mut self, steering: &Steering) {
        let Some(published) = self.uncounted_in.take() else {
            return;
        };
        for site in ids(&self.uncounted, published.snapshot.sites.len()) {
            if let Some(s) = published.snapshot.sites.get(site) {
                steering
                    .metrics
                    .retries
                    .with_label_values(&[s.name.as_str()])
                    .inc();
            }
        }
        self.uncounted = Tried::default();
    }
}

fn count_by_site(counter: &IntCounterVec, snapshot: &Snapshot, site: usize) {
    if let Some(s) = snapshot.sites.get(site) {
        counter.with_label_values(&[s.name.as_str()]).inc();
    }
}

/// The next site for `tried` in `published` for a client in `region`, within the budget
/// (`proxy.retries` retries after the first try); blackholed sites are marked tried and
/// collected in `blackholed`.
fn pick(
    published: &Published,
    kind: EndpointKind,
    random: u64,
    region: Option<&str>,
    tried: &mut Tried,
    pinned: Option<usize>,
    blackholed: &mut Tried,
) -> Pick {
    let snapshot = &published.snapshot;
    let budget = snapshot.config.proxy.retries;
    loop {
        if tried.len() > budget || tried.len() >= Tried::CAP {
            return Pick::Exhausted;
        }
        let mut req = RequestCtx::new(kind, random);
        req.tried = *tried;
        req.pinned = pinned;
        req.region = region;
        let view = published.loads.view();
        let choice = match choose_loaded_indexed(&published.index, snapshot, &req, &view) {
            Loaded::Site(choice) => choice,
            Loaded::None => return Pick::None,
            Loaded::Full => return Pick::Full,
        };
        tried.push(choice.site);
        if !is_blackholed(snapshot, choice.site) {
            return Pick::Site(choice);
        }
        blackholed.push(choice.site);
    }
}

/// The id of the site called `name`; one past the last when none is (a site that left the
/// config loses its sessions).
fn site_id(snapshot: &Snapshot, name: &str) -> usize {
    snapshot
        .sites
        .iter()
        .position(|s| s.name == name)
        .unwrap_or(usize::MAX)
}

/// The site ids below `len` in `set`.
fn ids(set: &Tried, len: usize) -> impl Iterator<Item = usize> + '_ {
    (0..len.min(Tried::CAP)).filter(move |id| set.contains(*id))
}

/// Whether a drill blackholes `site` (its connects fail without reaching it).
fn is_blackholed(snapshot: &Snapshot, site: usize) -> bool {
    snapshot
        .sites
        .get(site)
        .is_some_and(|s| s.fault == Some(Fault::Blackhole))
}
