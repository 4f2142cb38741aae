//! Finds the line of a key path (`site[1].endpoints.http`) in the original TOML text,
//! so that validation errors can say where the offending key stands.

use toml_edit::{Document, Item, TableLike, Value};

/// A parsed view of the source text that maps key paths to line numbers.
pub(crate) struct Locator<'a> {
    text: &'a str,
    doc: Option<Document<&'a str>>,
}

impl<'a> Locator<'a> {
    /// Parses `text` for spans; a text that does not parse locates nothing. toml_edit has
    /// panicked on invalid text (fuzz/regressions/config_parse): callers pass text that
    /// `toml` accepted, and a panic here still only costs the line numbers.
    pub(crate) fn new(text: &'a str) -> Self {
        let doc = std::panic::catch_unwind(|| Document::parse(text).ok())
            .ok()
            .flatten();
        Self { text, doc }
    }

    /// Only line numbers of byte offsets (for text that is not valid TOML).
    pub(crate) fn without_spans(text: &'a str) -> Self {
        Self { text, doc: None }
    }

    /// The 1-based line of the deepest part of `path` that exists in the file.
    pub(crate) fn line_of(&self, path: &str) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let segments = split_path(path);
        let mut best = None;
        walk_table(doc.as_table(), &segments, &mut best);
        best.map(|offset| self.line_at(offset))
    }

    /// The 1-based line that holds byte `offset`.
    pub(crate) fn line_at(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }
}

fn walk_table(table: &dyn TableLike, segments: &[Segment<'_>], best: &mut Option<usize>) {
    let Some((Segment::Key(key), rest)) = segments.split_first() else {
        return;
    };
    let Some((k, item)) = table.get_key_value(key) else {
        return;
    };
    if let Some(span) = k.span() {
        *best = Some(span.start);
    }
    walk_item(item, rest, best);
}

fn walk_item(item: &Item, segments: &[Segment<'_>], best: &mut Option<usize>) {
    match segments.first() {
        None => {}
        Some(Segment::Index(i)) => match item {
            Item::ArrayOfTables(array) => {
                if let Some(table) = array.get(*i) {
                    if let Some(span) = table.span() {
                        *best = Some(span.start);
                    }
                    walk_table(table, &segments[1..], best);
                }
            }
            Item::Value(Value::Array(array)) => {
                if let Some(value) = array.get(*i) {
                    if let Some(span) = value.span() {
                        *best = Some(span.start);
                    }
                    if let Value::InlineTable(table) = value {
                        walk_table(table, &segments[1..], best);
                    }
                }
            }
            _ => {}
        },
        Some(Segment::Key(_)) => {
            if let Some(table) = item.as_table_like() {
                walk_table(table, segments, best);
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Segment<'p> {
    Key(&'p str),
    Index(usize),
}

fn split_path(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(close) = stripped.find(']') else {
                break;
            };
            if let Ok(i) = stripped[..close].parse() {
                out.push(Segment::Index(i));
            }
            rest = &stripped[close + 1..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[listen]\nhttp = \"x\"\n\n[[site]]\nname = \"a\"\n\n[[site]]\nname = \"b\"\n[site.endpoints]\nhttp = \"bad\"\n";

    #[test]
    fn finds_nested_keys_in_arrays_of_tables() {
        let l = Locator::new(TEXT);
        assert_eq!(l.line_of("listen.http"), Some(2));
        assert_eq!(l.line_of("site[1].name"), Some(8));
        assert_eq!(l.line_of("site[1].endpoints.http"), Some(10));
    }

    #[test]
    fn falls_back_to_the_deepest_known_part() {
        let l = Locator::new(TEXT);
        assert_eq!(l.line_of("site[1].endpoints.tcp"), Some(9));
        assert_eq!(l.line_of("nothing.here"), None);
    }
}
