//! `sitesteer check` and `sitesteer run` on good and broken configs.

use std::process::Command;

use crate::harness::{binary, Scratch};

fn check(text: &str) -> (i32, String, String) {
    let dir = Scratch::new("check");
    let path = dir.0.join("c.toml");
    std::fs::write(&path, text).expect("write");
    let out = Command::new(binary())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_shipped_example_passes_check() {
    let example = sitesteer_test_support::workspace_root().join("examples/sitesteer.toml");
    let out = Command::new(binary())
        .args(["check", "-c"])
        .arg(example)
        .output()
        .expect("run check");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_broken_config_is_refused_with_every_key_path_and_line() {
    let (code, _, stderr) = check(
        "[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"nowhere\"\n\n[[site]]\nname = \"a\"\ncolour = \"red\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n\n[[probe]]\nkind = \"http\"\ninterval = \"50ms\"\ntimeout = \"50ms\"\n",
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("site[0].endpoints.http (line 4)"),
        "{stderr}"
    );
    assert!(stderr.contains("site[1].colour (line 8)"), "{stderr}");
    assert!(stderr.contains("probe[0].timeout (line 15)"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn run_refuses_a_broken_config_and_exits_1() {
    let dir = Scratch::new("run");
    let path = dir.0.join("c.toml");
    std::fs::write(&path, "[listen]\nhttp = 8080\n").expect("write");
    let out = Command::new(binary())
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("listen.http"), "{stderr}");
}

#[test]
fn a_missing_file_is_one_clear_sentence() {
    let out = Command::new(binary())
        .args(["check", "-c", "/nonexistent/sitesteer.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read the file"), "{stderr}");
}
