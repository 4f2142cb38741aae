//! MCP session ids and SSE stream tokens from clients: `SessionCodec::decode`,
//! `http::affinity::of_request` (header and query), and the SSE `endpoint` rewrite of an
//! upstream stream cut in two. Nothing panics, nothing forged verifies, a token sitesteer
//! issues always decodes back, and the rewrite does not depend on where the stream is cut.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sitesteer::http::affinity::{endpoint_target, of_request, with_token, Claim, StreamToken};
use sitesteer::http::sse_endpoint::{Ended, EndpointRewriter};
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
            assert!(
                matches!(affinity, Ok(Some(Claim::Session(ref b))) if b.site == site),
                "{affinity:?}"
            );
        }
    }
    let _ = of_request(codec, Some(data), None);
    let rewrite = |url: &str| {
        let target = endpoint_target(url, "/sse")?;
        let token = StreamToken { site: "site".into(), instance: 1, stream: 1, target };
        Some(with_token(url, &token.encode(codec)?))
    };
    let whole = {
        let mut r = EndpointRewriter::default();
        (r.feed(data, true, &mut |u| rewrite(u)), r.ended())
    };
    let cut = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut r = EndpointRewriter::default();
    let mut out = r.feed(&data[..cut], false, &mut |u| rewrite(u));
    out.extend(r.feed(&data[cut..], true, &mut |u| rewrite(u)));
    assert_eq!((out, r.ended()), whole);
    if whole.1 == Some(Ended::Rewritten) {
        let text = String::from_utf8_lossy(&whole.0);
        assert!(text.contains("sst=ss1."), "no stream token in {text:?}");
    } else {
        assert_eq!(whole.0, data);
    }
});
