//! Fault injection for crash-safety tests.
//!
//! With `IGNIS_FAULT=<point>` in the environment, the process kills itself
//! with SIGKILL when it reaches `<point>`: the same as a power cut or an
//! OOM kill at that step, with no destructor or cleanup running. Tests run
//! the real binary this way and check that the next command finds a
//! consistent state. Points are named `<operation>:<step>`.

pub fn point(name: &str) {
    if std::env::var_os("IGNIS_FAULT").is_some_and(|v| v == name) {
        eprintln!("IGNIS_FAULT: killing myself at {name}");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        // Unreachable in practice; never continue past a fault point.
        std::process::abort();
    }
}
