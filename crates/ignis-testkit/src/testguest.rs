//! The tiny test guest for the Firecracker live-mechanics tier: a static
//! x86_64 ELF (no Linux) that Firecracker loads like a vmlinux and enters in
//! 64-bit mode. It writes the guest init's ready line to the serial port,
//! then a `.` line every 2^30 TSC cycles (so a restored
//! snapshot shows the guest continuing), so `ignis run`, `logs`, `ps`,
//! `stop`, `rm`, snapshots and forks can be exercised on a real Firecracker
//! where no Linux guest boots (nested PVM) or quickly.
//!
//! ```text
//! 0x100000  ELF header (64) + one PT_LOAD program header (56)
//! 0x100078  mov dx, 0x3f8 ; lea rsi, [rip+msg] ; mov ecx, len
//!           rep outsb
//!      2:   rdtsc ; mov esi, eax
//!      1:   rdtsc ; sub eax, esi ; cmp eax, 1<<30 ; jb 1b
//!           mov dx, 0x3f8 ; mov al, '.' ; out dx, al ; mov al, '\n' ; out dx, al ; jmp 2b
//!           msg: "\nIGNIS-INIT ready\n"
//! ```

/// The line the guest prints.
pub const READY: &str = "\nIGNIS-INIT ready\n";

const LOAD: u64 = 0x10_0000;

pub fn elf() -> Vec<u8> {
    build(true)
}

/// The idle variant: the ready line, then the vCPU halts for good (`cli;
/// hlt`): a VM that costs no CPU, for benchmarks that run many at once.
pub fn elf_idle() -> Vec<u8> {
    build(false)
}

fn build(dots: bool) -> Vec<u8> {
    let msg = READY.as_bytes();
    let mut code: Vec<u8> = Vec::new();
    code.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
    code.extend_from_slice(&[0x48, 0x8d, 0x35]); // lea rsi, [rip+disp32]
    let lea_end = code.len() + 4;
    // mov ecx,len; rep outsb; then forever: wait 2^30 TSC cycles (rdtsc
    // into esi; rdtsc; sub eax,esi; cmp eax,1<<30; jb back), mov dx,0x3f8
    // (rdtsc clobbers edx), out '.', out '\n'. Paced by the TSC, not by a
    // loop count: a counted loop runs ~1000x slower under nested PVM than
    // on real KVM. A line per dot: Firecracker's serial output is
    // line-buffered.
    let tail = [
        0xb9, 0, 0, 0, 0, // mov ecx, len
        0xf3, 0x6e, // rep outsb
        0x0f, 0x31, // 2: rdtsc
        0x89, 0xc6, // mov esi, eax
        0x0f, 0x31, // 1: rdtsc
        0x29, 0xf0, // sub eax, esi
        0x3d, 0, 0, 0, 0x40, // cmp eax, 1<<30
        0x72, 0xf5, // jb 1b
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'.', 0xee, // mov al, '.'; out dx, al
        0xb0, b'\n', 0xee, // mov al, '\n'; out dx, al
        0xeb, 0xe5, // jmp 2b
    ];
    // Idle: mov ecx,len; rep outsb; cli; 1: hlt; jmp 1b.
    let idle = [0xb9, 0, 0, 0, 0, 0xf3, 0x6e, 0xfa, 0xf4, 0xeb, 0xfd];
    let tail: &[u8] = if dots { &tail } else { &idle };
    let disp = u32::try_from(tail.len()).expect("small"); // msg follows the tail
    code.extend_from_slice(&disp.to_le_bytes());
    assert_eq!(code.len(), lea_end);
    let mut t = tail.to_vec();
    t[1..5].copy_from_slice(&u32::try_from(msg.len()).expect("small").to_le_bytes());
    code.extend_from_slice(&t);
    code.extend_from_slice(msg);

    let entry = LOAD + 64 + 56;
    let total = 64 + 56 + code.len() as u64;
    let mut e = vec![0u8; 64];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 2; // 64-bit
    e[5] = 1; // little endian
    e[6] = 1; // version
    e[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e[0x12..0x14].copy_from_slice(&0x3eu16.to_le_bytes()); // x86_64
    e[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
    e[0x18..0x20].copy_from_slice(&entry.to_le_bytes());
    e[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // phoff
    e[0x34..0x36].copy_from_slice(&64u16.to_le_bytes()); // ehsize
    e[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // phentsize
    e[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // phnum
    let mut ph = vec![0u8; 56];
    ph[0..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    ph[4..8].copy_from_slice(&5u32.to_le_bytes()); // R+X
    ph[8..16].copy_from_slice(&0u64.to_le_bytes()); // offset
    ph[16..24].copy_from_slice(&LOAD.to_le_bytes()); // vaddr
    ph[24..32].copy_from_slice(&LOAD.to_le_bytes()); // paddr
    ph[32..40].copy_from_slice(&total.to_le_bytes()); // filesz
    ph[40..48].copy_from_slice(&total.to_le_bytes()); // memsz
    ph[48..56].copy_from_slice(&0x1000u64.to_le_bytes()); // align
    e.extend_from_slice(&ph);
    e.extend_from_slice(&code);
    e
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_guest_is_a_loadable_x86_64_executable() {
        let idle = super::elf_idle();
        let disp = u32::from_le_bytes(idle[0x78 + 7..0x78 + 11].try_into().unwrap()) as usize;
        let msg_at = 0x78 + 11 + disp;
        assert_eq!(
            &idle[msg_at..msg_at + super::READY.len()],
            super::READY.as_bytes()
        );
        assert_eq!(
            &idle[msg_at - 4..msg_at],
            [0xfa, 0xf4, 0xeb, 0xfd],
            "cli; hlt; jmp hlt"
        );
        let e = super::elf();
        assert_eq!(&e[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([e[0x12], e[0x13]]), 0x3e);
        let entry = u64::from_le_bytes(e[0x18..0x20].try_into().unwrap());
        assert_eq!(entry, 0x100078);
        assert!(String::from_utf8_lossy(&e).contains("IGNIS-INIT ready"));
        // The rip-relative displacement lands on the message.
        let disp = u32::from_le_bytes(e[0x78 + 7..0x78 + 11].try_into().unwrap()) as usize;
        let msg_at = 0x78 + 11 + disp;
        assert_eq!(
            &e[msg_at..msg_at + super::READY.len()],
            super::READY.as_bytes()
        );
    }
}
