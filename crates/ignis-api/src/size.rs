/// `512MB`, `1g`, `2GiB` → bytes (binary multiples, as Docker's -m); a bare
/// number is `bare_unit` bytes.
pub fn parse_size(s: &str, bare_unit: u64) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (want e.g. 512MB, 4GB)"))?;
    let mult: u64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" if unit.is_empty() => bare_unit,
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => {
            return Err(format!(
                "'{s}': unknown size unit '{unit}' (use k, m, g, t)"
            ))
        }
    };
    if !n.is_finite() || n < 0.0 || n * mult as f64 > 1e18 {
        return Err(format!("'{s}' is out of range"));
    }
    #[allow(clippy::cast_possible_truncation)] // checked above, rounded down
    Ok((n * mult as f64) as u64)
}
