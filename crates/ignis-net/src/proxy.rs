//! `-p [::1]:HOST:VM`: IPv6 has no `route_localnet`, so the kernel drops
//! loopback traffic DNATed out of the bridge; a published port on `::1`
//! is a TCP relay in the VM's supervisor instead (as Docker's userland
//! proxy), for as long as the VM runs.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A running relay; stops accepting when dropped (open connections run to
/// their end).
pub struct TcpProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl TcpProxy {
    /// Listens on `listen`, relays each connection to `target`.
    pub fn start(listen: SocketAddr, target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name(format!("proxy-{}", addr.port()))
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = conn else { continue };
                    let _ = std::thread::Builder::new()
                        .name("proxy-conn".into())
                        .spawn(move || relay(client, target));
                }
            })?;
        Ok(Self { addr, stop })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn relay(client: TcpStream, target: SocketAddr) {
    let Ok(upstream) = TcpStream::connect_timeout(&target, std::time::Duration::from_secs(10))
    else {
        return;
    };
    let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let (mut c, mut u) = (client, upstream);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut u, &mut c);
    let _ = c.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn relays_both_ways_and_stops_when_dropped() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = server.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf.to_ascii_uppercase()).unwrap();
        });
        let proxy = TcpProxy::start("127.0.0.1:0".parse().unwrap(), target).unwrap();
        let mut c = TcpStream::connect(proxy.local_addr()).unwrap();
        c.write_all(b"hello").unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        assert_eq!(got, "HELLO");
        echo.join().unwrap();
        let addr = proxy.local_addr();
        drop(proxy);
        // The listener is gone once the accept loop saw the flag.
        assert!(
            crate::proxy::tests::eventually_refused(addr),
            "still listening on {addr}"
        );
    }

    fn eventually_refused(addr: SocketAddr) -> bool {
        (0..200).any(|_| {
            let refused = TcpStream::connect(addr).is_err();
            if !refused {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            refused
        })
    }
}
