//! MCP session ids and SSE stream tokens from clients: `SessionCodec::decode`,
//! `http::affinity::of_request` (header and query), and the SSE `endpoint` rewrite of an
//! upstream chunk. Nothing panics, nothing forged verifies, and a token sitesteer issues
//! always decodes back.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sitesteer::http::affinity::{of_request, rewrite_endpoint_event, Affinity};
use sitesteer::session::SessionCodec;

fn codec() -> &'static SessionCodec {
    static CODEC: OnceLock<SessionCodec> = OnceLock::new();
    CODEC.get_or_init(|| SessionCodec::new(b"fuzzing key, 32 bytes long......"))
}

fuzz_target!(|data: &[u8]| {
    let codec = codec();
    if let Ok(text) = std::str::from_utf8(data) {
        // Random text is never a valid signed token.
        if let Ok(bound) = codec.decode(text) {
            assert_eq!(codec.encode(&bound.site, &bound.upstream), text);
        }
        let _ = of_request(codec, None, Some(text));
        // Any site and upstream id round-trip.
        let middle = text
            .char_indices()
            .map(|(i, _)| i)
            .nth(text.chars().count() / 2)
            .unwrap_or(text.len());
        let (site, upstream) = text.split_at(middle);
        let token = codec.encode(site, upstream);
        let bound = codec.decode(&token);
        if token.len() <= 1024 {
            let bound = bound.expect("an issued token decodes");
            assert_eq!(
                (bound.site.as_str(), bound.upstream.as_str()),
                (site, upstream)
            );
            let affinity = of_request(codec, Some(token.as_bytes()), None);
            assert_eq!(
                affinity.ok().flatten().as_ref().map(Affinity::site),
                Some(site)
            );
        }
    }
    let _ = of_request(codec, Some(data), None);
    if let Some(rewritten) = rewrite_endpoint_event(codec, "site", data) {
        // The message URL carries the stream token of this site (whitespace around the
        // URL may go).
        let token = format!("sst={}", codec.encode("site", "sse"));
        let text = std::str::from_utf8(&rewritten).expect("the rewrite is text");
        assert!(text.contains(&token), "no stream token in {text:?}");
    }
});
