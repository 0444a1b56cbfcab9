//! `ignis events`: what happens to VMs and the daemon's reconcilers, one
//! line per event as it happens (Docker's `docker events`).

use std::io::Write;

use anyhow::{bail, Context};
use ignis_api::{Event, EventFilter};

use crate::cli::{EventsArgs, ListFormat};
use crate::engine::Engine;
use crate::output;

pub fn run(ignis: &dyn Engine, a: EventsArgs) -> anyhow::Result<()> {
    let now = now();
    let mut filter = EventFilter {
        since: a
            .since
            .as_deref()
            .map(|t| when(t, now, "--since"))
            .transpose()?,
        until: a
            .until
            .as_deref()
            .map(|t| when(t, now, "--until"))
            .transpose()?,
        ..Default::default()
    };
    for f in &a.filter {
        let Some((key, value)) = f.split_once('=') else {
            bail!("--filter {f}: expected KEY=VALUE (type=start, object=vm, name=web)");
        };
        if value.is_empty() {
            bail!("--filter {f}: the value is empty");
        }
        match key {
            "type" | "event" => filter.kinds.push(value.into()),
            "object" => filter.objects.push(value.into()),
            "name" | "vm" => filter.names.push(value.into()),
            _ => bail!("--filter {f}: unknown key {key:?} (known: type, object, name)"),
        }
    }
    if let (Some(s), Some(u)) = (filter.since, filter.until) {
        if u < s {
            bail!("--until is before --since: no event can match");
        }
    }
    let mut out = std::io::stdout().lock();
    ignis.events(&filter, &mut |e: &Event| {
        let line = match (&a.format, a.output) {
            (Some(f), _) => output::template(f, &serde_json::to_value(e).unwrap_or_default()),
            (None, ListFormat::Json) => serde_json::to_string(e).unwrap_or_default(),
            (None, ListFormat::Table) => human(e),
        };
        writeln!(out, "{line}")?;
        // Each event as it happens, also into a pipe.
        out.flush()
    })?;
    Ok(())
}

/// Docker's line: time, object, type, name, and what the record says.
fn human(e: &Event) -> String {
    let time = ignis_api::time::rfc3339::format(e.time).unwrap_or_else(|| e.time.to_string());
    let mut line = format!("{time} {} {} {}", e.object, e.kind, e.name);
    if let Some(m) = &e.message {
        line.push_str(&format!(" ({m})"));
    }
    line
}

/// A time as `--since`/`--until` take it: RFC 3339, Unix seconds, or an
/// age (`90s`, `10m`, `2h`, `1d`) before `now`, as Unix seconds.
pub fn when(s: &str, now: i64, flag: &str) -> anyhow::Result<i64> {
    when_ns(s, now.saturating_mul(1_000_000_000))
        .map(|ns| ns.div_euclid(1_000_000_000))
        .with_context(|| {
            format!("{flag} {s}: expected an RFC 3339 time, Unix seconds or an age such as 10m")
        })
}

/// The same forms as Unix nanoseconds (`logs --since` too): Unix seconds
/// may have a fraction, ages are humantime's (`1h30m`, `500ms`).
pub fn when_ns(s: &str, now_ns: i64) -> Option<i64> {
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return i64::try_from(t.unix_timestamp_nanos()).ok();
    }
    if let Ok(secs) = s.parse::<f64>() {
        #[allow(clippy::cast_possible_truncation)] // within i64 until 2262
        return secs.is_finite().then_some((secs * 1e9) as i64);
    }
    let age = humantime::parse_duration(s).ok()?;
    Some(now_ns.saturating_sub(i64::try_from(age.as_nanos()).unwrap_or(i64::MAX)))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_unix_seconds_or_ages() {
        assert_eq!(when("1970-01-01T00:01:40Z", 0, "--since").unwrap(), 100);
        assert_eq!(when("100", 0, "--since").unwrap(), 100);
        assert_eq!(when("10m", 1000, "--since").unwrap(), 400);
        let e = when("yesterday", 0, "--since").unwrap_err().to_string();
        assert!(e.contains("--since yesterday"), "{e}");
    }
}
