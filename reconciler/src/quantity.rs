//! Kubernetes resource quantities (`100m`, `1.5`, `128Mi`, `1G`, `2e3`) as integers.
//!
//! The scheduler compares CPU in millicores and memory in bytes; like Kubernetes'
//! `MilliValue()` / `Value()`, fractions are rounded up.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A quantity string that is not a Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {0:?}")]
pub struct QuantityError(pub String);

/// The quantity in thousandths of its unit, rounded up (`"100m"` → 100, `"1"` → 1000,
/// `"1Ki"` → 1_024_000).
pub fn parse_milli(q: &str) -> Result<i128, QuantityError> {
    let err = || QuantityError(q.to_string());
    let s = q.trim();
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(num_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(err());
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    let digits = format!("{int_part}{frac_part}");
    if digits.len() > 30 {
        return Err(err());
    }
    let mantissa: i128 = digits.parse().map_err(|_| err())?;
    // value = mantissa * 10^(-frac) * base^pow ; we want value * 1000.
    let mut exp10: i32 = 3 - frac_part.len() as i32;
    let mut binary_pow: u32 = 0;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => binary_pow = 1,
        "Mi" => binary_pow = 2,
        "Gi" => binary_pow = 3,
        "Ti" => binary_pow = 4,
        "Pi" => binary_pow = 5,
        "Ei" => binary_pow = 6,
        s if s.starts_with(['e', 'E']) => {
            let e: i32 = s[1..].parse().map_err(|_| err())?;
            if !(-40..=40).contains(&e) {
                return Err(err());
            }
            exp10 += e;
        }
        _ => return Err(err()),
    }
    let mut v = mantissa;
    for _ in 0..binary_pow {
        v = v.checked_mul(1024).ok_or_else(err)?;
    }
    if exp10 >= 0 {
        for _ in 0..exp10 {
            v = v.checked_mul(10).ok_or_else(err)?;
        }
    } else {
        let div = 10i128.checked_pow(exp10.unsigned_abs()).ok_or_else(err)?;
        // Round up, as Kubernetes' MilliValue does.
        v = (v + div - 1) / div;
    }
    Ok(if negative { -v } else { v })
}

/// CPU in millicores.
pub fn cpu_millis(q: &Quantity) -> Result<i64, QuantityError> {
    clamp(parse_milli(&q.0)?)
}

/// Memory (or any countable quantity) in whole units, rounded up.
pub fn value(q: &Quantity) -> Result<i64, QuantityError> {
    let milli = parse_milli(&q.0)?;
    clamp(milli.div_euclid(1000) + i128::from(milli.rem_euclid(1000) != 0))
}

fn clamp(v: i128) -> Result<i64, QuantityError> {
    i64::try_from(v).map_err(|_| QuantityError(format!("{v} out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.to_string())
    }

    #[test]
    fn parses_kubernetes_quantities() {
        assert_eq!(cpu_millis(&q("100m")).unwrap(), 100);
        assert_eq!(cpu_millis(&q("1")).unwrap(), 1000);
        assert_eq!(cpu_millis(&q("1.5")).unwrap(), 1500);
        assert_eq!(cpu_millis(&q("0.0001")).unwrap(), 1); // rounded up
        assert_eq!(cpu_millis(&q("250000n")).unwrap(), 1); // rounded up
        assert_eq!(cpu_millis(&q("2e3")).unwrap(), 2_000_000);
        assert_eq!(value(&q("128Mi")).unwrap(), 128 * 1024 * 1024);
        assert_eq!(value(&q("1G")).unwrap(), 1_000_000_000);
        assert_eq!(value(&q("1.5Gi")).unwrap(), 1536 * 1024 * 1024);
        assert_eq!(value(&q("100m")).unwrap(), 1);
        assert_eq!(value(&q("110")).unwrap(), 110);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "abc", "1.2.3", "10Qi", "1e", ".", "1e99"] {
            assert!(parse_milli(bad).is_err(), "{bad}");
        }
    }
}
