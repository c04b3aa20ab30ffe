//! How archon is linked: the hot text (build.rs, link/hot-text.txt) is in
//! the binary, and its list still names functions that exist.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

const ARCHON: &str = env!("CARGO_BIN_EXE_archon");

/// (name, size) of every section of an ELF64 little-endian file.
fn sections(bytes: &[u8]) -> Vec<(String, u64)> {
    let u16_at = |o: usize| u16::from_le_bytes(bytes[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    assert_eq!(&bytes[..5], b"\x7fELF\x02", "not an ELF64 file");
    let shoff = u64_at(0x28) as usize;
    let (shentsize, shnum, shstrndx) = (u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let strtab = u64_at(shoff + shstrndx * shentsize + 0x18) as usize;
    (0..shnum)
        .map(|i| {
            let h = shoff + i * shentsize;
            let name_at = strtab + u32_at(h);
            let end = bytes[name_at..].iter().position(|&b| b == 0).unwrap();
            let name = String::from_utf8_lossy(&bytes[name_at..name_at + end]).into_owned();
            (name, u64_at(h + 0x20))
        })
        .collect()
}

#[test]
fn the_start_up_text_is_grouped_in_its_own_section() {
    if !cfg!(target_os = "linux") {
        eprintln!("!!! SKIPPING the hot-text test: the linker script is for Linux only");
        return;
    }
    let bytes = std::fs::read(ARCHON).unwrap();
    let secs = sections(&bytes);
    let hot = secs.iter().find(|(n, _)| n == ".text.archon_hot");
    let (_, size) = hot.unwrap_or_else(|| panic!("no .text.archon_hot in {ARCHON}: {secs:?}"));
    // The loop, the start-up and the exit of even a debug build are well
    // over this; an empty section means the list matched nothing (names
    // changed: run scripts/hot-text.sh).
    assert!(*size > 64 * 1024, "hot text is only {size} bytes");
    let text = secs
        .iter()
        .find(|(n, _)| n == ".text")
        .map(|s| s.1)
        .unwrap_or(0);
    assert!(
        *size < text,
        "hot text {size} is not smaller than the rest {text}"
    );
}
