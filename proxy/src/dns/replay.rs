//! One UDP packet in, at most one response out, for the UDP threads of [`super::udp`]: the
//! query is parsed by hickory, answered by [`respond`](super::respond) and encoded by hickory
//! ([`respond_packet`]), exactly as over TCP. On top of that, a per-thread **replay cache**
//! keeps the encoded response of each distinct query, so that a repeated query is answered
//! without parsing or encoding.
//!
//! What may be replayed: a response depends on the query's bytes (all but the id), the client's
//! region (from the source address, or from the ECS option, which is in the bytes), the
//! zone and snapshot it was answered from, and the weighted shuffle of the addresses, which
//! is drawn per query; and whether the ECS option counts depends on the source being in
//! `dns.ecs_trusted`. So the cache is keyed by (that trust, region of the source address,
//! query bytes after the id), holds only answers of the current [`Current`] (it is emptied when the
//! snapshot or the zone changes), and a replay draws the shuffle again: it calls
//! [`answer_into`] (the same steering as [`respond`](super::respond::respond)) with a fresh seed and writes the addresses,
//! in that order, over the address records' data. Every address record of one family has the
//! same owner, type, class, TTL and length, so the order is the only thing a shuffle
//! changes; a replay whose steering answer differs in size or mode from the cached one falls
//! back to the full path. A template is only cached after checking that its address records
//! hold exactly the addresses [`respond`](super::respond::respond) chose, in order; a unit test checks that a replay
//! equals the full path's bytes for the same seed.
//!
//! Bounds: queries longer than [`MAX_KEYED`] bytes are not cached, and the cache is emptied
//! when it holds [`CACHE_ENTRIES`] answers (a flood of distinct names costs a full answer each,
//! never memory). Queries whose resolver randomises the case of names (0x20) are distinct
//! bytes, so they mostly take the full path.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_server::server::ResponseInfo;
use prometheus::IntCounter;

use crate::metrics::Metrics;
use crate::steer::Mode;

use super::answer::{answer_into, Answer, Family};
use super::respond::{family_index, respond_packet, Packet, Reply, Transport};
use super::Current;

/// Length of a DNS header.
pub const HEADER_LEN: usize = 12;
/// Longest query whose answer is cached, bytes.
pub const MAX_KEYED: usize = 512;
/// Cached answers per UDP thread; the cache is emptied when it is full.
pub const CACHE_ENTRIES: usize = 4096;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

/// Where one family's addresses sit in a cached response.
#[derive(Debug)]
struct Slots {
    /// The steering mode of the cached answer (it sets the TTL).
    mode: Option<Mode>,
    /// How many addresses the answer has (more than `at` holds when the response was
    /// truncated).
    count: usize,
    /// Offsets of the address records' data, in answer order.
    at: Vec<usize>,
}

/// A cached response.
#[derive(Debug)]
struct Template {
    bytes: Box<[u8]>,
    region: Option<Arc<str>>,
    families: [Option<Slots>; 2],
    counter: IntCounter,
    truncated: bool,
}

/// Answers UDP packets; one per UDP thread (it owns that thread's cache and buffers).
pub struct Responder {
    metrics: Arc<Metrics>,
    cache: HashMap<Box<[u8]>, Template>,
    /// The `Current` the cache was filled from.
    cached_for: Option<Arc<Current>>,
    key: Vec<u8>,
    /// The last source address, its region and whether its ECS is trusted, for
    /// `cached_for` (clients repeat).
    last_src: Option<(IpAddr, Option<Arc<str>>, bool)>,
    scratch: Answer,
    replayed: u64,
}

/// Whether a response may go to `src` (hickory's rule: no port 0, no unspecified or
/// broadcast address).
pub fn answerable(src: SocketAddr) -> bool {
    src.port() != 0
        && match src.ip() {
            IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_broadcast(),
            IpAddr::V6(v6) => !v6.is_unspecified(),
        }
}

/// Whether `packet` from `src` is a query that gets an answer at all: a header, the QR bit
/// clear (responses are never answered: no reflection loops) and an [`answerable`] source.
pub fn is_query(packet: &[u8], src: SocketAddr) -> bool {
    packet.len() >= HEADER_LEN && packet[2] & 0x80 == 0 && answerable(src)
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// The offset just past the name at `at` (labels, ending with the root or a pointer).
pub(super) fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    // A name has at most 127 labels.
    for _ in 0..128 {
        let len = *msg.get(at)?;
        match len & 0xC0 {
            0 if len == 0 => return Some(at + 1),
            0 => at += 1 + usize::from(len),
            0xC0 => return (at + 2 <= msg.len()).then_some(at + 2),
            _ => return None,
        }
    }
    None
}

/// The offsets of the A and AAAA records' data in the answer section of `msg`, in order.
fn address_slots(msg: &[u8]) -> Option<[Vec<usize>; 2]> {
    let questions = read_u16(msg, 4)?;
    let answers = read_u16(msg, 6)?;
    let mut at = HEADER_LEN;
    for _ in 0..questions {
        at = skip_name(msg, at)? + 4;
    }
    let mut out = [Vec::new(), Vec::new()];
    for _ in 0..answers {
        at = skip_name(msg, at)?;
        let rtype = read_u16(msg, at)?;
        let len = usize::from(read_u16(msg, at + 8)?);
        let data = at + 10;
        let end = data + len;
        if end > msg.len() {
            return None;
        }
        match (rtype, len) {
            (TYPE_A, 4) => out[family_index(Family::V4)].push(data),
            (TYPE_AAAA, 16) => out[family_index(Family::V6)].push(data),
            (TYPE_A | TYPE_AAAA, _) => return None,
            _ => {}
        }
        at = end;
    }
    Some(out)
}

fn write_addr(out: &mut [u8], at: usize, ip: IpAddr) -> Option<()> {
    match ip {
        IpAddr::V4(v4) => out.get_mut(at..at + 4)?.copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.get_mut(at..at + 16)?.copy_from_slice(&v6.octets()),
    }
    Some(())
}

fn addr_at(msg: &[u8], at: usize, like: IpAddr) -> Option<IpAddr> {
    Some(match like {
        IpAddr::V4(_) => IpAddr::from(<[u8; 4]>::try_from(msg.get(at..at + 4)?).ok()?),
        IpAddr::V6(_) => IpAddr::from(<[u8; 16]>::try_from(msg.get(at..at + 16)?).ok()?),
    })
}

impl Template {
    /// The template of `reply`, encoded as `bytes` (sent as `info`), when it can be replayed.
    fn of(reply: &Reply, info: &ResponseInfo, bytes: &[u8]) -> Option<Self> {
        if bytes.len() < HEADER_LEN || info.response_code != reply.metadata().response_code {
            return None;
        }
        let found = address_slots(bytes)?;
        let mut families = [None, None];
        for (family, at) in [Family::V4, Family::V6].into_iter().zip(found) {
            let Some(answer) = reply.answer(family) else {
                if !at.is_empty() {
                    return None;
                }
                continue;
            };
            let answered = if answer.mode.is_some() {
                answer.addrs.as_slice()
            } else {
                &[]
            };
            let complete = at.len() == answered.len();
            if at.len() > answered.len() || (!complete && !info.truncation) {
                return None;
            }
            for (&slot, &ip) in at.iter().zip(answered) {
                if addr_at(bytes, slot, ip)? != ip {
                    return None;
                }
            }
            families[family_index(family)] = Some(Slots {
                mode: answer.mode,
                count: answered.len(),
                at,
            });
        }
        Some(Self {
            bytes: bytes.into(),
            region: reply.region().cloned(),
            families,
            counter: reply.counter().clone(),
            truncated: info.truncation,
        })
    }

    /// Writes this response for query `id` into `out` with the addresses steering answers
    /// for `seed`; `false` (and `out` unspecified) when the answer no longer fits the template.
    fn replay(
        &self,
        current: &Current,
        id: [u8; 2],
        seed: u64,
        scratch: &mut Answer,
        out: &mut Vec<u8>,
    ) -> bool {
        out.clear();
        out.extend_from_slice(&self.bytes);
        let Some(head) = out.get_mut(..2) else {
            return false;
        };
        head.copy_from_slice(&id);
        for family in [Family::V4, Family::V6] {
            let Some(slots) = &self.families[family_index(family)] else {
                continue;
            };
            answer_into(
                current.view.family(family),
                self.region.as_deref(),
                seed,
                scratch,
            );
            let count = if scratch.mode.is_some() {
                scratch.addrs.len()
            } else {
                0
            };
            if scratch.mode != slots.mode || count != slots.count {
                return false;
            }
            for (&at, &ip) in slots.at.iter().zip(&scratch.addrs) {
                if write_addr(out, at, ip).is_none() {
                    return false;
                }
            }
        }
        true
    }
}

impl Responder {
    /// A responder counting into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            cache: HashMap::new(),
            cached_for: None,
            key: Vec::with_capacity(MAX_KEYED + 64),
            last_src: None,
            scratch: Answer::default(),
            replayed: 0,
        }
    }

    /// Answers the UDP `packet` from `src` out of `current` into `out`; `false` when nothing
    /// is to be sent (a runt, a response, an unanswerable source). Never panics on input.
    pub fn answer(
        &mut self,
        current: &Arc<Current>,
        packet: &[u8],
        src: SocketAddr,
        out: &mut Vec<u8>,
    ) -> bool {
        self.answer_seeded(current, packet, src, out, fastrand::u64(..))
    }

    /// [`Responder::answer`] with the shuffle's seed given.
    pub fn answer_seeded(
        &mut self,
        current: &Arc<Current>,
        packet: &[u8],
        src: SocketAddr,
        out: &mut Vec<u8>,
        seed: u64,
    ) -> bool {
        if !is_query(packet, src) {
            return false;
        }
        let id = [packet[0], packet[1]];
        if !self
            .cached_for
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, current))
        {
            self.cache.clear();
            self.last_src = None;
            self.cached_for = Some(current.clone());
        }
        let keyed = packet.len() <= MAX_KEYED;
        if keyed {
            self.key_of(current, packet, src);
            if let Some(t) = self.cache.get(self.key.as_slice()) {
                if t.replay(current, id, seed, &mut self.scratch, out) {
                    t.counter.inc();
                    if t.truncated {
                        self.metrics.dns_truncated.inc();
                    }
                    self.replayed += 1;
                    tracing::trace!(%src, "dns query answered from the replay cache");
                    return true;
                }
            }
        }

        let (reply, info) = match respond_packet(
            current,
            &self.metrics,
            packet,
            src,
            Transport::Udp,
            seed,
            out,
        ) {
            Packet::Answered(reply, info) => (reply, info),
            Packet::FormErr => return true,
            Packet::Nothing => return false,
        };
        if keyed {
            if let Some(t) = Template::of(&reply, &info, out) {
                if self.cache.len() >= CACHE_ENTRIES {
                    self.cache.clear();
                }
                self.cache.insert(self.key.as_slice().into(), t);
            }
        }
        true
    }

    /// The cache key of `packet` from `src`: whether the source's ECS is trusted, the region
    /// of the source address, then the query after its id.
    fn key_of(&mut self, current: &Current, packet: &[u8], src: SocketAddr) {
        let ip = src.ip();
        if self.last_src.as_ref().is_none_or(|(last, ..)| *last != ip) {
            let zone = current.zone.as_deref();
            let region =
                zone.and_then(|z| z.geo.locate(ip, if ip.is_ipv4() { 32 } else { 128 }).region);
            let trusted = zone.is_some_and(|z| z.trusts_ecs(ip));
            self.last_src = Some((ip, region, trusted));
        }
        self.key.clear();
        self.key
            .push(u8::from(self.last_src.as_ref().is_some_and(|(.., t)| *t)));
        match self.last_src.as_ref().and_then(|(_, r, _)| r.as_deref()) {
            None => self.key.push(0),
            Some(r) => {
                self.key.push(1);
                self.key
                    .extend_from_slice(&u32::try_from(r.len()).unwrap_or(u32::MAX).to_be_bytes());
                self.key.extend_from_slice(r.as_bytes());
            }
        }
        self.key
            .extend_from_slice(packet.get(2..).unwrap_or_default());
    }

    /// Answers cached right now.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Queries answered from the cache so far.
    pub fn replayed(&self) -> u64 {
        self.replayed
    }
}
