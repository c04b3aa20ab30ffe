//! A kqueue of the backend's own: process descriptors and signals are
//! filters mio's kqueue does not register, so each source is a kqueue
//! put in mio's poll as one readable fd.

use super::super::freebsd_pure::{kevent_to_event, KqEvent};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

#[derive(Debug)]
pub(super) struct Kqueue {
    fd: OwnedFd,
}

const ZERO: libc::timespec = libc::timespec {
    tv_sec: 0,
    tv_nsec: 0,
};

impl Kqueue {
    pub(super) fn new() -> io::Result<Kqueue> {
        // SAFETY: plain syscall; kqueues are not inherited by children.
        let fd = unsafe { libc::kqueue() };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: plain fcntl on our fd (close-on-exec for exec'd children).
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        Ok(Kqueue { fd })
    }

    pub(super) fn register(&self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(
            &mut SourceFd(&self.fd.as_raw_fd()),
            token,
            Interest::READABLE,
        )
    }

    /// One change: (ident, filter, flags, fflags, udata).
    pub(super) fn change(
        &self,
        ident: usize,
        filter: i16,
        flags: u16,
        fflags: u32,
        udata: usize,
    ) -> io::Result<()> {
        // SAFETY: kevent is plain data; zero is a valid value of every field.
        let mut ev: libc::kevent = unsafe { std::mem::zeroed() };
        ev.ident = ident as _;
        ev.filter = filter;
        ev.flags = flags;
        ev.fflags = fflags;
        ev.udata = udata as *mut libc::c_void;
        // SAFETY: one valid change, no event list, zero timeout.
        let r =
            unsafe { libc::kevent(self.fd.as_raw_fd(), &ev, 1, std::ptr::null_mut(), 0, &ZERO) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Takes at most `max` pending events without waiting; returns how
    /// many were taken (fewer than `max`: the queue is empty now).
    pub(super) fn drain(&self, max: usize, mut each: impl FnMut(KqEvent)) -> usize {
        const BATCH: usize = 64;
        // SAFETY: kevent is plain data.
        let mut evs: [libc::kevent; BATCH] = unsafe { std::mem::zeroed() };
        let mut taken = 0;
        while taken < max {
            let want = BATCH.min(max - taken);
            // SAFETY: room for `want` events, zero timeout: never blocks.
            let n = unsafe {
                libc::kevent(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    evs.as_mut_ptr(),
                    want as libc::c_int,
                    &ZERO,
                )
            };
            if n <= 0 {
                break;
            }
            let n = n as usize;
            // `data` is intptr_t or int64_t depending on the ABI version.
            #[allow(clippy::unnecessary_cast)]
            for ev in &evs[..n] {
                each(kevent_to_event(
                    ev.filter,
                    ev.ident as u64,
                    ev.fflags,
                    ev.data as i64,
                    ev.udata as usize,
                ));
            }
            taken += n;
            if n < want {
                break;
            }
        }
        taken
    }
}
