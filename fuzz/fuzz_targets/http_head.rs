//! The HTTP listener's request-head scan (`limits::HeadScan`) on arbitrary bytes, fed in two
//! pieces: it never panics, a complete head ends inside the buffer, and the pieces agree
//! with a single scan. The first byte picks where to cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitesteer::limits::{HeadScan, Scan};
use sitesteer_config::Limits;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_request_line: 64,
        max_header_bytes: 512,
        max_headers: 8,
        ..Limits::default()
    };
    let whole = HeadScan::default().feed(input, &limits);
    if let Scan::Complete(end) = whole {
        assert!(end <= input.len() && end <= limits.max_header_bytes);
        assert_eq!(input[end - 1], b'\n');
    }
    let cut = usize::from(cut).min(input.len());
    let mut scan = HeadScan::default();
    let pieces = match scan.feed(&input[..cut], &limits) {
        Scan::Partial => scan.feed(input, &limits),
        other => other,
    };
    match (whole, pieces) {
        (Scan::Complete(a), Scan::Complete(b)) => assert_eq!(a, b),
        (Scan::Refused(_), Scan::Refused(_)) | (Scan::Partial, Scan::Partial) => {}
        other => panic!("one scan and two pieces disagree: {other:?}"),
    }
});
