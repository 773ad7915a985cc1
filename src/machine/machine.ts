/**
 * The simulated kernel machine: physical memory, the kernel page table, per-CPU TLBs, vmalloc, CPA,
 * patching, the W^X audit and ptdump, composed behind one object.
 *
 * Why one facade: every layer above (the sim backend, the re-implemented Linux policies, the
 * metrics) must see costs only as consequences of page-table operations (issue 2: "not a number
 * the allocator reports about itself"). So the parts are wired here once: every leaf change of the
 * kernel page table goes to the W^X audit, the DirectMap statistics and the fetch micro-caches;
 * every flush goes through the CPU layer that counts it and tells the audit which stale entries
 * died; TLB evictions tell the audit too. Nothing else can change a mapping.
 *
 * Write sessions (write-session.ts) are our allocator's alias write, used only by execmem's
 * SimBackend; the Linux rows patch through `poke`/`pokeSet` (patch.ts) as Linux does.
 *
 * Counters start at zero when boot has finished (boot's own splits show in directMapStats()).
 * Everything is deterministic from `seed` (KASLR offsets).
 */
import { ARCHES } from '../arch/index.js';
import type { ArchName, ArchSpec, Prot, VaRange } from '../arch/types.js';
import { describe } from '../base/describe.js';
import { Rng } from '../base/rng.js';
import { kernelTextStart, mapDirectMap, mapKernelImage, modulesStart, protectImageAlias } from './boot.js';
import { Cpa } from './cpa.js';
import { Cpus } from './cpu.js';
import { DirectMapTracker } from './directmap.js';
import { MachineError } from './errors.js';
import { type LeafBulkListener, PageTable } from './pagetable.js';
import { Patcher } from './patch.js';
import { PhysMem } from './phys.js';
import { ptdump, ptdumpMarkers } from './ptdump.js';
import { type CpuTlb, createCpuTlbs } from './tlb.js';
import {
  defaultTlbProfile,
  TLB_PROFILE_NAMES,
  type TlbProfile,
  type TlbProfileName,
  tlbProfileByName,
} from './tlb-profiles.js';
import type {
  DirectMapStats,
  LeafChange,
  MachineCounters,
  Translation,
  VmArea,
  VmallocRequest,
} from './types.js';
import { newCounters } from './types.js';
import { Vmalloc } from './vmalloc.js';
import { type WriteSession, WriteSessions, writeSessionWindow } from './write-session.js';
import type { WxViolation } from './wx.js';
import { WxAudit } from './wx.js';

export interface MachineConfig {
  arch?: ArchName;
  /** Default 16 GiB; a positive multiple of 1 GiB. */
  memoryBytes?: number;
  /** Default 4. */
  cpus?: number;
  /** TLB geometry (tlb-profiles.ts); default by arch: x86_64 and generic 'skylake', arm64 'neoverse-n1'. */
  tlb?: TlbProfileName;
  /** Default true. */
  kaslr?: boolean;
  /** Default 1. */
  seed?: number;
}

export interface FrameAccounting {
  totalFrames: number;
  freeFrames: number;
  /**
   * Page-table frames of the kernel table, (x86) the poking mm, (arm64) the 4 KiB linear map's
   * tables set aside at boot (machine/cpa.ts, linear-map expansions) and, once execmem's
   * SimBackend prepared them, the arm64 write-session mm (write-session.ts).
   */
  tableFrames: number;
  /** Frames owned by vmalloc areas, the kernel image and pages pinned by aging. */
  mappedFrames: number;
  /** Of mappedFrames: pages pinned by PhysMem.age (other kernel users' memory, modelled). */
  agedFrames: number;
}

const GIB = 2 ** 30;
const MAX_CPUS = 256;

export function createMachine(config: MachineConfig = {}): Machine {
  return new Machine(config);
}

export class Machine {
  readonly arch: ArchSpec;
  readonly cpuCount: number;
  readonly phys: PhysMem;
  readonly kernelPt: PageTable;
  /** x86 text_poke's temporary mm (null elsewhere). */
  readonly pokingPt: PageTable | null;
  readonly counters: MachineCounters;
  readonly tlbs: readonly CpuTlb[];
  /** The TLB geometry in use, and its name (for reports). */
  readonly tlbProfile: TlbProfile;
  readonly tlbProfileName: TlbProfileName;
  readonly modulesStart: number;
  readonly kernelTextStart: number;
  readonly kaslr: boolean;
  readonly seed: number;
  private readonly cpus: Cpus;
  private readonly audit: WxAudit;
  private readonly dmap: DirectMapTracker;
  private readonly cpa: Cpa;
  private readonly vm: Vmalloc;
  private readonly patcher: Patcher;
  private readonly sessions: WriteSessions;
  private readonly markers: ReturnType<typeof ptdumpMarkers>;

  constructor(config: MachineConfig = {}) {
    // Every field is checked here, typed, naming the field (issue 16 item 7): look-ups by a
    // caller's name are own-property look-ups, so '__proto__' or 'toString' is an unknown name.
    if (typeof config !== 'object' || config === null || Array.isArray(config))
      throw new MachineError('EINVAL', `the machine config must be an object, got ${describe(config)}`);
    const archName = config.arch ?? 'x86_64';
    if (typeof archName !== 'string' || !Object.hasOwn(ARCHES, archName)) {
      throw new MachineError(
        'EINVAL',
        `unknown arch ${describe(archName)} (known: ${Object.keys(ARCHES).join(', ')})`,
      );
    }
    const arch: ArchSpec = ARCHES[archName];
    const memoryBytes = config.memoryBytes ?? 16 * GIB;
    if (
      typeof memoryBytes !== 'number' ||
      !Number.isSafeInteger(memoryBytes) ||
      memoryBytes <= 0 ||
      memoryBytes % GIB !== 0
    )
      throw new MachineError(
        'EINVAL',
        `memoryBytes must be a positive multiple of 1 GiB, got ${describe(memoryBytes)}`,
      );
    const cpuCount = config.cpus ?? 4;
    if (typeof cpuCount !== 'number' || !Number.isInteger(cpuCount) || cpuCount < 1 || cpuCount > MAX_CPUS) {
      throw new MachineError(
        'EINVAL',
        `cpus must be an integer in 1..${MAX_CPUS}, got ${describe(cpuCount)}`,
      );
    }
    const tlbName = config.tlb ?? defaultTlbProfile(archName);
    const profile = typeof tlbName === 'string' ? tlbProfileByName(tlbName) : undefined;
    if (profile === undefined) {
      throw new MachineError(
        'EINVAL',
        `unknown TLB profile ${describe(tlbName)} in tlb (known: ${TLB_PROFILE_NAMES.join(', ')})`,
      );
    }
    const kaslr = config.kaslr ?? true;
    if (typeof kaslr !== 'boolean')
      throw new MachineError('EINVAL', `kaslr must be a boolean, got ${describe(kaslr)}`);
    const seed = config.seed ?? 1;
    if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0)
      throw new MachineError('EINVAL', `seed must be a non-negative integer, got ${describe(seed)}`);
    this.tlbProfile = profile;
    this.tlbProfileName = profile.name as TlbProfileName;
    this.arch = arch;
    this.cpuCount = cpuCount;
    this.kaslr = kaslr;
    this.seed = seed;
    const rng = new Rng(this.seed);
    this.counters = newCounters();
    this.phys = new PhysMem(memoryBytes);
    const l = arch.layout;
    if (this.phys.totalFrames * 4096 > l.directMapEnd - l.directMapStart) {
      throw new MachineError('EINVAL', 'memory larger than the direct map region');
    }
    this.kernelPt = new PageTable(this.phys, this.counters, 'kernel');
    // Outside the kernel's address space: x86's poking mm (text_poke and our write sessions) and
    // arm64's write-session mm (write-session.ts), unless the linear map reaches its number.
    const sessionWindow = writeSessionWindow(arch);
    this.audit = new WxAudit(
      this.kernelPt,
      this.phys.totalFrames,
      arch.patch === 'temporary_mm'
        ? l.pokeArea
        : sessionWindow !== null && this.phys.totalFrames * 4096 <= sessionWindow.start
          ? sessionWindow
          : null,
    );
    this.dmap = new DirectMapTracker(l.directMapStart, l.directMapEnd, arch.directMapPageGranular);
    this.kernelPt.addListener(this.audit);
    this.kernelPt.addListener(this.dmap);
    // SMT siblings (2k, 2k+1) share or split arrays as the profile says; a sibling's use of a shared
    // L1 iTLB drops this CPU's fetch micro-cache (its cached "L1 hit" may no longer be one).
    // An eviction drops the CPU's fetch micro-cache (its page may have been the one evicted); the
    // audit needs the evicted value only while it holds stale entries of that CPU (wx.ts onEvict).
    const tlbs = createCpuTlbs(profile, cpuCount, (cpu) => ({
      onEvict: (t: Translation) => this.audit.onEvict(cpu, t),
      onAnyEvict: () => this.cpus?.invalidateMicroOf(cpu),
      wantsEvict: () => this.audit.hasStale(cpu),
      onSiblingL1i: () => this.cpus?.invalidateMicroOf(cpu),
    }));
    this.tlbs = tlbs;
    this.audit.attachTlbs(tlbs);
    this.cpus = new Cpus(arch, this.kernelPt, this.phys, this.counters, this.audit, tlbs);
    const micro: LeafBulkListener = {
      onLeafChange: (_c: LeafChange) => this.cpus.invalidateMicro(),
      onSplit: (_t: Translation) => this.cpus.invalidateMicro(),
      onCollapse: (_t: Translation) => this.cpus.invalidateMicro(),
    };
    this.kernelPt.addListener(micro);
    this.cpa = new Cpa(arch, this.kernelPt, this.counters, this.cpus, this.phys);

    mapDirectMap(arch, this.kernelPt, this.phys, this.cpa);
    this.kernelTextStart = kernelTextStart(arch, this.kaslr, rng);
    const image = mapKernelImage(arch, this.kernelPt, this.phys, this.kernelTextStart);
    protectImageAlias(image, this.cpa);
    this.modulesStart = modulesStart(arch, this.kaslr, rng);
    const imageBytes = image.textBytes + image.rodataBytes + image.dataBytes;
    const universe: VaRange[] = mergeRanges([
      l.vmalloc,
      l.modules,
      { start: this.kernelTextStart, end: this.kernelTextStart + imageBytes },
    ]);
    this.vm = new Vmalloc(universe, this.kernelPt, this.phys, this.counters, this.cpus, this.cpa);
    this.vm.registerImage(this.kernelTextStart, imageBytes, image.leafPfns, 2 ** 21);
    if (arch.patch === 'temporary_mm') {
      this.pokingPt = new PageTable(this.phys, this.counters, 'poking_mm');
      this.pokingPt.preallocate(l.pokeArea.start, 1);
    } else {
      this.pokingPt = null;
      if (arch.patch === 'fixmap') this.kernelPt.preallocate(l.pokeArea.start, 1);
    }
    this.patcher = new Patcher(
      arch,
      this.kernelPt,
      this.pokingPt,
      this.phys,
      this.counters,
      this.cpus,
      this.vm,
    );
    this.sessions = new WriteSessions(
      arch,
      this.kernelPt,
      this.pokingPt,
      this.phys,
      this.counters,
      this.cpus,
      this.vm,
    );
    this.markers = ptdumpMarkers(arch, this.modulesStart, this.kernelTextStart);
    for (const t of tlbs) t.flushAll();
    Object.assign(this.counters, newCounters());
  }

  // ---- accesses ----
  fetch(cpu: number, va: number, sizeBytes: number): Uint8Array {
    return this.cpus.fetch(cpu, va, sizeBytes);
  }

  ifetch(cpu: number, va: number): number {
    return this.cpus.ifetch(cpu, va);
  }

  /** ifetch without reading the byte (cpu.ts itouch): what the fetch model uses. */
  itouch(cpu: number, va: number): void {
    this.cpus.itouch(cpu, va);
  }

  load(cpu: number, va: number, sizeBytes: number): Uint8Array {
    return this.cpus.load(cpu, va, sizeBytes);
  }

  store(cpu: number, va: number, bytes: Uint8Array): void {
    this.cpus.store(cpu, va, bytes);
  }

  // ---- TLB maintenance ----
  flushLocal(cpu: number, va?: number, sizeBytes?: number): void {
    this.cpus.flushLocal(cpu, va, sizeBytes);
  }

  flushGlobal(va?: number, sizeBytes?: number): void {
    this.cpus.flushGlobal(va, sizeBytes);
  }

  // ---- vmalloc / CPA / patching ----
  vmalloc(req: VmallocRequest): VmArea {
    return this.vm.vmalloc(req);
  }

  vfree(va: number): void {
    const s = this.sessions.openSession;
    if (s !== null) {
      const area = this.vm.findArea(va);
      if (area !== undefined && s.holds(area.va, area.sizeBytes)) {
        throw new MachineError(
          'EBUSY',
          `vfree of 0x${va.toString(16)}: its pages are mapped in the open write session (end the chunk first)`,
        );
      }
    }
    this.vm.vfree(va);
  }

  findArea(va: number): VmArea | undefined {
    return this.vm.findArea(va);
  }

  /** Live vmalloc areas in address order (the kernel image first where it lies lowest). */
  areas(): VmArea[] {
    return this.vm.liveAreas();
  }

  /** Flush and release lazily freed vmalloc VA now (purge_vmap_area_lazy). */
  purgeLazy(): void {
    this.vm.purgeLazy(true);
  }

  /**
   * One set_memory_* call (machine/cpa.ts). Both arches start it with vm_unmap_aliases() (x86
   * change_page_attr_set_clr, arm64 change_memory_common): lazily freed vmalloc areas are purged
   * with one flush_tlb_kernel_range over them when any are pending (mm/vmalloc.c
   * _vm_unmap_aliases -> __purge_vmap_area_lazy). The purge runs after the change commits, so a
   * failed call changes nothing; it cannot fail, and nothing in the change depends on it.
   */
  setMemory(va: number, pageCount: number, prot: Prot): void {
    this.cpa.setMemory(va, pageCount, prot);
    this.vm.purgeLazy(true);
  }

  /**
   * OUR allocator's set_memory_* for a whole block of physically contiguous frames (execmem's
   * SimBackend; the Linux rows never call it): as setMemory, but on arm64 the linear alias is
   * changed per contiguous run and the call's flushes are one flush_tlb_all (cpa-arm64.ts
   * foldFlushes). On x86 it is setMemory: change_page_attr already ends such a call in one flush.
   */
  setMemoryFolded(va: number, pageCount: number, prot: Prot): void {
    this.cpa.setMemory(va, pageCount, prot, true);
    this.vm.purgeLazy(true);
  }

  /** text_poke_copy (x86) / aarch64_insn_copy (arm64), as Linux does it (patch.ts). */
  poke(cpu: number, va: number, bytes: Uint8Array): void {
    this.refuseDuringSession('poke');
    this.patcher.poke(cpu, va, bytes);
  }

  /** text_poke_set (x86) / the arm64 fixmap fill, as Linux does it (patch.ts). */
  pokeSet(cpu: number, va: number, sizeBytes: number, pattern: Uint8Array): void {
    this.refuseDuringSession('pokeSet');
    this.patcher.pokeSet(cpu, va, sizeBytes, pattern);
  }

  /**
   * Allocate the write-session window's page tables now (write-session.ts; our allocator's
   * poking_init). Only execmem's SimBackend uses sessions; Linux designs never call this.
   */
  prepareWriteSessions(): void {
    this.sessions.prepare();
  }

  /** Open the one write session on `cpu` (write-session.ts): EBUSY while one is open. */
  openWriteSession(cpu: number): WriteSession {
    return this.sessions.open(cpu);
  }

  /** The open write session, or null. */
  openedWriteSession(): WriteSession | null {
    return this.sessions.openSession;
  }

  /** The session mm's leaf at `va` (tests: the window is empty after every session). */
  writeSessionLeaf(va: number): Translation | null {
    return this.sessions.windowLeaf(va);
  }

  /** text_poke and a write session share x86's poking mm; text_mutex would serialise them. */
  private refuseDuringSession(op: string): void {
    if (this.sessions.openSession !== null) throw new MachineError('EBUSY', `${op}: a write session is open`);
  }

  /**
   * text_poke_sync() (arch/x86/kernel/alternative.c): on_each_cpu(do_sync_core, NULL, 1), a
   * serialising instruction on every CPU, by IPI to the others, so no CPU keeps executing stale
   * instruction bytes. No TLB or page-table effect; counted in syncCores / syncCoreIpis.
   */
  syncCores(cpu: number): void {
    this.cpus.checkCpu(cpu);
    this.counters.syncCores++;
    this.counters.syncCoreIpis += this.cpuCount - 1;
  }

  // ---- audit and reporting ----
  wxViolationCount(): number {
    return this.audit.violationCount();
  }

  wxFullScan(): WxViolation[] {
    return this.audit.fullScan();
  }

  /** Stale TLB entries (all CPUs) the audit currently accounts for. */
  staleTlbEntryCount(): number {
    return this.audit.staleEntryCount();
  }

  directMapStats(): DirectMapStats {
    return { ...this.dmap.stats };
  }

  ptdump(range?: VaRange): string {
    return ptdump(this.arch, this.kernelPt, this.markers, range);
  }

  frameAccounting(): FrameAccounting {
    const agedFrames = this.phys.agedFrameCount();
    return {
      totalFrames: this.phys.totalFrames,
      freeFrames: this.phys.freeFrameCount(),
      tableFrames:
        this.kernelPt.tableFrameCount() +
        (this.pokingPt?.tableFrameCount() ?? 0) +
        this.sessions.tableFrameCount() +
        this.cpa.reservedTableFrames().length,
      mappedFrames: this.vm.mappedFrameCount() + agedFrames,
      agedFrames,
    };
  }

  /** Slow self-check for tests: buddy lists, W^X counts, and frame ownership (no frame owned twice). */
  checkConsistency(): void {
    this.phys.check();
    this.audit.checkCounts();
    const owner = new Uint8Array(this.phys.totalFrames);
    const own = (pfn: number, frames: number, what: string): void => {
      for (let f = pfn; f < pfn + frames; f++) {
        if (owner[f] !== 0) throw new Error(`frame ${f} owned twice (${what})`);
        owner[f] = 1;
      }
    };
    for (const pfn of this.kernelPt.tableFrames()) own(pfn, 1, 'kernel page table');
    for (const pfn of this.pokingPt?.tableFrames() ?? []) own(pfn, 1, 'poking_mm page table');
    for (const pfn of this.sessions.tableFrames()) own(pfn, 1, 'write-session mm page table');
    for (const pfn of this.cpa.reservedTableFrames()) own(pfn, 1, 'linear-map page table (boot)');
    for (const a of this.vm.liveAreas())
      for (const pfn of a.leafPfns) own(pfn, a.leafBytes / 4096, 'vmalloc area');
    let owned = 0;
    for (let f = 0; f < owner.length; f++) {
      owned += owner[f];
      if (owner[f] !== 0 && this.phys.allocatedOrderAt(f) === -1 && !this.insideAllocatedBlock(f)) {
        throw new Error(`frame ${f} is used but free in the buddy allocator`);
      }
    }
    const acct = this.frameAccounting();
    if (owned + acct.agedFrames + acct.freeFrames !== acct.totalFrames) {
      throw new Error(
        `frames leaked: owned ${owned} + aged ${acct.agedFrames} + free ${acct.freeFrames} != ${acct.totalFrames}`,
      );
    }
  }

  private insideAllocatedBlock(pfn: number): boolean {
    for (let o = 1; o <= 18; o++) {
      const head = pfn - (pfn % 2 ** o);
      const order = this.phys.allocatedOrderAt(head);
      if (order >= o) return true;
    }
    return false;
  }
}

function mergeRanges(ranges: VaRange[]): VaRange[] {
  const sorted = [...ranges].sort((a, b) => a.start - b.start);
  const out: { start: number; end: number }[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && r.start <= last.end) last.end = Math.max(last.end, r.end);
    else out.push({ start: r.start, end: r.end });
  }
  return out;
}
