/**
 * Alias writes into read-only (executable) memory: x86 text_poke through a temporary mm, arm64
 * fixmap patching. `generic` has neither (ENOTSUP), which is why execmem's update helper must fall
 * back to unprotect/memcpy/protect there (Kent Overstreet's jitalloc_update,
 * <ZHFDO/95KMXRdOWI@moria.home.lan>).
 *
 * x86 (arch/x86/kernel/alternative.c, see ../shared/research/linux-execmem.md section 4): a
 * separate `poking_mm` page table whose tables are allocated at boot (poking_init: poking "may be
 * performed in an atomic section"), a poking address in the user half (layout.pokeArea; Linux
 * randomises it, we use the window's start, both pages inside one PMD). Per step of at most two
 * pages (chunk = min(2 * PAGE - offset_in_page, remaining), text_poke_copy_locked): map the target
 * frame(s) PAGE_KERNEL & ~_PAGE_GLOBAL there, switch the CPU to that mm, copy through the CPU's
 * data TLB (a miss walks poking_mm), unmap, flush the 1-2 pages locally (no IPI: "the PTEs do not
 * need to be flushed in remote page-tables", <20190426232303.28381-4-nadav.amit@gmail.com>), then
 * verify a copy (BUG_ON(memcmp), text_poke_memcpy only: __text_poke checks no text_poke_set). The
 * primary mapping stays read-only; the poking mm is not the kernel's address space, so the W^X
 * audit does not see it.
 *
 * arm64 (arch/arm64/kernel/patching.c): under patch_lock, page by page, map the frame at the fixmap
 * slot FIX_TEXT_POKE0 (layout.pokeArea) in the kernel page table (PAGE_KERNEL), write, clear the
 * slot and invalidate it (flush_tlb_kernel_range: TLBI VAALE1IS, broadcast by hardware: one
 * shootdown, no IPIs), and after the whole copy clean/invalidate the I-cache once
 * (caches_clean_inval_pou; counted in icacheFlushes). patching.c compares nothing afterwards; a
 * copy is still checked here as x86 checks it, as the simulator's own check. While a page is in the
 * slot it is writable and executable in the kernel's address space: the audit counts it for that
 * instant, and it is gone before poke returns.
 *
 * Both refuse anything that is not inside one live vmalloc/module area (ENOENT) and the kernel
 * image (EINVAL: Linux refuses core kernel text for text_poke_copy/text_poke_set).
 */
import type { ArchSpec } from '../arch/types.js';
import { alignDown, offsetIn } from '../base/addr.js';
import { assert } from '../base/assert.js';
import type { Cpus } from './cpu.js';
import { MachineError } from './errors.js';
import type { PageTable } from './pagetable.js';
import type { PhysMem } from './phys.js';
import type { MachineCounters } from './types.js';
import { PTE_GLOBAL, PTE_NX, PTE_PRESENT, PTE_RW } from './types.js';
import type { Vmalloc } from './vmalloc.js';

const PAGE = 4096;

/** Writes `n` bytes at physical address `pa`; `done` is the offset inside the whole poke. */
type Writer = (pa: number, done: number, n: number) => void;
/** Checks what a step wrote; null where Linux checks nothing (text_poke_set). */
type Checker = ((pa: number, done: number, n: number) => boolean) | null;

export class Patcher {
  constructor(
    private readonly arch: ArchSpec,
    private readonly kernelPt: PageTable,
    /** x86 only: the poking mm. */
    private readonly pokingPt: PageTable | null,
    private readonly phys: PhysMem,
    private readonly counters: MachineCounters,
    private readonly cpus: Cpus,
    private readonly vm: Vmalloc,
  ) {}

  /** text_poke_copy / aarch64_insn_copy. */
  poke(cpu: number, va: number, bytes: Uint8Array): void {
    this.run(
      cpu,
      va,
      bytes.length,
      (pa, done, n) => this.phys.writeFrom(pa, bytes, done, n),
      (pa, done, n) => this.phys.equalsFrom(pa, bytes, done, n),
    );
  }

  /** text_poke_set: fill with a repeating pattern (phase from `va`). */
  pokeSet(cpu: number, va: number, sizeBytes: number, pattern: Uint8Array): void {
    if (pattern.length === 0) throw new MachineError('EINVAL', 'pokeSet: empty pattern');
    this.run(cpu, va, sizeBytes, (pa, done, n) => this.phys.fill(pa, n, rotate(pattern, done)), null);
  }

  private run(cpu: number, va: number, sizeBytes: number, write: Writer, check: Checker): void {
    if (this.arch.patch === 'none') {
      throw new MachineError(
        'ENOTSUP',
        `${this.arch.name} has no alias-write primitive (text_poke / fixmap)`,
      );
    }
    this.cpus.checkCpu(cpu);
    checkPokeTarget(this.vm, this.kernelPt, va, sizeBytes);
    if (this.arch.patch === 'temporary_mm') this.textPoke(cpu, va, sizeBytes, write, check);
    else this.fixmapPoke(cpu, va, sizeBytes, write, check);
    this.counters.pokes++;
    this.counters.pokeBytes += sizeBytes;
  }

  private textPoke(cpu: number, va: number, sizeBytes: number, write: Writer, check: Checker): void {
    const pt = this.pokingPt;
    assert(pt !== null, 'x86 machine without poking_mm');
    const pokeVa = this.arch.layout.pokeArea.start;
    const maxPages = this.arch.pokeMaxPages;
    for (let done = 0; done < sizeBytes; ) {
      const at = va + done;
      const off = offsetIn(at, PAGE);
      const n = Math.min(maxPages * PAGE - off, sizeBytes - done);
      const pages = Math.ceil((off + n) / PAGE);
      for (let i = 0; i < pages; i++) {
        pt.mapLeaf(pokeVa + i * PAGE, 1, this.frameOf(at - off + i * PAGE), PTE_PRESENT | PTE_RW | PTE_NX);
      }
      // use_temporary_mm: the copy goes through this CPU's data TLB, translated by poking_mm.
      const tlb = this.cpus.tlbs[cpu];
      for (let i = 0; i < pages; i++) {
        const pv = pokeVa + i * PAGE;
        if (tlb.lookup('d', pv) === undefined) {
          this.counters.pageWalks++;
          const t = pt.walk(pv);
          assert(t !== null, 'poking page not mapped');
          tlb.insertWalked('d', t, pv);
        }
      }
      this.copyPages(at, n, done, write);
      for (let i = 0; i < pages; i++) pt.unmapLeaf(pokeVa + i * PAGE, 1);
      this.cpus.flushLocal(cpu, pokeVa, pages * PAGE);
      this.verify(at, n, done, check);
      this.counters.pokeSteps++;
      done += n;
    }
  }

  private fixmapPoke(cpu: number, va: number, sizeBytes: number, write: Writer, check: Checker): void {
    const slot = this.arch.layout.pokeArea.start;
    for (let done = 0; done < sizeBytes; ) {
      const at = va + done;
      const off = offsetIn(at, PAGE);
      const n = Math.min(PAGE - off, sizeBytes - done);
      this.kernelPt.mapLeaf(slot, 1, this.frameOf(at - off), PTE_PRESENT | PTE_RW | PTE_NX | PTE_GLOBAL);
      const t = this.cpus.translate(cpu, 'd', slot + off, true);
      write(t.pfn * PAGE + off, done, n);
      this.kernelPt.unmapLeaf(slot, 1);
      this.cpus.flushBroadcast(slot, PAGE);
      this.verify(at, n, done, check);
      this.counters.pokeSteps++;
      done += n;
    }
    this.counters.icacheFlushes++;
  }

  /** Copy a step page by page at the physical addresses the target VA maps to. */
  private copyPages(at: number, n: number, done: number, write: Writer): void {
    for (let k = 0; k < n; ) {
      const a = at + k;
      const off = offsetIn(a, PAGE);
      const m = Math.min(PAGE - off, n - k);
      write(this.frameOf(a - off) * PAGE + off, done + k, m);
      k += m;
    }
  }

  private verify(at: number, n: number, done: number, check: Checker): void {
    if (check === null) return;
    for (let k = 0; k < n; ) {
      const a = at + k;
      const off = offsetIn(a, PAGE);
      const m = Math.min(PAGE - off, n - k);
      assert(check(this.frameOf(a - off) * PAGE + off, done + k, m), 'text_poke verify failed');
      k += m;
    }
  }

  /** The frame behind a mapped kernel page. */
  private frameOf(pageVa: number): number {
    const t = this.kernelPt.walk(pageVa);
    assert(t !== null, 'poke target unmapped after the check');
    return t.pfn + (pageVa - t.va) / PAGE;
  }
}

/**
 * What every alias write checks first (text_poke and the write session alike): a range inside one
 * live vmalloc/module area (ENOENT), not the kernel image (EINVAL: Linux refuses core kernel text
 * for text_poke_copy/text_poke_set), every page mapped. Nothing has changed when it throws.
 */
export function checkPokeTarget(vm: Vmalloc, kernelPt: PageTable, va: number, sizeBytes: number): void {
  if (!Number.isInteger(va) || va < 0 || !Number.isInteger(sizeBytes) || sizeBytes <= 0) {
    throw new MachineError('EINVAL', `poke: bad range 0x${Number(va).toString(16)}+${sizeBytes}`);
  }
  const area = vm.findArea(va);
  if (area === undefined)
    throw new MachineError('ENOENT', `poke: 0x${va.toString(16)} is not in a live vmalloc area`);
  if (area.kernelImage) throw new MachineError('EINVAL', 'poke: refusing to patch core kernel text');
  if (va + sizeBytes > area.va + area.sizeBytes) {
    throw new MachineError('EINVAL', `poke: 0x${va.toString(16)}+${sizeBytes} crosses the end of its area`);
  }
  for (let p = alignDown(va, PAGE); p < va + sizeBytes; p += PAGE) {
    if (kernelPt.walk(p) === null)
      throw new MachineError('ENOENT', `poke: 0x${p.toString(16)} is not mapped`);
  }
}

/** The pattern starting at phase `done`. */
export function rotate(pattern: Uint8Array, done: number): Uint8Array {
  const phase = done % pattern.length;
  if (phase === 0) return pattern;
  const out = new Uint8Array(pattern.length);
  for (let i = 0; i < pattern.length; i++) out[i] = pattern[(phase + i) % pattern.length];
  return out;
}
