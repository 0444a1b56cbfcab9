//! A fake host network that records what it was asked to do (tests of the
//! core's network wiring without root or netlink).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{NetError, NetHost, Teardown};

#[derive(Debug, Clone, Default)]
pub struct FakeNet {
    calls: Arc<Mutex<Vec<String>>>,
    /// What uses the bridge, as the host would tell (`None`: nothing).
    in_use: Arc<Mutex<Option<String>>>,
}

impl FakeNet {
    /// Makes the bridge look used (a TAP of another state root attached),
    /// or unused with `None`.
    pub fn set_in_use(&self, what: Option<&str>) {
        *self.in_use.lock().expect("fake net") = what.map(str::to_string);
    }

    /// Every call so far, as `op arg...`; rules as their nft JSON.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("fake net").clone()
    }

    fn record(&self, s: String) {
        self.calls.lock().expect("fake net").push(s);
    }
}

impl NetHost for FakeNet {
    fn ensure_bridge(&self, name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
        self.record(format!("ensure_bridge {name} {gateway}/{prefix}"));
        Ok(())
    }
    fn ensure_bridge6(&self, name: &str, gateway: Ipv6Addr, prefix: u8) -> Result<(), NetError> {
        self.record(format!("ensure_bridge6 {name} {gateway}/{prefix}"));
        Ok(())
    }
    fn attach_tap(&self, tap: &str, bridge: &str, _timeout: Duration) -> Result<(), NetError> {
        self.record(format!("attach_tap {tap} {bridge}"));
        Ok(())
    }
    fn delete_link(&self, name: &str) -> Result<(), NetError> {
        self.record(format!("delete_link {name}"));
        Ok(())
    }
    fn apply_rules(&self, ruleset: &serde_json::Value) -> Result<(), NetError> {
        self.record(format!("apply_rules {ruleset}"));
        Ok(())
    }
    fn create_netns(&self, ns: &str) -> Result<(), NetError> {
        self.record(format!("create_netns {ns}"));
        Ok(())
    }
    fn delete_netns(&self, ns: &str) -> Result<(), NetError> {
        self.record(format!("delete_netns {ns}"));
        Ok(())
    }
    fn redirect_tap(
        &self,
        ns: &str,
        ifname: &str,
        tap: &str,
        owner: (u32, u32),
    ) -> Result<(), NetError> {
        self.record(format!(
            "redirect_tap {ns} {ifname} {tap} {}:{}",
            owner.0, owner.1
        ));
        Ok(())
    }
    fn move_to_host(&self, ns: &str, link: &str, _timeout: Duration) -> Result<(), NetError> {
        self.record(format!("move_to_host {ns} {link}"));
        Ok(())
    }
    fn create_macvtap(
        &self,
        name: &str,
        link: &str,
        mac: &str,
        node: &std::path::Path,
    ) -> Result<(), NetError> {
        if link == "nosuch0" {
            return Err(NetError::NoLink(link.into()));
        }
        self.record(format!("create_macvtap {name} {link} {mac}"));
        // A plain file stands in for the character device.
        std::fs::write(node, b"").map_err(|e| NetError::Netlink(e.to_string()))
    }
    fn link_exists(&self, link: &str) -> Result<bool, NetError> {
        Ok(link != "nosuch0")
    }
    fn teardown(&self, bridge: &str) -> Result<Teardown, NetError> {
        self.record(format!("teardown {bridge}"));
        Ok(match self.in_use.lock().expect("fake net").clone() {
            Some(what) => Teardown::InUse(what),
            None => Teardown::Removed,
        })
    }
}
