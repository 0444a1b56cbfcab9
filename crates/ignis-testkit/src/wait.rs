//! Waiting on a condition instead of sleeping a fixed time: the only
//! polling loop the integration tests need.

use std::time::{Duration, Instant};

/// Polls `cond` every 50 ms until it holds; panics naming `what` after
/// `timeout`.
pub fn until(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    if !within(timeout, cond) {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// Polls `cond` every 50 ms; whether it held within `timeout`.
pub fn within(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `f` until it returns `Some`; panics naming `what` after `timeout`.
pub fn for_value<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let mut out = None;
    until(what, timeout, || {
        out = f();
        out.is_some()
    });
    out.expect("checked by until")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_the_condition_holds_and_panics_on_timeout() {
        let mut n = 0;
        until("three polls", Duration::from_secs(5), || {
            n += 1;
            n == 3
        });
        assert_eq!(n, 3);
        assert!(!within(Duration::from_millis(120), || false));
        assert_eq!(for_value("a value", Duration::from_secs(1), || Some(7)), 7);
        let r = std::panic::catch_unwind(|| until("never", Duration::from_millis(60), || false));
        let msg = r.unwrap_err();
        let msg = msg.downcast_ref::<String>().unwrap();
        assert!(msg.contains("waiting for never"), "{msg}");
    }
}
