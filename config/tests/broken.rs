//! At least 30 broken configs, covering every section and every kind of mistake (types,
//! ranges, addresses, durations, duplicates, cross-references, unknown and missing keys):
//! each is refused, and the refusal names the key.
#![warn(unreachable_pub, missing_docs)]

use std::path::Path;

mod common {
    include!("common/broken_table.rs");
}

use common::BROKEN;

#[test]
fn every_broken_config_is_refused_naming_its_key() {
    assert!(BROKEN.len() >= 30, "only {} rows", BROKEN.len());
    for (what, text, key) in BROKEN {
        let errors = match sitesteer_config::parse(text, "<table>", Path::new("/etc/sitesteer")) {
            Ok(_) => panic!("{what}: accepted\n{text}"),
            Err(e) => e,
        };
        assert!(
            !errors.errors.is_empty(),
            "{what}: refused without an error"
        );
        let named = errors.errors.iter().find(|e| e.path.contains(key));
        let Some(named) = named else {
            panic!("{what}: no error names {key:?}: {errors}");
        };
        assert!(!named.message.is_empty(), "{what}: empty message");
        assert!(
            errors.to_string().contains(&named.path),
            "{what}: the report does not show the key: {errors}"
        );
    }
}

#[test]
fn the_table_covers_every_section() {
    let sections = [
        "listen",
        "admin",
        "state_file",
        "site",
        "route",
        "probe",
        "health",
        "proxy",
        "objectives",
        "tier",
        "dns",
        "geo",
        "cluster",
        "webhook",
        "drill",
        "limits",
        "tls",
    ];
    for section in sections {
        assert!(
            BROKEN.iter().any(|(_, _, key)| key.starts_with(section)),
            "no broken config for [{section}]"
        );
    }
}

#[test]
fn a_file_that_is_not_toml_names_its_line() {
    let errors =
        sitesteer_config::parse("[listen\nhttp = 1\n", "<t>", Path::new("/")).expect_err("refused");
    assert_eq!(errors.errors.len(), 1);
    assert_eq!(errors.errors[0].line, Some(1));
    assert!(errors.errors[0].message.contains("not valid TOML"));
}

/// Every input the fuzzer crashed on (`fuzz/regressions/config_parse/`) is now refused or
/// accepted without a panic.
#[test]
fn fuzz_regressions_do_not_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/config_parse");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("the regression folder") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read");
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = sitesteer_config::parse(text, "<fuzz>", Path::new("/"));
            seen += 1;
        }
    }
    assert!(seen > 0, "no regression inputs in {}", dir.display());
}

#[test]
fn toml_that_trips_the_span_parser_is_refused_with_its_line() {
    // Found by fuzzing: toml_edit panicked ("all items have spans") on this file.
    let errors = sitesteer_config::parse(
        "#ihien]\ndns ==ne ]an@\"]\n[dns.soa]\nr\"a_file\n",
        "<t>",
        Path::new("/"),
    )
    .expect_err("refused");
    assert_eq!(errors.errors[0].line, Some(2), "{errors}");
}
