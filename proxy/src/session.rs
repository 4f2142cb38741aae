//! MCP session affinity without shared memory: the session id a client sees carries the
//! site that created the session and the site's own id, signed with HMAC-SHA256, so any
//! sitesteer instance with the same key (and the same instance after a restart) routes the
//! session back to its site, and nobody can forge a token that reaches another site.
//!
//! Token: `ss1.<base64url(site)>.<base64url(upstream id)>.<base64url(mac[..16])>`.

use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const PREFIX: &str = "ss1";
const MAC_LEN: usize = 16;
/// Longest token accepted (the MCP session header is small; refuse anything larger).
const MAX_TOKEN: usize = 1024;

/// A session id decoded and verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bound {
    /// The site that created the session.
    pub site: String,
    /// The site's own session id.
    pub upstream: String,
}

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Not a sitesteer token at all.
    #[error("not a sitesteer session id")]
    Malformed,
    /// The signature does not match: forged or signed with another key.
    #[error("session id signature does not match")]
    BadSignature,
}

/// Signs and verifies session tokens with one key.
#[derive(Clone)]
pub struct SessionCodec {
    mac: HmacSha256,
}

impl SessionCodec {
    /// A codec for `key` (any length; 32 random bytes recommended).
    pub fn new(key: &[u8]) -> Self {
        let mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
        Self { mac }
    }

    /// Reads the key file, creating it with 32 random bytes (mode 0600) when missing.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(key) if key.len() >= 16 => return Ok(Self::new(&key)),
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} holds fewer than 16 bytes", path.display()),
                ))
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            Err(_) => {}
        }
        let key: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
        let key = B64.encode(key).into_bytes();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut f) => {
                f.write_all(&key)?;
                f.sync_all()?;
                Ok(Self::new(&key))
            }
            // Another instance created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok(Self::new(&std::fs::read(path)?))
            }
            Err(e) => Err(e),
        }
    }

    fn sign(&self, site: &str, upstream: &str) -> [u8; MAC_LEN] {
        let mut mac = self.mac.clone();
        mac.update(site.as_bytes());
        mac.update(&[0]);
        mac.update(upstream.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// The token a client sees for `upstream` created by `site`.
    pub fn encode(&self, site: &str, upstream: &str) -> String {
        format!(
            "{PREFIX}.{}.{}.{}",
            B64.encode(site),
            B64.encode(upstream),
            B64.encode(self.sign(site, upstream))
        )
    }

    /// Decodes and verifies a token (in constant time for the signature).
    pub fn decode(&self, token: &str) -> Result<Bound, SessionError> {
        if token.len() > MAX_TOKEN {
            return Err(SessionError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(PREFIX), Some(site), Some(upstream), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(SessionError::Malformed);
        };
        let text = |b64: &str| {
            B64.decode(b64)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or(SessionError::Malformed)
        };
        let site = text(site)?;
        let upstream = text(upstream)?;
        let mac = B64.decode(mac).map_err(|_| SessionError::Malformed)?;
        let mut check = self.mac.clone();
        check.update(site.as_bytes());
        check.update(&[0]);
        check.update(upstream.as_bytes());
        check
            .verify_truncated_left(&mac)
            .ok()
            .filter(|_| mac.len() == MAC_LEN)
            .ok_or(SessionError::BadSignature)?;
        Ok(Bound { site, upstream })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_and_refuses_forgeries() {
        let codec = SessionCodec::new(b"0123456789abcdef0123456789abcdef");
        let token = codec.encode("us-east", "abc123");
        assert!(
            token.bytes().all(|b| (0x21..=0x7e).contains(&b)),
            "visible ASCII"
        );
        assert_eq!(
            codec.decode(&token),
            Ok(Bound {
                site: "us-east".into(),
                upstream: "abc123".into()
            })
        );
        // The same upstream id claimed for another site.
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!("ss1.{}.{}.{}", B64.encode("eu"), parts[2], parts[3]);
        assert_eq!(codec.decode(&forged), Err(SessionError::BadSignature));
        let other = SessionCodec::new(b"another key entirely, 32 bytes!!");
        assert_eq!(other.decode(&token), Err(SessionError::BadSignature));
        assert_eq!(
            codec.decode("plain-upstream-id"),
            Err(SessionError::Malformed)
        );
        assert_eq!(codec.decode("ss1.a.b"), Err(SessionError::Malformed));
        assert_eq!(
            codec.decode(&"x".repeat(5000)),
            Err(SessionError::Malformed)
        );
    }

    #[test]
    fn the_key_file_is_created_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("sitesteer-key-{}", std::process::id()));
        let path = dir.join("k");
        let _ = std::fs::remove_dir_all(&dir);
        let a = SessionCodec::load_or_create(&path).expect("create");
        let b = SessionCodec::load_or_create(&path).expect("reuse");
        assert!(b.decode(&a.encode("s", "u")).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    proptest! {
        #[test]
        fn decoding_never_panics(token in ".{0,300}") {
            let codec = SessionCodec::new(b"k");
            let _ = codec.decode(&token);
        }
    }
}
