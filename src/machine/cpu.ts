/**
 * CPU accesses and TLB maintenance: instruction fetches, loads and stores through each CPU's TLB,
 * page walks on misses, hardware faults, and local / global flushes with their counted cost.
 *
 * Why accesses go through the TLB and not straight to the page table: a TLB entry keeps the
 * permissions it was filled with until it is flushed, which is exactly why Linux must shoot down
 * every CPU after set_memory_* (Song Liu: protect/unprotect "require global TLB flush",
 * <CAPhsuW5dx_A_brhf0HHWMWj3HB_31QCQ8xbqZPir8YxHM5WRig@mail.gmail.com>). Here a stale entry is
 * used as hardware would use it; no re-walk happens on a permission fault (x86 would drop the entry
 * on a #PF; we keep it until flushed, the conservative reading). A miss walks `kernelPt` and
 * counts one page walk (no paging-structure caches are modelled).
 *
 * Flushes: a local flush (range or all) costs one `localFlushes`. Kernel flushes that must reach
 * every CPU are flush_tlb_kernel_range() (`flushKernelRange`) and flush_tlb_all() (`flushAll`):
 * - A range longer than arch.kernelFlushCeilingPages flushes the whole TLB instead (x86
 *   tlb_single_page_flush_ceiling = 33 pages, arch/x86/mm/tlb.c; arm64 MAX_DVM_OPS = 512 pages,
 *   arch/arm64/include/asm/tlbflush.h), so every caller (CPA, vmalloc purge, vfree) obeys it.
 * - arch.kernelTlbFlush 'ipi' (x86): one `shootdowns` plus one IPI per other CPU (on_each_cpu).
 *   'broadcast' (arm64 TLBI ...IS): one `broadcastFlushes`, no IPI.
 * - A flush of the whole TLB also counts one `fullTlbFlushes`.
 * `flushBroadcast` is the arm64 fixmap poke's flush (a broadcast whatever the arch says).
 *
 * The fetch hot path (`ifetch`, target >= 20 M/s) keeps per CPU the last fetched 4 KiB page and its
 * frame bytes. A hit there is exactly an L1 iTLB hit on the entry just looked up (no other i-side
 * lookup can have happened in between, or the cache would hold that page), so it is counted in
 * `tlb.stats.i.l1Hits` and the TLB's LRU order is unchanged. The cache is dropped on every flush,
 * eviction or page-table change, and it allocates nothing. Where SMT siblings share the L1 iTLB
 * (zen4), the sibling's instruction lookups can intervene, so the machine also drops it then
 * (CpuTlb's onSiblingL1i hook).
 */
import type { ArchSpec, KernelTlbFlush } from '../arch/types.js';
import { offsetIn } from '../base/addr.js';
import { MachineError, MachineFault } from './errors.js';
import type { PageTable } from './pagetable.js';
import type { PhysMem } from './phys.js';
import type { CpuTlb, TlbSide } from './tlb.js';
import type { MachineCounters, Translation } from './types.js';
import { PTE_NX, PTE_RW } from './types.js';
import type { WxAudit } from './wx.js';

const PAGE = 4096;
const VA_END = 2 ** 48;

export class Cpus {
  readonly count: number;
  /** Per CPU: base VA of the micro-cached page (NaN = none), its frame and the frame's bytes. */
  private readonly microBase: Float64Array;
  private readonly microPfn: Float64Array;
  private readonly microBytes: (Uint8Array | undefined)[];
  /** Whether any CPU may have a micro-cached page (so a page-table change need not clear them all). */
  private microLive = false;

  constructor(
    private readonly arch: ArchSpec,
    private readonly pt: PageTable,
    private readonly phys: PhysMem,
    private readonly counters: MachineCounters,
    private readonly audit: WxAudit,
    readonly tlbs: readonly CpuTlb[],
  ) {
    this.count = tlbs.length;
    this.microBase = new Float64Array(this.count).fill(Number.NaN);
    this.microPfn = new Float64Array(this.count);
    this.microBytes = new Array(this.count).fill(undefined);
  }

  /** One instruction byte. Hot path: no allocation, no trap check (see `fetch`). */
  ifetch(cpu: number, va: number): number {
    const base = this.microBase[cpu];
    if (va >= base && va < base + PAGE) {
      this.tlbs[cpu].stats.i.l1Hits++;
      const bytes = this.microBytes[cpu];
      if (bytes !== undefined) return bytes[va - base];
      return this.frameByte(cpu, va - base);
    }
    return this.ifetchSlow(cpu, va);
  }

  /**
   * ifetch without the byte: the same TLB lookups, counters and micro-cache state, but no read of
   * the frame's contents (the fetch model counts translations and never looks at the bytes, and
   * the contents look-up was a measurable part of its time). A later ifetch hit on the page reads
   * the frame then (frameByte).
   */
  itouch(cpu: number, va: number): void {
    const base = this.microBase[cpu];
    if (va >= base && va < base + PAGE) {
      this.tlbs[cpu].stats.i.l1Hits++;
      return;
    }
    this.microFill(cpu, va);
  }

  /** Fetch an instruction of `sizeBytes` at va; raises 'trap' if the arch trap pattern starts there. */
  fetch(cpu: number, va: number, sizeBytes: number): Uint8Array {
    const out = this.access(cpu, 'i', va, sizeBytes, null);
    const pat = this.arch.trapPattern;
    const n = Math.min(pat.length, sizeBytes);
    let trap = n > 0;
    for (let i = 0; i < n && trap; i++) trap = out[i] === pat[i];
    if (trap)
      throw new MachineFault('trap', cpu, va, `cpu${cpu}: trap instruction fetched at 0x${va.toString(16)}`);
    return out;
  }

  load(cpu: number, va: number, sizeBytes: number): Uint8Array {
    return this.access(cpu, 'd', va, sizeBytes, null);
  }

  store(cpu: number, va: number, bytes: Uint8Array): void {
    this.access(cpu, 'd', va, bytes.length, bytes);
  }

  /** Translate one access on one CPU; faults if not present or the permission is missing. */
  translate(cpu: number, side: TlbSide, va: number, write: boolean): Translation {
    const tlb = this.tlbs[cpu];
    let t = tlb.lookup(side, va);
    if (t === undefined) {
      this.counters.pageWalks++;
      const walked = this.pt.walk(va);
      if (walked === null) {
        throw new MachineFault('not-present', cpu, va, `cpu${cpu}: no mapping at 0x${va.toString(16)}`);
      }
      tlb.insertWalked(side, walked, va);
      this.audit.noteInsert(cpu, walked);
      t = walked;
    }
    if (write && !(t.flags & PTE_RW)) {
      throw new MachineFault('write-protect', cpu, va, `cpu${cpu}: write to read-only 0x${va.toString(16)}`);
    }
    if (side === 'i' && t.flags & PTE_NX) {
      throw new MachineFault('nx', cpu, va, `cpu${cpu}: fetch from non-executable 0x${va.toString(16)}`);
    }
    return t;
  }

  flushLocal(cpu: number, va?: number, sizeBytes?: number): void {
    this.checkCpu(cpu);
    const range = this.checkFlushRange(va, sizeBytes);
    this.counters.localFlushes++;
    this.flushOne(cpu, range);
  }

  /** A flush on every CPU: flushAll() without a range, else flushKernelRange(). */
  flushGlobal(va?: number, sizeBytes?: number): void {
    const range = this.checkFlushRange(va, sizeBytes);
    this.flushEvery(range, this.arch.kernelTlbFlush);
  }

  /**
   * flush_tlb_kernel_range(va, va + sizeBytes) on every CPU: by address up to the arch ceiling,
   * the whole TLB above it; by IPI or broadcast as the arch does it.
   */
  flushKernelRange(va: number, sizeBytes: number): void {
    const range = this.checkFlushRange(va, sizeBytes);
    this.flushEvery(range, this.arch.kernelTlbFlush);
  }

  /** flush_tlb_all(): every CPU's whole TLB (x86 on_each_cpu(do_flush_tlb_all); arm64 TLBI VMALLE1IS). */
  flushAll(): void {
    this.flushEvery(null, this.arch.kernelTlbFlush);
  }

  /** Hardware-broadcast invalidate (arm64 TLBI ...IS): reaches every CPU without IPIs. */
  flushBroadcast(va: number, sizeBytes: number): void {
    const range = this.checkFlushRange(va, sizeBytes);
    this.flushEvery(range, 'broadcast');
  }

  /** Forget every CPU's micro-cached page (any page-table change). */
  invalidateMicro(): void {
    if (!this.microLive) return;
    this.microBase.fill(Number.NaN);
    this.microBytes.fill(undefined);
    this.microLive = false;
  }

  invalidateMicroOf(cpu: number): void {
    this.microBase[cpu] = Number.NaN;
    this.microBytes[cpu] = undefined;
  }

  checkCpu(cpu: number): void {
    if (!Number.isInteger(cpu) || cpu < 0 || cpu >= this.count) {
      throw new MachineError('EINVAL', `cpu ${cpu} not in 0..${this.count - 1}`);
    }
  }

  /** One flush that reaches every CPU, counted once; a range over the ceiling becomes a full flush. */
  private flushEvery(range: { va: number; sizeBytes: number } | null, how: KernelTlbFlush): void {
    let r = range;
    if (r !== null && r.sizeBytes > this.arch.kernelFlushCeilingPages * PAGE) r = null;
    if (how === 'ipi') {
      this.counters.shootdowns++;
      this.counters.ipis += this.count - 1;
    } else {
      this.counters.broadcastFlushes++;
    }
    if (r === null) this.counters.fullTlbFlushes++;
    for (let cpu = 0; cpu < this.count; cpu++) this.flushOne(cpu, r);
  }

  private flushOne(cpu: number, range: { va: number; sizeBytes: number } | null): void {
    const tlb = this.tlbs[cpu];
    if (range === null) {
      tlb.flushAll();
      this.audit.onFlush(cpu);
    } else {
      tlb.flushRange(range.va, range.sizeBytes);
      this.audit.onFlush(cpu, range.va, range.sizeBytes);
    }
    this.invalidateMicroOf(cpu);
  }

  private ifetchSlow(cpu: number, va: number): number {
    this.microFill(cpu, va);
    return this.frameByte(cpu, offsetIn(va, PAGE));
  }

  /** A micro-cache miss: translate the fetch at va and cache its page (its bytes read later). */
  private microFill(cpu: number, va: number): void {
    this.checkCpu(cpu);
    this.checkVa(va, 1);
    const t = this.translate(cpu, 'i', va, false);
    const pageVa = va - offsetIn(va, PAGE);
    this.microBase[cpu] = pageVa;
    this.microPfn[cpu] = t.pfn + (pageVa - t.va) / PAGE;
    this.microLive = true;
    this.microBytes[cpu] = undefined;
  }

  /** Micro-cached frame that had no bytes when cached: it may have been written since. */
  private frameByte(cpu: number, off: number): number {
    const bytes = this.phys.frameBytes(this.microPfn[cpu]);
    if (bytes === undefined) return 0;
    this.microBytes[cpu] = bytes;
    return bytes[off];
  }

  private access(
    cpu: number,
    side: TlbSide,
    va: number,
    sizeBytes: number,
    src: Uint8Array | null,
  ): Uint8Array {
    this.checkCpu(cpu);
    this.checkVa(va, sizeBytes);
    const write = src !== null;
    const out = write ? src : new Uint8Array(sizeBytes);
    // Translate every page first so that a fault leaves memory unchanged.
    const pas: number[] = [];
    for (let done = 0; done < sizeBytes; ) {
      const at = va + done;
      const t = this.translate(cpu, side, at, write);
      const n = Math.min(PAGE - offsetIn(at, PAGE), sizeBytes - done);
      pas.push(t.pfn * PAGE + (at - t.va), n);
      done += n;
    }
    let done = 0;
    for (let k = 0; k < pas.length; k += 2) {
      const pa = pas[k];
      const n = pas[k + 1];
      if (write) this.phys.write(pa, out.subarray(done, done + n));
      else out.set(this.phys.read(pa, n), done);
      done += n;
    }
    return out;
  }

  private checkVa(va: number, sizeBytes: number): void {
    if (
      !Number.isInteger(va) ||
      va < 0 ||
      !Number.isInteger(sizeBytes) ||
      sizeBytes <= 0 ||
      va + sizeBytes > VA_END
    ) {
      throw new MachineError('EINVAL', `bad access 0x${Number(va).toString(16)}+${sizeBytes}`);
    }
  }

  private checkFlushRange(va?: number, sizeBytes?: number): { va: number; sizeBytes: number } | null {
    if (va === undefined && sizeBytes === undefined) return null;
    if (va === undefined || sizeBytes === undefined) {
      throw new MachineError('EINVAL', 'a flush range needs both va and sizeBytes');
    }
    this.checkVa(va, sizeBytes);
    return { va, sizeBytes };
  }
}
