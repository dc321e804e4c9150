//! What the rule-writing proxiers (iptables, nftables) remember between syncs: every
//! Service's generated rules, so a sync regenerates only the Services whose version
//! changed and knows, for each, what it wrote before.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{ProxyState, ServiceName, ServicePortView};

struct Cached<T> {
    version: u64,
    /// Generation settings the rules were made with (regenerated when they differ).
    flavour: u64,
    ports: Vec<Arc<T>>,
    /// The sync that last saw this Service in the state.
    seen: u64,
}

/// How one Service's rules changed since the last sync (`old` empty for a new Service,
/// `new` empty for a removed one).
pub(crate) struct Change<T> {
    pub old: Vec<Arc<T>>,
    pub new: Vec<Arc<T>>,
}

/// One sync's view of the cache.
pub(crate) struct Update<T> {
    /// Every Service port's rules, in state order.
    pub ports: Vec<Arc<T>>,
    pub changes: Vec<Change<T>>,
    /// Service ports whose rules were generated anew.
    pub regenerated: usize,
}

/// Rules per Service, keyed by the Service's version in the [`ProxyState`].
pub(crate) struct PortCache<T> {
    entries: HashMap<ServiceName, Cached<T>>,
    syncs: u64,
}

impl<T> Default for PortCache<T> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            syncs: 0,
        }
    }
}

impl<T> PortCache<T> {
    /// Brings the cache to `state`: Services whose version or `flavour` changed get their
    /// ports' rules from `generate`; removed Services are dropped.
    pub fn update(
        &mut self,
        state: &ProxyState,
        flavour: u64,
        mut generate: impl FnMut(&ServicePortView<'_>) -> T,
    ) -> Update<T> {
        self.syncs += 1;
        let sync = self.syncs;
        let mut out = Update {
            ports: Vec::with_capacity(self.entries.len()),
            changes: Vec::new(),
            regenerated: 0,
        };
        let mut seen = 0;
        for view in state.service_views() {
            seen += 1;
            match self.entries.get_mut(&view.service.name) {
                Some(c) if c.version == view.version && c.flavour == flavour => {
                    c.seen = sync;
                    out.ports.extend(c.ports.iter().cloned());
                }
                cached => {
                    let new: Vec<Arc<T>> = view.ports().map(|p| Arc::new(generate(&p))).collect();
                    out.regenerated += new.len();
                    out.ports.extend(new.iter().cloned());
                    let fresh = Cached {
                        version: view.version,
                        flavour,
                        ports: new.clone(),
                        seen: sync,
                    };
                    let old = match cached {
                        Some(c) => std::mem::replace(c, fresh).ports,
                        None => {
                            self.entries.insert(view.service.name.clone(), fresh);
                            Vec::new()
                        }
                    };
                    out.changes.push(Change { old, new });
                }
            }
        }
        if self.entries.len() > seen {
            self.entries.retain(|_, c| {
                if c.seen == sync {
                    return true;
                }
                out.changes.push(Change {
                    old: std::mem::take(&mut c.ports),
                    new: Vec::new(),
                });
                false
            });
        }
        out
    }
}
