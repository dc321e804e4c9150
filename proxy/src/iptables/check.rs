//! A checker for `iptables-restore` input: every rule is added to a chain that exists,
//! every `-j`/`-g` target is a chain that exists or a built-in target, no deleted chain
//! is still a target, and every table is committed. Used by the tests on generated input;
//! cheap enough to run on every sync in debug builds.

use std::collections::{HashMap, HashSet};

/// Targets provided by iptables itself (extensions), not chains.
pub const BUILTIN_TARGETS: &[&str] = &[
    "ACCEPT",
    "DROP",
    "RETURN",
    "QUEUE",
    "REJECT",
    "DNAT",
    "SNAT",
    "MASQUERADE",
    "REDIRECT",
    "MARK",
    "CONNMARK",
    "LOG",
    "NOTRACK",
    "CT",
    "TPROXY",
];

/// The built-in chains of a table.
pub fn builtin_chains(table: &str) -> &'static [&'static str] {
    match table {
        "filter" => &["INPUT", "FORWARD", "OUTPUT"],
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        "raw" => &["PREROUTING", "OUTPUT"],
        _ => &[],
    }
}

/// One problem, with the 1-based line of the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Checks `input`; `existing` lists, per table, the user chains already on the host
/// (empty for a fresh host). Returns every problem found.
pub fn check_restore_input(
    input: &str,
    existing: &HashMap<String, HashSet<String>>,
) -> Vec<CheckError> {
    let mut errors = Vec::new();
    let mut table: Option<String> = None;
    let mut chains: HashSet<String> = HashSet::new();
    let mut deleted: HashSet<String> = HashSet::new();
    let mut targets: Vec<(usize, String)> = Vec::new();
    let mut err = |line: usize, message: String| errors.push(CheckError { line, message });
    for (i, line) in input.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            if table.is_some() {
                err(
                    n,
                    format!("table {name} starts before the previous table's COMMIT"),
                );
            }
            table = Some(name.to_owned());
            chains = existing.get(name).cloned().unwrap_or_default();
            deleted.clear();
            targets.clear();
            continue;
        }
        let Some(tname) = table.clone() else {
            err(n, "line outside a table".into());
            continue;
        };
        let builtin = builtin_chains(&tname);
        if line == "COMMIT" {
            for (tn, t) in targets.drain(..) {
                if deleted.contains(&t) {
                    err(tn, format!("target {t} is deleted (-X) in the same input"));
                }
            }
            table = None;
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            if let Some(name) = decl.split_whitespace().next() {
                if name.len() > 28 {
                    err(n, format!("chain name {name} is longer than 28 characters"));
                }
                chains.insert(name.to_owned());
            }
            continue;
        }
        let words = super::save::split_words(line);
        let (Some(op), Some(chain)) = (words.first(), words.get(1)) else {
            err(n, format!("cannot read {line:?}"));
            continue;
        };
        match op.as_str() {
            "-A" | "-I" | "-D" | "-R" => {
                if !builtin.contains(&chain.as_str()) && !chains.contains(chain) {
                    err(
                        n,
                        format!("{op} into chain {chain}, which is not defined in table {tname}"),
                    );
                }
                if let Some(target) = super::save::rule_target(&words) {
                    if builtin.contains(&target) {
                        err(n, format!("target {target} is a built-in chain"));
                    } else if !BUILTIN_TARGETS.contains(&target) && !chains.contains(target) {
                        err(
                            n,
                            format!(
                                "target {target} is neither a built-in target nor a chain defined in table {tname}"
                            ),
                        );
                    } else if op != "-D" {
                        targets.push((n, target.to_owned()));
                    }
                }
            }
            "-X" => {
                if !chains.contains(chain) {
                    err(
                        n,
                        format!("-X of chain {chain}, which is not defined in table {tname}"),
                    );
                }
                deleted.insert(chain.clone());
            }
            "-F" | "-N" => {
                chains.insert(chain.clone());
            }
            other => err(n, format!("unexpected command {other}")),
        }
    }
    if let Some(t) = table {
        err(input.lines().count(), format!("table {t} has no COMMIT"));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_undefined_targets_and_chains() {
        let input = "*nat\n:A - [0:0]\n-A A -j B\n-A C -j ACCEPT\n-A A -j PREROUTING\n-A PREROUTING -j A\nCOMMIT\n";
        let errs = check_restore_input(input, &HashMap::new());
        let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4, 5], "{errs:?}");
    }

    #[test]
    fn accepts_existing_chains_and_flags_deleted_targets() {
        let mut existing = HashMap::new();
        existing.insert(
            "nat".to_owned(),
            HashSet::from(["OLD".to_owned(), "KEEP".to_owned()]),
        );
        let ok = "*nat\n-A KEEP -j ACCEPT\n-D KEEP -j OLD\n:OLD - [0:0]\n-X OLD\nCOMMIT\n";
        assert!(check_restore_input(ok, &existing).is_empty());
        let bad = "*nat\n-A KEEP -j OLD\n-X OLD\nCOMMIT\n";
        assert_eq!(check_restore_input(bad, &existing).len(), 1);
        assert_eq!(
            check_restore_input("*nat\n:X - [0:0]\n", &existing).len(),
            1
        );
    }
}
