/**
 * The module loader: load, init, unload real Linux .ko files through any ExecAllocator.
 *
 * Why it is built this way: the loader is the allocator's most demanding user (DESIGN.md 1),
 * and it must make the same requests a kernel makes so that designs are compared on real work.
 * The sequence follows kernel/module/main.c load_module():
 *   1. strip the signature, validate the ELF (elf.ts) and .modinfo, refuse duplicates;
 *   2. layout_and_allocate(): lay sections out per memory type (layout.ts);
 *   3. resolve undefined symbols (simplify_symbols() / resolve_symbol()): exported symbols of
 *      the kernel first, then of live modules in load order; GPL-only exports need a
 *      GPL-compatible license; namespaced exports need MODULE_IMPORT_NS (6.1's
 *      verify_namespace_is_imported()); modversions CRCs must match (check_version()); weak
 *      undefined symbols resolve to 0; SHN_COMMON is refused ("Please compile with -fno-common");
 *   4. percpu_modalloc() (percpu.ts), then one allocation per non-empty memory type;
 *   5. relocate into private copies (6.13's "writable copy" design, see research notes
 *      linux-execmem.md: relocations are applied to a writable, non-executable copy, then copied
 *      to ROX memory in one go) with apply_relocate_add() rules (reloc.ts);
 *   6. read the module's own exports from its relocated __ksymtab* (so later modules link to
 *      them), refuse duplicate exports (verify_exported_symbols()), write each image through
 *      the allocator (text/rodata through its update path) and finalize it.
 * Any failure frees what was allocated and leaves the loader's state as it was: no partial load.
 *
 * init() is do_init_module() after the module's init function: ro_after_init is sealed and
 * init memory freed. unload() frees everything, refusing while another module uses this one.
 * Function symbols (with sizes) are kept so the instruction-fetch model can run real functions.
 *
 * Addresses: ExecAllocator speaks 48-bit numbers; relocation arithmetic uses signed 64-bit
 * values (see elf.ts); `toSigned`/`toVa48` convert at the edge.
 */
import { Buffer } from 'node:buffer';
import type { ExecmemType } from '../../arch/types.js';
import { assert } from '../../base/assert.js';
import { allocModuleSections, type ExecAllocator } from '../../policies/types.js';
import {
  ElfError,
  type ElfFile,
  findSection,
  parseElf,
  parseModinfo,
  SHF_ALLOC,
  SHN_ABS,
  SHN_COMMON,
  SHN_LIVEPATCH,
  SHN_LORESERVE,
  SHN_UNDEF,
  SHT_NOBITS,
  SHT_REL,
  SHT_RELA,
  STB_WEAK,
  STT_FUNC,
  sectionBytes,
  stripModuleSignature,
} from './elf.js';
import {
  layoutModule,
  MOD_MEM_TYPES,
  type ModMemType,
  ModuleFormatError,
  type ModuleLayout,
  memTypeIsInit,
} from './layout.js';
import { PercpuArea, PercpuError } from './percpu.js';
import {
  applyRelaSection,
  checkRelaSection,
  RELOC_TYPE_LIMIT,
  RelocError,
  type RelocTarget,
  relocTypeName,
} from './reloc.js';
import type { KernelExport, KernelSymbols } from './symbols.js';

const VA_SPAN = 2 ** 48;
const VA_HALF = 2 ** 47;

export function toSigned(va48: number): number {
  return va48 >= VA_HALF ? va48 - VA_SPAN : va48;
}

export function toVa48(signed: number): number {
  return signed < 0 ? signed + VA_SPAN : signed;
}

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
const MODVERSION_BYTES = 64; // struct modversion_info: unsigned long crc; char name[56]
const GPL_COMPATIBLE = new Set([
  'GPL',
  'GPL v2',
  'GPL and additional rights',
  'Dual BSD/GPL',
  'Dual MIT/GPL',
  'Dual MPL/GPL',
]);

export type ModuleLoadErrorCode = 'ENOEXEC' | 'ENOENT' | 'EEXIST' | 'ENOMEM' | 'EINVAL' | 'EBUSY';

export class ModuleLoadError extends Error {
  override name = 'ModuleLoadError';
  constructor(
    readonly code: ModuleLoadErrorCode,
    readonly moduleName: string,
    message: string,
    /** Symbols that could not be resolved (for ENOENT). */
    readonly unresolved: readonly string[] = [],
    /** For relocation failures: the kind (overflow, unknown-type, ...). */
    readonly relocKind: string | null = null,
  ) {
    super(`${code}: ${message}`);
  }
}

export interface ModuleMem {
  readonly memType: ModMemType;
  readonly execmemType: ExecmemType;
  /** 48-bit address as the allocator returned it. */
  readonly va: number;
  readonly sizeBytes: number;
}

export interface ModuleFunction {
  readonly name: string;
  /** 48-bit address. */
  readonly va: number;
  readonly sizeBytes: number;
  readonly init: boolean;
}

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
  readonly warnings: readonly string[];
}

export interface ModuleLoaderOptions {
  readonly allocator: ExecAllocator;
  /** Kernel exports with the KASLR offset already applied (KernelSymbols.withKaslrOffset). */
  readonly kernel: KernelSymbols;
  readonly percpu?: PercpuArea;
  /** Check rel32 reach on PC32/PLT32 (Linux does not; default true, see reloc.ts). */
  readonly checkPc32?: boolean;
}

export interface LoaderStats {
  readonly modulesLive: number;
  readonly modulesLoaded: number;
  readonly modulesFailed: number;
  readonly modulesUnloaded: number;
  readonly relocsByType: Record<string, number>;
  readonly liveBytesByMemType: Record<ModMemType, number>;
  readonly percpu: { usedBytes: number; reserveBytes: number; slices: number };
}

interface Prepared {
  readonly name: string;
  readonly elf: ElfFile;
  readonly layout: ModuleLayout;
  readonly modinfo: Map<string, string[]>;
  readonly symValues: Float64Array;
  readonly uses: Set<string>;
}

function firstInfo(modinfo: Map<string, string[]>, key: string): string | undefined {
  return modinfo.get(key)?.[0];
}

export class ModuleLoader {
  private readonly allocator: ExecAllocator;
  private readonly kernel: KernelSymbols;
  private readonly percpu: PercpuArea;
  private readonly checkPc32: boolean;
  private readonly modules = new Map<string, LoadedModule>();
  /**
   * Exports of live modules by name. Linux walks the module list; because duplicate exports are
   * refused at load (verify_exported_symbols()), a name has one owner and a map gives the same
   * answer without the walk.
   */
  private readonly moduleExports = new Map<string, { exp: KernelExport; owner: string }>();
  private readonly relocTotals = new Uint32Array(RELOC_TYPE_LIMIT);
  private failed = 0;
  private unloaded = 0;
  private loadedTotal = 0;

  constructor(opts: ModuleLoaderOptions) {
    this.allocator = opts.allocator;
    this.kernel = opts.kernel;
    this.percpu = opts.percpu ?? new PercpuArea(opts.kernel.perCpuEndBytes);
    this.checkPc32 = opts.checkPc32 ?? true;
  }

  get(name: string): LoadedModule | undefined {
    return this.modules.get(name);
  }

  list(): LoadedModule[] {
    return [...this.modules.values()];
  }

  /** Load a module file (bytes of a .ko). Throws ModuleLoadError; nothing changes on failure. */
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
      throw this.wrap(e, nameHint);
    }
  }

  /** Run "init": seal ro_after_init, free init memory (do_init_module()). */
  init(name: string): void {
    const mod = this.modules.get(name);
    if (!mod) throw new ModuleLoadError('ENOENT', name, `module ${name} is not loaded`);
    if (mod.state !== 'coming')
      throw new ModuleLoadError('EINVAL', name, `module ${name} is already initialised`);
    const rai = mod.mems.ro_after_init;
    if (rai) this.allocator.seal(rai.va);
    for (const t of MOD_MEM_TYPES) {
      const m = mod.mems[t];
      if (!m || !memTypeIsInit(t)) continue;
      this.allocator.free(m.va);
      delete mod.mems[t];
    }
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
    for (const t of MOD_MEM_TYPES) {
      const m = mod.mems[t];
      if (m) this.allocator.free(m.va);
    }
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
      liveBytesByMemType,
      percpu: this.percpu.usage(),
    };
  }

  private wrap(e: unknown, name: string): ModuleLoadError {
    if (e instanceof ModuleLoadError) return e;
    if (e instanceof ElfError) return new ModuleLoadError('ENOEXEC', name, `${name}: ${e.message}`);
    if (e instanceof ModuleFormatError) return new ModuleLoadError('ENOEXEC', name, e.message);
    if (e instanceof RelocError)
      return new ModuleLoadError('ENOEXEC', name, `${name}: ${e.message}`, [], e.kind);
    if (e instanceof PercpuError) return new ModuleLoadError('ENOMEM', name, e.message);
    // A bug (AssertionError, TypeError, RangeError) must surface as itself.
    if (
      !(e instanceof Error) ||
      e instanceof TypeError ||
      e instanceof RangeError ||
      e.name === 'AssertionError'
    )
      throw e;
    // Anything else came from the allocator's write/finalize path (its typed errors).
    return new ModuleLoadError('ENOMEM', name, `${name}: allocator refused: ${e.message}`);
  }

  private prepare(fileBytes: Uint8Array, nameHint: string): Prepared {
    const { bytes } = stripModuleSignature(fileBytes);
    const elf = parseElf(bytes);
    const modinfo = parseModinfo(elf);
    const name = firstInfo(modinfo, 'name') ?? nameHint;
    const thisMod = elf.sections.filter((s) => s.name === '.gnu.linkonce.this_module');
    if (thisMod.length !== 1 || thisMod[0].type === SHT_NOBITS || (thisMod[0].flags & SHF_ALLOC) === 0) {
      throw new ModuleLoadError(
        'ENOEXEC',
        name,
        `module ${name}: Exactly one allocated .gnu.linkonce.this_module section must exist.`,
      );
    }
    if (this.modules.has(name)) throw new ModuleLoadError('EEXIST', name, `module ${name} is already loaded`);
    const layout = layoutModule(elf, name);
    const uses = new Set<string>();
    const symValues = this.resolveSymbols(elf, name, modinfo, uses);
    return { name, elf, layout, modinfo, symValues, uses };
  }

  private findExport(name: string): { exp: KernelExport; owner: string | null; value: number } | undefined {
    const k = this.kernel.get(name);
    if (k) return { exp: k, owner: null, value: this.kernel.runtimeValue(k) };
    const m = this.moduleExports.get(name);
    return m ? { exp: m.exp, owner: m.owner, value: m.exp.value } : undefined;
  }

  private readVersions(elf: ElfFile): Map<string, number> | null {
    const s = findSection(elf, '__versions');
    if (!s || s.type === SHT_NOBITS) return null;
    if (s.sizeBytes % MODVERSION_BYTES !== 0)
      throw new ElfError('ESHDR', `__versions size ${s.sizeBytes} is not a multiple of ${MODVERSION_BYTES}`);
    const out = new Map<string, number>();
    const raw = sectionBytes(elf, s);
    for (let off = 0; off < raw.length; off += MODVERSION_BYTES) {
      const crc = elf.view.getUint32(s.offset + off, true);
      let end = raw.indexOf(0, off + 8);
      if (end < 0 || end > off + MODVERSION_BYTES) end = off + MODVERSION_BYTES;
      out.set(Buffer.from(raw.buffer, raw.byteOffset + off + 8, end - off - 8).toString('latin1'), crc);
    }
    return out;
  }

  private resolveSymbols(
    elf: ElfFile,
    name: string,
    modinfo: Map<string, string[]>,
    uses: Set<string>,
  ): Float64Array {
    const license = firstInfo(modinfo, 'license') ?? 'unspecified';
    const gplOk = GPL_COMPATIBLE.has(license);
    const imports = new Set(modinfo.get('import_ns') ?? []);
    const versions = this.readVersions(elf);
    const values = new Float64Array(elf.symbols.length);
    const unresolved: string[] = [];
    for (const sym of elf.symbols) {
      if (sym.index === 0) continue;
      if (sym.shndx === SHN_COMMON) {
        throw new ModuleLoadError(
          'ENOEXEC',
          name,
          `${name}: please compile with -fno-common (common symbol ${sym.name})`,
        );
      }
      if (sym.shndx === SHN_LIVEPATCH)
        throw new ModuleLoadError('ENOEXEC', name, `${name}: livepatch symbol ${sym.name} is not supported`);
      if (sym.shndx !== SHN_UNDEF || sym.name === '') continue;
      const found = this.findExport(sym.name);
      if (!found || (found.exp.gplOnly && !gplOk)) {
        if (sym.bind === STB_WEAK) values[sym.index] = 0;
        else unresolved.push(sym.name);
        continue;
      }
      const ns = found.exp.namespace;
      if (ns && !imports.has(ns)) {
        throw new ModuleLoadError(
          'EINVAL',
          name,
          `${name}: module uses symbol (${sym.name}) from namespace ${ns}, but does not import it.`,
        );
      }
      const want = versions?.get(sym.name);
      if (want !== undefined && found.exp.crc !== null && want !== found.exp.crc) {
        throw new ModuleLoadError('EINVAL', name, `${name}: disagrees about version of symbol ${sym.name}`);
      }
      values[sym.index] = found.value;
      if (found.owner) uses.add(found.owner);
    }
    if (unresolved.length > 0) {
      const shown = unresolved.slice(0, 5).map((s) => `Unknown symbol ${s} (err -2)`);
      const more = unresolved.length > 5 ? ` (+${unresolved.length - 5} more)` : '';
      throw new ModuleLoadError('ENOENT', name, `${name}: ${shown.join('; ')}${more}`, unresolved);
    }
    return values;
  }

  /** move_module's allocation step: every non-empty region as one batch (all or nothing). */
  private allocate(prep: Prepared, percpuOffset: number | null): Partial<Record<ModMemType, ModuleMem>> {
    const types = MOD_MEM_TYPES.filter((t) => prep.layout.sizeBytes[t] > 0);
    const sections = types.map((t) => ({
      type: MEM_TYPE_EXECMEM[t],
      sizeBytes: prep.layout.sizeBytes[t],
      init: t.startsWith('init_'),
      alignBytes: Math.min(Math.max(prep.layout.alignBytes[t], 1), MAX_ALLOC_ALIGN_BYTES),
    }));
    let vas: number[];
    try {
      vas = allocModuleSections(this.allocator, sections);
    } catch (e) {
      if (percpuOffset !== null) this.percpu.free(percpuOffset);
      const msg = e instanceof Error ? e.message : String(e);
      throw new ModuleLoadError(
        'ENOMEM',
        prep.name,
        `${prep.name}: module memory allocation failed (${this.allocator.name}): ${msg}`,
      );
    }
    const mems: Partial<Record<ModMemType, ModuleMem>> = {};
    types.forEach((t, k) => {
      mems[t] = { memType: t, execmemType: sections[k].type, va: vas[k], sizeBytes: sections[k].sizeBytes };
    });
    return mems;
  }

  private release(mems: Partial<Record<ModMemType, ModuleMem>>, percpuOffset: number | null): void {
    for (const t of MOD_MEM_TYPES) {
      const m = mems[t];
      if (m) this.allocator.free(m.va);
    }
    if (percpuOffset !== null) this.percpu.free(percpuOffset);
  }

  private place(prep: Prepared): LoadedModule {
    const { elf, layout, name } = prep;
    const pcpu = layout.pcpuIndex ? elf.sections[layout.pcpuIndex] : null;
    let percpuOffset: number | null = null;
    const warnings: string[] = [];
    if (pcpu && pcpu.sizeBytes > 0) {
      const r = this.percpu.alloc(name, pcpu.sizeBytes, pcpu.alignBytes);
      percpuOffset = r.offset;
      if (r.warning) warnings.push(r.warning);
    }
    const mems = this.allocate(prep, percpuOffset);
    try {
      const images = this.buildImages(prep, mems);
      const counts = new Uint32Array(RELOC_TYPE_LIMIT);
      this.finishSymbols(prep, mems, percpuOffset);
      this.relocate(prep, mems, images, counts);
      const exports = this.readExports(prep, mems, images);
      this.publish(mems, images);
      for (let t = 0; t < RELOC_TYPE_LIMIT; t++) this.relocTotals[t] += counts[t];
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
        functions: this.functions(prep, mems),
        exports,
        percpuOffset,
        percpuBytes: pcpu?.sizeBytes ?? 0,
        depends,
        uses: prep.uses,
        relocCounts,
        warnings,
      };
    } catch (e) {
      this.release(mems, percpuOffset);
      throw e;
    }
  }

  /** Private copies of each memory type with section contents in place (NOBITS stay zero). */
  private buildImages(
    prep: Prepared,
    mems: Partial<Record<ModMemType, ModuleMem>>,
  ): Partial<Record<ModMemType, Uint8Array>> {
    const images: Partial<Record<ModMemType, Uint8Array>> = {};
    for (const t of MOD_MEM_TYPES) if (mems[t]) images[t] = new Uint8Array(mems[t].sizeBytes);
    for (const s of prep.elf.sections) {
      const p = prep.layout.placement[s.index];
      if (!p || s.type === SHT_NOBITS || s.sizeBytes === 0) continue;
      images[p.memType]!.set(sectionBytes(prep.elf, s), p.offset);
    }
    return images;
  }

  /** Runtime address of a placed section (signed), or NaN when not loaded. */
  private sectionAddr(
    prep: Prepared,
    mems: Partial<Record<ModMemType, ModuleMem>>,
    shndx: number,
    percpuOffset: number | null,
  ): number {
    if (shndx === prep.layout.pcpuIndex && shndx !== 0) return percpuOffset ?? Number.NaN;
    const p = prep.layout.placement[shndx];
    if (!p) return Number.NaN;
    const m = mems[p.memType];
    // An empty memory type is never allocated; Linux leaves its base NULL, so its (empty)
    // sections resolve to 0 + offset there too.
    return (m ? toSigned(m.va) : 0) + p.offset;
  }

  /** Defined symbols get their runtime values (simplify_symbols() default case). */
  private finishSymbols(
    prep: Prepared,
    mems: Partial<Record<ModMemType, ModuleMem>>,
    percpuOffset: number | null,
  ): void {
    for (const sym of prep.elf.symbols) {
      if (sym.index === 0 || sym.shndx === SHN_UNDEF) continue;
      if (sym.shndx === SHN_ABS) prep.symValues[sym.index] = sym.value;
      else if (sym.shndx < SHN_LORESERVE)
        prep.symValues[sym.index] = this.sectionAddr(prep, mems, sym.shndx, percpuOffset) + sym.value;
      else prep.symValues[sym.index] = Number.NaN;
    }
  }

  private relocate(
    prep: Prepared,
    mems: Partial<Record<ModMemType, ModuleMem>>,
    images: Partial<Record<ModMemType, Uint8Array>>,
    counts: Uint32Array,
  ): void {
    const { elf, layout } = prep;
    for (const s of elf.sections) {
      if (s.type !== SHT_RELA && s.type !== SHT_REL) continue;
      if (s.info >= elf.sections.length) continue; // "Not a valid relocation section?"
      if ((layout.flags[s.info] & SHF_ALLOC) === 0) continue; // non-allocated target (incl. per-CPU)
      if (s.type === SHT_REL)
        throw new ModuleLoadError('ENOEXEC', prep.name, `module ${prep.name}: REL relocation unsupported`);
      const p = layout.placement[s.info];
      if (!p) continue;
      checkRelaSection(elf, s);
      const image = images[p.memType]!;
      const target: RelocTarget = {
        image,
        view: new DataView(image.buffer, image.byteOffset, image.byteLength),
        imageOffset: p.offset,
        sectionBytes: elf.sections[s.info].sizeBytes,
        sectionAddr: toSigned(mems[p.memType]!.va) + p.offset,
      };
      applyRelaSection(elf, s, target, prep.symValues, counts, {
        moduleName: prep.name,
        checkPc32: this.checkPc32,
      });
    }
  }

  /** Locate a runtime address inside the images: [memType, offset] or undefined. */
  private locate(
    mems: Partial<Record<ModMemType, ModuleMem>>,
    addr: number,
  ): [ModMemType, number] | undefined {
    for (const t of MOD_MEM_TYPES) {
      const m = mems[t];
      if (!m) continue;
      const off = addr - toSigned(m.va);
      if (off >= 0 && off < m.sizeBytes) return [t, off];
    }
    return undefined;
  }

  private cstringAt(
    mems: Partial<Record<ModMemType, ModuleMem>>,
    images: Partial<Record<ModMemType, Uint8Array>>,
    addr: number,
    what: string,
  ): string {
    const loc = this.locate(mems, addr);
    if (!loc) throw new ElfError('ESTRTAB', `${what}: address outside the module`);
    const img = images[loc[0]]!;
    const nul = img.indexOf(0, loc[1]);
    if (nul < 0) throw new ElfError('ESTRTAB', `${what}: string not NUL-terminated`);
    return Buffer.from(img.buffer, img.byteOffset + loc[1], nul - loc[1]).toString('latin1');
  }

  /** The module's exports, read from its relocated __ksymtab / __ksymtab_gpl (struct kernel_symbol, prel32). */
  private readExports(
    prep: Prepared,
    mems: Partial<Record<ModMemType, ModuleMem>>,
    images: Partial<Record<ModMemType, Uint8Array>>,
  ): Map<string, KernelExport> {
    const out = new Map<string, KernelExport>();
    for (const [tab, crcTab, gplOnly] of [
      ['__ksymtab', '__kcrctab', false],
      ['__ksymtab_gpl', '__kcrctab_gpl', true],
    ] as const) {
      const s = findSection(prep.elf, tab);
      const p = s ? prep.layout.placement[s.index] : null;
      if (!s || !p) continue;
      if (s.sizeBytes % 12 !== 0)
        throw new ElfError('ESHDR', `${tab} size ${s.sizeBytes} is not a multiple of 12`);
      const crcs = findSection(prep.elf, crcTab);
      const n = s.sizeBytes / 12;
      if (crcs && crcs.sizeBytes < n * 4) throw new ElfError('ESHDR', `${crcTab} is shorter than ${tab}`);
      const img = images[p.memType]!;
      const view = new DataView(img.buffer, img.byteOffset, img.byteLength);
      const base = toSigned(mems[p.memType]!.va) + p.offset;
      for (let i = 0; i < n; i++) {
        const at = base + i * 12;
        const o = p.offset + i * 12;
        const value = at + view.getInt32(o, true);
        const expName = this.cstringAt(
          mems,
          images,
          at + 4 + view.getInt32(o + 4, true),
          `${tab}[${i}] name`,
        );
        const nsOff = view.getInt32(o + 8, true);
        const namespace =
          nsOff === 0 ? '' : this.cstringAt(mems, images, at + 8 + nsOff, `${tab}[${i}] namespace`);
        const dup = this.findExport(expName);
        if (dup || out.has(expName)) {
          throw new ModuleLoadError(
            'ENOEXEC',
            prep.name,
            `${prep.name}: exports duplicate symbol ${expName} (owned by ${dup?.owner ?? 'kernel'})`,
          );
        }
        const crc =
          crcs && crcs.type !== SHT_NOBITS ? prep.elf.view.getUint32(crcs.offset + i * 4, true) : null;
        out.set(expName, { name: expName, value, gplOnly, namespace, crc, percpu: false });
      }
    }
    return out;
  }

  /** Write every image through the allocator and finalize it (text/rodata become RO(X) here). */
  private publish(
    mems: Partial<Record<ModMemType, ModuleMem>>,
    images: Partial<Record<ModMemType, Uint8Array>>,
  ): void {
    for (const t of MOD_MEM_TYPES) {
      const m = mems[t];
      if (!m) continue;
      this.allocator.write(m.va, images[t]!);
      this.allocator.finalize(m.va);
    }
  }

  private functions(prep: Prepared, mems: Partial<Record<ModMemType, ModuleMem>>): ModuleFunction[] {
    const out: ModuleFunction[] = [];
    for (const sym of prep.elf.symbols) {
      if (
        sym.type !== STT_FUNC ||
        sym.sizeBytes === 0 ||
        sym.shndx === SHN_UNDEF ||
        sym.shndx >= SHN_LORESERVE
      )
        continue;
      const p = prep.layout.placement[sym.shndx];
      if (!p || (p.memType !== 'text' && p.memType !== 'init_text')) continue;
      // A symbol claiming to extend past its section is not a function we can run: skip it.
      if (!(sym.value >= 0 && sym.value + sym.sizeBytes <= prep.elf.sections[sym.shndx].sizeBytes)) continue;
      const va = mems[p.memType]!.va + p.offset + sym.value;
      assert(
        va + sym.sizeBytes <= mems[p.memType]!.va + mems[p.memType]!.sizeBytes,
        'function inside its memory',
      );
      out.push({ name: sym.name, va, sizeBytes: sym.sizeBytes, init: p.memType === 'init_text' });
    }
    return out;
  }
}
