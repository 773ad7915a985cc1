/**
 * Write sessions: OUR allocator's alias write (execmem's SimBackend only). Linux does not do this:
 * the Linux rows keep text_poke (x86) and fixmap patching (arm64) exactly as patch.ts models them.
 *
 * Why: Linux's x86 __text_poke maps at most two pages per step and ends every step in its own
 * local flush (arch/x86/kernel/alternative.c, text_poke_copy_locked), and arm64's
 * aarch64_insn_copy maps one page at a time in the global fixmap and invalidates it with a
 * broadcast TLBI per page (arch/arm64/kernel/patching.c, clear_fixmap -> flush_tlb_kernel_range).
 * A session instead maps every page of the destination (of one update, or of every update and
 * trap fill of a batch) into a private window, writes, and tears the window down with ONE local
 * flush. Issue 12 item 1; Linux cannot do this without changing text_poke_copy.
 *
 * x86_64: the window is the poking mm's poking area (layout.pokeArea, 4 MiB = 1024 pages), the
 * same temporary mm text_poke uses (the machine refuses text_poke while a session is open, as
 * text_mutex would serialise them). Its page tables are allocated once by prepare(), like
 * poking_init() does for text_poke ("may be performed in an atomic section"), so no write can fail
 * for lack of memory. Per write: map the pages not yet in the window (PAGE_KERNEL & ~_PAGE_GLOBAL),
 * switch to the poking mm (counted as one `pokeSteps`: the CR3 switch pair use_temporary_mm /
 * unuse_temporary_mm), copy through this CPU's data TLB, switch back, verify the bytes through the
 * primary mapping's frames (BUG_ON(memcmp) in __text_poke). At the end of the session: clear the
 * PTEs and flush the poking mm once, locally (no IPI: "the PTEs do not need to be flushed in
 * remote page-tables", <20190426232303.28381-4-nadav.amit@gmail.com>). We flush the poking mm's
 * whole context, one instruction whatever the pages (INVPCID single-context on its PCID,
 * invpcid_flush_single_context in arch/x86/include/asm/invpcid.h; flush_tlb_mm_range does the
 * same above tlb_single_page_flush_ceiling), so the one `localFlushes` event is one flush and not
 * N INVLPGs. Only poking-mm entries carry that PCID (the kernel's are global), so the machine
 * drops exactly the window's entries.
 *
 * arm64: Linux has no temporary mm for patching; ours is designed after two things arm64 Linux
 * does have. (1) A private mm loaded in TTBR0 by the kernel: EFI runtime services run on efi_mm
 * through efi_set_pgd() -> __switch_mm() (arch/arm64/include/asm/efi.h, v5.x-v6.x), the UEFI
 * regions "loaded into a private set of page tables". Our session mm is such an mm with its own
 * ASID; its leaves are non-global (nG), privileged-only (AP: EL1 RW, EL0 none, so PAN does not
 * apply) and never executable (UXN/PXN). (2) Local TLB maintenance: TLBI VALE1 / ASIDE1 without
 * the IS suffix invalidates this CPU only ("Stale TLB entries may remain in remote CPUs",
 * local_flush_tlb_page in Huang Ying's "arm64, tlbflush: don't TLBI broadcast if page reused in
 * write fault", <20251023013524.100517-3-ying.huang@linux.alibaba.com>; DSB NSH completes it).
 * Since only this CPU ever loaded the session mm, a local TLBI of its whole ASID (TLBI ASIDE1,
 * one instruction whatever the pages) at the end is enough: one `localFlushes`, no broadcast. After each write the I-cache is cleaned/invalidated by VA to
 * the PoU over the written kernel range, once (caches_clean_inval_pou, as aarch64_insn_copy does
 * after its whole copy): IC IVAU / DC CVAU by VA act on every CPU of the address's shareability
 * domain (Arm ARM, IC IVAU "Invalidate instruction cache by address to Point of Unification";
 * aarch64_insn_copy relies on it: no IPI, and the JITed code then runs on every CPU), so it is
 * counted as one `icacheFlushes`, not as a TLB flush. It is done per write, not deferred to the
 * session's end, so code (and trap fill) written is I-cache coherent when the write returns.
 * The window is a TTBR0 (user-half) address, numerically x86's poking address; the simulated TLB
 * is not ASID-tagged, so prepare() refuses a machine whose linear map would reach that number.
 *
 * Both: the window is bounded (1024 pages); a session that needs more pages ends the chunk (unmap,
 * one local flush) and starts a new one, so each chunk costs one flush. One session is open per
 * machine at a time, on one CPU (the allocator's lock serialises sessions as text_mutex /
 * patch_lock do). The session mm is not the kernel's address space, so the W^X audit does not
 * look at it (as for x86's poking mm, wx.ts); its frames are the targets' own, writable only
 * there while the session is open. vfree of an area with pages in the open window is refused
 * (EBUSY): the owner must end the chunk first, so no alias outlives its frames.
 */
import type { ArchSpec, VaRange } from '../arch/types.js';
import { assert } from '../base/assert.js';
import type { Cpus } from './cpu.js';
import { MachineError } from './errors.js';
import { PageTable } from './pagetable.js';
import { checkPokeTarget, rotate } from './patch.js';
import type { PhysMem } from './phys.js';
import type { MachineCounters } from './types.js';
import { PTE_NX, PTE_PRESENT, PTE_RW } from './types.js';
import type { Vmalloc } from './vmalloc.js';

const PAGE = 4096;
const PMD_BYTES = 2 ** 21;
/** Pages one session chunk may map: the 4 MiB poking area. */
export const WRITE_SESSION_PAGES = 1024;
/** arm64: the session mm's window, TTBR0 address 0x0000_7f00_0000_0000 (see the header). */
const ARM64_SESSION_WINDOW: VaRange = {
  start: 0x7f0000000000,
  end: 0x7f0000000000 + WRITE_SESSION_PAGES * PAGE,
};
/** Non-global, writable, never executable (x86 PAGE_KERNEL & ~_PAGE_GLOBAL; arm64 nG, UXN/PXN). */
const SESSION_FLAGS = PTE_PRESENT | PTE_RW | PTE_NX;

/** The window write sessions use on this arch, or null (no alias write). */
export function writeSessionWindow(arch: ArchSpec): VaRange | null {
  if (arch.patch === 'temporary_mm') {
    const a = arch.layout.pokeArea;
    assert(a.end - a.start >= WRITE_SESSION_PAGES * PAGE, 'poking area smaller than the session window');
    return { start: a.start, end: a.start + WRITE_SESSION_PAGES * PAGE };
  }
  if (arch.patch === 'fixmap') return ARM64_SESSION_WINDOW;
  return null;
}

type Writer = (pa: number, done: number, n: number) => void;
/** Checks what a write put there; null for a fill, as __text_poke checks no text_poke_set. */
type Checker = ((pa: number, done: number, n: number) => boolean) | null;

/** The machine's write-session state: the session mm, and the session open now (if any). */
export class WriteSessions {
  readonly window: VaRange | null;
  /** x86: the poking mm (from boot); arm64: the session mm, made by prepare(). */
  private pt: PageTable | null;
  private readonly ownsPt: boolean;
  private prepared = false;
  private current: WriteSession | null = null;

  constructor(
    private readonly arch: ArchSpec,
    private readonly kernelPt: PageTable,
    pokingPt: PageTable | null,
    private readonly phys: PhysMem,
    private readonly counters: MachineCounters,
    private readonly cpus: Cpus,
    private readonly vm: Vmalloc,
  ) {
    this.window = writeSessionWindow(arch);
    this.pt = arch.patch === 'temporary_mm' ? pokingPt : null;
    this.ownsPt = arch.patch === 'fixmap';
  }

  /**
   * Allocate the window's page tables once (poking_init for our sessions). Idempotent; atomic
   * (ENOMEM leaves nothing behind); ENOTSUP without an alias write; EINVAL on an arm64 machine
   * whose linear map reaches the window's number (see the header).
   */
  prepare(): void {
    if (this.prepared) return;
    const w = this.window;
    if (w === null) throw new MachineError('ENOTSUP', `${this.arch.name} has no alias write for sessions`);
    if (this.ownsPt && this.phys.totalFrames * PAGE > w.start) {
      throw new MachineError('EINVAL', 'write session window overlaps the linear map of this much memory');
    }
    const framesBefore = this.counters.ptFramesAllocated;
    const pt = this.pt ?? new PageTable(this.phys, this.counters, 'session_mm');
    try {
      for (let va = w.start; va < w.end; va += PMD_BYTES) pt.preallocate(va, 1);
    } catch (e) {
      if (this.ownsPt) pt.destroy();
      else assert(this.counters.ptFramesAllocated === framesBefore, 'poking mm table half made');
      throw e;
    }
    this.pt = pt;
    this.prepared = true;
  }

  /** Open the one session, on `cpu`. EBUSY while another is open; prepares on first use. */
  open(cpu: number): WriteSession {
    this.cpus.checkCpu(cpu);
    if (this.current !== null) throw new MachineError('EBUSY', 'a write session is already open');
    this.prepare();
    const pt = this.pt;
    assert(pt !== null && this.window !== null, 'session mm missing after prepare');
    const s = new WriteSession(
      cpu,
      this.arch,
      this.window,
      pt,
      this.kernelPt,
      this.phys,
      this.counters,
      this.cpus,
      this.vm,
      () => {
        this.current = null;
      },
    );
    this.current = s;
    return s;
  }

  /** The open session, or null. */
  get openSession(): WriteSession | null {
    return this.current;
  }

  /** Frames of the arm64 session mm (x86's window lives in the poking mm, counted there). */
  tableFrames(): number[] {
    return this.ownsPt && this.pt !== null ? this.pt.tableFrames() : [];
  }

  tableFrameCount(): number {
    return this.ownsPt && this.pt !== null ? this.pt.tableFrameCount() : 0;
  }

  /** The session mm's leaf at a window address (tests: nothing stays mapped after a session). */
  windowLeaf(va: number): ReturnType<PageTable['walk']> {
    return this.pt === null ? null : this.pt.walk(va);
  }
}

/** One open session: writes through the window, one local flush per chunk. */
export class WriteSession {
  /** Target page VA -> window slot, and slot -> target page VA, for the current chunk. */
  private readonly slotOf = new Map<number, number>();
  private readonly pages: number[] = [];
  private closed = false;

  constructor(
    readonly cpu: number,
    private readonly arch: ArchSpec,
    private readonly window: VaRange,
    private readonly pt: PageTable,
    private readonly kernelPt: PageTable,
    private readonly phys: PhysMem,
    private readonly counters: MachineCounters,
    private readonly cpus: Cpus,
    private readonly vm: Vmalloc,
    private readonly onClose: () => void,
  ) {}

  /** Copy `bytes` to kernel `va` through the window (text_poke_copy's job). */
  write(va: number, bytes: Uint8Array): void {
    this.run(
      va,
      bytes.length,
      (pa, done, n) => this.phys.writeFrom(pa, bytes, done, n),
      (pa, done, n) => this.phys.equalsFrom(pa, bytes, done, n),
    );
  }

  /** Fill with a repeating pattern, phase from `va` (text_poke_set's job). */
  fill(va: number, sizeBytes: number, pattern: Uint8Array): void {
    if (pattern.length === 0) throw new MachineError('EINVAL', 'session fill: empty pattern');
    this.run(va, sizeBytes, (pa, done, n) => this.phys.fill(pa, n, rotate(pattern, done)), null);
  }

  /** Does the current chunk map any page of [va, va + sizeBytes)? */
  holds(va: number, sizeBytes: number): boolean {
    if (this.pages.length === 0) return false;
    for (const p of this.pages) if (p + PAGE > va && p < va + sizeBytes) return true;
    return false;
  }

  /** Pages the current chunk maps. */
  get mappedPageCount(): number {
    return this.pages.length;
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  /**
   * End the current chunk: clear every window PTE and flush the session mm's context once on this
   * CPU (x86 INVPCID single-context on the poking mm's PCID; arm64 TLBI ASIDE1 + DSB NSH). Nothing
   * to do (and nothing counted) when the chunk maps nothing. The session stays open.
   */
  flush(): void {
    this.assertOpen();
    this.endChunk();
  }

  /** End the session: the last chunk's teardown, then the machine may open another. */
  close(): void {
    this.assertOpen();
    this.endChunk();
    this.closed = true;
    this.onClose();
  }

  private run(va: number, sizeBytes: number, write: Writer, check: Checker): void {
    this.assertOpen();
    checkPokeTarget(this.vm, this.kernelPt, va, sizeBytes);
    // Nothing below can fail: the window's tables exist, the target is mapped.
    this.counters.pokes++;
    this.counters.pokeBytes += sizeBytes;
    this.counters.pokeSteps++; // into the session mm and back for this write
    const tlb = this.cpus.tlbs[this.cpu];
    for (let done = 0; done < sizeBytes; ) {
      const at = va + done;
      const off = at % PAGE;
      const n = Math.min(PAGE - off, sizeBytes - done);
      const pageVa = at - off;
      const frame = this.frameOf(pageVa);
      let slot = this.slotOf.get(pageVa);
      if (slot === undefined) {
        if (this.pages.length === WRITE_SESSION_PAGES) {
          // The window is full: switch out, tear this chunk down (one flush), switch back in.
          this.endChunk();
          this.counters.pokeSteps++;
        }
        slot = this.pages.length;
        this.pages.push(pageVa);
        this.slotOf.set(pageVa, slot);
        this.pt.mapLeaf(this.window.start + slot * PAGE, 1, frame, SESSION_FLAGS);
      }
      // The copy goes through this CPU's data TLB, translated by the session mm.
      const sva = this.window.start + slot * PAGE;
      let t = tlb.lookup('d', sva);
      if (t === undefined) {
        this.counters.pageWalks++;
        const walked = this.pt.walk(sva);
        assert(walked !== null, 'session window page not mapped');
        tlb.insert('d', walked, sva);
        t = walked;
      }
      assert(t.pfn === frame && (t.flags & PTE_RW) !== 0, 'stale session translation');
      write(t.pfn * PAGE + off, done, n);
      // BUG_ON(memcmp(addr, src, len)): the bytes as the primary mapping's frame holds them.
      if (check !== null) assert(check(frame * PAGE + off, done, n), 'write session verify failed');
      done += n;
    }
    if (this.arch.icacheMaintenance) this.counters.icacheFlushes++;
  }

  private endChunk(): void {
    const n = this.pages.length;
    if (n === 0) return;
    for (let slot = 0; slot < n; slot++) this.pt.unmapLeaf(this.window.start + slot * PAGE, 1);
    this.cpus.flushLocal(this.cpu, this.window.start, n * PAGE);
    this.pages.length = 0;
    this.slotOf.clear();
  }

  /** The frame behind a mapped kernel page. */
  private frameOf(pageVa: number): number {
    const t = this.kernelPt.walk(pageVa);
    assert(t !== null, 'session target unmapped after the check');
    return t.pfn + (pageVa - t.va) / PAGE;
  }

  private assertOpen(): void {
    if (this.closed) throw new MachineError('EINVAL', 'write session already closed');
  }
}
