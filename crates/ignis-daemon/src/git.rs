//! The GitOps source (git2): a bare cache clone fetched every interval; the
//! manifests are read from the commit's tree (no checkout). With
//! `write_status`, the observed status of each VM is committed under
//! `.ignis/status/NODE/` (never read as manifests; each node writes only
//! its own directory) with the node's record in `.ignis/nodes/NODE.yaml`,
//! and pushed, only when the status changed or the node's heartbeat is
//! due: the reconciler's own commits cannot make it loop. Status commits
//! sit on the remote's current head and are pushed without force, retried
//! when another push landed first: humans, the other nodes of a fleet and
//! other daemons of the same node (other `--path`s, each owning its own
//! status files) share the branch. `ignis fleet` reads the same tree.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ignis_api::manifest::Manifest;
use ignis_api::node::NodeRecord;

#[derive(Debug, Clone)]
pub struct GitOptions {
    pub url: String,
    pub branch: String,
    /// Subdirectory of the repository holding the manifests.
    pub path: String,
    pub write_status: bool,
    /// Where the cache clone lives.
    pub cache: PathBuf,
    /// SSH private key for ssh:// URLs (HTTPS credentials come from
    /// IGNIS_GIT_USERNAME / IGNIS_GIT_PASSWORD; never logged).
    pub ssh_key: Option<PathBuf>,
}

const STATUS_DIR: &str = ".ignis";
const AUTHOR: &str = "ignis-gitops";
/// The first line of a status file: which daemon (by `--path`) owns it.
const OWNER_PREFIX: &str = "# ignis-gitops path=";
/// The local reference a status commit is pushed from.
const STATUS_REF: &str = "refs/ignis/status";
/// Pushes of one status commit before giving up until the next round.
pub const PUSH_ATTEMPTS: u32 = 5;

fn callbacks(opts: &GitOptions) -> git2::RemoteCallbacks<'_> {
    let mut cb = git2::RemoteCallbacks::new();
    cb.credentials(move |_url, user, allowed| {
        if allowed.contains(git2::CredentialType::SSH_KEY) {
            if let Some(k) = &opts.ssh_key {
                return git2::Cred::ssh_key(user.unwrap_or("git"), None, k, None);
            }
            return git2::Cred::ssh_key_from_agent(user.unwrap_or("git"));
        }
        if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
            if let (Ok(u), Ok(p)) = (
                std::env::var("IGNIS_GIT_USERNAME"),
                std::env::var("IGNIS_GIT_PASSWORD"),
            ) {
                return git2::Cred::userpass_plaintext(&u, &p);
            }
        }
        git2::Cred::default()
    });
    cb
}

pub struct GitSource {
    opts: GitOptions,
    repo: git2::Repository,
    /// Runs between the status commit and its push (tests: a concurrent
    /// push lands there).
    #[cfg(test)]
    before_push: Option<Box<dyn Fn()>>,
}

/// Manifests of one file, or why the file is bad.
pub type FileManifests = (String, Result<Vec<Manifest>, BadFile>);

/// Why a manifest file was skipped.
#[derive(Debug, thiserror::Error)]
pub enum BadFile {
    #[error("larger than 1 MiB")]
    TooLarge,
    #[error("{0}: not UTF-8")]
    NotUtf8(String),
    #[error(transparent)]
    Git(#[from] git2::Error),
    #[error(transparent)]
    Read(#[from] std::io::Error),
    #[error(transparent)]
    Manifest(#[from] ignis_core::Error),
}

impl GitSource {
    pub fn open(opts: &GitOptions) -> Result<Self, git2::Error> {
        let repo = match git2::Repository::open_bare(&opts.cache) {
            Ok(r) => r,
            Err(_) => {
                std::fs::create_dir_all(&opts.cache)
                    .map_err(|e| git2::Error::from_str(&e.to_string()))?;
                let r = git2::Repository::init_bare(&opts.cache)?;
                r.remote("origin", &opts.url)?;
                r
            }
        };
        Ok(Self {
            opts: opts.clone(),
            repo,
            #[cfg(test)]
            before_push: None,
        })
    }

    /// Fetches the branch; returns its head commit.
    pub fn fetch(&self) -> Result<git2::Oid, git2::Error> {
        let b = &self.opts.branch;
        let mut remote = self.repo.find_remote("origin")?;
        let mut fo = git2::FetchOptions::new();
        fo.remote_callbacks(callbacks(&self.opts));
        remote.fetch(
            &[format!("+refs/heads/{b}:refs/remotes/origin/{b}")],
            Some(&mut fo),
            None,
        )?;
        let r = self
            .repo
            .find_reference(&format!("refs/remotes/origin/{b}"))?;
        r.target()
            .ok_or_else(|| git2::Error::from_str("branch has no target"))
    }

    /// The manifests under `path` at `commit`, file by file.
    pub fn manifests(&self, commit: git2::Oid) -> Result<Vec<FileManifests>, git2::Error> {
        let tree = self.repo.find_commit(commit)?.tree()?;
        let base = self.opts.path.trim_matches('/');
        let mut out = Vec::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            let name = entry.name().unwrap_or("");
            let full = format!("{dir}{name}");
            if name.starts_with('.') {
                return git2::TreeWalkResult::Skip; // .ignis/ status, hidden files
            }
            if entry.kind() != Some(git2::ObjectType::Blob)
                || !(name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
                || !(base.is_empty() || full.starts_with(&format!("{base}/")))
            {
                return git2::TreeWalkResult::Ok;
            }
            let parsed = match self.repo.find_blob(entry.id()) {
                Ok(b) if b.size() > ignis_core::manifest::MAX_FILE => Err(BadFile::TooLarge),
                Ok(b) => match std::str::from_utf8(b.content()) {
                    Ok(text) => ignis_core::manifest::parse(text, &full).map_err(BadFile::from),
                    Err(_) => Err(BadFile::NotUtf8(full.clone())),
                },
                Err(e) => Err(BadFile::Git(e)),
            };
            out.push((full, parsed));
            git2::TreeWalkResult::Ok
        })?;
        Ok(out)
    }

    /// Writes `.ignis/status/<node>/<name>.yaml` for every VM in `status`
    /// and pushes, when that changes the branch; with `beat`, the node's
    /// record `.ignis/nodes/<node>.yaml` goes into every such commit, and
    /// makes one of its own when the heartbeat is due. The commit always
    /// sits on the branch's current remote head (fetched again for every
    /// attempt), and the push is never forced: when someone else pushed in
    /// between (a human, another node), it is rejected as non-fast-forward
    /// and made again on the new head, up to [`PUSH_ATTEMPTS`] times.
    ///
    /// Status files carry their owner (`--path`) in a first comment line:
    /// with `prune`, this daemon's files of VMs no longer in `status` are
    /// removed (and its files of the layout before nodes,
    /// `.ignis/status/<name>.yaml`); files of other daemons (other paths,
    /// other nodes) are never touched. Returns the pushed commit, or `None`
    /// when nothing changed.
    pub fn write_status(
        &self,
        node: &str,
        status: &BTreeMap<String, String>,
        prune: bool,
        beat: Option<&Heartbeat>,
    ) -> Result<Option<git2::Oid>, StatusError> {
        let mut attempt = 1;
        loop {
            let head = self.fetch().map_err(StatusError::Git)?;
            let Some(commit) = self.status_commit(head, node, status, prune, beat)? else {
                return Ok(None);
            };
            #[cfg(test)]
            if let Some(hook) = &self.before_push {
                hook();
            }
            match self.push(commit) {
                Ok(()) => return Ok(Some(commit)),
                Err(StatusError::Rejected(why)) if attempt < PUSH_ATTEMPTS => {
                    tracing::info!(
                        attempt,
                        why,
                        "status push rejected; retrying on the new head"
                    );
                    // Nodes that collided back off by different amounts.
                    let jitter = u64::from(std::process::id() % 89);
                    std::thread::sleep(std::time::Duration::from_millis(
                        100 * u64::from(attempt) + jitter,
                    ));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The status commit on top of `parent`, not on any branch yet; `None`
    /// when the status would not change and no heartbeat is due.
    fn status_commit(
        &self,
        parent: git2::Oid,
        node: &str,
        status: &BTreeMap<String, String>,
        prune: bool,
        beat: Option<&Heartbeat>,
    ) -> Result<Option<git2::Oid>, StatusError> {
        let git = StatusError::Git;
        let commit = self.repo.find_commit(parent).map_err(git)?;
        let root = commit.tree().map_err(git)?;
        let owner = self.owner_line();
        let ours = |id: git2::Oid| {
            self.repo
                .find_blob(id)
                .map(|b| owned_by(b.content(), &owner))
                .unwrap_or(false)
        };
        let mut tree = self
            .edit_dir(
                Some(&root),
                &[STATUS_DIR, "status", node],
                &mut |st, old| {
                    if prune {
                        for entry in old.iter().flat_map(|t| t.iter()) {
                            let Some(file) = entry.name() else { continue };
                            let vm = file.strip_suffix(".yaml").unwrap_or(file);
                            if !status.contains_key(vm) && ours(entry.id()) {
                                st.remove(file)?;
                            }
                        }
                    }
                    for (name, yaml) in status {
                        let blob = self.repo.blob(format!("{owner}\n{yaml}").as_bytes())?;
                        st.insert(format!("{name}.yaml"), blob, 0o100_644)?;
                    }
                    Ok(())
                },
            )
            .map_err(git)?;
        if prune {
            // Files of the layout before nodes (.ignis/status/<vm>.yaml)
            // that this daemon wrote: superseded by its node's directory.
            let t = self.repo.find_tree(tree).map_err(git)?;
            tree = self
                .edit_dir(Some(&t), &[STATUS_DIR, "status"], &mut |st, old| {
                    for entry in old.iter().flat_map(|t| t.iter()) {
                        let blob = entry.kind() == Some(git2::ObjectType::Blob);
                        if let (true, Some(file)) = (blob, entry.name()) {
                            if ours(entry.id()) {
                                st.remove(file)?;
                            }
                        }
                    }
                    Ok(())
                })
                .map_err(git)?;
        }
        let changed = tree != root.id();
        match beat {
            Some(b) if changed || b.due => {
                let t = self.repo.find_tree(tree).map_err(git)?;
                tree = self
                    .edit_dir(Some(&t), &[STATUS_DIR, "nodes"], &mut |nb, _| {
                        let blob = self.repo.blob(b.record.as_bytes())?;
                        nb.insert(format!("{node}.yaml"), blob, 0o100_644)?;
                        Ok(())
                    })
                    .map_err(git)?;
            }
            _ => {}
        }
        if tree == root.id() {
            return Ok(None);
        }
        let sig = git2::Signature::now(AUTHOR, "gitops@ignis.invalid").map_err(git)?;
        let tree = self.repo.find_tree(tree).map_err(git)?;
        let message = if changed {
            format!("ignis: observed status of node {node}")
        } else {
            format!("ignis: node {node} heartbeat")
        };
        // No ref moves here: the branch is the remote's, pushed below.
        let oid = self
            .repo
            .commit(None, &sig, &sig, &message, &tree, &[&commit])
            .map_err(git)?;
        Ok(Some(oid))
    }

    /// `root` with its directory at `path` replaced by what `edit` makes of
    /// it (given a builder over the old directory, and the old directory);
    /// directories left empty are removed. Returns the new root tree.
    fn edit_dir(
        &self,
        root: Option<&git2::Tree>,
        path: &[&str],
        edit: &mut DirEdit<'_>,
    ) -> Result<git2::Oid, git2::Error> {
        let mut b = self.repo.treebuilder(root)?;
        match path.split_first() {
            None => edit(&mut b, root)?,
            Some((first, rest)) => {
                let child = root
                    .and_then(|r| r.get_name(first))
                    .and_then(|e| e.to_object(&self.repo).ok())
                    .and_then(|o| o.into_tree().ok());
                let new_child = self.edit_dir(child.as_ref(), rest, edit)?;
                if self.repo.find_tree(new_child)?.is_empty() {
                    if b.get(*first)?.is_some() {
                        b.remove(*first)?;
                    }
                } else {
                    b.insert(*first, new_child, 0o040_000)?;
                }
            }
        }
        b.write()
    }

    /// The directory at `path` of `commit`'s tree, if there is one.
    fn dir_at(&self, commit: git2::Oid, path: &str) -> Result<Option<git2::Tree<'_>>, git2::Error> {
        let tree = self.repo.find_commit(commit)?.tree()?;
        Ok(tree
            .get_path(std::path::Path::new(path))
            .ok()
            .and_then(|e| e.to_object(&self.repo).ok())
            .and_then(|o| o.into_tree().ok()))
    }

    /// The node records (`.ignis/nodes/*.yaml`) at `commit`; a record that
    /// does not parse is logged and left out.
    pub fn node_records(&self, commit: git2::Oid) -> Result<Vec<NodeRecord>, git2::Error> {
        let mut out = Vec::new();
        let Some(dir) = self.dir_at(commit, &format!("{STATUS_DIR}/nodes"))? else {
            return Ok(out);
        };
        for entry in dir.iter() {
            let Some(file) = entry.name() else { continue };
            let Some(name) = file.strip_suffix(".yaml") else {
                continue;
            };
            let Ok(blob) = self.repo.find_blob(entry.id()) else {
                continue;
            };
            if blob.size() > ignis_core::manifest::MAX_FILE {
                continue;
            }
            match serde_yaml::from_slice::<NodeRecord>(blob.content()) {
                Ok(r) if r.metadata.name == name => out.push(r),
                Ok(r) => tracing::warn!(
                    file,
                    name = r.metadata.name,
                    "node record named after another node: skipped"
                ),
                Err(e) => tracing::warn!(file, error = %e, "node record unreadable: skipped"),
            }
        }
        Ok(out)
    }

    /// Every status file (`.ignis/status/NODE/VM.yaml`) at `commit`.
    pub fn status_files(&self, commit: git2::Oid) -> Result<Vec<StatusFile>, git2::Error> {
        let mut out = Vec::new();
        let Some(dir) = self.dir_at(commit, &format!("{STATUS_DIR}/status"))? else {
            return Ok(out);
        };
        for node in dir.iter() {
            let (Some(node_name), Ok(Some(sub))) = (
                node.name(),
                node.to_object(&self.repo).map(|o| o.into_tree().ok()),
            ) else {
                continue; // a file of the layout before nodes
            };
            for entry in sub.iter() {
                let (Some(file), Ok(blob)) = (entry.name(), self.repo.find_blob(entry.id())) else {
                    continue;
                };
                let Some(vm) = file.strip_suffix(".yaml") else {
                    continue;
                };
                if blob.size() > ignis_core::manifest::MAX_FILE {
                    continue;
                }
                let text = String::from_utf8_lossy(blob.content()).into_owned();
                let first = text.lines().next().unwrap_or_default();
                out.push(StatusFile {
                    node: node_name.to_string(),
                    vm: vm.to_string(),
                    path: first.strip_prefix(OWNER_PREFIX).map(str::to_string),
                    text,
                });
            }
        }
        Ok(out)
    }

    /// Pushes `commit` to the branch, never forced.
    fn push(&self, commit: git2::Oid) -> Result<(), StatusError> {
        let b = &self.opts.branch;
        // libgit2 pushes references, not commits: a private one.
        self.repo
            .reference(STATUS_REF, commit, true, "ignis: status to push")
            .map_err(StatusError::Git)?;
        let mut remote = self.repo.find_remote("origin").map_err(StatusError::Git)?;
        let rejected = std::cell::RefCell::new(None::<String>);
        let mut cb = callbacks(&self.opts);
        cb.push_update_reference(|_refname, status| {
            if let Some(why) = status {
                *rejected.borrow_mut() = Some(why.to_string());
            }
            Ok(())
        });
        let mut po = git2::PushOptions::new();
        po.remote_callbacks(cb);
        if let Some(path) = local_repository(&self.opts.url) {
            // libgit2's local transport checks fast-forward against the
            // head it listed and then overwrites the branch: a push that
            // lands in between (a human's) would be lost. So the objects
            // go to a private ref, and the branch moves by compare-and-swap
            // from the head this commit was made on, under git's ref lock.
            let private = format!("refs/ignis/push-{}", std::process::id());
            remote
                .push(&[format!("+{STATUS_REF}:{private}")], Some(&mut po))
                .map_err(StatusError::Git)?;
            drop(po);
            let target = git2::Repository::open_bare(&path).map_err(StatusError::Git)?;
            let parent = self
                .repo
                .find_commit(commit)
                .and_then(|c| c.parent_id(0))
                .map_err(StatusError::Git)?;
            let moved = target.reference_matching(
                &format!("refs/heads/{b}"),
                commit,
                true,
                parent,
                "ignis: status",
            );
            if let Ok(mut r) = target.find_reference(&private) {
                let _ = r.delete();
            }
            return match moved {
                Ok(_) => Ok(()),
                Err(e)
                    if matches!(
                        e.code(),
                        git2::ErrorCode::Modified | git2::ErrorCode::Locked
                    ) =>
                {
                    Err(StatusError::Rejected(e.message().to_string()))
                }
                Err(e) => Err(StatusError::Git(e)),
            };
        }
        let pushed = remote.push(&[format!("{STATUS_REF}:refs/heads/{b}")], Some(&mut po));
        drop(po);
        match pushed {
            Err(e) if e.code() == git2::ErrorCode::NotFastForward => {
                Err(StatusError::Rejected(e.message().to_string()))
            }
            Err(e) => Err(StatusError::Git(e)),
            Ok(()) => match rejected.into_inner() {
                Some(why) => Err(StatusError::Rejected(why)),
                None => Ok(()),
            },
        }
    }

    /// The first line of this daemon's status files.
    fn owner_line(&self) -> String {
        let path = self.opts.path.trim_matches('/');
        format!("{OWNER_PREFIX}{}", if path.is_empty() { "/" } else { path })
    }
}

/// The path of a repository on this host (`/srv/repo.git`,
/// `file:///srv/repo.git`), which libgit2 pushes to with its local
/// transport; `None` for remote URLs (their servers update refs atomically).
fn local_repository(url: &str) -> Option<std::path::PathBuf> {
    let path = url.strip_prefix("file://").unwrap_or(url);
    (path.starts_with('/') && !url.contains("://") || url.starts_with("file://"))
        .then(|| std::path::PathBuf::from(path))
}

/// Whether a status file belongs to the daemon whose first line is
/// `owner` (files of older versions carry no owner line: the only
/// daemon there was wrote them).
fn owned_by(content: &[u8], owner: &str) -> bool {
    let first = content.split(|b| *b == b'\n').next().unwrap_or_default();
    match std::str::from_utf8(first) {
        Ok(line) if line.starts_with(OWNER_PREFIX) => line == owner,
        _ => true,
    }
}

/// An edit of one directory of a tree: a builder over the old directory,
/// and the old directory (see `GitSource::edit_dir`).
type DirEdit<'a> =
    dyn FnMut(&mut git2::TreeBuilder, Option<&git2::Tree>) -> Result<(), git2::Error> + 'a;

/// The node record a status commit carries.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// `.ignis/nodes/NODE.yaml`.
    pub record: String,
    /// Commit the record even when no status changed.
    pub due: bool,
}

/// One `.ignis/status/NODE/VM.yaml`.
#[derive(Debug, Clone)]
pub struct StatusFile {
    pub node: String,
    pub vm: String,
    /// The `--path` of the daemon that wrote it (its first line).
    pub path: Option<String>,
    /// The whole file (a YAML `VmManifestStatus` after the owner line).
    pub text: String,
}

/// Why a status commit did not land.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The remote refused the push (another commit landed first) on every
    /// attempt.
    #[error("push rejected: {0}")]
    Rejected(String),
    #[error("{}", .0.message())]
    Git(git2::Error),
}

/// `url` without its credentials (`https://user:token@host/r` becomes
/// `https://host/r`): what events, labels, logs and status commits show.
/// Credentials in a GitOps URL never leave the process otherwise.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        // scp-like `user@host:path`: the user is not a secret.
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}{}", &url[..scheme_end], &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// `message` with every credential of `url` masked (git errors quote the
/// URL they failed on).
pub fn redact_message(message: &str, url: &str) -> String {
    let mut out = message.replace(url, &redact_url(url));
    if let Some(scheme_end) = url.find("://").map(|i| i + 3) {
        let rest = &url[scheme_end..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            let userinfo = &rest[..at];
            let secret = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
            if !secret.is_empty() {
                out = out.replace(secret, "***");
            }
        }
    }
    out
}

#[cfg(test)]
mod redact_tests {
    use super::*;

    #[test]
    fn credentials_never_survive_redaction() {
        let url = "https://bot:ghp_s3cr3t@git.example.com/org/repo.git";
        assert_eq!(redact_url(url), "https://git.example.com/org/repo.git");
        assert_eq!(redact_url("file:///srv/repo"), "file:///srv/repo");
        assert_eq!(
            redact_url("git@github.com:o/r.git"),
            "git@github.com:o/r.git"
        );
        assert_eq!(
            redact_url("https://tok@h/a@b"),
            "https://h/a@b",
            "an @ in the path is not userinfo"
        );
        let msg = format!("failed to fetch {url}: auth as bot:ghp_s3cr3t refused");
        let m = redact_message(&msg, url);
        assert!(!m.contains("ghp_s3cr3t"), "{m}");
        assert!(m.contains("https://git.example.com/org/repo.git"), "{m}");
    }
}

#[cfg(test)]
mod status_tests {
    use super::*;
    use std::path::Path;

    /// A commit on `main` of the bare repository at `bare` (a human's push):
    /// `file` set to `content` on top of the current tip.
    fn human_push(bare: &Path, file: &str, content: &str) -> git2::Oid {
        let repo = git2::Repository::open_bare(bare).unwrap();
        let parent = repo
            .find_reference("refs/heads/main")
            .ok()
            .and_then(|r| r.peel_to_commit().ok());
        // `file` may be a path: each directory on the way rebuilt.
        fn put(
            repo: &git2::Repository,
            at: Option<&git2::Tree>,
            path: &[&str],
            blob: git2::Oid,
        ) -> git2::Oid {
            let mut tb = repo.treebuilder(at).unwrap();
            match path {
                [name] => {
                    tb.insert(*name, blob, 0o100_644).unwrap();
                }
                [dir, rest @ ..] => {
                    let sub = at
                        .and_then(|t| t.get_name(dir))
                        .and_then(|e| e.to_object(repo).ok())
                        .and_then(|o| o.into_tree().ok());
                    let id = put(repo, sub.as_ref(), rest, blob);
                    tb.insert(*dir, id, 0o040_000).unwrap();
                }
                [] => unreachable!(),
            }
            tb.write().unwrap()
        }
        let blob = repo.blob(content.as_bytes()).unwrap();
        let root = parent.as_ref().map(|c| c.tree().unwrap());
        let parts: Vec<&str> = file.split('/').collect();
        let tree = repo
            .find_tree(put(&repo, root.as_ref(), &parts, blob))
            .unwrap();
        let sig = git2::Signature::now("human", "h@example.invalid").unwrap();
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        repo.commit(Some("refs/heads/main"), &sig, &sig, file, &tree, &parents)
            .unwrap()
    }

    fn main_of(bare: &Path) -> git2::Oid {
        git2::Repository::open_bare(bare)
            .unwrap()
            .refname_to_id("refs/heads/main")
            .unwrap()
    }

    fn file_at_main(bare: &Path, path: &str) -> Option<String> {
        let repo = git2::Repository::open_bare(bare).unwrap();
        let tree = repo
            .find_reference("refs/heads/main")
            .unwrap()
            .peel_to_tree()
            .unwrap();
        let entry = tree.get_path(Path::new(path)).ok()?;
        let blob = repo.find_blob(entry.id()).unwrap();
        Some(String::from_utf8_lossy(blob.content()).into_owned())
    }

    fn is_ancestor(bare: &Path, a: git2::Oid, b: git2::Oid) -> bool {
        let repo = git2::Repository::open_bare(bare).unwrap();
        a == b || repo.graph_descendant_of(b, a).unwrap()
    }

    fn source(dir: &Path, bare: &Path, path: &str, cache: &str) -> GitSource {
        GitSource::open(&GitOptions {
            url: format!("file://{}", bare.display()),
            branch: "main".into(),
            path: path.into(),
            write_status: true,
            cache: dir.join(cache),
            ssh_key: None,
        })
        .unwrap()
    }

    fn status(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), format!("state: {v}\n")))
            .collect()
    }

    #[test]
    fn every_status_commit_sits_on_the_current_remote_head() {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("repo.git");
        git2::Repository::init_bare(&bare).unwrap();
        human_push(&bare, "a.yaml", "vm a");
        let src = source(dir.path(), &bare, "", "cache");
        let c1 = src
            .write_status("n1", &status(&[("a", "running")]), true, None)
            .unwrap()
            .expect("a first status commit");
        assert_eq!(main_of(&bare), c1);
        // The bug of issue 17: the second one was refused by libgit2
        // (the local branch already had the first status commit).
        let h2 = human_push(&bare, "b.yaml", "vm b");
        let c2 = src
            .write_status(
                "n1",
                &status(&[("a", "running"), ("b", "running")]),
                true,
                None,
            )
            .unwrap()
            .expect("a second status commit");
        assert_eq!(main_of(&bare), c2);
        let repo = git2::Repository::open_bare(&bare).unwrap();
        assert_eq!(repo.find_commit(c2).unwrap().parent_id(0).unwrap(), h2);
        assert!(file_at_main(&bare, ".ignis/status/n1/b.yaml")
            .unwrap()
            .ends_with("state: running\n"));
        // Unchanged: no commit.
        assert_eq!(
            src.write_status(
                "n1",
                &status(&[("a", "running"), ("b", "running")]),
                true,
                None
            )
            .unwrap(),
            None
        );
        // A removed VM's file goes with it.
        src.write_status("n1", &status(&[("a", "exited")]), true, None)
            .unwrap()
            .unwrap();
        assert!(file_at_main(&bare, ".ignis/status/n1/b.yaml").is_none());
        assert!(file_at_main(&bare, ".ignis/status/n1/a.yaml")
            .unwrap()
            .contains("exited"));
    }

    #[test]
    fn a_push_that_lands_first_is_kept_and_the_status_pushed_on_top() {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("repo.git");
        git2::Repository::init_bare(&bare).unwrap();
        human_push(&bare, "a.yaml", "vm a");
        let mut src = source(dir.path(), &bare, "", "cache");
        let raced = std::rc::Rc::new(std::cell::Cell::new(None));
        let (b, r) = (bare.clone(), raced.clone());
        // Between our commit and our push, twice, someone else pushes.
        let left = std::cell::Cell::new(2);
        src.before_push = Some(Box::new(move || {
            if left.get() > 0 {
                left.set(left.get() - 1);
                r.set(Some(human_push(&b, "notes", &format!("{}", left.get()))));
            }
        }));
        let c = src
            .write_status("n1", &status(&[("a", "running")]), true, None)
            .unwrap()
            .expect("committed after the retries");
        let human = raced.get().unwrap();
        assert!(is_ancestor(&bare, human, c), "the human commit was lost");
        assert_eq!(main_of(&bare), c);
    }

    #[test]
    fn a_daemon_of_another_path_keeps_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("repo.git");
        git2::Repository::init_bare(&bare).unwrap();
        human_push(&bare, "a.yaml", "vm a");
        let prod = source(dir.path(), &bare, "prod", "c1");
        let staging = source(dir.path(), &bare, "staging/", "c2");
        prod.write_status(
            "n1",
            &status(&[("p1", "running"), ("p2", "running")]),
            true,
            None,
        )
        .unwrap()
        .unwrap();
        staging
            .write_status("n1", &status(&[("s1", "running")]), true, None)
            .unwrap()
            .unwrap();
        // prod's p2 goes away; staging's s1 stays.
        prod.write_status("n1", &status(&[("p1", "running")]), true, None)
            .unwrap()
            .unwrap();
        let s1 = file_at_main(&bare, ".ignis/status/n1/s1.yaml").expect("s1 kept");
        assert!(s1.starts_with("# ignis-gitops path=staging\n"), "{s1}");
        assert!(file_at_main(&bare, ".ignis/status/n1/p2.yaml").is_none());
        // Steady: neither commits again.
        assert_eq!(
            prod.write_status("n1", &status(&[("p1", "running")]), true, None)
                .unwrap(),
            None
        );
        assert_eq!(
            staging
                .write_status("n1", &status(&[("s1", "running")]), true, None)
                .unwrap(),
            None
        );
        // Without prune (a bad manifest somewhere) nothing is removed.
        staging
            .write_status("n1", &BTreeMap::new(), false, None)
            .unwrap();
        assert!(file_at_main(&bare, ".ignis/status/n1/s1.yaml").is_some());
    }

    fn beat(due: bool, at: &str) -> Heartbeat {
        Heartbeat {
            record: format!("kind: Node\nheartbeat: {at}\n"),
            due,
        }
    }

    #[test]
    fn the_node_record_rides_with_status_and_beats_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("repo.git");
        git2::Repository::init_bare(&bare).unwrap();
        human_push(&bare, "a.yaml", "vm a");
        // A file of the layout before nodes, by this daemon (no owner
        // line: older versions wrote none), and one of another path.
        human_push(&bare, ".ignis/status/old.yaml", "state: running\n");
        let src = source(dir.path(), &bare, "", "cache");
        let c = src
            .write_status(
                "n1",
                &status(&[("a", "running")]),
                true,
                Some(&beat(false, "t1")),
            )
            .unwrap();
        assert!(c.is_some(), "status changed: committed with the record");
        assert!(file_at_main(&bare, ".ignis/nodes/n1.yaml")
            .unwrap()
            .contains("t1"));
        assert!(
            file_at_main(&bare, ".ignis/status/old.yaml").is_none(),
            "migrated"
        );
        // Nothing changed, no beat due: no commit.
        assert_eq!(
            src.write_status(
                "n1",
                &status(&[("a", "running")]),
                true,
                Some(&beat(false, "t2"))
            )
            .unwrap(),
            None
        );
        // The beat is due: a commit of the record alone.
        let head = main_of(&bare);
        src.write_status(
            "n1",
            &status(&[("a", "running")]),
            true,
            Some(&beat(true, "t3")),
        )
        .unwrap()
        .unwrap();
        assert_ne!(main_of(&bare), head);
        assert!(file_at_main(&bare, ".ignis/nodes/n1.yaml")
            .unwrap()
            .contains("t3"));
        // Another node: its own directory and record, ours untouched.
        let other = source(dir.path(), &bare, "", "cache2");
        other
            .write_status(
                "n2",
                &status(&[("b", "exited")]),
                true,
                Some(&beat(true, "u1")),
            )
            .unwrap()
            .unwrap();
        src.write_status("n1", &BTreeMap::new(), true, None)
            .unwrap()
            .unwrap();
        assert!(file_at_main(&bare, ".ignis/status/n1/a.yaml").is_none());
        assert!(file_at_main(&bare, ".ignis/status/n2/b.yaml").is_some());
        let head = main_of(&bare);
        let files = src.status_files(head).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!((files[0].node.as_str(), files[0].vm.as_str()), ("n2", "b"));
        assert_eq!(files[0].path.as_deref(), Some("/"));
        // Records that do not parse are left out, not fatal.
        assert!(
            src.node_records(head).unwrap().is_empty(),
            "t3/u1 are not records"
        );
    }
}
