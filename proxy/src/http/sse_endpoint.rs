//! The `endpoint` event of an HTTP+SSE (2024-11-05) stream, rewritten whole however the
//! site's chunks split it. The event names the message URL the client must POST to; the
//! proxy adds its stream token to that URL ([`super::affinity`]). A site may write the event
//! in any pieces (inside `event:`, inside the URL, between the `\n` of one line and the
//! blank line that ends the event), with `\n`, `\r\n` or `\r` line endings (the SSE
//! specification allows all three), so the rewriter buffers the bytes of one event at a
//! time, at most [`MAX_EVENT`] of them, and decides only on whole events: events before the
//! endpoint event pass unchanged as soon as they are complete, and everything after it
//! passes straight through. An event larger than the bound, or no endpoint event within the
//! first [`MAX_SEARCH`] bytes, ends the search and the stream passes unchanged (the caller
//! counts it). The output depends only on the stream's bytes, never on how they were split.

/// Largest single event buffered while looking for the endpoint event, bytes.
pub const MAX_EVENT: usize = 4 * 1024;
/// How far into a stream the endpoint event is looked for (the start of the last event
/// examined), bytes.
pub const MAX_SEARCH: usize = 16 * 1024;

/// The UTF-8 byte order mark an SSE stream may start with (parsers skip it).
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How the search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The endpoint event was rewritten.
    Rewritten,
    /// An event was larger than [`MAX_EVENT`]: passed unchanged.
    TooLong,
    /// No endpoint event within [`MAX_SEARCH`] bytes, or before the stream ended.
    NotFound,
    /// The endpoint event's URL could not be rewritten (not one data line, or the rewrite
    /// refused it): passed unchanged.
    Unusable,
}

impl Ended {
    /// The `reason` label of `sitesteer_sse_endpoint_unrewritten_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Ended::Rewritten => "rewritten",
            Ended::TooLong => "too_long",
            Ended::NotFound => "not_found",
            Ended::Unusable => "unusable",
        }
    }
}

/// The incremental rewriter of one stream.
#[derive(Debug, Default)]
pub struct EndpointRewriter {
    /// Bytes of the current, incomplete event.
    pending: Vec<u8>,
    /// Stream offset of `pending`'s first byte.
    offset: usize,
    /// Set once the search is over: every byte passes straight through.
    ended: Option<Ended>,
}

impl EndpointRewriter {
    /// How the search ended, once it has.
    pub fn ended(&self) -> Option<Ended> {
        self.ended
    }

    /// Feeds the next `chunk` (`end` when the stream ends with it) and returns what to send
    /// on now. `rewrite` gets the endpoint event's URL and returns the URL to send instead
    /// (`None` to leave the event as it is); it is called at most once per stream.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        end: bool,
        rewrite: &mut dyn FnMut(&str) -> Option<String>,
    ) -> Vec<u8> {
        if self.ended.is_some() {
            let mut out = std::mem::take(&mut self.pending);
            out.extend_from_slice(chunk);
            return out;
        }
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(self.pending.len() + 128);
        let mut at = 0;
        if self.offset == 0 {
            // A byte order mark passes as it is, once it is known to be one (or not).
            let head = &self.pending[..self.pending.len().min(BOM.len())];
            if head.len() < BOM.len() && BOM.starts_with(head) && !end {
                return out;
            }
            if self.pending.starts_with(BOM) {
                at = BOM.len();
            }
        }
        while self.ended.is_none() {
            let rest = &self.pending[at..];
            let start = self.offset + at;
            if start > MAX_SEARCH {
                self.ended = Some(Ended::NotFound);
                break;
            }
            let Some((len, content)) = event_len(rest, end) else {
                if rest.len() > MAX_EVENT {
                    self.ended = Some(Ended::TooLong);
                } else if end {
                    self.ended = Some(Ended::NotFound);
                }
                break;
            };
            if content > MAX_EVENT {
                self.ended = Some(Ended::TooLong);
                break;
            }
            let event = &rest[..len];
            match rewrite_event(event, rewrite) {
                Some(Ok(rewritten)) => {
                    out.extend_from_slice(&self.pending[..at]);
                    out.extend_from_slice(&rewritten);
                    at += len;
                    out.extend_from_slice(&self.pending[at..]);
                    self.pending.clear();
                    self.ended = Some(Ended::Rewritten);
                    return out;
                }
                Some(Err(())) => {
                    self.ended = Some(Ended::Unusable);
                    break;
                }
                None => at += len,
            }
        }
        if self.ended.is_some() {
            out.append(&mut self.pending);
            return out;
        }
        out.extend_from_slice(&self.pending[..at]);
        self.pending.drain(..at);
        self.offset += at;
        out
    }
}

/// Where the line starting `bytes` ends: `(content length, terminator length)`, or `None`
/// when its end is not known yet (no terminator, or a `\r` as the last byte that a `\n` may
/// still follow unless the stream ended).
fn line_end(bytes: &[u8], end: bool) -> Option<(usize, usize)> {
    let i = bytes.iter().position(|&b| b == b'\n' || b == b'\r')?;
    if bytes[i] == b'\n' {
        return Some((i, 1));
    }
    match bytes.get(i + 1) {
        Some(b'\n') => Some((i, 2)),
        Some(_) => Some((i, 1)),
        None if end => Some((i, 1)),
        None => None,
    }
}

/// The length of the event at the start of `bytes` through the blank line that ends it,
/// and without that blank line (what [`MAX_EVENT`] bounds); `None` while it is incomplete.
/// A blank line that is a lone `\r` so far ends the event at once: a `\n` after it would
/// only be an empty line of its own, so the output is the same either way and a stream with
/// `\r` line endings is not held until its next byte.
fn event_len(bytes: &[u8], end: bool) -> Option<(usize, usize)> {
    let mut at = 0;
    loop {
        let rest = &bytes[at..];
        let (content, term) = match line_end(rest, end) {
            Some(found) => found,
            None if rest == b"\r" => (0, 1),
            None => return None,
        };
        if content == 0 {
            return Some((at + term, at));
        }
        at += content + term;
    }
}

/// One line's field name and value, as the SSE parser reads them (one space after the
/// colon is dropped; a line without a colon is a field with an empty value).
fn field(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&b| b == b':') {
        None => (line, &[]),
        Some(i) => {
            let value = &line[i + 1..];
            (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
        }
    }
}

/// The endpoint event `event` with its URL rewritten; `None` when it is another event,
/// `Some(Err)` when it is the endpoint event but its URL cannot be rewritten.
fn rewrite_event(
    event: &[u8],
    rewrite: &mut dyn FnMut(&str) -> Option<String>,
) -> Option<Result<Vec<u8>, ()>> {
    let mut lines = Vec::new();
    let mut at = 0;
    while let Some((content, term)) = line_end(&event[at..], true) {
        lines.push((at, content, term));
        at += content + term;
        if content == 0 {
            break;
        }
    }
    let mut kind: &[u8] = b"message";
    let mut data = Vec::new();
    for (i, &(start, content, _)) in lines.iter().enumerate() {
        let line = &event[start..start + content];
        if line.first() == Some(&b':') {
            continue;
        }
        match field(line) {
            (b"event", value) => kind = value,
            (b"data", _) => data.push(i),
            _ => {}
        }
    }
    if kind != b"endpoint" {
        return None;
    }
    let [data] = data[..] else {
        return Some(Err(()));
    };
    let (start, content, _) = lines[data];
    let line = &event[start..start + content];
    let (_, url) = field(line);
    let Some(url) = std::str::from_utf8(url).ok().map(str::trim) else {
        return Some(Err(()));
    };
    let Some(new_url) = rewrite(url) else {
        return Some(Err(()));
    };
    let prefix_len = content - field(line).1.len();
    let mut out = Vec::with_capacity(event.len() + new_url.len());
    out.extend_from_slice(&event[..start + prefix_len]);
    out.extend_from_slice(new_url.as_bytes());
    out.extend_from_slice(&event[start + content..]);
    Some(Ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tag(url: &str) -> Option<String> {
        Some(format!("{url}&sst=T"))
    }

    fn whole(stream: &[u8]) -> (Vec<u8>, Option<Ended>) {
        let mut r = EndpointRewriter::default();
        let out = r.feed(stream, true, &mut tag);
        (out, r.ended())
    }

    fn pieces(stream: &[u8], cuts: &[usize]) -> (Vec<u8>, Option<Ended>) {
        let mut r = EndpointRewriter::default();
        let mut out = Vec::new();
        let mut last = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
        cuts.sort_unstable();
        for c in cuts {
            out.extend(r.feed(&stream[last..c], false, &mut tag));
            last = c;
        }
        out.extend(r.feed(&stream[last..], true, &mut tag));
        (out, r.ended())
    }

    #[test]
    fn rewrites_the_event_with_every_line_ending() {
        for nl in ["\n", "\r\n", "\r"] {
            let stream =
                format!(": hi{nl}{nl}event: endpoint{nl}data: /m?s=1{nl}{nl}data: x{nl}{nl}");
            let want =
                format!(": hi{nl}{nl}event: endpoint{nl}data: /m?s=1&sst=T{nl}{nl}data: x{nl}{nl}");
            assert_eq!(
                whole(stream.as_bytes()),
                (want.into_bytes(), Some(Ended::Rewritten))
            );
        }
        // Fields in any order, no space after the colon, a byte order mark first.
        let stream = b"\xEF\xBB\xBFdata:/m\nevent:endpoint\n\n";
        assert_eq!(
            whole(stream).0,
            b"\xEF\xBB\xBFdata:/m&sst=T\nevent:endpoint\n\n".to_vec()
        );
    }

    #[test]
    fn every_split_of_the_event_gives_the_same_rewrite() {
        let stream = b"event: endpoint\r\ndata: /messages/?session_id=abc\r\n\r\n: ping\r\n\r\n";
        let want = whole(stream);
        assert_eq!(want.1, Some(Ended::Rewritten));
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                assert_eq!(pieces(stream, &[a, b]), want, "cut at {a} and {b}");
            }
        }
        // A byte at a time.
        let cuts: Vec<usize> = (0..=stream.len()).collect();
        assert_eq!(pieces(stream, &cuts), want);
    }

    #[test]
    fn an_event_ending_in_a_lone_cr_is_not_held_for_the_next_byte() {
        let mut r = EndpointRewriter::default();
        assert_eq!(
            r.feed(b"event: endpoint\rdata: /m\r\r", false, &mut tag),
            b"event: endpoint\rdata: /m&sst=T\r\r"
        );
        assert_eq!(r.feed(b"\n", false, &mut tag), b"\n");
    }

    #[test]
    fn other_events_pass_as_soon_as_they_are_complete() {
        let mut r = EndpointRewriter::default();
        assert_eq!(r.feed(b": keep", false, &mut tag), b"");
        assert_eq!(
            r.feed(b"alive\n\nevent: endp", false, &mut tag),
            b": keepalive\n\n"
        );
        assert_eq!(r.feed(b"oint\ndata: /m\n", false, &mut tag), b"");
        assert_eq!(
            r.feed(b"\n", false, &mut tag),
            b"event: endpoint\ndata: /m&sst=T\n\n"
        );
        assert_eq!(
            r.feed(b"data: later\n\n", false, &mut tag),
            b"data: later\n\n"
        );
    }

    #[test]
    fn past_the_bounds_the_stream_passes_unchanged() {
        let big = format!("event: endpoint\ndata: /{}\n\n", "a".repeat(MAX_EVENT));
        let mut r = EndpointRewriter::default();
        let mut out = r.feed(&big.as_bytes()[..MAX_EVENT + 10], false, &mut tag);
        assert_eq!(r.ended(), Some(Ended::TooLong));
        out.extend(r.feed(&big.as_bytes()[MAX_EVENT + 10..], false, &mut tag));
        assert_eq!(out, big.as_bytes());

        let mut many = ": pad\n\n".repeat(MAX_SEARCH / 7 + 2);
        many.push_str("event: endpoint\ndata: /m\n\n");
        assert_eq!(
            whole(many.as_bytes()),
            (many.clone().into_bytes(), Some(Ended::NotFound))
        );

        let two = b"event: endpoint\ndata: /a\ndata: /b\n\n";
        assert_eq!(whole(two), (two.to_vec(), Some(Ended::Unusable)));
        let unfinished = b"event: endpoint\ndata: /m\n";
        assert_eq!(
            whole(unfinished),
            (unfinished.to_vec(), Some(Ended::NotFound))
        );
    }

    fn piece() -> impl Strategy<Value = String> {
        let nl = prop_oneof![Just("\n"), Just("\r\n"), Just("\r")];
        let url = "[a-z/?=&]{0,12}";
        (nl, url, 0u8..6).prop_map(|(nl, url, k)| match k {
            0 => format!("event: endpoint{nl}data: /{url}{nl}{nl}"),
            1 => format!("data:/{url}{nl}event:endpoint{nl}{nl}"),
            2 => format!(": keepalive{nl}{nl}"),
            3 => format!("event: message{nl}data: {url}{nl}{nl}"),
            4 => format!("id: 1{nl}data: {url}{nl}{nl}"),
            _ => nl.to_string(),
        })
    }

    proptest! {
        /// For every split of a stream into chunks the output equals that of the unsplit
        /// stream.
        #[test]
        fn splitting_never_changes_the_output(
            bom in any::<bool>(),
            parts in proptest::collection::vec(piece(), 0..8),
            junk in proptest::collection::vec(any::<u8>(), 0..16),
            cuts in proptest::collection::vec(0usize..400, 0..12),
        ) {
            let mut stream = if bom { BOM.to_vec() } else { Vec::new() };
            for p in &parts {
                stream.extend_from_slice(p.as_bytes());
            }
            stream.extend_from_slice(&junk);
            prop_assert_eq!(pieces(&stream, &cuts), whole(&stream));
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_keep_their_length_unless_rewritten(
            stream in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(0usize..600, 0..6),
        ) {
            let (out, ended) = pieces(&stream, &cuts);
            if ended != Some(Ended::Rewritten) {
                prop_assert_eq!(out, stream);
            }
        }
    }
}
