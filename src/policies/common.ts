/**
 * What every re-implemented Linux design shares: input checks, the table of live allocations,
 * the arch range table resolved as Linux resolves it, and the machine primitives the kernel code
 * calls (vmalloc / vfree, set_memory_*, text_poke, plain stores through a writable mapping).
 *
 * Why a base class: the six designs differ only in where bytes come from and when permissions
 * change. Keeping validation, bookkeeping and the primitives in one place means a difference in
 * the compare table is a difference between designs, never between two copies of the same
 * helper. Every policy is a RE-IMPLEMENTATION ON OUR SIMULATED MACHINE of Linux code described in
 * /work/shared/research/linux-execmem.md; costs (flushes, splits, IPIs) are never reported by a
 * policy about itself but arise from the machine's page tables (src/machine).
 *
 * Linux facts used here (research/linux-execmem.md section 2):
 * - kernel/module/main.c module_memory_alloc(): data-like module sections (data, rodata,
 *   ro_after_init and their init twins) are allocated as EXECMEM_MODULE_DATA, text as
 *   EXECMEM_MODULE_TEXT. Our `module_rodata` / `module_ro_after_init` therefore use Linux's
 *   MODULE_DATA range here (they are our types, per tglx, not Linux's).
 * - mm/execmem.c execmem_init_missing(): a type without a range inherits EXECMEM_DEFAULT
 *   (= MODULE_TEXT), except MODULE_DATA, which gets PAGE_KERNEL (RW, NX).
 * - execmem_vmalloc(): try [start, end], then once [fallback_start, fallback_end] if set.
 * - Every design asks vmalloc for PAGE_KERNEL (RW+NX) memory and reaches its final protection with
 *   set_memory_*; the direct-map alias is then changed by CPA (cpa_process_alias), which is where
 *   direct-map splits come from.
 *
 * Limits: an allocation is at most MAX_ALLOC_BYTES; alignment is a power of two up to one page
 * (what the kernel's callers ask for: 64 for BPF images, a page for module sections).
 */
import type { ArchSpec, ExecmemRange, ExecmemType, Prot } from '../arch/types.js';
import { EXECMEM_TYPES } from '../arch/types.js';
import { alignDown, alignUp, hexAddr, isPow2, SZ_2M, SZ_4K } from '../base/addr.js';
import { assert } from '../base/assert.js';
import { MachineError } from '../machine/errors.js';
import type { Machine } from '../machine/machine.js';
import type { VmArea } from '../machine/types.js';
import { PolicyError } from './errors.js';
import type { AllocHint, ExecAllocator } from './types.js';

export const PAGE_BYTES = SZ_4K;
export const PMD_BYTES = SZ_2M;
/** Largest single allocation any policy accepts (the x86 module area is about 1 GiB). */
export const MAX_ALLOC_BYTES = 256 * 1024 * 1024;

/** Linux's own execmem types (include/linux/execmem.h enum execmem_type). */
export type LinuxExecmemType = 'module_text' | 'kprobes' | 'ftrace' | 'bpf' | 'module_data';

/** Which Linux execmem type serves one of our types (module_memory_alloc: data-like -> MODULE_DATA). */
export function linuxTypeOf(type: ExecmemType): LinuxExecmemType {
  switch (type) {
    case 'module_rodata':
    case 'module_ro_after_init':
    case 'module_data':
      return 'module_data';
    default:
      return type;
  }
}

/** The arch range table completed as execmem_init_missing() completes it. */
export function resolveLinuxRanges(
  arch: ArchSpec,
  modulesStart: number,
  kaslr: boolean,
): Readonly<Record<LinuxExecmemType, ExecmemRange>> {
  const table = arch.execmemRanges(modulesStart, kaslr);
  const text = table.module_text;
  assert(text !== undefined, `${arch.name}: execmem table has no EXECMEM_DEFAULT (module_text) range`);
  return {
    module_text: text,
    kprobes: table.kprobes ?? text,
    ftrace: table.ftrace ?? text,
    bpf: table.bpf ?? text,
    module_data: table.module_data ?? { ...text, prot: 'rw' },
  };
}

/** Where a live allocation is in its life. */
export type AllocState = 'loading' | 'final' | 'sealed';

/** One live allocation, as the policy remembers it (side table; never in executable memory). */
export interface Allocation {
  readonly va: number;
  readonly type: ExecmemType;
  /** Bytes the caller asked for (the unit liveBytes is counted in, identical across policies). */
  readonly sizeBytes: number;
  /** Bytes the design set aside for it (page, chunk or class rounded). */
  readonly reservedBytes: number;
  /** Which mechanism of the design serves it (e.g. 'vmalloc', 'pack', 'slab', 'cache'). */
  readonly kind: string;
  state: AllocState;
  /** Are its pages writable through the primary mapping right now? */
  writable: boolean;
  /** Protection its pages return to after a temporary RW window (the design's final protection). */
  finalProt: Prot;
  /** bpf_prog_pack: the RW image the JIT writes before finalize (kvmalloc'd, not executable). */
  rwImage: Uint8Array | null;
  /** The pack, slab or cache block that holds it, if any. */
  owner: unknown;
}

export function newAllocation(
  va: number,
  type: ExecmemType,
  sizeBytes: number,
  reservedBytes: number,
  kind: string,
  writable: boolean,
  finalProt: Prot,
): Allocation {
  return {
    va,
    type,
    sizeBytes,
    reservedBytes,
    kind,
    state: 'loading',
    writable,
    finalProt,
    rwImage: null,
    owner: null,
  };
}

/**
 * Live allocations by start address, with a sorted index so that a write at an address inside an
 * allocation finds it by binary search.
 */
export class LiveSet {
  private readonly byStart = new Map<number, Allocation>();
  private readonly starts: number[] = [];
  liveBytes = 0;

  get count(): number {
    return this.byStart.size;
  }

  add(a: Allocation): void {
    if (this.byStart.has(a.va)) assert(false, `live allocation at ${hexAddr(a.va)} already exists`);
    const i = this.lowerBound(a.va);
    const next = this.starts[i];
    if (next !== undefined && a.va + a.sizeBytes > next)
      assert(false, `${hexAddr(a.va)} overlaps the next one`);
    const prev = i > 0 ? this.byStart.get(this.starts[i - 1]) : undefined;
    if (prev !== undefined && prev.va + prev.sizeBytes > a.va)
      assert(false, `allocation at ${hexAddr(a.va)} overlaps`);
    this.starts.splice(i, 0, a.va);
    this.byStart.set(a.va, a);
    this.liveBytes += a.sizeBytes;
  }

  remove(a: Allocation): void {
    const i = this.lowerBound(a.va);
    if (!(this.starts[i] === a.va && this.byStart.get(a.va) === a))
      assert(false, `no live allocation at ${hexAddr(a.va)}`);
    this.starts.splice(i, 1);
    this.byStart.delete(a.va);
    this.liveBytes -= a.sizeBytes;
  }

  at(va: number): Allocation | undefined {
    return this.byStart.get(va);
  }

  /** The allocation whose [va, va + sizeBytes) contains `va`. */
  containing(va: number): Allocation | undefined {
    const i = this.lowerBound(va + 1) - 1;
    if (i < 0) return undefined;
    const a = this.byStart.get(this.starts[i])!;
    return va < a.va + a.sizeBytes ? a : undefined;
  }

  forEach(fn: (a: Allocation) => void): void {
    for (const va of this.starts) fn(this.byStart.get(va)!);
  }

  /** First index whose start is >= va. */
  private lowerBound(va: number): number {
    let lo = 0;
    let hi = this.starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.starts[mid] < va) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/** Counters every policy keeps about its own calls (machine costs come from the machine). */
export interface PolicyCounters {
  allocs: number;
  frees: number;
  writes: number;
  finalizes: number;
  seals: number;
  /** vmalloc / vfree calls the design made. */
  vmallocs: number;
  vfrees: number;
  /** set_memory_* calls the design made (each may cover many pages). */
  setMemoryCalls: number;
  /** Alias writes (text_poke / fixmap) and unprotect-memcpy-protect writes. */
  pokes: number;
  flipWrites: number;
  /** Plain stores through a writable primary mapping. */
  plainWrites: number;
  /** Acquisitions of the design's one allocator mutex (all contention-free: one thread). */
  mutexAcquisitions: number;
  /** Packs, slabs or cache blocks mapped and released. */
  blocksMapped: number;
  blocksReleased: number;
  /** Cache fills that wanted a 2 MiB block but took the exact-size fallback. */
  exactSizeFallbacks: number;
}

export function newPolicyCounters(): PolicyCounters {
  return {
    allocs: 0,
    frees: 0,
    writes: 0,
    finalizes: 0,
    seals: 0,
    vmallocs: 0,
    vfrees: 0,
    setMemoryCalls: 0,
    pokes: 0,
    flipWrites: 0,
    plainWrites: 0,
    mutexAcquisitions: 0,
    blocksMapped: 0,
    blocksReleased: 0,
    exactSizeFallbacks: 0,
  };
}

/** A live allocation as the compare harness sees it (for the module-area occupancy map). */
export interface LiveExtent {
  readonly va: number;
  readonly sizeBytes: number;
  readonly type: ExecmemType;
}

/** ExecAllocator plus what the compare harness reads from every policy. */
export interface InstrumentedAllocator extends ExecAllocator {
  readonly machine: Machine;
  /** Is this a re-implementation of a Linux design (true) or our execmem (false)? */
  readonly modelled: boolean;
  forEachLive(fn: (e: LiveExtent) => void): void;
  policyCounters(): Readonly<Record<string, number>>;
}

function isKnownType(type: unknown): type is ExecmemType {
  return typeof type === 'string' && (EXECMEM_TYPES as readonly string[]).includes(type);
}

/**
 * The Linux designs' common skeleton. Subclasses implement `allocate`, `writeInto`,
 * `finalizeAlloc`, `release` (and may override `sealAlloc`, `shrink`); the base validates input
 * first so that every rejected call leaves machine and policy unchanged.
 */
export abstract class LinuxPolicy implements InstrumentedAllocator {
  readonly arch: ArchSpec;
  readonly modelled = true;
  readonly counters: PolicyCounters = newPolicyCounters();
  protected readonly ranges: Readonly<Record<LinuxExecmemType, ExecmemRange>>;
  protected readonly live = new LiveSet();
  protected mappedBytes = 0;
  private trapBuffer: Uint8Array | null = null;

  protected constructor(
    readonly name: string,
    readonly machine: Machine,
    /** The CPU the kernel code runs on (loads, JIT, unloads happen on one CPU here). */
    readonly cpu = 0,
  ) {
    this.arch = machine.arch;
    this.ranges = resolveLinuxRanges(machine.arch, machine.modulesStart, true);
  }

  // ---- the ExecAllocator interface ----

  alloc(type: ExecmemType, sizeBytes: number, alignBytes = 1, hint: AllocHint = {}): number {
    if (!isKnownType(type)) this.fail('EINVAL', `unknown type '${String(type)}'`);
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes > MAX_ALLOC_BYTES) {
      this.fail('EINVAL', `size ${sizeBytes} is not an integer in 1..${MAX_ALLOC_BYTES}`);
    }
    if (!isPow2(alignBytes) || alignBytes > PAGE_BYTES) {
      this.fail('EINVAL', `alignment ${alignBytes} is not a power of two <= ${PAGE_BYTES}`);
    }
    const a = this.allocate(type, sizeBytes, alignBytes, hint);
    if (!(a.va % alignBytes === 0))
      assert(false, `${this.name}: ${hexAddr(a.va)} not aligned to ${alignBytes}`);
    this.live.add(a);
    this.counters.allocs++;
    return a.va;
  }

  write(va: number, bytes: Uint8Array): void {
    if (!(bytes instanceof Uint8Array) || bytes.length === 0)
      this.fail('EINVAL', 'write needs a non-empty Uint8Array');
    const a = this.live.containing(va);
    if (a === undefined) this.fail('ENOENT', `write to ${hexAddr(va)}: no live allocation contains it`);
    if (va + bytes.length > a.va + a.sizeBytes) {
      this.fail(
        'EINVAL',
        `write of ${bytes.length} bytes at ${hexAddr(va)} crosses the end of its allocation`,
      );
    }
    if (a.state === 'sealed') this.fail('EPERM', `write to sealed ro_after_init at ${hexAddr(va)}`);
    this.writeInto(a, va, bytes);
    this.counters.writes++;
  }

  finalize(va: number): void {
    const a = this.startOf(va, 'finalize');
    if (a.state !== 'loading') this.fail('EINVAL', `finalize of ${hexAddr(va)}: already finalized`);
    this.finalizeAlloc(a);
    a.state = 'final';
    this.counters.finalizes++;
  }

  seal(va: number): void {
    const a = this.startOf(va, 'seal');
    if (a.type !== 'module_ro_after_init')
      this.fail('EINVAL', `seal of ${hexAddr(va)}: type ${a.type} is not sealable`);
    if (a.state === 'sealed') this.fail('EINVAL', `seal of ${hexAddr(va)}: already sealed`);
    this.sealAlloc(a);
    a.state = 'sealed';
    this.counters.seals++;
  }

  free(va: number): void {
    const a = this.startOf(va, 'free');
    this.release(a);
    this.live.remove(a);
    this.counters.frees++;
  }

  shrink(): void {}

  usage(): { liveBytes: number; mappedBytes: number } {
    return { liveBytes: this.live.liveBytes, mappedBytes: this.mappedBytes };
  }

  forEachLive(fn: (e: LiveExtent) => void): void {
    this.live.forEach(fn);
  }

  policyCounters(): Readonly<Record<string, number>> {
    return { ...this.counters, liveObjects: this.live.count };
  }

  // ---- what each design supplies ----

  protected abstract allocate(
    type: ExecmemType,
    sizeBytes: number,
    alignBytes: number,
    hint: AllocHint,
  ): Allocation;
  protected abstract writeInto(a: Allocation, va: number, bytes: Uint8Array): void;
  protected abstract finalizeAlloc(a: Allocation): void;
  protected abstract release(a: Allocation): void;

  /** module_enable_ro(mod, true) after init: ro_after_init becomes read-only (page granular). */
  protected sealAlloc(a: Allocation): void {
    this.protect(a.va, a.reservedBytes / PAGE_BYTES, 'ro');
    a.writable = false;
    a.finalProt = 'ro';
  }

  // ---- helpers ----

  protected fail(code: PolicyError['code'], message: string): never {
    throw new PolicyError(code, this.name, message);
  }

  protected startOf(va: number, what: string): Allocation {
    const a = this.live.at(va);
    if (a !== undefined) return a;
    const inside = this.live.containing(va);
    if (inside !== undefined) {
      this.fail(
        'EINVAL',
        `${what} of ${hexAddr(va)}: inside the allocation at ${hexAddr(inside.va)}, not its start`,
      );
    }
    this.fail('ENOENT', `${what} of ${hexAddr(va)}: no live allocation (double free or wild pointer?)`);
  }

  protected rangeFor(type: ExecmemType): ExecmemRange {
    return this.ranges[linuxTypeOf(type)];
  }

  /**
   * __vmalloc_node_range() in the type's range, retried once in the fallback range
   * (execmem_vmalloc). Always PAGE_KERNEL (RW+NX); the design sets final permissions itself.
   * VM_FLUSH_RESET_PERMS is set so vfree resets the direct-map alias (set_vm_flush_reset_perms).
   */
  protected vmalloc(r: ExecmemRange, sizeBytes: number, allowHuge: boolean, alignBytes = PAGE_BYTES): VmArea {
    if (!(sizeBytes % PAGE_BYTES === 0 && sizeBytes > 0))
      assert(false, `vmalloc size ${sizeBytes} not page-granular`);
    const ranges = r.fallback === null ? [r.range] : [r.range, r.fallback];
    let last: MachineError | null = null;
    for (const range of ranges) {
      try {
        const area = this.machine.vmalloc({
          sizeBytes,
          range,
          alignBytes: Math.max(alignBytes, PAGE_BYTES),
          prot: 'rw',
          allowHuge,
          guardPages: 1,
          flushResetPerms: true,
        });
        this.counters.vmallocs++;
        return area;
      } catch (e) {
        if (!(e instanceof MachineError) || (e.code !== 'ENOMEM' && e.code !== 'ENOSPC')) throw e;
        last = e;
      }
    }
    assert(last !== null);
    throw new PolicyError(
      last.code as 'ENOMEM' | 'ENOSPC',
      this.name,
      `vmalloc of ${sizeBytes} bytes: ${last.message}`,
    );
  }

  protected vfree(va: number): void {
    this.machine.vfree(va);
    this.counters.vfrees++;
  }

  /** set_memory_{ro,rw,rox,...}: one CPA call (the machine splits, collapses and flushes). */
  protected protect(va: number, pageCount: number, prot: Prot): void {
    assert(va % PAGE_BYTES === 0 && pageCount > 0, 'set_memory on an unaligned or empty range');
    this.machine.setMemory(va, pageCount, prot);
    this.counters.setMemoryCalls++;
  }

  /**
   * A fresh vmalloc area (still RW) to its final ROX state: trap-filled first when `fillTraps`
   * (the pack and cache designs fill before set_memory_rox, e.g. bpf_prog_pack's alloc_new_pack),
   * then one set_memory_rox. A failure on the way vfrees the area before rethrowing, so a failed
   * allocation leaves nothing mapped.
   */
  protected makeAreaRox(va: number, sizeBytes: number, fillTraps: boolean): void {
    try {
      if (fillTraps) this.storeTraps(va, sizeBytes);
      this.protect(va, sizeBytes / PAGE_BYTES, 'rox');
    } catch (e) {
      this.vfree(va);
      throw e;
    }
  }

  /** A store through the primary mapping, which must be writable (the machine faults otherwise). */
  protected store(va: number, bytes: Uint8Array): void {
    this.machine.store(this.cpu, va, bytes);
    this.counters.plainWrites++;
  }

  /** memset(va, trap, size) through the writable primary mapping (jit_fill_hole, fill_trapping_insns). */
  protected storeTraps(va: number, sizeBytes: number): void {
    const buf = this.traps(sizeBytes);
    for (let done = 0; done < sizeBytes; done += buf.length) {
      const n = Math.min(buf.length, sizeBytes - done);
      this.machine.store(this.cpu, va + done, n === buf.length ? buf : buf.subarray(0, n));
    }
    this.counters.plainWrites++;
  }

  /**
   * Write into memory that is not writable through its primary mapping: text_poke (x86) or the
   * fixmap (arm64) where the arch has an alias; otherwise Kent's jitalloc_update fallback,
   * unprotect / memcpy / protect (<ZHFDO/95KMXRdOWI@moria.home.lan>), restoring `prot`.
   */
  protected aliasWrite(va: number, bytes: Uint8Array, prot: Prot): void {
    if (this.arch.patch !== 'none') {
      this.machine.poke(this.cpu, va, bytes);
      this.counters.pokes++;
      return;
    }
    const first = alignDown(va, PAGE_BYTES);
    const pages = (alignUp(va + bytes.length, PAGE_BYTES) - first) / PAGE_BYTES;
    this.protect(first, pages, 'rw');
    this.machine.store(this.cpu, va, bytes);
    this.protect(first, pages, prot);
    this.counters.flipWrites++;
  }

  /** text_poke_set(addr, trap, len) where the arch has an alias, else unprotect / memset / protect. */
  protected aliasFill(va: number, sizeBytes: number, prot: Prot): void {
    if (this.arch.patch !== 'none') {
      this.machine.pokeSet(this.cpu, va, sizeBytes, this.arch.trapPattern);
      this.counters.pokes++;
      return;
    }
    const first = alignDown(va, PAGE_BYTES);
    const pages = (alignUp(va + sizeBytes, PAGE_BYTES) - first) / PAGE_BYTES;
    this.protect(first, pages, 'rw');
    this.storeTraps(va, sizeBytes);
    this.protect(first, pages, prot);
    this.counters.flipWrites++;
  }

  /** Write an allocation's bytes by whatever path its current protection allows. */
  protected writeByProt(a: Allocation, va: number, bytes: Uint8Array): void {
    if (a.writable) this.store(va, bytes);
    else this.aliasWrite(va, bytes, a.finalProt);
  }

  /** A reusable buffer of trap bytes (at most 64 KiB; callers loop). */
  private traps(sizeBytes: number): Uint8Array {
    if (this.trapBuffer === null) {
      const pattern = this.arch.trapPattern;
      const buf = new Uint8Array(64 * 1024);
      for (let i = 0; i < buf.length; i++) buf[i] = pattern[i % pattern.length];
      this.trapBuffer = buf;
    }
    assert(sizeBytes % this.arch.trapPattern.length === 0, 'trap fill length not a multiple of the pattern');
    return this.trapBuffer;
  }
}
