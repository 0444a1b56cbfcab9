//! Finding a network configuration: `*.conflist` files (a plugin chain), and
//! `*.conf`/`*.json` single-plugin files wrapped into a one-element list, in
//! file-name order as libcni reads them; the first one is the default.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::CniError;

/// A network configuration list, as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfig {
    pub name: String,
    pub cni_version: String,
    /// Each plugin's configuration object (with `type`).
    pub plugins: Vec<Value>,
}

impl NetworkConfig {
    /// Whether some plugin of the chain declares `capability`.
    pub fn has_capability(&self, capability: &str) -> bool {
        self.plugins
            .iter()
            .any(|p| super::exec::has_capability(p, capability))
    }

    /// Parses a `.conflist` (`list`) or a single plugin's configuration.
    pub fn parse(bytes: &[u8], list: bool, path: &Path) -> Result<Self, CniError> {
        let bad = |reason: String| CniError::BadConfig {
            path: path.to_path_buf(),
            reason,
        };
        let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let name = v["name"]
            .as_str()
            .ok_or_else(|| bad("no \"name\"".into()))?
            .to_string();
        let cni_version = v["cniVersion"].as_str().unwrap_or("0.4.0").to_string();
        let plugins = if list {
            v["plugins"]
                .as_array()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| bad("no \"plugins\"".into()))?
                .clone()
        } else {
            vec![v]
        };
        for p in &plugins {
            match p["type"].as_str() {
                Some(t) if super::valid_network_name(t) => {}
                _ => return Err(bad("a plugin without a valid \"type\"".into())),
            }
        }
        Ok(Self {
            name,
            cni_version,
            plugins,
        })
    }
}

/// The network `name` from `dir` (`None`: the first file's).
pub fn load(dir: &Path, name: Option<&str>) -> Result<NetworkConfig, CniError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| CniError::Read(dir.to_path_buf(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
        .collect();
    files.sort();
    let mut first_error = None;
    for f in &files {
        let bytes = std::fs::read(f).map_err(|e| CniError::Read(f.clone(), e))?;
        let list = f.extension().and_then(|e| e.to_str()) == Some("conflist");
        match NetworkConfig::parse(&bytes, list, f) {
            Ok(c) if name.is_none_or(|n| n == c.name) => return Ok(c),
            Ok(_) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    // A broken file is the answer only when it might have been the one.
    match (name, first_error) {
        (_, Some(e)) if name.is_none() => Err(e),
        (Some(n), _) => Err(CniError::NoNetwork {
            name: n.to_string(),
            dir: dir.to_path_buf(),
        }),
        (None, _) => Err(CniError::NoConfig(dir.to_path_buf())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_name_and_defaults_to_the_first_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("10-a.conflist"),
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("20-b.conf"),
            r#"{"cniVersion":"0.4.0","name":"b","type":"ptp"}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("README"), "not a config").unwrap();
        let a = load(d.path(), None).unwrap();
        assert_eq!(a.name, "a");
        assert_eq!(a.plugins.len(), 2);
        let b = load(d.path(), Some("b")).unwrap();
        assert_eq!(b.cni_version, "0.4.0");
        assert_eq!(b.plugins[0]["type"], "ptp");
        assert!(matches!(
            load(d.path(), Some("c")),
            Err(CniError::NoNetwork { .. })
        ));
    }

    #[test]
    fn rejects_what_is_not_a_configuration() {
        let p = Path::new("x.conflist");
        for bad in [
            r#"{"plugins":[{"type":"bridge"}]}"#,
            r#"{"name":"n","plugins":[]}"#,
            r#"{"name":"n","plugins":[{"type":"../../bin/sh"}]}"#,
            "not json",
        ] {
            assert!(
                NetworkConfig::parse(bad.as_bytes(), true, p).is_err(),
                "{bad}"
            );
        }
    }
}
