/**
 * The module loader: load, init, unload real Linux .ko files through any ExecAllocator.
 *
 * Why it is built this way: the loader is the allocator's most demanding user (DESIGN.md 1),
 * and it must make the same requests a kernel makes so that designs are compared on real work.
 * The sequence follows kernel/module/main.c load_module() (6.1):
 *   1. strip the signature, validate the ELF (elf.ts) and .modinfo, refuse duplicates;
 *   2. layout_and_allocate()'s layout: sections per memory type (layout.ts);
 *   3. resolve undefined symbols (resolve.ts: simplify_symbols() / resolve_symbol());
 *   4. check every relocation entry that does not depend on addresses (image.ts);
 *   5. percpu_modalloc() (percpu.ts), then one allocation per non-empty memory type;
 *   6. relocate into private copies (image.ts; 6.13's "writable copy" design) with
 *      apply_relocate_add() rules (reloc.ts);
 *   7. read the module's own exports from its relocated __ksymtab* (so later modules link to
 *      them), refuse duplicate exports (verify_exported_symbols()), write each image through
 *      the allocator (text/rodata through its update path) and finalize it.
 *
 * Order: Linux allocates in step 2 (layout_and_allocate() -> move_module()) and resolves and
 * relocates afterwards, so a file it refuses for a missing symbol or a bad relocation entry has
 * cost one allocation and one free. Here steps 3 and 4 run before anything is allocated: the
 * outcome (loaded, or refused with the same errno and message) is the same, and a refused file
 * leaves allocator and machine exactly as they were. Only what depends on addresses can fail
 * after allocating (a relocation overflow, a target made nonzero by an earlier entry, a corrupt
 * export table, the allocator itself); then everything allocated is freed again, as Linux's
 * free_module() path does, and the machine keeps only what a vfree() keeps (lazily freed
 * address space, page-table pages, an allocator's cache).
 *
 * Errors: every failure is a ModuleLoadError labelled with the step that failed and Linux's
 * errno for it (load-errors.ts); a bug is never dressed up as one. Cost: parsing is bounded in
 * proportion to the file (names.ts), and so is relocation work (image.ts checkRelocations).
 *
 * init() is do_init_module() after the module's init function: ro_after_init is sealed and
 * init memory freed. unload() frees everything, refusing while another module uses this one.
 * The publish step, the init frees and an unload's frees are each handed to the allocator as
 * one batch where it has batch() (ours); the Linux designs get the same calls one by one.
 * Function symbols (with sizes) are kept so the instruction-fetch model can run real functions.
 */
import type { ExecmemType } from '../../arch/types.js';
import { allocModuleSections, type ExecAllocator, inBatch } from '../../policies/types.js';
import { EM_X86_64, parseElf, parseModinfo, SHF_ALLOC, SHT_NOBITS, stripModuleSignature } from './elf.js';
import {
  buildImages,
  checkRelocations,
  type Images,
  type Mems,
  type ModuleFunction,
  type ModuleMem,
  moduleFunctions,
  type Prepared,
  placedSectionAddr,
  readExports,
  relocate,
  symbolValues,
} from './image.js';
import { layoutModule, MOD_MEM_TYPES, type ModMemType, memTypeIsInit } from './layout.js';
import { inPhase, labelError, ModuleLoadError } from './load-errors.js';
import { newParseStats, type ParseStats } from './names.js';
import { PercpuArea } from './percpu.js';
import { frobArm64Sections } from './plt-arm64.js';
import { RELOC_TYPE_LIMIT } from './reloc.js';
import { anyRelocTypeName as relocTypeName } from './reloc-arm64.js';
import { type FoundExport, firstInfo, resolveSymbols } from './resolve.js';
import type { KernelExport, KernelSymbols } from './symbols.js';

export type { ModuleFunction, ModuleMem } from './image.js';
export { toSigned, toVa48 } from './image.js';
export {
  ModuleLoadError,
  type ModuleLoadErrorCode,
  type ModuleLoadErrorSource,
} from './load-errors.js';

/** Which allocator type each module memory type is requested as. */
export const MEM_TYPE_EXECMEM: Readonly<Record<ModMemType, ExecmemType>> = {
  text: 'module_text',
  init_text: 'module_text',
  rodata: 'module_rodata',
  init_rodata: 'module_rodata',
  ro_after_init: 'module_ro_after_init',
  data: 'module_data',
  init_data: 'module_data',
};

const MAX_ALLOC_ALIGN_BYTES = 4096;

export interface LoadedModule {
  readonly name: string;
  state: 'coming' | 'live';
  readonly mems: Partial<Record<ModMemType, ModuleMem>>;
  functions: ModuleFunction[];
  readonly exports: ReadonlyMap<string, KernelExport>;
  readonly percpuOffset: number | null;
  readonly percpuBytes: number;
  readonly depends: readonly string[];
  /** Modules whose exports this one linked against. */
  readonly uses: ReadonlySet<string>;
  /** Relocations applied, by type name. */
  readonly relocCounts: Readonly<Record<string, number>>;
  /** arm64: PLT entries emitted for branches out of CALL26/JUMP26 reach (0 on x86). */
  readonly pltEntries: number;
  readonly warnings: readonly string[];
}

export interface ModuleLoaderOptions {
  readonly allocator: ExecAllocator;
  /** Kernel exports with the KASLR offset already applied (KernelSymbols.withKaslrOffset). */
  readonly kernel: KernelSymbols;
  readonly percpu?: PercpuArea;
  /** Check rel32 reach on PC32/PLT32 (Linux does not; default true, see reloc.ts). */
  readonly checkPc32?: boolean;
  /** Work counters to accumulate into (names.ts ParseStats); default a private one. */
  readonly parseStats?: ParseStats;
  /** The modules' architecture (default x86_64): e_machine, relocations, PLTs. */
  readonly arch?: 'x86_64' | 'arm64';
  /**
   * Address the per-CPU offsets are relative to (signed; default 0). x86-64 links the per-CPU
   * section at 0 (offsets are addresses); arm64 has no zero-based per-CPU section, so a module's
   * per-CPU reservation is an address in the kernel image (see modules load).
   */
  readonly percpuBaseAddr?: number;
}

/** EM_AARCH64 (include/uapi/linux/elf-em.h). */
const EM_AARCH64 = 183;

export interface LoaderStats {
  readonly modulesLive: number;
  readonly modulesLoaded: number;
  readonly modulesFailed: number;
  readonly modulesUnloaded: number;
  readonly relocsByType: Record<string, number>;
  /** PLT entries emitted over all loads (arm64). */
  readonly pltEntries: number;
  readonly liveBytesByMemType: Record<ModMemType, number>;
  readonly percpu: { usedBytes: number; reserveBytes: number; slices: number };
  /** Work done parsing and relocating, over all loads (bounded per file, names.ts). */
  readonly parse: ParseStats;
}

export class ModuleLoader {
  private readonly allocator: ExecAllocator;
  private readonly kernel: KernelSymbols;
  private readonly percpu: PercpuArea;
  private readonly checkPc32: boolean;
  private readonly parseStats: ParseStats;
  private readonly modules = new Map<string, LoadedModule>();
  /**
   * Exports of live modules by name. Linux walks the module list; because duplicate exports are
   * refused at load (verify_exported_symbols()), a name has one owner and a map gives the same
   * answer without the walk.
   */
  private readonly moduleExports = new Map<string, { exp: KernelExport; owner: string }>();
  private readonly relocTotals = new Uint32Array(RELOC_TYPE_LIMIT);
  private readonly arch: 'x86_64' | 'arm64';
  private readonly percpuBaseAddr: number;
  private pltTotal = 0;
  private failed = 0;
  private unloaded = 0;
  private loadedTotal = 0;

  constructor(opts: ModuleLoaderOptions) {
    this.allocator = opts.allocator;
    this.kernel = opts.kernel;
    this.percpu = opts.percpu ?? new PercpuArea(opts.kernel.perCpuEndBytes);
    this.checkPc32 = opts.checkPc32 ?? true;
    this.parseStats = opts.parseStats ?? newParseStats();
    this.arch = opts.arch ?? 'x86_64';
    this.percpuBaseAddr = opts.percpuBaseAddr ?? 0;
  }

  get(name: string): LoadedModule | undefined {
    return this.modules.get(name);
  }

  list(): LoadedModule[] {
    return [...this.modules.values()];
  }

  /**
   * Load a module file (bytes of a .ko). Throws ModuleLoadError (a bug throws itself). A file
   * refused before allocation changes nothing; one refused after it frees all it allocated.
   */
  load(fileBytes: Uint8Array, nameHint = '(unnamed)'): LoadedModule {
    try {
      const prep = this.prepare(fileBytes, nameHint);
      const mod = this.place(prep);
      this.modules.set(mod.name, mod);
      for (const [n, exp] of mod.exports) this.moduleExports.set(n, { exp, owner: mod.name });
      this.loadedTotal++;
      return mod;
    } catch (e) {
      this.failed++;
      throw e;
    }
  }

  /** Run "init": seal ro_after_init, free init memory (do_init_module()). */
  init(name: string): void {
    const mod = this.modules.get(name);
    if (!mod) throw new ModuleLoadError('ENOENT', name, `module ${name} is not loaded`);
    if (mod.state !== 'coming')
      throw new ModuleLoadError('EINVAL', name, `module ${name} is already initialised`);
    const rai = mod.mems.ro_after_init;
    if (rai) inPhase('allocator', name, () => this.allocator.seal(rai.va));
    // do_free_init frees every init region in one go: one batch for a design that batches.
    inBatch(this.allocator, () => {
      for (const t of MOD_MEM_TYPES) {
        const m = mod.mems[t];
        if (!m || !memTypeIsInit(t)) continue;
        inPhase('allocator', name, () => this.allocator.free(m.va));
        delete mod.mems[t];
      }
    });
    mod.functions = mod.functions.filter((f) => !f.init);
    mod.state = 'live';
  }

  /** Unload (delete_module()): refused while another module uses this one. */
  unload(name: string): void {
    const mod = this.modules.get(name);
    if (!mod) throw new ModuleLoadError('ENOENT', name, `module ${name} is not loaded`);
    const users = [...this.modules.values()].filter((m) => m.uses.has(name)).map((m) => m.name);
    if (users.length > 0)
      throw new ModuleLoadError('EBUSY', name, `Module ${name} is in use by: ${users.join(' ')}`);
    // free_module frees every region in one go: one batch for a design that batches.
    inBatch(this.allocator, () => {
      for (const t of MOD_MEM_TYPES) {
        const m = mod.mems[t];
        if (m) inPhase('allocator', name, () => this.allocator.free(m.va));
      }
    });
    if (mod.percpuOffset !== null) this.percpu.free(mod.percpuOffset);
    for (const n of mod.exports.keys()) this.moduleExports.delete(n);
    this.modules.delete(name);
    this.unloaded++;
  }

  stats(): LoaderStats {
    const relocsByType: Record<string, number> = {};
    this.relocTotals.forEach((n, t) => {
      if (n > 0) relocsByType[relocTypeName(t)] = n;
    });
    const liveBytesByMemType = {
      text: 0,
      data: 0,
      rodata: 0,
      ro_after_init: 0,
      init_text: 0,
      init_data: 0,
      init_rodata: 0,
    };
    for (const mod of this.modules.values()) {
      for (const t of MOD_MEM_TYPES) liveBytesByMemType[t] += mod.mems[t]?.sizeBytes ?? 0;
    }
    return {
      modulesLive: this.modules.size,
      modulesLoaded: this.loadedTotal,
      modulesFailed: this.failed,
      modulesUnloaded: this.unloaded,
      relocsByType,
      pltEntries: this.pltTotal,
      liveBytesByMemType,
      percpu: this.percpu.usage(),
      parse: { ...this.parseStats },
    };
  }

  /** Steps 1-4: everything that needs no address. Nothing is allocated; nothing changes. */
  private prepare(fileBytes: Uint8Array, nameHint: string): Prepared {
    const stats = this.parseStats;
    const machine = this.arch === 'arm64' ? EM_AARCH64 : EM_X86_64;
    const parsed = inPhase('elf', nameHint, () => {
      const file = parseElf(stripModuleSignature(fileBytes).bytes, { stats, machine });
      return { elf: file, modinfo: parseModinfo(file) };
    });
    const modinfo = parsed.modinfo;
    const name = firstInfo(modinfo, 'name') ?? nameHint;
    const thisMod = parsed.elf.sections.filter((s) => s.name === '.gnu.linkonce.this_module');
    if (thisMod.length !== 1 || thisMod[0].type === SHT_NOBITS || (thisMod[0].flags & SHF_ALLOC) === 0) {
      throw new ModuleLoadError(
        'ENOEXEC',
        name,
        `module ${name}: Exactly one allocated .gnu.linkonce.this_module section must exist.`,
        [],
        null,
        'elf',
      );
    }
    if (this.modules.has(name)) throw new ModuleLoadError('EEXIST', name, `module ${name} is already loaded`);
    // module_frob_arch_sections() runs before layout (layout_and_allocate()).
    const frob =
      this.arch === 'arm64' ? inPhase('layout', name, () => frobArm64Sections(parsed.elf, name)) : null;
    const elf = frob ? frob.elf : parsed.elf;
    const layout = inPhase('layout', name, () => layoutModule(elf, name));
    const uses = new Set<string>();
    const symValues = inPhase('symbols', name, () =>
      resolveSymbols(elf, name, modinfo, uses, (n) => this.findExport(n)),
    );
    const prep: Prepared = { name, elf, layout, modinfo, symValues, uses, plts: frob?.plts ?? null };
    inPhase('relocation', name, () => checkRelocations(prep, stats));
    return prep;
  }

  private findExport(name: string): FoundExport | undefined {
    const k = this.kernel.get(name);
    if (k) return { exp: k, owner: null, value: this.kernel.runtimeValue(k) };
    const m = this.moduleExports.get(name);
    return m ? { exp: m.exp, owner: m.owner, value: m.exp.value } : undefined;
  }

  /** move_module's allocation step: every non-empty region as one batch (all or nothing). */
  private allocate(prep: Prepared): Mems {
    const types = MOD_MEM_TYPES.filter((t) => prep.layout.sizeBytes[t] > 0);
    const sections = types.map((t) => ({
      type: MEM_TYPE_EXECMEM[t],
      sizeBytes: prep.layout.sizeBytes[t],
      init: t.startsWith('init_'),
      alignBytes: Math.min(Math.max(prep.layout.alignBytes[t], 1), MAX_ALLOC_ALIGN_BYTES),
    }));
    const vas = inPhase('allocator', prep.name, () => allocModuleSections(this.allocator, sections));
    const mems: Mems = {};
    types.forEach((t, k) => {
      mems[t] = { memType: t, execmemType: sections[k].type, va: vas[k], sizeBytes: sections[k].sizeBytes };
    });
    return mems;
  }

  /**
   * Free what a failed load allocated. Every region is freed even if one free fails; a failed
   * free is reported (labelled 'allocator'), since then the state could not be restored.
   */
  private release(name: string, mems: Mems, percpuOffset: number | null, cause: unknown): void {
    let freeError: unknown = null;
    for (const t of MOD_MEM_TYPES) {
      const m = mems[t];
      if (!m) continue;
      try {
        this.allocator.free(m.va);
      } catch (e) {
        freeError ??= e;
      }
    }
    if (percpuOffset !== null) this.percpu.free(percpuOffset);
    if (freeError === null) return;
    const label = labelError(freeError, 'allocator', name);
    const why = cause instanceof Error ? cause.message : String(cause);
    throw new ModuleLoadError(
      label.code,
      name,
      `${label.message} (while freeing after: ${why})`,
      [],
      null,
      'allocator',
      label.allocatorCode,
    );
  }

  /** Steps 5-7: allocate, relocate, publish; on any failure free everything again. */
  private place(prep: Prepared): LoadedModule {
    const { elf, layout, name } = prep;
    const pcpu = layout.pcpuIndex ? elf.sections[layout.pcpuIndex] : null;
    let percpuOffset: number | null = null;
    const warnings: string[] = [];
    if (pcpu && pcpu.sizeBytes > 0) {
      const r = inPhase('percpu', name, () => this.percpu.alloc(name, pcpu.sizeBytes, pcpu.alignBytes));
      percpuOffset = r.offset;
      if (r.warning) warnings.push(r.warning);
    }
    let mems: Mems;
    try {
      mems = this.allocate(prep);
    } catch (e) {
      if (percpuOffset !== null) this.percpu.free(percpuOffset);
      throw e;
    }
    try {
      const images = buildImages(prep, mems);
      const counts = new Uint32Array(RELOC_TYPE_LIMIT);
      const percpuAddr = percpuOffset === null ? null : this.percpuBaseAddr + percpuOffset;
      const values = symbolValues(prep, placedSectionAddr(prep, mems, percpuAddr));
      const pltEntries = inPhase('relocation', name, () =>
        relocate(prep, mems, images, values, counts, { checkPc32: this.checkPc32, stats: this.parseStats }),
      );
      const exports = inPhase('exports', name, () =>
        readExports(prep, mems, images, (n) => this.findExport(n)),
      );
      inPhase('allocator', name, () => this.publish(mems, images));
      for (let t = 0; t < RELOC_TYPE_LIMIT; t++) this.relocTotals[t] += counts[t];
      this.pltTotal += pltEntries;
      const relocCounts: Record<string, number> = {};
      counts.forEach((n, t) => {
        if (n > 0) relocCounts[relocTypeName(t)] = n;
      });
      // depends= names files (dashes); module names use underscores (modprobe treats them alike).
      const depends = (firstInfo(prep.modinfo, 'depends') ?? '')
        .split(',')
        .filter((d) => d !== '')
        .map((d) => d.replaceAll('-', '_'));
      return {
        name,
        state: 'coming',
        mems,
        functions: moduleFunctions(prep, mems),
        exports,
        percpuOffset,
        percpuBytes: pcpu?.sizeBytes ?? 0,
        depends,
        uses: prep.uses,
        relocCounts,
        pltEntries,
        warnings,
      };
    } catch (e) {
      this.release(name, mems, percpuOffset, e);
      throw e;
    }
  }

  /**
   * Write every image through the allocator and finalize it (text/rodata become RO(X) here), as
   * one batch where the allocator batches (ours: one write session for the whole module).
   */
  private publish(mems: Mems, images: Images): void {
    inBatch(this.allocator, () => {
      for (const t of MOD_MEM_TYPES) {
        const m = mems[t];
        if (!m) continue;
        this.allocator.write(m.va, images[t]!);
        this.allocator.finalize(m.va);
      }
    });
  }
}
