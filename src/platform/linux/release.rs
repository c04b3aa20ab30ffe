//! Giving back the pages of code and constants (`release_read_only`).

use std::ffi::c_void;

/// Unmaps this process's pages of every loaded object's read-only
/// segments: the executable's and each shared library's text and
/// constants. The kernel maps a page again, from the page cache, when it
/// is next used. Writable segments are left alone, and with them the part
/// made read-only after relocation (`PT_GNU_RELRO` lies inside a writable
/// `PT_LOAD`): their pages are private copies that unmapping would lose.
/// The vDSO is skipped, and so is an object with text relocations (the
/// loader wrote into its read-only segments). Returns the bytes released.
pub fn release_read_only() -> usize {
    let mut released: usize = 0;
    // SAFETY: dl_iterate_phdr calls `each` for every loaded object with a
    // valid entry; `data` is `released`, which outlives the call.
    unsafe {
        libc::dl_iterate_phdr(Some(each), &mut released as *mut usize as *mut c_void);
    }
    released
}

unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> i32 {
    // SAFETY: dl_iterate_phdr passes a valid entry and our `data`.
    let (info, released) = unsafe { (&*info, &mut *(data as *mut usize)) };
    if info.dlpi_phdr.is_null() {
        return 0;
    }
    // SAFETY: the entry's program headers, `dlpi_phnum` of them.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    if has_text_relocations(info, phdrs) {
        // Its read-only pages may be relocated private copies.
        return 0;
    }
    // SAFETY: getauxval only reads the auxiliary vector.
    let vdso = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize;
    // SAFETY: sysconf reads a constant.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as usize,
        _ => return 1,
    };
    for ph in phdrs {
        if ph.p_type != libc::PT_LOAD || ph.p_flags & libc::PF_W != 0 {
            continue;
        }
        let start = (info.dlpi_addr as usize).wrapping_add(ph.p_vaddr as usize);
        let end = start.saturating_add(ph.p_filesz as usize);
        if (start..end.max(start + 1)).contains(&vdso) {
            continue;
        }
        // Whole pages only: a page shared with a writable neighbour stays.
        let lo = start.div_ceil(page) * page;
        let hi = end / page * page;
        if hi <= lo {
            continue;
        }
        // SAFETY: the range is whole pages of a read-only file mapping of
        // a loaded object; MADV_DONTNEED on it only drops page-table
        // entries, which the next access faults back from the file.
        if unsafe { libc::madvise(lo as *mut c_void, hi - lo, libc::MADV_DONTNEED) } == 0 {
            *released += hi - lo;
        }
    }
    0
}

/// One entry of an object's dynamic section (Elf64_Dyn).
#[repr(C)]
struct Dyn {
    tag: i64,
    val: u64,
}

const DT_NULL: i64 = 0;
const DT_TEXTREL: i64 = 22;
const DT_FLAGS: i64 = 30;
const DF_TEXTREL: u64 = 0x4;

/// Whether the object's dynamic section asks for relocations in its
/// read-only segments (DT_TEXTREL or DF_TEXTREL).
fn has_text_relocations(info: &libc::dl_phdr_info, phdrs: &[libc::Elf64_Phdr]) -> bool {
    let Some(dynamic) = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC) else {
        return false;
    };
    let mut at = (info.dlpi_addr as usize).wrapping_add(dynamic.p_vaddr as usize) as *const Dyn;
    let count = dynamic.p_memsz as usize / std::mem::size_of::<Dyn>();
    for _ in 0..count {
        // SAFETY: inside the object's PT_DYNAMIC segment, which is
        // mapped while the object is loaded; entries end at DT_NULL.
        let d = unsafe { &*at };
        match d.tag {
            DT_NULL => break,
            DT_TEXTREL => return true,
            DT_FLAGS if d.val & DF_TEXTREL != 0 => return true,
            _ => {}
        }
        // SAFETY: still within the segment (count bounds the walk).
        at = unsafe { at.add(1) };
    }
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// An object whose dynamic section is `entries`, loaded at 0.
    fn text_relocated(entries: &[Dyn]) -> bool {
        // SAFETY: both are plain C data; the fields read are set below.
        let (mut info, mut ph): (libc::dl_phdr_info, libc::Elf64_Phdr) =
            unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        ph.p_type = libc::PT_DYNAMIC;
        ph.p_vaddr = entries.as_ptr() as u64;
        ph.p_memsz = std::mem::size_of_val(entries) as u64;
        info.dlpi_addr = 0;
        has_text_relocations(&info, &[ph])
    }

    #[test]
    fn an_object_with_text_relocations_is_left_alone() {
        let d = |tag, val| Dyn { tag, val };
        assert!(text_relocated(&[d(1, 0), d(DT_TEXTREL, 0), d(DT_NULL, 0)]));
        assert!(text_relocated(&[
            d(DT_FLAGS, DF_TEXTREL | 0x8),
            d(DT_NULL, 0)
        ]));
        assert!(!text_relocated(&[d(DT_FLAGS, 0x8), d(DT_NULL, 0)]));
        // Entries after DT_NULL are not read.
        assert!(!text_relocated(&[d(DT_NULL, 0), d(DT_TEXTREL, 0)]));
        // This process's own objects (archon's test binary, libc) have none.
        let mut released = 0usize;
        // SAFETY: as in release_read_only, without the madvise: count only.
        unsafe extern "C" fn any(
            info: *mut libc::dl_phdr_info,
            _: usize,
            data: *mut c_void,
        ) -> i32 {
            let info = unsafe { &*info };
            let phdrs =
                unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
            if has_text_relocations(info, phdrs) {
                unsafe { *(data as *mut usize) += 1 };
            }
            0
        }
        unsafe { libc::dl_iterate_phdr(Some(any), &mut released as *mut usize as *mut c_void) };
        assert_eq!(released, 0);
    }
}
