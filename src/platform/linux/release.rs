//! Giving back the pages of code and constants (`release_read_only`).

use std::ffi::c_void;

/// Unmaps this process's pages of every loaded object's read-only
/// segments: the executable's and each shared library's text and
/// constants. The kernel maps a page again, from the page cache, when it
/// is next used. Writable segments are left alone, and with them the part
/// made read-only after relocation (`PT_GNU_RELRO` lies inside a writable
/// `PT_LOAD`): their pages are private copies that unmapping would lose.
/// The vDSO is skipped. Returns the bytes released.
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
