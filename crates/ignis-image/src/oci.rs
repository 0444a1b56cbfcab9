//! The OCI and Docker JSON documents ignis reads: image index, manifest,
//! image config, and `docker save`'s `manifest.json`. Only the fields ignis
//! uses are declared; unknown fields are ignored as the specs require.

use ignis_api::ImageConfig;
use serde::Deserialize;
use std::collections::BTreeMap;

pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// The most JSON ignis reads for one document (manifests and configs are
/// kilobytes; this bounds what a hostile archive or registry can make us hold).
pub const MAX_JSON: u64 = 8 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    #[serde(default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// `docker save`'s `manifest.json` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerSaveEntry {
    pub config: String,
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    pub layers: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<RunConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

impl ConfigFile {
    pub fn image_config(&self) -> ImageConfig {
        let c = self.config.clone().unwrap_or_default();
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        ImageConfig {
            entrypoint: c.entrypoint,
            cmd: c.cmd,
            env: c.env.unwrap_or_default(),
            working_dir: nonempty(c.working_dir),
            user: nonempty(c.user),
            exposed_ports: c
                .exposed_ports
                .map(|p| p.into_keys().collect())
                .unwrap_or_default(),
            stop_signal: nonempty(c.stop_signal),
            labels: c.labels.unwrap_or_default(),
        }
    }
}

pub fn is_index(media_type: Option<&str>, json: &serde_json::Value) -> bool {
    matches!(media_type, Some(MT_OCI_INDEX | MT_DOCKER_LIST))
        || (json.get("manifests").is_some() && json.get("layers").is_none())
}

/// Picks the linux/amd64 manifest of an index (or its only entry).
pub fn pick_platform(manifests: &[Descriptor]) -> Option<&Descriptor> {
    let images: Vec<&Descriptor> = manifests
        .iter()
        .filter(|d| {
            // Skip attestation manifests (buildx adds `unknown/unknown`).
            d.platform
                .as_ref()
                .map(|p| p.os != "unknown")
                .unwrap_or(true)
        })
        .collect();
    images
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .copied()
        .or(if images.len() == 1 {
            Some(images[0])
        } else {
            None
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_config_keeps_what_the_vm_layer_needs() {
        let cfg: ConfigFile = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/sh","-c"],
            "Cmd":["echo hi"],"Env":["PATH=/bin"],"WorkingDir":"/srv","User":"1000:1000",
            "ExposedPorts":{"80/tcp":{},"53/udp":{}},"Labels":{"a":"b"},"StopSignal":"SIGQUIT"},
            "rootfs":{"type":"layers","diff_ids":["sha256:00"]},"history":[]}"#,
        )
        .unwrap();
        let c = cfg.image_config();
        assert_eq!(c.entrypoint.unwrap(), ["/bin/sh", "-c"]);
        assert_eq!(c.cmd.unwrap(), ["echo hi"]);
        assert_eq!(c.env, ["PATH=/bin"]);
        assert_eq!(c.working_dir.as_deref(), Some("/srv"));
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.exposed_ports, ["53/udp", "80/tcp"]);
        assert_eq!(c.stop_signal.as_deref(), Some("SIGQUIT"));
    }

    #[test]
    fn pick_platform_prefers_linux_amd64_and_skips_attestations() {
        let idx: Index = serde_json::from_str(
            r#"{"manifests":[
              {"digest":"sha256:arm","platform":{"os":"linux","architecture":"arm64"}},
              {"digest":"sha256:amd","platform":{"os":"linux","architecture":"amd64"}},
              {"digest":"sha256:att","platform":{"os":"unknown","architecture":"unknown"}}]}"#,
        )
        .unwrap();
        assert_eq!(pick_platform(&idx.manifests).unwrap().digest, "sha256:amd");
        assert_eq!(
            pick_platform(&idx.manifests[..1]).unwrap().digest,
            "sha256:arm"
        );
        assert!(pick_platform(&idx.manifests[..0]).is_none());
    }
}
