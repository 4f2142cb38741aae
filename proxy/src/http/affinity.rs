//! Affinity of stateful MCP traffic to its site: Streamable HTTP session ids
//! (`Mcp-Session-Id`) and the message URL of an HTTP+SSE (2024-11-05) stream both carry a
//! signed token naming the site, so follow-up requests reach the same site from any
//! sitesteer instance.

use bytes::Bytes;

use crate::session::{Bound, SessionCodec};

/// The MCP session header.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// Query parameter carrying the site token on HTTP+SSE message URLs.
pub const SSE_TOKEN_PARAM: &str = "sst";
/// Upstream id used in SSE stream tokens.
const SSE_STREAM: &str = "sse";

/// What a request is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Affinity {
    /// A Streamable HTTP session on `site`, known there as `upstream`.
    Session(Bound),
    /// A message for the HTTP+SSE stream held by `site`.
    Stream(String),
}

impl Affinity {
    /// The site the request must go to.
    pub fn site(&self) -> &str {
        match self {
            Affinity::Session(b) => &b.site,
            Affinity::Stream(site) => site,
        }
    }
}

/// A session id or stream token that sitesteer never issued (answered 404).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownSession;

/// Reads the affinity of a request from its session header and query. `Err` means the
/// request names a session or stream sitesteer never issued (answer 404).
pub fn of_request(
    codec: &SessionCodec,
    session: Option<&[u8]>,
    query: Option<&str>,
) -> Result<Option<Affinity>, UnknownSession> {
    if let Some(raw) = session {
        let token = std::str::from_utf8(raw).map_err(|_| UnknownSession)?;
        return codec
            .decode(token)
            .map(|b| Some(Affinity::Session(b)))
            .map_err(|_| UnknownSession);
    }
    let Some(token) = query.and_then(sse_token) else {
        return Ok(None);
    };
    match codec.decode(token) {
        Ok(b) if b.upstream == SSE_STREAM => Ok(Some(Affinity::Stream(b.site))),
        _ => Err(UnknownSession),
    }
}

fn sse_token(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(SSE_TOKEN_PARAM)?.strip_prefix('='))
}

/// Rewrites the `endpoint` event of an HTTP+SSE stream so that the message URL carries the
/// site token. Returns `None` when `chunk` holds no endpoint event (the caller keeps
/// looking in the next chunk).
pub fn rewrite_endpoint_event(codec: &SessionCodec, site: &str, chunk: &[u8]) -> Option<Bytes> {
    let text = std::str::from_utf8(chunk).ok()?;
    let event_at = text
        .find("event: endpoint")
        .or_else(|| text.find("event:endpoint"))?;
    let data_rel = text[event_at..].find("data:")?;
    let data_start = event_at + data_rel + "data:".len();
    let line_end = text[data_start..]
        .find(['\n', '\r'])
        .map_or(text.len(), |i| data_start + i);
    let url = text[data_start..line_end].trim();
    let separator = if url.contains('?') { '&' } else { '?' };
    let token = codec.encode(site, SSE_STREAM);
    let mut out = String::with_capacity(text.len() + token.len() + 8);
    out.push_str(&text[..data_start]);
    out.push(' ');
    out.push_str(url);
    out.push(separator);
    out.push_str(SSE_TOKEN_PARAM);
    out.push('=');
    out.push_str(&token);
    out.push_str(&text[line_end..]);
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_headers_and_stream_tokens_round_trip() {
        let codec = SessionCodec::new(b"test key of some length");
        let token = codec.encode("a", "up-1");
        let affinity = of_request(&codec, Some(token.as_bytes()), None).unwrap();
        assert_eq!(affinity.as_ref().map(Affinity::site), Some("a"));
        assert_eq!(
            of_request(&codec, Some(b"forged"), None),
            Err(UnknownSession)
        );
        assert_eq!(of_request(&codec, None, Some("x=1")), Ok(None));

        let chunk = b"event: endpoint\ndata: /mcp/sse?sessionId=abc\n\n";
        let rewritten = rewrite_endpoint_event(&codec, "b", chunk).unwrap();
        let text = std::str::from_utf8(&rewritten).unwrap();
        assert!(
            text.starts_with("event: endpoint\ndata: /mcp/sse?sessionId=abc&sst=ss1."),
            "{text}"
        );
        assert!(text.ends_with("\n\n"));
        let query = text.split('?').nth(1).unwrap().lines().next().unwrap();
        let affinity = of_request(&codec, None, Some(query)).unwrap();
        assert_eq!(affinity, Some(Affinity::Stream("b".into())));
        assert!(rewrite_endpoint_event(&codec, "b", b": keep-alive\n\n").is_none());
        // A session token is not a stream token.
        let q = format!("sst={token}");
        assert_eq!(of_request(&codec, None, Some(&q)), Err(UnknownSession));
    }

    /// Inputs the session fuzzer stopped on (`fuzz/regressions/session_decode/`): refused
    /// without a panic, and a rewritten endpoint event still carries the stream token.
    #[test]
    fn fuzz_regressions() {
        let codec = SessionCodec::new(b"fuzzing key, 32 bytes long......");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/regressions/session_decode");
        for entry in std::fs::read_dir(dir).expect("the regression folder") {
            let data = std::fs::read(entry.expect("entry").path()).expect("read");
            assert!(of_request(&codec, Some(&data), None).is_err());
            if let Some(rewritten) = rewrite_endpoint_event(&codec, "site", &data) {
                let token = format!("sst={}", codec.encode("site", SSE_STREAM));
                assert!(String::from_utf8_lossy(&rewritten).contains(&token));
            }
        }
    }
}
