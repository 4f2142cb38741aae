//! MCP session affinity without shared memory: the session id a client sees carries the
//! site that created the session and the site's own id, signed with HMAC-SHA256, so any
//! sitesteer instance with the same key (and the same instance after a restart) routes the
//! session back to its site, and nobody can forge a token that reaches another site.
//!
//! Token: `ss1.<base64url(site)>.<base64url(upstream id)>.<base64url(mac[..16])>`.
//!
//! The key file (`proxy.session_key_file`) holds one key per line: the first signs, every
//! one verifies, so a fleet rotates its key without dropping sessions (`docs/operations.md`).
//! A missing file is created with one key of 32 bytes from the operating system's CSPRNG,
//! written whole to a temporary file and linked into place, so that two instances starting
//! at once never read a half-written key. Every read checks every key's length, and a
//! reload reads the file again ([`KeyRing::read`], [`SessionCodec::install`]).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const PREFIX: &str = "ss1";
const MAC_LEN: usize = 16;
/// Longest token accepted (the MCP session header is small; refuse anything larger).
const MAX_TOKEN: usize = 1024;
/// Shortest key accepted, in bytes (a created key is 43: 32 random bytes in base64url).
pub(crate) const MIN_KEY: usize = 16;
/// Most keys one file may hold (one signs; the rest are being rotated out).
pub(crate) const MAX_KEYS: usize = 16;
/// Random bytes in a created key.
const NEW_KEY_BYTES: usize = 32;

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

/// The keys of one key file, checked: the first signs, all verify.
pub(crate) struct KeyRing {
    keys: Vec<HmacSha256>,
}

impl KeyRing {
    fn of(keys: &[&[u8]]) -> Self {
        let keys = keys
            .iter()
            .map(|key| {
                <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length")
            })
            .collect();
        Self { keys }
    }

    /// The keys of `path`, checked: at least one, at most [`MAX_KEYS`], each of at least
    /// [`MIN_KEY`] bytes.
    pub(crate) fn read(path: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(path)?;
        let keys = parse_keys(&bytes).map_err(|why| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} {why}", path.display()),
            )
        })?;
        Ok(Self::of(&keys))
    }

    /// How many keys the ring holds.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

/// Signs and verifies session tokens with the keys of one key file. Clones share the keys,
/// so a reload ([`SessionCodec::install`]) reaches every user at once.
#[derive(Clone)]
pub struct SessionCodec {
    ring: Arc<ArcSwap<KeyRing>>,
}

/// The keys of a key file's text: one per line, blank lines and `#` comments skipped. A file
/// that is not UTF-8 is one binary key (as sitesteer before key rings read every file).
fn parse_keys(bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let keys: Vec<&[u8]> = match std::str::from_utf8(bytes) {
        Ok(text) => text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(str::as_bytes)
            .collect(),
        Err(_) => vec![bytes],
    };
    if keys.is_empty() {
        return Err("holds no key (one key per line; the first signs)".to_string());
    }
    if keys.len() > MAX_KEYS {
        return Err(format!("holds {} keys; at most {MAX_KEYS}", keys.len()));
    }
    if let Some((n, key)) = keys.iter().enumerate().find(|(_, k)| k.len() < MIN_KEY) {
        return Err(format!(
            "key {} holds {} bytes; at least {MIN_KEY} (32 random bytes recommended)",
            n + 1,
            key.len()
        ));
    }
    Ok(keys)
}

/// A new key: 32 bytes from the operating system's CSPRNG, base64url, one line.
fn new_key() -> std::io::Result<String> {
    let mut key = [0u8; NEW_KEY_BYTES];
    getrandom::fill(&mut key)
        .map_err(|e| std::io::Error::other(format!("no OS randomness: {e}")))?;
    Ok(format!("{}\n", B64.encode(key)))
}

/// Creates `path` holding `content` whole, or leaves it to whoever created it first: the
/// content goes to a temporary file in the same folder (mode 0600, synced), which is then
/// hard-linked to `path`, an atomic step that fails when `path` exists.
fn create_whole(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("key");
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| std::io::Error::other(e.to_string()))?;
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        u64::from_le_bytes(nonce)
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(content)?;
        f.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Some(dir) = dir {
                // The new name survives a crash too.
                std::fs::File::open(dir).and_then(|d| d.sync_all())?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl SessionCodec {
    /// A codec with one key (any length; 32 random bytes recommended).
    pub fn new(key: &[u8]) -> Self {
        Self {
            ring: Arc::new(ArcSwap::from_pointee(KeyRing::of(&[key]))),
        }
    }

    /// Reads the key file, creating it with one new key (mode 0600) when missing.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        match std::fs::metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_whole(path, new_key()?.as_bytes())?;
            }
            Err(e) => return Err(e),
        }
        let ring = KeyRing::read(path)?;
        Ok(Self {
            ring: Arc::new(ArcSwap::from_pointee(ring)),
        })
    }

    /// Signs and verifies with `ring` from now on, in every clone of this codec.
    pub(crate) fn install(&self, ring: KeyRing) {
        self.ring.store(Arc::new(ring));
    }

    /// The tag of `site` and `upstream` under `key`.
    fn tag(key: &HmacSha256, site: &str, upstream: &str) -> HmacSha256 {
        let mut mac = key.clone();
        mac.update(site.as_bytes());
        mac.update(&[0]);
        mac.update(upstream.as_bytes());
        mac
    }

    fn sign(&self, site: &str, upstream: &str) -> [u8; MAC_LEN] {
        let ring = self.ring.load();
        // A ring always holds a key: `parse_keys` refuses an empty file.
        let full = Self::tag(&ring.keys[0], site, upstream)
            .finalize()
            .into_bytes();
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
        if mac.len() != MAC_LEN {
            return Err(SessionError::BadSignature);
        }
        // Every key is tried, whichever matches, so the time taken says nothing of which.
        let ring = self.ring.load();
        let matched = ring.keys.iter().fold(false, |matched, key| {
            let ok = Self::tag(key, &site, &upstream)
                .verify_truncated_left(&mac)
                .is_ok();
            matched | ok
        });
        if !matched {
            return Err(SessionError::BadSignature);
        }
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

    /// A fresh folder for one test's key file.
    fn key_dir(test: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sitesteer-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_created_key_is_32_random_bytes_and_never_repeats() {
        let dir = key_dir("key-random");
        let mut seen = std::collections::HashSet::new();
        for n in 0..200 {
            let path = dir.join(format!("k{n}"));
            SessionCodec::load_or_create(&path).expect("create");
            let text = std::fs::read_to_string(&path).expect("read");
            let key = B64.decode(text.trim()).expect("base64url");
            assert_eq!(key.len(), NEW_KEY_BYTES);
            assert!(seen.insert(key), "a key repeated");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("k0"))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn instances_starting_at_once_share_one_whole_key() {
        // Before keys were linked into place whole, a second instance could read the file
        // between its creation and its write: an empty key, refused or, worse, used.
        let dir = key_dir("key-race");
        for round in 0..40 {
            let path = dir.join(format!("k{round}"));
            let codecs: Vec<SessionCodec> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| s.spawn(|| SessionCodec::load_or_create(&path)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("no panic").expect("every instance loads"))
                    .collect()
            });
            let token = codecs[0].encode("s", "u");
            for codec in &codecs {
                assert!(codec.decode(&token).is_ok(), "round {round}: keys differ");
            }
            let leftovers = std::fs::read_dir(&dir)
                .expect("list")
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                })
                .count();
            assert_eq!(leftovers, 0, "no temporary file left behind");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_key_ring_signs_with_its_first_key_and_verifies_with_all() {
        let dir = key_dir("key-ring");
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("k");
        let old = "old-key-0123456789abcdef0123456789";
        let new = "new-key-0123456789abcdef0123456789";
        std::fs::write(&path, format!("{old}\n")).expect("write");
        let codec = SessionCodec::load_or_create(&path).expect("load");
        let before = codec.encode("s", "u1");
        // Step 1 of a rotation: the new key is added second, every instance verifies it.
        std::fs::write(&path, format!("{old}\n{new}\n")).expect("write");
        codec.install(KeyRing::read(&path).expect("reload"));
        assert_eq!(codec.encode("s", "u1"), before, "the first key still signs");
        // Step 2: the new key signs; tokens of the old one still verify.
        std::fs::write(&path, format!("# rotated\n{new}\n\n{old}\n")).expect("write");
        codec.install(KeyRing::read(&path).expect("reload"));
        let after = codec.encode("s", "u1");
        assert_ne!(after, before);
        assert!(codec.decode(&before).is_ok() && codec.decode(&after).is_ok());
        // Step 3: the old key goes, and with it the tokens it signed.
        std::fs::write(&path, format!("{new}\n")).expect("write");
        codec.install(KeyRing::read(&path).expect("reload"));
        assert_eq!(codec.decode(&before), Err(SessionError::BadSignature));
        assert!(codec.decode(&after).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_key_file_is_refused_on_every_read_and_changes_nothing() {
        let dir = key_dir("key-bad");
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("k");
        let good = "good-key-0123456789abcdef012345678";
        std::fs::write(&path, good).expect("write");
        let codec = SessionCodec::load_or_create(&path).expect("load");
        let token = codec.encode("s", "u");
        let many = (0..=MAX_KEYS)
            .map(|n| format!("key-{n:030}\n"))
            .collect::<String>();
        for bad in [
            "",
            "\n# only a comment\n",
            "short\n",
            &format!("{good}\nshort"),
            &many,
        ] {
            std::fs::write(&path, bad).expect("write");
            let err = KeyRing::read(&path).err().expect(bad);
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{bad:?}");
            assert!(SessionCodec::load_or_create(&path).is_err(), "{bad:?}");
            assert!(
                codec.decode(&token).is_ok(),
                "{bad:?}: the running keys were kept"
            );
        }
        // A binary key (not UTF-8) is one key, as before key rings.
        std::fs::write(&path, [0xffu8; 20]).expect("write");
        assert_eq!(KeyRing::read(&path).expect("binary key").len(), 1);
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
