//! `--host`: the same commands answered by a daemon over its API, printed
//! by the same code as the in-process path.

use ignis_api::VmRecord;
use ignis_core::{Error, ErrorKind};
use ignis_daemon::client::{Client, Reply};

use crate::cli::{Command, InspectFormat, ListFormat};
use crate::output;

/// A non-2xx reply as the error the in-process path would have raised
/// (so exit codes match).
fn check(r: Reply) -> anyhow::Result<Vec<u8>> {
    if (200..300).contains(&r.status) {
        return Ok(r.body);
    }
    let kind = match r.status {
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        400 | 413 => ErrorKind::Invalid,
        401 | 403 | 503 => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    };
    Err(Error::new(kind, r.problem()).into())
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn run(host: &str, command: Command) -> anyhow::Result<i32> {
    let c = Client::new(host, std::env::var("IGNIS_TOKEN").ok())?;
    let get = |path: &str| check(c.request("GET", path, None)?);
    let post = |path: &str, body: Option<(Vec<u8>, &str)>| check(c.request("POST", path, body)?);
    match command {
        Command::Ps { all, filter, list } => {
            let vms: Vec<VmRecord> = serde_json::from_slice(&get(&format!("/v1/vms?all={all}"))?)?;
            super::vm::print_ps(vms, &filter, &list)?;
        }
        Command::Inspect { vm, output: fmt } => {
            let v: VmRecord = serde_json::from_slice(&get(&format!("/v1/vms/{}", enc(&vm)))?)?;
            output::inspect(fmt, &v)?;
        }
        Command::Start { vms, .. } => {
            for v in vms {
                let r: VmRecord =
                    serde_json::from_slice(&post(&format!("/v1/vms/{}/start", enc(&v)), None)?)?;
                println!("{}", r.id);
            }
        }
        Command::Stop { vms, time } => {
            for v in vms {
                let r: VmRecord = serde_json::from_slice(&post(
                    &format!("/v1/vms/{}/stop?time={time}", enc(&v)),
                    None,
                )?)?;
                println!("{}", r.id);
            }
        }
        Command::Rm { vms, force } => {
            for v in vms {
                let r: serde_json::Value = serde_json::from_slice(&check(c.request(
                    "DELETE",
                    &format!("/v1/vms/{}?force={force}", enc(&v)),
                    None,
                )?)?)?;
                println!("{}", r["id"].as_str().unwrap_or(""));
            }
        }
        Command::Kill { vms } => {
            for v in vms {
                let r: VmRecord =
                    serde_json::from_slice(&post(&format!("/v1/vms/{}/kill", enc(&v)), None)?)?;
                println!("{}", r.id);
            }
        }
        Command::Logs { vm, follow: false } => {
            use std::io::Write;
            std::io::stdout().write_all(&get(&format!("/v1/vms/{}/logs", enc(&vm)))?)?;
        }
        Command::Snapshot(crate::cli::SnapshotArgs {
            command: None,
            vm: Some(vm),
            name,
            ..
        }) => {
            let q = name
                .map(|n| format!("?name={}", enc(&n)))
                .unwrap_or_default();
            let s: ignis_api::SnapshotRecord =
                serde_json::from_slice(&post(&format!("/v1/vms/{}/snapshot{q}", enc(&vm)), None)?)?;
            println!("{}", s.id);
        }
        Command::Fork {
            source,
            count,
            name_prefix,
            rm,
            ..
        } => {
            let t = std::time::Instant::now();
            let mut q = format!("?count={count}&rm={rm}");
            if let Some(p) = name_prefix {
                q.push_str(&format!("&prefix={}", enc(&p)));
            }
            let r: serde_json::Value = serde_json::from_slice(&post(
                &format!("/v1/snapshots/{}/fork{q}", enc(&source)),
                None,
            )?)?;
            let clones = r["clones"].as_array().cloned().unwrap_or_default();
            for c in &clones {
                println!("{}", c["id"].as_str().unwrap_or(""));
            }
            eprintln!(
                "{} clone(s) of {} running after {} ms",
                clones.len(),
                r["snapshot"]["name"].as_str().unwrap_or(""),
                t.elapsed().as_millis()
            );
        }
        Command::Apply { file, output: fmt } => {
            // Parsed and validated here first: a bad file is reported with
            // its path, as in-process.
            let mut docs = Vec::new();
            for f in &file {
                for m in ignis_core::manifest::read_path(f)? {
                    docs.push(serde_yaml::to_string(&m)?);
                }
            }
            let body = docs.join("---\n");
            let results: Vec<ignis_core::manifest::Applied> = serde_json::from_slice(&post(
                "/v1/apply",
                Some((body.into_bytes(), "application/yaml")),
            )?)?;
            return super::manifest::report(&results, fmt);
        }
        Command::Get {
            kind,
            name,
            output: fmt,
        } if kind.eq_ignore_ascii_case("vm") => {
            let m: serde_json::Value =
                serde_json::from_slice(&get(&format!("/v1/manifests/vms/{}", enc(&name)))?)?;
            output::inspect(fmt, &m)?;
        }
        other => {
            let name = format!("{other:?}");
            let name = name
                .split([' ', '(', '{'])
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            return Err(Error::new(
                ErrorKind::Invalid,
                format!("`{name}` is not available through --host yet (ps, inspect, start, stop, kill, rm, logs without -f, snapshot VM, fork, apply, get are)"),
            )
            .into());
        }
    }
    let _ = (ListFormat::Table, InspectFormat::Json);
    Ok(0)
}
