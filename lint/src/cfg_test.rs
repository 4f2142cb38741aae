//! Test-only code is outside the module graph: an item under `#[cfg(test)]` (a unit-test
//! module, a test helper module) is blanked before the graph is read.
//!
//! A unit test may drive its crate from the top (a demo site's transport test starts a whole
//! site through a shared helper), which would make a cycle in the test build only. What must
//! run one way is the code that ships; integration tests, which are crates of their own, are
//! checked like any other crate.

/// Blanks (with spaces, keeping newlines and so line numbers) every item of `code` that
/// `#[cfg(test)]` guards, with its other attributes. `code` has comments and literals
/// already blanked ([`crate::strip::code_only`]), so braces and semicolons are real.
pub(crate) fn blank_test_items(code: &mut [char]) {
    let mut i = 0;
    while i < code.len() {
        match cfg_test_attribute_end(code, i) {
            Some(attr_end) => {
                let end = item_end(code, attr_end);
                for c in &mut code[i..end] {
                    if *c != '\n' {
                        *c = ' ';
                    }
                }
                i = end;
            }
            None => i += 1,
        }
    }
}

/// When `#[cfg(test)]` (any spacing) starts at `at`, the index just after its `]`.
fn cfg_test_attribute_end(code: &[char], at: usize) -> Option<usize> {
    let mut i = at;
    for token in ["#", "[", "cfg", "(", "test", ")", "]"] {
        while code.get(i).is_some_and(|c| c.is_whitespace()) && token != "#" {
            i += 1;
        }
        let chars: Vec<char> = token.chars().collect();
        if code.get(i..i + chars.len())? != chars.as_slice() {
            return None;
        }
        i += chars.len();
    }
    Some(i)
}

/// The end of the item that starts at or after `from`: past further attributes, then up to
/// and including its `;` or the `}` that closes its first top-level brace.
fn item_end(code: &[char], from: usize) -> usize {
    let mut i = from;
    let mut depth = 0usize;
    let mut brackets = 0usize;
    while i < code.len() {
        match code[i] {
            '[' => brackets += 1,
            ']' => brackets = brackets.saturating_sub(1),
            '{' if brackets == 0 => depth += 1,
            '}' if brackets == 0 => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            ';' if depth == 0 && brackets == 0 => return i + 1,
            _ => {}
        }
        i += 1;
    }
    code.len()
}

#[cfg(test)]
mod tests {
    use super::blank_test_items;

    fn blanked(source: &str) -> String {
        let mut code: Vec<char> = source.chars().collect();
        blank_test_items(&mut code);
        code.into_iter().collect()
    }

    #[test]
    fn a_test_module_and_a_test_declaration_go_and_the_rest_stays() {
        let source = "use crate::a;\n#[cfg(test)]\nmod test_support;\n#[ cfg( test ) ]\n#[allow(x)]\nmod tests {\n    use crate::b;\n    fn f() { if x { crate::c } }\n}\nuse crate::d;\n";
        let out = blanked(source);
        assert_eq!(out.lines().count(), source.lines().count());
        assert!(
            out.contains("use crate::a;") && out.contains("use crate::d;"),
            "{out}"
        );
        for gone in ["test_support", "crate::b", "crate::c", "allow"] {
            assert!(!out.contains(gone), "{gone} stayed: {out}");
        }
    }

    #[test]
    fn other_cfgs_stay() {
        let source = "#[cfg(unix)]\nuse crate::a;\n#[cfg(not(test))]\nuse crate::b;\n";
        assert_eq!(blanked(source), source);
    }
}
