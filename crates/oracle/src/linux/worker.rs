//! The worker: one real process per scenario process. It waits for a
//! request on its socket, makes the system call, and replies with the errno.
//!
//! A worker is a forked copy of the controller (or of another worker), which
//! may have had other threads. After `fork` only async-signal-safe work is
//! sound in general, so a worker allocates no memory, takes no lock and
//! never panics on purpose: it uses a receive buffer and stack pages that
//! were touched before the fork, raw system calls, and `_exit`. Touching no
//! new memory of its own also keeps the worker's page tables (`VmPTE`) and
//! the THP counters about the scenario's memory only.
//!
//! Pins are io_uring fixed buffers: `IORING_REGISTER_BUFFERS` pins the pages
//! with `pin_user_pages(FOLL_WRITE | FOLL_LONGTERM)` (io_uring/rsrc.c), a
//! real FOLL_PIN that makes `split_folio()` fail and MADV_COLLAPSE answer
//! EAGAIN. One ring per pin; `IORING_UNREGISTER_BUFFERS` releases it at once.

use std::os::fd::{BorrowedFd, IntoRawFd, OwnedFd, RawFd};

use super::protocol::{self, Cmd, Reply, WorkerFault, HEADER_BYTES, REPLY_BYTES};
use super::signals;
use super::sys::{self, errno, MADV_POPULATE_READ};

/// The descriptor number a worker keeps its socket on; all others above
/// stdin, stdout and stderr are closed.
const CHANNEL_FD: RawFd = 3;
/// Pins one process may hold at once.
const MAX_PINS: usize = 64;
/// Stack touched at start, before THP is re-enabled for the worker, so that
/// the worker never faults a stack page (a THP under `enabled=always`).
const STACK_PREFAULT_BYTES: usize = 128 * 1024;
/// io_uring takes at most 1 GiB per fixed buffer (`io_buffer_validate()`).
const MAX_BUFFER_BYTES: u64 = 1 << 30;
/// Fixed buffers per pin: pins up to 64 GiB.
const MAX_BUFFERS_PER_PIN: usize = 64;

/// Runs a new worker, just forked by the controller for `Op::Spawn`, on
/// `socket`; never returns. (A worker forked by a worker for `Op::Fork`
/// goes on in this loop with a new socket.)
pub(crate) fn run(socket: OwnedFd, buf: &mut [u8]) -> ! {
    signals::reset_in_worker();
    adopt_channel(socket);
    // So that `ps` and `pgrep thpsim-worker` tell workers from the controller.
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"thpsim-worker".as_ptr()) };
    prefault_stack();
    // The controller runs with THP disabled so that its memory, which the
    // worker inherits, holds no THP; a new scenario process starts with the
    // default instead. Nothing to report if this fails: the observation
    // will show it.
    let _ = sys::set_thp_disable(false, 0);
    let mut pins = Pins::new();
    if send_reply(channel(), Reply { status: 0, value: my_pid() }).is_err() {
        exit(2);
    }
    loop {
        let (len, passed) = match sys::recv_msg(channel(), buf) {
            Ok(got) => got,
            Err(_) => exit(3),
        };
        if len == 0 {
            // The controller is gone.
            pins.release_all();
            exit(0);
        }
        let msg = &buf[..len];
        let Some(req) = protocol::decode_request(msg) else {
            let _ = send_reply(channel(), fault(WorkerFault::BadRequest));
            continue;
        };
        let reply = match req.cmd {
            Cmd::Fork => match fork_worker(passed) {
                Forked::Parent(reply) => reply,
                Forked::Child(child_channel) => {
                    // We are the new process. Its parent's socket and pins
                    // are not ours: the socket is replaced, the rings were
                    // closed by `adopt_channel`.
                    adopt_channel(child_channel);
                    pins.forget_all();
                    Reply { status: 0, value: my_pid() }
                }
            },
            Cmd::Exit => {
                pins.release_all();
                let _ = send_reply(channel(), Reply { status: 0, value: 0 });
                exit(0);
            }
            _ => execute(req.cmd, &req.args, msg, &mut pins),
        };
        if send_reply(channel(), reply).is_err() {
            pins.release_all();
            exit(4);
        }
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process without running the controller's
    // atexit handlers or destructors, which are not the worker's to run.
    unsafe { libc::_exit(code) }
}

fn my_pid() -> u64 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() as u64 }
}

fn fault(kind: WorkerFault) -> Reply {
    Reply { status: kind as i64, value: 0 }
}

fn errno_reply() -> Reply {
    Reply { status: i64::from(errno()), value: 0 }
}

fn check(ret: libc::c_int) -> Reply {
    if ret == 0 {
        Reply { status: 0, value: 0 }
    } else {
        errno_reply()
    }
}

fn send_reply(channel: BorrowedFd<'_>, reply: Reply) -> std::io::Result<()> {
    let bytes: [u8; REPLY_BYTES] = protocol::encode_reply(reply);
    sys::send_msg(channel, &bytes, None)
}

/// Moves the socket to `CHANNEL_FD` and closes every other descriptor above
/// stderr: the controller's lock file, other workers' sockets, the parent
/// worker's socket (which `dup2` replaces) and io_uring rings.
fn adopt_channel(channel: OwnedFd) {
    let raw = channel.into_raw_fd();
    if raw != CHANNEL_FD {
        // SAFETY: dup2 onto a fixed number; what was there is a copy
        // inherited through fork that this process gives up.
        if unsafe { libc::dup2(raw, CHANNEL_FD) } != CHANNEL_FD {
            exit(5);
        }
        // SAFETY: `raw` was ours (from `into_raw_fd`) and is not used again.
        unsafe { libc::close(raw) };
    }
    // SAFETY: close_range takes integers; the descriptors it closes are
    // copies inherited through fork that this process does not use.
    unsafe { libc::syscall(libc::SYS_close_range, CHANNEL_FD as u32 + 1, u32::MAX, 0u32) };
    // The worker never reads or prints; holding the controller's stdout
    // could keep a pipeline open after the controller is gone.
    // SAFETY: open of a constant C string, dup2 onto the standard
    // descriptors, close of the descriptor just opened.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for std_fd in 0..3 {
                libc::dup2(null, std_fd);
            }
            if null > 2 && null != CHANNEL_FD {
                libc::close(null);
            }
        }
    }
}

/// The socket, once `adopt_channel` put it in place.
fn channel() -> BorrowedFd<'static> {
    // SAFETY: CHANNEL_FD stays open for the life of the worker (only
    // `adopt_channel` replaces it, atomically, with dup2).
    unsafe { BorrowedFd::borrow_raw(CHANNEL_FD) }
}

/// Faults in the stack pages the worker may use while THP is still disabled
/// for it, so they are order-0 pages shared with nobody's THP.
#[inline(never)]
fn prefault_stack() {
    let mut area = [0u8; STACK_PREFAULT_BYTES];
    for i in (0..STACK_PREFAULT_BYTES).step_by(4096) {
        // SAFETY: `i` is within `area`; the volatile write keeps the store.
        unsafe { std::ptr::write_volatile(area.as_mut_ptr().add(i), 1) };
    }
    std::hint::black_box(&area);
}

enum Forked {
    Parent(Reply),
    Child(OwnedFd),
}

fn fork_worker(child_channel: Option<OwnedFd>) -> Forked {
    let Some(child_channel) = child_channel else {
        return Forked::Parent(fault(WorkerFault::NoSocket));
    };
    // SAFETY: this process has a single thread (it is a worker), so the
    // child may go on with the worker loop.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Forked::Parent(errno_reply()),
        0 => Forked::Child(child_channel),
        pid => Forked::Parent(Reply { status: 0, value: pid as u64 }),
    }
}

/// The request's `PROT_*` word (thpsim_uapi's numbers) as the host's.
fn prot_bits(bits: u64) -> libc::c_int {
    let prot = thpsim_uapi::Prot::from_bits(bits as u32);
    let mut host = libc::PROT_NONE;
    if prot.read {
        host |= libc::PROT_READ;
    }
    if prot.write {
        host |= libc::PROT_WRITE;
    }
    if prot.exec {
        host |= libc::PROT_EXEC;
    }
    host
}

/// Performs one request other than fork and exit.
fn execute(cmd: Cmd, a: &[u64; 7], msg: &[u8], pins: &mut Pins) -> Reply {
    let ptr = |addr: u64| addr as usize as *mut libc::c_void;
    match cmd {
        Cmd::Mmap => {
            let fixed = if a[3] != 0 { libc::MAP_FIXED } else { libc::MAP_FIXED_NOREPLACE };
            let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | fixed;
            // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping,
            // so no memory this process uses can be affected; MAP_FIXED
            // replaces only scenario addresses, which the planner keeps in
            // [MMAP_BASE, PLAN_END), apart from the worker's own memory.
            let got = unsafe { libc::mmap(ptr(a[0]), a[1] as usize, prot_bits(a[2]), flags, -1, 0) };
            if got == libc::MAP_FAILED {
                return errno_reply();
            }
            if got as u64 != a[0] {
                // A kernel without MAP_FIXED_NOREPLACE takes the address as a
                // hint; answer as a newer kernel would.
                // SAFETY: `got` is the mapping just made, used by nothing.
                unsafe { libc::munmap(got, a[1] as usize) };
                return Reply { status: i64::from(libc::EEXIST), value: 0 };
            }
            Reply { status: 0, value: got as u64 }
        }
        // SAFETY: scenario addresses; the controller keeps them apart from
        // the worker's own memory (see `LinuxBackend` docs).
        Cmd::Munmap => check(unsafe { libc::munmap(ptr(a[0]), a[1] as usize) }),
        Cmd::Mprotect => {
            // SAFETY: as for munmap.
            check(unsafe { libc::mprotect(ptr(a[0]), a[1] as usize, prot_bits(a[2])) })
        }
        Cmd::Mremap => {
            let mut flags = libc::MREMAP_MAYMOVE;
            if a[3] != 0 {
                flags |= libc::MREMAP_FIXED;
            }
            if a[5] != 0 {
                flags = 0;
            }
            // SAFETY: as for munmap; with MREMAP_FIXED the destination is a
            // scenario address too.
            let got = unsafe { libc::mremap(ptr(a[0]), a[1] as usize, a[2] as usize, flags, ptr(a[4])) };
            if got == libc::MAP_FAILED {
                errno_reply()
            } else {
                Reply { status: 0, value: got as u64 }
            }
        }
        // SAFETY: as for munmap; mlock only faults pages in and locks them.
        Cmd::Mlock => check(unsafe { libc::mlock(ptr(a[0]), a[1] as usize) }),
        // SAFETY: as for munmap.
        Cmd::Munlock => check(unsafe { libc::munlock(ptr(a[0]), a[1] as usize) }),
        Cmd::ReadWord => {
            // SAFETY: the controller checked the page against the worker's
            // maps (readable, so the load cannot fault with SIGSEGV); a
            // page start is 8-byte aligned.
            let word = unsafe { std::ptr::read_volatile(a[0] as usize as *const u64) };
            Reply { status: 0, value: word }
        }
        Cmd::Madvise => {
            // SAFETY: madvise takes an address range and an advice number;
            // the range is the scenario's, as for munmap.
            check(unsafe { libc::madvise(ptr(a[0]), a[1] as usize, a[2] as libc::c_int) })
        }
        Cmd::Populate => {
            // SAFETY: as for madvise; MADV_POPULATE_READ only faults pages
            // in. Errors are for the controller to ignore.
            check(unsafe { libc::madvise(ptr(a[0]), a[1] as usize, MADV_POPULATE_READ) })
        }
        Cmd::Touch => touch(a, msg),
        Cmd::Prctl => check(match sys::set_thp_disable(a[0] != 0, a[1] as libc::c_ulong) {
            Ok(()) => 0,
            Err(_) => -1,
        }),
        Cmd::Pin => pins.pin(a[0] as u32, a[1], a[2]),
        Cmd::Unpin => pins.unpin(a[0] as u32),
        Cmd::Sentinel => sentinel(),
        Cmd::Fork | Cmd::Exit => fault(WorkerFault::BadRequest),
    }
}

/// One access per address of the request's runs. The controller checked
/// every address against /proc/<pid>/maps first: mapped, and writable for
/// stores, so no access faults with SIGSEGV.
fn touch(a: &[u64; 7], msg: &[u8]) -> Reply {
    let write = a[0] != 0;
    let value = a[1] as u8;
    let nr_runs = a[2] as usize;
    // A pattern store writes the word `pattern_word(tag, i)` at the start
    // of page i from `base` instead of the byte `value`.
    let (pattern, tag, base) = (a[3] != 0, a[4], a[5]);
    if msg.len() != HEADER_BYTES + nr_runs * 24 {
        return fault(WorkerFault::BadRequest);
    }
    for run in 0..nr_runs {
        let (Some(start), Some(count), Some(stride)) = (
            protocol::payload_word(msg, run * 3),
            protocol::payload_word(msg, run * 3 + 1),
            protocol::payload_word(msg, run * 3 + 2),
        ) else {
            return fault(WorkerFault::BadRequest);
        };
        for i in 0..count {
            let p = start.wrapping_add(i.wrapping_mul(stride)) as usize as *mut u8;
            if write && pattern {
                // The word goes at the start of the page, as the model keeps it.
                let page = (p as u64) & !4095;
                let word = thpsim_mm::mman::pattern_word(tag, page.wrapping_sub(base & !4095) / 4096);
                // SAFETY: checked by the controller against the worker's maps
                // (page-granular, so the page start is mapped and writable);
                // a page start is 8-byte aligned.
                unsafe { std::ptr::write_volatile(page as usize as *mut u64, word) };
            } else if write {
                // SAFETY: checked by the controller against the worker's maps.
                unsafe { std::ptr::write_volatile(p, value) };
            } else {
                // SAFETY: as above; the load is volatile so it happens.
                unsafe { std::ptr::read_volatile(p) };
            }
        }
    }
    Reply { status: 0, value: 0 }
}

/// Maps 4 MiB anywhere, and writes the 2 MiB-aligned block inside it after
/// MADV_HUGEPAGE: a THP fault that registers this mm with khugepaged.
fn sentinel() -> Reply {
    const PMD: usize = 2 << 20;
    // SAFETY: an anonymous mapping at an address the kernel chooses.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            2 * PMD,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return errno_reply();
    }
    let block = ((base as usize) + PMD - 1) & !(PMD - 1);
    // SAFETY: [block, block + PMD) lies inside the mapping just made.
    if unsafe { libc::madvise(block as *mut libc::c_void, PMD, libc::MADV_HUGEPAGE) } != 0 {
        return errno_reply();
    }
    for off in (0..PMD).step_by(4096) {
        // SAFETY: inside the writable mapping just made.
        unsafe { std::ptr::write_volatile((block + off) as *mut u8, 0x5a) };
    }
    Reply { status: 0, value: block as u64 }
}

/// `struct io_uring_params`: 120 bytes, all zero asks for the defaults.
#[repr(C)]
struct IoUringParams([u64; 15]);

/// `IORING_REGISTER_BUFFERS` and `IORING_UNREGISTER_BUFFERS`.
const IORING_REGISTER_BUFFERS: libc::c_uint = 0;
const IORING_UNREGISTER_BUFFERS: libc::c_uint = 1;

/// The worker's pins: (pin id, io_uring descriptor), -1 when free.
struct Pins {
    slots: [(u32, RawFd); MAX_PINS],
}

impl Pins {
    fn new() -> Pins {
        Pins { slots: [(0, -1); MAX_PINS] }
    }

    fn pin(&mut self, id: u32, addr: u64, len: u64) -> Reply {
        let Some(slot) = self.slots.iter().position(|s| s.1 < 0) else {
            return fault(WorkerFault::TooManyPins);
        };
        let mut iovecs = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MAX_BUFFERS_PER_PIN];
        let mut nr = 0;
        let mut at = addr;
        while at < addr.saturating_add(len) {
            if nr == MAX_BUFFERS_PER_PIN {
                return Reply { status: i64::from(libc::EINVAL), value: 0 };
            }
            let piece = (addr + len - at).min(MAX_BUFFER_BYTES);
            iovecs[nr] = libc::iovec { iov_base: at as usize as *mut libc::c_void, iov_len: piece as usize };
            nr += 1;
            at += piece;
        }
        if nr == 0 {
            return Reply { status: i64::from(libc::EINVAL), value: 0 };
        }
        let mut params = IoUringParams([0; 15]);
        // SAFETY: io_uring_setup takes an entry count and a writable params struct.
        let ring = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, &mut params as *mut IoUringParams) };
        if ring < 0 {
            return errno_reply();
        }
        let ring = ring as RawFd;
        // SAFETY: `iovecs[..nr]` are valid iovecs; the kernel pins the user
        // pages they describe.
        let ret = unsafe {
            libc::syscall(libc::SYS_io_uring_register, ring, IORING_REGISTER_BUFFERS, iovecs.as_ptr(), nr as u32)
        };
        if ret < 0 {
            let reply = errno_reply();
            // SAFETY: `ring` is the descriptor io_uring_setup just returned.
            unsafe { libc::close(ring) };
            return reply;
        }
        self.slots[slot] = (id, ring);
        Reply { status: 0, value: 0 }
    }

    fn unpin(&mut self, id: u32) -> Reply {
        let Some(slot) = self.slots.iter().position(|s| s.1 >= 0 && s.0 == id) else {
            return Reply { status: i64::from(libc::EINVAL), value: 0 };
        };
        let ring = self.slots[slot].1;
        self.slots[slot] = (0, -1);
        Self::release(ring)
    }

    /// Unregistering unpins the pages now; closing alone would leave it to
    /// an asynchronous ring teardown.
    fn release(ring: RawFd) -> Reply {
        // SAFETY: `ring` is an io_uring descriptor this process owns.
        let ret = unsafe {
            libc::syscall(libc::SYS_io_uring_register, ring, IORING_UNREGISTER_BUFFERS, std::ptr::null::<u8>(), 0u32)
        };
        let reply = if ret < 0 { errno_reply() } else { Reply { status: 0, value: 0 } };
        // SAFETY: as above; the descriptor is not used again.
        unsafe { libc::close(ring) };
        reply
    }

    fn release_all(&mut self) {
        for slot in 0..MAX_PINS {
            let ring = self.slots[slot].1;
            if ring >= 0 {
                self.slots[slot] = (0, -1);
                Self::release(ring);
            }
        }
    }

    /// After fork, in the child: the rings belong to the parent.
    fn forget_all(&mut self) {
        self.slots = [(0, -1); MAX_PINS];
    }
}
