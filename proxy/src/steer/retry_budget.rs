//! The fleet-wide retry budget (`[proxy.retry_budget]`, linkerd's and Finagle's model): every
//! request started deposits into a window of the last `ttl`, and every further attempt
//! (a retry, a hedge, a rescue) withdraws one; a withdrawal is granted while, in every window
//! of `ttl` that holds it, the attempts withdrawn stay within `ratio` × the requests
//! deposited plus `min_per_second` × `ttl` seconds. So when every site fails, a request costs
//! about `1 + ratio` attempts instead of `1 + proxy.retries`.
//!
//! The window is a ring of [`SLOTS`] slots of `ttl / SLOTS` each; the live window is the
//! current slot and the `SLOTS - 1` before it. Deposits (one per request, the hot path) are
//! lock-free: each slot is one atomic word holding its slot number and its count.
//! Withdrawals (one per retry, the failure path) take a short lock, so that the check and
//! the withdrawal are one step and the bound is never exceeded, however many requests
//! retry at once. Time is passed in, so tests control it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sitesteer_config::RetryBudget as Settings;

/// Slots in the window's ring.
pub(crate) const SLOTS: usize = 10;
/// Budget units per attempt (fixed point, so that a ratio such as 0.2 adds exactly).
const UNIT: u128 = 1_000_000;
/// Tries of a deposit's compare-and-swap before the deposit is dropped (a dropped deposit
/// only makes the budget stricter).
const DEPOSIT_TRIES: usize = 64;

/// One slot's number (high 32 bits) and count (low 32 bits) in one word.
fn pack(slot: u32, count: u32) -> u64 {
    (u64::from(slot) << 32) | u64::from(count)
}

fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// Whether slot number `slot` is in the live window that ends at `current`.
fn live(slot: u32, current: u32) -> bool {
    (current.wrapping_sub(slot) as usize) < SLOTS
}

/// The retry budget shared by every data plane (see the module doc).
#[derive(Debug)]
pub(crate) struct RetryBudget {
    start: Instant,
    /// The slot width (nanoseconds) the ring is counted in; a reload that changes `ttl`
    /// starts the window afresh.
    slot_nanos: AtomicU64,
    /// Requests started, per slot.
    deposits: [AtomicU64; SLOTS],
    /// Attempts granted, per slot (same packing), written under the lock only.
    withdrawals: Mutex<[u64; SLOTS]>,
}

impl RetryBudget {
    /// An empty budget (only the `min_per_second` reserve to spend) whose clock starts at
    /// `start`.
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            start,
            slot_nanos: AtomicU64::new(0),
            deposits: std::array::from_fn(|_| AtomicU64::new(0)),
            withdrawals: Mutex::new([0; SLOTS]),
        }
    }

    /// A request started at `now`: it earns `ratio` of an attempt for `ttl`.
    pub(crate) fn deposit(&self, settings: &Settings, now: Instant) {
        let current = self.slot_at(settings, now);
        let cell = &self.deposits[current as usize % SLOTS];
        let mut word = cell.load(Ordering::Relaxed);
        for _ in 0..DEPOSIT_TRIES {
            let (slot, count) = unpack(word);
            let next = if slot == current {
                pack(current, count.saturating_add(1))
            } else {
                pack(current, 1)
            };
            match cell.compare_exchange_weak(word, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => word = seen,
            }
        }
    }

    /// Withdraws one further attempt at `now`; `false` (nothing withdrawn) when it would
    /// take a window past its budget. Every window of [`SLOTS`] slots that holds `now` is
    /// weighed: those that began before `now` hold part of their requests and attempts
    /// already, those that begin later hold only this one, so each window's attempts stay
    /// within `ratio` × its own requests plus the reserve, never funded by requests that
    /// left it.
    pub(crate) fn withdraw(&self, settings: &Settings, now: Instant) -> bool {
        let current = self.slot_at(settings, now);
        let mut withdrawals = self.withdrawals.lock().unwrap_or_else(|p| p.into_inner());
        let deposited = by_age(
            self.deposits.iter().map(|c| c.load(Ordering::Relaxed)),
            current,
        );
        let withdrawn = by_age(withdrawals.iter().copied(), current);
        // The windows holding `now` differ in where they begin: from the current slot alone
        // to the whole live window.
        let (mut d, mut w) = (0u128, 0u128);
        for age in 0..SLOTS {
            d += deposited[age];
            w += withdrawn[age];
            if (w + 1) * UNIT > allowed_units(settings, d) {
                return false;
            }
        }
        let cell = &mut withdrawals[current as usize % SLOTS];
        let (slot, count) = unpack(*cell);
        *cell = if slot == current {
            pack(current, count.saturating_add(1))
        } else {
            pack(current, 1)
        };
        true
    }

    /// The number of the slot `now` falls in; clears the ring when `ttl` changed.
    fn slot_at(&self, settings: &Settings, now: Instant) -> u32 {
        let width = slot_width(settings.ttl);
        // A load on the hot path; a write only when the width changed.
        if self.slot_nanos.load(Ordering::Relaxed) != width
            && self.slot_nanos.swap(width, Ordering::Relaxed) != width
        {
            for cell in &self.deposits {
                cell.store(0, Ordering::Relaxed);
            }
            let mut withdrawals = self.withdrawals.lock().unwrap_or_else(|p| p.into_inner());
            *withdrawals = [0; SLOTS];
        }
        // Slot numbers wrap after 2^32 slots (13 years at the shortest ttl): `live` compares
        // them wrapping.
        let elapsed = u64::try_from(now.saturating_duration_since(self.start).as_nanos());
        (elapsed.unwrap_or(u64::MAX) / width) as u32
    }
}

/// The width of one slot for `ttl`, in nanoseconds (never zero).
fn slot_width(ttl: Duration) -> u64 {
    let nanos = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
    (nanos / SLOTS as u64).max(1)
}

/// The counts of the slots in `words` that are live at `current`, by age (0: `current`).
fn by_age(words: impl Iterator<Item = u64>, current: u32) -> [u128; SLOTS] {
    let mut ages = [0; SLOTS];
    for (slot, count) in words.map(unpack) {
        if live(slot, current) {
            ages[current.wrapping_sub(slot) as usize] += u128::from(count);
        }
    }
    ages
}

/// The attempts (in [`UNIT`]s) a window with `deposited` requests allows: `ratio` of each
/// plus `min_per_second` for each second of `ttl`.
fn allowed_units(settings: &Settings, deposited: u128) -> u128 {
    let ratio = (settings.ratio.clamp(0.0, 1.0) * UNIT as f64).round() as u128;
    let reserve = u128::from(settings.min_per_second) * settings.ttl.as_millis() * (UNIT / 1000);
    ratio * deposited + reserve
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn settings(ratio: f64, min_per_second: u32, ttl_s: u64) -> Settings {
        Settings {
            ratio,
            min_per_second,
            ttl: Duration::from_secs(ttl_s),
        }
    }

    /// Withdraws until refused (at most `cap`); how many were granted.
    fn drain(budget: &RetryBudget, s: &Settings, now: Instant, cap: usize) -> usize {
        (0..cap).take_while(|_| budget.withdraw(s, now)).count()
    }

    #[test]
    fn the_reserve_then_the_ratio_of_requests() {
        let t0 = Instant::now();
        let s = settings(0.2, 1, 10);
        let budget = RetryBudget::new(t0);
        assert_eq!(
            drain(&budget, &s, t0, 100),
            10,
            "1/s over 10s, no request yet"
        );
        for _ in 0..4 {
            budget.deposit(&s, t0);
        }
        assert!(
            !budget.withdraw(&s, t0),
            "four requests at 0.2 earn no whole retry"
        );
        budget.deposit(&s, t0);
        assert!(budget.withdraw(&s, t0), "the fifth does");
        assert!(!budget.withdraw(&s, t0));
        for _ in 0..100 {
            budget.deposit(&s, t0);
        }
        assert_eq!(drain(&budget, &s, t0, 100), 20);
    }

    #[test]
    fn deposits_and_withdrawals_expire_after_the_ttl() {
        let t0 = Instant::now();
        let s = settings(0.5, 0, 1);
        let budget = RetryBudget::new(t0);
        assert!(!budget.withdraw(&s, t0), "no reserve, no request");
        for _ in 0..10 {
            budget.deposit(&s, t0);
        }
        assert_eq!(drain(&budget, &s, t0, 100), 5);
        // 0.95 s later the slot of t0 is still live.
        let later = t0 + Duration::from_millis(950);
        assert!(!budget.withdraw(&s, later));
        // A ttl later it has left the window: its requests and its retries alike.
        let gone = t0 + Duration::from_millis(1000);
        assert!(!budget.withdraw(&s, gone), "no deposit left");
        budget.deposit(&s, gone);
        budget.deposit(&s, gone);
        assert!(
            budget.withdraw(&s, gone),
            "the old withdrawals no longer count"
        );
    }

    #[test]
    fn zero_ratio_and_minimum_allow_nothing() {
        let t0 = Instant::now();
        let s = settings(0.0, 0, 10);
        let budget = RetryBudget::new(t0);
        for _ in 0..1000 {
            budget.deposit(&s, t0);
        }
        assert!(!budget.withdraw(&s, t0));
    }

    #[test]
    fn a_new_ttl_starts_the_window_afresh() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(t0);
        let short = settings(1.0, 0, 1);
        for _ in 0..5 {
            budget.deposit(&short, t0);
        }
        let long = settings(1.0, 0, 10);
        assert!(!budget.withdraw(&long, t0), "cleared by the new width");
        budget.deposit(&long, t0);
        assert!(budget.withdraw(&long, t0));
    }

    #[test]
    fn concurrent_withdrawals_never_exceed_the_budget() {
        let t0 = Instant::now();
        let s = settings(0.1, 0, 60);
        let budget = std::sync::Arc::new(RetryBudget::new(t0));
        for _ in 0..1000 {
            budget.deposit(&s, t0);
        }
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || drain(&budget, &s, t0, 1000))
            })
            .collect();
        let granted: usize = threads.into_iter().map(|t| t.join().expect("joins")).sum();
        assert_eq!(granted, 100);
    }

    /// One step of a run: time moves on by `advance_ms`, then `deposits` requests start and
    /// `withdrawals` further attempts are asked for.
    #[derive(Clone, Debug)]
    struct Step {
        advance_ms: u64,
        deposits: u32,
        withdrawals: u32,
    }

    fn step() -> impl Strategy<Value = Step> {
        (0u64..700, 0u32..30, 0u32..15).prop_map(|(advance_ms, deposits, withdrawals)| Step {
            advance_ms,
            deposits,
            withdrawals,
        })
    }

    proptest! {
        /// Against a model that keeps every event's time: each withdrawal is granted exactly
        /// when the window's withdrawals stay within ratio x requests + min x ttl, so in no
        /// window are there ever more retries than that.
        #[test]
        fn never_more_than_ratio_times_requests_plus_the_minimum(
            ratio_pct in 0u32..=100,
            min_per_second in 0u32..5,
            ttl_s in 1u64..4,
            steps in proptest::collection::vec(step(), 1..60),
        ) {
            let s = settings(f64::from(ratio_pct) / 100.0, min_per_second, ttl_s);
            let width_ms = ttl_s * 1000 / SLOTS as u64;
            // In hundredths of an attempt: exact for a ratio in percent.
            let reserve = u64::from(min_per_second) * ttl_s * 100;
            let allowed = |requests: u64| u64::from(ratio_pct) * requests + reserve;
            let t0 = Instant::now();
            let budget = RetryBudget::new(t0);
            let (mut deposits, mut granted): (Vec<u64>, Vec<u64>) = (vec![], vec![]);
            let count = |events: &[u64], from: u64, to: u64| {
                events.iter().filter(|&&e| e >= from && e <= to).count() as u64
            };
            let mut now_ms = 0u64;
            for step in steps {
                now_ms += step.advance_ms;
                let now = t0 + Duration::from_millis(now_ms);
                let slot = now_ms / width_ms;
                for _ in 0..step.deposits {
                    budget.deposit(&s, now);
                    deposits.push(slot);
                }
                for _ in 0..step.withdrawals {
                    // Granted when every window holding `slot` stays within its budget.
                    let model = (0..SLOTS as u64).filter(|k| *k <= slot).all(|k| {
                        let from = slot - k;
                        (count(&granted, from, slot) + 1) * 100
                            <= allowed(count(&deposits, from, slot))
                    });
                    prop_assert_eq!(budget.withdraw(&s, now), model);
                    if model {
                        granted.push(slot);
                    }
                }
            }
            // The property itself: no window of a ttl ever holds more.
            let last = now_ms / width_ms;
            for from in 0..=last {
                let to = from + SLOTS as u64 - 1;
                prop_assert!(
                    count(&granted, from, to) * 100 <= allowed(count(&deposits, from, to)),
                    "window from slot {}", from
                );
            }
        }
    }
}
