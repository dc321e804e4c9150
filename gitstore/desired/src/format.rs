//! Value formats Kubernetes requires: DNS names, label keys and values, port names,
//! quantities. Each returns `Err(reason)` with a sentence for the user.

fn is_alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// RFC 1123 label: at most 63 of `a-z0-9-`, starting and ending alphanumeric.
pub fn dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 63 {
        return Err(format!("`{s}` is longer than 63 characters"));
    }
    let ok = s.chars().all(|c| is_alnum_lower(c) || c == '-')
        && s.starts_with(is_alnum_lower)
        && s.ends_with(is_alnum_lower);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a DNS-1123 label (lower-case letters, digits and '-', starting and ending with a letter or digit)"
        ))
    }
}

/// RFC 1123 subdomain: at most 253 characters, dot-separated labels.
pub fn dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 253 {
        return Err(format!("`{s}` is longer than 253 characters"));
    }
    let ok = s.split('.').all(|part| {
        !part.is_empty()
            && part.chars().all(|c| is_alnum_lower(c) || c == '-')
            && part.starts_with(is_alnum_lower)
            && part.ends_with(is_alnum_lower)
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit)"
        ))
    }
}

/// A name usable as a path segment (RBAC objects): not `.`/`..`, no `/` or `%`.
pub fn path_segment(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s == "." || s == ".." || s.contains('/') || s.contains('%') {
        return Err(format!(
            "`{s}` may not be '.' or '..' nor contain '/' or '%'"
        ));
    }
    Ok(())
}

fn qualified_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A label or annotation key: `[prefix/]name`, prefix a DNS subdomain, name at most 63
/// of `A-Za-z0-9-_.` starting and ending alphanumeric.
pub fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix
        && dns_subdomain(p).is_err()
    {
        return Err(format!(
            "key `{s}`: prefix `{p}` is not a DNS-1123 subdomain"
        ));
    }
    if !qualified_part(name) {
        return Err(format!(
            "key `{s}` is not a qualified name (at most 63 of letters, digits, '-', '_' and '.', starting and ending with a letter or digit, with an optional DNS prefix and '/')"
        ));
    }
    Ok(())
}

/// A label value: empty, or at most 63 of `A-Za-z0-9-_.` starting and ending alphanumeric.
pub fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || qualified_part(s) {
        Ok(())
    } else {
        Err(format!(
            "label value `{s}` is not valid (at most 63 of letters, digits, '-', '_' and '.', starting and ending with a letter or digit)"
        ))
    }
}

/// A port name (IANA_SVC_NAME): at most 15 of `a-z0-9-`, with a letter, no `--`, not
/// starting or ending with `-`.
pub fn port_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.chars().all(|c| is_alnum_lower(c) || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.contains("--")
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a valid port name (at most 15 of lower-case letters, digits and '-', with at least one letter)"
        ))
    }
}

/// A ConfigMap or Secret key: at most 253 of `A-Za-z0-9-_.`.
pub fn config_key(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s != "."
        && s != "..";
    if ok {
        Ok(())
    } else {
        Err(format!(
            "key `{s}` is not valid (at most 253 of letters, digits, '-', '_' and '.')"
        ))
    }
}

/// Parses a Kubernetes quantity (`100m`, `1.5Gi`, `2e3`, `128974848`) into its value.
pub fn quantity(s: &str) -> Result<f64, String> {
    let bad = || {
        format!(
            "`{s}` is not a quantity (a number with an optional suffix: m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, or an exponent like e3)"
        )
    };
    let t = s.trim();
    if t.is_empty() || t != s {
        return Err(bad());
    }
    let (sign, rest) = match t.as_bytes()[0] {
        b'+' => (1.0, &t[1..]),
        b'-' => (-1.0, &t[1..]),
        _ => (1.0, t),
    };
    let num_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (num, suffix) = rest.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return Err(bad());
    }
    let value: f64 = num.parse().map_err(|_| bad())?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let e = &exp[1..];
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            let e: i32 = e.parse().map_err(|_| bad())?;
            10f64.powi(e)
        }
        _ => return Err(bad()),
    };
    Ok(sign * value * factor)
}

/// An int-or-percent value of a rollout (`1`, `25%`): the integer, or the percentage.
pub fn int_or_percent(
    v: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
) -> Result<IntOrPercent, String> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match v {
        IntOrString::Int(i) if *i >= 0 => Ok(IntOrPercent::Int(*i)),
        IntOrString::Int(i) => Err(format!("{i} must not be negative")),
        IntOrString::String(s) => match s.strip_suffix('%').map(str::parse::<u32>) {
            Some(Ok(p)) => Ok(IntOrPercent::Percent(p)),
            _ => Err(format!(
                "`{s}` is neither an integer nor a percentage like `25%`"
            )),
        },
    }
}

/// A rollout budget: absolute or relative to the replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntOrPercent {
    /// A number of pods.
    Int(i32),
    /// A percentage of the desired replicas.
    Percent(u32),
}

impl IntOrPercent {
    /// Resolves against `replicas`, rounding up (surge) or down (unavailable).
    pub fn resolve(self, replicas: i32, round_up: bool) -> i32 {
        match self {
            IntOrPercent::Int(i) => i,
            IntOrPercent::Percent(p) => {
                let x = i64::from(replicas.max(0)) * i64::from(p);
                let v = if round_up { (x + 99) / 100 } else { x / 100 };
                i32::try_from(v).unwrap_or(i32::MAX)
            }
        }
    }
}

/// A cron schedule: five fields or one of the `@` macros. Checks the shape, not each range.
pub fn cron_schedule(s: &str) -> Result<(), String> {
    let t = s.trim();
    let t = t
        .strip_prefix("TZ=")
        .or_else(|| t.strip_prefix("CRON_TZ="))
        .and_then(|rest| rest.split_once(' ').map(|(_, r)| r.trim()))
        .unwrap_or(t);
    if matches!(
        t,
        "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight" | "@hourly"
    ) {
        return Ok(());
    }
    let fields: Vec<&str> = t.split_whitespace().collect();
    let field_ok = |f: &str| {
        f.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '/' | ',' | '-' | '?'))
    };
    if fields.len() == 5 && fields.iter().all(|f| field_ok(f)) {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a cron schedule (five fields: minute hour day-of-month month day-of-week, or @hourly, @daily, ...)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns_label("web-1").is_ok());
        assert!(dns_label("Web").is_err());
        assert!(dns_label("-web").is_err());
        assert!(dns_label(&"a".repeat(64)).is_err());
        assert!(dns_subdomain("a.b-c.d").is_ok());
        assert!(dns_subdomain("a..b").is_err());
        assert!(qualified_name("app.kubernetes.io/name").is_ok());
        assert!(qualified_name("app/").is_err());
        assert!(qualified_name("bad key").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2_3").is_ok());
        assert!(label_value("-x").is_err());
        assert!(port_name("http").is_ok());
        assert!(port_name("8080").is_err());
        assert!(port_name("a--b").is_err());
        assert!(port_name("very-long-port-name").is_err());
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity("100m").ok(), Some(0.1));
        assert_eq!(quantity("1Gi").ok(), Some(1024f64.powi(3)));
        assert_eq!(quantity("2e3").ok(), Some(2000.0));
        assert_eq!(quantity("1.5").ok(), Some(1.5));
        assert!(quantity("1GB").is_err());
        assert!(quantity("lots").is_err());
        assert!(quantity("").is_err());
        assert!(quantity("1 Gi").is_err());
    }

    #[test]
    fn rollout_budgets() {
        assert_eq!(IntOrPercent::Percent(25).resolve(3, true), 1);
        assert_eq!(IntOrPercent::Percent(25).resolve(3, false), 0);
        assert_eq!(IntOrPercent::Int(2).resolve(3, false), 2);
    }

    #[test]
    fn schedules() {
        assert!(cron_schedule("*/5 * * * *").is_ok());
        assert!(cron_schedule("@hourly").is_ok());
        assert!(cron_schedule("every minute").is_err());
    }
}
