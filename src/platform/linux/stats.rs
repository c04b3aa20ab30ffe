//! What a process costs, from /proc, keyed by its handle: `/proc/<pid>` is
//! opened once while the pidfd says the process lives, and every later read
//! is relative to that directory fd, which stays bound to that process (a
//! read after it is gone fails with ESRCH, even if its pid is reused).
//! Asked to keep them, it also holds `stat`, `status`, `io` and the `fd`
//! directory open and re-reads them in place (`pread` at 0 regenerates a
//! /proc file; `lseek` to 0 rewinds a directory): one system call a file
//! instead of a path walk, an open and a close.

use super::super::types::{OwnUsage, ProcHandle, RawSample};
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A process's /proc directory, held open.
#[derive(Debug)]
pub struct ProcStats {
    dir: OwnedFd,
    ns_per_tick: u64,
    page: u64,
    /// archon's own network namespace (its inode), to tell whether the
    /// process is in another one.
    own_netns: Option<u64>,
    /// `stat`, `status`, `io` and `fd`, once read, when asked to keep them.
    kept: Option<[Option<OwnedFd>; 4]>,
    /// Full samples taken, and whether the process was in another network
    /// namespace when last looked (every `NETNS_EVERY` full samples).
    full_samples: u32,
    other_netns: bool,
}

/// A process's network namespace is looked at on its first full sample
/// and every this many after (the look is a path walk and a third of a
/// stat read): one that moves to a namespace of its own shows its bytes
/// that many samples late at most.
const NETNS_EVERY: u32 = 16;

/// The files a sample reads, as indexes into `ProcStats::kept`.
const STAT: usize = 0;
const STATUS: usize = 1;
const IO: usize = 2;
const FD: usize = 3;
const NAMES: [&CStr; 4] = [c"stat", c"status", c"io", c"fd"];

fn open_at(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: a valid dirfd and NUL-terminated relative path.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads a small /proc file whole into `buf`; returns its length. A
/// /proc file is generated whole by one read into a buffer big enough, so
/// a short read is the end (no second read for the EOF).
fn read_small(dir: RawFd, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    let f = open_at(dir, name, libc::O_RDONLY)?;
    let mut n = 0;
    while n < buf.len() {
        // SAFETY: reading into the rest of our buffer.
        let r = unsafe { libc::read(f.as_raw_fd(), buf[n..].as_mut_ptr().cast(), buf.len() - n) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            break;
        }
        n += r as usize;
        if n < buf.len() && n > 0 {
            break;
        }
    }
    Ok(n)
}

/// Reads a /proc file held open, from its start, whole into `buf`.
fn pread_small(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: reading into our buffer.
        let r = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn ino(path: &CStr, dir: Option<RawFd>) -> Option<u64> {
    // SAFETY: stat into a local.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        let r = match dir {
            Some(d) => libc::fstatat(d, path.as_ptr(), &mut st, 0),
            None => libc::stat(path.as_ptr(), &mut st),
        };
        (r == 0).then_some(st.st_ino)
    }
}

/// The values of `keys` in a `Key: value [kB]` file (/proc/PID/status,
/// io, smaps_rollup), in one pass over its bytes; `kB` values in bytes.
fn fields<const N: usize>(text: &[u8], keys: [&[u8]; N]) -> [Option<u64>; N] {
    let mut out = [None; N];
    let mut left = N;
    for line in text.split(|&b| b == b'\n') {
        let Some(k) = keys.iter().position(|k| line.starts_with(k)) else {
            continue;
        };
        if out[k].is_some() {
            continue;
        }
        let rest = &line[keys[k].len()..];
        let mut v: Option<u64> = None;
        for &b in rest.iter().skip_while(|b| b.is_ascii_whitespace()) {
            if !b.is_ascii_digit() {
                break;
            }
            v = v
                .unwrap_or(0)
                .checked_mul(10)
                .and_then(|x| x.checked_add(u64::from(b - b'0')));
            if v.is_none() {
                break;
            }
        }
        out[k] = v.map(|v| if line.ends_with(b"kB") { v * 1024 } else { v });
        left -= 1;
        if left == 0 {
            break;
        }
    }
    out
}

/// Fields `want` (1-based as proc(5) numbers them, ascending) of
/// /proc/PID/stat, as numbers: counted from after the command name (field
/// 2, in parentheses, which may itself hold `) `), so from the last `)`.
fn stat_fields<const N: usize>(stat: &[u8], want: [usize; N]) -> Option<[Option<u64>; N]> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let mut out = [None; N];
    let mut w = 0;
    // Field 3 starts after ") ".
    for (i, f) in stat.get(close + 2..)?.split(|&b| b == b' ').enumerate() {
        if w == N {
            break;
        }
        if i + 3 == want[w] {
            out[w] = number(f);
            w += 1;
        }
    }
    Some(out)
}

/// A field of decimal digits (the whole field, else `None`).
fn number(f: &[u8]) -> Option<u64> {
    if f.is_empty() {
        return None;
    }
    f.iter().try_fold(0u64, |v, &b| {
        b.is_ascii_digit()
            .then(|| v.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

impl ProcStats {
    /// Opens the process's /proc directory; fails if the process is gone
    /// (checked through the handle after the open, so the directory is
    /// the handle's process, not a later one with its pid).
    pub fn open(h: &ProcHandle, keep_open: bool) -> io::Result<ProcStats> {
        let path = std::ffi::CString::new(format!("/proc/{}", h.pid()))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let dir = open_at(libc::AT_FDCWD, &path, libc::O_PATH | libc::O_DIRECTORY)?;
        if h.has_exited() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        // SAFETY: sysconf only queries.
        let (tck, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        Ok(ProcStats {
            dir,
            ns_per_tick: 1_000_000_000 / (tck.max(1) as u64),
            page: page.max(1) as u64,
            own_netns: ino(c"/proc/self/ns/net", None),
            kept: keep_open.then(Default::default),
            full_samples: 0,
            other_netns: false,
        })
    }

    /// Reads file `which` whole into `buf`: in place when it is kept
    /// (opened on its first read), else opened for this read.
    fn read(&mut self, which: usize, buf: &mut [u8]) -> io::Result<usize> {
        let d = self.dir.as_raw_fd();
        let Some(kept) = self.kept.as_mut() else {
            return read_small(d, NAMES[which], buf);
        };
        let fd = match &kept[which] {
            Some(f) => f.as_raw_fd(),
            None => kept[which]
                .insert(open_at(d, NAMES[which], libc::O_RDONLY)?)
                .as_raw_fd(),
        };
        pread_small(fd, buf)
    }

    /// One sample of the handle's process (the directory is already
    /// bound to it): `/proc/PID/stat` (CPU, resident set, threads) always;
    /// with `full`, `status` (peak, context switches), `io` (disk bytes:
    /// only for processes archon may ptrace-read), the fd count, and the
    /// network namespace's bytes when it is not archon's; with `pss`,
    /// `smaps_rollup` (which walks the page tables).
    pub fn sample(&mut self, _h: &ProcHandle, full: bool, pss: bool) -> io::Result<RawSample> {
        let d = self.dir.as_raw_fd();
        let mut buf = [0u8; 4096];
        let n = self.read(STAT, &mut buf)?;
        // Fields 14, 15 (utime, stime), 20 (threads) and 24 (rss, pages),
        // without collecting them all.
        let [utime, stime, threads, rss] =
            stat_fields(&buf[..n], [14, 15, 20, 24]).ok_or_else(|| bad("stat"))?;
        let mut s = RawSample {
            cpu_ns: (utime.unwrap_or(0) + stime.unwrap_or(0)) * self.ns_per_tick,
            rss_bytes: rss.unwrap_or(0) * self.page,
            threads: threads.map(|t| t as u32),
            ..RawSample::default()
        };
        if full {
            let n = self.read(STATUS, &mut buf)?;
            [s.peak_rss_bytes, s.vcsw, s.ivcsw] = fields(
                &buf[..n],
                [
                    b"VmHWM:",
                    b"voluntary_ctxt_switches:",
                    b"nonvoluntary_ctxt_switches:",
                ],
            );
            if let Ok(n) = self.read(IO, &mut buf) {
                [s.read_bytes, s.write_bytes] =
                    fields(&buf[..n], [b"read_bytes:", b"write_bytes:"]);
            }
            s.fds = self.count_fds();
            if self.full_samples.is_multiple_of(NETNS_EVERY) {
                self.other_netns =
                    self.own_netns.is_some() && ino(c"ns/net", Some(d)) != self.own_netns;
            }
            self.full_samples = self.full_samples.wrapping_add(1);
            if self.other_netns {
                (s.net_rx_bytes, s.net_tx_bytes) = self.netns_bytes();
            }
        }
        if pss {
            let mut big = vec![0u8; 8192];
            if let Ok(n) = read_small(d, c"smaps_rollup", &mut big) {
                [s.pss_bytes] = fields(&big[..n], [b"Pss:"]);
            }
        }
        Ok(s)
    }

    /// The process's open fds. Linux 6.2 and later give their number as
    /// the size of `/proc/PID/fd` (a count of the fd bitmap, no walk);
    /// where that is 0 (an older kernel, or no fd open) the directory's
    /// entries are counted by getdents64 (no per-entry stat), from the
    /// kept directory rewound, or one opened for this count.
    fn count_fds(&mut self) -> Option<u32> {
        let fresh;
        let d = self.dir.as_raw_fd();
        let kept_dir = match self.kept.as_mut() {
            Some(kept) => Some(match &kept[FD] {
                Some(f) => f.as_raw_fd(),
                None => kept[FD].insert(open_fd_dir(d)?).as_raw_fd(),
            }),
            None => None,
        };
        let size = match kept_dir {
            Some(fd) => st_size(fd, c"", libc::AT_EMPTY_PATH),
            None => st_size(d, c"fd", 0),
        };
        if let Some(n) = size.filter(|n| *n > 0) {
            return u32::try_from(n).ok();
        }
        let fd = match kept_dir {
            Some(fd) => {
                // SAFETY: rewinding a directory fd we own.
                if unsafe { libc::lseek(fd, 0, libc::SEEK_SET) } < 0 {
                    return None;
                }
                fd
            }
            None => {
                fresh = open_fd_dir(d)?;
                fresh.as_raw_fd()
            }
        };
        count_entries(fd)
    }

    /// Received and sent bytes of every interface but loopback, from the
    /// process's own `net/dev`.
    fn netns_bytes(&self) -> (Option<u64>, Option<u64>) {
        let mut buf = vec![0u8; 16384];
        let Ok(n) = read_small(self.dir.as_raw_fd(), c"net/dev", &mut buf) else {
            return (None, None);
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        let (mut rx, mut tx) = (0u64, 0u64);
        for line in text.lines().skip(2) {
            let Some((name, rest)) = line.split_once(':') else {
                continue;
            };
            if name.trim() == "lo" {
                continue;
            }
            let v: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            rx += v.first().copied().unwrap_or(0);
            tx += v.get(8).copied().unwrap_or(0);
        }
        (Some(rx), Some(tx))
    }
}

/// `st_size` of `path` under `dir` (`fstatat` with `flags`).
fn st_size(dir: RawFd, path: &CStr, flags: libc::c_int) -> Option<u64> {
    // SAFETY: stat into a local.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::fstatat(dir, path.as_ptr(), &mut st, flags) == 0).then_some(st.st_size as u64)
    }
}

fn open_fd_dir(dir: RawFd) -> Option<OwnedFd> {
    open_at(dir, c"fd", libc::O_RDONLY | libc::O_DIRECTORY).ok()
}

/// Counts the entries of a directory fd from where it stands, but `.`
/// and `..`, by getdents64 (no per-entry stat).
fn count_entries(fd: RawFd) -> Option<u32> {
    let mut buf = [0u8; 8192];
    let mut count: u32 = 0;
    loop {
        // SAFETY: getdents64 writes at most buf.len() bytes.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            return None;
        }
        if n == 0 {
            break;
        }
        let mut off = 0usize;
        while off + 19 <= n as usize {
            // struct linux_dirent64: ino u64, off i64, reclen u16, type u8, name.
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            if reclen == 0 {
                break;
            }
            if buf[off + 19] != b'.' {
                count += 1;
            }
            off += reclen;
        }
    }
    Some(count)
}

/// archon's own CPU, memory and fds (/proc/self), for its metrics.
pub fn own_usage() -> Option<OwnUsage> {
    let dir = open_at(
        libc::AT_FDCWD,
        c"/proc/self",
        libc::O_PATH | libc::O_DIRECTORY,
    )
    .ok()?;
    let mut buf = [0u8; 4096];
    let n = read_small(dir.as_raw_fd(), c"stat", &mut buf).ok()?;
    let [utime, stime, vsize, rss] = stat_fields(&buf[..n], [14, 15, 23, 24])?;
    // SAFETY: sysconf only queries.
    let (tck, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as u64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
        )
    };
    let mut stats = ProcStats {
        dir,
        ns_per_tick: 1_000_000_000 / tck,
        page,
        own_netns: None,
        kept: None,
        full_samples: 0,
        other_netns: false,
    };
    Some(OwnUsage {
        cpu_ns: (utime? + stime?) * stats.ns_per_tick,
        rss_bytes: rss? * page,
        vsize_bytes: vsize,
        fds: stats.count_fds(),
        max_fds: super::super::posix::nofile_soft(),
    })
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unreadable /proc {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        // A command name holding ") " and spaces must not shift fields.
        let stat = b"42 (a) b (c) d) S 1 42 42 0 -1 4194560 10 0 0 0 7 3 0 0 20 0 5 0 100 2000 77 18446744073709551615\n";
        let [utime, stime, threads, vsize, rss] = stat_fields(stat, [14, 15, 20, 23, 24]).unwrap();
        assert_eq!((utime, stime, threads), (Some(7), Some(3), Some(5)));
        assert_eq!((vsize, rss), (Some(2000), Some(77)));
        assert!(stat_fields(b"no parenthesis", [14]).is_none());
        // A field that is not a number, or overflows, is None.
        assert_eq!(number(b"12x"), None);
        assert_eq!(number(b"99999999999999999999999"), None);
        assert_eq!(number(b""), None);
        assert_eq!(number(b"0"), Some(0));
    }

    #[test]
    fn key_value_fields_in_bytes() {
        let status = b"Name:\tx\nVmHWM:\t  1024 kB\nvoluntary_ctxt_switches:\t5\n";
        let [hwm, vcsw, missing] = fields(
            status,
            [
                b"VmHWM:",
                b"voluntary_ctxt_switches:",
                b"nonvoluntary_ctxt_switches:",
            ],
        );
        assert_eq!((hwm, vcsw, missing), (Some(1024 * 1024), Some(5), None));
    }

    #[test]
    fn kept_files_read_again_in_place() {
        let me = ProcHandle::open(std::process::id() as i32).unwrap();
        let mut kept = ProcStats::open(&me, true).unwrap();
        let mut fresh = ProcStats::open(&me, false).unwrap();
        let a = kept.sample(&me, true, false).unwrap();
        // Burn CPU until the kept `stat` shows it (a stale re-read never
        // would: the deadline fails the test), with one more fd open.
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let b = loop {
            std::hint::black_box((0..100_000u64).sum::<u64>());
            let b = kept.sample(&me, true, false).unwrap();
            if b.cpu_ns > a.cpu_ns {
                break b;
            }
            assert!(std::time::Instant::now() < deadline, "{a:?} {b:?}");
        };
        let c = fresh.sample(&me, true, false).unwrap();
        // The rewound directory counts again (not 0 after its first pass);
        // other test threads' fds make the exact number racy.
        assert!(b.fds.unwrap() >= 3 && c.fds.unwrap() >= 3, "{b:?} {c:?}");
        assert!(b.peak_rss_bytes.is_some() && b.threads.is_some());
        drop(f);
    }

    #[test]
    fn fds_are_counted_exactly_both_ways() {
        use std::process::{Command, Stdio};
        let mut child = Command::new("sleep")
            .arg("100")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let h = ProcHandle::open(child.id() as i32).unwrap();
        let mut kept = ProcStats::open(&h, true).unwrap();
        let mut fresh = ProcStats::open(&h, false).unwrap();
        let by_size = (kept.sample(&h, true, false), fresh.sample(&h, true, false));
        let walked = open_fd_dir(kept.dir.as_raw_fd()).and_then(|d| count_entries(d.as_raw_fd()));
        let _ = child.kill();
        let _ = child.wait();
        let (a, b) = (by_size.0.unwrap(), by_size.1.unwrap());
        // At least its three standard fds (more when the test itself was
        // started with fds that are not close-on-exec); the same count
        // by the directory's size, kept or not, as by walking it.
        assert!(walked >= Some(3), "{walked:?}");
        assert_eq!(a.fds, walked, "{a:?}");
        assert_eq!(b.fds, walked, "{b:?}");
    }
}
