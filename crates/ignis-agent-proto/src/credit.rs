//! Credit-based flow control of one direction of one session.

use std::sync::{Condvar, Mutex};

/// Bytes a sender may still send. `take` blocks until the receiver grants
/// more (or the session closes).
#[derive(Debug)]
pub struct Credit {
    state: Mutex<(u64, bool)>,
    cv: Condvar,
}

impl Credit {
    pub fn new(initial: u64) -> Self {
        Self {
            state: Mutex::new((initial, false)),
            cv: Condvar::new(),
        }
    }

    /// The receiver consumed `n` bytes. The total is capped so a peer that
    /// grants too much cannot overflow it.
    pub fn grant(&self, n: u64) {
        let mut s = self.state.lock().expect("credit mutex");
        s.0 = s.0.saturating_add(n).min(crate::WINDOW * 64);
        self.cv.notify_all();
    }

    /// Wakes every waiter for good.
    pub fn close(&self) {
        self.state.lock().expect("credit mutex").1 = true;
        self.cv.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().expect("credit mutex").1
    }

    /// Takes up to `max` bytes of credit, waiting while there is none;
    /// `None` once closed.
    pub fn take(&self, max: usize) -> Option<usize> {
        let mut s = self.state.lock().expect("credit mutex");
        loop {
            if s.1 {
                return None;
            }
            if s.0 > 0 {
                let n = usize::try_from(s.0).unwrap_or(usize::MAX).min(max);
                s.0 -= n as u64;
                return Some(n);
            }
            s = self.cv.wait(s).expect("credit mutex");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn take_waits_for_grants_and_close_wakes() {
        let c = Arc::new(Credit::new(10));
        assert_eq!(c.take(4), Some(4));
        assert_eq!(c.take(100), Some(6));
        let c2 = c.clone();
        let t = std::thread::spawn(move || c2.take(100));
        std::thread::sleep(std::time::Duration::from_millis(20));
        c.grant(7);
        assert_eq!(t.join().unwrap(), Some(7));
        let c2 = c.clone();
        let t = std::thread::spawn(move || c2.take(1));
        c.close();
        assert_eq!(t.join().unwrap(), None);
    }
}
