//! The admin listener's defences against the operator's own browser: a page the operator
//! visits must not drive the API. Cross-site writes (a foreign `Origin`, or a body a form can
//! send) are refused, a `Host` that is not a name of this listener (DNS rebinding: a foreign
//! name resolved to the listener's address) is refused on every request, and no answer may
//! be framed by another page (clickjacking the status page's buttons).

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::{error, AdminState};

/// Content types a browser sends cross-site without asking first (a form, `fetch` in
/// `no-cors` mode): a write carrying one is refused, so that a page an operator merely
/// visits cannot drive the API.
const SIMPLE_CONTENT_TYPES: [&str; 3] = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
];

/// Refuses cross-site writes with 403 before anything changes: a write whose `Origin` (which
/// browsers send on every cross-site and same-site POST) is not this listener's own, or whose
/// content type is one a form can send. `ctl`, `curl` and scripts send no `Origin`; the
/// status page sends its own and JSON.
pub(super) async fn same_site_writes(req: Request, next: Next) -> Response {
    let write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !write {
        return next.run(req).await;
    }
    let headers = req.headers();
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN) {
        let own = text(header::HOST).map(|host| format!("http://{host}"));
        if origin.to_str().ok() != own.as_deref() {
            return error(
                StatusCode::FORBIDDEN,
                "cross-site write refused: its Origin is not this admin listener",
            );
        }
    }
    let content_type = text(header::CONTENT_TYPE).map(|v| {
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    if content_type.is_some_and(|t| SIMPLE_CONTENT_TYPES.contains(&t.as_str())) {
        return error(
            StatusCode::FORBIDDEN,
            "write refused: send JSON (Content-Type: application/json), which a form cannot",
        );
    }
    next.run(req).await
}

/// Every admin answer forbids being framed by another page (clickjacking of the status
/// page's buttons).
pub(super) async fn no_framing(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    // Appended: a route's own policy, if it ever sets one, still applies as well.
    headers.append(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("frame-ancestors 'none'"),
    );
    response
}

/// The host name in a `Host` value, without its port; `None` when the value is not one.
/// IPv6 addresses come bracketed (`[::1]:9900`).
fn host_name(value: &str) -> Option<&str> {
    if let Some(rest) = value.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        return (after.is_empty() || after.starts_with(':')).then_some(addr);
    }
    Some(value.rsplit_once(':').map_or(value, |(name, _)| name))
}

/// Whether a request naming `host` may be answered: an IP address (a page's origin is then
/// the address itself, so no foreign name stands behind it), `localhost` (which browsers
/// never resolve through DNS), or a name of `allowed` (`admin.allowed_hosts`).
pub(super) fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let Some(name) = host_name(host) else {
        return false;
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<IpAddr>().is_ok() || name == "localhost" || allowed.contains(&name)
}

/// Refuses with 403, before anything is read or changed, a request whose `Host` is a name
/// this listener does not answer to: with DNS rebinding, a page of `evil.example` whose name
/// now resolves to the admin address would otherwise read and write the API as the
/// operator's browser. A request without `Host` (HTTP/1.0 scripts) is not a browser's.
pub(super) async fn known_host(
    State(state): State<AdminState>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(host) = req.headers().get(header::HOST) {
        let config = state.health.snapshot().config.clone();
        let allowed = host
            .to_str()
            .is_ok_and(|h| host_allowed(h, &config.admin.allowed_hosts));
        if !allowed {
            return error(
                StatusCode::FORBIDDEN,
                "the Host of this request is not a name of this admin listener (DNS rebinding?): use its address, localhost, or a name listed in admin.allowed_hosts",
            );
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_addresses_localhost_or_allowed_names() {
        let allowed = ["admin.example.com".to_string()];
        for ok in [
            "127.0.0.1:9900",
            "127.0.0.1",
            "[::1]:9900",
            "[::1]",
            "10.1.2.3:80",
            "localhost:9900",
            "LOCALHOST",
            "admin.example.com:9900",
            "Admin.Example.COM.",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for refused in [
            "evil.example:9900",
            "evil.example",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "admin.example.com.evil.example",
            "[::1",
            "[::1]x",
            "",
        ] {
            assert!(!host_allowed(refused, &allowed), "{refused}");
        }
    }
}
