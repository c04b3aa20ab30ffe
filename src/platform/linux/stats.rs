//! What a process costs, from /proc, keyed by its handle: `/proc/<pid>` is
//! opened once while the pidfd says the process lives, and every later read
//! is relative to that directory fd, which stays bound to that process (a
//! read after it is gone fails with ESRCH, even if its pid is reused).

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
}

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

/// Fields `want` (1-based as proc(5) numbers them, ascending) of the part
/// of /proc/PID/stat after the command name (which starts at field 3).
fn stat_fields<const N: usize>(rest: &str, want: [usize; N]) -> [Option<u64>; N] {
    let mut out = [None; N];
    let mut w = 0;
    for (i, f) in rest.split(' ').enumerate() {
        if w == N {
            break;
        }
        if i + 3 == want[w] {
            out[w] = f.parse().ok();
            w += 1;
        }
    }
    out
}

impl ProcStats {
    /// Opens the process's /proc directory; fails if the process is gone
    /// (checked through the handle after the open, so the directory is
    /// the handle's process, not a later one with its pid).
    pub fn open(h: &ProcHandle) -> io::Result<ProcStats> {
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
        })
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
        let n = read_small(d, c"stat", &mut buf)?;
        let stat = std::str::from_utf8(&buf[..n]).map_err(|_| bad("stat"))?;
        // Fields after the command name, which may itself hold ") ".
        let (_, rest) = stat.rsplit_once(") ").ok_or_else(|| bad("stat"))?;
        // rest starts at field 3 (state): fields 14, 15 (utime, stime),
        // 20 (threads) and 24 (rss, pages), without collecting them all.
        let [utime, stime, threads, rss] = stat_fields(rest, [14, 15, 20, 24]);
        let mut s = RawSample {
            cpu_ns: (utime.unwrap_or(0) + stime.unwrap_or(0)) * self.ns_per_tick,
            rss_bytes: rss.unwrap_or(0) * self.page,
            threads: threads.map(|t| t as u32),
            ..RawSample::default()
        };
        if full {
            let n = read_small(d, c"status", &mut buf)?;
            [s.peak_rss_bytes, s.vcsw, s.ivcsw] = fields(
                &buf[..n],
                [
                    b"VmHWM:",
                    b"voluntary_ctxt_switches:",
                    b"nonvoluntary_ctxt_switches:",
                ],
            );
            if let Ok(n) = read_small(d, c"io", &mut buf) {
                [s.read_bytes, s.write_bytes] =
                    fields(&buf[..n], [b"read_bytes:", b"write_bytes:"]);
            }
            s.fds = self.count_fds();
            if self.own_netns.is_some() && ino(c"ns/net", Some(d)) != self.own_netns {
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

    /// The entries of `/proc/PID/fd`, by getdents64 (no per-entry stat).
    fn count_fds(&self) -> Option<u32> {
        let dir = open_at(
            self.dir.as_raw_fd(),
            c"fd",
            libc::O_RDONLY | libc::O_DIRECTORY,
        )
        .ok()?;
        let mut buf = [0u8; 8192];
        let mut count: u32 = 0;
        loop {
            // SAFETY: getdents64 writes at most buf.len() bytes.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    dir.as_raw_fd(),
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            };
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
    let stat = std::str::from_utf8(&buf[..n]).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    let f: Vec<&str> = rest.split(' ').collect();
    let num = |k: usize| f.get(k - 3).and_then(|v| v.parse::<u64>().ok());
    // SAFETY: sysconf only queries.
    let (tck, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as u64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
        )
    };
    let stats = ProcStats {
        dir,
        ns_per_tick: 1_000_000_000 / tck,
        page,
        own_netns: None,
    };
    Some(OwnUsage {
        cpu_ns: (num(14)? + num(15)?) * stats.ns_per_tick,
        rss_bytes: num(24)? * page,
        vsize_bytes: num(23),
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
