//! Plans as text (for a terminal, optionally coloured), Markdown (for a pull-request
//! comment) and JSON (see [`super::json`]).

use std::fmt::Write as _;

use super::{Action, Plan};

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const CYAN: &str = "\x1b[36m";

fn short(id: &gix::ObjectId) -> String {
    id.to_hex_with_len(12).to_string()
}

fn range(p: &Plan) -> String {
    match &p.base {
        Some(b) => format!("{}..{}", short(b), short(&p.head)),
        None => format!("(nothing)..{}", short(&p.head)),
    }
}

fn counts(p: &Plan) -> String {
    format!(
        "{} added, {} changed, {} removed, {} unchanged",
        p.count(Action::Added),
        p.count(Action::Changed),
        p.count(Action::Removed),
        p.unchanged
    )
}

fn sign(a: Action) -> &'static str {
    match a {
        Action::Added => "+",
        Action::Changed => "~",
        Action::Removed => "-",
    }
}

impl Plan {
    /// Text for a terminal; `color` adds ANSI colours.
    pub fn render_text(&self, color: bool) -> String {
        let paint = |code: &str, s: &str| {
            if color {
                format!("{code}{s}{RESET}")
            } else {
                s.to_owned()
            }
        };
        let mut out = String::new();
        if !self.is_valid() {
            let n = self.errors.len();
            let _ = writeln!(
                out,
                "{}",
                paint(
                    &format!("{BOLD}{RED}"),
                    &format!(
                        "commit {} is rejected: {n} error{}",
                        short(&self.head),
                        if n == 1 { "" } else { "s" }
                    )
                )
            );
            for e in &self.errors {
                let _ = writeln!(out, "  {e}");
            }
            return out;
        }
        let _ = writeln!(
            out,
            "{}",
            paint(
                BOLD,
                &format!(
                    "kommit plan {}: commit is valid; {}",
                    range(self),
                    counts(self)
                )
            )
        );
        for c in &self.changes {
            let head_color = match c.action {
                Action::Added => GREEN,
                Action::Changed => YELLOW,
                Action::Removed => RED,
            };
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{} ({})",
                paint(
                    &format!("{BOLD}{head_color}"),
                    &format!("{} {} {}", sign(c.action), c.key, c.action.as_str())
                ),
                c.source
            );
            for line in c.diff.lines() {
                let painted = if line.starts_with("+++") || line.starts_with("---") {
                    paint(BOLD, line)
                } else if line.starts_with('+') {
                    paint(GREEN, line)
                } else if line.starts_with('-') {
                    paint(RED, line)
                } else if line.starts_with("@@") {
                    paint(CYAN, line)
                } else {
                    line.to_owned()
                };
                let _ = writeln!(out, "    {painted}");
            }
        }
        let _ = writeln!(out);
        if self.rollout.is_empty() {
            let _ = writeln!(out, "{}", paint(BOLD, "Rollout: nothing to do"));
        } else {
            let _ = writeln!(out, "{}", paint(BOLD, "Rollout:"));
            for r in &self.rollout {
                let _ = writeln!(out, "  {} {}: {}", sign(r.action), r.key, r.summary);
            }
        }
        out
    }

    /// Markdown for a pull-request comment: one collapsible section per object.
    pub fn render_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### kommit plan `{}`", range(self));
        let _ = writeln!(out);
        if !self.is_valid() {
            let n = self.errors.len();
            let _ = writeln!(
                out,
                "**Rejected**: {n} error{}. Nothing of this commit would be applied.",
                if n == 1 { "" } else { "s" }
            );
            let _ = writeln!(out);
            let _ = writeln!(out, "```text");
            for e in &self.errors {
                let _ = writeln!(out, "{e}");
            }
            let _ = writeln!(out, "```");
            return out;
        }
        let _ = writeln!(out, "**Valid.** {}.", counts(self));
        for c in &self.changes {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "<details><summary><code>{}</code> {} {} (<code>{}</code>)</summary>",
                sign(c.action),
                escape_html(&c.key.to_string()),
                c.action.as_str(),
                escape_html(&c.source)
            );
            let _ = writeln!(out);
            let fence = if c.diff.contains("```") {
                "~~~~"
            } else {
                "```"
            };
            let _ = writeln!(out, "{fence}diff");
            out.push_str(&c.diff);
            if !c.diff.ends_with('\n') {
                out.push('\n');
            }
            let _ = writeln!(out, "{fence}");
            let _ = writeln!(out);
            let _ = writeln!(out, "</details>");
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "#### Rollout");
        let _ = writeln!(out);
        if self.rollout.is_empty() {
            let _ = writeln!(out, "Nothing to do.");
        }
        for r in &self.rollout {
            let _ = writeln!(out, "- `{}` **{}**: {}", sign(r.action), r.key, r.summary);
        }
        out
    }

    /// JSON, schema `kommit.plan/v1` (see [`super::json`]), pretty-printed.
    pub fn render_json(&self) -> String {
        let mut s =
            serde_json::to_string_pretty(&super::json::JsonPlan::new(self)).unwrap_or_default();
        s.push('\n');
        s
    }
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
