//! Real distance: demo sites in their own network namespaces, each reached from the root
//! namespace over a veth pair on a /24 of 10.201.0.0/16 that exists only between the two
//! ends, with delay and loss on the namespace's side of the link. The shaping is `tc qdisc
//! replace dev VETH root netem delay D loss L%` where the kernel has `sch_netem`; where it
//! does not (this machine's kernel is built without it), an `iptables -j NFQUEUE` rule hands
//! every packet leaving the namespace to a userspace delay line
//! ([`super::nfqueue::DelayLine`]) that does the same per packet. Everything made is removed
//! on drop, even on failure.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::nfqueue::DelayLine;

/// How packets leaving a namespace are delayed and dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shaper {
    /// The kernel's `netem` qdisc.
    Netem,
    /// `iptables -j NFQUEUE` and a userspace delay line (no `sch_netem` in this kernel).
    Nfqueue,
}

impl Shaper {
    /// How the report names it.
    pub fn describe(self) -> &'static str {
        match self {
            Shaper::Netem => "tc netem on the namespace's veth",
            Shaper::Nfqueue => {
                "iptables NFQUEUE on the namespace's veth and a userspace delay line \
                 (the kernel has no sch_netem)"
            }
        }
    }
}

/// One namespace and its link.
pub struct Ns {
    /// The namespace's name (`ip netns`).
    pub name: String,
    /// The veth end in the root namespace.
    pub host_if: String,
    /// The veth end inside the namespace.
    pub ns_if: String,
    /// The root namespace's address on the link.
    pub host_ip: Ipv4Addr,
    /// The namespace's address on the link (where its site listens).
    pub ns_ip: Ipv4Addr,
    line: Option<DelayLine>,
}

/// Runs a command; `Err` with its stderr when it fails.
fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Namespaces with links to the root namespace; removed on drop.
pub struct NetLab {
    /// The namespaces, in the order asked.
    pub ns: Vec<Ns>,
    /// How delay and loss are applied.
    pub shaper: Shaper,
}

/// Why a [`NetLab`] could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabError {
    /// This machine cannot: not Linux, not root, no `ip`, no way to shape traffic. A reason to
    /// skip, said as such.
    Unsupported(String),
    /// It can, but a step failed: a defect to report, never a skip.
    Broken(String),
}

impl From<String> for LabError {
    fn from(e: String) -> Self {
        Self::Broken(e)
    }
}

impl std::fmt::Display for LabError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unsupported(why) => write!(f, "cannot run here: {why}"),
            Self::Broken(why) => write!(f, "setting up the namespaces failed: {why}"),
        }
    }
}

impl NetLab {
    /// Whether this machine can make a lab: makes a one-namespace lab and removes it.
    pub fn probe() -> Result<(), LabError> {
        Self::create(1).map(drop)
    }

    /// Makes `count` namespaces. [`LabError::Unsupported`] says why this machine cannot (not
    /// root, no `ip netns`, no shaper); any other failure is [`LabError::Broken`].
    pub fn create(count: usize) -> Result<NetLab, LabError> {
        if !cfg!(target_os = "linux") {
            return Err(LabError::Unsupported(
                "network namespaces need Linux".to_string(),
            ));
        }
        let tag = std::process::id() % 10_000;
        let base = free_block(count).map_err(LabError::Unsupported)?;
        let mut lab = NetLab {
            ns: Vec::new(),
            shaper: Shaper::Netem,
        };
        for i in 0..count {
            let octet = base + i as u8;
            let ns = Ns {
                name: format!("sitesteer-chaos-{tag}-{i}"),
                host_if: format!("ssc{tag}h{i}"),
                ns_if: format!("ssc{tag}n{i}"),
                host_ip: Ipv4Addr::new(10, 201, octet, 1),
                ns_ip: Ipv4Addr::new(10, 201, octet, 2),
                line: None,
            };
            // Pushed first, so that drop removes whatever part was made.
            lab.ns.push(ns);
            let ns = &lab.ns[i];
            sh(&["ip", "netns", "add", &ns.name]).map_err(|e| {
                LabError::Unsupported(format!(
                    "`ip netns` is not permitted here (needs root and CAP_SYS_ADMIN): {e}"
                ))
            })?;
            sh(&[
                "ip",
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &ns.ns_if,
            ])?;
            sh(&["ip", "link", "set", &ns.ns_if, "netns", &ns.name])?;
            sh(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", ns.host_ip),
                "dev",
                &ns.host_if,
            ])?;
            sh(&["ip", "link", "set", &ns.host_if, "up"])?;
            let exec = |args: &[&str]| {
                let mut all = vec!["ip", "netns", "exec", &ns.name];
                all.extend_from_slice(args);
                sh(&all)
            };
            exec(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", ns.ns_ip),
                "dev",
                &ns.ns_if,
            ])?;
            exec(&["ip", "link", "set", &ns.ns_if, "up"])?;
            exec(&["ip", "link", "set", "lo", "up"])?;
        }
        lab.shaper = lab.pick_shaper().map_err(LabError::Unsupported)?;
        if lab.shaper == Shaper::Nfqueue {
            let iptables = iptables()?;
            for ns in &mut lab.ns {
                // The line first: a queue rule with nobody listening would drop everything
                // (--queue-bypass lets packets through if the line ever goes away).
                let line = DelayLine::start(&ns.name, 0).map_err(|e| {
                    LabError::Unsupported(format!("the kernel has no NFQUEUE delay line: {e}"))
                })?;
                ns.line = Some(line);
                sh(&[
                    "ip",
                    "netns",
                    "exec",
                    &ns.name,
                    iptables,
                    "-w",
                    "-A",
                    "OUTPUT",
                    "-o",
                    &ns.ns_if,
                    "-j",
                    "NFQUEUE",
                    "--queue-num",
                    "0",
                    "--queue-bypass",
                ])?;
            }
        }
        Ok(lab)
    }

    /// `netem` when the kernel has it, else the NFQUEUE delay line when iptables is there.
    fn pick_shaper(&self) -> Result<Shaper, String> {
        let ns = &self.ns[0];
        let probe = sh(&[
            "ip", "netns", "exec", &ns.name, "tc", "qdisc", "replace", "dev", &ns.ns_if, "root",
            "netem", "delay", "0ms",
        ]);
        match probe {
            Ok(()) => Ok(Shaper::Netem),
            Err(netem) => iptables()
                .map(|_| Shaper::Nfqueue)
                .map_err(|ipt| format!("no way to shape traffic: netem: {netem}; and {ipt}")),
        }
    }

    /// Sets the delay and loss of packets leaving namespace `i` (its site's answers).
    pub fn shape(&self, i: usize, delay: Duration, loss: f64) -> Result<(), String> {
        let ns = &self.ns[i];
        match self.shaper {
            Shaper::Netem => sh(&[
                "ip",
                "netns",
                "exec",
                &ns.name,
                "tc",
                "qdisc",
                "replace",
                "dev",
                &ns.ns_if,
                "root",
                "netem",
                "delay",
                &format!("{}ms", delay.as_millis()),
                "loss",
                &format!("{}%", loss * 100.0),
            ]),
            Shaper::Nfqueue => {
                ns.line.as_ref().ok_or("no delay line")?.set(delay, loss);
                Ok(())
            }
        }
    }

    /// The address of port `port` in namespace `i`.
    pub fn addr(&self, i: usize, port: u16) -> SocketAddr {
        SocketAddr::from((self.ns[i].ns_ip, port))
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for ns in &mut self.ns {
            // Stop the delay line first: its held packets pass.
            drop(ns.line.take());
            let _ = sh(&["ip", "link", "del", &ns.host_if]);
            let _ = sh(&["ip", "netns", "del", &ns.name]);
        }
    }
}

/// `iptables-legacy` (the nft backend may lack the queue expression), else `iptables`.
fn iptables() -> Result<&'static str, String> {
    for bin in ["iptables-legacy", "iptables"] {
        let found = Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return Ok(bin);
        }
    }
    Err("iptables is missing (apt-get install iptables; `make chaos` installs it)".to_string())
}

/// The first `10.201.X.0/24` block of `count` subnets with no address on this host.
fn free_block(count: usize) -> Result<u8, String> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .map_err(|e| format!("ip is missing: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let used = |octet: u8| text.contains(&format!("10.201.{octet}."));
    let start = 10 + (std::process::id() % 100) as u8;
    (0..200u8)
        .map(|k| 10 + (start - 10 + k) % 200)
        .find(|b| (0..count as u8).all(|i| !used(b + i)) && usize::from(*b) + count < 250)
        .ok_or_else(|| "no free 10.201.X.0/24 block".to_string())
}
