//! An in-memory observed store that applies [`Action`]s with the same compare-and-swap
//! rules as the executor applies them to the cache: one global revision, each write
//! sets the object's `resourceVersion` to it. For simulations and tests.

use std::collections::BTreeMap;

use crate::action::Action;
use crate::object::{Object, ObjectError};
use crate::state::Observed;

/// Why an action was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The key exists (create) or moved on since it was read (update/delete).
    #[error("conflict on {key}: expected revision {expected:?}, found {found:?}")]
    Conflict {
        /// The etcd key.
        key: String,
        /// Revision the action expected (`None`: must not exist).
        expected: Option<i64>,
        /// Revision found (`None`: does not exist).
        found: Option<i64>,
    },
    /// The object cannot be keyed.
    #[error(transparent)]
    Object(#[from] ObjectError),
}

/// Observed objects by etcd key.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    revision: i64,
    objects: BTreeMap<String, Object>,
}

impl MemoryStore {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current global revision.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Writes an object unconditionally (seeding fixtures, a simulated node agent).
    pub fn put(&mut self, mut object: Object) -> Result<i64, ApplyError> {
        let key = object.key()?.to_key();
        self.revision += 1;
        object.metadata_mut().resource_version = Some(self.revision.to_string());
        self.objects.insert(key, object);
        Ok(self.revision)
    }

    /// The object at an etcd key.
    pub fn get(&self, key: &str) -> Option<&Object> {
        self.objects.get(key)
    }

    /// All objects, in key order.
    pub fn objects(&self) -> impl Iterator<Item = (&String, &Object)> {
        self.objects.iter()
    }

    fn current(&self, key: &str) -> Option<i64> {
        self.objects.get(key).and_then(Object::mod_revision)
    }

    /// Applies one action, compare-and-swap.
    pub fn apply(&mut self, action: &Action) -> Result<(), ApplyError> {
        match action {
            Action::Create(o) => {
                let key = o.key()?.to_key();
                if let Some(found) = self.current(&key) {
                    return Err(ApplyError::Conflict {
                        key,
                        expected: None,
                        found: Some(found),
                    });
                }
                self.put(o.clone())?;
            }
            Action::Update(o) | Action::WriteStatus(o) => {
                let key = o.key()?.to_key();
                let expected = o.mod_revision();
                let found = self.current(&key);
                if expected != found {
                    return Err(ApplyError::Conflict {
                        key,
                        expected,
                        found,
                    });
                }
                self.put(o.clone())?;
            }
            Action::Delete { key, mod_revision } => {
                let k = key.to_key();
                let found = self.current(&k);
                match (mod_revision, found) {
                    (_, None) => {}
                    (Some(e), Some(f)) if *e != f => {
                        return Err(ApplyError::Conflict {
                            key: k,
                            expected: Some(*e),
                            found: Some(f),
                        });
                    }
                    _ => {
                        self.revision += 1;
                        self.objects.remove(&k);
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies actions as the executor does: writes in order, then the events whose
    /// write succeeded. Returns the failed writes (the rest are applied); events that
    /// fail or are dropped are not reported.
    pub fn apply_all(&mut self, actions: &[Action]) -> Vec<ApplyError> {
        let anchors = crate::action::event_anchors(actions);
        let mut ok = vec![false; actions.len()];
        let mut errors = Vec::new();
        for (i, a) in actions.iter().enumerate() {
            if a.is_event() {
                continue;
            }
            match self.apply(a) {
                Ok(()) => ok[i] = true,
                Err(e) => errors.push(e),
            }
        }
        for (i, a) in actions.iter().enumerate() {
            if a.is_event() && anchors[i].is_none_or(|j| ok[j]) {
                let _ = self.apply(a);
            }
        }
        errors
    }

    /// A snapshot for the controllers.
    pub fn observed(&self) -> Observed {
        Observed::from_objects(self.objects.values().cloned())
    }
}
