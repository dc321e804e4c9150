//! What a commit changes: objects added, changed and removed between two snapshots, with
//! a YAML diff of each, and what the rollout will do.

pub mod json;
mod render;
mod rollout;

use std::collections::BTreeSet;

use gix::ObjectId;
use serde::Serialize;

use crate::error::{Rejection, ValidationError};
use crate::object::{DesiredObject, ObjectKey};
use crate::snapshot::Snapshot;

/// What happens to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// New in the head commit.
    Added,
    /// In both, with different contents.
    Changed,
    /// Gone from the head commit.
    Removed,
}

impl Action {
    /// `added`, `changed`, `removed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Added => "added",
            Action::Changed => "changed",
            Action::Removed => "removed",
        }
    }
}

/// One object that the commit adds, changes or removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The object.
    pub key: ObjectKey,
    /// Added, changed or removed.
    pub action: Action,
    /// Where it is defined (`path:line` in the head commit; in the base for a removal).
    pub source: String,
    /// Unified diff of the object's YAML (keys sorted), base to head.
    pub diff: String,
}

/// What the rollout does for one changed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutStep {
    /// The object.
    pub key: ObjectKey,
    /// Added, changed or removed.
    pub action: Action,
    /// One sentence: "3 pods replaced, rolling with maxSurge 1 and maxUnavailable 0".
    pub summary: String,
}

/// The plan of a commit: its validation result, object changes and rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The base commit (None: planned from nothing).
    pub base: Option<ObjectId>,
    /// The head commit.
    pub head: ObjectId,
    /// Validation errors of the head commit; non-empty means rejected (and no changes).
    pub errors: Vec<ValidationError>,
    /// Objects added, changed, removed, ordered by key.
    pub changes: Vec<Change>,
    /// Objects the same in both.
    pub unchanged: usize,
    /// What the rollout does, one step per change, ordered by key.
    pub rollout: Vec<RolloutStep>,
}

impl Plan {
    /// The plan of a rejected head commit: its errors, nothing to roll out.
    pub fn rejected(base: Option<ObjectId>, rejection: &Rejection) -> Plan {
        Plan {
            base,
            head: rejection.commit,
            errors: rejection.errors.clone(),
            changes: Vec::new(),
            unchanged: 0,
            rollout: Vec::new(),
        }
    }

    /// Whether the head commit is valid.
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    /// How many changes of an action.
    pub fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }
}

/// Compares two snapshots. `old` None plans the head from nothing.
pub fn plan(old: Option<&Snapshot>, new: &Snapshot) -> Plan {
    let empty = std::collections::BTreeMap::new();
    let old_objects = old.map_or(&empty, |o| &o.objects);
    let keys: BTreeSet<&ObjectKey> = old_objects.keys().chain(new.objects.keys()).collect();
    let mut changes = Vec::new();
    let mut rollout = Vec::new();
    let mut unchanged = 0;
    for key in keys {
        let before = old_objects.get(key).map(|o| o.as_ref());
        let after = new.objects.get(key).map(|o| o.as_ref());
        let (action, source) = match (before, after) {
            (None, Some(a)) => (Action::Added, source(a)),
            (Some(b), None) => (Action::Removed, source(b)),
            (Some(b), Some(a)) => {
                if b.object.to_json() == a.object.to_json() {
                    unchanged += 1;
                    continue;
                }
                (Action::Changed, source(a))
            }
            (None, None) => continue,
        };
        let old_yaml = before.map(normalized_yaml).unwrap_or_default();
        let new_yaml = after.map(normalized_yaml).unwrap_or_default();
        let diff = unified(&old_yaml, &new_yaml, key);
        rollout.push(RolloutStep {
            key: key.clone(),
            action,
            summary: rollout::summary(action, before, after, new),
        });
        changes.push(Change {
            key: key.clone(),
            action,
            source,
            diff,
        });
    }
    Plan {
        base: old.map(|o| o.commit),
        head: new.commit,
        errors: Vec::new(),
        changes,
        unchanged,
        rollout,
    }
}

fn source(o: &DesiredObject) -> String {
    format!("{}:{}", o.provenance.path, o.provenance.line)
}

/// A JSON value serialised with every mapping's keys sorted.
struct Sorted<'a>(&'a serde_json::Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut map = s.serialize_map(Some(keys.len()))?;
                for k in keys {
                    if let Some(v) = m.get(k) {
                        map.serialize_entry(k, &Sorted(v))?;
                    }
                }
                map.end()
            }
            serde_json::Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(&Sorted(v))?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}

/// The object as YAML with sorted keys: reordering fields in a manifest changes nothing.
pub fn normalized_yaml(o: &DesiredObject) -> String {
    let json = o.object.to_json();
    serde_saphyr::to_string(&Sorted(&json)).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

fn unified(old: &str, new: &str, key: &ObjectKey) -> String {
    let name = format!(
        "{}/{}/{}",
        key.kind,
        key.namespace.as_deref().unwrap_or("-"),
        key.name
    );
    let diff = similar::TextDiff::from_lines(old, new);
    let mut u = diff.unified_diff();
    u.context_radius(3)
        .header(&format!("a/{name}"), &format!("b/{name}"));
    u.to_string()
}
