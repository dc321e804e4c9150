//! The JSON form of a plan (`kommit plan --format json`), schema `kommit.plan/v1`.
//!
//! The schema is stable: fields may be added in a later version of `v1`, never renamed
//! or removed. One JSON object, pretty-printed:
//!
//! ```text
//! {
//!   "schema": "kommit.plan/v1",
//!   "base": "<40-hex commit id>" | null,      // null: planned from nothing
//!   "head": "<40-hex commit id>",
//!   "valid": true | false,                     // false: the head commit is rejected
//!   "errors": [                                // every validation error, sorted
//!     { "path": "apps/web.yaml", "line": 12, "column": 7,
//!       "field": "spec.replicas",              // "" for an error about the whole file
//!       "message": "...",
//!       "text": "apps/web.yaml:12:7: spec.replicas: ..." }
//!   ],
//!   "summary": { "added": 1, "changed": 2, "removed": 0, "unchanged": 10 },
//!   "changes": [                               // ordered by object (group, kind, namespace, name)
//!     { "action": "added" | "changed" | "removed",
//!       "object": { "group": "apps", "kind": "Deployment",
//!                   "namespace": "shop" | null, "name": "web" },
//!       "source": "apps/web.yaml:1",           // in the head; in the base for "removed"
//!       "diff": "--- a/Deployment/shop/web\n+++ b/...\n@@ ... @@\n..." }
//!   ],
//!   "rollout": [                               // one per change, same order
//!     { "action": "changed", "object": { ... },
//!       "summary": "3 pods replaced, rolling with maxSurge 1 and maxUnavailable 0" }
//!   ]
//! }
//! ```
//!
//! `diff` is a unified diff (3 lines of context) of the object's YAML with mapping keys
//! sorted; for an added object every line is `+`, for a removed one `-`. When `valid` is
//! false, `changes` and `rollout` are empty and `summary` counts are 0.

use serde::Serialize;

use super::{Action, Plan};
use crate::error::ValidationError;
use crate::object::ObjectKey;

/// The schema name and version written in `schema`.
pub const SCHEMA: &str = "kommit.plan/v1";

#[derive(Serialize)]
pub(super) struct JsonPlan<'a> {
    schema: &'static str,
    base: Option<String>,
    head: String,
    valid: bool,
    errors: Vec<JsonError<'a>>,
    summary: Summary,
    changes: Vec<JsonChange<'a>>,
    rollout: Vec<JsonStep<'a>>,
}

#[derive(Serialize)]
struct JsonError<'a> {
    #[serde(flatten)]
    error: &'a ValidationError,
    text: String,
}

#[derive(Serialize)]
struct Summary {
    added: usize,
    changed: usize,
    removed: usize,
    unchanged: usize,
}

#[derive(Serialize)]
struct JsonChange<'a> {
    action: Action,
    object: &'a ObjectKey,
    source: &'a str,
    diff: &'a str,
}

#[derive(Serialize)]
struct JsonStep<'a> {
    action: Action,
    object: &'a ObjectKey,
    summary: &'a str,
}

impl<'a> JsonPlan<'a> {
    pub(super) fn new(p: &'a Plan) -> JsonPlan<'a> {
        JsonPlan {
            schema: SCHEMA,
            base: p.base.map(|b| b.to_string()),
            head: p.head.to_string(),
            valid: p.is_valid(),
            errors: p
                .errors
                .iter()
                .map(|e| JsonError {
                    error: e,
                    text: e.to_string(),
                })
                .collect(),
            summary: Summary {
                added: p.count(Action::Added),
                changed: p.count(Action::Changed),
                removed: p.count(Action::Removed),
                unchanged: p.unchanged,
            },
            changes: p
                .changes
                .iter()
                .map(|c| JsonChange {
                    action: c.action,
                    object: &c.key,
                    source: &c.source,
                    diff: &c.diff,
                })
                .collect(),
            rollout: p
                .rollout
                .iter()
                .map(|r| JsonStep {
                    action: r.action,
                    object: &r.key,
                    summary: &r.summary,
                })
                .collect(),
        }
    }
}
