//! Restart policies (`--restart`, the manifest's `restart`), as Docker's:
//! what the VM's supervisor does when the VM ends on its own, and whether
//! `ignis daemon` brings it back after a host reboot.

use serde::{Deserialize, Serialize};

/// `no`, `on-failure[:N]`, `always` or `unless-stopped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RestartPolicy {
    /// Never restart (a guest `reboot` still reboots).
    #[default]
    No,
    /// Restart when it ends with a non-zero code (at most `max` times).
    OnFailure { max: Option<u32> },
    /// Restart whenever it ends on its own; back after a host reboot.
    Always,
    /// As `always`, but not back after a host reboot when the user
    /// stopped it.
    UnlessStopped,
}

/// A `--restart` value that is none of the policies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid restart policy '{0}': want no, on-failure[:N], always or unless-stopped")]
pub struct BadRestartPolicy(pub String);

impl std::str::FromStr for RestartPolicy {
    type Err = BadRestartPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadRestartPolicy(s.to_string());
        Ok(match s {
            "" | "no" => Self::No,
            "always" => Self::Always,
            "unless-stopped" => Self::UnlessStopped,
            "on-failure" => Self::OnFailure { max: None },
            other => {
                let n = other.strip_prefix("on-failure:").ok_or_else(bad)?;
                Self::OnFailure {
                    max: Some(n.parse().map_err(|_| bad())?),
                }
            }
        })
    }
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::No => f.write_str("no"),
            Self::OnFailure { max: None } => f.write_str("on-failure"),
            Self::OnFailure { max: Some(n) } => write!(f, "on-failure:{n}"),
            Self::Always => f.write_str("always"),
            Self::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

impl TryFrom<String> for RestartPolicy {
    type Error = BadRestartPolicy;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<RestartPolicy> for String {
    fn from(p: RestartPolicy) -> String {
        p.to_string()
    }
}

impl RestartPolicy {
    pub fn is_no(&self) -> bool {
        *self == Self::No
    }

    /// Whether a VM that ended on its own with `code` after `restarts`
    /// restarts starts again.
    pub fn restarts(&self, code: Option<i32>, restarts: u32) -> bool {
        match self {
            Self::No => false,
            Self::Always | Self::UnlessStopped => true,
            Self::OnFailure { max } => code != Some(0) && max.is_none_or(|m| restarts < m),
        }
    }

    /// Whether the VM comes back when the host rebooted under it (`ignis
    /// daemon` at start-up); `stopped_by_user`: its last run ended by
    /// `ignis stop`/`kill`.
    pub fn after_host_reboot(&self, stopped_by_user: bool) -> bool {
        match self {
            Self::Always => true,
            Self::UnlessStopped => !stopped_by_user,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_print_and_decide() {
        for s in [
            "no",
            "on-failure",
            "on-failure:3",
            "always",
            "unless-stopped",
        ] {
            let p: RestartPolicy = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<RestartPolicy>(&json).unwrap(), p);
        }
        for bad in ["yes", "on-failure:", "on-failure:-1", "always:2"] {
            let e = bad.parse::<RestartPolicy>().unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert!(serde_json::from_str::<RestartPolicy>("\"sometimes\"").is_err());
        let p: RestartPolicy = "on-failure:2".parse().unwrap();
        assert!(p.restarts(Some(1), 0) && p.restarts(None, 1));
        assert!(!p.restarts(Some(1), 2), "at most 2 restarts");
        assert!(!p.restarts(Some(0), 0), "a success is no failure");
        assert!(RestartPolicy::Always.restarts(Some(0), 1000));
        assert!(!RestartPolicy::No.restarts(Some(1), 0));
        assert!(RestartPolicy::Always.after_host_reboot(true));
        assert!(!RestartPolicy::UnlessStopped.after_host_reboot(true));
        assert!(RestartPolicy::UnlessStopped.after_host_reboot(false));
        assert!(!p.after_host_reboot(false));
    }
}
