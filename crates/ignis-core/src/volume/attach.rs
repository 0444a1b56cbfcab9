//! What VM create, start and rm do with volumes.

use std::os::unix::fs::FileTypeExt;

use ignis_api::{VmRecord, VolumeKind, VolumeMount, VolumeRecord};

use crate::vm::{Field, VolumeRequest, VolumeSource};
use crate::{Error, ErrorKind, Ignis};

/// A `-v` volume checked against the host and the state, before anything
/// is made.
pub(crate) enum Planned {
    /// Exists: mount it.
    Ready(VolumeMount),
    /// A named volume made on first use, or an anonymous one.
    Make {
        name: Option<String>,
        target: String,
        read_only: bool,
    },
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::Invalid, message).about(Field::Volumes)
}

impl Ignis {
    /// Checks each `-v` volume (a host path exists and is a file or a
    /// block device; a volume named exists or will be made): nothing is
    /// made yet.
    pub(crate) fn volumes_plan(&self, reqs: &[VolumeRequest]) -> Result<Vec<Planned>, Error> {
        let mut out = Vec::new();
        for r in reqs {
            out.push(match &r.source {
                VolumeSource::Anonymous => Planned::Make {
                    name: None,
                    target: r.target.clone(),
                    read_only: r.read_only,
                },
                VolumeSource::Named(n) => match self.volume_inspect(n) {
                    Ok(v) => Planned::Ready(mount_of(&v, &r.target, r.read_only)),
                    Err(e) if e.kind == ErrorKind::NotFound => Planned::Make {
                        name: Some(n.clone()),
                        target: r.target.clone(),
                        read_only: r.read_only,
                    },
                    Err(e) => return Err(e.about(Field::Volumes)),
                },
                VolumeSource::Host(p) => {
                    let meta = std::fs::metadata(p).map_err(|e| {
                        Error::with_source(
                            ErrorKind::Invalid,
                            format!("cannot use {} as a volume", p.display()),
                            e,
                        )
                        .about(Field::Volumes)
                    })?;
                    let kind = if meta.is_file() {
                        VolumeKind::File
                    } else if meta.file_type().is_block_device() {
                        VolumeKind::Block
                    } else {
                        return Err(invalid(format!(
                            "{} is neither a disk image file nor a block device",
                            p.display()
                        )));
                    };
                    let path = std::fs::canonicalize(p)
                        .map_err(|e| Error::internal("resolve a volume's path", e))?
                        .display()
                        .to_string();
                    Planned::Ready(VolumeMount {
                        kind,
                        source: path.clone(),
                        volume_id: None,
                        path,
                        target: r.target.clone(),
                        read_only: r.read_only,
                    })
                }
            });
        }
        // One disk attached twice is two writers of one filesystem.
        let key = |p: &Planned| match p {
            Planned::Ready(m) => Some(m.identity().to_string()),
            Planned::Make { name, .. } => name.clone(),
        };
        for (i, p) in out.iter().enumerate() {
            if let Some(k) = key(p) {
                if out[..i]
                    .iter()
                    .any(|q| key(q).as_deref() == Some(k.as_str()))
                {
                    return Err(invalid(format!("{k} is given twice")));
                }
            }
        }
        Ok(out)
    }

    /// Makes the volumes `plan` needs (anonymous ones labelled with the
    /// VM); returns the mounts and the volumes made (to undo on failure).
    pub(crate) fn volumes_make(
        &self,
        plan: Vec<Planned>,
        vm_id: &str,
        size: Option<u64>,
    ) -> Result<(Vec<VolumeMount>, Vec<VolumeRecord>), Error> {
        let mut mounts = Vec::new();
        let mut made: Vec<VolumeRecord> = Vec::new();
        for p in plan {
            let step = match p {
                Planned::Ready(m) => Ok(m),
                Planned::Make {
                    name,
                    target,
                    read_only,
                } => {
                    let anonymous = name.is_none();
                    let labels = if anonymous {
                        [(super::VM_LABEL.to_string(), vm_id.to_string())].into()
                    } else {
                        Default::default()
                    };
                    match self.volume_make(name.as_deref(), size, labels, anonymous) {
                        Ok(v) => {
                            made.push(v.clone());
                            Ok(mount_of(&v, &target, read_only))
                        }
                        // Made by someone else meanwhile: use it.
                        Err(e) if e.kind == ErrorKind::Conflict && !anonymous => self
                            .volume_inspect(name.as_deref().unwrap_or_default())
                            .map(|v| mount_of(&v, &target, read_only)),
                        Err(e) => Err(e.about(Field::Volumes)),
                    }
                }
            };
            match step {
                Ok(m) => mounts.push(m),
                Err(e) => {
                    self.volumes_undo(&made);
                    return Err(e);
                }
            }
        }
        Ok((mounts, made))
    }

    /// Removes volumes made for a VM whose create failed.
    pub(crate) fn volumes_undo(&self, made: &[VolumeRecord]) {
        for v in made {
            let _ = self.volume_delete(v);
        }
    }

    /// Refuses to start `rec` while another running VM mounts one of its
    /// volumes and either mounts it read-write.
    pub(crate) fn volumes_check_free(&self, rec: &VmRecord) -> Result<(), Error> {
        if rec.spec.volumes.is_empty() {
            return Ok(());
        }
        for other in self.vm_list(false)? {
            if other.id == rec.id {
                continue;
            }
            for mine in &rec.spec.volumes {
                let theirs = other
                    .spec
                    .volumes
                    .iter()
                    .find(|o| o.identity() == mine.identity());
                if let Some(t) = theirs {
                    if !(mine.read_only && t.read_only) {
                        return Err(Error::new(
                            ErrorKind::Conflict,
                            format!(
                                "volume {} is in use by running VM {}{}; stop it first, or mount it read-only in both (:ro)",
                                mine.source,
                                other.name,
                                if t.read_only { " (read-only)" } else { " (read-write)" }
                            ),
                        )
                        .about(Field::Volumes));
                    }
                }
            }
        }
        Ok(())
    }

    /// `rm -v`: the anonymous volumes of a removed VM go with it.
    pub(crate) fn volumes_remove_anonymous(&self, rec: &VmRecord) {
        for m in &rec.spec.volumes {
            let Some(id) = &m.volume_id else { continue };
            match self.volume_inspect(id) {
                Ok(v) if v.anonymous && v.used_by.is_empty() => {
                    if let Err(e) = self.volume_delete(&v) {
                        tracing::warn!(volume = %v.name, error = %e, "cannot remove an anonymous volume");
                    }
                }
                _ => {}
            }
        }
    }
}

fn mount_of(v: &VolumeRecord, target: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        kind: VolumeKind::Volume,
        source: v.name.clone(),
        volume_id: Some(v.id.clone()),
        path: v.path.clone(),
        target: target.to_string(),
        read_only,
    }
}
