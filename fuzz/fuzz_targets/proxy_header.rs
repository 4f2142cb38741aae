//! The PROXY protocol header parser (`proxy_protocol::parse`) on arbitrary bytes, fed in two
//! pieces: it never panics, decides within `MAX_HEADER` bytes, a header found lies inside
//! the bytes given, and a decision on the first piece stands for the whole. The first byte
//! picks where to cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitesteer::proxy_protocol::parse::{parse, signature, Parsed, Signature, MAX_HEADER};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let whole = parse(input);
    if input.len() >= MAX_HEADER {
        assert_ne!(whole, Parsed::Incomplete, "undecided after MAX_HEADER bytes");
    }
    if let Parsed::Header(h) = whole {
        assert!(h.len <= input.len() && h.len <= MAX_HEADER);
        assert_eq!(signature(input), Signature::Proxy);
    }
    let cut = usize::from(cut).min(input.len());
    match parse(&input[..cut]) {
        Parsed::Incomplete => {}
        decided => assert_eq!(decided, whole, "a decision on a prefix changed"),
    }
});
