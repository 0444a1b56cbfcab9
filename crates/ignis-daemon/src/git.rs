//! The GitOps source (git2): a bare cache clone fetched every interval; the
//! manifests are read from the commit's tree (no checkout). With
//! `write_status`, the observed status of each VM is committed under
//! `.ignis/status/` (never read as manifests) and pushed, and only when it
//! changed: the reconciler's own commits cannot make it loop. Status
//! commits sit on the remote's current head and are pushed without force,
//! retried when another push landed first: humans and other daemons
//! (other `--path`s, each owning its own status files) share the branch.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ignis_api::manifest::Manifest;

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

    /// Writes `.ignis/status/<name>.yaml` for every VM in `status` and
    /// pushes, when that changes the branch. The commit always sits on
    /// the branch's current remote head (fetched again for every attempt),
    /// and the push is never forced: when someone else pushed in between
    /// (a human, another daemon), it is rejected as non-fast-forward and
    /// made again on the new head, up to [`PUSH_ATTEMPTS`] times.
    ///
    /// Status files carry their owner (`--path`) in a first comment line:
    /// with `prune`, this daemon's files of VMs no longer in `status` are
    /// removed; files of other daemons (other paths) are never touched.
    /// Returns the pushed commit, or `None` when nothing changed.
    pub fn write_status(
        &self,
        status: &BTreeMap<String, String>,
        prune: bool,
    ) -> Result<Option<git2::Oid>, StatusError> {
        let mut attempt = 1;
        loop {
            let head = self.fetch().map_err(StatusError::Git)?;
            let Some(commit) = self.status_commit(head, status, prune)? else {
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
                    std::thread::sleep(std::time::Duration::from_millis(100 * attempt as u64));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The status commit on top of `parent`, not on any branch yet; `None`
    /// when the tree would not change.
    fn status_commit(
        &self,
        parent: git2::Oid,
        status: &BTreeMap<String, String>,
        prune: bool,
    ) -> Result<Option<git2::Oid>, StatusError> {
        let git = StatusError::Git;
        let commit = self.repo.find_commit(parent).map_err(git)?;
        let root = commit.tree().map_err(git)?;
        let dot = root
            .get_name(STATUS_DIR)
            .and_then(|e| e.to_object(&self.repo).ok())
            .and_then(|o| o.into_tree().ok());
        let old_status = dot
            .as_ref()
            .and_then(|t| t.get_name("status"))
            .and_then(|e| e.to_object(&self.repo).ok())
            .and_then(|o| o.into_tree().ok());
        let owner = self.owner_line();
        let mut st = self.repo.treebuilder(old_status.as_ref()).map_err(git)?;
        if prune {
            if let Some(old) = &old_status {
                for entry in old.iter() {
                    let Some(file) = entry.name() else { continue };
                    let vm = file.strip_suffix(".yaml").unwrap_or(file);
                    if status.contains_key(vm) {
                        continue;
                    }
                    let ours = self
                        .repo
                        .find_blob(entry.id())
                        .map(|b| owned_by(b.content(), &owner))
                        .unwrap_or(false);
                    if ours {
                        st.remove(file).map_err(git)?;
                    }
                }
            }
        }
        for (name, yaml) in status {
            let blob = self
                .repo
                .blob(format!("{owner}\n{yaml}").as_bytes())
                .map_err(git)?;
            st.insert(format!("{name}.yaml"), blob, 0o100_644)
                .map_err(git)?;
        }
        let status_tree = st.write().map_err(git)?;
        let mut dot_b = self.repo.treebuilder(dot.as_ref()).map_err(git)?;
        if self.repo.find_tree(status_tree).map_err(git)?.is_empty() {
            if dot_b.get("status").map_err(git)?.is_some() {
                dot_b.remove("status").map_err(git)?;
            }
        } else {
            dot_b
                .insert("status", status_tree, 0o040_000)
                .map_err(git)?;
        }
        let dot_tree = dot_b.write().map_err(git)?;
        let mut rb = self.repo.treebuilder(Some(&root)).map_err(git)?;
        if self.repo.find_tree(dot_tree).map_err(git)?.is_empty() {
            if rb.get(STATUS_DIR).map_err(git)?.is_some() {
                rb.remove(STATUS_DIR).map_err(git)?;
            }
        } else {
            rb.insert(STATUS_DIR, dot_tree, 0o040_000).map_err(git)?;
        }
        let new_root = rb.write().map_err(git)?;
        if new_root == root.id() {
            return Ok(None);
        }
        let sig = git2::Signature::now(AUTHOR, "gitops@ignis.invalid").map_err(git)?;
        let tree = self.repo.find_tree(new_root).map_err(git)?;
        // No ref moves here: the branch is the remote's, pushed below.
        let oid = self
            .repo
            .commit(
                None,
                &sig,
                &sig,
                "ignis: observed status",
                &tree,
                &[&commit],
            )
            .map_err(git)?;
        Ok(Some(oid))
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
        let mut tb = repo
            .treebuilder(parent.as_ref().map(|c| c.tree().unwrap()).as_ref())
            .unwrap();
        tb.insert(file, repo.blob(content.as_bytes()).unwrap(), 0o100_644)
            .unwrap();
        let tree = repo.find_tree(tb.write().unwrap()).unwrap();
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
            .write_status(&status(&[("a", "running")]), true)
            .unwrap()
            .expect("a first status commit");
        assert_eq!(main_of(&bare), c1);
        // The bug of issue 17: the second one was refused by libgit2
        // (the local branch already had the first status commit).
        let h2 = human_push(&bare, "b.yaml", "vm b");
        let c2 = src
            .write_status(&status(&[("a", "running"), ("b", "running")]), true)
            .unwrap()
            .expect("a second status commit");
        assert_eq!(main_of(&bare), c2);
        let repo = git2::Repository::open_bare(&bare).unwrap();
        assert_eq!(repo.find_commit(c2).unwrap().parent_id(0).unwrap(), h2);
        assert!(file_at_main(&bare, ".ignis/status/b.yaml")
            .unwrap()
            .ends_with("state: running\n"));
        // Unchanged: no commit.
        assert_eq!(
            src.write_status(&status(&[("a", "running"), ("b", "running")]), true)
                .unwrap(),
            None
        );
        // A removed VM's file goes with it.
        src.write_status(&status(&[("a", "exited")]), true)
            .unwrap()
            .unwrap();
        assert!(file_at_main(&bare, ".ignis/status/b.yaml").is_none());
        assert!(file_at_main(&bare, ".ignis/status/a.yaml")
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
            .write_status(&status(&[("a", "running")]), true)
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
        prod.write_status(&status(&[("p1", "running"), ("p2", "running")]), true)
            .unwrap()
            .unwrap();
        staging
            .write_status(&status(&[("s1", "running")]), true)
            .unwrap()
            .unwrap();
        // prod's p2 goes away; staging's s1 stays.
        prod.write_status(&status(&[("p1", "running")]), true)
            .unwrap()
            .unwrap();
        let s1 = file_at_main(&bare, ".ignis/status/s1.yaml").expect("s1 kept");
        assert!(s1.starts_with("# ignis-gitops path=staging\n"), "{s1}");
        assert!(file_at_main(&bare, ".ignis/status/p2.yaml").is_none());
        // Steady: neither commits again.
        assert_eq!(
            prod.write_status(&status(&[("p1", "running")]), true)
                .unwrap(),
            None
        );
        assert_eq!(
            staging
                .write_status(&status(&[("s1", "running")]), true)
                .unwrap(),
            None
        );
        // Without prune (a bad manifest somewhere) nothing is removed.
        staging.write_status(&BTreeMap::new(), false).unwrap();
        assert!(file_at_main(&bare, ".ignis/status/s1.yaml").is_some());
    }
}
