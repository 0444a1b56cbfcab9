/// Why a size (`--memory`, `--size`, `spec.memory`) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("'{input}' is not a size (want e.g. 512MB, 4GB)")]
    NotASize { input: String },
    #[error("'{input}': unknown size unit '{unit}' (use k, m, g, t)")]
    UnknownUnit { input: String, unit: String },
    #[error("'{input}' is out of range")]
    OutOfRange { input: String },
}

/// `512MB`, `1g`, `2GiB` → bytes (binary multiples, as Docker's -m); a bare
/// number is `bare_unit` bytes.
pub fn parse_size(s: &str, bare_unit: u64) -> Result<u64, SizeError> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| SizeError::NotASize { input: s.into() })?;
    let mult: u64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" if unit.is_empty() => bare_unit,
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => {
            return Err(SizeError::UnknownUnit {
                input: s.into(),
                unit: unit.into(),
            })
        }
    };
    if !n.is_finite() || n < 0.0 || n * mult as f64 > 1e18 {
        return Err(SizeError::OutOfRange { input: s.into() });
    }
    #[allow(clippy::cast_possible_truncation)] // checked above, rounded down
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_what_was_given() {
        assert_eq!(
            parse_size("lots", 1).unwrap_err().to_string(),
            "'lots' is not a size (want e.g. 512MB, 4GB)"
        );
        assert_eq!(
            parse_size("5x", 1).unwrap_err().to_string(),
            "'5x': unknown size unit 'x' (use k, m, g, t)"
        );
        assert_eq!(
            parse_size("1.2.3g", 1).unwrap_err(),
            SizeError::NotASize {
                input: "1.2.3g".into()
            }
        );
        assert_eq!(
            parse_size("99999999t", 1).unwrap_err().to_string(),
            "'99999999t' is out of range"
        );
    }
}
