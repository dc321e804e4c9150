//! nftables mode: one table of kommit's own (`ip kommit`), with maps keyed by cluster
//! IP, protocol and port (layout in the `objects` module docs), written with one
//! `nft -f` transaction per sync.
//!
//! # Consistency
//! `nft -f` sends a whole script as one netlink batch that the kernel commits at once or
//! rejects whole: a sync is in the kernel entirely or not at all. The script is written
//! to a file before `nft` starts (see [`SystemRunner`]'s [`Nft`] implementation), so a
//! kommit killed mid-write applies nothing. Everything kommit writes lives in its own
//! table, so it never edits rules of others (Docker's, a real kube-proxy's) and a cleanup
//! is one `delete table`.
//!
//! # Full and partial syncs
//! The first sync, the first after an error and one every
//! [`NftablesConfig::full_sync_period`] are full: the table is deleted and written anew
//! in the same transaction (which also removes whatever an earlier run left). Other
//! syncs are partial: for each Service that changed, its map and set elements are
//! added or deleted; nothing else is sent (no chain: the chains of endpoint counts 1 to
//! [`NftablesConfig::endpoint_groups`] are always there, and a Service with more
//! endpoints than that makes the sync full). A partial sync's cost is that of the
//! change, not of the table.

mod objects;
mod runner;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

pub use objects::{
    ENDPOINTS, Element, HAIRPIN, NO_ENDPOINT_NODEPORTS, NO_ENDPOINT_SERVICES, NODEPORT_ENDPOINTS,
    NftChain, PortObjects, SERVICE_EXTERNAL_IPS, SERVICE_IPS, SERVICE_NODEPORTS, TABLE,
    family_name, group_chain, group_chains, hairpin_element, nodeport_group_chain, port_objects,
    static_block,
};
pub use runner::Nft;

use crate::iptables::{IpFamily, RunnerError, SystemRunner};
use crate::model::ProxyState;
use crate::port_cache::{Change, PortCache};

/// Elements per `add element` statement in a full sync.
const ELEMENTS_PER_STATEMENT: usize = 1000;

/// How the table is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftablesConfig {
    pub family: IpFamily,
    /// The pod network: cluster IP traffic from outside it is masqueraded. `None`
    /// masquerades all cluster IP traffic.
    pub cluster_cidr: Option<String>,
    /// The packet mark bit that flags traffic for masquerading (default 13, as the
    /// iptables mode).
    pub masquerade_bit: u8,
    /// Whether node ports answer on 127.0.0.1 too (IPv4 only; sets
    /// `net.ipv4.conf.all.route_localnet=1` and drops martian traffic to 127/8).
    pub localhost_node_ports: bool,
    /// A full sync at least this often, to repair changes made behind kommit's back.
    pub full_sync_period: Duration,
    /// Endpoint counts (1 to this) whose chains every full sync writes, so that a partial
    /// sync moves a Service between counts with map elements alone; a Service with more
    /// endpoints brings its own chains with a full sync.
    pub endpoint_groups: usize,
}

impl Default for NftablesConfig {
    fn default() -> Self {
        Self {
            family: IpFamily::V4,
            cluster_cidr: None,
            masquerade_bit: 13,
            localhost_node_ports: true,
            full_sync_period: Duration::from_secs(3600),
            endpoint_groups: 64,
        }
    }
}

impl NftablesConfig {
    /// The mark as nft writes it, e.g. `0x00002000`.
    pub fn masquerade_mark(&self) -> String {
        format!("{:#010x}", 1u32 << self.masquerade_bit.min(31))
    }

    pub fn localhost_node_ports(&self) -> bool {
        self.localhost_node_ports && self.family == IpFamily::V4
    }

    fn validate(&self) -> Result<(), SyncError> {
        crate::iptables::validate_masquerading(
            self.family,
            self.cluster_cidr.as_deref(),
            self.masquerade_bit,
        )
        .map_err(SyncError::Config)
    }
}

/// Why a sync or a cleanup failed. After a failed sync the table is as it was before it
/// and the next sync is a full one.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("invalid proxy configuration: {0}")]
    Config(String),
    #[error("writing the nftables table: {0}")]
    Apply(RunnerError),
    #[error("reading the nftables table: {0}")]
    List(RunnerError),
}

/// What one sync did, with its timings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub full: bool,
    /// Chains written (created, or flushed and rewritten).
    pub chains_written: Vec<String>,
    /// Chains deleted (none today: a partial sync leaves the chains of endpoint counts
    /// no longer used until the next full sync, which replaces the table).
    pub chains_deleted: Vec<String>,
    pub elements_added: usize,
    pub elements_deleted: usize,
    /// Service ports whose objects were generated anew (the others came from the cache).
    pub ports_regenerated: usize,
    pub script_bytes: usize,
    /// Turning the model into the script.
    pub generate: Duration,
    /// Running `nft -f`.
    pub apply: Duration,
}

impl SyncReport {
    /// Whether the sync wrote anything.
    pub fn changed(&self) -> bool {
        self.full
            || !self.chains_written.is_empty()
            || !self.chains_deleted.is_empty()
            || self.elements_added + self.elements_deleted > 0
    }
}

/// The nftables proxier. Call [`NftablesProxier::sync`] with the whole state whenever it
/// changed; it blocks while `nft` runs, so call it from a blocking thread in async code.
pub struct NftablesProxier<N: Nft> {
    nft: N,
    config: NftablesConfig,
    cache: PortCache<PortObjects>,
    /// References to each endpoint address, for the hairpin set.
    hairpin: HashMap<IpAddr, usize>,
    /// Endpoint counts whose chains are in the table.
    groups: BTreeSet<usize>,
    /// Whether the kernel holds what the cache says (false at start and after an error).
    in_sync: bool,
    last_full: Option<Instant>,
}

impl<N: Nft> NftablesProxier<N> {
    pub fn new(nft: N, config: NftablesConfig) -> Result<Self, SyncError> {
        config.validate()?;
        Ok(Self {
            nft,
            config,
            cache: PortCache::default(),
            hairpin: HashMap::new(),
            groups: BTreeSet::new(),
            in_sync: false,
            last_full: None,
        })
    }

    pub fn config(&self) -> &NftablesConfig {
        &self.config
    }

    pub fn nft(&self) -> &N {
        &self.nft
    }

    /// Makes the next sync a full one.
    pub fn force_full_sync(&mut self) {
        self.in_sync = false;
    }

    /// Brings the table to `state` with one `nft -f`.
    pub fn sync(&mut self, state: &ProxyState) -> Result<SyncReport, SyncError> {
        let full = !self.in_sync
            || self
                .last_full
                .is_none_or(|t| t.elapsed() >= self.config.full_sync_period);
        let mut report = SyncReport {
            full,
            ..SyncReport::default()
        };
        if full
            && self.config.localhost_node_ports()
            && let Err(e) = self.nft.set_sysctl("net.ipv4.conf.all.route_localnet", "1")
        {
            warn!(error = %e, "cannot enable route_localnet; node ports on 127.0.0.1 will not answer");
        }
        let t = Instant::now();
        let (ports, changes) = self.update_cache(state, &mut report);
        // nft 1.0.6 cannot add a rule that uses a typeof map it reads back from the
        // kernel ("conflicting protocols"), so a group chain is only ever written with
        // the whole table: an endpoint count without its chains makes this sync full.
        let full = full
            || changes
                .iter()
                .flat_map(|c| &c.new)
                .filter_map(|p| p.group)
                .any(|n| !self.groups.contains(&n));
        report.full = full;
        let script = if full {
            self.full_script(&ports, &mut report)
        } else {
            self.partial_script(&changes, &mut report)
        };
        report.generate = t.elapsed();
        report.script_bytes = script.len();
        if !script.is_empty() {
            let t = Instant::now();
            let result = self.nft.apply(&script);
            report.apply = t.elapsed();
            if let Err(e) = result {
                self.in_sync = false;
                return Err(SyncError::Apply(e));
            }
        }
        self.in_sync = true;
        if full {
            self.last_full = Some(Instant::now());
        }
        debug!(
            full,
            chains = report.chains_written.len(),
            bytes = report.script_bytes,
            "nftables sync"
        );
        Ok(report)
    }

    /// Whether the table the last sync wrote is still there, as far as a canary chain
    /// (`nat-postrouting`) tells: something else may have flushed the ruleset (`nft flush
    /// ruleset`, a firewall reload). When it is gone the next sync is a full one.
    pub fn rules_intact(&mut self) -> Result<bool, SyncError> {
        if !self.in_sync {
            return Ok(true);
        }
        let exists = self
            .nft
            .chain_exists(self.config.family, "nat-postrouting")
            .map_err(SyncError::List)?;
        if !exists {
            self.in_sync = false;
        }
        Ok(exists)
    }

    /// Deletes kommit's table (see [`cleanup`]); the next sync is a full one.
    pub fn cleanup(&mut self) -> Result<bool, SyncError> {
        self.in_sync = false;
        cleanup(&self.nft, self.config.family)
    }

    /// The table deleted and written anew, in one transaction.
    fn full_script(&mut self, ports: &[Arc<PortObjects>], report: &mut SyncReport) -> String {
        let fam = family_name(self.config.family);
        let mut s = String::with_capacity(ports.len() * 256 + 4096);
        // `add` first so that `delete` cannot fail on a host without the table.
        let _ = writeln!(s, "add table {fam} {TABLE}\ndelete table {fam} {TABLE}");
        s.push_str(&static_block(&self.config));
        let mut elements: HashMap<&'static str, Vec<String>> = HashMap::new();
        // Chains for every endpoint count up to `endpoint_groups`, and any larger in use.
        let mut groups: BTreeSet<usize> = (1..=self.config.endpoint_groups).collect();
        for p in ports {
            groups.extend(p.group);
            for e in &p.elements {
                elements.entry(e.set).or_default().push(e.text());
            }
        }
        for n in &groups {
            for c in group_chains(*n, self.config.family) {
                objects::chain_block(&c, &mut s);
                report.chains_written.push(c.name);
            }
        }
        self.groups = groups;
        s.push_str("}\n");
        let mut hairpin: Vec<&IpAddr> = self.hairpin.keys().collect();
        hairpin.sort();
        elements.insert(
            HAIRPIN,
            hairpin
                .into_iter()
                .map(|ip| hairpin_element(*ip).text())
                .collect(),
        );
        let mut sets: Vec<_> = elements.into_iter().collect();
        sets.sort();
        for (set, list) in sets {
            report.elements_added += list.len();
            for chunk in list.chunks(ELEMENTS_PER_STATEMENT) {
                let _ = writeln!(
                    s,
                    "add element {fam} {TABLE} {set} {{ {} }}",
                    chunk.join(", ")
                );
            }
        }
        s
    }

    /// Only what the changed Services need: their elements (the chains of their endpoint
    /// counts exist, see `sync`).
    fn partial_script(&self, changes: &[Change<PortObjects>], report: &mut SyncReport) -> String {
        let fam = family_name(self.config.family);
        let mut s = String::new();
        let mut deletes = Vec::new();
        let mut adds = Vec::new();
        let mut hairpin_delta: HashMap<IpAddr, i64> = HashMap::new();
        for change in changes {
            let old: HashSet<&Element> = change.old.iter().flat_map(|p| &p.elements).collect();
            let new: HashSet<&Element> = change.new.iter().flat_map(|p| &p.elements).collect();
            deletes.extend(old.difference(&new).map(|e| (*e).clone()));
            adds.extend(new.difference(&old).map(|e| (*e).clone()));
            for ip in change.old.iter().flat_map(|p| &p.endpoint_ips) {
                *hairpin_delta.entry(*ip).or_default() -= 1;
            }
            for ip in change.new.iter().flat_map(|p| &p.endpoint_ips) {
                *hairpin_delta.entry(*ip).or_default() += 1;
            }
        }
        // The reference counts were already moved to the new state by update_cache: an
        // address is new when its count equals what this sync added, gone when zero.
        for (ip, delta) in hairpin_delta {
            let now = self.hairpin.get(&ip).copied().unwrap_or(0) as i64;
            if delta > 0 && now == delta {
                adds.push(hairpin_element(ip));
            } else if delta < 0 && now == 0 {
                deletes.push(hairpin_element(ip));
            }
        }
        deletes.sort();
        adds.sort();
        // One statement per set (the lists are sorted by set); deletes first, so a key
        // whose value changed (an endpoint replaced) is deleted, then added.
        for (verb, list, text) in [
            (
                "delete",
                &deletes,
                (|e: &Element| e.key.clone()) as fn(&Element) -> String,
            ),
            ("add", &adds, Element::text as fn(&Element) -> String),
        ] {
            for group in list.chunk_by(|a, b| a.set == b.set) {
                let items: Vec<String> = group.iter().map(text).collect();
                let _ = writeln!(
                    s,
                    "{verb} element {fam} {TABLE} {} {{ {} }}",
                    group[0].set,
                    items.join(", ")
                );
            }
        }
        report.elements_added = adds.len();
        report.elements_deleted = deletes.len();
        s
    }

    /// Regenerates the objects of the Services that changed and moves the hairpin
    /// counts; returns every port's objects in state order and how each changed Service
    /// changed (removed ones included).
    fn update_cache(
        &mut self,
        state: &ProxyState,
        report: &mut SyncReport,
    ) -> (Vec<Arc<PortObjects>>, Vec<Change<PortObjects>>) {
        let config = &self.config;
        let update = self.cache.update(state, 0, |p| port_objects(p, config));
        report.ports_regenerated += update.regenerated;
        let (ports, changes) = (update.ports, update.changes);
        for change in &changes {
            for ip in change.old.iter().flat_map(|p| &p.endpoint_ips) {
                if let Some(n) = self.hairpin.get_mut(ip) {
                    *n -= 1;
                    if *n == 0 {
                        self.hairpin.remove(ip);
                    }
                }
            }
            for ip in change.new.iter().flat_map(|p| &p.endpoint_ips) {
                *self.hairpin.entry(*ip).or_default() += 1;
            }
        }
        (ports, changes)
    }
}

/// Deletes kommit's table of `family`; whether there was one. Safe to run when there is
/// none.
pub fn cleanup<N: Nft + ?Sized>(nft: &N, family: IpFamily) -> Result<bool, SyncError> {
    if nft.list_table(family).map_err(SyncError::List)?.is_none() {
        return Ok(false);
    }
    let fam = family_name(family);
    nft.apply(&format!(
        "add table {fam} {TABLE}\ndelete table {fam} {TABLE}\n"
    ))
    .map_err(SyncError::Apply)?;
    Ok(true)
}

/// Whether `nft` works here (lists tables); the error says why not.
pub fn available(runner: &SystemRunner) -> Result<(), RunnerError> {
    runner.list_table(IpFamily::V4).map(|_| ())
}
