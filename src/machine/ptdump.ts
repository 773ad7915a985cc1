/**
 * ptdump: the kernel page table as text, in the format of Linux's
 * /sys/kernel/debug/page_tables/kernel, so a kernel developer reads the machine's state the way
 * they read a real one.
 *
 * Why this format, line by line as Linux prints it:
 * - x86-64 (and the generic arch, which follows x86's page-table model): note_page() and
 *   printk_prot() of arch/x86/mm/dump_pagetables.c (the same from 4.x to 6.x):
 *   "0x%016lx-0x%016lx   %9lu%c " then the columns USR, RW/ro, PWT, PCD, PSE, PAT, GLB, NX/x and
 *   the level name, each 4 characters wide when empty:
 *     0xffffffffc0400000-0xffffffffc0600000           2M     ro         PSE     GLB x  pmd
 *   PSE marks a large leaf (bit 7 of a PMD or PUD entry: "level <= 3 && pr & _PAGE_PSE").
 * - arm64: note_page() and dump_prot() of arch/arm64/mm/ptdump.c (Linux 6.6-6.10):
 *   "0x%016lx-0x%016lx   %9lu%c %s" with the level in capitals, then " %s" for each of its
 *   pte_bits: valid, USR, ro/RW, NX/x, SHD, AF, NG, CON, BLK (a block, i.e. large, mapping: the
 *   table bit clear), UXN, GP and the memory type:
 *     0xffff800000200000-0xffff800000400000           2M PMD       ro x  SHD AF        BLK UXN    MEM/NORMAL
 *   SHD, AF, UXN and MEM/NORMAL are what every kernel mapping carries (PROT_DEFAULT and
 *   PROT_NORMAL, arch/arm64/include/asm/pgtable-prot.h); NG, CON and GP (BTI) are not modelled and
 *   print blank.
 * - Section markers ("---[ Modules ]---" on x86, "---[ Modules start ]---" on arm64) at the
 *   arch's region starts with the names of each file's address_markers[]; markers at the same
 *   address are all printed, in order (arm64's PAGE_END and MODULES_VADDR coincide), and markers
 *   of an empty stretch are printed too, as Linux's walk passes them. A dump of a range ends with
 *   the marker at its end, if there is one ("End Modules", "Modules end").
 * Unlike Linux, unmapped holes are not printed (Linux prints them with empty attributes), which
 * keeps dumps of a 48-bit space short.
 */
import type { ArchSpec, VaRange } from '../arch/types.js';
import { archHex } from '../arch/types.js';
import type { PageTable } from './pagetable.js';
import type { Translation } from './types.js';
import { LEVEL_BYTES, PTE_GLOBAL, PTE_NX, PTE_RW } from './types.js';

const LEVEL_NAME = ['', 'pte', 'pmd', 'pud'];

interface Marker {
  readonly va: number;
  readonly name: string;
}

/** Section markers of the arch, in address order (several may share an address). */
export function ptdumpMarkers(arch: ArchSpec, modulesStart: number, kernelTextStart: number): Marker[] {
  const l = arch.layout;
  // MODULES_VADDR: the start of the module area (the KASLR variant when the randomised base lies
  // in it), not the randomised base itself (module_load_offset moves allocations, not the marker).
  const modulesVaddr = modulesStart >= l.modulesKaslr.start ? l.modulesKaslr.start : l.modules.start;
  const m: Marker[] =
    arch.name === 'arm64'
      ? [
          { va: l.directMapStart, name: 'Linear Mapping start' },
          { va: l.directMapEnd, name: 'Linear Mapping end' },
          { va: l.modules.start, name: 'Modules start' },
          { va: l.modules.end, name: 'Modules end' },
          { va: l.vmalloc.start, name: 'vmalloc() area' },
          // Not a marker of Linux's: the simulated kernel image lies at the start of vmalloc.
          { va: l.kernelImage.textStart, name: 'Kernel image' },
          { va: l.vmalloc.end, name: 'vmalloc() end' },
          { va: l.pokeArea.start, name: 'Fixmap start' },
        ]
      : [
          { va: l.directMapStart, name: 'Low Kernel Mapping' },
          { va: l.directMapEnd, name: 'Hole' },
          { va: l.vmalloc.start, name: 'vmalloc() Area' },
          { va: l.vmalloc.end, name: 'Hole' },
          { va: kernelTextStart, name: 'High Kernel Mapping' },
          { va: modulesVaddr, name: 'Modules' },
          { va: l.modules.end, name: 'End Modules' },
        ];
  // A stable sort keeps the order of markers at the same address (Linux's array order).
  return m
    .filter((x, i) => m.findIndex((y) => y.va === x.va && y.name === x.name) === i)
    .sort((a, b) => a.va - b.va);
}

/** "%9lu%c": the size in the largest unit that divides it (note_page()'s unit loop). */
function sizeColumn(bytes: number, units: string): string {
  let delta = bytes;
  let unit = 0;
  while (delta % 1024 === 0 && unit < units.length - 1) {
    delta /= 1024;
    unit++;
  }
  return `${String(delta).padStart(9)}${units[unit]}`;
}

/** arch/x86/mm/dump_pagetables.c printk_prot(). */
function x86Attrs(t: Translation): string {
  const rw = t.flags & PTE_RW ? 'RW ' : 'ro ';
  const pse = t.level >= 2 ? 'PSE ' : '    ';
  const glb = t.flags & PTE_GLOBAL ? 'GLB ' : '    ';
  const x = t.flags & PTE_NX ? 'NX ' : 'x  ';
  return `    ${rw}        ${pse}    ${glb}${x}${LEVEL_NAME[t.level]}`;
}

/** arch/arm64/mm/ptdump.c: the level name, then dump_prot() over pte_bits. */
function arm64Attrs(t: Translation): string {
  const bits = [
    ' ', // PTE_VALID
    '   ', // PTE_USER clear: kernel mapping
    t.flags & PTE_RW ? 'RW' : 'ro',
    t.flags & PTE_NX ? 'NX' : 'x ',
    'SHD', // PTE_SHARED (PROT_DEFAULT)
    'AF', // PTE_AF (PROT_DEFAULT)
    t.flags & PTE_GLOBAL ? '  ' : 'NG',
    '   ', // PTE_CONT: contiguous hint not modelled
    t.level >= 2 ? 'BLK' : '   ', // table bit clear: a block mapping
    'UXN', // PROT_NORMAL
    '  ', // PTE_GP: BTI not modelled
    'MEM/NORMAL',
  ];
  return `${LEVEL_NAME[t.level].toUpperCase()}${bits.map((b) => ` ${b}`).join('')}`;
}

export function ptdump(arch: ArchSpec, pt: PageTable, markers: readonly Marker[], range?: VaRange): string {
  const start = range?.start ?? 0;
  const end = range?.end ?? 2 ** 48;
  const arm64 = arch.name === 'arm64';
  // x86 counts from bytes ("BKMGTPE"), arm64 from KiB ("KMGTPE"): the same for page multiples.
  const units = arm64 ? 'KMGTPE' : 'BKMGTPE';
  const attrs = arm64 ? arm64Attrs : x86Attrs;
  const lines: string[] = [];
  let mi = 0;
  let runStart = -1;
  let runEnd = -1;
  let runAttrs = '';
  const emitRun = (): void => {
    if (runStart < 0) return;
    const bytes = runEnd - runStart;
    const size = sizeColumn(arm64 ? bytes / 1024 : bytes, units);
    lines.push(`${archHex(arch, runStart)}-${archHex(arch, runEnd)}   ${size} ${runAttrs}`);
    runStart = -1;
  };
  // The sections the range starts in are printed before its first line.
  const first = markers.findIndex((x) => x.va > start);
  mi = first < 0 ? markers.length : first;
  let firstVa = -1;
  for (let i = mi - 1; i >= 0 && (firstVa < 0 || markers[i].va === firstVa); i--) firstVa = markers[i].va;
  let pending = markers.filter((x) => x.va === firstVa).map((x) => x.name);
  const passMarkers = (va: number): void => {
    for (const name of pending) lines.push(`---[ ${name} ]---`);
    pending = [];
    while (mi < markers.length && markers[mi].va <= va) {
      emitRun();
      lines.push(`---[ ${markers[mi].name} ]---`);
      mi++;
    }
  };
  pt.forEachLeaf(start, end, (t) => {
    const from = Math.max(t.va, start);
    const to = Math.min(t.va + LEVEL_BYTES[t.level], end);
    const before = mi;
    passMarkers(from);
    const a = attrs(t);
    if (mi === before && runStart >= 0 && runEnd === from && runAttrs === a) {
      runEnd = to;
      return;
    }
    emitRun();
    runStart = from;
    runEnd = to;
    runAttrs = a;
  });
  // The markers of an empty stretch up to the end, and the one that closes the range.
  passMarkers(range === undefined ? end - 1 : end);
  emitRun();
  return `${lines.join('\n')}\n`;
}
