//! Finds the paths a source file names through `crate::`, in code (not comments or strings).

use crate::strip::is_ident;

/// One mention of a top-level module through a `crate::` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mention {
    /// The top-level module named: `steer` in `crate::steer::Attempts`.
    pub(crate) module: String,
    /// 1-based line of the mention.
    pub(crate) line: usize,
}

/// Every top-level module `code` names through `crate::`: plain paths (`use crate::a::B`,
/// `crate::a::f()`), groups (`use crate::{a, b::{c, d}}`: `a` and `b`) and visibility
/// paths. `$crate` (a macro's own crate) and `crate::self` are not module mentions.
/// `code` must already be stripped of comments and literals ([`crate::strip::code_only`]).
pub(crate) fn crate_mentions(code: &[char]) -> Vec<Mention> {
    let mut mentions = Vec::new();
    let mut i = 0;
    while let Some(at) = find_word(code, i, "crate") {
        i = at + "crate".len();
        if at > 0 && code[at - 1] == '$' {
            continue;
        }
        let Some(after_colons) = expect(code, skip_space(code, i), "::") else {
            continue;
        };
        let next = skip_space(code, after_colons);
        if code.get(next) == Some(&'{') {
            for (name, pos) in group_heads(code, next) {
                push(&mut mentions, code, name, pos);
            }
        } else if let Some((name, _)) = ident_at(code, next) {
            push(&mut mentions, code, name, next);
        }
    }
    mentions
}

fn push(mentions: &mut Vec<Mention>, code: &[char], name: String, pos: usize) {
    if name != "self" {
        let line = 1 + code[..pos].iter().filter(|&&c| c == '\n').count();
        mentions.push(Mention { module: name, line });
    }
}

/// The first identifier of each item of the `{…}` group that opens at `open`, at depth one
/// only: in `{a, b::{c, d}}` the heads are `a` and `b`.
fn group_heads(code: &[char], open: usize) -> Vec<(String, usize)> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut expecting_head = false;
    let mut i = open;
    while i < code.len() {
        match code[i] {
            '{' => {
                depth += 1;
                expecting_head = depth == 1;
                i += 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
                i += 1;
            }
            ',' => {
                expecting_head = depth == 1;
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            _ if expecting_head => {
                expecting_head = false;
                match ident_at(code, i) {
                    Some((name, end)) => {
                        heads.push((name, i));
                        i = end;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    heads
}

/// The index of the next occurrence of `word` at or after `from` as a whole identifier.
fn find_word(code: &[char], from: usize, word: &str) -> Option<usize> {
    let word: Vec<char> = word.chars().collect();
    let mut i = from;
    while i + word.len() <= code.len() {
        if code[i..i + word.len()] == word[..]
            && (i == 0 || !is_ident(code[i - 1]))
            && code.get(i + word.len()).is_none_or(|&c| !is_ident(c))
        {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn skip_space(code: &[char], mut i: usize) -> usize {
    while code.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    i
}

fn expect(code: &[char], i: usize, token: &str) -> Option<usize> {
    let token: Vec<char> = token.chars().collect();
    (code.get(i..i + token.len())? == &token[..]).then_some(i + token.len())
}

/// The identifier starting at `i` (a raw `r#name` gives `name`) and the index after it.
pub(crate) fn ident_at(code: &[char], i: usize) -> Option<(String, usize)> {
    let start = if code.get(i..i + 2) == Some(&['r', '#']) {
        i + 2
    } else {
        i
    };
    let first = *code.get(start)?;
    if !(first.is_alphabetic() || first == '_') {
        return None;
    }
    let end = (start..code.len())
        .find(|&j| !is_ident(code[j]))
        .unwrap_or(code.len());
    Some((code[start..end].iter().collect(), end))
}

#[cfg(test)]
mod tests {
    use super::crate_mentions;
    use crate::strip::code_only;

    fn modules(source: &str) -> Vec<(String, usize)> {
        crate_mentions(&code_only(source))
            .into_iter()
            .map(|m| (m.module, m.line))
            .collect()
    }

    fn named(list: &[(&str, usize)]) -> Vec<(String, usize)> {
        list.iter().map(|(m, l)| (m.to_string(), *l)).collect()
    }

    #[test]
    fn plain_inline_and_visibility_paths() {
        let source = "use crate::steer::Attempts;\nfn f() { crate :: probes::start(); }\npub(in crate::http) struct S;";
        assert_eq!(
            modules(source),
            named(&[("steer", 1), ("probes", 2), ("http", 3)])
        );
    }

    #[test]
    fn groups_give_their_heads_at_depth_one() {
        let source = "use crate::{\n    a,\n    b::{c, d::e},\n    self,\n    f::*,\n};";
        assert_eq!(modules(source), named(&[("a", 2), ("b", 3), ("f", 5)]));
    }

    #[test]
    fn comments_strings_macro_crates_and_other_words_are_not_mentions() {
        let source = "// use crate::a;\n/* crate::b */\nlet s = \"crate::c\";\nmacro_rules! m { () => { $crate::d } }\npub(crate) fn crates() {}\nlet crate_x = 1;";
        assert_eq!(modules(source), named(&[]));
    }
}
