/**
 * What a design left mapped, read from the page tables after a run: mapped, executable and
 * large-page executable bytes over the allocation ranges, and per 2 MiB region the mapped bytes
 * with the live bytes by type (the module-area map of the report).
 *
 * Why from the page tables and not from the design: the comparison must never take a design's
 * word for its own cost (compare.ts), so bytes are counted where the hardware would find them.
 */
import { type ArchSpec, archHex, EXECMEM_TYPES, type ExecmemType } from '../arch/index.js';
import { alignDown, alignUp, hexAddr, SZ_2M } from '../base/addr.js';
import { assert } from '../base/assert.js';
import type { Machine } from '../machine/machine.js';
import { PTE_NX, PTE_PRESENT } from '../machine/types.js';
import type { InstrumentedAllocator } from '../policies/index.js';

export interface OccupancyRegion {
  /** Start of the 2 MiB region, canonical 64-bit hex. */
  readonly va: string;
  readonly mappedBytes: number;
  readonly execBytes: number;
  /** Mapped with one 2 MiB leaf. */
  readonly largeLeaf: boolean;
  readonly liveBytesByType: Partial<Record<ExecmemType, number>>;
}

export interface OccupancyMap {
  readonly regionBytes: number;
  readonly regions: readonly OccupancyRegion[];
}

interface RegionAcc {
  mappedBytes: number;
  execBytes: number;
  largeLeaf: boolean;
}

export interface PageTableFootprint {
  mappedBytes: number;
  execBytes: number;
  execLargeBytes: number;
  regions: Map<number, RegionAcc>;
}

/**
 * The VA ranges any policy allocates in: the module area (with and without KASLR) and every
 * range and fallback of the arch's execmem table, merged, minus the kernel image (which arm64's
 * module windows contain and which is not any allocator's memory).
 */
export function allocationRanges(arch: ArchSpec, machine: Machine): { start: number; end: number }[] {
  const raw = [arch.layout.modules, arch.layout.modulesKaslr];
  for (const r of Object.values(arch.execmemRanges(machine.modulesStart, true))) {
    if (r === undefined) continue;
    raw.push(r.range);
    if (r.fallback !== null) raw.push(r.fallback);
  }
  raw.sort((a, b) => a.start - b.start);
  const merged: { start: number; end: number }[] = [];
  for (const r of raw) {
    const last = merged[merged.length - 1];
    if (last !== undefined && r.start <= last.end) last.end = Math.max(last.end, r.end);
    else merged.push({ start: r.start, end: r.end });
  }
  const img = arch.layout.kernelImage;
  const imgStart = alignDown(machine.kernelTextStart, SZ_2M);
  const imgEnd = alignUp(machine.kernelTextStart + img.textBytes + img.rodataBytes + img.dataBytes, SZ_2M);
  const out: { start: number; end: number }[] = [];
  for (const r of merged) {
    if (imgEnd <= r.start || imgStart >= r.end) out.push(r);
    else {
      if (r.start < imgStart) out.push({ start: r.start, end: imgStart });
      if (imgEnd < r.end) out.push({ start: imgEnd, end: r.end });
    }
  }
  return out;
}

/** Mapped, executable and large-page executable bytes, and per-2 MiB-region totals, from the page tables. */
export function pageTableFootprint(machine: Machine): PageTableFootprint {
  const fp: PageTableFootprint = { mappedBytes: 0, execBytes: 0, execLargeBytes: 0, regions: new Map() };
  for (const r of allocationRanges(machine.arch, machine)) {
    machine.kernelPt.forEachLeaf(r.start, r.end, (t) => {
      if ((t.flags & PTE_PRESENT) === 0) return;
      const bytes = t.level === 1 ? 4096 : t.level === 2 ? SZ_2M : 1024 ** 3;
      if (t.level === 3) assert(false, `1 GiB leaf in an allocation range at ${hexAddr(t.va)}`);
      const exec = (t.flags & PTE_NX) === 0;
      fp.mappedBytes += bytes;
      if (exec) fp.execBytes += bytes;
      if (exec && t.level === 2) fp.execLargeBytes += bytes;
      const key = alignDown(t.va, SZ_2M);
      let acc = fp.regions.get(key);
      if (acc === undefined) {
        acc = { mappedBytes: 0, execBytes: 0, largeLeaf: false };
        fp.regions.set(key, acc);
      }
      acc.mappedBytes += bytes;
      if (exec) acc.execBytes += bytes;
      if (t.level === 2) acc.largeLeaf = true;
    });
  }
  return fp;
}

/** Per 2 MiB region: mapped bytes (page tables) and live bytes by type (the policy's live set). */
export function occupancy(
  machine: Machine,
  policy: InstrumentedAllocator,
  regions: Map<number, RegionAcc>,
): OccupancyMap {
  const live = new Map<number, Partial<Record<ExecmemType, number>>>();
  policy.forEachLive((e) => {
    let va = e.va;
    const end = e.va + e.sizeBytes;
    while (va < end) {
      const key = alignDown(va, SZ_2M);
      const n = Math.min(end, key + SZ_2M) - va;
      let byType = live.get(key);
      if (byType === undefined) {
        byType = {};
        live.set(key, byType);
      }
      byType[e.type] = (byType[e.type] ?? 0) + n;
      va += n;
    }
  });
  const keys = [...new Set([...regions.keys(), ...live.keys()])].sort((a, b) => a - b);
  return {
    regionBytes: SZ_2M,
    regions: keys.map((k) => {
      const acc = regions.get(k);
      return {
        va: archHex(machine.arch, k),
        mappedBytes: acc?.mappedBytes ?? 0,
        execBytes: acc?.execBytes ?? 0,
        largeLeaf: acc?.largeLeaf ?? false,
        liveBytesByType: live.get(k) ?? {},
      };
    }),
  };
}

/** Types in a stable order, for renderers. */
export const OCCUPANCY_TYPES: readonly ExecmemType[] = EXECMEM_TYPES;
