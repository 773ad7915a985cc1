/**
 * What every re-implemented Linux design shares: input checks, the table of live allocations,
 * the arch range table resolved as Linux resolves it, and the machine primitives the kernel code
 * calls (vmalloc / vfree, set_memory_*, text_poke, plain stores through a writable mapping).
 *
 * Why a base class: the designs differ only in where bytes come from and when permissions change.
 * Keeping validation, bookkeeping and the primitives in one place means a difference in the
 * compare table is a difference between designs, never between two copies of the same helper.
 * The primitives are public so that the mechanisms a design is built from (module regions,
 * kprobe slot pages, BPF packs, the ROX cache: one file each) call the same ones. Every policy is
 * a RE-IMPLEMENTATION ON OUR SIMULATED MACHINE of Linux code described in
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
 * - execmem_vmalloc(): try [start, end], then once [fallback_start, fallback_end] if set. Before
 *   execmem (6.10) every caller used module_alloc(), whose range on x86 is the same module area;
 *   on arm64 the BPF JIT (bpf_jit_alloc_exec = vmalloc) and kprobes (alloc_insn_page) used vmalloc
 *   space before 6.10 as after, so the arch table serves every version modelled.
 * - set_memory_*: one call each, whatever it changes; the machine splits, collapses and flushes.
 *   A call that changes no PTE (set_memory_nx on memory that is already NX) is still issued where
 *   Linux issues it: change_page_attr_set_clr() runs vm_unmap_aliases() first, whatever the call
 *   changes, so the call is not free even when the machine finds nothing to flush.
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
import {
  type Allocation,
  type LiveExtent,
  LiveSet,
  newPolicyCounters,
  type PolicyCounters,
} from './live-set.js';
import { ALLOC_CALLERS, type AllocHint, type ExecAllocator, type ModuleSection } from './types.js';

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

/** ExecAllocator plus what the compare harness reads from every policy. */
export interface InstrumentedAllocator extends ExecAllocator {
  readonly machine: Machine;
  /** Is this a re-implementation of a Linux design (true) or our execmem (false)? */
  readonly modelled: boolean;
  forEachLive(fn: (e: LiveExtent) => void): void;
  policyCounters(): Readonly<Record<string, number>>;
}

/** The module memory types a module load is made of (kernel/module: enum mod_mem_type). */
const MODULE_TYPES: readonly ExecmemType[] = [
  'module_text',
  'module_rodata',
  'module_ro_after_init',
  'module_data',
];

function isKnownType(type: unknown): type is ExecmemType {
  return typeof type === 'string' && (EXECMEM_TYPES as readonly string[]).includes(type);
}

/**
 * The Linux designs' common skeleton. Subclasses implement `allocate`, `writeInto`,
 * `finalizeAlloc`, `release` (and may override `allocateModule`, `sealAlloc`, `shrink`); the base
 * validates input first so that every rejected call leaves machine and policy unchanged.
 */
export abstract class LinuxPolicy implements InstrumentedAllocator {
  readonly arch: ArchSpec;
  readonly modelled = true;
  readonly counters: PolicyCounters = newPolicyCounters();
  readonly ranges: Readonly<Record<LinuxExecmemType, ExecmemRange>>;
  protected readonly live = new LiveSet();
  private mappedBytes = 0;
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
    this.checkSize(sizeBytes);
    if (!isPow2(alignBytes) || alignBytes > PAGE_BYTES) {
      this.fail('EINVAL', `alignment ${alignBytes} is not a power of two <= ${PAGE_BYTES}`);
    }
    if (hint.caller !== undefined) {
      if (!ALLOC_CALLERS.includes(hint.caller))
        this.fail('EINVAL', `unknown caller '${String(hint.caller)}'`);
      if (type !== 'bpf') this.fail('EINVAL', `a ${hint.caller} image is type bpf, not ${type}`);
    }
    const a = this.allocate(type, sizeBytes, alignBytes, hint);
    if (!(a.va % alignBytes === 0))
      assert(false, `${this.name}: ${hexAddr(a.va)} not aligned to ${alignBytes}`);
    this.adopt(a);
    return a.va;
  }

  /** load_module's allocation step: every section checked first, then all allocated or none. */
  allocModule(sections: readonly ModuleSection[]): number[] {
    if (!Array.isArray(sections) || sections.length === 0)
      this.fail('EINVAL', 'allocModule needs at least one section');
    for (const s of sections) {
      if (!MODULE_TYPES.includes(s.type)) this.fail('EINVAL', `'${String(s.type)}' is not a module section`);
      if (s.init && s.type === 'module_ro_after_init')
        this.fail('EINVAL', 'init sections have no ro_after_init part (MOD_INIT_* is text, rodata, data)');
      this.checkSize(s.sizeBytes);
    }
    const all = this.allocateModule(sections);
    assert(all.length === sections.length, `${this.name}: allocateModule returned a wrong count`);
    for (const a of all) this.adopt(a);
    return all.map((a) => a.va);
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

  /**
   * One allocation per section (module_memory_alloc, Linux 6.4+). A failure releases the sections
   * already allocated, in reverse, before rethrowing (load_module's free_module path).
   */
  protected allocateModule(sections: readonly ModuleSection[]): Allocation[] {
    const done: Allocation[] = [];
    try {
      for (const s of sections) done.push(this.allocate(s.type, s.sizeBytes, 1, {}));
    } catch (e) {
      for (const a of done.reverse()) this.release(a);
      throw e;
    }
    return done;
  }

  /** module_enable_ro(mod, true) / module_enable_rodata_ro_after_init(): set_memory_ro, page granular. */
  protected sealAlloc(a: Allocation): void {
    this.protect(a.va, a.reservedBytes / PAGE_BYTES, 'ro');
    a.writable = false;
    a.finalProt = 'ro';
  }

  // ---- kernel primitives, shared by the design's mechanisms ----

  fail(code: PolicyError['code'], message: string): never {
    throw new PolicyError(code, this.name, message);
  }

  /** Bytes the design maps for its callers (areas, regions, packs, cache blocks) grow or shrink. */
  mapped(deltaBytes: number): void {
    this.mappedBytes += deltaBytes;
    if (this.mappedBytes < 0) assert(false, `${this.name}: mapped bytes below zero`);
  }

  /**
   * __vmalloc_node_range() in the range, retried once in the fallback range (execmem_vmalloc).
   * PAGE_KERNEL (RW+NX) unless `prot` says otherwise (arm64 maps kprobe pages PAGE_KERNEL_ROX).
   * VM_FLUSH_RESET_PERMS is set so vfree resets the direct-map alias (set_vm_flush_reset_perms).
   */
  vmalloc(
    r: ExecmemRange,
    sizeBytes: number,
    allowHuge = false,
    alignBytes = PAGE_BYTES,
    prot: Prot = 'rw',
  ): VmArea {
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
          prot,
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

  vfree(va: number): void {
    this.machine.vfree(va);
    this.counters.vfrees++;
  }

  /** set_memory_{ro,rw,rox,x,nx}: one CPA call, named by the protection it leaves behind. */
  protect(va: number, pageCount: number, prot: Prot): void {
    assert(va % PAGE_BYTES === 0 && pageCount > 0, 'set_memory on an unaligned or empty range');
    this.machine.setMemory(va, pageCount, prot);
    this.counters.setMemoryCalls++;
  }

  /** A store through the primary mapping, which must be writable (the machine faults otherwise). */
  store(va: number, bytes: Uint8Array): void {
    this.machine.store(this.cpu, va, bytes);
    this.counters.plainWrites++;
  }

  /** memset(va, trap, size) through the writable primary mapping (jit_fill_hole, fill_trapping_insns). */
  storeTraps(va: number, sizeBytes: number): void {
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
  aliasWrite(va: number, bytes: Uint8Array, prot: Prot): void {
    if (this.arch.patch !== 'none') {
      this.machine.poke(this.cpu, va, bytes);
      this.counters.pokes++;
      return;
    }
    const [first, pages] = pageSpan(va, bytes.length);
    this.protect(first, pages, 'rw');
    this.machine.store(this.cpu, va, bytes);
    this.protect(first, pages, prot);
    this.counters.flipWrites++;
  }

  /** text_poke_set(addr, trap, len) where the arch has an alias, else unprotect / memset / protect. */
  aliasFill(va: number, sizeBytes: number, prot: Prot): void {
    if (this.arch.patch !== 'none') {
      this.machine.pokeSet(this.cpu, va, sizeBytes, this.arch.trapPattern);
      this.counters.pokes++;
      return;
    }
    const [first, pages] = pageSpan(va, sizeBytes);
    this.protect(first, pages, 'rw');
    this.storeTraps(va, sizeBytes);
    this.protect(first, pages, prot);
    this.counters.flipWrites++;
  }

  /** Write an allocation's bytes by whatever path its current protection allows. */
  writeByProt(a: Allocation, va: number, bytes: Uint8Array): void {
    if (a.writable) this.store(va, bytes);
    else this.aliasWrite(va, bytes, a.finalProt);
  }

  // ---- helpers ----

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

  private checkSize(sizeBytes: number): void {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes > MAX_ALLOC_BYTES) {
      this.fail('EINVAL', `size ${sizeBytes} is not an integer in 1..${MAX_ALLOC_BYTES}`);
    }
  }

  private adopt(a: Allocation): void {
    this.live.add(a);
    this.counters.allocs++;
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

/** The first page and the page count of [va, va + sizeBytes). */
function pageSpan(va: number, sizeBytes: number): [number, number] {
  const first = alignDown(va, PAGE_BYTES);
  return [first, (alignUp(va + sizeBytes, PAGE_BYTES) - first) / PAGE_BYTES];
}

export type { Allocation, LiveExtent } from './live-set.js';
