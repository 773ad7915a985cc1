/**
 * A module's memory as Linux laid it out before 6.4: ONE core allocation (text | rodata |
 * ro_after_init | data) and ONE init allocation (init text | init rodata | init data).
 *
 * Why it matters for the comparison: in these kernels a module load is two vmallocs, not seven,
 * and the permission changes of text, rodata and data hit parts of the same vmalloc area (so the
 * direct-map alias of one area is split at the part boundaries). The init area goes as a whole
 * after init, the core area as a whole at unload.
 *
 * Modelled (kernel/module.c of 5.17 and 6.1, read as the 6.4 conversion "module: replace
 * module_layout with module_memory" removed it):
 * - layout_sections(): the parts in the order text, rodata, ro_after_init, data, each part
 *   page-aligned under CONFIG_STRICT_MODULE_RWX (debug_align = PAGE_ALIGN);
 * - move_module(): module_alloc(core_layout.size) and, if the init layout is not empty,
 *   module_alloc(init_layout.size);
 * - module_enable_ro() sets VM_FLUSH_RESET_PERMS on both areas (set_vm_flush_reset_perms), so the
 *   vfree of each resets the direct-map alias; do_init_module() frees the init area
 *   (module_memfree(init_layout.base), deferred to a work item), free_module() the core area.
 * Our interface hands out each section on its own (written, finalized, sealed, freed one by one),
 * so a region is vfree'd when its last section is freed.
 * Deviation: every section starts on its own page. Linux packs several sections of the same part
 * (two .text sections) contiguously; the workloads give one section per part, where this is
 * exactly Linux's layout.
 */
import type { ExecmemType } from '../arch/types.js';
import { alignUp } from '../base/addr.js';
import { PAGE_BYTES } from './common.js';
import type { Area } from './live-set.js';
import type { ModuleSection } from './types.js';

/** layout_sections()'s order of the parts inside a region. */
const PART_ORDER: readonly ExecmemType[] = [
  'module_text',
  'module_rodata',
  'module_ro_after_init',
  'module_data',
];

/** One core or init allocation of a module and how many of its sections are still live. */
export class ModuleRegion {
  liveSections = 0;
  constructor(readonly area: Area) {}
}

export interface ModuleLayout {
  /** Byte offset of each section (in the caller's order) inside its region. */
  readonly offsets: readonly number[];
  /** Sizes of the core and the init region (0: no such region). */
  readonly coreBytes: number;
  readonly initBytes: number;
}

/** layout_sections(): parts in PART_ORDER, each section page-aligned, core and init apart. */
export function layoutModule(sections: readonly ModuleSection[]): ModuleLayout {
  const offsets = new Array<number>(sections.length).fill(0);
  const sizes = [0, 0];
  for (const part of PART_ORDER) {
    sections.forEach((s, i) => {
      if (s.type !== part) return;
      const region = s.init ? 1 : 0;
      offsets[i] = sizes[region];
      sizes[region] += alignUp(s.sizeBytes, PAGE_BYTES);
    });
  }
  return { offsets, coreBytes: sizes[0], initBytes: sizes[1] };
}
