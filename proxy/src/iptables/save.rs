//! Reading `iptables-save` output and `iptables-restore` input: the chains a table has
//! and, per rule, its chain and target.

/// One table as `iptables-save` printed it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedTable {
    /// Every chain, built-in or not, in the order printed.
    pub chains: Vec<String>,
    pub rules: Vec<SavedRule>,
}

/// One `-A CHAIN ...` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedRule {
    pub chain: String,
    /// Everything after `-A CHAIN `, as printed (usable with `-D CHAIN <spec>`).
    pub spec: String,
    /// The `-j` or `-g` target, if any.
    pub target: Option<String>,
}

/// Splits a rule line into words the way iptables-restore does: double quotes group
/// words, a backslash escapes the next character.
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// The `-j`/`--jump` or `-g`/`--goto` target of a rule's words.
pub fn rule_target(words: &[String]) -> Option<&str> {
    words
        .windows(2)
        .find(|w| matches!(w[0].as_str(), "-j" | "--jump" | "-g" | "--goto"))
        .map(|w| w[1].as_str())
}

/// Parses `iptables-save -t TABLE` output (one table).
pub fn parse_save(text: &str) -> SavedTable {
    let mut table = SavedTable::default();
    for line in text.lines() {
        if let Some(decl) = line.strip_prefix(':') {
            if let Some(name) = decl.split_whitespace().next() {
                table.chains.push(name.to_owned());
            }
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
            let words = split_words(spec);
            table.rules.push(SavedRule {
                chain: chain.to_owned(),
                spec: spec.to_owned(),
                target: rule_target(&words).map(str::to_owned),
            });
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_quoted_comments_and_finds_targets() {
        let w = split_words(r#"-m comment --comment "a \"b\" c" -j KOMMIT-SERVICES"#);
        assert_eq!(
            w,
            [
                "-m",
                "comment",
                "--comment",
                "a \"b\" c",
                "-j",
                "KOMMIT-SERVICES"
            ]
        );
        assert_eq!(rule_target(&w), Some("KOMMIT-SERVICES"));
        assert_eq!(rule_target(&split_words("-g X")), Some("X"));
        assert_eq!(rule_target(&split_words("-p tcp")), None);
    }

    #[test]
    fn parses_save_output() {
        let t = parse_save(
            "# Generated\n*nat\n:PREROUTING ACCEPT [0:0]\n:KOMMIT-SERVICES - [0:0]\n\
             -A PREROUTING -m comment --comment \"kommit service portals\" -j KOMMIT-SERVICES\nCOMMIT\n",
        );
        assert_eq!(t.chains, ["PREROUTING", "KOMMIT-SERVICES"]);
        assert_eq!(t.rules.len(), 1);
        assert_eq!(t.rules[0].chain, "PREROUTING");
        assert_eq!(t.rules[0].target.as_deref(), Some("KOMMIT-SERVICES"));
        assert_eq!(
            t.rules[0].spec,
            "-m comment --comment \"kommit service portals\" -j KOMMIT-SERVICES"
        );
    }
}
