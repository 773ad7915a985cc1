/**
 * A module's memory images: laid-out section contents, symbol values, relocations, and what
 * is read back from the relocated images (exports, runnable functions).
 *
 * Why separate from the loader's sequencing: these are pure functions of the parsed file, its
 * layout and where each memory type landed, so the loader can run the address-independent half
 * (`checkRelocations`) before it allocates anything and the rest after. They follow 6.13's
 * "writable copy" design (research notes linux-execmem.md): relocations are applied to private,
 * writable copies, which the loader then writes through the allocator in one go.
 *
 * Addresses: ExecAllocator speaks 48-bit numbers; relocation arithmetic uses signed 64-bit
 * values (see elf.ts); `toSigned`/`toVa48` convert at the edge.
 */
import type { ExecmemType } from '../../arch/types.js';
import { assert } from '../../base/assert.js';
import {
  ElfError,
  type ElfFile,
  type ElfSection,
  findSection,
  SHF_ALLOC,
  SHN_ABS,
  SHN_LORESERVE,
  SHN_UNDEF,
  SHT_NOBITS,
  SHT_REL,
  SHT_RELA,
  STT_FUNC,
  sectionBytes,
} from './elf.js';
import type { ModMemType, ModuleLayout } from './layout.js';
import { MOD_MEM_TYPES } from './layout.js';
import { ModuleLoadError } from './load-errors.js';
import { type ParseStats, SYMBOL_NAME_LIMIT } from './names.js';
import { type Arm64Plts, PltSection } from './plt-arm64.js';
import { applyRelaSection, checkRelaEntries, checkRelaSection, type RelocTarget } from './reloc.js';
import { applyRelaSectionArm64, checkRelaEntriesArm64 } from './reloc-arm64.js';
import type { ExportLookup } from './resolve.js';
import type { KernelExport } from './symbols.js';

const VA_SPAN = 2 ** 48;
const VA_HALF = 2 ** 47;
/** struct kernel_symbol with CONFIG_HAVE_ARCH_PREL32_RELOCATIONS: three int32 offsets. */
const KSYMTAB_ENTRY_BYTES = 12;

export function toSigned(va48: number): number {
  return va48 >= VA_HALF ? va48 - VA_SPAN : va48;
}

export function toVa48(signed: number): number {
  return signed < 0 ? signed + VA_SPAN : signed;
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

export type Mems = Partial<Record<ModMemType, ModuleMem>>;
export type Images = Partial<Record<ModMemType, Uint8Array>>;

/** What prepare() learnt about a module before anything was allocated. */
export interface Prepared {
  readonly name: string;
  readonly elf: ElfFile;
  readonly layout: ModuleLayout;
  readonly modinfo: Map<string, string[]>;
  /** Values of the undefined symbols (resolve.ts); defined ones are filled in per placement. */
  readonly symValues: Float64Array;
  readonly uses: Set<string>;
  /** arm64: the PLT sections module_frob_arch_sections() sized (plt-arm64.ts); null on x86. */
  readonly plts: Arm64Plts | null;
}

/** Private copies of each memory type with section contents in place (NOBITS stay zero). */
export function buildImages(prep: Prepared, mems: Mems): Images {
  const images: Images = {};
  for (const t of MOD_MEM_TYPES) if (mems[t]) images[t] = new Uint8Array(mems[t].sizeBytes);
  for (const s of prep.elf.sections) {
    const p = prep.layout.placement[s.index];
    if (!p || s.type === SHT_NOBITS || s.sizeBytes === 0) continue;
    images[p.memType]!.set(sectionBytes(prep.elf, s), p.offset);
  }
  return images;
}

/** Where a section starts at run time (signed), or NaN when it is not loaded. */
export type SectionAddr = (shndx: number) => number;

/** Section addresses once placed: Linux leaves an empty memory type's base NULL, so 0 + offset. */
export function placedSectionAddr(prep: Prepared, mems: Mems, percpuOffset: number | null): SectionAddr {
  return (shndx) => {
    if (shndx === prep.layout.pcpuIndex && shndx !== 0) return percpuOffset ?? Number.NaN;
    const p = prep.layout.placement[shndx];
    if (!p) return Number.NaN;
    const m = mems[p.memType];
    return (m ? toSigned(m.va) : 0) + p.offset;
  };
}

/** Section addresses before anything is placed: every base 0 (only NaN-ness matters then). */
function provisionalSectionAddr(prep: Prepared): SectionAddr {
  // As placedSectionAddr: an empty per-CPU section gets no reservation, so no address.
  const pcpuBytes = prep.layout.pcpuIndex ? prep.elf.sections[prep.layout.pcpuIndex].sizeBytes : 0;
  return (shndx) => {
    if (shndx === prep.layout.pcpuIndex && shndx !== 0) return pcpuBytes > 0 ? 0 : Number.NaN;
    const p = prep.layout.placement[shndx];
    return p ? p.offset : Number.NaN;
  };
}

/** Every symbol's value: resolved ones as given, defined ones at their section (simplify_symbols()). */
export function symbolValues(prep: Prepared, addrOf: SectionAddr): Float64Array {
  const values = prep.symValues.slice();
  for (const sym of prep.elf.symbols) {
    if (sym.index === 0 || sym.shndx === SHN_UNDEF) continue;
    if (sym.shndx === SHN_ABS) values[sym.index] = sym.value;
    else if (sym.shndx < SHN_LORESERVE) values[sym.index] = addrOf(sym.shndx) + sym.value;
    else values[sym.index] = Number.NaN;
  }
  return values;
}

/** The RELA sections apply_relocations() applies, with their target section index. */
function relaSectionsToApply(prep: Prepared): { rela: ElfSection; target: number }[] {
  const { elf, layout } = prep;
  const out: { rela: ElfSection; target: number }[] = [];
  for (const s of elf.sections) {
    if (s.type !== SHT_RELA && s.type !== SHT_REL) continue;
    if (s.info >= elf.sections.length) continue; // "Not a valid relocation section?"
    if ((layout.flags[s.info] & SHF_ALLOC) === 0) continue; // non-allocated target (incl. per-CPU)
    if (s.type === SHT_REL)
      throw new ModuleLoadError(
        'ENOEXEC',
        prep.name,
        `module ${prep.name}: REL relocation unsupported`,
        [],
        null,
        'relocation',
      );
    if (!layout.placement[s.info]) continue;
    out.push({ rela: s, target: s.info });
  }
  return out;
}

/**
 * Everything about the relocations that does not depend on addresses, checked before the
 * loader allocates: the section headers, every entry (reloc.ts checkRelaEntries), and the
 * total: applied RELA sections may not hold more bytes than the file, which a well-formed file
 * (sections do not overlap) never does, so overlapping sections cannot make the work exceed
 * what the file size allows.
 */
export function checkRelocations(prep: Prepared, stats?: ParseStats): void {
  const { elf } = prep;
  const list = relaSectionsToApply(prep);
  let totalBytes = 0;
  for (const { rela } of list) totalBytes += rela.sizeBytes;
  if (totalBytes > elf.bytes.length) {
    throw new ElfError(
      'ERELA',
      `the applied relocation sections hold ${totalBytes} bytes, more than the ${elf.bytes.length}-byte file: sections overlap`,
    );
  }
  const provisional = symbolValues(prep, provisionalSectionAddr(prep));
  for (const { rela, target } of list) {
    checkRelaSection(elf, rela);
    if (prep.plts)
      checkRelaEntriesArm64(elf, rela, elf.sections[target].sizeBytes, provisional, prep.name, stats);
    else
      checkRelaEntries(
        elf,
        rela,
        elf.sections[target].sizeBytes,
        provisional,
        { moduleName: prep.name },
        stats,
      );
  }
}

/** The arm64 PLT sections of a placed module, ready to be filled (null where there is none). */
function pltSections(
  prep: Prepared,
  mems: Mems,
  images: Images,
): { core: PltSection | null; init: PltSection | null } {
  const make = (index: number, max: number): PltSection | null => {
    const p = prep.layout.placement[index];
    if (!p) return null;
    const img = images[p.memType]!;
    const view = new DataView(img.buffer, img.byteOffset, img.byteLength);
    return new PltSection(toSigned(mems[p.memType]!.va) + p.offset, max, view, p.offset);
  };
  const plts = prep.plts!;
  return { core: make(plts.coreIndex, plts.coreMaxEntries), init: make(plts.initIndex, plts.initMaxEntries) };
}

/**
 * apply_relocations(): every applied RELA section into the images. Returns the PLT entries
 * emitted (arm64; 0 on x86).
 */
export function relocate(
  prep: Prepared,
  mems: Mems,
  images: Images,
  symValues: Float64Array,
  counts: Uint32Array,
  opts: { checkPc32: boolean; stats?: ParseStats },
): number {
  const plt = prep.plts ? pltSections(prep, mems, images) : null;
  for (const { rela, target: info } of relaSectionsToApply(prep)) {
    const p = prep.layout.placement[info]!;
    checkRelaSection(prep.elf, rela);
    const image = images[p.memType]!;
    const target: RelocTarget = {
      image,
      view: new DataView(image.buffer, image.byteOffset, image.byteLength),
      imageOffset: p.offset,
      sectionBytes: prep.elf.sections[info].sizeBytes,
      sectionAddr: toSigned(mems[p.memType]!.va) + p.offset,
    };
    if (plt) {
      const init = p.memType.startsWith('init');
      applyRelaSectionArm64(
        prep.elf,
        rela,
        target,
        prep.elf.sections[info].name,
        symValues,
        counts,
        {
          moduleName: prep.name,
          initTarget: init,
          order: prep.plts!.order.get(rela.index),
          emitPlt: (_loc, val, inInit) => (inInit ? plt.init : plt.core)?.emit(val) ?? 0,
        },
        opts.stats,
      );
      continue;
    }
    applyRelaSection(
      prep.elf,
      rela,
      target,
      symValues,
      counts,
      { moduleName: prep.name, checkPc32: opts.checkPc32, targetName: prep.elf.sections[info].name },
      opts.stats,
    );
  }
  return plt ? (plt.core?.numEntries ?? 0) + (plt.init?.numEntries ?? 0) : 0;
}

/** Locate a runtime address inside the images: [memType, offset] or undefined. */
function locate(mems: Mems, addr: number): [ModMemType, number] | undefined {
  for (const t of MOD_MEM_TYPES) {
    const m = mems[t];
    if (!m) continue;
    const off = addr - toSigned(m.va);
    if (off >= 0 && off < m.sizeBytes) return [t, off];
  }
  return undefined;
}

function stringAt(
  prep: Prepared,
  mems: Mems,
  images: Images,
  addr: number,
  what: string,
  symbolName: boolean,
): string {
  const loc = locate(mems, addr);
  if (!loc) throw new ElfError('ESTRTAB', `${what}: address outside the module`);
  const img = images[loc[0]]!;
  const limit = symbolName ? SYMBOL_NAME_LIMIT : undefined;
  return prep.elf.names.read(img, loc[1], img.length, `${what} in module memory ${loc[0]}`, limit);
}

/**
 * The module's exports, read from its relocated __ksymtab / __ksymtab_gpl (struct
 * kernel_symbol, prel32), refusing names already exported (verify_exported_symbols()).
 */
export function readExports(
  prep: Prepared,
  mems: Mems,
  images: Images,
  findExport: ExportLookup,
): Map<string, KernelExport> {
  const out = new Map<string, KernelExport>();
  for (const [tab, crcTab, gplOnly] of [
    ['__ksymtab', '__kcrctab', false],
    ['__ksymtab_gpl', '__kcrctab_gpl', true],
  ] as const) {
    const s = findSection(prep.elf, tab);
    const p = s ? prep.layout.placement[s.index] : null;
    if (!s || !p) continue;
    if (s.sizeBytes % KSYMTAB_ENTRY_BYTES !== 0)
      throw new ElfError('ESHDR', `${tab} size ${s.sizeBytes} is not a multiple of ${KSYMTAB_ENTRY_BYTES}`);
    const crcs = findSection(prep.elf, crcTab);
    const n = s.sizeBytes / KSYMTAB_ENTRY_BYTES;
    if (crcs && crcs.sizeBytes < n * 4) throw new ElfError('ESHDR', `${crcTab} is shorter than ${tab}`);
    const img = images[p.memType]!;
    const view = new DataView(img.buffer, img.byteOffset, img.byteLength);
    const base = toSigned(mems[p.memType]!.va) + p.offset;
    for (let i = 0; i < n; i++) {
      const at = base + i * KSYMTAB_ENTRY_BYTES;
      const o = p.offset + i * KSYMTAB_ENTRY_BYTES;
      const value = at + view.getInt32(o, true);
      const nameAddr = at + 4 + view.getInt32(o + 4, true);
      const expName = stringAt(prep, mems, images, nameAddr, `${tab}[${i}] name`, true);
      const nsOff = view.getInt32(o + 8, true);
      const namespace =
        nsOff === 0 ? '' : stringAt(prep, mems, images, at + 8 + nsOff, `${tab}[${i}] namespace`, false);
      const dup = findExport(expName);
      if (dup || out.has(expName)) {
        throw new ModuleLoadError(
          'ENOEXEC',
          prep.name,
          `${prep.name}: exports duplicate symbol ${expName} (owned by ${dup?.owner ?? 'kernel'})`,
          [],
          null,
          'exports',
        );
      }
      const crc =
        crcs && crcs.type !== SHT_NOBITS ? prep.elf.view.getUint32(crcs.offset + i * 4, true) : null;
      out.set(expName, { name: expName, value, gplOnly, namespace, crc, percpu: false });
    }
  }
  return out;
}

/** Function symbols with a size inside (init_)text: what the instruction-fetch model runs. */
export function moduleFunctions(prep: Prepared, mems: Mems): ModuleFunction[] {
  const out: ModuleFunction[] = [];
  for (const sym of prep.elf.symbols) {
    if (sym.type !== STT_FUNC || sym.sizeBytes === 0 || sym.shndx === SHN_UNDEF || sym.shndx >= SHN_LORESERVE)
      continue;
    const p = prep.layout.placement[sym.shndx];
    if (!p || (p.memType !== 'text' && p.memType !== 'init_text')) continue;
    // A symbol claiming to extend past its section is not a function we can run: skip it.
    if (!(sym.value >= 0 && sym.value + sym.sizeBytes <= prep.elf.sections[sym.shndx].sizeBytes)) continue;
    const m = mems[p.memType]!;
    const va = m.va + p.offset + sym.value;
    assert(va + sym.sizeBytes <= m.va + m.sizeBytes, 'function inside its memory');
    out.push({ name: sym.name, va, sizeBytes: sym.sizeBytes, init: p.memType === 'init_text' });
  }
  return out;
}
