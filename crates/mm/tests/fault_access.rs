//! Which user accesses fault with EFAULT (SIGSEGV on Linux) for each VMA
//! protection, as x86's `protection_map[]` and `do_user_addr_fault()` decide:
//! every access right makes a page readable, a store needs PROT_WRITE.

use thpsim_mm::*;

const A: Vaddr = Vaddr(0x2000_0000_0000);

#[test]
fn access_rights_by_protection() {
    let prots = [
        ("none", Prot::NONE, false, false),
        ("r", Prot::READ, true, false),
        ("w", Prot { read: false, write: true, exec: false }, true, true),
        ("x", Prot { read: false, write: false, exec: true }, true, false),
        ("rw", Prot::READ_WRITE, true, true),
    ];
    for (name, prot, read_ok, write_ok) in prots {
        for (access, ok) in [(Access::Read, read_ok), (Access::Write, write_ok)] {
            let mut w = World::new(Machine { ram_bytes: 64 << 20 }, Config::default());
            let p = w.spawn().unwrap();
            w.mmap(p, Some(A), 2 << 20, prot).unwrap();
            let got = w.touch(p, A, access, Fill::NonZero);
            let want = if ok { Ok(()) } else { Err(Errno::Fault) };
            assert_eq!(got, want, "prot={name} {access:?}");
            let present = w.page_info(p, A).state == PageState::Present;
            assert_eq!(present, ok, "prot={name} {access:?}: a failed access maps nothing");
        }
    }
}
