//! `[proxy.retry_budget]`: its defaults, the values it takes and its refusals.

use super::*;
use std::path::Path;
use std::time::Duration;

const SITE: &str = "[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1001\"\n";

fn with(table: &str) -> String {
    format!("[proxy.retry_budget]\n{table}\n{SITE}")
}

fn parse_str(text: &str) -> Result<Config, ConfigErrors> {
    parse(text, "<test>", Path::new("/etc/sitesteer"))
}

#[test]
fn the_retry_budget_has_defaults() {
    let c = parse_str(SITE).expect("parses");
    let b = c.proxy.retry_budget;
    assert_eq!(b.ratio, RETRY_BUDGET_RATIO);
    assert_eq!(b.min_per_second, RETRY_BUDGET_MIN_PER_SECOND);
    assert_eq!(b.ttl, Duration::from_secs(RETRY_BUDGET_TTL_S));
    // An empty table is the defaults too.
    let c = parse_str(&with("")).expect("parses");
    assert_eq!(c.proxy.retry_budget, b);
}

#[test]
fn the_retry_budget_takes_its_values() {
    let c = parse_str(&with("ratio = 0\nmin_per_second = 0\nttl = \"1s\"")).expect("parses");
    let b = c.proxy.retry_budget;
    assert_eq!((b.ratio, b.min_per_second), (0.0, 0));
    assert_eq!(b.ttl, Duration::from_secs(1));
    let c = parse_str(&with(
        "ratio = 1.0\nmin_per_second = 1000000\nttl = \"60s\"",
    ))
    .expect("parses");
    let b = c.proxy.retry_budget;
    assert_eq!((b.ratio, b.min_per_second), (1.0, 1_000_000));
    assert_eq!(b.ttl, Duration::from_secs(60));
}

#[test]
fn a_bad_retry_budget_is_refused_with_its_key() {
    for (bad, key, says) in [
        ("ratio = 1.5", "proxy.retry_budget.ratio", "at most 1"),
        ("ratio = -0.1", "proxy.retry_budget.ratio", "at least 0"),
        ("ratio = nan", "proxy.retry_budget.ratio", "at most 1"),
        (
            "min_per_second = -1",
            "proxy.retry_budget.min_per_second",
            "between 0 and 1000000",
        ),
        (
            "min_per_second = 1000001",
            "proxy.retry_budget.min_per_second",
            "between",
        ),
        ("ttl = \"500ms\"", "proxy.retry_budget.ttl", "at least 1s"),
        ("ttl = \"61s\"", "proxy.retry_budget.ttl", "at most 60s"),
        ("ttl = \"0s\"", "proxy.retry_budget.ttl", "at least 1s"),
        ("ttl = \"soon\"", "proxy.retry_budget.ttl", ""),
        ("ratio = \"a lot\"", "proxy.retry_budget.ratio", ""),
        ("burst = 3", "proxy.retry_budget", "unknown"),
    ] {
        let errs = parse_str(&with(bad)).expect_err(bad).errors;
        assert!(
            errs.iter()
                .any(|e| e.path.starts_with(key) && e.message.contains(says)),
            "{bad}: {errs:?}"
        );
    }
    // Each error names its line too.
    let errs = parse_str(&with("ratio = 0.2\nbogus_key = 1"))
        .expect_err("bogus")
        .errors;
    assert!(
        errs.iter()
            .any(|e| e.path == "proxy.retry_budget.bogus_key" && e.line == Some(3)),
        "{errs:?}"
    );
    // Every bad key of the table is reported in one run.
    let errs = parse_str(&with("ratio = 2.0\nmin_per_second = -5\nttl = \"2m\""))
        .expect_err("three errors")
        .errors;
    assert_eq!(errs.len(), 3, "{errs:?}");
}
