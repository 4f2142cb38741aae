//! Response rate limiting (RRL) of DNS over UDP: how many answers one client network gets
//! per second (`[limits]` `dns_rrl_*`), so that sitesteer cannot be used to reflect a flood
//! at a spoofed victim, and one network's flood cannot take the answers of everyone else.
//!
//! Clients are counted per network (`dns_rrl_ipv4_prefix`, default /24, and
//! `dns_rrl_ipv6_prefix`, default /56; an IPv4-mapped IPv6 address counts as IPv4), each with
//! a token bucket: `dns_rrl_rate` answers per second, up to `dns_rrl_burst` at once. Past the
//! limit, as BIND's and Knot's RRL do, every `dns_rrl_slip`th query gets a *slip*: a
//! truncated answer (the header with TC set and the question, no records, no larger than the
//! query), which sends a real resolver behind a spoofed address to TCP, where spoofing
//! cannot follow; the others are dropped. Unlike BIND, which counts identical answers per
//! network, every answer to a network counts: the zone has only a few names, so the finer
//! key would add memory and no protection.
//!
//! The table is shared by the UDP threads (a client's queries reach every thread when it
//! changes its source port), in [`SHARDS`] locked shards of at most
//! [`MAX_NETWORKS`]` / SHARDS` networks each. A full shard first forgets the networks whose
//! bucket has refilled (they would start full again anyway), and is emptied when none has: a
//! flood from more networks than the table holds costs a fresh burst per network, never
//! memory. Time is passed in, so the rules are unit-tested without clocks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use sitesteer_config::Rrl;

use super::replay::{skip_name, HEADER_LEN};

/// Locked shards of the table.
pub const SHARDS: usize = 16;
/// Client networks the table tracks at most.
pub const MAX_NETWORKS: usize = 65_536;

/// What to do with one query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Answer it.
    Answer,
    /// Past the limit: answer with a truncated (TC) answer.
    Slip,
    /// Past the limit: send nothing.
    Drop,
}

impl Verdict {
    /// The `action` label of `sitesteer_dns_rate_limited_total`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Answer => "answer",
            Verdict::Slip => "slip",
            Verdict::Drop => "drop",
        }
    }
}

/// A client network: the address masked to the configured prefix.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Network {
    V4(u32),
    V6(u128),
}

fn network(ip: IpAddr, rrl: &Rrl) -> Network {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let keep = u32::from(rrl.ipv4_prefix.min(32));
            let mask = u32::MAX.checked_shl(32 - keep).unwrap_or(0);
            Network::V4(u32::from(v4) & mask)
        }
        IpAddr::V6(v6) => {
            let keep = u32::from(rrl.ipv6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
            Network::V6(u128::from(v6) & mask)
        }
    }
}

/// One network's bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// Queries past the limit so far (every `slip`th one slips).
    limited: u64,
}

impl Bucket {
    /// The tokens at `now`, refilled at `rate` per second up to `burst`.
    fn refilled(&self, now: Instant, rrl: &Rrl) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * f64::from(rrl.rate)).min(f64::from(rrl.burst))
    }
}

/// The rate limiter of one DNS listener, shared by its UDP threads.
#[derive(Debug)]
pub struct RateLimiter {
    shards: [Mutex<HashMap<Network, Bucket>>; SHARDS],
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }
}

fn shard_of(net: &Network) -> usize {
    let folded = match *net {
        Network::V4(v) => u64::from(v >> 8),
        Network::V6(v) => ((v >> 72) as u64) ^ ((v >> 64) as u64 & 0xff),
    };
    (folded as usize) % SHARDS
}

impl RateLimiter {
    /// Counts one answer to `ip` at `now` under `rrl`, and says what to do with the query.
    pub fn check(&self, ip: IpAddr, now: Instant, rrl: &Rrl) -> Verdict {
        if rrl.rate == 0 {
            return Verdict::Answer;
        }
        let net = network(ip, rrl);
        let Ok(mut shard) = self.shards[shard_of(&net)].lock() else {
            return Verdict::Answer;
        };
        let bucket = match shard.get_mut(&net) {
            Some(b) => b,
            None => {
                if shard.len() >= MAX_NETWORKS / SHARDS {
                    let burst = f64::from(rrl.burst);
                    shard.retain(|_, b| b.refilled(now, rrl) < burst);
                    if shard.len() >= MAX_NETWORKS / SHARDS {
                        shard.clear();
                    }
                }
                shard.entry(net).or_insert(Bucket {
                    tokens: f64::from(rrl.burst),
                    at: now,
                    limited: 0,
                })
            }
        };
        bucket.tokens = bucket.refilled(now, rrl);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Verdict::Answer;
        }
        bucket.limited += 1;
        if rrl.slip > 0 && bucket.limited % u64::from(rrl.slip) == 0 {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }

    /// Networks tracked now.
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.len()))
            .sum()
    }
}

/// Writes the slip answer to `query` into `out` (cleared first): the query's header as a
/// response with TC set and no records, and its question when it has exactly one that
/// parses. `false` when the query has no header.
pub fn slip(query: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    let Some(header) = query.get(..HEADER_LEN) else {
        return false;
    };
    let question = match (header[4], header[5]) {
        (0, 1) => {
            skip_name(query, HEADER_LEN).and_then(|end| query.get(HEADER_LEN..end.checked_add(4)?))
        }
        _ => None,
    };
    out.extend_from_slice(&header[..2]);
    // QR, the query's opcode and RD, AA clear, TC set; RA, Z, AD, CD and RCODE clear.
    out.push(0x80 | (header[2] & 0x79) | 0x02);
    out.push(0);
    let qdcount = u8::from(question.is_some());
    out.extend_from_slice(&[0, qdcount, 0, 0, 0, 0, 0, 0]);
    if let Some(q) = question {
        out.extend_from_slice(q);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rrl(rate: u32, burst: u32, slip: u32) -> Rrl {
        Rrl {
            rate,
            burst,
            slip,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn a_network_gets_its_burst_then_its_rate() {
        let limiter = RateLimiter::default();
        let r = rrl(10, 5, 0);
        let t0 = Instant::now();
        let first: Vec<_> = (0..7)
            .map(|_| limiter.check(ip("192.0.2.1"), t0, &r))
            .collect();
        assert_eq!(first.iter().filter(|v| **v == Verdict::Answer).count(), 5);
        assert_eq!(first[5], Verdict::Drop);
        // Another host of the same /24 shares the bucket; another /24 does not.
        assert_eq!(limiter.check(ip("192.0.2.200"), t0, &r), Verdict::Drop);
        assert_eq!(limiter.check(ip("192.0.3.1"), t0, &r), Verdict::Answer);
        // 10 per second: one more after 100 ms, not two.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(limiter.check(ip("192.0.2.1"), t1, &r), Verdict::Answer);
        assert_eq!(limiter.check(ip("192.0.2.1"), t1, &r), Verdict::Drop);
        // A quiet second refills the burst, no more.
        let t2 = t1 + Duration::from_secs(5);
        let later = (0..6)
            .filter(|_| limiter.check(ip("192.0.2.1"), t2, &r) == Verdict::Answer)
            .count();
        assert_eq!(later, 5);
    }

    #[test]
    fn every_slipth_limited_query_slips() {
        let limiter = RateLimiter::default();
        let r = rrl(1, 1, 2);
        let t = Instant::now();
        let verdicts: Vec<_> = (0..7)
            .map(|_| limiter.check(ip("2001:db8::1"), t, &r))
            .collect();
        use Verdict::*;
        assert_eq!(verdicts, [Answer, Drop, Slip, Drop, Slip, Drop, Slip]);
        let all = rrl(1, 1, 1);
        assert_eq!(limiter.check(ip("2001:db9::1"), t, &all), Answer);
        assert_eq!(limiter.check(ip("2001:db9::1"), t, &all), Slip);
    }

    #[test]
    fn ipv6_counts_by_56_and_mapped_ipv4_as_ipv4() {
        let limiter = RateLimiter::default();
        let r = rrl(1, 1, 0);
        let t = Instant::now();
        assert_eq!(
            limiter.check(ip("2001:db8:0:100::1"), t, &r),
            Verdict::Answer
        );
        assert_eq!(
            limiter.check(ip("2001:db8:0:1ff::2"), t, &r),
            Verdict::Drop,
            "same /56"
        );
        assert_eq!(
            limiter.check(ip("2001:db8:0:200::1"), t, &r),
            Verdict::Answer,
            "next /56"
        );
        assert_eq!(limiter.check(ip("198.51.100.1"), t, &r), Verdict::Answer);
        assert_eq!(
            limiter.check(ip("::ffff:198.51.100.9"), t, &r),
            Verdict::Drop
        );
    }

    #[test]
    fn rate_zero_is_off() {
        let limiter = RateLimiter::default();
        let r = rrl(0, 1, 0);
        let t = Instant::now();
        assert!((0..1000).all(|_| limiter.check(ip("192.0.2.1"), t, &r) == Verdict::Answer));
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn the_table_is_bounded() {
        let limiter = RateLimiter::default();
        let r = rrl(1, 2, 0);
        let t = Instant::now();
        for i in 0..(MAX_NETWORKS as u32 * 3) {
            let v4 = std::net::Ipv4Addr::from(i << 8);
            limiter.check(IpAddr::V4(v4), t, &r);
            limiter.check(IpAddr::V4(v4), t, &r);
        }
        assert!(limiter.tracked() <= MAX_NETWORKS);
    }

    #[test]
    fn a_slip_is_the_question_with_tc_and_no_records() {
        let query = b"\xbe\xef\x01\x20\x00\x01\x00\x00\x00\x00\x00\x01\x03api\x03mcp\x04test\x00\x00\x01\x00\x01\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00";
        let mut out = Vec::new();
        assert!(slip(query, &mut out));
        assert_eq!(&out[..2], b"\xbe\xef");
        assert_eq!(out[2], 0x80 | 0x02 | 0x01, "QR, TC, RD");
        assert_eq!(out[3], 0, "NOERROR");
        assert_eq!(&out[4..12], b"\x00\x01\x00\x00\x00\x00\x00\x00");
        assert_eq!(&out[12..], b"\x03api\x03mcp\x04test\x00\x00\x01\x00\x01");
        // Garbage after a header: the header alone, never a panic.
        for len in 0..40 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let ok = slip(&junk, &mut out);
            assert_eq!(ok, len >= HEADER_LEN);
            assert!(out.len() <= junk.len());
        }
    }
}
