//! ADD, CHECK and DEL of one network configuration list for one interface,
//! as the CNI spec's "network configuration list runtime" describes: each
//! plugin gets its configuration on stdin with `name`, `cniVersion` and the
//! previous plugin's result as `prevResult`; DEL walks the chain backwards
//! with the cached ADD result.
//!
//! Runtime arguments go by the CNI capability convention as libcni passes
//! them: a plugin whose configuration declares `"capabilities":
//! {"portMappings": true}` gets `runtimeConfig.portMappings` on ADD, CHECK
//! and DEL (the same list each time, kept in the attachment record), the
//! others get nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{CniError, CniResult, NetworkConfig};

/// A CNI verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Check,
    Del,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Check => "CHECK",
            Self::Del => "DEL",
        }
    }
}

/// The `portMappings` capability's name.
pub const PORT_MAPPINGS: &str = "portMappings";

/// One entry of `runtimeConfig.portMappings` (CNI CONVENTIONS.md): no
/// `hostIP` is every host address of both families.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapEntry {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// One interface of one container (VM) on one network: everything DEL
/// needs, kept on disk from before ADD until DEL succeeded, so a crash in
/// between is repaired by `system prune`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    pub config: NetworkConfig,
    pub bin_dirs: Vec<PathBuf>,
    /// ADD's result (the chain's last), once ADD succeeded.
    #[serde(default)]
    pub result: Option<Value>,
    /// The VM's published ports, for the plugins with the `portMappings`
    /// capability.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapEntry>,
}

impl Attachment {
    /// Runs ADD over the chain; keeps and returns the result.
    pub fn add(&mut self) -> Result<CniResult, CniError> {
        let mut prev: Option<Value> = None;
        for p in &self.config.plugins {
            let out = self.invoke(Command::Add, p, prev.as_ref())?;
            prev = Some(out);
        }
        let last = prev.unwrap_or(Value::Null);
        let plugin = self.last_plugin();
        let result = CniResult::parse(&last).map_err(|reason| CniError::BadResult {
            plugin,
            command: "ADD",
            reason,
        })?;
        self.result = Some(last);
        Ok(result)
    }

    /// Runs CHECK over the chain (spec 0.4.0 and later; earlier: nothing).
    pub fn check(&self) -> Result<(), CniError> {
        if self.config.cni_version.starts_with("0.3") || self.config.cni_version.starts_with("0.2")
        {
            return Ok(());
        }
        let addrs = self
            .result
            .as_ref()
            .and_then(|r| CniResult::parse(r).ok())
            .and_then(|r| r.for_interface(&self.ifname).map(|(_, a)| a))
            .unwrap_or_default();
        for p in &self.config.plugins {
            match self.invoke(Command::Check, p, self.result.as_ref()) {
                Err(e) if portmap_check_bug(&e, &addrs) => {
                    tracing::warn!(network = %self.config.name, error = %e, "portmap's IPv6 CHECK failed; before v1.3.0 it fails whenever ip6tables works (containernetworking/plugins fb5d195f), so it is not held against the VM");
                }
                r => {
                    r?;
                }
            }
        }
        Ok(())
    }

    /// Runs DEL over the chain, last plugin first.
    pub fn del(&self) -> Result<(), CniError> {
        for p in self.config.plugins.iter().rev() {
            self.invoke(Command::Del, p, self.result.as_ref())?;
        }
        Ok(())
    }

    /// What `plugin` gets as `runtimeConfig`: as libcni, the runtime's
    /// arguments for each capability it declares (replacing any
    /// `runtimeConfig` of its own); `None` when there are none.
    fn runtime_config(&self, plugin: &Value) -> Option<Value> {
        if self.port_mappings.is_empty() || !has_capability(plugin, PORT_MAPPINGS) {
            return None;
        }
        Some(serde_json::json!({ PORT_MAPPINGS: self.port_mappings }))
    }

    fn last_plugin(&self) -> String {
        self.config
            .plugins
            .last()
            .and_then(|p| p["type"].as_str())
            .unwrap_or_default()
            .to_string()
    }

    fn find(&self, plugin: &str) -> Result<PathBuf, CniError> {
        self.bin_dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| CniError::NoPlugin {
                plugin: plugin.to_string(),
                dirs: join(&self.bin_dirs),
            })
    }

    /// Runs one plugin: returns its stdout as JSON (`Null` for an empty
    /// answer, which DEL and CHECK give).
    fn invoke(
        &self,
        cmd: Command,
        plugin: &Value,
        prev: Option<&Value>,
    ) -> Result<Value, CniError> {
        let kind = plugin["type"].as_str().unwrap_or_default().to_string();
        let bin = self.find(&kind)?;
        let mut conf = plugin.clone();
        conf["name"] = Value::String(self.config.name.clone());
        conf["cniVersion"] = Value::String(self.config.cni_version.clone());
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        if let Some(rc) = self.runtime_config(plugin) {
            conf["runtimeConfig"] = rc;
        }
        let mut child = std::process::Command::new(&bin)
            .env("CNI_COMMAND", cmd.as_str())
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_NETNS", &self.netns)
            .env("CNI_IFNAME", &self.ifname)
            .env("CNI_ARGS", "")
            .env("CNI_PATH", join(&self.bin_dirs))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| CniError::Spawn(bin.clone(), e))?;
        let stdin = serde_json::to_vec(&conf).expect("json");
        if let Some(mut s) = child.stdin.take() {
            // A plugin that exits without reading is judged by its status.
            let _ = s.write_all(&stdin);
        }
        let out = child
            .wait_with_output()
            .map_err(|e| CniError::Spawn(bin.clone(), e))?;
        let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        if !out.status.success() {
            let (code, msg) = match &parsed {
                Some(v) => (
                    v["code"]
                        .as_u64()
                        .and_then(|c| u32::try_from(c).ok())
                        .unwrap_or(999),
                    [v["msg"].as_str(), v["details"].as_str()]
                        .into_iter()
                        .flatten()
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(": "),
                ),
                None => (999, String::from_utf8_lossy(&out.stderr).trim().to_string()),
            };
            return Err(CniError::Plugin {
                plugin: kind,
                command: cmd.as_str(),
                code,
                msg,
            });
        }
        match (cmd, parsed) {
            (Command::Add, Some(v)) if v.is_object() => Ok(v),
            (Command::Add, _) => Err(CniError::BadResult {
                plugin: kind,
                command: "ADD",
                reason: "stdout is not a JSON object".into(),
            }),
            (_, v) => Ok(v.unwrap_or(Value::Null)),
        }
    }
}

/// portmap before v1.3.0 (Debian 12's 1.1.1) checks its rules for each
/// address of the VM in both iptables and ip6tables (fixed upstream by
/// fb5d195f, "Only check ipv6 when an IPv6 is configured"), so its CHECK
/// fails once ip6tables works: "could not check ipv6 dnat" for the IPv4
/// address's rules, "could not check ipv4 dnat" for the IPv6 address's (the
/// message names it) or with no IPv4 address at all. Those failures, and
/// only those, are let through: the IPv4 rules were checked in iptables
/// before; the IPv6 ones go unchecked there.
fn portmap_check_bug(e: &CniError, addrs: &super::Addresses) -> bool {
    let CniError::Plugin { plugin, msg, .. } = e else {
        return false;
    };
    if plugin != "portmap" {
        return false;
    }
    if msg.starts_with("could not check ipv6 dnat") {
        return true;
    }
    msg.starts_with("could not check ipv4 dnat")
        && (addrs.v4.is_none() || addrs.v6.is_some_and(|(a, ..)| msg.contains(&a.to_string())))
}

/// Whether a plugin's configuration declares `capability` (`true` in its
/// `capabilities` object).
pub fn has_capability(plugin: &Value, capability: &str) -> bool {
    plugin["capabilities"][capability].as_bool() == Some(true)
}

fn join(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// The bin directories to search: the given one, else the defaults that
/// exist.
pub fn bin_dirs(given: Option<&Path>) -> Vec<PathBuf> {
    match given {
        Some(d) => vec![d.to_path_buf()],
        None => super::DEFAULT_BIN_DIRS
            .iter()
            .map(PathBuf::from)
            .filter(|d| d.is_dir())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fake plugin: logs its environment and stdin, answers ADD with a
    /// result naming the previous one, fails when told to.
    const PLUGIN: &str = r#"#!/bin/sh
conf=$(cat)
dir=$(dirname "$0")
echo "$(basename "$0") $CNI_COMMAND $CNI_CONTAINERID $CNI_NETNS $CNI_IFNAME $CNI_PATH $conf" >> "$dir/log"
case "$conf" in *'"fail":true'*)
  echo '{"cniVersion":"1.0.0","code":7,"msg":"no luck","details":"asked to fail"}'; exit 1;;
esac
if [ "$CNI_COMMAND" = CHECK ]; then
  case "$conf" in *'"checkFails":"v'[46]'"'*)
    fam=$(echo "$conf" | sed 's/.*"checkFails":"v\([46]\)".*/\1/')
    echo '{"cniVersion":"1.0.0","code":999,"msg":"could not check ipv'$fam' dnat: chain CNI-DN-1 not found in iptables table nat"}'; exit 1;;
  esac
fi
if [ "$CNI_COMMAND" = ADD ]; then
  echo '{"cniVersion":"1.0.0","interfaces":[{"name":"'"$CNI_IFNAME"'","mac":"02:00:00:00:00:09","sandbox":"'"$CNI_NETNS"'"}],"ips":[{"interface":0,"address":"10.9.0.7/24","gateway":"10.9.0.1"}],"from":"'"$(basename "$0")"'"}'
fi
"#;

    fn setup(fail_second: bool) -> (tempfile::TempDir, Attachment) {
        let d = tempfile::tempdir().unwrap();
        for p in ["first", "second", "third", "portmap"] {
            let path = d.path().join(p);
            std::fs::write(&path, PLUGIN).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut second = serde_json::json!({"type": "second"});
        if fail_second {
            second["fail"] = true.into();
        }
        let att = Attachment {
            container_id: "vm1".into(),
            netns: "/run/netns/ignis-vm1".into(),
            ifname: "eth0".into(),
            config: NetworkConfig {
                name: "test".into(),
                cni_version: "1.0.0".into(),
                plugins: vec![
                    serde_json::json!({"type": "first", "ipam": {"type": "x"}}),
                    second,
                ],
            },
            bin_dirs: vec![d.path().to_path_buf()],
            result: None,
            port_mappings: vec![],
        };
        (d, att)
    }

    fn log(d: &tempfile::TempDir) -> Vec<String> {
        std::fs::read_to_string(d.path().join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn add_check_del_follow_the_chain_with_env_and_prev_result() {
        let (d, mut att) = setup(false);
        let r = att.add().unwrap();
        let (iface, ip) = r.for_interface("eth0").unwrap();
        assert_eq!(iface.mac, "02:00:00:00:00:09");
        assert_eq!(
            ip.v4.unwrap().0,
            "10.9.0.7".parse::<std::net::Ipv4Addr>().unwrap()
        );
        assert_eq!(att.result.as_ref().unwrap()["from"], "second");
        att.check().unwrap();
        att.del().unwrap();
        let log = log(&d);
        let verbs: Vec<String> = log
            .iter()
            .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            verbs,
            [
                "first ADD",
                "second ADD",
                "first CHECK",
                "second CHECK",
                "second DEL",
                "first DEL"
            ]
        );
        let dir = d.path().display().to_string();
        assert!(log[0].starts_with(&format!("first ADD vm1 /run/netns/ignis-vm1 eth0 {dir} {{")));
        // Name and version added to each plugin's own configuration.
        assert!(log[0].contains(r#""name":"test""#) && log[0].contains(r#""cniVersion":"1.0.0""#));
        assert!(log[0].contains(r#""ipam":{"type":"x"}"#));
        assert!(!log[0].contains("prevResult"));
        // The second gets the first's result; DEL gets the cached final one.
        assert!(log[1].contains(r#""prevResult":{"#) && log[1].contains(r#""from":"first""#));
        assert!(log[4].contains(r#""from":"second""#));
    }

    #[test]
    fn a_plugin_error_is_reported_with_its_code_and_message() {
        let (_d, mut att) = setup(true);
        let e = att.add().unwrap_err();
        assert_eq!(
            e.to_string(),
            "CNI plugin second ADD failed (code 7): no luck: asked to fail"
        );
        assert!(att.result.is_none());
    }

    #[test]
    fn a_missing_plugin_names_where_it_was_looked_for() {
        let (d, mut att) = setup(false);
        att.config.plugins[0]["type"] = "absent".into();
        let e = att.add().unwrap_err();
        assert!(matches!(e, CniError::NoPlugin { .. }));
        assert!(e.to_string().contains(&d.path().display().to_string()));
    }

    /// The `portMappings` capability: only the plugin declaring it gets
    /// `runtimeConfig.portMappings`, on ADD, CHECK and DEL, DEL from the
    /// record on disk (as `rm` or `system prune` reads it).
    #[test]
    fn port_mappings_go_to_the_plugins_with_the_capability_only() {
        let (d, mut att) = setup(false);
        att.config.plugins[1]["capabilities"] = serde_json::json!({"portMappings": true});
        att.config.plugins.push(serde_json::json!({
            "type": "third",
            "capabilities": {"portMappings": false, "bandwidth": true},
            "runtimeConfig": {"portMappings": [{"hostPort": 1}]}
        }));
        att.port_mappings = vec![
            PortMapEntry {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: None,
            },
            PortMapEntry {
                host_port: 5353,
                container_port: 53,
                protocol: "udp".into(),
                host_ip: Some("127.0.0.1".into()),
            },
        ];
        att.add().unwrap();
        att.check().unwrap();
        let saved = serde_json::to_vec(&att).unwrap();
        let back: Attachment = serde_json::from_slice(&saved).unwrap();
        back.del().unwrap();
        let want = serde_json::json!([
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}
        ]);
        let mut seen = Vec::new();
        for line in log(&d) {
            let (head, conf) = line.split_at(line.find('{').unwrap());
            let conf: Value = serde_json::from_str(conf).unwrap();
            let mut words = head.split(' ');
            let (plugin, verb) = (words.next().unwrap(), words.next().unwrap());
            let rc = &conf["runtimeConfig"];
            match plugin {
                "second" => assert_eq!(rc["portMappings"], want, "{verb}: {line}"),
                // Not declared: nothing; declared false: its own config
                // untouched.
                "first" => assert!(rc.is_null(), "{line}"),
                _ => assert_eq!(rc["portMappings"][0]["hostPort"], 1, "{line}"),
            }
            seen.push(format!("{plugin} {verb}"));
        }
        assert_eq!(
            seen,
            [
                "first ADD",
                "second ADD",
                "third ADD",
                "first CHECK",
                "second CHECK",
                "third CHECK",
                "third DEL",
                "second DEL",
                "first DEL"
            ]
        );
        // No ports: no runtimeConfig even for the plugin with the
        // capability.
        std::fs::remove_file(d.path().join("log")).unwrap();
        att.port_mappings.clear();
        att.del().unwrap();
        assert!(log(&d)
            .iter()
            .all(|l| !l.starts_with("second") || !l.contains("runtimeConfig")));
    }

    /// portmap < 1.3.0's CHECK fails on ip6tables for an IPv4 address:
    /// that failure only is let through; its IPv4 one, or another
    /// plugin's, is not.
    #[test]
    fn portmaps_known_ipv6_check_failure_is_let_through() {
        let (_d, mut att) = setup(false);
        att.config.plugins[1] = serde_json::json!({"type": "portmap", "checkFails": "v6"});
        att.add().unwrap();
        att.check().unwrap();
        att.config.plugins[1]["checkFails"] = "v4".into();
        let e = att.check().unwrap_err();
        assert!(e.to_string().contains("could not check ipv4 dnat"), "{e}");
        att.config.plugins[1] = serde_json::json!({"type": "second", "checkFails": "v6"});
        let e = att.check().unwrap_err();
        assert!(
            e.to_string().contains("CNI plugin second CHECK failed"),
            "{e}"
        );
    }

    #[test]
    fn an_attachment_survives_a_round_trip_to_disk() {
        let (_d, mut att) = setup(false);
        att.add().unwrap();
        let back: Attachment = serde_json::from_slice(&serde_json::to_vec(&att).unwrap()).unwrap();
        assert_eq!(back, att);
    }
}
