//! Users and programs of the guest's root filesystem.

use std::path::Path;

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// Why a user, group or program is not in the guest's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("user '{0}' not found in the image's /etc/passwd")]
    User(String),
    #[error("group '{0}' not found in the image's /etc/group")]
    Group(String),
    #[error("executable '{program}' not found (PATH={path})")]
    Program { program: String, path: String },
}

fn fields(db: &str) -> impl Iterator<Item = Vec<&str>> {
    db.lines().map(|l| l.split(':').collect::<Vec<_>>())
}

/// Resolves `user` (`name`, `uid`, `name:group` or `uid:gid`, as OCI
/// `User`) against `<root>/etc/passwd` and `<root>/etc/group`.
pub fn resolve_user(root: &str, user: &str) -> Result<User, ResolveError> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let read = |f: &str| std::fs::read_to_string(format!("{root}/etc/{f}")).unwrap_or_default();
    let passwd = read("passwd");
    let entry = match u.parse::<u32>() {
        Ok(n) => fields(&passwd).find(|f| f.get(2).and_then(|v| v.parse().ok()) == Some(n)),
        Err(_) => fields(&passwd).find(|f| f.first() == Some(&u)),
    };
    let (uid, primary_gid, home) = match (u.parse::<u32>(), &entry) {
        (_, Some(f)) => (
            f.get(2).and_then(|v| v.parse().ok()).unwrap_or(0),
            f.get(3).and_then(|v| v.parse().ok()),
            f.get(5).map(|h| h.to_string()),
        ),
        (Ok(n), None) => (n, None, None),
        (Err(_), None) => return Err(ResolveError::User(u.into())),
    };
    let gid = match g {
        None => primary_gid.unwrap_or(uid),
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => fields(&read("group"))
                .find(|f| f.first() == Some(&g))
                .and_then(|f| f.get(2)?.parse().ok())
                .ok_or_else(|| ResolveError::Group(g.into()))?,
        },
    };
    Ok(User {
        uid,
        gid,
        home: home.filter(|h| !h.is_empty()).unwrap_or_else(|| "/".into()),
    })
}

/// Finds `prog` under `root` using `PATH` from `env` (or the default).
pub fn resolve_program(root: &str, prog: &str, env: &[String]) -> Result<String, ResolveError> {
    if prog.contains('/') {
        return Ok(prog.to_string());
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = format!("{}/{prog}", dir.trim_end_matches('/'));
        if Path::new(&format!("{root}{candidate}")).exists() {
            return Ok(candidate);
        }
    }
    Err(ResolveError::Program {
        program: prog.into(),
        path: path.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_by_name_uid_and_group() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:34:www:/var/www:/bin/false\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let root = d.path().to_str().unwrap();
        let u = |s| resolve_user(root, s);
        assert_eq!(
            u("www").unwrap(),
            User {
                uid: 33,
                gid: 34,
                home: "/var/www".into()
            }
        );
        assert_eq!(u("33:staff").unwrap().gid, 50);
        assert_eq!(
            u("1000").unwrap(),
            User {
                uid: 1000,
                gid: 1000,
                home: "/".into()
            }
        );
        assert_eq!(
            u("nobody").unwrap_err(),
            ResolveError::User("nobody".into())
        );
        assert_eq!(
            u("www:nogroup").unwrap_err().to_string(),
            "group 'nogroup' not found in the image's /etc/group"
        );
        std::fs::create_dir_all(d.path().join("bin")).unwrap();
        std::fs::write(d.path().join("bin/sh"), "").unwrap();
        assert_eq!(resolve_program(root, "sh", &[]).unwrap(), "/bin/sh");
        assert_eq!(
            resolve_program(root, "nope", &["PATH=/bin".into()])
                .unwrap_err()
                .to_string(),
            "executable 'nope' not found (PATH=/bin)"
        );
    }
}
