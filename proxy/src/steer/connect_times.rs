//! How long a connect to a site may take: what the site's connects normally take, so that a
//! path that drops SYNs costs a few milliseconds before the next site is tried, not
//! `proxy.connect_timeout`.
//!
//! Each site keeps a decaying peak of its measured connect times (a new sample raises it at
//! once, each later one lowers it by a tenth), and a new connection gets that peak times
//! `proxy.hedge_factor`, at least `proxy.hedge_floor`, at most `proxy.connect_timeout`. A
//! site with no measured connect yet gets `connect_timeout`. A connect that fails is always
//! safe to try elsewhere, so a short deadline costs nothing but the one attempt.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sitesteer_config::ProxySettings;

use super::hedge::deadline_from;

/// Each new sample below the peak lowers it by this share.
const DECAY: f64 = 0.1;

/// The measured connect times of every site, by name.
#[derive(Debug, Default)]
pub(crate) struct ConnectTimes {
    peaks_us: Mutex<HashMap<String, f64>>,
}

impl ConnectTimes {
    /// A connect to `site` took `took`.
    pub(crate) fn record(&self, site: &str, took: Duration) {
        let sample = took.as_secs_f64() * 1e6;
        let mut peaks = self.peaks_us.lock().unwrap_or_else(|p| p.into_inner());
        match peaks.get_mut(site) {
            Some(peak) if sample >= *peak => *peak = sample,
            Some(peak) => *peak -= (*peak - sample) * DECAY,
            None => {
                peaks.insert(site.to_string(), sample);
            }
        }
    }

    /// How long a new connect to `site` may take.
    pub(crate) fn timeout(&self, site: &str, proxy: &ProxySettings) -> Duration {
        let peaks = self.peaks_us.lock().unwrap_or_else(|p| p.into_inner());
        let Some(peak) = peaks.get(site) else {
            return proxy.connect_timeout;
        };
        deadline_from(peak / 1e6, proxy, proxy.connect_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy() -> ProxySettings {
        let text = "[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n";
        sitesteer_config::parse(text, "test", std::path::Path::new("."))
            .expect("config")
            .proxy
    }

    #[test]
    fn the_deadline_follows_the_site_s_connects_within_floor_and_ceiling() {
        let proxy = proxy();
        let times = ConnectTimes::default();
        assert_eq!(
            times.timeout("a", &proxy),
            proxy.connect_timeout,
            "nothing measured"
        );
        times.record("a", Duration::from_micros(200));
        assert_eq!(
            times.timeout("a", &proxy),
            proxy.hedge_floor,
            "fast: the floor"
        );
        times.record("a", Duration::from_millis(100));
        assert_eq!(
            times.timeout("a", &proxy),
            Duration::from_millis(300),
            "peak x 3"
        );
        times.record("a", Duration::from_millis(600));
        assert_eq!(
            times.timeout("a", &proxy),
            proxy.connect_timeout,
            "the ceiling"
        );
        // Faster connects bring it down a tenth of the way each.
        times.record("a", Duration::from_millis(100));
        assert_eq!(times.timeout("a", &proxy), proxy.connect_timeout);
        for _ in 0..60 {
            times.record("a", Duration::from_micros(200));
        }
        assert_eq!(times.timeout("a", &proxy), proxy.hedge_floor);
        assert_eq!(
            times.timeout("b", &proxy),
            proxy.connect_timeout,
            "per site"
        );
    }
}
