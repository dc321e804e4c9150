//! iptables mode: kube-proxy's chain layout under kommit's own names, written with one
//! atomic `iptables-restore --noflush` per sync.
//!
//! # Consistency
//! `iptables-restore` applies each table between `*table` and `COMMIT` as one
//! transaction: either the whole table's changes are in the kernel or none are. Input
//! cut short (kommit killed while writing it) has no `COMMIT` for the table being
//! written, and that table is left exactly as it was. The nat table only refers to nat
//! chains and the filter table only to filter chains, so each table is consistent on its
//! own whatever happens between the two.
//!
//! # Full and partial syncs
//! The first sync, the first after an error and one every
//! [`IptablesConfig::full_sync_period`] are full: kommit reads the tables with
//! `iptables-save`, rewrites every chain of its own, deletes `KOMMIT-*` chains it no
//! longer wants (left by an earlier run, for example) and makes sure each jump from a
//! built-in chain exists exactly once. Other syncs are partial: only the chains whose
//! content differs from what the last successful sync wrote are rewritten, and chains
//! written before but no longer wanted are deleted. A table with nothing to change is not
//! sent at all.

mod check;
mod rules;
pub(crate) mod runner;
mod save;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

pub use check::{BUILTIN_TARGETS, CheckError, builtin_chains, check_restore_input};
pub use rules::{
    CHAIN_PREFIX, Chain, EXTERNAL_SERVICES_CHAIN, FIREWALL_CHAIN, FORWARD_CHAIN, Jump,
    MARK_MASQ_CHAIN, NODEPORTS_CHAIN, POSTROUTING_CHAIN, PortRules, SERVICES_CHAIN, SharedChain,
    Table, digest, endpoint_chain, external_chain, jumps, port_rules, probability, service_chain,
    shared_chains, static_chains,
};
pub use runner::{Backend, Runner, RunnerError, SystemRunner};
pub use save::{SavedRule, SavedTable, parse_save, rule_target, split_words};

use crate::model::ProxyState;
use crate::port_cache::{Change, PortCache};

/// The address family one proxier programs (iptables or ip6tables).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub fn matches(self, ip: IpAddr) -> bool {
        matches!(
            (self, ip),
            (IpFamily::V4, IpAddr::V4(_)) | (IpFamily::V6, IpAddr::V6(_))
        )
    }
}

/// How the rules are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IptablesConfig {
    pub family: IpFamily,
    /// The pod network. Traffic to a cluster IP from outside it (the host itself, other
    /// machines) is masqueraded so replies come back through this node. `None`
    /// masquerades all cluster IP traffic.
    pub cluster_cidr: Option<String>,
    /// The packet mark bit that flags traffic for masquerading (kube-proxy uses 14;
    /// kommit defaults to 13 so the two never share a bit).
    pub masquerade_bit: u8,
    /// Whether node ports answer on 127.0.0.1 too (IPv4 only). Needs
    /// `net.ipv4.conf.all.route_localnet=1`, which a full sync sets, and adds
    /// kube-proxy's rule that drops martian traffic to 127/8 from elsewhere.
    pub localhost_node_ports: bool,
    /// A full sync at least this often, to repair rules changed behind kommit's back
    /// (default one hour, as kube-proxy: a full sync of 10,000 Services is seconds of
    /// CPU with iptables-legacy and minutes with iptables-nft 1.8.9).
    pub full_sync_period: Duration,
    /// Above this many endpoints in all, per-endpoint rules are written without
    /// comments (kube-proxy's large-cluster mode, same threshold).
    pub large_cluster_endpoints: usize,
}

impl Default for IptablesConfig {
    fn default() -> Self {
        Self {
            family: IpFamily::V4,
            cluster_cidr: None,
            masquerade_bit: 13,
            localhost_node_ports: true,
            full_sync_period: Duration::from_secs(3600),
            large_cluster_endpoints: 1000,
        }
    }
}

impl IptablesConfig {
    /// The mark as iptables writes it, e.g. `0x2000`.
    pub fn masquerade_mark(&self) -> String {
        format!("{:#x}", 1u32 << self.masquerade_bit.min(31))
    }

    pub fn localhost_node_ports(&self) -> bool {
        self.localhost_node_ports && self.family == IpFamily::V4
    }

    fn validate(&self) -> Result<(), SyncError> {
        validate_masquerading(
            self.family,
            self.cluster_cidr.as_deref(),
            self.masquerade_bit,
        )
        .map_err(SyncError::Config)
    }
}

/// The checks both rule modes make of their masquerading settings: a mark bit in 0-31
/// and a cluster CIDR of the proxier's family; the message says what is wrong.
pub(crate) fn validate_masquerading(
    family: IpFamily,
    cluster_cidr: Option<&str>,
    masquerade_bit: u8,
) -> Result<(), String> {
    if masquerade_bit > 31 {
        return Err(format!("masquerade_bit {masquerade_bit} is not in 0-31"));
    }
    if let Some(cidr) = cluster_cidr {
        let (addr, len) = cidr.split_once('/').unwrap_or((cidr, ""));
        let max = match addr.parse::<IpAddr>() {
            Ok(ip) if family.matches(ip) => {
                if ip.is_ipv4() {
                    32
                } else {
                    128
                }
            }
            _ => {
                return Err(format!(
                    "cluster_cidr {cidr:?} is not an address of the proxier's family"
                ));
            }
        };
        if !len.parse::<u8>().is_ok_and(|l| l <= max) {
            return Err(format!(
                "cluster_cidr {cidr:?} needs a prefix length 0-{max}"
            ));
        }
    }
    Ok(())
}

/// Why a sync or a cleanup failed. After a failed sync the tables are as they were
/// before it and the next sync is a full one.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("invalid proxy configuration: {0}")]
    Config(String),
    #[error("reading the {table} table: {source}")]
    Save {
        table: &'static str,
        source: RunnerError,
    },
    #[error("writing the rules: {0}")]
    Restore(RunnerError),
}

/// What one sync did, with its timings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub full: bool,
    /// `table/chain` of every chain (re)written.
    pub chains_written: Vec<String>,
    /// `table/chain` of every chain deleted.
    pub chains_deleted: Vec<String>,
    /// Service ports whose rules were generated anew (the others came from the cache).
    pub ports_regenerated: usize,
    pub rules_written: usize,
    /// `table/chain` of every shared chain edited rule by rule (partial syncs).
    pub chains_edited: Vec<String>,
    /// Rules deleted (`-D`) or inserted into shared chains.
    pub rules_edited: usize,
    pub input_bytes: usize,
    /// Reading the tables (full syncs only).
    pub save: Duration,
    /// Turning the model into iptables-restore input.
    pub generate: Duration,
    /// Running iptables-restore.
    pub restore: Duration,
}

/// What a cleanup removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// `table/chain` of every chain deleted.
    pub chains_deleted: Vec<String>,
    /// `table/chain: rule` of every jump rule deleted.
    pub jumps_deleted: Vec<String>,
}

/// The iptables proxier. Call [`IptablesProxier::sync`] with the whole state whenever it
/// changed (it works out what to write); it blocks while the commands run, so call it
/// from a blocking thread in async code.
pub struct IptablesProxier<R: Runner> {
    runner: R,
    config: IptablesConfig,
    /// Every Service's rules as the last sync generated them (and, unless it failed,
    /// wrote them).
    cache: PortCache<PortRules>,
    /// Digests of the static chains the last successful sync wrote, or `None`
    /// when the tables' content is unknown (start, after an error): the next sync is
    /// then full.
    written: Option<HashMap<(Table, String), u64>>,
    last_full: Option<Instant>,
}

impl<R: Runner> IptablesProxier<R> {
    pub fn new(runner: R, config: IptablesConfig) -> Result<Self, SyncError> {
        config.validate()?;
        Ok(Self {
            runner,
            config,
            cache: PortCache::default(),
            written: None,
            last_full: None,
        })
    }

    pub fn config(&self) -> &IptablesConfig {
        &self.config
    }

    pub fn runner(&self) -> &R {
        &self.runner
    }

    /// Makes the next sync a full one.
    pub fn force_full_sync(&mut self) {
        self.written = None;
    }

    /// Brings the tables to `state` with one iptables-restore.
    pub fn sync(&mut self, state: &ProxyState) -> Result<SyncReport, SyncError> {
        let full = self.written.is_none()
            || self
                .last_full
                .is_none_or(|t| t.elapsed() >= self.config.full_sync_period);
        let mut report = SyncReport {
            full,
            ..SyncReport::default()
        };

        let saved = if full {
            let t = Instant::now();
            let saved = [self.save(Table::Filter)?, self.save(Table::Nat)?];
            report.save = t.elapsed();
            if self.config.localhost_node_ports()
                && let Err(e) = self.runner.sysctl("net.ipv4.conf.all.route_localnet", "1")
            {
                warn!(error = %e, "cannot enable route_localnet; node ports on 127.0.0.1 will not answer");
            }
            Some(saved)
        } else {
            None
        };

        let t = Instant::now();
        let (ports, changes) = self.update_cache(state, &mut report);
        let statics = static_chains(&self.config);
        let shared = shared_chains(&self.config);
        let static_digests: HashMap<(Table, String), u64> = statics
            .iter()
            .map(|c| ((c.table, c.name.clone()), c.digest))
            .collect();
        let partial_base = match (&saved, &self.written) {
            (None, Some(written)) => Some(written),
            _ => None,
        };
        let unchanged = |c: &Chain| {
            partial_base.is_some_and(|w| w.get(&(c.table, c.name.clone())) == Some(&c.digest))
        };

        // The shared chains: built whole in a full sync; in a partial sync edited rule by
        // rule (-D the lines of changed Services that went, insert the ones that came),
        // so adding one Service among thousands does not rewrite a chain of thousands.
        let mut shared_built = Vec::new();
        let mut deletes: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        let mut inserts: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        if partial_base.is_some() {
            for change in &changes {
                for sc in &shared {
                    let old: Vec<&String> =
                        change.old.iter().flat_map(|p| sc.lines_of(p)).collect();
                    let new: Vec<&String> =
                        change.new.iter().flat_map(|p| sc.lines_of(p)).collect();
                    if old == new {
                        continue;
                    }
                    let (old_set, new_set): (HashSet<&String>, HashSet<&String>) =
                        (old.iter().copied().collect(), new.iter().copied().collect());
                    let t = sc.table as usize;
                    for line in old.iter().filter(|l| !new_set.contains(*l)) {
                        deletes[t].push(format!("-D {}", line.strip_prefix("-A ").unwrap_or(line)));
                    }
                    for line in new.iter().filter(|l| !old_set.contains(*l)) {
                        inserts[t].push(sc.insert_line(line));
                    }
                    let edited = format!("{}/{}", sc.table.name(), sc.name);
                    if !report.chains_edited.contains(&edited) {
                        report.chains_edited.push(edited);
                    }
                }
            }
            report.chains_edited.sort();
        } else {
            shared_built = shared.iter().map(|c| c.build(&ports)).collect();
        }

        // What to write and what to delete, per table.
        let mut to_write: [Vec<&Chain>; 2] = [Vec::new(), Vec::new()];
        let mut stale: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        for c in statics
            .iter()
            .filter(|c| !unchanged(c))
            .chain(&shared_built)
        {
            to_write[c.table as usize].push(c);
        }
        if partial_base.is_some() {
            for change in &changes {
                let old: HashMap<&str, u64> = change
                    .old
                    .iter()
                    .flat_map(|r| r.chains.iter())
                    .map(|c| (c.name.as_str(), c.digest))
                    .collect();
                let mut kept = HashSet::new();
                for c in change.new.iter().flat_map(|r| r.chains.iter()) {
                    kept.insert(c.name.as_str());
                    if old.get(c.name.as_str()) != Some(&c.digest) {
                        to_write[c.table as usize].push(c);
                    }
                }
                for c in change.old.iter().flat_map(|r| r.chains.iter()) {
                    if !kept.contains(c.name.as_str()) {
                        stale[c.table as usize].push(c.name.clone());
                    }
                }
            }
        } else {
            let mut wanted: [HashSet<&str>; 2] = [HashSet::new(), HashSet::new()];
            for c in ports.iter().flat_map(|p| p.chains.iter()) {
                to_write[c.table as usize].push(c);
            }
            for c in to_write.iter().flatten() {
                wanted[c.table as usize].insert(c.name.as_str());
            }
            if let Some(saved) = &saved {
                for table in Table::ALL {
                    stale[table as usize] = saved[table as usize]
                        .chains
                        .iter()
                        .filter(|c| {
                            c.starts_with(CHAIN_PREFIX)
                                && !wanted[table as usize].contains(c.as_str())
                        })
                        .cloned()
                        .collect();
                }
            }
        }

        let mut input = String::new();
        for table in Table::ALL {
            let (to_write, stale) = (&to_write[table as usize], &mut stale[table as usize]);
            stale.sort();
            let jump_lines = match &saved {
                Some(saved) => self.jump_fixes(table, &saved[table as usize]),
                None => Vec::new(),
            };
            let (deletes, inserts) = (&deletes[table as usize], &inserts[table as usize]);
            if to_write.is_empty()
                && stale.is_empty()
                && jump_lines.is_empty()
                && deletes.is_empty()
                && inserts.is_empty()
            {
                continue;
            }
            let _ = writeln!(input, "*{}", table.name());
            for c in to_write {
                let _ = writeln!(input, ":{} - [0:0]", c.name);
            }
            for c in stale.iter() {
                let _ = writeln!(input, ":{c} - [0:0]");
            }
            for line in jump_lines.iter().chain(deletes).chain(inserts) {
                input.push_str(line);
                input.push('\n');
            }
            report.rules_edited += deletes.len() + inserts.len();
            for c in to_write {
                for r in &c.rules {
                    input.push_str(r);
                    input.push('\n');
                }
                report.rules_written += c.rules.len();
                report
                    .chains_written
                    .push(format!("{}/{}", table.name(), c.name));
            }
            for c in stale.iter() {
                let _ = writeln!(input, "-X {c}");
                report.chains_deleted.push(format!("{}/{c}", table.name()));
            }
            input.push_str("COMMIT\n");
        }
        report.generate = t.elapsed();
        report.input_bytes = input.len();

        if !input.is_empty() {
            let t = Instant::now();
            let result = self.runner.restore(self.config.family, input.as_bytes());
            report.restore = t.elapsed();
            if let Err(e) = result {
                self.written = None;
                return Err(SyncError::Restore(e));
            }
        }
        self.written = Some(static_digests);
        if full {
            self.last_full = Some(Instant::now());
        }
        debug!(
            full,
            written = report.chains_written.len(),
            deleted = report.chains_deleted.len(),
            bytes = report.input_bytes,
            "iptables sync"
        );
        Ok(report)
    }

    /// Whether the rules the last sync wrote are still there, as far as two canary chains
    /// tell (`KOMMIT-MARK-MASQ` in nat, `KOMMIT-FORWARD` in filter): something else may
    /// have flushed the tables (a firewall reload). When they are gone the next sync is a
    /// full one. Cheap: lists two one-rule chains.
    pub fn rules_intact(&mut self) -> Result<bool, SyncError> {
        if self.written.is_none() {
            return Ok(true);
        }
        for (table, chain) in [
            (Table::Nat, MARK_MASQ_CHAIN),
            (Table::Filter, FORWARD_CHAIN),
        ] {
            let exists = self
                .runner
                .chain_exists(self.config.family, table.name(), chain)
                .map_err(|source| SyncError::Save {
                    table: table.name(),
                    source,
                })?;
            if !exists {
                self.written = None;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Removes every kommit chain and every jump into one (see [`cleanup`]); the next
    /// sync is a full one.
    pub fn cleanup(&mut self) -> Result<CleanupReport, SyncError> {
        self.written = None;
        cleanup(&self.runner, self.config.family)
    }

    fn save(&self, table: Table) -> Result<SavedTable, SyncError> {
        let text = self
            .runner
            .save(self.config.family, table.name())
            .map_err(|source| SyncError::Save {
                table: table.name(),
                source,
            })?;
        Ok(parse_save(&text))
    }

    /// Regenerates the rules of the Services that changed; returns every port's rules
    /// in state order, and how each changed Service changed (removed ones included).
    fn update_cache(
        &mut self,
        state: &ProxyState,
        report: &mut SyncReport,
    ) -> (Vec<Arc<PortRules>>, Vec<Change<PortRules>>) {
        let terse = state.endpoint_count() > self.config.large_cluster_endpoints;
        let config = &self.config;
        let update = self
            .cache
            .update(state, u64::from(terse), |p| port_rules(p, config, terse));
        report.ports_regenerated += update.regenerated;
        (update.ports, update.changes)
    }

    /// The lines that make each wanted jump exist exactly once in `table`, and remove
    /// jumps into kommit chains that are not wanted.
    fn jump_fixes(&self, table: Table, saved: &SavedTable) -> Vec<String> {
        let wanted: Vec<Jump> = jumps(&self.config)
            .into_iter()
            .filter(|j| j.table == table)
            .collect();
        let mut lines = Vec::new();
        let mut present: HashSet<(String, String)> = HashSet::new();
        for rule in &saved.rules {
            let Some(target) = rule.target.as_deref() else {
                continue;
            };
            if rule.chain.starts_with(CHAIN_PREFIX) || !target.starts_with(CHAIN_PREFIX) {
                continue;
            }
            let key = (rule.chain.clone(), target.to_owned());
            let is_wanted = wanted
                .iter()
                .any(|j| j.from == rule.chain && j.to == target);
            if is_wanted && present.insert(key) {
                continue;
            }
            lines.push(format!("-D {} {}", rule.chain, rule.spec));
        }
        // Inserted at position 1 each: insert in reverse so they end up in list order.
        for j in wanted.iter().rev() {
            if !present.contains(&(j.from.to_owned(), j.to.to_owned())) {
                lines.push(j.insert_line());
            }
        }
        lines
    }
}

/// Removes every `KOMMIT-*` chain and every rule elsewhere that jumps into one, in both
/// tables, each table in one atomic restore. Safe to run when nothing is there.
pub fn cleanup<R: Runner + ?Sized>(
    runner: &R,
    family: IpFamily,
) -> Result<CleanupReport, SyncError> {
    let mut report = CleanupReport::default();
    let mut input = String::new();
    for table in Table::ALL {
        let text = runner
            .save(family, table.name())
            .map_err(|source| SyncError::Save {
                table: table.name(),
                source,
            })?;
        let saved = parse_save(&text);
        let ours: Vec<&String> = saved
            .chains
            .iter()
            .filter(|c| c.starts_with(CHAIN_PREFIX))
            .collect();
        let jumps: Vec<&SavedRule> = saved
            .rules
            .iter()
            .filter(|r| {
                !r.chain.starts_with(CHAIN_PREFIX)
                    && r.target
                        .as_deref()
                        .is_some_and(|t| t.starts_with(CHAIN_PREFIX))
            })
            .collect();
        if ours.is_empty() && jumps.is_empty() {
            continue;
        }
        let _ = writeln!(input, "*{}", table.name());
        for r in &jumps {
            let _ = writeln!(input, "-D {} {}", r.chain, r.spec);
            report
                .jumps_deleted
                .push(format!("{}/{}: {}", table.name(), r.chain, r.spec));
        }
        for c in &ours {
            let _ = writeln!(input, ":{c} - [0:0]");
        }
        for c in &ours {
            let _ = writeln!(input, "-X {c}");
            report.chains_deleted.push(format!("{}/{c}", table.name()));
        }
        input.push_str("COMMIT\n");
    }
    if !input.is_empty() {
        runner
            .restore(family, input.as_bytes())
            .map_err(SyncError::Restore)?;
    }
    Ok(report)
}
