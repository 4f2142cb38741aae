//! Blanks out comments and literals so that later scans see only code.
//!
//! Every blanked character becomes a space and newlines are kept, so a character index and a
//! line number in the stripped text are the same as in the original source.

/// Returns `source` with comments, string, byte-string, raw-string and char literals replaced
/// by spaces (newlines kept). Lifetimes (`'a`) are code and stay.
pub(crate) fn code_only(source: &str) -> Vec<char> {
    let text: Vec<char> = source.chars().collect();
    let mut out = text.clone();
    let mut i = 0;
    while i < text.len() {
        let end = match text[i] {
            '/' if text.get(i + 1) == Some(&'/') => line_comment_end(&text, i),
            '/' if text.get(i + 1) == Some(&'*') => block_comment_end(&text, i),
            '"' => match raw_string_hashes(&text, i) {
                Some(hashes) => raw_string_end(&text, i, hashes),
                None => string_end(&text, i),
            },
            '\'' => match char_literal_end(&text, i) {
                Some(end) => end,
                None => i + 1,
            },
            _ => i + 1,
        };
        if end > i + 1 {
            blank(&mut out, i, end);
        }
        i = end.max(i + 1);
    }
    out
}

fn blank(out: &mut [char], from: usize, to: usize) {
    let to = to.min(out.len());
    for c in &mut out[from..to] {
        if *c != '\n' {
            *c = ' ';
        }
    }
}

fn line_comment_end(text: &[char], start: usize) -> usize {
    text[start..]
        .iter()
        .position(|&c| c == '\n')
        .map_or(text.len(), |n| start + n)
}

/// Block comments nest in Rust.
fn block_comment_end(text: &[char], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < text.len() {
        match (text[i], text[i + 1]) {
            ('/', '*') => {
                depth += 1;
                i += 2;
            }
            ('*', '/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    text.len()
}

fn string_end(text: &[char], quote: usize) -> usize {
    let mut i = quote + 1;
    while i < text.len() {
        match text[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    text.len()
}

/// `r"…"`, `r#"…"#`, `br##"…"##`: the number of hashes when the quote at `quote` opens a raw
/// string. The `r` must start a token (`br` counts; `for"` does not exist in Rust).
fn raw_string_hashes(text: &[char], quote: usize) -> Option<usize> {
    let mut j = quote;
    let mut hashes = 0;
    while j > 0 && text[j - 1] == '#' {
        hashes += 1;
        j -= 1;
    }
    if j == 0 || text[j - 1] != 'r' {
        return None;
    }
    let before_r = j.checked_sub(2).map(|k| text[k]);
    let starts_token = match before_r {
        None => true,
        Some('b') => !j.checked_sub(3).is_some_and(|k| is_ident(text[k])),
        Some(c) => !is_ident(c),
    };
    starts_token.then_some(hashes)
}

fn raw_string_end(text: &[char], quote: usize, hashes: usize) -> usize {
    let mut i = quote + 1;
    while i < text.len() {
        if text[i] == '"' && (1..=hashes).all(|h| text.get(i + h) == Some(&'#')) {
            return i + 1 + hashes;
        }
        i += 1;
    }
    text.len()
}

/// `'x'`, `'\n'`, `'\u{1F600}'`, `b'x'`; `None` for a lifetime or label (`'a`, `'outer:`).
fn char_literal_end(text: &[char], quote: usize) -> Option<usize> {
    match text.get(quote + 1)? {
        '\\' => {
            // The escaped character itself may be a quote: `'\''`.
            let close = text.get(quote + 3..)?.iter().position(|&c| c == '\'')?;
            Some(quote + 3 + close + 1)
        }
        _ if text.get(quote + 2) == Some(&'\'') => Some(quote + 3),
        _ => None,
    }
}

/// A character that may continue an identifier.
pub(crate) fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::code_only;

    fn stripped(source: &str) -> String {
        code_only(source).into_iter().collect()
    }

    #[test]
    fn comments_and_literals_become_spaces_and_keep_their_length() {
        let source = "a // crate::x\nb /* crate::y /* nested */ crate::z */ c \"crate::w\" d";
        let out = stripped(source);
        assert_eq!(out.chars().count(), source.chars().count());
        assert!(!out.contains("crate"), "{out}");
        assert_eq!(out.lines().count(), 2);
        for word in ["a", "b", "c", "d"] {
            assert!(
                out.split_whitespace().any(|w| w == word),
                "{word} lost: {out}"
            );
        }
    }

    #[test]
    fn raw_strings_escapes_and_chars_are_blanked_but_lifetimes_stay() {
        let source = r####"x r#"crate::a "quoted" "# y "es\"crate::b" z '"' w '\'' v b'"' fn f<'a>(s: &'a str) br##"crate::c"## u"####;
        let out = stripped(source);
        assert!(!out.contains("crate"), "{out}");
        for word in ["x", "y", "z", "w", "v", "u", "f<'a>(s:", "&'a"] {
            assert!(
                out.split_whitespace().any(|w| w == word),
                "{word} lost: {out}"
            );
        }
    }
}
