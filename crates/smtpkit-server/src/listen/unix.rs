//! Unix-domain socket listeners: binding with a mode, a stale socket file taken over only
//! when nothing listens on it, and the file removed when the listener goes.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use super::LISTEN_BACKLOG;

/// The socket file of a bound Unix listener; dropping it removes the file, if it is still
/// the one this listener bound (a newer server may have taken the path over).
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    /// Which file: the inode, and its change time, as a freed inode number is soon reused.
    identity: (u64, u64, i64, i64),
}

fn identity(meta: &fs::Metadata) -> (u64, u64, i64, i64) {
    (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
}

impl SocketFile {
    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path).is_ok_and(|m| identity(&m) == self.identity);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Binds a Unix-domain stream socket at `path` (non-blocking, with the
/// [`LISTEN_BACKLOG`]), with permissions `mode` (`0o660`, say) when given, before it accepts
/// anything. A socket file left by a server that is gone is replaced; one that a live server
/// still accepts on is `AddrInUse`, and a path that is not a socket is never removed. An
/// error names the path.
pub fn bind_unix_listener(
    path: &Path,
    mode: Option<u32>,
) -> io::Result<(UnixListener, SocketFile)> {
    bind(path, mode).map_err(|e| io::Error::new(e.kind(), format!("unix:{}: {e}", path.display())))
}

fn bind(path: &Path, mode: Option<u32>) -> io::Result<(UnixListener, SocketFile)> {
    remove_stale(path)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    // Before listen(): until then a connect is refused, so no client gets in under the
    // default mode.
    if let Some(mode) = mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    let file = SocketFile {
        path: path.to_owned(),
        identity: identity(&fs::symlink_metadata(path)?),
    };
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok((UnixListener::from(std::os::fd::OwnedFd::from(socket)), file))
}

/// Removes the socket file at `path` if no server accepts on it any more.
fn remove_stale(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "exists and is not a socket",
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "a server is listening on it",
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => fs::remove_file(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("smtpkit-unix-{tag}-"))
            .tempdir()
            .unwrap()
    }

    #[test]
    fn binds_with_mode_and_removes_the_file_on_drop() {
        let d = dir("mode");
        let path = d.path().join("lmtp.sock");
        let (listener, file) = bind_unix_listener(&path, Some(0o660)).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let _client = UnixStream::connect(&path).unwrap();
        listener.set_nonblocking(false).unwrap();
        assert!(listener.accept().is_ok());
        // A live listener keeps its path.
        let err = bind_unix_listener(&path, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().starts_with("unix:"), "{err}");
        drop((listener, file));
        assert!(!path.exists());
    }

    #[test]
    fn stale_socket_is_replaced_and_other_files_kept() {
        let d = dir("stale");
        let path = d.path().join("s.sock");
        // A listener that died without cleaning up leaves its file behind.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let (_listener, old) = bind_unix_listener(&path, None).unwrap();
        // The file a newer server bound is not removed by the old guard.
        drop(_listener);
        let (_l2, _new) = bind_unix_listener(&path, None).unwrap();
        drop(old);
        assert!(path.exists());

        let plain = d.path().join("plain");
        fs::write(&plain, "keep me").unwrap();
        let err = bind_unix_listener(&plain, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read_to_string(&plain).unwrap(), "keep me");
    }
}
