//! The cycle check on small crates written to a scratch folder: it finds every way a cycle
//! can be put back, and only real ones.
#![warn(unreachable_pub, missing_docs)]

use std::path::{Path, PathBuf};

use sitesteer_lint::ModuleGraph;

/// A crate written file by file under the system temp dir, removed on drop.
struct Crate {
    dir: PathBuf,
}

impl Crate {
    fn new(tag: &str, files: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("sitesteer-lint-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (path, text) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        Self { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.join("src/lib.rs")
    }

    /// The cycles found, each as its modules joined by `→`.
    fn cycles(&self) -> Vec<String> {
        ModuleGraph::read(&self.root())
            .unwrap()
            .cycles()
            .iter()
            .map(|c| c.modules.join("→"))
            .collect()
    }
}

impl Drop for Crate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const LIB: &str = "mod a;\nmod b;\nmod c;\n";

#[test]
fn modules_that_depend_one_way_have_no_cycle() {
    let krate = Crate::new(
        "oneway",
        &[
            ("src/lib.rs", LIB),
            ("src/a.rs", "use crate::b::B;\nuse crate::c;\n"),
            ("src/b.rs", "use crate::c::C;\npub struct B;\n"),
            ("src/c.rs", "pub struct C;\n"),
        ],
    );
    assert_eq!(krate.cycles(), Vec::<String>::new());
}

#[test]
fn a_two_module_cycle_is_reported_with_the_line_of_each_step() {
    let krate = Crate::new(
        "two",
        &[
            ("src/lib.rs", LIB),
            ("src/a.rs", "//! a\n\nuse crate::b::B;\n"),
            ("src/b.rs", "pub struct B;\nfn f() { crate::a::g() }\n"),
            ("src/c.rs", ""),
        ],
    );
    let graph = ModuleGraph::read(&krate.root()).unwrap();
    let cycles = graph.cycles();
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert_eq!(cycles[0].modules, ["a", "b"]);
    let steps: Vec<(PathBuf, usize)> = cycles[0]
        .steps
        .iter()
        .map(|s| (s.file.clone(), s.line))
        .collect();
    assert_eq!(
        steps,
        [
            (krate.dir.join("src/a.rs"), 3),
            (krate.dir.join("src/b.rs"), 2)
        ]
    );
    let text = cycles[0].to_string();
    assert!(
        text.contains("a → (") && text.contains("src/b.rs:2"),
        "{text}"
    );
}

#[test]
fn a_three_module_cycle_through_grouped_and_nested_imports_is_found() {
    let krate = Crate::new(
        "three",
        &[
            ("src/lib.rs", LIB),
            ("src/a.rs", "use crate::{b, x::{y, z}};\n"),
            ("src/b.rs", "use crate::{\n    c::{self, C},\n};\n"),
            ("src/c.rs", "pub(crate) fn f() -> crate::a::T { todo!() }\n"),
        ],
    );
    assert_eq!(krate.cycles(), ["a→b→c"]);
}

#[test]
fn submodules_count_for_their_top_level_module() {
    let krate = Crate::new(
        "nested",
        &[
            ("src/lib.rs", LIB),
            ("src/a/mod.rs", "mod inner;\n"),
            ("src/a/inner.rs", "use crate::b::B;\n"),
            ("src/b.rs", "mod deep;\npub struct B;\n"),
            ("src/b/deep.rs", "use crate::a;\n"),
            ("src/c.rs", ""),
        ],
    );
    assert_eq!(krate.cycles(), ["a→b"]);
}

#[test]
fn a_path_attribute_is_followed() {
    let krate = Crate::new(
        "path",
        &[
            (
                "src/lib.rs",
                "mod a;\n#[path = \"elsewhere/bee.rs\"]\nmod b;\n",
            ),
            ("src/a.rs", "use crate::b;\n"),
            ("src/elsewhere/bee.rs", "use crate::a;\n"),
        ],
    );
    assert_eq!(krate.cycles(), ["a→b"]);
}

#[test]
fn comments_strings_macros_and_inner_paths_make_no_edge() {
    let krate = Crate::new(
        "quiet",
        &[
            ("src/lib.rs", LIB),
            ("src/a.rs", "use crate::b;\n"),
            (
                "src/b.rs",
                concat!(
                    "// use crate::a;\n",
                    "/* crate::a::f() /* nested */ crate::a */\n",
                    "/// [`crate::a`]\n",
                    "const S: &str = \"crate::a\";\n",
                    "const R: &str = r#\"crate::a \"quoted\"\"#;\n",
                    "macro_rules! m { () => { $crate::a::f() } }\n",
                    "use self::inner::a;\n",
                    "use super::a as _;\n",
                    "fn f<'a>(x: &'a str) -> char { 'a' }\n",
                ),
            ),
            ("src/c.rs", ""),
        ],
    );
    assert_eq!(krate.cycles(), Vec::<String>::new());
}

#[test]
fn two_separate_cycles_are_both_reported() {
    let krate = Crate::new(
        "both",
        &[
            ("src/lib.rs", "mod a;\nmod b;\nmod c;\nmod d;\n"),
            ("src/a.rs", "use crate::b;\n"),
            ("src/b.rs", "use crate::a;\n"),
            ("src/c.rs", "use crate::d;\n"),
            ("src/d.rs", "use crate::c;\n"),
        ],
    );
    assert_eq!(krate.cycles(), ["a→b", "c→d"]);
}

#[test]
fn a_missing_module_file_is_an_error_not_a_pass() {
    let krate = Crate::new("missing", &[("src/lib.rs", "mod gone;\n")]);
    let error = ModuleGraph::read(&krate.root()).unwrap_err().to_string();
    assert!(error.contains("mod gone;"), "{error}");
    assert!(Path::new(&krate.root()).exists());
}

#[test]
fn test_only_code_makes_no_edge_but_shipping_code_beside_it_does() {
    let krate = Crate::new(
        "cfgtest",
        &[
            ("src/lib.rs", "mod a;\nmod b;\n#[cfg(test)]\nmod support;\n"),
            (
                "src/a.rs",
                "use crate::b;\n#[cfg(test)]\nmod tests {\n    use crate::support::start;\n}\n",
            ),
            ("src/b.rs", "#[cfg(test)]\nuse crate::a;\n"),
            ("src/support.rs", "use crate::a;\n"),
        ],
    );
    assert_eq!(krate.cycles(), Vec::<String>::new());
    std::fs::write(
        krate.dir.join("src/b.rs"),
        "#[cfg(test)]\nuse crate::x;\nuse crate::a;\n",
    )
    .unwrap();
    assert_eq!(krate.cycles(), ["a→b"]);
}
