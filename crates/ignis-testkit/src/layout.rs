use std::path::Path;

use anyhow::Context as _;
use serde_json::json;

use crate::sha256;

/// An image to write: layers (uncompressed tarballs) and its run config.
#[derive(Debug, Clone, Default)]
pub struct ImageSpec {
    pub layers: Vec<Vec<u8>>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    /// Compress layers with gzip (as registries serve them).
    pub gzip: bool,
    /// Reference name for the index annotation / RepoTags.
    pub name: Option<String>,
}

/// Writes images as OCI layouts or docker-save archives.
pub struct OciWriter;

struct Written {
    manifest: Vec<u8>,
    config: Vec<u8>,
    layers: Vec<Vec<u8>>,
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).expect("gzip");
    gz.finish().expect("gzip")
}

fn render(spec: &ImageSpec) -> Written {
    let diff_ids: Vec<String> = spec.layers.iter().map(|l| sha256(l)).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": spec.entrypoint,
            "Cmd": spec.cmd,
            "Env": spec.env,
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("json");
    let layers: Vec<Vec<u8>> = spec
        .layers
        .iter()
        .map(|l| if spec.gzip { gzip(l) } else { l.clone() })
        .collect();
    let media = if spec.gzip {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar"
    };
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(&config), "size": config.len()},
        "layers": layers.iter().map(|l| json!({"mediaType": media, "digest": sha256(l), "size": l.len()}))
            .collect::<Vec<_>>(),
    }))
    .expect("json");
    Written {
        manifest,
        config,
        layers,
    }
}

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

impl OciWriter {
    /// The files of an OCI layout, as (path, bytes).
    pub fn oci_files(spec: &ImageSpec) -> Vec<(String, Vec<u8>)> {
        let w = render(spec);
        let mut annotations = serde_json::Map::new();
        if let Some(n) = &spec.name {
            annotations.insert("org.opencontainers.image.ref.name".into(), json!(n));
        }
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": sha256(&w.manifest), "size": w.manifest.len(),
                           "annotations": annotations}],
        }))
        .expect("json");
        let mut files = vec![
            (
                "oci-layout".to_string(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            ("index.json".to_string(), index),
            (blob_path(&sha256(&w.manifest)), w.manifest.clone()),
            (blob_path(&sha256(&w.config)), w.config.clone()),
        ];
        for l in w.layers {
            files.push((blob_path(&sha256(&l)), l));
        }
        files
    }

    /// The files of a classic `docker save` archive.
    pub fn docker_save_files(spec: &ImageSpec) -> Vec<(String, Vec<u8>)> {
        let w = render(spec);
        let config_name = format!("{}.json", sha256(&w.config).trim_start_matches("sha256:"));
        let mut files = vec![(config_name.clone(), w.config.clone())];
        let mut layer_names = Vec::new();
        for (i, l) in spec.layers.iter().enumerate() {
            let name = format!("layer{i}/layer.tar");
            files.push((name.clone(), l.clone()));
            layer_names.push(name);
        }
        let manifest = serde_json::to_vec(&json!([{
            "Config": config_name,
            "RepoTags": spec.name.iter().collect::<Vec<_>>(),
            "Layers": layer_names,
        }]))
        .expect("json");
        files.push(("manifest.json".to_string(), manifest));
        files
    }

    pub fn write_dir(files: &[(String, Vec<u8>)], dir: &Path) -> anyhow::Result<()> {
        for (path, data) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().expect("parent"))?;
            std::fs::write(&p, data).with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(())
    }

    pub fn write_tar(files: &[(String, Vec<u8>)], out: &Path) -> anyhow::Result<()> {
        let f =
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut b = tar::Builder::new(f);
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, &data[..])?;
        }
        b.finish()?;
        Ok(())
    }

    /// An OCI layout whose single layer is the tree at `rootfs` (for
    /// benchmarks and demos: build an image from a directory).
    pub fn layout_from_dir(
        rootfs: &Path,
        out: &Path,
        name: &str,
        cmd: &[String],
    ) -> anyhow::Result<()> {
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        b.append_dir_all(".", rootfs)
            .with_context(|| format!("archiving {}", rootfs.display()))?;
        let layer = b.into_inner()?;
        let spec = ImageSpec {
            layers: vec![layer],
            cmd: (!cmd.is_empty()).then(|| cmd.to_vec()),
            name: Some(name.to_string()),
            gzip: true,
            ..Default::default()
        };
        Self::write_dir(&Self::oci_files(&spec), out)
    }
}
