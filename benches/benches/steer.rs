//! criterion micro-benchmarks of the decision path and the health owner's work:
//!
//! - `choose/N`: `steer::choose` over N up sites in one tier (2, 8, 64, and 200 for the
//!   200-site config), with a random number per call.
//! - `indexed/N`: the same decision through `steer::Index` (built once per published
//!   Snapshot), as the HTTP data plane takes it; `index_build/N` builds one.
//! - `choose_tiered/64`: 64 sites over 4 tiers with regions, the client's region set.
//! - `fold/probe_ok`, `fold/passive_fail`: one observation into the health table.
//! - `fold/passive_ok_batch_100`: 100 counted successes folded at once (what the owner does
//!   with the data plane's counters every tick), per batch.
//! - `publish/N`: building a Snapshot of N sites and storing it in the `ArcSwap`.
//! - `session/encode`, `session/decode`: the signed MCP session id.
//! - `config/parse_200`: parsing and validating a 200-site config (the bulk of a reload).
//!
//! `cargo bench -p sitesteer-benches --bench steer`
#![warn(unreachable_pub, missing_docs)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sitesteer::session::SessionCodec;
use sitesteer::steer::{self, RequestCtx};
use sitesteer_config::{Config, EndpointKind};
use sitesteer_probes::{HealthTable, Observation, Overrides, Snapshot, Source};
use tokio::time::Instant;

/// A config of `n` sites: `tiers` tiers, regions `r0..r3`, one HTTP endpoint each, the
/// default probe.
fn config_text(n: usize, tiers: usize) -> String {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "[[site]]\nname = \"site-{i}\"\nregion = \"r{}\"\ntier = {}\nweight = {}\n[site.endpoints]\nhttp = \"127.0.0.1:{}\"\n\n",
            i % 4,
            i % tiers,
            100 + (i % 7) * 10,
            10000 + i
        ));
    }
    text
}

fn config(n: usize, tiers: usize) -> Config {
    sitesteer_config::parse(&config_text(n, tiers), "bench", Path::new(".")).expect("config")
}

fn table(n: usize, tiers: usize) -> HealthTable {
    HealthTable::new(
        Arc::new(config(n, tiers)),
        Overrides::default(),
        Instant::now(),
    )
}

/// A snapshot with every site up and a spread of scores.
fn snapshot(n: usize, tiers: usize) -> Snapshot {
    let mut snap = table(n, tiers).snapshot(Instant::now());
    for (i, s) in snap.sites.iter_mut().enumerate() {
        s.score = 0.5 + (i % 5) as f64 / 10.0;
    }
    snap
}

fn choose(c: &mut Criterion) {
    let mut group = c.benchmark_group("choose");
    for n in [2usize, 8, 64, 200] {
        let snap = snapshot(n, 1);
        let mut rng = fastrand::Rng::with_seed(7);
        group.bench_with_input(BenchmarkId::from_parameter(n), &snap, |b, snap| {
            b.iter(|| {
                let req = RequestCtx::new(EndpointKind::Http, rng.u64(..));
                black_box(steer::choose(black_box(snap), &req))
            })
        });
    }
    group.finish();
    let mut group = c.benchmark_group("indexed");
    for n in [2usize, 8, 64, 200] {
        let snap = snapshot(n, 1);
        let index = steer::Index::new(&snap);
        let mut rng = fastrand::Rng::with_seed(7);
        group.bench_with_input(BenchmarkId::from_parameter(n), &snap, |b, snap| {
            b.iter(|| {
                let req = RequestCtx::new(EndpointKind::Http, rng.u64(..));
                black_box(index.choose(black_box(snap), &req))
            })
        });
    }
    group.finish();
    let mut group = c.benchmark_group("index_build");
    for n in [64usize, 200] {
        let snap = snapshot(n, 1);
        group.bench_with_input(BenchmarkId::from_parameter(n), &snap, |b, snap| {
            b.iter(|| black_box(steer::Index::new(black_box(snap))))
        });
    }
    group.finish();
    let snap = snapshot(64, 4);
    let mut rng = fastrand::Rng::with_seed(7);
    c.bench_function("choose_tiered/64", |b| {
        b.iter(|| {
            let mut req = RequestCtx::new(EndpointKind::Http, rng.u64(..));
            req.region = Some("r2");
            black_box(steer::choose(black_box(&snap), &req))
        })
    });
}

fn fold(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("fold");
    let mut t = table(8, 1);
    let generation = t.generation();
    group.bench_function("probe_ok", |b| {
        b.iter(|| {
            let obs = Observation {
                site: 3,
                generation,
                source: Source::Probe(0),
                outcome: Ok(Duration::from_micros(800)),
                at: Instant::now(),
                detail: None,
            };
            black_box(t.fold(black_box(&obs)))
        })
    });
    let mut t = table(8, 1);
    group.bench_function("passive_fail", |b| {
        b.iter(|| {
            let obs = Observation {
                site: 3,
                generation,
                source: Source::Passive,
                outcome: Err(sitesteer_probes::Failure::Status(503)),
                at: Instant::now(),
                detail: None,
            };
            black_box(t.fold(black_box(&obs)))
        })
    });
    let mut t = table(8, 1);
    group.bench_function("passive_ok_batch_100", |b| {
        b.iter(|| black_box(t.fold_passive_ok(3, 100, Instant::now())))
    });
    group.finish();
}

fn publish(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("publish");
    for n in [8usize, 200] {
        let mut t = table(n, 1);
        // Some probe history, so p99 and the windows have samples.
        let generation = t.generation();
        for i in 0..2000u64 {
            let obs = Observation {
                site: (i as usize) % n,
                generation,
                source: Source::Probe(0),
                outcome: Ok(Duration::from_micros(500 + i % 700)),
                at: Instant::now(),
                detail: None,
            };
            t.fold(&obs);
        }
        let cell = ArcSwap::from_pointee(t.snapshot(Instant::now()));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| cell.store(Arc::new(t.snapshot(Instant::now()))))
        });
    }
    group.finish();
}

fn session(c: &mut Criterion) {
    let codec = SessionCodec::new(b"0123456789abcdef0123456789abcdef");
    let upstream = "6f1c2a9e-4b7d-4e0a-9c3f-1d2e3f4a5b6c";
    let token = codec.encode("us-east", upstream);
    let mut group = c.benchmark_group("session");
    group.bench_function("encode", |b| {
        b.iter(|| black_box(codec.encode(black_box("us-east"), black_box(upstream))))
    });
    group.bench_function("decode", |b| {
        b.iter(|| black_box(codec.decode(black_box(&token))))
    });
    group.finish();
}

fn config_parse(c: &mut Criterion) {
    let text = config_text(200, 2);
    c.bench_function("config/parse_200", |b| {
        b.iter(|| {
            black_box(
                sitesteer_config::parse(black_box(&text), "bench", Path::new(".")).expect("ok"),
            )
        })
    });
}

criterion_group!(benches, choose, fold, publish, session, config_parse);
criterion_main!(benches);
