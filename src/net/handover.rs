//! Listener hand-over for zero-downtime restarts: a new process takes the
//! running one's listening sockets over a unix socket (`SCM_RIGHTS`), so
//! both accept from the *same* sockets (the same kernel accept queues)
//! until the old one drains and closes its copies. No connection is ever
//! queued on a socket that closes, so none is reset; with separate
//! SO_REUSEPORT sockets instead, connections waiting in the old socket's
//! queue when it closes would be (unless `net.ipv4.tcp_migrate_req=1`).
//!
//! Protocol, on `drain.handover_socket` (mode 0600: the same user only):
//! the new process connects and writes `apigw-handover 1\n`; the old one
//! answers with one message whose text is `apigw-listeners N\n` then one
//! `kind addr\n` line per socket, the N descriptors riding along as
//! `SCM_RIGHTS`, and closes. An old process that is draining offers none
//! (`N = 0`): the new one binds its own.
//!
//! May import: nothing of the gateway (std, libc).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const REQUEST: &str = "apigw-handover 1\n";
/// At most this many sockets are handed over (the kernel's SCM_MAX_FD is
/// 253).
const MAX_FDS: usize = 250;

/// A listening socket and what it is (`data`, `tls`, `private`, `admin`).
pub struct Handed {
    pub kind: String,
    pub listener: TcpListener,
}

/// Ask the process serving `path` for its listeners. `Ok(empty)` when
/// nothing answers there (no running gateway, or a stale socket file).
pub fn take_over(path: &Path) -> std::io::Result<Vec<Handed>> {
    let mut s = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(REQUEST.as_bytes())?;
    let (mut text, fds) = recv_with_fds(&s)?;
    // The text may have been split; the descriptors came with its start.
    s.read_to_end(&mut text)?;
    let text = String::from_utf8_lossy(&text);
    let mut lines = text.lines();
    let n: usize = lines
        .next()
        .and_then(|l| l.strip_prefix("apigw-listeners "))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("hand-over: malformed answer"))?;
    if n != fds.len() {
        return Err(std::io::Error::other(format!(
            "hand-over: {n} listeners announced, {} received",
            fds.len()
        )));
    }
    let mut out = Vec::with_capacity(n);
    for (line, fd) in lines.zip(fds) {
        let kind = line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let listener = TcpListener::from(fd);
        listener.set_nonblocking(true)?;
        out.push(Handed { kind, listener });
    }
    Ok(out)
}

/// The listeners this process offers to its successor, until withdrawn.
pub struct Offer {
    listeners: Mutex<Option<Vec<(String, OwnedFd)>>>,
}

impl Offer {
    /// Offer none from now on (the drain started: the successor binds its
    /// own) and close this process's copies.
    pub fn withdraw(&self) {
        if let Ok(mut l) = self.listeners.lock() {
            l.take();
        }
    }
}

/// Serve hand-over requests on `path` (replacing whatever socket file is
/// there: a predecessor's, which has been asked already, or a stale one)
/// from a thread of its own. `listeners`: copies (dup) of this process's
/// listening sockets with their kinds.
pub fn offer(path: &Path, listeners: Vec<(String, OwnedFd)>) -> std::io::Result<Arc<Offer>> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let sock = UnixListener::bind(path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    let offer = Arc::new(Offer {
        listeners: Mutex::new(Some(listeners)),
    });
    let o = offer.clone();
    std::thread::Builder::new()
        .name("apigw-handover".into())
        .spawn(move || {
            for conn in sock.incoming() {
                let Ok(conn) = conn else { continue };
                if let Err(e) = answer(&o, conn) {
                    tracing::warn!(error = %e, "listener hand-over failed");
                }
            }
        })?;
    Ok(offer)
}

fn answer(offer: &Offer, conn: UnixStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(&conn).take(64).read_line(&mut line)?;
    if line != REQUEST {
        return Err(std::io::Error::other("hand-over: unknown request"));
    }
    let guard = offer
        .listeners
        .lock()
        .map_err(|_| std::io::Error::other("hand-over: poisoned"))?;
    let offered: &[(String, OwnedFd)] = guard.as_deref().unwrap_or_default();
    let offered = &offered[..offered.len().min(MAX_FDS)];
    let mut text = format!("apigw-listeners {}\n", offered.len());
    let mut fds = Vec::with_capacity(offered.len());
    for (kind, fd) in offered {
        // SAFETY-free: borrow the fd as a listener only to read its address.
        let addr = local_addr(fd.as_raw_fd()).unwrap_or_default();
        text.push_str(&format!("{kind} {addr}\n"));
        fds.push(fd.as_raw_fd());
    }
    send_with_fds(&conn, text.as_bytes(), &fds)?;
    tracing::info!(
        listeners = fds.len(),
        "listening sockets handed over to a new process"
    );
    Ok(())
}

/// A socket's local address, for the hand-over text.
fn local_addr(fd: RawFd) -> Option<String> {
    // SAFETY: the fd is open (owned by the offer) for the whole call; the
    // ManuallyDrop keeps the borrowed listener from closing it.
    let l = std::mem::ManuallyDrop::new(unsafe { TcpListener::from_raw_fd(fd) });
    l.local_addr().ok().map(|a| a.to_string())
}

fn send_with_fds(s: &UnixStream, data: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    // u64 words: the control buffer must be aligned for cmsghdr.
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `space` bytes we own, enough for
        // one header and `fds`; CMSG_FIRSTHDR is non-null for it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            if cmsg.is_null() {
                return Err(std::io::Error::other("hand-over: no room for descriptors"));
            }
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr() as *const u8,
                libc::CMSG_DATA(cmsg),
                fd_bytes,
            );
        }
    }
    // SAFETY: msg and what it points at live across the call.
    let n = unsafe { libc::sendmsg(s.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The descriptors went with the first byte; the rest is plain text.
    let mut w = s;
    w.write_all(&data[n as usize..])?;
    Ok(())
}

fn recv_with_fds(s: &UnixStream) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut data = vec![0u8; 64 * 1024];
    // SAFETY: pure arithmetic.
    let space =
        unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space as _;
    // SAFETY: the buffers msg points at live across the call.
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of
    // well-formed cmsgs; every SCM_RIGHTS entry is a descriptor now ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let count = bytes / std::mem::size_of::<RawFd>();
                let p = libc::CMSG_DATA(cmsg) as *const RawFd;
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(p.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(std::io::Error::other("hand-over: descriptors truncated"));
    }
    data.truncate(n as usize);
    Ok((data, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn listeners_are_handed_over_and_share_the_queue() {
        let dir = tempfile_dir();
        let path = dir.join("h.sock");
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let dup = l.as_fd().try_clone_to_owned().unwrap();
        let offer = offer(&path, vec![("data".into(), dup)]).unwrap();
        let got = take_over(&path).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind, "data");
        assert_eq!(got[0].listener.local_addr().unwrap(), addr);
        // The old process closes its copies; the socket lives on.
        drop(l);
        offer.withdraw();
        let c = std::net::TcpStream::connect(addr).unwrap();
        got[0].listener.set_nonblocking(false).unwrap();
        let (a, _) = got[0].listener.accept().unwrap();
        assert_eq!(a.peer_addr().unwrap(), c.local_addr().unwrap());
        // Withdrawn: nothing more is offered.
        assert!(take_over(&path).unwrap().is_empty());
        // Nobody there: nothing to take.
        assert!(take_over(&dir.join("none.sock")).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("apigw-handover-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&d);
        d
    }
}
