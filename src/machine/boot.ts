/**
 * Boot: what the kernel's early memory setup leaves behind, before any module is loaded.
 *
 * Why each piece:
 * - Direct map: all physical memory mapped at layout.directMapStart, RW + NX + global, with 1 GiB
 *   leaves where aligned (x86 kernel_physical_mapping_init with gbpages; memory sizes here are
 *   whole GiBs, so every leaf is 1 GiB). These are the leaves CPA later splits on x86.
 *   arm64 with rodata=full maps its linear map with 4 KiB pages instead (arch/arm64/mm/mmu.c
 *   map_mem(): can_set_direct_map() -> NO_BLOCK_MAPPINGS | NO_CONT_MAPPINGS). 4 M leaf objects
 *   for 16 GiB cost about 300 MB and 0.5-1 s per boot (measured), so the machine keeps 1 GiB leaves
 *   there too and sets aside the page-table frames Linux spends on the 4 KiB map (513 per GiB);
 *   CPA expands a leaf from them when it needs a piece, without counting a split
 *   (arch.directMapPageGranular, machine/cpa.ts).
 * - Kernel image: text RX, rodata RO, data RW+NX, on 2 MiB leaves (x86 maps the kernel image with
 *   large pages), frames taken from the buddy allocator as order-9 blocks (Linux: memblock reserves
 *   the loaded image). x86 KASLR shifts the link address by a seeded random multiple of 2 MiB,
 *   keeping the image below the module area (KERNEL_IMAGE_SIZE); arm64 and generic keep the link
 *   address (their module windows are defined relative to it in arch/).
 * - mark_rodata_ro: the direct-map alias of kernel text and rodata is made read-only (NX is always
 *   set there), through the same CPA alias path set_memory_ro uses. This splits the covering 1 GiB
 *   direct-map leaf into 2 MiB leaves, which is why a freshly booted Linux already shows some
 *   DirectMap2M (and DirectMap4k) in /proc/meminfo.
 * - Module area start: with KASLR, x86 execmem_arch_setup() uses MODULES_VADDR +
 *   get_random_u32_inclusive(1, 1024) * PAGE_SIZE (layout.modulesKaslr.start here); otherwise the
 *   non-KASLR start.
 */
import type { ArchSpec } from '../arch/types.js';
import { assert } from '../base/assert.js';
import type { Rng } from '../base/rng.js';
import type { Cpa } from './cpa.js';
import type { PageTable } from './pagetable.js';
import type { PhysMem } from './phys.js';
import { PTE_GLOBAL, PTE_NX, PTE_PRESENT, PTE_RW } from './types.js';

const SZ_2M = 2 ** 21;
const SZ_1G = 2 ** 30;
const FRAMES_2M = 512;

export interface KernelImage {
  readonly textStart: number;
  readonly textBytes: number;
  readonly rodataBytes: number;
  readonly dataBytes: number;
  /** First pfn of each 2 MiB leaf, text then rodata then data. */
  readonly leafPfns: number[];
}

export function mapDirectMap(arch: ArchSpec, pt: PageTable, phys: PhysMem, cpa: Cpa): void {
  const gib = (phys.totalFrames * 4096) / SZ_1G;
  const flags = PTE_PRESENT | PTE_RW | PTE_NX | PTE_GLOBAL;
  for (let g = 0; g < gib; g++)
    pt.mapLeaf(arch.layout.directMapStart + g * SZ_1G, 3, (g * SZ_1G) / 4096, flags);
  if (arch.directMapPageGranular) cpa.reserveLinearMapTables(gib * SZ_1G);
}

/** Where _text lands: the link address, or on x86 with KASLR a random 2 MiB-aligned shift of it. */
export function kernelTextStart(arch: ArchSpec, kaslr: boolean, rng: Rng): number {
  const k = arch.layout.kernelImage;
  if (!kaslr || arch.kaslrModuleOffsetPagesMax === 0) return k.textStart;
  const imageBytes = k.textBytes + k.rodataBytes + k.dataBytes;
  const slots = Math.floor((arch.layout.modulesKaslr.start - (k.textStart + imageBytes)) / SZ_2M);
  assert(slots >= 0, 'kernel image does not fit below the module area');
  return k.textStart + rng.int(0, slots) * SZ_2M;
}

export function modulesStart(arch: ArchSpec, kaslr: boolean, rng: Rng): number {
  if (!kaslr || arch.kaslrModuleOffsetPagesMax === 0) return arch.layout.modules.start;
  return arch.layout.modulesKaslr.start + rng.int(1, arch.kaslrModuleOffsetPagesMax) * 4096;
}

export function mapKernelImage(arch: ArchSpec, pt: PageTable, phys: PhysMem, textStart: number): KernelImage {
  const k = arch.layout.kernelImage;
  for (const bytes of [k.textBytes, k.rodataBytes, k.dataBytes]) {
    assert(bytes % SZ_2M === 0, 'kernel image sections must be whole 2 MiB leaves');
  }
  const sections: [number, number][] = [
    [k.textBytes, PTE_PRESENT | PTE_GLOBAL],
    [k.rodataBytes, PTE_PRESENT | PTE_NX | PTE_GLOBAL],
    [k.dataBytes, PTE_PRESENT | PTE_RW | PTE_NX | PTE_GLOBAL],
  ];
  const leafPfns: number[] = [];
  let va = textStart;
  for (const [bytes, flags] of sections) {
    for (let off = 0; off < bytes; off += SZ_2M) {
      const pfn = phys.allocPages(9);
      pt.mapLeaf(va, 2, pfn, flags);
      leafPfns.push(pfn);
      va += SZ_2M;
    }
  }
  return { textStart, textBytes: k.textBytes, rodataBytes: k.rodataBytes, dataBytes: k.dataBytes, leafPfns };
}

/** mark_rodata_ro: the direct-map alias of text and rodata becomes read-only. */
export function protectImageAlias(image: KernelImage, cpa: Cpa): void {
  const roLeaves = (image.textBytes + image.rodataBytes) / SZ_2M;
  for (let i = 0; i < roLeaves; i++) cpa.setAliasWritable(image.leafPfns[i], FRAMES_2M, false);
}
