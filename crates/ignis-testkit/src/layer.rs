use std::io::Write;

/// One tar entry. Paths and link targets are written verbatim into the
/// header (so `../x` and `/etc/x` are possible).
#[derive(Debug, Clone)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    Hardlink {
        path: String,
        target: String,
    },
    Char {
        path: String,
        major: u32,
        minor: u32,
    },
    Fifo {
        path: String,
    },
}

/// Builds an uncompressed layer tarball.
pub struct LayerBuilder {
    out: tar::Builder<Vec<u8>>,
    uid: u64,
    gid: u64,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> Self {
        Self {
            out: tar::Builder::new(Vec::new()),
            uid: 0,
            gid: 0,
        }
    }

    /// Owner of the entries added next.
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.entry(Entry::Dir {
            path: path.into(),
            mode,
        })
    }

    pub fn file(self, path: &str, data: &[u8], mode: u32) -> Self {
        self.entry(Entry::File {
            path: path.into(),
            data: data.to_vec(),
            mode,
        })
    }

    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.entry(Entry::Symlink {
            path: path.into(),
            target: target.into(),
        })
    }

    pub fn hardlink(self, path: &str, target: &str) -> Self {
        self.entry(Entry::Hardlink {
            path: path.into(),
            target: target.into(),
        })
    }

    /// A whiteout for `path` (`dir/.wh.name`).
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path),
        };
        self.file(&format!("{dir}.wh.{name}"), b"", 0o644)
    }

    /// An opaque whiteout for directory `dir`.
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"", 0o644)
    }

    pub fn entry(mut self, e: Entry) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_uid(self.uid);
        h.set_gid(self.gid);
        h.set_mtime(1_700_000_000);
        let (path, data): (String, Vec<u8>) = match e {
            Entry::Dir { path, mode } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(mode);
                (path, vec![])
            }
            Entry::File { path, data, mode } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(mode);
                (path, data)
            }
            Entry::Symlink { path, target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                raw_link(&mut h, &target);
                (path, vec![])
            }
            Entry::Hardlink { path, target } => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                raw_link(&mut h, &target);
                (path, vec![])
            }
            Entry::Char { path, major, minor } => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_mode(0o666);
                h.set_device_major(major).expect("major");
                h.set_device_minor(minor).expect("minor");
                (path, vec![])
            }
            Entry::Fifo { path } => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_mode(0o600);
                (path, vec![])
            }
        };
        let name = &mut h.as_old_mut().name;
        assert!(
            path.len() < name.len(),
            "test paths must fit the ustar name field"
        );
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.out.append(&h, &data[..]).expect("append");
        self
    }

    pub fn build(self) -> Vec<u8> {
        self.out.into_inner().expect("finish")
    }

    pub fn build_gzip(self) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&self.build()).expect("gzip");
        gz.finish().expect("gzip")
    }
}

fn raw_link(h: &mut tar::Header, target: &str) {
    let link = &mut h.as_old_mut().linkname;
    assert!(
        target.len() < link.len(),
        "test link targets must fit the ustar field"
    );
    link.fill(0);
    link[..target.len()].copy_from_slice(target.as_bytes());
}
