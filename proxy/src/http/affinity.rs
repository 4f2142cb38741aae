//! Affinity of stateful MCP traffic to its site: Streamable HTTP session ids
//! (`Mcp-Session-Id`) and the message URL of an HTTP+SSE (2024-11-05) stream both carry a
//! signed token naming the site, so follow-up requests reach the same site from any
//! sitesteer instance.
//!
//! A stream token (`sst=` on the message URL the `endpoint` event names) is bound to its
//! one stream: it is signed with the session codec over the site, the issuing instance, a
//! serial of the stream there, and the message URL (path and query, so the site's own
//! session id) the site named. [`stream_affinity`] honours it only on that URL, only while
//! the stream is open when this instance issued it, and never towards a site that takes no
//! new sessions (drained) when another instance did.

use sitesteer_probes::SiteState;

use crate::session::{Bound, SessionCodec};

/// The MCP session header.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// Query parameter carrying the site token on HTTP+SSE message URLs.
pub const SSE_TOKEN_PARAM: &str = "sst";
/// First word of the upstream id signed into a stream token (format version 2; the first
/// format, `sse`, named only the site and is no longer honoured).
const STREAM_TAG: &str = "sse2";

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

/// A verified stream token: which stream of which site it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamToken {
    /// The site holding the stream.
    pub site: String,
    /// The sitesteer instance that issued the token ([`super::streams::LiveStreams`]).
    pub instance: u64,
    /// The stream's serial on that instance.
    pub stream: u64,
    /// The message URL (path and query, without the token) the stream's endpoint event
    /// named.
    pub target: String,
}

impl StreamToken {
    fn upstream(&self) -> String {
        format!(
            "{STREAM_TAG} {:016x} {:x} {}",
            self.instance, self.stream, self.target
        )
    }

    fn from_bound(bound: Bound) -> Option<Self> {
        let mut parts = bound.upstream.splitn(4, ' ');
        let (Some(STREAM_TAG), Some(instance), Some(stream), Some(target)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        Some(Self {
            site: bound.site,
            instance: u64::from_str_radix(instance, 16).ok()?,
            stream: u64::from_str_radix(stream, 16).ok()?,
            target: target.to_string(),
        })
    }

    /// The signed token; `None` when it would be longer than the codec accepts back.
    pub fn encode(&self, codec: &SessionCodec) -> Option<String> {
        let token = codec.encode(&self.site, &self.upstream());
        codec.decode(&token).is_ok().then_some(token)
    }
}

/// What a request claims, verified: a session, or a message to a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// `Mcp-Session-Id`.
    Session(Bound),
    /// `sst=` on the query.
    Stream(StreamToken),
}

/// Reads what a request claims from its session header and query. `Err` means the request
/// names a session or stream sitesteer never issued (answer 404): a forged or modified
/// token, or a stream token of the old format.
pub fn of_request(
    codec: &SessionCodec,
    session: Option<&[u8]>,
    query: Option<&str>,
) -> Result<Option<Claim>, UnknownSession> {
    if let Some(raw) = session {
        let token = std::str::from_utf8(raw).map_err(|_| UnknownSession)?;
        return codec
            .decode(token)
            .map(|b| Some(Claim::Session(b)))
            .map_err(|_| UnknownSession);
    }
    let Some(token) = query.and_then(sse_token) else {
        return Ok(None);
    };
    codec
        .decode(token)
        .ok()
        .and_then(StreamToken::from_bound)
        .map(|t| Some(Claim::Stream(t)))
        .ok_or(UnknownSession)
}

fn sse_token(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(SSE_TOKEN_PARAM)?.strip_prefix('='))
}

/// The request target (`path`, and `?query` without the stream token) a message request is
/// compared with its token's target by.
pub fn message_target(path: &str, query: Option<&str>) -> String {
    let mut out = path.to_string();
    let kept = query.into_iter().flat_map(|q| q.split('&')).filter(|pair| {
        let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
        key != SSE_TOKEN_PARAM
    });
    for (i, pair) in kept.enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(pair);
    }
    out
}

/// The target of the message URL `url` that an endpoint event named on a stream opened at
/// `stream_path`: an absolute URL's path and query, a path as it is, a relative reference
/// resolved against the stream's path; without a fragment. `None` when it has no usable
/// path.
pub fn endpoint_target(url: &str, stream_path: &str) -> Option<String> {
    let url = url.split('#').next().unwrap_or_default();
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if !scheme.is_empty() && !scheme.contains(['/', '?']) => Some(rest),
        _ => url.strip_prefix("//"),
    };
    let target = match rest {
        Some(rest) => match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => rest[i..].to_string(),
            Some(i) => format!("/{}", &rest[i..]),
            None => "/".to_string(),
        },
        None if url.starts_with('/') => url.to_string(),
        None if url.is_empty() || url.starts_with('?') => return None,
        None => {
            let dir = stream_path.rsplit_once('/').map_or("", |(dir, _)| dir);
            format!("{dir}/{}", url.trim_start_matches("./"))
        }
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target.as_str(), None),
    };
    (!path.is_empty() && !path.contains(char::is_whitespace)).then(|| message_target(path, query))
}

/// The message URL sent to the client: `url` with `token` added as `sst=`.
pub fn with_token(url: &str, token: &str) -> String {
    let (url, fragment) = match url.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (url, None),
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    let mut out = format!("{url}{separator}{SSE_TOKEN_PARAM}={token}");
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// Whether this instance knows the token's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Issued here, and the stream is still open.
    Live,
    /// Issued here, and the stream has ended.
    Ended,
    /// Issued by another instance (or an earlier run of this one).
    Elsewhere,
}

/// Why a valid stream token did not pin its request (the `reason` label of
/// `sitesteer_sse_token_unpinned_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unpinned {
    /// The request is not for the stream's message URL.
    Target,
    /// The stream has ended.
    Ended,
    /// The site takes no new sessions (drained, down, maintenance) and the stream is not
    /// one this instance holds open.
    NoNewSessions,
}

impl Unpinned {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Unpinned::Target => "target",
            Unpinned::Ended => "ended",
            Unpinned::NoNewSessions => "no_new_sessions",
        }
    }
}

/// Whether a request for `target` carrying the verified `token` is pinned to the token's
/// site (a pure decision: `liveness` of the stream here, `state` of its site, `None` when the
/// site is not configured). A pinned request still gets 404 when its site is out of service
/// altogether (the caller's `serves_pinned` check); an unpinned one is steered as if it
/// carried no token.
pub fn stream_affinity(
    token: &StreamToken,
    target: &str,
    liveness: Liveness,
    state: Option<SiteState>,
) -> Result<Affinity, Unpinned> {
    if token.target != target {
        return Err(Unpinned::Target);
    }
    let pin = Affinity::Stream(token.site.clone());
    match liveness {
        Liveness::Live => Ok(pin),
        Liveness::Ended => Err(Unpinned::Ended),
        Liveness::Elsewhere if matches!(state, Some(SiteState::Up | SiteState::Degraded)) => {
            Ok(pin)
        }
        Liveness::Elsewhere => Err(Unpinned::NoNewSessions),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> SessionCodec {
        SessionCodec::new(b"test key of some length")
    }

    fn token(site: &str, stream: u64, target: &str) -> StreamToken {
        StreamToken {
            site: site.into(),
            instance: 7,
            stream,
            target: target.into(),
        }
    }

    #[test]
    fn session_headers_and_stream_tokens_round_trip() {
        let codec = codec();
        let session = codec.encode("a", "up-1");
        let claim = of_request(&codec, Some(session.as_bytes()), None).unwrap();
        assert!(matches!(claim, Some(Claim::Session(b)) if b.site == "a"));
        assert_eq!(
            of_request(&codec, Some(b"forged"), None),
            Err(UnknownSession)
        );
        assert_eq!(of_request(&codec, None, Some("x=1")), Ok(None));

        let t = token("b", 3, "/messages/?session_id=abc");
        let url = with_token("/messages/?session_id=abc", &t.encode(&codec).unwrap());
        let query = url.split_once('?').unwrap().1;
        assert_eq!(
            of_request(&codec, None, Some(query)),
            Ok(Some(Claim::Stream(t.clone())))
        );
        assert_eq!(message_target("/messages/", Some(query)), t.target);
        // A session token is not a stream token; neither is the old site-only format.
        for upstream in [session.clone(), codec.encode("b", "sse")] {
            let q = format!("sst={upstream}");
            assert_eq!(of_request(&codec, None, Some(&q)), Err(UnknownSession));
        }
        // Modified: another site, another target, one character changed.
        let signed = t.encode(&codec).unwrap();
        let mut forged = t.clone();
        forged.site = "a".into();
        let parts: Vec<&str> = signed.split('.').collect();
        let other_site = forged.encode(&codec).unwrap();
        let other: Vec<&str> = other_site.split('.').collect();
        let spliced = format!("ss1.{}.{}.{}", other[1], parts[2], parts[3]);
        let mut flipped = signed.clone().into_bytes();
        flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
        for bad in [spliced, String::from_utf8(flipped).unwrap()] {
            let q = format!("session_id=abc&sst={bad}");
            assert_eq!(
                of_request(&codec, None, Some(&q)),
                Err(UnknownSession),
                "{bad}"
            );
        }
    }

    #[test]
    fn two_streams_get_different_tokens() {
        let codec = codec();
        let a = token("s", 1, "/m?id=1").encode(&codec).unwrap();
        let b = token("s", 2, "/m?id=1").encode(&codec).unwrap();
        assert_ne!(a, b);
        let long = token("s", 1, &format!("/m?{}", "x".repeat(2000)));
        assert_eq!(
            long.encode(&codec),
            None,
            "too long to decode back: not issued"
        );
    }

    #[test]
    fn endpoint_urls_resolve_to_the_target_a_client_posts_to() {
        let cases = [
            ("/messages/?session_id=1", "/sse", "/messages/?session_id=1"),
            ("http://site:8080/m?s=1#frag", "/sse", "/m?s=1"),
            ("//site/m", "/sse", "/m"),
            ("https://site?s=1", "/sse", "/?s=1"),
            ("messages?s=1", "/mcp/sse", "/mcp/messages?s=1"),
            ("./messages?s=1", "/mcp/sse", "/mcp/messages?s=1"),
            ("/m?s=1&sst=old", "/sse", "/m?s=1"),
        ];
        for (url, stream, want) in cases {
            assert_eq!(endpoint_target(url, stream).as_deref(), Some(want), "{url}");
        }
        for bad in ["", "?s=1", "/a b"] {
            assert_eq!(endpoint_target(bad, "/sse"), None, "{bad:?}");
        }
        assert_eq!(with_token("/m", "T"), "/m?sst=T");
        assert_eq!(with_token("/m?a=1#f", "T"), "/m?a=1&sst=T#f");
    }

    #[test]
    fn a_stream_token_pins_only_its_own_live_stream() {
        use Liveness::*;
        let t = token("a", 1, "/m?s=1");
        let pinned = Ok(Affinity::Stream("a".into()));
        let up = Some(SiteState::Up);
        let drained = Some(SiteState::Drained);
        assert_eq!(stream_affinity(&t, "/m?s=1", Live, up), pinned);
        // A drained site keeps its open streams...
        assert_eq!(stream_affinity(&t, "/m?s=1", Live, drained), pinned);
        // ... but gets no new ones.
        assert_eq!(
            stream_affinity(&t, "/m?s=1", Elsewhere, drained),
            Err(Unpinned::NoNewSessions)
        );
        assert_eq!(stream_affinity(&t, "/m?s=1", Elsewhere, up), pinned);
        assert_eq!(
            stream_affinity(&t, "/m?s=1", Ended, up),
            Err(Unpinned::Ended)
        );
        for other in ["/mcp", "/m?s=2", "/m", "/m?s=1&x=1"] {
            assert_eq!(stream_affinity(&t, other, Live, up), Err(Unpinned::Target));
        }
        assert_eq!(
            stream_affinity(&t, "/m?s=1", Elsewhere, None),
            Err(Unpinned::NoNewSessions)
        );
    }

    proptest::proptest! {
        /// Whatever a client puts in the query, and whatever URL a site names: no panic, and
        /// a target that is found round-trips through the request side.
        #[test]
        fn hostile_queries_and_urls_never_panic(
            query in ".{0,200}",
            url in "[ -~]{0,120}",
            stream in "/[a-z/]{0,20}",
        ) {
            let codec = codec();
            let _ = of_request(&codec, None, Some(&query));
            if let Some(target) = endpoint_target(&url, &stream) {
                let (path, query) = match target.split_once('?') {
                    Some((p, q)) => (p, Some(q)),
                    None => (target.as_str(), None),
                };
                proptest::prop_assert_eq!(message_target(path, query), target.clone());
            }
        }
    }

    /// Inputs the session fuzzer stopped on (`fuzz/regressions/session_decode/`): refused
    /// without a panic, and a rewritten endpoint event carries a stream token.
    #[test]
    fn fuzz_regressions() {
        let codec = SessionCodec::new(b"fuzzing key, 32 bytes long......");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/regressions/session_decode");
        for entry in std::fs::read_dir(dir).expect("the regression folder") {
            let data = std::fs::read(entry.expect("entry").path()).expect("read");
            assert!(of_request(&codec, Some(&data), None).is_err());
            let text = String::from_utf8_lossy(&data);
            let _ = of_request(&codec, None, Some(&text));
            let mut r = super::super::sse_endpoint::EndpointRewriter::default();
            let out = r.feed(&data, true, &mut |url| {
                let target = endpoint_target(url, "/sse")?;
                Some(with_token(url, &token("site", 1, &target).encode(&codec)?))
            });
            if r.ended() == Some(super::super::sse_endpoint::Ended::Rewritten) {
                assert!(String::from_utf8_lossy(&out).contains("sst=ss1."));
            } else {
                assert_eq!(out, data);
            }
        }
    }
}
