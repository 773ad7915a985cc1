/**
 * ptdump: the kernel page table as text, in the style of Linux's
 * /sys/kernel/debug/page_tables/kernel (arch/x86/mm/dump_pagetables.c, arch/arm64/mm/ptdump.c),
 * so a kernel developer can read the machine's state the way they read a real one.
 *
 * Why this format: section markers ("---[ Modules ]---") at the arch's region starts, then one
 * line per run of adjacent leaves with equal attributes and level:
 *   0xffffffffa0000000-0xffffffffa0200000           2M     ro                 GLB x  pmd
 * (start-end in the arch's 64-bit form, size with the largest K/M/G unit that divides it, "RW" or
 * "ro", "GLB" when global, "x" or "NX", and the level: pte / pmd / pud). Unlike Linux, unmapped
 * holes are not printed (Linux prints them with empty attributes), which keeps dumps of a 48-bit
 * space short.
 */
import type { ArchSpec, VaRange } from '../arch/types.js';
import { archHex } from '../arch/types.js';
import { fmtSize } from '../base/addr.js';
import type { PageTable } from './pagetable.js';
import type { Translation } from './types.js';
import { LEVEL_BYTES, PTE_GLOBAL, PTE_NX, PTE_RW } from './types.js';

const LEVEL_NAME = ['', 'pte', 'pmd', 'pud'];

interface Marker {
  readonly va: number;
  readonly name: string;
}

/** Section markers of the arch, in address order. */
export function ptdumpMarkers(arch: ArchSpec, modulesStart: number, kernelTextStart: number): Marker[] {
  const l = arch.layout;
  const m: Marker[] =
    arch.name === 'arm64'
      ? [
          { va: l.directMapStart, name: 'Linear Mapping start' },
          { va: l.directMapEnd, name: 'Linear Mapping end' },
          { va: l.modules.start, name: 'Modules start' },
          { va: l.modules.end, name: 'Modules end' },
          { va: l.vmalloc.start, name: 'vmalloc() area' },
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
          { va: modulesStart, name: 'Modules' },
          { va: l.modules.end, name: 'End Modules' },
        ];
  // arm64's image lies at the start of vmalloc; keep markers unique and sorted.
  return m.filter((x, i) => m.findIndex((y) => y.va === x.va) === i).sort((a, b) => a.va - b.va);
}

function attrs(t: Translation): string {
  const rw = t.flags & PTE_RW ? 'RW' : 'ro';
  const glb = t.flags & PTE_GLOBAL ? 'GLB' : '   ';
  const x = t.flags & PTE_NX ? 'NX' : 'x ';
  return `${rw}                 ${glb} ${x} ${LEVEL_NAME[t.level]}`;
}

export function ptdump(arch: ArchSpec, pt: PageTable, markers: readonly Marker[], range?: VaRange): string {
  const start = range?.start ?? 0;
  const end = range?.end ?? 2 ** 48;
  const lines: string[] = [];
  let mi = 0;
  let runStart = -1;
  let runEnd = -1;
  let runAttrs = '';
  const emitRun = (): void => {
    if (runStart < 0) return;
    const size = fmtSize(runEnd - runStart).padStart(9);
    lines.push(`${archHex(arch, runStart)}-${archHex(arch, runEnd)} ${size}     ${runAttrs}`);
    runStart = -1;
  };
  // The section the range starts in is printed before its first line.
  let pending = '';
  while (mi < markers.length && markers[mi].va <= start) pending = markers[mi++].name;
  const passMarkers = (va: number): void => {
    if (pending !== '') {
      lines.push(`---[ ${pending} ]---`);
      pending = '';
    }
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
  emitRun();
  return `${lines.join('\n')}\n`;
}
