//! The OS seam: everything archon asks of the kernel about processes and
//! signals goes through here. One backend per OS; only Linux exists today
//! (FreeBSD's pdfork/procdesc backend is not written yet).

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

mod signals;
pub use signals::{signal_name, signal_number};
