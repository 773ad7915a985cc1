/**
 * Module memory layout, as Linux's kernel/module/main.c layout_and_allocate() /
 * layout_sections() / layout_symtab() compute it.
 *
 * Why this shape: the allocator is asked for one region per memory type per module, exactly as
 * the kernel's `struct module_memory mem[MOD_MEM_NUM_TYPES]` (6.4+) does, so every design is
 * compared on the requests a real loader makes. The rules, in order:
 *
 * - The per-CPU section (.data..percpu) loses SHF_ALLOC: it gets a per-CPU reservation instead
 *   (percpu_modalloc(), see percpu.ts).
 * - `.data..ro_after_init` and `__jump_table` get SHF_RO_AFTER_INIT (layout_and_allocate() in
 *   6.1; newer kernels moved the list to strict_rwx.c module_mark_ro_after_init()).
 * - A section that is both writable and executable is refused (module_enforce_rwx_sections():
 *   "Module %s: section %s is both writable and executable" under STRICT_MODULE_RWX).
 * - Five masks in order — {EXEC|ALLOC}, {ALLOC, not WRITE}, {RO_AFTER_INIT|ALLOC}, {WRITE|ALLOC},
 *   {ALLOC} — map to TEXT, RODATA, RO_AFTER_INIT, DATA, DATA for core sections and INIT_TEXT,
 *   INIT_RODATA, (invalid), INIT_DATA, INIT_DATA for sections whose name starts with ".init"
 *   (module_init_layout_section(); exit sections stay core because CONFIG_MODULE_UNLOAD=y).
 *   Each section goes at ALIGN(size, sh_addralign) of its type (module_get_offset_and_type()).
 * - layout_symtab() (CONFIG_KALLSYMS): the full symbol and string tables plus a
 *   `struct mod_kallsyms` and a type table go to INIT_DATA; the "core" symbols (defined in an
 *   allocated non-init section, CONFIG_KALLSYMS_ALL=y on Debian) with their names and types go
 *   to DATA. Their byte counts are exact; their contents are not written (modelled).
 *
 * ARCH_SHF_SMALL is 0 on x86, so the last mask only catches what the others did not. Sizes are
 * not rounded to pages here: rounding is the allocator's business (that is the point).
 */
import { alignUp } from '../../base/addr.js';
import {
  type ElfFile,
  type ElfSection,
  findSection,
  SHF_ALLOC,
  SHF_EXECINSTR,
  SHF_RO_AFTER_INIT,
  SHF_WRITE,
  SHN_LORESERVE,
  SHN_UNDEF,
  SYM_BYTES,
} from './elf.js';

export const MOD_MEM_TYPES = [
  'text',
  'data',
  'rodata',
  'ro_after_init',
  'init_text',
  'init_data',
  'init_rodata',
] as const;
export type ModMemType = (typeof MOD_MEM_TYPES)[number];

export function memTypeIsInit(t: ModMemType): boolean {
  return t === 'init_text' || t === 'init_data' || t === 'init_rodata';
}

export class ModuleFormatError extends Error {
  override name = 'ModuleFormatError';
  constructor(
    readonly code: 'ENOEXEC',
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

const RO_AFTER_INIT_SECTIONS = ['.data..ro_after_init', '__jump_table'];
const MASKS: readonly (readonly [number, number])[] = [
  [SHF_EXECINSTR | SHF_ALLOC, 0],
  [SHF_ALLOC, SHF_WRITE],
  [SHF_RO_AFTER_INIT | SHF_ALLOC, 0],
  [SHF_WRITE | SHF_ALLOC, 0],
  [SHF_ALLOC, 0],
];
const CORE_TYPES: readonly ModMemType[] = ['text', 'rodata', 'ro_after_init', 'data', 'data'];
const INIT_TYPES: readonly (ModMemType | null)[] = [
  'init_text',
  'init_rodata',
  null,
  'init_data',
  'init_data',
];
/** sizeof(struct mod_kallsyms) on x86-64: symtab pointer, num_symtab, strtab, typetab (padded). */
const MOD_KALLSYMS_BYTES = 32;

export interface SectionPlacement {
  readonly memType: ModMemType;
  readonly offset: number;
}

export interface ModuleLayout {
  /** Per section index: where it goes, or null when it is not loaded. */
  readonly placement: readonly (SectionPlacement | null)[];
  readonly sizeBytes: Readonly<Record<ModMemType, number>>;
  /** Largest section alignment per type (the allocation must honour it). */
  readonly alignBytes: Readonly<Record<ModMemType, number>>;
  /** Index of the per-CPU section (0 if none). */
  readonly pcpuIndex: number;
  /** Sections' effective flags after the loader's adjustments. */
  readonly flags: readonly number[];
  /** Bytes that layout_symtab() appends to data / init_data (included in sizeBytes; zero-filled). */
  readonly kallsymsCoreBytes: number;
  readonly kallsymsInitBytes: number;
}

function emptyRecord(): Record<ModMemType, number> {
  return { text: 0, data: 0, rodata: 0, ro_after_init: 0, init_text: 0, init_data: 0, init_rodata: 0 };
}

function effectiveFlags(elf: ElfFile, pcpuIndex: number): number[] {
  const flags = elf.sections.map((s) => s.flags);
  if (pcpuIndex) flags[pcpuIndex] &= ~SHF_ALLOC;
  for (const name of RO_AFTER_INIT_SECTIONS) {
    const s = findSection(elf, name);
    if (s) flags[s.index] |= SHF_RO_AFTER_INIT;
  }
  return flags;
}

function enforceRwx(elf: ElfFile, moduleName: string): void {
  for (const s of elf.sections) {
    if ((s.flags & (SHF_WRITE | SHF_EXECINSTR)) === (SHF_WRITE | SHF_EXECINSTR)) {
      throw new ModuleFormatError(
        'ENOEXEC',
        `Module ${moduleName}: section ${s.name} is both writable and executable`,
      );
    }
  }
}

function place(
  size: Record<ModMemType, number>,
  align: Record<ModMemType, number>,
  t: ModMemType,
  s: ElfSection,
): number {
  const a = s.alignBytes || 1;
  const offset = alignUp(size[t], a);
  size[t] = offset + s.sizeBytes;
  if (a > align[t]) align[t] = a;
  return offset;
}

/** Is this symbol kept in the core kallsyms table (is_core_symbol() with KALLSYMS_ALL)? */
function isCoreSymbol(
  elf: ElfFile,
  flags: readonly number[],
  placement: readonly (SectionPlacement | null)[],
  i: number,
  pcpuIndex: number,
): boolean {
  const sym = elf.symbols[i];
  if (
    sym.shndx === SHN_UNDEF ||
    sym.shndx >= elf.sections.length ||
    sym.shndx >= SHN_LORESERVE ||
    sym.name === ''
  )
    return false;
  if (pcpuIndex && sym.shndx === pcpuIndex) return true;
  if ((flags[sym.shndx] & SHF_ALLOC) === 0) return false;
  const p = placement[sym.shndx];
  return p !== null && p !== undefined && !p.memType.startsWith('init');
}

function layoutSymtab(
  elf: ElfFile,
  flags: readonly number[],
  placement: readonly (SectionPlacement | null)[],
  pcpuIndex: number,
) {
  if (elf.symtabIndex === 0) return { core: 0, init: 0 };
  const symtab = elf.sections[elf.symtabIndex];
  const strtab = elf.sections[symtab.link];
  let init = alignUp(0, symtab.alignBytes || 1) + symtab.sizeBytes;
  init = alignUp(init, strtab.alignBytes || 1) + strtab.sizeBytes;
  init = alignUp(init, 8) + MOD_KALLSYMS_BYTES + elf.symbols.length;
  let ndst = 0;
  let strBytes = 0;
  for (let i = 0; i < elf.symbols.length; i++) {
    if (i === 0 || isCoreSymbol(elf, flags, placement, i, pcpuIndex)) {
      ndst++;
      strBytes += elf.symbols[i].name.length + 1;
    }
  }
  return { core: ndst * SYM_BYTES + strBytes + ndst, init };
}

/** Lay out a parsed module. Throws ModuleFormatError for what Linux refuses here. */
export function layoutModule(elf: ElfFile, moduleName: string): ModuleLayout {
  enforceRwx(elf, moduleName);
  const pcpu = findSection(elf, '.data..percpu');
  const pcpuIndex = pcpu ? pcpu.index : 0;
  const flags = effectiveFlags(elf, pcpuIndex);
  const sizeBytes = emptyRecord();
  const alignBytes = emptyRecord();
  const placement: (SectionPlacement | null)[] = elf.sections.map(() => null);
  for (const isInit of [false, true]) {
    for (let m = 0; m < MASKS.length; m++) {
      const [want, reject] = MASKS[m];
      const memType = isInit ? INIT_TYPES[m] : CORE_TYPES[m];
      for (const s of elf.sections) {
        const f = flags[s.index];
        if (s.index === 0 || (f & want) !== want || (f & reject) !== 0 || placement[s.index] !== null)
          continue;
        if (s.name.startsWith('.init') !== isInit) continue;
        if (memType === null) continue; // WARN_ON_ONCE(type == MOD_INVALID) in Linux: left unplaced
        placement[s.index] = { memType, offset: place(sizeBytes, alignBytes, memType, s) };
      }
    }
  }
  const ks = layoutSymtab(elf, flags, placement, pcpuIndex);
  if (ks.core > 0) {
    sizeBytes.data = alignUp(sizeBytes.data, 8) + ks.core;
    alignBytes.data = Math.max(alignBytes.data, 8);
  }
  if (ks.init > 0) {
    sizeBytes.init_data = alignUp(sizeBytes.init_data, 8) + ks.init;
    alignBytes.init_data = Math.max(alignBytes.init_data, 8);
  }
  return {
    placement,
    sizeBytes,
    alignBytes,
    pcpuIndex,
    flags,
    kallsymsCoreBytes: ks.core,
    kallsymsInitBytes: ks.init,
  };
}
