//! The GitOps source (git2): a bare cache clone fetched every interval; the
//! manifests are read from the commit's tree (no checkout). With
//! `write_status`, the observed status of each VM is committed under
//! `.ignis/status/` (never read as manifests) and pushed, and only when it
//! changed: the reconciler's own commits cannot make it loop.

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

    /// Commits `.ignis/status/<name>.yaml` on top of `parent` when it
    /// differs from what is there, and pushes. Returns the new commit.
    pub fn write_status(
        &self,
        parent: git2::Oid,
        status: &BTreeMap<String, String>,
    ) -> Result<Option<git2::Oid>, git2::Error> {
        let commit = self.repo.find_commit(parent)?;
        let root = commit.tree()?;
        let mut st = self.repo.treebuilder(None)?;
        for (name, yaml) in status {
            let blob = self.repo.blob(yaml.as_bytes())?;
            st.insert(format!("{name}.yaml"), blob, 0o100_644)?;
        }
        let status_tree = st.write()?;
        let existing = root
            .get_name(STATUS_DIR)
            .and_then(|e| e.to_object(&self.repo).ok())
            .and_then(|o| o.into_tree().ok());
        let mut dot = self.repo.treebuilder(existing.as_ref())?;
        dot.insert("status", status_tree, 0o040_000)?;
        let dot_tree = dot.write()?;
        let mut rb = self.repo.treebuilder(Some(&root))?;
        rb.insert(STATUS_DIR, dot_tree, 0o040_000)?;
        let new_root = rb.write()?;
        if new_root == root.id() {
            return Ok(None);
        }
        let sig = git2::Signature::now(AUTHOR, "gitops@ignis.invalid")?;
        let tree = self.repo.find_tree(new_root)?;
        let b = &self.opts.branch;
        let oid = self.repo.commit(
            Some(&format!("refs/heads/{b}")),
            &sig,
            &sig,
            "ignis: observed status",
            &tree,
            &[&commit],
        )?;
        let mut remote = self.repo.find_remote("origin")?;
        let mut po = git2::PushOptions::new();
        po.remote_callbacks(callbacks(&self.opts));
        remote.push(&[format!("refs/heads/{b}:refs/heads/{b}")], Some(&mut po))?;
        Ok(Some(oid))
    }
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
