//! The messages between the controller and a worker, over a SEQPACKET
//! socket pair: one request, one reply, fixed little binary layouts.
//!
//! A request is a 64-byte header (a command word and seven argument words,
//! native-endian `u64`s) followed by an optional payload of `u64` words. A
//! reply is 16 bytes: a status word (0 success, a positive errno, or a
//! negative `WorkerFault`) and a value word. A worker's first message, sent
//! unasked, is a reply with status 0 and its pid.

/// The largest message either side sends.
pub(crate) const MSG_MAX: usize = 64 * 1024;
/// Bytes of a request header.
pub(crate) const HEADER_BYTES: usize = 64;
/// Bytes of a reply.
pub(crate) const REPLY_BYTES: usize = 16;
/// Touch runs (start, count, stride) that fit in one request.
pub(crate) const MAX_RUNS_PER_MSG: usize = (MSG_MAX - HEADER_BYTES) / 24;

/// What a request asks the worker to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmd {
    /// mmap(a0, a1, prot a2, MAP_PRIVATE | MAP_ANONYMOUS |
    /// MAP_FIXED_NOREPLACE), or MAP_FIXED if a3 != 0.
    Mmap = 1,
    /// munmap(a0, a1).
    Munmap,
    /// mprotect(a0, a1, prot a2).
    Mprotect,
    /// mremap(a0, a1, a2, MREMAP_MAYMOVE [| MREMAP_FIXED if a3 != 0], a4),
    /// or with no flags at all if a5 != 0; the reply's value is the new
    /// address.
    Mremap,
    /// madvise(a0, a1, advice a2).
    Madvise,
    /// Loads (a0 = 0) or stores of the byte a1 (a0 = 1) at every address of
    /// the payload's a2 runs (start, count, stride).
    Touch,
    /// prctl(PR_SET_THP_DISABLE, a0, a1, 0, 0).
    Prctl,
    /// Pins [a1, a1 + a2) as pin a0 (io_uring fixed buffers).
    Pin,
    /// Releases pin a0.
    Unpin,
    /// fork(); the request carries the child's socket. The reply's value is
    /// the child's pid; the child then sends its own first message.
    Fork,
    /// Releases every pin, replies, and exits.
    Exit,
    /// madvise(a0, a1, MADV_POPULATE_READ), for the worker's own file mappings.
    Populate,
    /// Maps 2 MiB of MADV_HUGEPAGE memory anywhere and writes it, so that
    /// khugepaged keeps an mm on its list; the value is its address.
    Sentinel,
    /// mlock(a0, a1).
    Mlock,
    /// munlock(a0, a1).
    Munlock,
    /// Loads the 64-bit word at a0 (8-byte aligned); the reply's value is it.
    ReadWord,
}

impl Cmd {
    const ALL: [Cmd; 16] = [
        Cmd::Mmap,
        Cmd::Munmap,
        Cmd::Mprotect,
        Cmd::Mremap,
        Cmd::Madvise,
        Cmd::Touch,
        Cmd::Prctl,
        Cmd::Pin,
        Cmd::Unpin,
        Cmd::Fork,
        Cmd::Exit,
        Cmd::Populate,
        Cmd::Sentinel,
        Cmd::Mlock,
        Cmd::Munlock,
        Cmd::ReadWord,
    ];

    fn from_word(word: u64) -> Option<Cmd> {
        Cmd::ALL.into_iter().find(|cmd| *cmd as u64 == word)
    }
}

/// Reply statuses below zero: the worker could not even try the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WorkerFault {
    /// The request was malformed.
    BadRequest = -1,
    /// The worker's fixed-size pin table is full.
    TooManyPins = -2,
    /// A fork request came without the child's socket.
    NoSocket = -3,
}

impl WorkerFault {
    pub(crate) fn describe(status: i64) -> &'static str {
        match status {
            -1 => "the worker could not parse the request",
            -2 => "the worker's pin table is full",
            -3 => "the fork request carried no socket for the child",
            _ => "unknown worker fault",
        }
    }
}

/// A decoded request header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub cmd: Cmd,
    pub args: [u64; 7],
}

fn word(bytes: &[u8], i: usize) -> Option<u64> {
    let chunk = bytes.get(i * 8..i * 8 + 8)?;
    Some(u64::from_ne_bytes(chunk.try_into().ok()?))
}

/// Writes a request into `out` (cleared first): `HEADER_BYTES` plus eight
/// bytes per payload word. Used by the controller only.
pub(crate) fn encode_request(cmd: Cmd, args: [u64; 7], payload: &[u64], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&(cmd as u64).to_ne_bytes());
    for arg in args {
        out.extend_from_slice(&arg.to_ne_bytes());
    }
    for w in payload {
        out.extend_from_slice(&w.to_ne_bytes());
    }
}

/// Reads a request header; the payload is `&msg[HEADER_BYTES..]`.
pub(crate) fn decode_request(msg: &[u8]) -> Option<Request> {
    if msg.len() < HEADER_BYTES || !(msg.len() - HEADER_BYTES).is_multiple_of(8) {
        return None;
    }
    let cmd = Cmd::from_word(word(msg, 0)?)?;
    let mut args = [0u64; 7];
    for (i, arg) in args.iter_mut().enumerate() {
        *arg = word(msg, i + 1)?;
    }
    Some(Request { cmd, args })
}

/// The `i`th payload word of a request message.
pub(crate) fn payload_word(msg: &[u8], i: usize) -> Option<u64> {
    word(msg.get(HEADER_BYTES..)?, i)
}

/// A reply: status and value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    pub status: i64,
    pub value: u64,
}

pub(crate) fn encode_reply(reply: Reply) -> [u8; REPLY_BYTES] {
    let mut out = [0u8; REPLY_BYTES];
    out[..8].copy_from_slice(&reply.status.to_ne_bytes());
    out[8..].copy_from_slice(&reply.value.to_ne_bytes());
    out
}

pub(crate) fn decode_reply(msg: &[u8]) -> Option<Reply> {
    if msg.len() != REPLY_BYTES {
        return None;
    }
    Some(Reply { status: word(msg, 0)? as i64, value: word(msg, 1)? })
}

/// Compresses ascending page addresses into (start, count, stride) runs, so
/// that touching every page (or every nth) of a range is one run.
pub(crate) fn compress_runs(addrs: &[u64]) -> Vec<[u64; 3]> {
    let mut runs: Vec<[u64; 3]> = Vec::new();
    for &addr in addrs {
        if let Some(run) = runs.last_mut() {
            let [start, count, stride] = *run;
            if count == 1 && addr > start {
                *run = [start, 2, addr - start];
                continue;
            }
            if count > 1 && addr == start + count * stride {
                run[1] += 1;
                continue;
            }
        }
        runs.push([addr, 1, 0]);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let mut msg = Vec::new();
        encode_request(Cmd::Touch, [1, 0xa5, 2, 0, 0, 0, 0], &[7, 8, 9], &mut msg);
        let req = decode_request(&msg).unwrap();
        assert_eq!(req.cmd, Cmd::Touch);
        assert_eq!(req.args[1], 0xa5);
        assert_eq!(payload_word(&msg, 2), Some(9));
        assert_eq!(payload_word(&msg, 3), None);
        assert_eq!(decode_request(&msg[..10]), None);
        let reply = Reply { status: -2, value: 42 };
        assert_eq!(decode_reply(&encode_reply(reply)), Some(reply));
    }

    #[test]
    fn runs_compress_regular_patterns() {
        let all: Vec<u64> = (0..512).map(|i| 0x1000_0000 + i * 4096).collect();
        assert_eq!(compress_runs(&all), vec![[0x1000_0000, 512, 4096]]);
        let every4: Vec<u64> = (0..128).map(|i| i * 4 * 4096).collect();
        assert_eq!(compress_runs(&every4), vec![[0, 128, 16384]]);
        assert_eq!(compress_runs(&[0, 4096, 12288]), vec![[0, 2, 4096], [12288, 1, 0]]);
        let expand = |runs: &[[u64; 3]]| -> Vec<u64> {
            runs.iter().flat_map(|&[s, n, st]| (0..n).map(move |i| s + i * st)).collect()
        };
        let odd = [0, 4096, 8192, 20480, 24576, 40960];
        assert_eq!(expand(&compress_runs(&odd)), odd);
    }
}
