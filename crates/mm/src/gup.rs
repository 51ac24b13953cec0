//! GUP pins (`pin_user_pages()` with FOLL_PIN | FOLL_WRITE, optionally
//! FOLL_LONGTERM) and their release.
//!
//! Models: mm/gup.c (`__get_user_pages()`, `faultin_page()`,
//! `try_grab_folio()`, `unpin_user_pages()`). A pin adds 1 to a large
//! folio's refcount and `_pincount`, and `GUP_PIN_COUNTING_BIAS` to a small
//! folio's refcount, per page. Pinned folios cannot be split
//! (`can_split_folio()`), and fork copies the pages they map exclusively.
//! Not modelled: FOLL_LONGTERM migration out of ZONE_MOVABLE/CMA (the model
//! has a single movable zone).

use crate::errno::Errno;
use crate::folio::GUP_PIN_COUNTING_BIAS;
use crate::pagewalk::Lookup;
use crate::pgtable::Entry;
use crate::types::*;
use crate::world::{Pin, World};

impl World {
    /// Faults a page in as GUP does (`faultin_page()`): a write fault breaks
    /// COW, but no data is stored. Returns the folio and page mapped there.
    pub(crate) fn gup_fault(&mut self, pid: Pid, addr: Vaddr, write: bool) -> Result<Option<(FolioId, u64)>, Errno> {
        self.gup_fault_flags(pid, addr, write, false)
    }

    /// `gup_fault()` with FOLL_FORCE as `force`: a read then needs no
    /// VM_READ (mlock's population of write-only or exec-only VMAs).
    pub(crate) fn gup_fault_flags(
        &mut self,
        pid: Pid,
        addr: Vaddr,
        write: bool,
        force: bool,
    ) -> Result<Option<(FolioId, u64)>, Errno> {
        const MAX_FAULT_RETRIES: u32 = 3;
        for _ in 0..MAX_FAULT_RETRIES {
            let vma = self.mm_ref(pid).vmas.find(addr).ok_or(Errno::Fault)?.clone();
            // check_vma_flags(): a write needs VM_WRITE, a read VM_READ
            // unless forced.
            if (write && !vma.writable()) || (!write && !force && !vma.readable()) {
                return Err(Errno::Fault);
            }
            if let Some(found) = self.follow_page(pid, addr, write) {
                return Ok(found);
            }
            self.handle_mm_fault(pid, &vma, addr, write)?;
        }
        panic!("{pid:?} {addr}: GUP still faulting after {MAX_FAULT_RETRIES} faults");
    }

    /// `follow_page_mask()`: what maps `addr` if the access needs no fault.
    /// `Some(None)` is the zero page (a read of it needs no fault).
    fn follow_page(&self, pid: Pid, addr: Vaddr, write: bool) -> Option<Option<(FolioId, u64)>> {
        let (entry, page) = match self.lookup(pid, addr) {
            Lookup::Hole => return None,
            Lookup::Pud { slot, entry } => panic!("{pid:?} {addr}: {entry:?} at PUD {slot:?}"),
            Lookup::Pmd { entry, .. } => (entry, Some((addr.0 & (PMD_SIZE - 1)) / PAGE_SIZE)),
            Lookup::Pte { entry, .. } => (entry, None),
        };
        match entry {
            Entry::Page(leaf) if !write || leaf.writable => Some(Some((leaf.folio, page.unwrap_or(leaf.page as u64)))),
            Entry::Zero if !write => Some(None),
            Entry::Page(_) | Entry::Zero | Entry::None => None,
            Entry::Table(t) => panic!("{pid:?} {addr}: lookup ended at table {t:?}"),
        }
    }

    /// pin_user_pages(addr, nr_pages, FOLL_PIN | FOLL_WRITE [| FOLL_LONGTERM]).
    /// All or nothing: on a failure the pages pinned so far are released.
    pub fn pin_user_pages(&mut self, pid: Pid, addr: Vaddr, nr_pages: u64, _longterm: bool) -> Result<PinId, Errno> {
        self.check_pid(pid)?;
        if !addr.is_aligned(PAGE_SIZE) || nr_pages == 0 {
            return Err(Errno::Inval);
        }
        self.begin_op("pin_user_pages");
        self.mm_mut(pid).has_pinned = true;
        let mut pin = Pin { folios: Vec::with_capacity(nr_pages as usize) };
        let mut result = Ok(());
        for p in 0..nr_pages {
            match self.gup_fault(pid, addr.add(p * PAGE_SIZE), true) {
                Ok(Some((folio, _))) => {
                    self.grab_pin(folio);
                    pin.folios.push(folio);
                }
                Ok(None) => unreachable!("a write fault never leaves the zero page"),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Err(e) = result {
            for folio in pin.folios {
                self.drop_pin(folio);
            }
            self.end_op();
            return Err(e);
        }
        let id = PinId(self.pins.len() as u32);
        self.pins.push(Some(pin));
        self.end_op();
        Ok(id)
    }

    fn grab_pin(&mut self, id: FolioId) {
        let folio = &mut self.folios[id];
        if folio.is_large() {
            folio.refcount += 1;
            folio.pincount += 1;
        } else {
            folio.refcount += GUP_PIN_COUNTING_BIAS;
        }
    }

    fn drop_pin(&mut self, id: FolioId) {
        let folio = &mut self.folios[id];
        if folio.is_large() {
            folio.pincount -= 1;
            self.folio_put_refs(id, 1);
        } else {
            self.folio_put_refs(id, GUP_PIN_COUNTING_BIAS);
        }
    }

    /// unpin_user_pages() for every page a pin holds.
    pub fn unpin(&mut self, pin: PinId) -> Result<(), Errno> {
        let Some(p) = self.pins.get_mut(pin.index()).and_then(Option::take) else {
            return Err(Errno::Inval);
        };
        self.begin_op("unpin_user_pages");
        for folio in p.folios {
            self.drop_pin(folio);
        }
        self.end_op();
        Ok(())
    }

    /// The folios each live pin holds (one entry per pinned page).
    pub(crate) fn pinned_folio_refs(&self) -> impl Iterator<Item = FolioId> + '_ {
        self.pins.iter().flatten().flat_map(|p| p.folios.iter().copied())
    }
}
