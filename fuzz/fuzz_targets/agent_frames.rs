//! Any byte stream into the agent protocol decoder, in arbitrary chunks:
//! no panic, memory bounded by one frame plus one push, and every decoded
//! control payload parsed the way the agent parses it.
#![no_main]

use ignis_agent_proto::{Decoder, ErrorMsg, ExitMsg, Hello, Kind, Request, HEADER_LEN, MAX_PAYLOAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut dec = Decoder::new();
    let split = data.first().map(|b| usize::from(*b) + 1).unwrap_or(1);
    for chunk in data.chunks(split) {
        dec.push(chunk);
        while let Some(r) = dec.next_frame() {
            let Ok(f) = r else { continue };
            match f.kind {
                Kind::Open => drop(f.parse::<Request>()),
                Kind::Hello => drop(f.parse::<Hello>()),
                Kind::Exit => drop(f.parse::<ExitMsg>()),
                Kind::Error => drop(f.parse::<ErrorMsg>()),
                _ => drop(f.as_u32()),
            }
        }
        assert!(dec.buffered() <= HEADER_LEN + MAX_PAYLOAD as usize + chunk.len());
    }
});
