/**
 * execmem statistics: the JSON shape and a /proc-like text rendering.
 *
 * Why split per type and per pool: callers care about their type (how much bpf is live), the
 * memory system about pools (what is mapped, on which leaf size, how fragmented). Types that
 * share a pool (by default bpf+kprobes+ftrace when their ranges agree) share its blocks, so
 * "live + free + pending fill = mapped" holds per pool, and per type only live figures are exact. Counters
 * attributed to the allocator are backend counter deltas since the allocator was created (exact
 * when the allocator is the backend's only user, as in every test and benchmark here).
 */
import type { ExecmemType, Prot } from '../arch/types.js';

export interface ExecmemTypeStats {
  /** Pool serving this type (types in one pool share blocks). */
  pool: string;
  /** Bytes held by live allocations (rounded to the pool granule; large objects: usable size). */
  liveBytes: number;
  liveObjects: number;
  /** The pool's figures, repeated for convenience (shared by every type of the pool). */
  mappedBytes: number;
  largeMappedBytes: number;
  freeBytes: number;
  largestFreeBytes: number;
  blocks: number;
  fallbackBlocks: number;
}

export interface ExecmemPoolStats {
  types: ExecmemType[];
  /** Protection of free memory in the pool. */
  prot: Prot;
  granuleBytes: number;
  /** Size of the pool's shared blocks (2 MiB; ro_after_init: RO_AFTER_INIT_BLOCK_BYTES). */
  blockBytes: number;
  /** Leaf size the pool maps with by design: 2 MiB, or 4 KiB for ro_after_init. */
  leafBytes: number;
  rangeStart: string;
  rangeEnd: string;
  liveBytes: number;
  liveObjects: number;
  /** Bytes mapped for the pool: shared blocks plus large-object mappings. */
  mappedBytes: number;
  /** Mapped bytes whose mapping uses 2 MiB leaves. */
  largeMappedBytes: number;
  /** Free bytes inside shared blocks (all of it allocatable; trap-filled for text). */
  freeBytes: number;
  /**
   * Freed bytes whose trap fill is queued (fills.ts): neither live nor free until the next write
   * session fills them; live + free + pendingFill + largeSlack = mapped.
   */
  pendingFillBytes: number;
  largestFreeBytes: number;
  /** Shared blocks (blockBytes each) and how many wanted 2 MiB leaves but fell back to 4 KiB. */
  blocks: number;
  fallbackBlocks: number;
  /** Shared blocks mapped with 4 KiB leaves by design (ro_after_init), not fallbacks. */
  smallLeafBlocks: number;
  /** Shared blocks that take only small objects (below Execmem's smallObjectBytes); the rest take any. */
  smallObjectBlocks: number;
  /** Blocks with no live object (the spare a free left, or blocks shrink has not released). */
  emptyBlocks: number;
  /** Objects larger than a block, each on its own mapping; slack = mapped - usable there. */
  largeObjects: number;
  largeSlackBytes: number;
  /** Side-table bytes (boundary tags, bitmaps, links) kept outside executable memory. */
  metadataBytes: number;
}

/**
 * What the "failed calls change nothing" contract covers (DESIGN.md section 5): every figure of
 * ExecmemStats except the cost counters marked below. The operation counters (allocs ...
 * blocksReleased) count completed calls only. The cost counters count work that was really done,
 * whatever the call's outcome: attempts (atomicRefusals, allocSearchSteps) and the platform's
 * costs (the backend deltas). A free, seal, update or shrink that fails leaves even those
 * unchanged (the machine rolls back its one fallible step, counters included); a growth that
 * fails after the backend mapped its block did map and unmap it, and the backend deltas say so.
 */
export interface ExecmemCounters {
  allocs: number;
  frees: number;
  updates: number;
  seals: number;
  /** Outermost batch() calls whose callback returned (a refused or throwing batch is not counted). */
  batches: number;
  blocksMapped: number;
  blocksReleased: number;
  /** Cost counter: allocations refused in atomic context (EAGAIN) because the cache would have to grow. */
  atomicRefusals: number;
  /** Cost counter: free runs examined and class-bitmap look-ups made by alloc searches, all pools. */
  allocSearchSteps: number;
  /** Cost counters: backend deltas since the allocator was created. */
  permissionFlips: number;
  pokes: number;
  pokeBytes: number;
  localFlushes: number;
  shootdowns: number;
  ipis: number;
  directMapSplits: number;
  hugeFallbacks: number;
}

/** The cost counters of ExecmemCounters (outside the contract; see there). */
export const COST_COUNTERS: readonly (keyof ExecmemCounters)[] = [
  'atomicRefusals',
  'allocSearchSteps',
  'permissionFlips',
  'pokes',
  'pokeBytes',
  'localFlushes',
  'shootdowns',
  'ipis',
  'directMapSplits',
  'hugeFallbacks',
];

export interface ExecmemStats {
  backend: 'sim' | 'host';
  arch: string;
  aliasWrite: boolean;
  blockBytes: number;
  types: Record<ExecmemType, ExecmemTypeStats>;
  pools: Record<string, ExecmemPoolStats>;
  counters: ExecmemCounters;
}

function kb(bytes: number): string {
  return String(Math.round(bytes / 1024));
}

function row(cells: (string | number)[], widths: number[]): string {
  return cells.map((c, i) => String(c).padStart(widths[i])).join(' ');
}

/** Render stats as /proc-style text (one header line, a pool table, a type table, counters). */
export function formatStats(stats: ExecmemStats): string {
  const lines: string[] = [];
  lines.push(
    `execmem: backend ${stats.backend}, arch ${stats.arch}, ` +
      `${stats.aliasWrite ? 'alias writes' : 'no alias: unprotect/write/protect under lock'}, ` +
      `block ${kb(stats.blockBytes)} kB unless blk_kB says otherwise (leaf: by design; ` +
      `4k_fallb: wanted 2M, got 4K; smallbl: blocks for small objects only; ` +
      `pend_kB: freed, trap fill queued, fillOnFree 'deferred')`,
  );
  const pw = [24, 4, 6, 7, 7, 7, 4, 8, 10, 9, 9, 9, 8, 10, 7, 7];
  lines.push(
    row(
      [
        'pool',
        'prot',
        'gran',
        'blocks',
        'smallbl',
        'blk_kB',
        'leaf',
        '4k_fallb',
        'mapped_kB',
        'large_kB',
        'live_kB',
        'free_kB',
        'pend_kB',
        'maxfree_kB',
        'objects',
        'bigobj',
      ],
      pw,
    ),
  );
  for (const [name, p] of Object.entries(stats.pools)) {
    lines.push(
      row(
        [
          name,
          p.prot,
          p.granuleBytes,
          p.blocks,
          p.smallObjectBlocks,
          kb(p.blockBytes),
          p.leafBytes >= 1024 * 1024 ? `${p.leafBytes / (1024 * 1024)}M` : `${kb(p.leafBytes)}K`,
          p.fallbackBlocks,
          kb(p.mappedBytes),
          kb(p.largeMappedBytes),
          kb(p.liveBytes),
          kb(p.freeBytes),
          kb(p.pendingFillBytes),
          kb(p.largestFreeBytes),
          p.liveObjects,
          p.largeObjects,
        ],
        pw,
      ),
    );
  }
  const tw = [24, 24, 9, 7];
  lines.push(row(['type', 'pool', 'live_kB', 'objects'], tw));
  for (const [name, t] of Object.entries(stats.types)) {
    lines.push(row([name, t.pool, kb(t.liveBytes), t.liveObjects], tw));
  }
  for (const [name, v] of Object.entries(stats.counters)) lines.push(`${name.padEnd(24)} ${v}`);
  return `${lines.join('\n')}\n`;
}
