//! The controller's side of a worker: starting one (fork from the
//! controller for `Op::Spawn`, fork from another worker for `Op::Fork`),
//! sending it requests, and ending it (exit on request, or SIGKILL).
//!
//! Each worker is named by a pidfd, so a recycled pid is never signalled;
//! the controller opens the worker's /proc/<pid>/pagemap once the worker is
//! ready (a pagemap descriptor is bound to the mm it was opened for).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use crate::BackendError;

use super::procfs;
use super::protocol::{self, Cmd, Reply, WorkerFault, MSG_MAX, REPLY_BYTES};
use super::signals;
use super::sys;
use super::worker;

/// How long a new worker may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one request may take: touching or collapsing many GiB is slow.
const REPLY_TIMEOUT: Duration = Duration::from_secs(900);
/// How long an exiting or killed worker may take to be gone.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A live worker.
pub(crate) struct Worker {
    pub(crate) pid: libc::pid_t,
    /// `p1 (pid 1234)`, for messages.
    pub(crate) label: String,
    pidfd: OwnedFd,
    channel: OwnedFd,
    /// /proc/<pid>/pagemap, opened once the worker was ready.
    pub(crate) pagemap: File,
    /// Started by the controller (so the controller reaps it), rather than
    /// forked by another worker (whose parent worker, or init, reaps it).
    direct_child: bool,
    /// False once the worker exited or was killed.
    alive: bool,
    out: Vec<u8>,
}

fn executor_error(label: &str, what: impl std::fmt::Display) -> BackendError {
    BackendError::Executor(format!("{label}: {what}"))
}

impl Worker {
    /// Forks a fresh worker from the controller.
    pub(crate) fn spawn(name: &str) -> Result<Worker, BackendError> {
        let (ours, theirs) = sys::seqpacket_pair().map_err(|e| executor_error(name, format!("socketpair: {e}")))?;
        // The worker's receive buffer, allocated and written now so that the
        // worker never faults a fresh page of its own (see worker.rs).
        let mut buf = vec![0xa5u8; MSG_MAX];
        // SAFETY: the child runs only `worker::run`, which allocates no
        // memory and takes no lock, so forking a multithreaded controller is
        // sound; the parent goes on as usual.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            drop(ours);
            worker::run(theirs, &mut buf);
        }
        if pid < 0 {
            return Err(executor_error(name, format!("fork: {}", std::io::Error::last_os_error())));
        }
        drop(theirs);
        drop(buf);
        signals::register_worker(pid);
        Worker::adopt(name, pid, ours, true)
    }

    /// Waits for a new worker's first message and opens what the controller
    /// needs to follow it. Kills the worker if that fails.
    fn adopt(name: &str, pid: libc::pid_t, channel: OwnedFd, direct_child: bool) -> Result<Worker, BackendError> {
        let label = format!("{name} (pid {pid})");
        let pidfd = match sys::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                if direct_child {
                    // SAFETY: kill and waitpid on our own, unreaped child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    sys::reap(pid, false);
                }
                signals::unregister_worker(pid);
                return Err(executor_error(&label, format!("pidfd_open: {e}")));
            }
        };
        let mut worker = Worker {
            pid,
            label,
            pidfd,
            channel,
            pagemap: File::open("/dev/null").map_err(|e| executor_error(name, format!("/dev/null: {e}")))?,
            direct_child,
            alive: true,
            out: Vec::with_capacity(MSG_MAX),
        };
        // From here on, dropping `worker` kills the process.
        match sys::wait_readable(worker.channel.as_fd(), READY_TIMEOUT) {
            Ok(true) => {}
            Ok(false) => return Err(executor_error(&worker.label, format!("not ready after {READY_TIMEOUT:?}"))),
            Err(e) => return Err(executor_error(&worker.label, format!("poll: {e}"))),
        }
        let mut buf = [0u8; REPLY_BYTES];
        let (len, _) = sys::recv_msg(worker.channel.as_fd(), &mut buf)
            .map_err(|e| executor_error(&worker.label, format!("recv: {e}")))?;
        if len == 0 {
            return Err(worker.death());
        }
        let ready = protocol::decode_reply(&buf[..len]);
        if ready != Some(Reply { status: 0, value: pid as u64 }) {
            return Err(executor_error(&worker.label, format!("bad first message {ready:?} ({len} bytes)")));
        }
        let path = format!("/proc/{pid}/pagemap");
        worker.pagemap = File::open(&path).map_err(|e| executor_error(&worker.label, format!("{path}: {e}")))?;
        Ok(worker)
    }

    /// Why the worker stopped answering.
    fn death(&mut self) -> BackendError {
        let how = if self.direct_child {
            sys::reap(self.pid, true).map(sys::describe_status).unwrap_or_else(|| "gone".to_string())
        } else {
            "gone".to_string()
        };
        self.alive = false;
        signals::unregister_worker(self.pid);
        executor_error(&self.label, format!("the worker died unexpectedly ({how})"))
    }

    fn send(&mut self, cmd: Cmd, args: [u64; 7], payload: &[u64], pass: Option<&OwnedFd>) -> Result<(), BackendError> {
        if !self.alive {
            return Err(executor_error(&self.label, "the worker is no longer running"));
        }
        protocol::encode_request(cmd, args, payload, &mut self.out);
        if self.out.len() > MSG_MAX {
            return Err(executor_error(&self.label, format!("a {cmd:?} request of {} bytes", self.out.len())));
        }
        match sys::send_msg(self.channel.as_fd(), &self.out, pass.map(|fd| fd.as_fd())) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) || e.raw_os_error() == Some(libc::ECONNRESET) => {
                Err(self.death())
            }
            Err(e) => Err(executor_error(&self.label, format!("send {cmd:?}: {e}"))),
        }
    }

    fn receive(&mut self, cmd: Cmd) -> Result<Reply, BackendError> {
        match sys::wait_readable(self.channel.as_fd(), REPLY_TIMEOUT) {
            Ok(true) => {}
            Ok(false) => {
                return Err(executor_error(&self.label, format!("no reply to {cmd:?} after {REPLY_TIMEOUT:?}")))
            }
            Err(e) => return Err(executor_error(&self.label, format!("poll: {e}"))),
        }
        let mut buf = [0u8; REPLY_BYTES];
        let (len, _) = match sys::recv_msg(self.channel.as_fd(), &mut buf) {
            Ok(got) => got,
            Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => return Err(self.death()),
            Err(e) => return Err(executor_error(&self.label, format!("recv: {e}"))),
        };
        if len == 0 {
            return Err(self.death());
        }
        let reply = protocol::decode_reply(&buf[..len])
            .ok_or_else(|| executor_error(&self.label, format!("a malformed reply to {cmd:?}")))?;
        if reply.status < 0 {
            return Err(executor_error(&self.label, format!("{cmd:?}: {}", WorkerFault::describe(reply.status))));
        }
        Ok(reply)
    }

    /// Sends one request and waits for its reply.
    pub(crate) fn call(&mut self, cmd: Cmd, args: [u64; 7], payload: &[u64]) -> Result<Reply, BackendError> {
        self.send(cmd, args, payload, None)?;
        self.receive(cmd)
    }

    /// Asks the worker to fork. `Ok(Err(errno))` when fork itself failed.
    pub(crate) fn fork(&mut self, child_name: &str) -> Result<Result<Worker, i32>, BackendError> {
        let (ours, theirs) =
            sys::seqpacket_pair().map_err(|e| executor_error(child_name, format!("socketpair: {e}")))?;
        self.send(Cmd::Fork, [0; 7], &[], Some(&theirs))?;
        drop(theirs);
        let reply = self.receive(Cmd::Fork)?;
        if reply.status != 0 {
            return Ok(Err(reply.status as i32));
        }
        let pid = reply.value as libc::pid_t;
        signals::register_worker(pid);
        Worker::adopt(child_name, pid, ours, false).map(Ok)
    }

    /// Asks the worker to exit and waits until the process is gone, so its
    /// address space has been torn down before the next step.
    pub(crate) fn exit(mut self) -> Result<(), BackendError> {
        signals::unregister_worker(self.pid);
        match self.call(Cmd::Exit, [0; 7], &[]) {
            Ok(_) => {}
            // It is gone either way; say so only if it died of something else.
            Err(err) if self.alive => return Err(err),
            Err(_) => {}
        }
        self.wait_gone()
    }

    fn wait_gone(&mut self) -> Result<(), BackendError> {
        let gone = sys::wait_readable(self.pidfd.as_fd(), EXIT_TIMEOUT);
        if self.direct_child {
            sys::reap(self.pid, false);
        }
        self.alive = false;
        match gone {
            Ok(true) => Ok(()),
            Ok(false) => {
                Err(executor_error(&self.label, format!("still running {EXIT_TIMEOUT:?} after it was told to exit")))
            }
            Err(e) => Err(executor_error(&self.label, format!("poll on pidfd: {e}"))),
        }
    }

    /// SIGKILL through the pidfd, then waits until the process is gone.
    pub(crate) fn kill(mut self) -> Result<(), BackendError> {
        self.kill_inner()
    }

    fn kill_inner(&mut self) -> Result<(), BackendError> {
        if !self.alive {
            return Ok(());
        }
        signals::unregister_worker(self.pid);
        if let Err(e) = sys::pidfd_kill(self.pidfd.as_fd()) {
            // ESRCH: it already exited.
            if e.raw_os_error() != Some(libc::ESRCH) {
                self.alive = false;
                return Err(executor_error(&self.label, format!("pidfd_send_signal: {e}")));
            }
        }
        self.wait_gone()
    }

    /// `VmPTE` of the worker now.
    pub(crate) fn vm_pte_kb(&self) -> Result<u64, BackendError> {
        procfs::read_vm_pte_kb(self.pid).map_err(|e| executor_error(&self.label, e))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.kill_inner();
    }
}
