//! What a process costs on FreeBSD: sysctl `kern.proc.pid` (kinfo_proc
//! and its rusage), read by pid and then checked against the process
//! descriptor: a process whose descriptor says it exited gives no sample,
//! so a reused pid's figures are never reported.

use super::super::types::{OwnUsage, ProcHandle, RawSample};
use super::process::kinfo;
use std::io;

/// archon's own CPU and memory (kern.proc.pid of itself).
pub fn own_usage() -> Option<OwnUsage> {
    let kp = kinfo(super::super::posix::getpid())?;
    // SAFETY: sysconf only queries.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let ru = &kp.ki_rusage;
    let tv_ns = |tv: &libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1000;
    Some(OwnUsage {
        cpu_ns: tv_ns(&ru.ru_utime) + tv_ns(&ru.ru_stime),
        rss_bytes: kp.ki_rssize.max(0) as u64 * page,
        vsize_bytes: Some(kp.ki_size as u64),
        fds: None,
        max_fds: super::super::posix::nofile_soft(),
    })
}

#[derive(Debug)]
pub struct ProcStats {
    page: u64,
}

impl ProcStats {
    pub fn open(h: &ProcHandle, _keep_open: bool) -> io::Result<ProcStats> {
        if h.has_exited() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        // SAFETY: sysconf only queries.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        Ok(ProcStats { page })
    }

    /// CPU time, resident set, its peak (ru_maxrss), threads and context
    /// switches; disk bytes, fds, PSS and network bytes are not given
    /// (rusage counts blocks, not bytes).
    pub fn sample(&mut self, h: &ProcHandle, _full: bool, _pss: bool) -> io::Result<RawSample> {
        let kp = kinfo(h.pid()).ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
        if h.has_exited() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        let ru = &kp.ki_rusage;
        let tv_ns =
            |tv: &libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1000;
        Ok(RawSample {
            cpu_ns: tv_ns(&ru.ru_utime) + tv_ns(&ru.ru_stime),
            rss_bytes: kp.ki_rssize.max(0) as u64 * self.page,
            peak_rss_bytes: Some(ru.ru_maxrss.max(0) as u64 * 1024),
            threads: Some(kp.ki_numthreads.max(0) as u32),
            vcsw: Some(ru.ru_nvcsw.max(0) as u64),
            ivcsw: Some(ru.ru_nivcsw.max(0) as u64),
            ..RawSample::default()
        })
    }
}
