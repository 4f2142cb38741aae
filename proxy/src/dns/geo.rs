//! Client networks to regions: longest-prefix match over `[[geo]]`, then an optional
//! MaxMind-format database (`[dns.geoip]`), and the ECS scope prefix that says for which
//! network the resulting answer holds.
//!
//! The scope rule: an answer chosen for a client holds for every address that would be
//! located the same way. That is the matched network (the `[[geo]]` entry or the database
//! network), narrowed until it overlaps no other, more specific `[[geo]]` entry: `scope =
//! max(matched prefix, max over entries E not containing the client of (common prefix of
//! client and E) + 1)`. With no geo data at all the answer is the same for everyone: scope 0.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;
use maxminddb::{PathElement, Reader};
use sitesteer_config::{Geo, GeoIp};

/// Where a client is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Located {
    /// The region, when an entry or the database placed the client.
    pub region: Option<Arc<str>>,
    /// ECS scope prefix of answers for this client.
    pub scope: u8,
}

/// A loaded MaxMind-format database and its code → region tables.
pub struct GeoDb {
    reader: Reader<Vec<u8>>,
    countries: BTreeMap<String, Arc<str>>,
    continents: BTreeMap<String, Arc<str>>,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("database_type", &self.reader.metadata.database_type)
            .field("countries", &self.countries.len())
            .field("continents", &self.continents.len())
            .finish()
    }
}

/// Why a database could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GeoDbError(String);

impl GeoDb {
    /// Loads `[dns.geoip]`.
    pub fn load(config: &GeoIp) -> Result<Self, GeoDbError> {
        Self::open(&config.db, &config.countries, &config.continents)
    }

    /// Loads the database at `path` with the given code → region tables (codes upper case).
    pub fn open(
        path: &Path,
        countries: &BTreeMap<String, String>,
        continents: &BTreeMap<String, String>,
    ) -> Result<Self, GeoDbError> {
        let reader = Reader::open_readfile(path).map_err(|e| GeoDbError(e.to_string()))?;
        let table = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| (k.to_ascii_uppercase(), Arc::from(v.as_str())))
                .collect()
        };
        Ok(Self {
            reader,
            countries: table(countries),
            continents: table(continents),
        })
    }

    /// The region of `ip` and the prefix length of the database network holding it.
    pub fn lookup(&self, ip: IpAddr) -> (Option<Arc<str>>, u8) {
        let Ok(result) = self.reader.lookup(ip) else {
            return (None, 0);
        };
        let prefix = result.network().map(|n| n.prefix()).unwrap_or(0);
        let code = |path: &[PathElement<'_>]| -> Option<String> {
            result.decode_path::<String>(path).ok().flatten()
        };
        let region = code(&[PathElement::Key("country"), PathElement::Key("iso_code")])
            .and_then(|c| self.countries.get(&c.to_ascii_uppercase()).cloned())
            .or_else(|| {
                code(&[PathElement::Key("continent"), PathElement::Key("code")])
                    .and_then(|c| self.continents.get(&c.to_ascii_uppercase()).cloned())
            });
        (region, prefix)
    }
}

/// Every way of placing a client, built once per config generation.
#[derive(Debug, Default)]
pub struct GeoMap {
    /// `[[geo]]`, longest prefix first.
    entries: Vec<(IpNet, Arc<str>)>,
    db: Option<GeoDb>,
}

fn common_prefix(a: IpAddr, b: IpAddr) -> Option<u8> {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => Some((u32::from(a) ^ u32::from(b)).leading_zeros() as u8),
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            Some((u128::from(a) ^ u128::from(b)).leading_zeros() as u8)
        }
        _ => None,
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl GeoMap {
    /// A map of `entries` and, optionally, a database.
    pub fn new(entries: &[Geo], db: Option<GeoDb>) -> Self {
        let mut entries: Vec<(IpNet, Arc<str>)> = entries
            .iter()
            .map(|g| (g.cidr.trunc(), Arc::from(g.region.as_str())))
            .collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.0.prefix_len()));
        Self { entries, db }
    }

    /// Whether answers never depend on the client.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.db.is_none()
    }

    /// Places the client network `ip`/`source` (`source` = the ECS source prefix, or the full
    /// length for a source address). A zero-length source tells nothing: no region, scope 0.
    pub fn locate(&self, ip: IpAddr, source: u8) -> Located {
        let ip = canonical(ip);
        if self.is_empty() || source == 0 {
            return Located::default();
        }
        let matched = self.entries.iter().find(|(net, _)| net.contains(&ip));
        let mut scope = matched.map_or(0, |(net, _)| net.prefix_len());
        for (net, _) in &self.entries {
            if let Some(common) = common_prefix(ip, net.network()) {
                if common < net.prefix_len() {
                    scope = scope.max(common + 1);
                }
            }
        }
        let region = match matched {
            Some((_, region)) => Some(region.clone()),
            None => match &self.db {
                Some(db) => {
                    let (region, prefix) = db.lookup(ip);
                    scope = scope.max(prefix);
                    region
                }
                None => None,
            },
        };
        Located { region, scope }
    }
}
