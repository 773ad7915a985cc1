/**
 * One Linux kernel version as it allocates executable memory, driven by a KernelProfile
 * (kernel.ts). `module_alloc` is Linux 5.17, `bpf_prog_pack` Linux 6.1, `execmem-6.10` Linux 6.10,
 * `execmem-rox` Linux 6.17 and `execmem-rox-bpf` 6.17 plus the 2026 bpf-next series; each is a
 * RE-IMPLEMENTATION ON OUR SIMULATED MACHINE of the call paths below, costs from the machine.
 *
 * Why one class: every version routes the same callers through the same mechanisms and differs in
 * which mechanism serves whom and how many set_memory calls a step takes. Keeping one routing
 * table makes two rows differ only where the kernels differ.
 *
 * The callers and what each version does (functions read with the search tools; see kernel.ts
 * for the commits that date each difference):
 * - Module sections: 5.17/6.1 one core and one init module_alloc per load (allocModule,
 *   module-layout.ts); 6.4+ module_memory_alloc() per section. A plain `alloc` of a module type
 *   is a region of its own in every version. Memory is PAGE_KERNEL; the loader writes directly.
 *   Finalize (complete_formation): text module_enable_ro's set_memory_ro plus module_enable_x's
 *   set_memory_x, or (6.8+) module_enable_text_rox's one set_memory_rox; rodata set_memory_ro;
 *   every data-class section (rodata, ro_after_init, data) module_enable_nx's set_memory_nx,
 *   which changes no PTE but is still a CPA call. Seal (ro_after_init after init): set_memory_ro.
 *   6.17 on x86: module_memory_alloc() = execmem_alloc_rw(): text from the ROX cache, made RW by
 *   execmem_force_rw() (set_memory_nx + set_memory_rw; also issued, changing nothing, on the
 *   PAGE_KERNEL data sections), and module_enable_text_rox() = execmem_restore_rox().
 * - BPF programs: with packs (bpf-prog-pack.ts; x86 6.1+, arm64 6.9+) from bpf_jit_alloc_exec()
 *   trap-filled and made ROX once per pack; without, bpf_jit_binary_alloc(): round_up(proglen +
 *   sizeof(hdr) + 128, PAGE_SIZE), jit_fill_hole(), the JIT writes directly,
 *   bpf_jit_binary_lock_ro() (set_memory_ro + set_memory_x, or set_memory_rox), vfree at free.
 * - BPF trampolines (hint.caller 'bpf_trampoline'): 5.17 bpf_jit_alloc_exec_page(), a page made
 *   executable with set_memory_x and kept writable: W+X for its life, which the machine's W^X
 *   audit counts (the true result for 5.17); 6.1 a page written then set_memory_ro +
 *   set_memory_x (bpf_trampoline_update); x86 6.8+ bpf_prog_pack (arch_alloc_bpf_trampoline,
 *   copied in with text_poke_copy); elsewhere the __weak arch_alloc_bpf_trampoline() page and
 *   arch_protect_bpf_trampoline()'s set_memory_rox.
 * - kprobes: kprobe_insn_cache slots (kprobes.ts) on pages from alloc_insn_page(); a request
 *   larger than a slot gets such pages of its own. Slots are written with text_poke.
 * - ftrace: create_trampoline(): alloc_tramp() (module_alloc, execmem_alloc, or 6.17's
 *   execmem_alloc_rw from the ROX cache), written directly, then set_memory_ro + set_memory_x
 *   (5.17/6.1) or set_memory_rox; tramp_free() = execmem_free.
 * - Writes after finalize to text go through text_poke (jump labels, ftrace and static-call
 *   patching all use it); on `generic`, which has none, unprotect / memcpy / protect.
 * Arches: the arch's execmem range table gives every range (kernel.ts and common.ts say why that
 * holds before 6.10 too). arm64 runs the generic kernel code where it exists; where arm64 had no
 * such caller in a version (BPF trampolines before 6.0, ftrace trampolines ever) the generic or
 * x86 flow is kept. `generic` has no text_poke: no packs (the __weak bpf_arch_text_copy returns
 * -ENOTSUPP), so BPF takes bpf_jit_binary_alloc.
 */
import type { ExecmemType, Prot } from '../arch/types.js';
import { typeIsText } from '../arch/types.js';
import { alignUp } from '../base/addr.js';
import type { Machine } from '../machine/machine.js';
import { BpfProgPacks } from './bpf-prog-pack.js';
import { type LinuxExecmemType, LinuxPolicy, linuxTypeOf, PAGE_BYTES } from './common.js';
import {
  archHasExecmemRox,
  type KernelProfile,
  kprobePagesMappedRox,
  LINUX_5_17,
  LINUX_6_1,
  LINUX_6_10,
  LINUX_6_17,
  LINUX_6_17_BPF_NEXT,
  nativeSetMemoryRox,
} from './kernel.js';
import { KPROBE_INSN_SLOT_BYTES, KprobeInsnCache, type KprobeInsnPage } from './kprobes.js';
import { type Allocation, type Area, newAllocation } from './live-set.js';
import { layoutModule, ModuleRegion } from './module-layout.js';
import { RoxCache } from './rox-cache.js';
import type { AllocHint, ModuleSection } from './types.js';

/** bpf_jit_binary_alloc()'s slack for the random start offset ("+ 128"). */
export const BPF_BINARY_SLACK_BYTES = 128;

/** The protection each type ends up with under the Linux loader's rules. */
export function finalProtOf(type: ExecmemType): Prot {
  if (typeIsText(type)) return 'rox';
  if (type === 'module_rodata') return 'ro';
  return 'rw';
}

export class KernelPolicy extends LinuxPolicy {
  /** The ROX cache, where this kernel has one on this arch. */
  protected readonly cache: RoxCache | null;
  private readonly insnCache: KprobeInsnCache;
  private readonly packs: BpfProgPacks;

  constructor(
    name: string,
    machine: Machine,
    readonly kernel: KernelProfile,
  ) {
    super(name, machine);
    const withCache = kernel.roxCacheTypes.length > 0 && archHasExecmemRox(machine.arch.name);
    this.cache = withCache ? new RoxCache(this) : null;
    this.insnCache = new KprobeInsnCache({
      alloc: () => this.allocInsnPages(PAGE_BYTES),
      free: (a) => this.execFree(a),
    });
    this.packs = new BpfProgPacks(this, {
      alloc: (n) => this.allocPackArea(n),
      free: (a) => this.execFree(a),
    });
  }

  /** Pages held by the kprobe instruction-slot cache. */
  get insnPageCount(): number {
    return this.insnCache.pageCount;
  }

  get packCount(): number {
    return this.packs.packCount;
  }

  /** 2 MiB (or exact-size) blocks the ROX cache holds (0 without a cache). */
  get cacheBlockCount(): number {
    return this.cache?.blockCount ?? 0;
  }

  // ---- the design ----

  protected allocate(type: ExecmemType, sizeBytes: number, alignBytes: number, hint: AllocHint): Allocation {
    if (type === 'bpf')
      return hint.caller === 'bpf_trampoline'
        ? this.bpfTrampoline(sizeBytes, alignBytes)
        : this.bpfProgram(sizeBytes, alignBytes);
    if (type === 'kprobes') return this.kprobe(sizeBytes, alignBytes);
    return this.section(type, sizeBytes);
  }

  protected override allocateModule(sections: readonly ModuleSection[]): Allocation[] {
    if (this.kernel.moduleLayout !== 'core-init') return super.allocateModule(sections);
    const layout = layoutModule(sections);
    const areas: Area[] = [];
    try {
      for (const bytes of [layout.coreBytes, layout.initBytes])
        if (bytes > 0) areas.push(this.execAlloc('module_text', bytes));
    } catch (e) {
      for (const area of areas) this.execFree(area);
      throw e;
    }
    const regions = areas.map((area) => new ModuleRegion(area));
    const initRegion = layout.coreBytes > 0 ? regions[1] : regions[0];
    return sections.map((s, i) => {
      const region = s.init ? initRegion : regions[0];
      region.liveSections++;
      const bytes = alignUp(s.sizeBytes, PAGE_BYTES);
      const va = region.area.va + layout.offsets[i];
      return newAllocation(va, s.type, s.sizeBytes, bytes, 'region', true, finalProtOf(s.type), region);
    });
  }

  protected writeInto(a: Allocation, va: number, bytes: Uint8Array): void {
    if (a.kind === 'pack') this.packs.write(a, va, bytes);
    else this.writeByProt(a, va, bytes);
  }

  protected finalizeAlloc(a: Allocation): void {
    if (a.kind === 'pack') this.packs.finalize(a);
    else if (a.kind === 'area' || a.kind === 'region') this.finalizeMemory(a);
  }

  protected release(a: Allocation): void {
    switch (a.kind) {
      case 'area':
        this.execFree(a.owner as Area, a.writable);
        return;
      case 'region': {
        const region = a.owner as ModuleRegion;
        region.liveSections--;
        if (region.liveSections === 0) this.execFree(region.area);
        return;
      }
      case 'kprobe-slot':
        this.insnCache.release(a.owner as KprobeInsnPage, a.va);
        return;
      case 'pack':
        this.packs.release(a);
        return;
      default:
        this.fail('EINVAL', `${this.name} cannot free a '${a.kind}' allocation`);
    }
  }

  override shrink(): void {
    this.cache?.clean();
  }

  // ---- the callers ----

  /** module_memory_alloc() / alloc_tramp(): RW memory of the type's range (execmem_alloc_rw in 6.17). */
  private section(type: ExecmemType, sizeBytes: number): Allocation {
    const bytes = alignUp(sizeBytes, PAGE_BYTES);
    const area = this.execAlloc(linuxTypeOf(type), bytes);
    const cache = this.cache;
    // execmem_alloc_rw() -> execmem_force_rw(), unconditional where ARCH_HAS_EXECMEM_ROX.
    if (cache !== null) this.orFree(area, () => cache.forceRw(area.va, bytes, area.cached ? 'rox' : 'rw'));
    return newAllocation(area.va, type, sizeBytes, bytes, 'area', true, finalProtOf(type), area);
  }

  /** Programs: bpf_prog_pack where this kernel has it on this arch, else bpf_jit_binary_alloc(). */
  private bpfProgram(sizeBytes: number, alignBytes: number): Allocation {
    if (this.kernel.bpfPackArches.includes(this.arch.name)) return this.packs.alloc(sizeBytes, alignBytes);
    const bytes = alignUp(sizeBytes + BPF_BINARY_SLACK_BYTES, PAGE_BYTES);
    const area = this.execAlloc('bpf', bytes);
    this.orFree(area, () => this.storeTraps(area.va, bytes)); // jit_fill_hole()
    return newAllocation(area.va, 'bpf', sizeBytes, bytes, 'area', true, 'rox', area);
  }

  /** Trampoline images: a W+X page (5.17), a page made ROX after writing, or a pack. */
  private bpfTrampoline(sizeBytes: number, alignBytes: number): Allocation {
    if (this.kernel.trampolinePackArches.includes(this.arch.name))
      return this.packs.alloc(sizeBytes, alignBytes);
    const bytes = alignUp(sizeBytes, PAGE_BYTES); // bpf_jit_alloc_exec(PAGE_SIZE): images fit a page
    const area = this.execAlloc('bpf', bytes);
    if (this.kernel.bpfTrampoline === 'page')
      return newAllocation(area.va, 'bpf', sizeBytes, bytes, 'area', true, 'rox', area);
    // bpf_jit_alloc_exec_page(): set_memory_x only; "Keep image as writeable".
    this.orFree(area, () => this.protect(area.va, bytes / PAGE_BYTES, 'rwx'));
    return newAllocation(area.va, 'bpf', sizeBytes, bytes, 'area', true, 'rwx', area);
  }

  /** A slot of the kprobe_insn_cache, or (above a slot) alloc_insn_page()-style pages of its own. */
  private kprobe(sizeBytes: number, alignBytes: number): Allocation {
    if (sizeBytes <= KPROBE_INSN_SLOT_BYTES && alignBytes <= KPROBE_INSN_SLOT_BYTES) {
      const { page, va } = this.insnCache.take();
      return newAllocation(
        va,
        'kprobes',
        sizeBytes,
        KPROBE_INSN_SLOT_BYTES,
        'kprobe-slot',
        false,
        'rox',
        page,
      );
    }
    const area = this.allocInsnPages(alignUp(sizeBytes, PAGE_BYTES));
    return newAllocation(area.va, 'kprobes', sizeBytes, area.sizeBytes, 'area', false, 'rox', area);
  }

  // ---- where memory comes from ----

  /**
   * alloc_insn_page(): arm64 maps PAGE_KERNEL_ROX directly; x86 6.17 takes a ROX-cache piece;
   * otherwise RW memory made ROX (set_memory_ro + set_memory_x before 6.2, set_memory_rox after).
   */
  private allocInsnPages(bytes: number): Area {
    if (kprobePagesMappedRox(this.arch.name)) return this.execAlloc('kprobes', bytes, 'rox');
    const area = this.execAlloc('kprobes', bytes);
    if (!area.cached) this.orFree(area, () => this.toRox(area.va, bytes / PAGE_BYTES, false));
    return area;
  }

  /**
   * alloc_new_pack() / a dedicated image: bpf_jit_alloc_exec(), then the fill and set_memory_rox
   * (set_memory_ro + set_memory_x in 6.1) unless the memory came ROX from the cache ("bpf:
   * alloc_prog_pack(): Skip ROX management for already ROX memory").
   */
  private allocPackArea(bytes: number): Area {
    const area = this.execAlloc('bpf', bytes);
    if (!area.cached) {
      this.orFree(area, () => {
        this.storeTraps(area.va, bytes);
        this.toRox(area.va, bytes / PAGE_BYTES, false);
      });
    }
    return area;
  }

  /**
   * execmem_alloc() (module_alloc() before 6.10): a ROX-cache piece for the types this kernel
   * caches, else its own vmalloc area, PAGE_KERNEL unless `prot` says otherwise.
   */
  protected execAlloc(type: LinuxExecmemType, bytes: number, prot: Prot = 'rw'): Area {
    const r = this.ranges[type];
    if (this.cache !== null && this.kernel.roxCacheTypes.includes(type))
      return { va: this.cache.alloc(r, bytes), sizeBytes: bytes, cached: true };
    const vm = this.vmalloc(r, bytes, false, PAGE_BYTES, prot);
    this.mapped(bytes);
    return { va: vm.va, sizeBytes: bytes, cached: false };
  }

  /**
   * execmem_free() / module_memfree(): back to the cache, or vfree (VM_FLUSH_RESET_PERMS).
   * `writable`: a cache piece still in its write window (its owner was never finalized).
   */
  protected execFree(area: Area, writable = false): void {
    if (area.cached) {
      this.cache!.free(area.va, writable);
      return;
    }
    this.vfree(area.va);
    this.mapped(-area.sizeBytes);
  }

  /** Run `step`; if it throws, give the area back first (every allocation path is all or nothing). */
  protected orFree(area: Area, step: () => void): void {
    try {
      step();
    } catch (e) {
      this.execFree(area);
      throw e;
    }
  }

  /**
   * Text to RO+X: one native set_memory_rox where the kernel has it (module text only with
   * module_enable_text_rox) and the arch implements it (x86); else set_memory_ro then set_memory_x.
   */
  protected toRox(va: number, pages: number, moduleText: boolean): void {
    const oneCall = moduleText ? this.kernel.moduleTextRox : this.kernel.hasSetMemoryRox;
    if (!(oneCall && nativeSetMemoryRox(this.arch.name))) this.protect(va, pages, 'ro');
    this.protect(va, pages, 'rox');
  }

  /** complete_formation() for one section, or create_trampoline()'s / lock_ro's final step. */
  private finalizeMemory(a: Allocation): void {
    if (!a.writable || a.finalProt === 'rwx') return; // handed out final, or 5.17's W+X trampoline
    const pages = a.reservedBytes / PAGE_BYTES;
    const area = a.kind === 'area' ? (a.owner as Area) : null;
    if (a.finalProt === 'rox') {
      if (area?.cached) this.cache!.restoreRox(a.va, a.reservedBytes);
      else this.toRox(a.va, pages, a.type === 'module_text');
      a.writable = false;
      return;
    }
    if (a.finalProt === 'ro') {
      this.protect(a.va, pages, 'ro'); // module_enable_ro / module_enable_rodata_ro
      a.writable = false;
    }
    this.protect(a.va, pages, a.finalProt); // module_enable_nx: set_memory_nx, already NX
  }
}

/** `module_alloc`: Linux 5.17. */
export function createModuleAlloc(machine: Machine): KernelPolicy {
  return new KernelPolicy('module_alloc', machine, LINUX_5_17);
}

/** `bpf_prog_pack`: Linux 6.1. */
export function createBpfProgPack(machine: Machine): KernelPolicy {
  return new KernelPolicy('bpf_prog_pack', machine, LINUX_6_1);
}

/** `execmem-6.10`: Linux 6.10. */
export function createExecmem610(machine: Machine): KernelPolicy {
  return new KernelPolicy('execmem-6.10', machine, LINUX_6_10);
}

/** `execmem-rox`: Linux 6.17 (ROX cache for module text, kprobes, ftrace on x86). */
export function createExecmemRox(machine: Machine): KernelPolicy {
  return new KernelPolicy('execmem-rox', machine, LINUX_6_17);
}

/** `execmem-rox-bpf`: Linux 6.17 plus the unmerged 2026 bpf-next series (BPF packs in the cache). */
export function createExecmemRoxBpf(machine: Machine): KernelPolicy {
  return new KernelPolicy('execmem-rox-bpf', machine, LINUX_6_17_BPF_NEXT);
}
