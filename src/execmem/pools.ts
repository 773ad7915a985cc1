/**
 * Pools, blocks and the block directory: where execmem's memory is and who owns it.
 *
 * Why pools are per family and per range: a pool holds only text (ROX), only rodata (RO), only
 * ro_after_init, or only RW data, so no large page ever mixes text and data (tglx: text and data
 * in one 2M page means "RWX for the whole 2M page", <87mt86rbvy.ffs@tglx>); types whose ranges
 * agree share a pool by family (execmem.ts header: module text apart from the short-lived JIT
 * producers). Each pool has a TLSF heap (heap.ts) over its shared blocks, and a set of large
 * objects, each on its own mapping.
 *
 * Tiers: a family (pool) whose class has a LARGE_TIER_FROM_BYTES threshold gets a second pool in
 * front of it, `<name>/small`, of 4 KiB-leaf blocks of 16 or 64 KiB, which takes the family's new
 * objects while its live bytes are below the threshold (store.ts poolFor, noteLive).
 *
 * Why a directory and not a Map: locate() runs on every free and update, so the block holding
 * an address is found with one typed-array read: per 1 GiB of address space that holds blocks,
 * a table with one entry per CHUNK_BYTES (block id + 1, 0 = none); the table last used is
 * cached. Blocks are CHUNK_BYTES aligned, so no entry holds two blocks.
 *
 * Each pool also remembers the span of addresses it has ever mapped, so an address that holds no
 * live allocation can be told apart from one that was never execmem memory: a double free of a
 * large allocation, whose mapping is gone, is EFREE like any double free, not ENOENT.
 */
import type { ExecmemType, Prot, VaRange } from '../arch/types.js';
import { EXECMEM_TYPES } from '../arch/types.js';
import { SZ_2M, SZ_4K } from '../base/addr.js';
import type { BackendBlock } from './backend.js';
import { Heap, SMALL } from './heap.js';
import {
  BLOCK_BYTES,
  CHUNK_BYTES,
  DIR_ENTRIES,
  DIR_SPAN_BYTES,
  MAX_BLOCKS_PER_POOL,
  type PoolSharing,
  RO_AFTER_INIT_BLOCK_BYTES,
  SMALL_TIER_BLOCK_BYTES,
  SMALL_TIER_RO_BLOCK_BYTES,
  SPLIT_MIN_BLOCKS,
} from './limits.js';
import type { TypeClass, TypeRange } from './ranges.js';
import type { ExecmemPoolStats } from './stats.js';

/**
 * Kind of a used run (heap.ts keeps it per run): low 3 bits the type index, bit 3 sealed, bit 4
 * pending fill (freed, its trap fill queued: fills.ts), the bits above the slack, i.e. the granule
 * rounding after the requested size (< 4096, so the whole kind stays below 2^17). update() stops
 * at the requested size, not at the rounded one.
 */
export const KIND_TYPE_MASK = 7;
export const KIND_SEALED = 8;
export const KIND_PENDING_FILL = 16;
export const KIND_SLACK_SHIFT = 5;

export interface Pool {
  readonly name: string;
  readonly types: ExecmemType[];
  readonly cls: TypeClass;
  readonly prot: Prot;
  readonly range: VaRange;
  readonly fallback: VaRange | null;
  readonly granuleBytes: number;
  /** Shared-block size, a multiple of CHUNK_BYTES and a power of two. */
  readonly blockBytes: number;
  /** Leaf size the pool maps with by design (2 MiB: huge; 4 KiB: ro_after_init). */
  readonly leafBytes: number;
  readonly heap: Heap;
  readonly blocks: (Block | undefined)[];
  readonly largeBlocks: Set<Block>;
  /** [everStart, everEnd): the span of every address the pool has ever mapped (empty: 0, 0). */
  everStart: number;
  everEnd: number;
  /**
   * Tiers (limits.ts LARGE_TIER_FROM_BYTES): a family's large-page pool is its `family`; where the
   * family starts in small blocks, `small` is its 4 KiB-leaf tier (whose own `small` is null).
   */
  readonly family: Pool;
  small: Pool | null;
  /** Family only: live bytes of both tiers, the threshold, and whether new objects go large. */
  familyLiveBytes: number;
  readonly largeFromBytes: number;
  useLarge: boolean;
  /**
   * The clean (store.ts releaseEmptied, tick): the empty block kept (null: none; it may have been
   * refilled since, checked on use) and the allocator call at which it became the spare.
   */
  spare: Block | null;
  spareSince: number;
  /** Freed runs whose trap fill is queued (fills.ts): used in the heap, neither live nor free. */
  pendingFillBytes: number;
  pendingFillRuns: number;
}

export interface Block {
  readonly pool: Pool;
  /** Index in the block directory (BlockDirectory.register). */
  id: number;
  /** Heap slot of a shared block; -1 for a large object's own mapping. */
  readonly slot: number;
  readonly bb: BackendBlock;
  readonly va: number;
  readonly sizeBytes: number;
  /** Large object only: type index, usable (granule-rounded) and requested bytes, sealed. */
  readonly largeType: number;
  readonly largeUsableBytes: number;
  readonly largeRequestedBytes: number;
  largeSealed: boolean;
  /** RW window open (non-alias arches, inside batch()). */
  open: boolean;
}

/**
 * Build the pools for a range table: one per (family, range, fallback), and in front of each
 * family whose class has a threshold (`largeFrom`, limits.ts LARGE_TIER_FROM_BYTES) a 4 KiB-leaf
 * tier of SMALL_TIER_BLOCK_BYTES blocks that takes its objects until the family's live bytes
 * reach the threshold.
 */
export function buildPools(
  ranges: Readonly<Record<ExecmemType, TypeRange>>,
  sharing: PoolSharing,
  granuleBytes: number,
  smallObjectBytes: number,
  largeFrom: Readonly<Record<TypeClass, number>>,
): { pools: Pool[]; poolOfType: Pool[] } {
  const byKey = new Map<string, Pool>();
  const pools: Pool[] = [];
  const poolOfType: Pool[] = [];
  EXECMEM_TYPES.forEach((type, ti) => {
    const r = ranges[type];
    const family = familyOf(sharing, type, r.cls);
    const fb = r.fallback ? `${r.fallback.start}-${r.fallback.end}` : '-';
    const key = `${family}|${r.range.start}-${r.range.end}|${fb}`;
    let pool = byKey.get(key);
    if (pool === undefined) {
      const rai = r.cls === 'ro_after_init';
      const granule = rai ? SZ_4K : granuleBytes;
      pool = newPool(
        r,
        granule,
        rai ? RO_AFTER_INIT_BLOCK_BYTES : BLOCK_BYTES,
        rai ? SZ_4K : SZ_2M,
        smallObjectBytes,
        null,
        largeFrom[r.cls],
      );
      byKey.set(key, pool);
      pools.push(pool);
      if (largeFrom[r.cls] > 0) {
        const tierBytes = r.prot === 'rw' ? SMALL_TIER_BLOCK_BYTES : SMALL_TIER_RO_BLOCK_BYTES;
        pool.small = newPool(r, granule, tierBytes, SZ_4K, smallObjectBytes, pool, 0);
        pools.push(pool.small);
      }
    }
    pool.types.push(type);
    (pool as { name: string }).name = pool.types.join('+');
    if (pool.small !== null) {
      pool.small.types.push(type);
      (pool.small as { name: string }).name = `${pool.name}/small`;
    }
    poolOfType[ti] = pool;
  });
  return { pools, poolOfType };
}

function newPool(
  r: TypeRange,
  granule: number,
  blockBytes: number,
  leafBytes: number,
  smallObjectBytes: number,
  family: Pool | null,
  largeFromBytes: number,
): Pool {
  const small =
    blockBytes / granule > smallObjectBytes / granule ? Math.floor(smallObjectBytes / granule) : 0;
  const max = maxBlocks(r, granule, blockBytes);
  const pool: Pool = {
    name: r.type,
    types: [],
    cls: r.cls,
    prot: r.prot,
    range: r.range,
    fallback: r.fallback,
    granuleBytes: granule,
    blockBytes,
    leafBytes,
    heap: new Heap(granule, blockBytes, max, small, SPLIT_MIN_BLOCKS),
    blocks: [],
    largeBlocks: new Set(),
    everStart: 0,
    everEnd: 0,
    family: null as unknown as Pool,
    small: null,
    familyLiveBytes: 0,
    largeFromBytes,
    useLarge: largeFromBytes === 0,
    spare: null,
    spareSince: 0,
    pendingFillBytes: 0,
    pendingFillRuns: 0,
  };
  (pool as { family: Pool }).family = family ?? pool;
  return pool;
}

function familyOf(sharing: PoolSharing, type: ExecmemType, cls: TypeClass): string {
  if (sharing === 'type') return type;
  if (cls !== 'text') return cls;
  if (sharing === 'kind') return 'text';
  return type === 'module_text' ? 'module_text' : 'jit';
}

function maxBlocks(r: TypeRange, granule: number, blockBytes: number): number {
  const span = Math.max(r.range.end - r.range.start, r.fallback ? r.fallback.end - r.fallback.start : 0);
  const byRange = Math.max(1, Math.floor(span / blockBytes));
  const byIds = Math.floor(2 ** 31 / (blockBytes / granule));
  return Math.min(byRange, byIds, MAX_BLOCKS_PER_POOL);
}

/** Widen the pool's ever-mapped span to cover a new mapping. */
export function noteMapped(pool: Pool, va: number, sizeBytes: number): void {
  if (pool.everEnd === 0) {
    pool.everStart = va;
    pool.everEnd = va + sizeBytes;
    return;
  }
  pool.everStart = Math.min(pool.everStart, va);
  pool.everEnd = Math.max(pool.everEnd, va + sizeBytes);
}

/** The block directory (see the header). */
export class BlockDirectory {
  private readonly tables = new Map<number, Int32Array>();
  private cachedTop = -1;
  private cachedTable: Int32Array = new Int32Array(0);
  private readonly byId: (Block | undefined)[] = [];
  private readonly freeIds: number[] = [];

  register(block: Block): void {
    const id = this.freeIds.length > 0 ? this.freeIds.pop()! : this.byId.length;
    this.byId[id] = block;
    block.id = id;
    this.setEntries(block, id + 1);
  }

  unregister(block: Block): void {
    this.setEntries(block, 0);
    this.byId[block.id] = undefined;
    this.freeIds.push(block.id);
  }

  /** The block mapped at va, if any (a page-rounded large mapping may end inside its last entry). */
  blockAt(va: number): Block | undefined {
    const top = Math.floor(va / DIR_SPAN_BYTES);
    if (top !== this.cachedTop) {
      const table = this.tables.get(top);
      if (table === undefined) return undefined;
      this.cachedTop = top;
      this.cachedTable = table;
    }
    const entry = this.cachedTable[Math.floor((va - top * DIR_SPAN_BYTES) / CHUNK_BYTES)];
    if (entry === 0) return undefined;
    const block = this.byId[entry - 1]!;
    return va < block.va + block.sizeBytes ? block : undefined;
  }

  private setEntries(block: Block, entry: number): void {
    const end = Math.ceil((block.va + block.sizeBytes) / CHUNK_BYTES);
    for (let c = block.va / CHUNK_BYTES; c < end; c++) {
      const top = Math.floor(c / DIR_ENTRIES);
      let table = this.tables.get(top);
      if (table === undefined) {
        table = new Int32Array(DIR_ENTRIES);
        this.tables.set(top, table);
      }
      table[c - top * DIR_ENTRIES] = entry;
    }
  }
}

/** A pool's figures for stats(); `hex` renders addresses as the backend's callers see them. */
export function poolStats(pool: Pool, hex: (va: number) => string): ExecmemPoolStats {
  let mapped = 0;
  let large = 0;
  let fallback = 0;
  let small = 0;
  let empty = 0;
  let liveObjects = 0;
  for (const slot of pool.heap.slots()) {
    const block = pool.blocks[slot]!;
    mapped += block.sizeBytes;
    if (block.bb.largePages) large += block.sizeBytes;
    else if (pool.leafBytes === SZ_2M) fallback++;
    else small++;
    if (pool.heap.isBlockEmpty(slot)) empty++;
    liveObjects += pool.heap.liveRunCount(slot);
  }
  let largeLive = 0;
  let slack = 0;
  for (const block of pool.largeBlocks) {
    mapped += block.sizeBytes;
    if (block.bb.largePages) large += block.sizeBytes;
    largeLive += block.largeUsableBytes;
    slack += block.sizeBytes - block.largeUsableBytes;
  }
  const gb = pool.granuleBytes;
  return {
    types: [...pool.types],
    prot: pool.prot,
    granuleBytes: gb,
    blockBytes: pool.blockBytes,
    leafBytes: pool.leafBytes,
    rangeStart: hex(pool.range.start),
    rangeEnd: hex(pool.range.end),
    liveBytes: pool.heap.usedGranules * gb + largeLive - pool.pendingFillBytes,
    liveObjects: liveObjects + pool.largeBlocks.size - pool.pendingFillRuns,
    mappedBytes: mapped,
    largeMappedBytes: large,
    freeBytes: pool.heap.freeGranules * gb,
    pendingFillBytes: pool.pendingFillBytes,
    largestFreeBytes: pool.heap.largestFreeGranules() * gb,
    blocks: pool.heap.blockCount,
    fallbackBlocks: fallback,
    smallLeafBlocks: small,
    smallObjectBlocks: pool.heap.blockCountOf(SMALL),
    emptyBlocks: empty,
    largeObjects: pool.largeBlocks.size,
    largeSlackBytes: slack,
    metadataBytes: pool.heap.metadataBytes(),
  };
}
