//! The listening socket: stale-socket detection, mode, backlog.

use crate::platform;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// Makes (mode 0700) or checks the private runtime directory: in a
/// world-writable /tmp, a directory someone else made, or one others may
/// enter, would let them replace the socket and receive what clients send.
fn private_dir(dir: &Path, euid: u32) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
    let why = if !meta.file_type().is_dir() {
        Some("it is not a directory".to_string())
    } else if meta.uid() != euid {
        Some(format!("it belongs to uid {}, not {euid}", meta.uid()))
    } else if meta.mode() & 0o077 != 0 {
        Some(format!("its mode is {:03o}, not 700", meta.mode() & 0o777))
    } else {
        None
    };
    match why {
        Some(why) => Err(format!(
            "refusing socket directory {}: {why}; remove it, or set XDG_RUNTIME_DIR or --socket",
            dir.display()
        )),
        None => Ok(()),
    }
}

/// Binds `path`, replacing a stale socket left by a dead archon; refuses when
/// another archon answers there or the path is not a socket.
pub fn bind(path: &Path, mode: u32) -> Result<mio::net::UnixListener, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let euid = crate::platform::euid();
        if euid != 0 && dir == crate::cli::private_runtime_dir(euid) {
            private_dir(dir, euid)?;
        } else {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if platform::unix_path_answers(path) {
                return Err(format!("another archon is answering on {}", path.display()));
            }
            log::info!("removing stale socket path={}", path.display());
            std::fs::remove_file(path)
                .map_err(|e| format!("cannot remove stale {}: {e}", path.display()))?;
        }
        Ok(_) => return Err(format!("{} exists and is not a socket", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot inspect {}: {e}", path.display())),
    }
    let l = platform::bind_listener(path, mode)?;
    Ok(mio::net::UnixListener::from_std(l))
}
