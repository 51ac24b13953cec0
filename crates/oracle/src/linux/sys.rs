//! Thin, safe wrappers over the system calls the Linux backend needs and
//! `std` lacks: SEQPACKET socket pairs with descriptor passing, pidfds,
//! `flock`, `poll`, `fork`, `prctl`, `close_range`.
//!
//! None of these allocate, so the worker (a forked child of a possibly
//! multithreaded controller) may call them too.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// `MADV_POPULATE_READ` (Linux 5.14).
pub(crate) const MADV_POPULATE_READ: libc::c_int = thpsim_uapi::Advice::PopulateRead.code();

/// Turns a `-1`-on-error return into an `io::Result`.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Like `cvt` for `syscall()`'s `c_long` return.
pub(crate) fn cvt_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The calling thread's errno.
pub(crate) fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A connected pair of `AF_UNIX` `SOCK_SEQPACKET` sockets: message
/// boundaries are kept, a closed peer reads as end of file, and
/// descriptors can be passed along with a message.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as RawFd; 2];
    // SAFETY: `fds` is a valid two-element array the call fills in.
    cvt(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) })?;
    // SAFETY: socketpair succeeded, so both descriptors are open and owned by us.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Room for one `SCM_RIGHTS` control message carrying one descriptor,
/// aligned as `cmsghdr` requires.
#[repr(C, align(8))]
struct CmsgSpace([u8; 32]);

/// Sends one message, optionally passing a descriptor with it.
pub(crate) fn send_msg(fd: BorrowedFd<'_>, data: &[u8], pass: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    let mut cmsg = CmsgSpace([0; 32]);
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(pass) = pass {
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
        debug_assert!(space <= cmsg.0.len());
        msg.msg_control = cmsg.0.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space;
        // SAFETY: msg_control points to `space` writable, aligned bytes, so
        // CMSG_FIRSTHDR returns a valid header inside them and CMSG_DATA a
        // pointer with room for one descriptor.
        unsafe {
            let hdr = libc::CMSG_FIRSTHDR(&msg);
            (*hdr).cmsg_level = libc::SOL_SOCKET;
            (*hdr).cmsg_type = libc::SCM_RIGHTS;
            (*hdr).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(hdr) as *mut RawFd, pass.as_raw_fd());
        }
    }
    loop {
        // SAFETY: `msg` and everything it points to live across the call.
        let sent = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if sent >= 0 {
            return if sent as usize == data.len() {
                Ok(())
            } else {
                // No message text: the worker may not allocate.
                Err(io::Error::from(io::ErrorKind::WriteZero))
            };
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Receives one message into `buf`. Returns its length (0 when the peer
/// closed its end) and the descriptor passed with it, if any.
pub(crate) fn recv_msg(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
    let mut cmsg = CmsgSpace([0; 32]);
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = cmsg.0.len();
    let got = loop {
        // SAFETY: `msg` points to `buf` and `cmsg`, both writable for their lengths.
        let got = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if got >= 0 {
            break got as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    let mut passed = None;
    // SAFETY: the kernel filled `msg_control` with well-formed control
    // messages of total length `msg_controllen`; the CMSG_* macros walk them.
    unsafe {
        let mut hdr = libc::CMSG_FIRSTHDR(&msg);
        while !hdr.is_null() {
            if (*hdr).cmsg_level == libc::SOL_SOCKET && (*hdr).cmsg_type == libc::SCM_RIGHTS {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(hdr) as *const RawFd);
                passed = Some(OwnedFd::from_raw_fd(raw));
            }
            hdr = libc::CMSG_NXTHDR(&msg, hdr);
        }
    }
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        // A message longer than `buf`; no text, as above.
        return Err(io::Error::from(io::ErrorKind::InvalidData));
    }
    Ok((got, passed))
}

/// Waits until `fd` is readable (or hung up). `Ok(false)` on timeout.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: `pfd` is one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready > 0 {
            return Ok(true);
        }
        if ready == 0 {
            return Ok(false);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// `pidfd_open(pid, 0)`: a descriptor that names the process for good,
/// immune to pid reuse, and reads as ready once the process has exited.
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers.
    let fd = cvt_long(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the call returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(pidfd, SIGKILL)`.
pub(crate) fn pidfd_kill(pidfd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a valid pidfd, a signal number, a null siginfo and no flags.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })?;
    Ok(())
}

/// `waitpid(pid, 0)` for a child of this process; ignores `ECHILD` (the
/// child was reaped already or SIGCHLD is ignored). Returns the raw status.
pub(crate) fn reap(pid: libc::pid_t, nohang: bool) -> Option<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let ret = unsafe { libc::waitpid(pid, &mut status, if nohang { libc::WNOHANG } else { 0 }) };
        if ret == pid {
            return Some(status);
        }
        if ret == -1 && errno() == libc::EINTR {
            continue;
        }
        return None;
    }
}

/// Describes a `waitpid` status the way a shell would.
pub(crate) fn describe_status(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status:#x}")
    }
}

/// `flock(fd, LOCK_EX | LOCK_NB)`: `Ok(false)` when another open file
/// description holds the lock.
pub(crate) fn try_lock_exclusive(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: flock takes a descriptor and flags.
    match cvt(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }) {
        Ok(_) => Ok(true),
        Err(err) if err.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(err) => Err(err),
    }
}

/// `prctl(PR_GET_THP_DISABLE)`: 0, 1 (disabled completely) or 3 (except
/// advised, Linux 6.18).
pub(crate) fn get_thp_disable() -> io::Result<libc::c_int> {
    // SAFETY: PR_GET_THP_DISABLE takes no pointers.
    cvt(unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) })
}

/// `prctl(PR_SET_THP_DISABLE, disable, flags, 0, 0)`.
pub(crate) fn set_thp_disable(disable: bool, flags: libc::c_ulong) -> io::Result<()> {
    // SAFETY: PR_SET_THP_DISABLE takes integers only.
    cvt(unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, disable as libc::c_ulong, flags, 0 as libc::c_ulong, 0 as libc::c_ulong)
    })?;
    Ok(())
}

/// The effective user id.
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// The page size of the host.
pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf takes an integer.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}
