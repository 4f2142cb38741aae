//! The workspace this crate lives in has no module dependency cycle in any crate.
#![warn(unreachable_pub, missing_docs)]

use std::path::Path;

#[test]
fn no_crate_of_the_workspace_has_a_module_cycle() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let roots = sitesteer_lint::workspace_crate_roots(workspace).unwrap();
    // The check must see the crates it guards, or it passes by reading nothing.
    for expected in [
        "proxy/src/lib.rs",
        "probes/src/lib.rs",
        "config/src/lib.rs",
        "tests/e2e/main.rs",
    ] {
        assert!(
            roots.contains(&workspace.join(expected)),
            "{expected} is not among the crate roots: {roots:?}"
        );
    }
    let cycles = sitesteer_lint::workspace_cycles(workspace).unwrap();
    let report: Vec<String> = cycles.iter().map(ToString::to_string).collect();
    assert!(
        cycles.is_empty(),
        "module dependency cycles:\n{}",
        report.join("\n")
    );
}
