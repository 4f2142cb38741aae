//! Idle long-lived connections (`limits.stream_idle_timeout`, modelled on HAProxy's
//! `timeout tunnel`): every raw TCP connection, upgraded WebSocket and SSE stream keeps an
//! [`Activity`], the time of its last byte in either direction. The data planes touch it as
//! bytes pass ([`Watched`] wraps a socket for the TCP proxy; the HTTP proxy touches it from
//! its body filters), and the connection registry's sweep (`crate::conns`) closes both
//! sides of a connection idle for longer than the timeout.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// When a connection last moved a byte.
#[derive(Debug)]
pub(crate) struct Activity {
    base: Instant,
    /// Milliseconds after `base` of the last byte.
    last_ms: AtomicU64,
}

impl Activity {
    /// An activity that starts now.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A byte passed now.
    pub(crate) fn touch(&self) {
        self.last_ms.fetch_max(self.now_ms(), Ordering::Relaxed);
    }

    /// How long since the last byte.
    pub(crate) fn idle_for(&self) -> Duration {
        let last = self.last_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }
}

/// A stream that touches its [`Activity`] on every read or write that moves bytes.
pub(crate) struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.activity.touch();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        if n > 0 {
            self.activity.touch();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How often the sweep looks for idle connections under `timeout`: a twentieth of it,
/// between 20 ms and 1 s (a connection closes at most that late).
pub(crate) fn check_every(timeout: Duration) -> Duration {
    (timeout / 20).clamp(Duration::from_millis(20), Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn bytes_either_way_reset_the_idle_time() {
        let activity = Activity::new();
        let (a, mut b) = tokio::io::duplex(64);
        let mut watched = Watched::new(a, activity.clone());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(activity.idle_for(), Duration::from_secs(5));
        watched.write_all(b"x").await.unwrap();
        assert_eq!(activity.idle_for(), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(3)).await;
        b.write_all(b"y").await.unwrap();
        assert_eq!(activity.idle_for(), Duration::from_secs(3), "not read yet");
        let mut one = [0u8; 1];
        watched.read_exact(&mut one).await.unwrap();
        assert_eq!(activity.idle_for(), Duration::ZERO);
    }

    #[test]
    fn the_check_interval_follows_the_timeout_within_bounds() {
        assert_eq!(
            check_every(Duration::from_secs(3600)),
            Duration::from_secs(1)
        );
        assert_eq!(
            check_every(Duration::from_secs(1)),
            Duration::from_millis(50)
        );
        assert_eq!(
            check_every(Duration::from_millis(100)),
            Duration::from_millis(20)
        );
    }
}
