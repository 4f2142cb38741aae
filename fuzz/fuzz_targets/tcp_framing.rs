//! The newline-delimited JSON-RPC framing of the TCP transport (`sitesteer_demo::framing`), and
//! the proxy's JSON-RPC reader (`mcp::method_of`) on every line it yields. The first byte
//! picks the line limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitesteer_demo::framing::{split_lines, Frame};

fuzz_target!(|data: &[u8]| {
    let Some((&limit, input)) = data.split_first() else {
        return;
    };
    let max_line = usize::from(limit);
    let frames = split_lines(input, max_line);
    let mut consumed = 0usize;
    for frame in &frames {
        match frame {
            Frame::Message(line) => {
                assert!(line.len() <= max_line, "a line over the limit was framed");
                assert!(!line.contains(&b'\n'), "a frame holds a newline");
                let _ = sitesteer::mcp::method_of(line);
                let _ = serde_json::from_slice::<serde_json::Value>(line);
                consumed += line.len();
                let rest = &input[consumed..];
                consumed += if rest.starts_with(b"\r\n") {
                    2
                } else {
                    usize::from(rest.starts_with(b"\n"))
                };
            }
            Frame::TooLong => {
                assert!(input.len() - consumed > max_line);
                consumed = input.len();
            }
        }
    }
    assert_eq!(consumed, input.len(), "frames lost bytes");
    // The whole buffer as one HTTP body, as the proxy reads a POST.
    let _ = sitesteer::mcp::method_of(input);
});
