/**
 * The per-type range table: where each type lives and which protections WE give it.
 *
 * Why it is built this way:
 * - Ranges come from the arch as data (Linux `execmem_arch_setup()` returning `execmem_info`;
 *   tglx: "It would not contain a single arch_foo() function at all", <87v8mndy3y.ffs@tglx>).
 * - Types the arch does not name inherit `module_text` (EXECMEM_DEFAULT), as Linux's
 *   `execmem_init_missing()` does (mm/execmem.c); module data is never executable there, and
 *   here no data type ever is (DESIGN.md rule 2).
 * - Protections are ours, per type, regardless of the arch's pgprot (which is Linux's and on
 *   arm64/generic says PAGE_KERNEL because the loader flips later): text types are handed out
 *   ROX and trap-filled; module_rodata is RO; module_ro_after_init is RW until sealed, then RO
 *   at page granularity (tglx: ro_after_init "has to be page-granular", <87k03ar3e3.ffs@tglx>);
 *   module_data is RW+NX. rodata and ro_after_init are our types, per tglx's four abstract types.
 * - KASLR: the x86 module area starts at MODULES_VADDR + get_random_u32_inclusive(1, 1024) pages
 *   (arch/x86/mm/init.c execmem_arch_setup); we draw the offset from a seeded Rng so runs are
 *   reproducible. Arches whose table says 0 pages get no offset (arm64's random bounding boxes
 *   are modelled by the arch table's `modulesStart` shift, which we keep at 0 here).
 * - When the platform has already chosen the module-area start (the simulated machine draws its
 *   own KASLR offset at boot, as the kernel does once in execmem_arch_setup()), the backend
 *   reports it (`Backend.modulesStart`) and the table is built from that start: a second,
 *   independent draw would put execmem's blocks below the platform's module start, where ptdump
 *   and every other user of the machine would not expect module memory.
 */
import type { ArchSpec, ExecmemRange, ExecmemType, Prot, VaRange } from '../arch/types.js';
import { EXECMEM_TYPES, typeIsText } from '../arch/types.js';
import { assert } from '../base/assert.js';
import { Rng } from '../base/rng.js';

/** How a type's memory is protected and written. */
export type TypeClass = 'text' | 'rodata' | 'ro_after_init' | 'data';

export interface TypeRange {
  readonly type: ExecmemType;
  readonly cls: TypeClass;
  readonly range: VaRange;
  readonly fallback: VaRange | null;
  /** Protection of free and newly allocated memory of this type (ro_after_init: before sealing). */
  readonly prot: Prot;
  /** Linux's pgprot and alignment from the arch table, kept for reports only. */
  readonly linuxProt: Prot;
  readonly linuxAlignBytes: number;
  /** True when the arch table did not name this type and it inherited module_text's range. */
  readonly inherited: boolean;
}

export function classOfType(type: ExecmemType): TypeClass {
  if (typeIsText(type)) return 'text';
  if (type === 'module_rodata') return 'rodata';
  if (type === 'module_ro_after_init') return 'ro_after_init';
  return 'data';
}

const PROT_OF_CLASS: Readonly<Record<TypeClass, Prot>> = {
  text: 'rox',
  rodata: 'ro',
  ro_after_init: 'rw',
  data: 'rw',
};

export function protOfClass(cls: TypeClass): Prot {
  return PROT_OF_CLASS[cls];
}

/** The module-area start after the KASLR-style random offset (pages drawn from a seeded Rng). */
export function modulesStartFor(arch: ArchSpec, kaslr: boolean, seed: number): number {
  const layout = arch.layout;
  if (!kaslr || arch.kaslrModuleOffsetPagesMax === 0)
    return kaslr ? layout.modulesKaslr.start : layout.modules.start;
  const pages = new Rng(seed).int(1, arch.kaslrModuleOffsetPagesMax);
  return layout.modulesKaslr.start + pages * arch.pageBytes;
}

/**
 * Build the full table: every type gets a range, inherited from module_text where missing.
 * `platformStart` is the module-area start the platform already chose (Backend.modulesStart);
 * when given it wins over the seeded draw (the platform's randomisation is the one in effect).
 */
export function buildRangeTable(
  arch: ArchSpec,
  kaslr: boolean,
  seed: number,
  platformStart?: number,
): Record<ExecmemType, TypeRange> {
  if (platformStart !== undefined) {
    const m = kaslr ? arch.layout.modulesKaslr : arch.layout.modules;
    assert(
      Number.isSafeInteger(platformStart) &&
        platformStart % arch.pageBytes === 0 &&
        platformStart >= Math.min(m.start, arch.layout.modules.start) &&
        platformStart < m.end,
      `platform module start 0x${platformStart.toString(16)} is not a page in ${arch.name}'s module area`,
    );
  }
  const start = platformStart ?? modulesStartFor(arch, kaslr, seed);
  const table = arch.execmemRanges(start, kaslr);
  const dflt: ExecmemRange | undefined = table.module_text;
  assert(dflt !== undefined, `arch ${arch.name}: execmemRanges must name module_text (EXECMEM_DEFAULT)`);
  assert(dflt.range.start > 0 && dflt.range.end > dflt.range.start, 'execmem_validate: default range');
  const out = {} as Record<ExecmemType, TypeRange>;
  for (const type of EXECMEM_TYPES) {
    const own = table[type];
    const r = own ?? dflt;
    const cls = classOfType(type);
    out[type] = {
      type,
      cls,
      range: r.range,
      fallback: r.fallback,
      prot: protOfClass(cls),
      linuxProt: own ? own.prot : cls === 'text' ? dflt.prot : 'rw',
      linuxAlignBytes: r.alignBytes,
      inherited: own === undefined,
    };
  }
  return out;
}

export function sameRange(a: TypeRange, b: TypeRange): boolean {
  const fa = a.fallback;
  const fb = b.fallback;
  const sameFallback = fa === null || fb === null ? fa === fb : fa.start === fb.start && fa.end === fb.end;
  return a.range.start === b.range.start && a.range.end === b.range.end && sameFallback;
}
