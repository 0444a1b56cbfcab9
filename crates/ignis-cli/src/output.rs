//! Tables, JSON/YAML and `--format` templates, as Docker prints them.

use serde::Serialize;

use crate::cli::{InspectFormat, ListFormat, ListOpts};

/// Prints rows as an aligned table (columns padded, three spaces apart).
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Renders a `--format` template: `{{.Field}}` takes a field of the row's
/// JSON (case-insensitive, camelCase or PascalCase; `.A.B` a field of a
/// field), `{{json .}}` the whole row; `\t` and `\n` escapes are honoured.
pub fn template(fmt: &str, value: &serde_json::Value) -> String {
    let mut out = String::new();
    let mut rest = fmt;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let expr = rest[start + 2..start + end].trim();
        if expr == "json ." {
            out.push_str(&value.to_string());
        } else if let Some(path) = expr.strip_prefix('.') {
            // `.Spec.Network.Ip`: fields of fields, as Go templates.
            let found = path.split('.').try_fold(value, |v, field| {
                v.as_object().and_then(|o| {
                    o.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(field))
                        .map(|(_, v)| v)
                })
            });
            match found {
                Some(serde_json::Value::String(s)) => out.push_str(s),
                Some(serde_json::Value::Array(a)) => out.push_str(
                    &a.iter()
                        .map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string()))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                Some(v) => out.push_str(&v.to_string()),
                None => out.push_str("<no value>"),
            }
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out.replace("\\t", "\t").replace("\\n", "\n")
}

/// Prints a list in the requested form: `rows` for the table, `items` for
/// JSON and templates.
pub fn list<T: Serialize>(
    opts: &ListOpts,
    headers: &[&str],
    rows: Vec<Vec<String>>,
    items: &[T],
    ids: Vec<String>,
) -> anyhow::Result<()> {
    list_with(opts, headers, rows, items, None, ids)
}

/// [`list`], with what templates see when it is not the items as JSON.
pub fn list_with<T: Serialize>(
    opts: &ListOpts,
    headers: &[&str],
    rows: Vec<Vec<String>>,
    items: &[T],
    template_items: Option<&[serde_json::Value]>,
    ids: Vec<String>,
) -> anyhow::Result<()> {
    if opts.ids_only {
        for id in ids {
            println!("{id}");
        }
        return Ok(());
    }
    if let Some(fmt) = &opts.format {
        match template_items {
            Some(values) => values.iter().for_each(|v| println!("{}", template(fmt, v))),
            None => {
                for item in items {
                    println!("{}", template(fmt, &serde_json::to_value(item)?));
                }
            }
        }
        return Ok(());
    }
    match opts.output {
        ListFormat::Table => table(headers, &rows),
        ListFormat::Json => println!("{}", serde_json::to_string_pretty(items)?),
    }
    Ok(())
}

pub fn inspect<T: Serialize>(format: InspectFormat, item: &T) -> anyhow::Result<()> {
    match format {
        InspectFormat::Json => println!("{}", serde_json::to_string_pretty(item)?),
        InspectFormat::Yaml => print!("{}", serde_yaml::to_string(item)?),
    }
    Ok(())
}

/// `1.5MB`, as Docker prints sizes: decimal units, three significant digits.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    format!("{s}{}", UNITS[u])
}

/// `5 minutes ago`.
pub fn ago(unix: i64) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let d = (now - unix).max(0);
    match d {
        0..=59 => "Less than a minute ago".to_string(),
        60..=3599 => plural(d / 60, "minute"),
        3600..=86_399 => plural(d / 3600, "hour"),
        _ => plural(d / 86_400, "day"),
    }
}

fn plural(n: i64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit} ago")
    } else {
        format!("{n} {unit}s ago")
    }
}

/// When this command started (the origin of its timeline): the process's
/// own start on the monotonic clock, so `--timings` includes the CLI's
/// start-up.
pub fn started_ns() -> u64 {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *START.get_or_init(ignis_core::timing::now_ns)
}

/// Phases with when each began and how long it took, on stderr.
pub fn phases(timings: &[ignis_api::PhaseTiming]) {
    let ms = |us: u64| format!("{:.1}", us as f64 / 1000.0);
    let mut out = format!("{:<16} {:>10} {:>10}\n", "PHASE", "AT (ms)", "TOOK (ms)");
    for p in timings {
        out.push_str(&format!(
            "{:<16} {:>10} {:>10}\n",
            p.phase,
            ms(p.at_us),
            ms(p.took_us)
        ));
    }
    eprint!("{out}");
}

/// `--timings`: where the time of a start went, on stderr. One VM: each
/// phase with when it began and how long it took; several (a fork): the
/// median and the slowest per phase.
pub fn timings(vms: &[ignis_api::VmRecord]) {
    let ms = |us: u64| format!("{:.1}", us as f64 / 1000.0);
    let mut out = String::new();
    if let [vm] = vms {
        phases(&vm.status.timings);
        return;
    } else {
        let mut phases: Vec<&str> = Vec::new();
        for vm in vms {
            for p in &vm.status.timings {
                if !phases.contains(&p.phase.as_str()) {
                    phases.push(&p.phase);
                }
            }
        }
        out.push_str(&format!(
            "{:<16} {:>6} {:>14} {:>14} {:>14}\n",
            "PHASE", "VMS", "MEDIAN AT", "MEDIAN TOOK", "MAX TOOK"
        ));
        for name in phases {
            let mut took: Vec<u64> = Vec::new();
            let mut at: Vec<u64> = Vec::new();
            for p in vms
                .iter()
                .flat_map(|v| &v.status.timings)
                .filter(|p| p.phase == name)
            {
                took.push(p.took_us);
                at.push(p.at_us);
            }
            took.sort_unstable();
            at.sort_unstable();
            out.push_str(&format!(
                "{:<16} {:>6} {:>14} {:>14} {:>14}\n",
                name,
                took.len(),
                ms(at[at.len() / 2]),
                ms(took[took.len() / 2]),
                ms(*took.last().unwrap_or(&0))
            ));
        }
    }
    eprint!("{out}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_fills_fields_case_insensitively() {
        let v = serde_json::json!({"id": "sha256:ab", "names": ["a", "b"], "diskSize": 5});
        assert_eq!(
            template("{{.ID}}\\t{{.Names}} {{.disksize}} {{.Nope}}", &v),
            "sha256:ab\ta,b 5 <no value>"
        );
        assert_eq!(
            template("{{json .}}", &serde_json::json!({"a": 1})),
            r#"{"a":1}"#
        );
        let vm = serde_json::json!({"spec": {"network": {"ip": "10.0.0.2"}}});
        assert_eq!(
            template("{{.Spec.Network.IP}} {{.Spec.Nope.X}}", &vm),
            "10.0.0.2 <no value>"
        );
    }

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(size(999), "999B");
        assert_eq!(size(1_500_000), "1.5MB");
        assert_eq!(size(4_264_000), "4.26MB");
        assert_eq!(size(4_000_000_000), "4GB");
    }
}
