//! Newline-delimited JSON-RPC framing, as erlmcp's raw TCP transport (and the demo site's
//! copy of it) reads a stream: one message per line, `\n` or `\r\n` ends a line, the last
//! unterminated line before the end of the stream is still a message, and a line longer
//! than the limit ends the stream (the reader answers one error line and closes).
//!
//! [`classify`] judges what one bounded `read_until(b'\n')` produced; [`split_lines`] applies
//! it to a whole buffer. Both are pure, so the fuzzer and the tests drive them directly.

/// One unit of a newline-delimited stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A line without its line ending (it may be blank; readers skip blank lines).
    Message(&'a [u8]),
    /// A line over the limit: the stream ends here.
    TooLong,
}

/// What one read of at most `max_line + 1` bytes up to and including a `\n` holds: the line
/// without its ending, or `None` when no `\n` came within `max_line + 1` bytes (too long).
/// A read that stopped short of the limit without a `\n` is the stream's last line.
pub fn classify(read: &[u8], max_line: usize) -> Option<&[u8]> {
    match read.strip_suffix(b"\n") {
        Some(line) => Some(line.strip_suffix(b"\r").unwrap_or(line)),
        None if read.len() > max_line => None,
        None => Some(read),
    }
}

/// Splits a whole stream into frames, exactly as successive bounded reads would.
pub fn split_lines(input: &[u8], max_line: usize) -> Vec<Frame<'_>> {
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let window = &rest[..rest.len().min(max_line.saturating_add(1))];
        let read = match window.iter().position(|&b| b == b'\n') {
            Some(i) => &window[..=i],
            None => window,
        };
        match classify(read, max_line) {
            Some(line) => out.push(Frame::Message(line)),
            None => {
                out.push(Frame::TooLong);
                break;
            }
        }
        rest = &rest[read.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lines_crlf_and_the_last_unterminated_line() {
        let frames = split_lines(b"{\"a\":1}\r\n\n{\"b\":2}\n{\"c\"", 64);
        assert_eq!(
            frames,
            vec![
                Frame::Message(b"{\"a\":1}"),
                Frame::Message(b""),
                Frame::Message(b"{\"b\":2}"),
                Frame::Message(b"{\"c\""),
            ]
        );
        assert!(split_lines(b"", 8).is_empty());
    }

    #[test]
    fn a_line_over_the_limit_ends_the_stream() {
        assert_eq!(
            split_lines(b"ok\n123456789\nnever", 8),
            vec![Frame::Message(b"ok"), Frame::TooLong]
        );
        // Exactly the limit, with its newline, is fine.
        assert_eq!(
            split_lines(b"12345678\n", 8),
            vec![Frame::Message(b"12345678")]
        );
        assert_eq!(split_lines(b"12345678\r\n", 8), vec![Frame::TooLong]);
        assert_eq!(split_lines(b"x", 0), vec![Frame::TooLong]);
    }

    proptest! {
        #[test]
        fn frames_rebuild_the_stream(
            input in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'x')], 0..200),
            max in 0usize..40,
        ) {
            let frames = split_lines(&input, max);
            let mut rebuilt = 0usize;
            for f in &frames {
                match f {
                    Frame::Message(line) => {
                        prop_assert!(line.len() <= max);
                        rebuilt += line.len();
                        // Skip the ending this line had.
                        let rest = &input[rebuilt..];
                        if rest.starts_with(b"\r\n") {
                            rebuilt += 2;
                        } else if rest.starts_with(b"\n") {
                            rebuilt += 1;
                        }
                    }
                    Frame::TooLong => {
                        prop_assert!(input[rebuilt..].len() > max);
                        rebuilt = input.len();
                    }
                }
            }
            prop_assert_eq!(rebuilt, input.len());
        }
    }
}
