/**
 * `module_alloc` (legacy, before execmem) and `execmem-6.10` (execmem without the ROX cache):
 * one vmalloc per allocation, permissions set afterwards with set_memory_*. A RE-IMPLEMENTATION
 * ON OUR SIMULATED MACHINE of the Linux code paths below; costs come from the machine.
 *
 * Why both live in one class: they are the same mechanism at two points in history, and the
 * compare table should show exactly how little changed for page-granular allocation (Song Liu:
 * "The problem is with unprotect() and protect(), as they require global TLB flush",
 * <CAPhsuW5dx_A_brhf0HHWMWj3HB_31QCQ8xbqZPir8YxHM5WRig@mail.gmail.com>). The other Linux designs
 * extend this class and send the types they do not serve through the same plain path, as Linux
 * does (bpf_prog_pack serves only BPF; Kent's slab only text; the ROX cache only ROX_CACHE types).
 *
 * Sources (research/linux-execmem.md sections 2.2, 2.4, 3; research/lkml-thread.md):
 * - Legacy x86 module_alloc(): __vmalloc_node_range(size, MODULE_ALIGN, MODULES_VADDR +
 *   load offset, MODULES_END, GFP_KERNEL, PAGE_KERNEL, ...): 4 KiB pages, page-rounded, one
 *   guard page, RW+NX. The loader wrote sections directly, then module_enable_ro() (set_memory_ro
 *   on text and rodata; ro_after_init only after init) and module_enable_x() (set_memory_x on
 *   text): TWO set_memory calls for text, each a global flush. Data stays RW+NX (set_memory_nx on
 *   already-NX data changes no PTE, so Linux does not flush; we skip the call).
 * - Legacy BPF (bpf_jit_binary_alloc before bpf_prog_pack): round_up(proglen + sizeof(hdr) + 128,
 *   PAGE_SIZE) from module_alloc, jit_fill_hole() over it, the JIT writes directly, then
 *   bpf_jit_binary_lock_ro(): set_memory_ro + set_memory_x. Our `sizeBytes` already holds
 *   proglen + header (the workload adds the header), so we add the 128-byte slack.
 * - Legacy kprobes alloc_insn_page(): module_alloc(PAGE_SIZE) then set_memory_ro + set_memory_x;
 *   slots are written with text_poke. On top sits kernel/kprobes.c's kprobe_insn_cache, modelled
 *   for every Linux policy that sends kprobes down this path: x86 slots of MAX_INSN_SIZE = 16
 *   bytes, 256 per page; __get_insn_slot takes the first clean slot of the first page with room
 *   (pages in list order, new pages at the head); collect_one_slot frees a page when its last
 *   slot goes, "unless it's the last one" (kept so the next probe needs no new page). Not
 *   modelled: the dirty-slot garbage list and its synchronize_rcu (slots are clean at once), the
 *   optprobe cache. Larger kprobes requests get a page of their own.
 * - Legacy ftrace create_trampoline(): module_alloc, copy, set_memory_ro + set_memory_x.
 * - execmem 6.10 (execmem_alloc without EXECMEM_ROX_CACHE): execmem_vmalloc(range, size, pgprot,
 *   VM_FLUSH_RESET_PERMS) in the arch range table, retried in the fallback range; size
 *   page-aligned. x86 without ROX support uses PAGE_KERNEL for text, so the loader still writes
 *   directly and finalizes with ONE set_memory_rox call (module_enable_text_rox); kprobes are
 *   PAGE_KERNEL_ROX and alloc_insn_page() calls set_memory_rox, so the direct-map alias is fixed at
 *   allocation (we map RW and make it ROX in that one call: same cost, no transient W+X alias).
 *   In real 6.10, BPF programs went through bpf_prog_pack on top of execmem; this policy gives BPF
 *   one execmem_alloc(EXECMEM_BPF) each so that execmem's own behaviour is isolated, and the pack
 *   is its own policy.
 * - Free: vfree() with VM_FLUSH_RESET_PERMS (the direct-map alias is reset to RW and flushed). No
 *   invalidation of freed text in either era.
 */
import type { ExecmemType, Prot } from '../arch/types.js';
import { typeIsText } from '../arch/types.js';
import { alignUp } from '../base/addr.js';
import { assert } from '../base/assert.js';
import type { Machine } from '../machine/machine.js';
import { type Allocation, LinuxPolicy, newAllocation, PAGE_BYTES } from './common.js';

/** bpf_jit_binary_alloc()'s slack for the random start offset ("+ 128"). */
export const BPF_LEGACY_SLACK_BYTES = 128;
/** x86 kprobe instruction slot: MAX_INSN_SIZE * sizeof(kprobe_opcode_t). */
export const KPROBE_INSN_SLOT_BYTES = 16;
const KPROBE_SLOTS_PER_PAGE = PAGE_BYTES / KPROBE_INSN_SLOT_BYTES;

/** One page of kprobe instruction slots (struct kprobe_insn_page; side table). */
export class KprobeInsnPage {
  readonly used = new Uint8Array(KPROBE_SLOTS_PER_PAGE);
  nused = 0;
  constructor(readonly page: Allocation) {}
}

export type PlainEra = 'legacy' | 'execmem-6.10';

export class PlainPolicy extends LinuxPolicy {
  /** kprobe_insn_slots.pages, head first. */
  private readonly insnPages: KprobeInsnPage[] = [];

  constructor(
    name: string,
    machine: Machine,
    readonly era: PlainEra,
  ) {
    super(name, machine);
  }

  /** Pages held by the kprobe instruction-slot cache. */
  get insnPageCount(): number {
    return this.insnPages.length;
  }

  protected allocate(type: ExecmemType, sizeBytes: number, alignBytes: number): Allocation {
    return this.plainAllocate(type, sizeBytes, alignBytes);
  }

  protected writeInto(a: Allocation, va: number, bytes: Uint8Array): void {
    this.writeByProt(a, va, bytes);
  }

  protected finalizeAlloc(a: Allocation): void {
    this.plainFinalize(a);
  }

  protected release(a: Allocation): void {
    this.plainRelease(a);
  }

  /** One vmalloc (RW+NX, 4 KiB pages) for one allocation; kprobes pages become ROX at once. */
  protected plainAllocate(type: ExecmemType, sizeBytes: number, alignBytes = 1): Allocation {
    if (type === 'kprobes' && sizeBytes <= KPROBE_INSN_SLOT_BYTES && alignBytes <= KPROBE_INSN_SLOT_BYTES) {
      return this.insnSlot(sizeBytes);
    }
    return this.pageAllocate(type, sizeBytes);
  }

  private pageAllocate(type: ExecmemType, sizeBytes: number): Allocation {
    const legacyBpf = this.era === 'legacy' && type === 'bpf';
    const reserved = alignUp(legacyBpf ? sizeBytes + BPF_LEGACY_SLACK_BYTES : sizeBytes, PAGE_BYTES);
    const area = this.vmalloc(this.rangeFor(type), reserved, false);
    const a = newAllocation(area.va, type, sizeBytes, reserved, 'vmalloc', true, finalProtOf(type));
    try {
      if (legacyBpf) this.storeTraps(a.va, reserved);
      if (type === 'kprobes') this.makeExecutable(a);
    } catch (e) {
      this.vfree(area.va);
      throw e;
    }
    this.mappedBytes += reserved;
    return a;
  }

  /** The loader's finalize: text becomes ROX, rodata RO; data and ro_after_init stay RW. */
  protected plainFinalize(a: Allocation): void {
    if (!a.writable) return;
    if (typeIsText(a.type)) this.makeExecutable(a);
    else if (a.type === 'module_rodata') {
      this.protect(a.va, a.reservedBytes / PAGE_BYTES, 'ro');
      a.writable = false;
    }
  }

  protected plainRelease(a: Allocation): void {
    if (a.kind === 'kprobe-slot') {
      this.releaseSlot(a);
      return;
    }
    this.vfree(a.va);
    this.mappedBytes -= a.reservedBytes;
  }

  /** __get_insn_slot(): first clean slot of the first page with room, else a new page at the head. */
  private insnSlot(sizeBytes: number): Allocation {
    let kip = this.insnPages.find((k) => k.nused < KPROBE_SLOTS_PER_PAGE);
    if (kip === undefined) {
      kip = new KprobeInsnPage(this.pageAllocate('kprobes', PAGE_BYTES)); // alloc_insn_page()
      this.insnPages.unshift(kip);
      this.counters.blocksMapped++;
    }
    const slot = kip.used.indexOf(0);
    assert(slot >= 0, 'kprobe insn page with room has no clean slot');
    kip.used[slot] = 1;
    kip.nused++;
    const va = kip.page.va + slot * KPROBE_INSN_SLOT_BYTES;
    const a = newAllocation(va, 'kprobes', sizeBytes, KPROBE_INSN_SLOT_BYTES, 'kprobe-slot', false, 'rox');
    a.owner = kip;
    return a;
  }

  /** collect_one_slot(): a page whose last slot goes is freed unless it is the only page. */
  private releaseSlot(a: Allocation): void {
    const kip = a.owner as KprobeInsnPage;
    const slot = (a.va - kip.page.va) / KPROBE_INSN_SLOT_BYTES;
    assert(kip.used[slot] === 1, 'freeing a clean kprobe slot');
    kip.used[slot] = 0;
    kip.nused--;
    if (kip.nused > 0 || this.insnPages.length === 1) return;
    this.insnPages.splice(this.insnPages.indexOf(kip), 1);
    this.vfree(kip.page.va); // free_insn_page() = execmem_free()
    this.mappedBytes -= kip.page.reservedBytes;
    this.counters.blocksReleased++;
  }

  /** Legacy: set_memory_ro then set_memory_x (two CPA calls); 6.10: set_memory_rox (one). */
  private makeExecutable(a: Allocation): void {
    const pages = a.reservedBytes / PAGE_BYTES;
    if (this.era === 'legacy') this.protect(a.va, pages, 'ro');
    this.protect(a.va, pages, 'rox');
    a.writable = false;
  }
}

/** The protection each type ends up with under the Linux loader's rules. */
export function finalProtOf(type: ExecmemType): Prot {
  if (typeIsText(type)) return 'rox';
  if (type === 'module_rodata') return 'ro';
  return 'rw';
}

/** `module_alloc`: the pre-execmem design. */
export function createModuleAlloc(machine: Machine): PlainPolicy {
  return new PlainPolicy('module_alloc', machine, 'legacy');
}

/** `execmem-6.10`: execmem without the ROX cache. */
export function createExecmem610(machine: Machine): PlainPolicy {
  return new PlainPolicy('execmem-6.10', machine, 'execmem-6.10');
}
