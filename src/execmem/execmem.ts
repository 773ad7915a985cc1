/**
 * execmem: one allocator for executable memory and module memory, by type.
 *
 * The rules it follows and why (DESIGN.md section 2; sources in ../shared/research):
 * - Allocate by type; the allocator owns ranges, alignment, page size and protections. Callers
 *   pass only a gfp-like context (may it grow the cache?) and an optional alignment (tglx's
 *   type descriptors <87v8mndy3y.ffs@tglx>; Kent: granularity "is an internal mm/ detail",
 *   <ZHF21CSxyjQy9C7F@moria.home.lan>).
 * - Never W+X: text blocks are trap-filled while RW+NX, made ROX once, and handed out piece by
 *   piece with no permission change and no flush (the execmem ROX cache design, mm/execmem.c).
 * - One write path, `update()`: an alias write where the backend has one (x86 text_poke through
 *   a temporary mm, arm64 fixmap, host RW view), else unprotect/write/protect inside the helper,
 *   under one lock (Kent's jitalloc_update, <ZHFDO/95KMXRdOWI@moria.home.lan>). Nothing outside
 *   this file flips permissions. On non-alias arches the helper flips the whole block, whose
 *   mapping is one 2 MiB leaf, so a flip changes one PMD entry and never splits the large page
 *   (sub-range flips would split it, and only x86 collapses it back); `batch()` keeps a block's
 *   window open across many updates so it flips once per direction.
 * - Sub-page packing: blocks of 2 MiB are shared by many objects at a small granule (75% of BPF
 *   programs are < 2 KiB, half < 500 B; Song Liu, <20221107223921.3451913-1-song@kernel.org>),
 *   with a TLSF heap per pool (heap.ts) so alloc and free are O(1) regardless of live objects
 *   or fragmentation. ro_after_init is packed at page granule: it is sealed page by page, so its
 *   blocks are small (RO_AFTER_INIT_BLOCK_BYTES) and mapped with 4 KiB leaves by design.
 * - Large pages, text and data never in one: pools are per family and per range; a pool holds
 *   only text (ROX), only rodata (RO), only ro_after_init, or only RW data (tglx: text and data in
 *   one 2M page means "RWX for the whole 2M page", <87mt86rbvy.ffs@tglx>). Blocks (all but
 *   ro_after_init's, which page-by-page sealing would split anyway) are mapped with 2 MiB leaves, physically 2 MiB aligned, so the direct-map alias changes at 2 MiB granularity
 *   at most; when the backend cannot get a 2 MiB frame it falls back to 4 KiB leaves and we count
 *   it. By default module text has its own pool and the short-lived text producers (bpf,
 *   kprobes, ftrace) share one, so a load/unload churn of BPF programs never pins blocks that
 *   long-lived module text needs, and vice versa. Measured (bench/execmem.ts): 9.7 MiB of module
 *   text loaded during a 60k-program BPF churn leaves 10 MiB mapped after the churn with these
 *   pools, and 28 MiB when all text types share one pool (module text scattered through the
 *   blocks the churn used pins them).
 * - Trap-fill free space and invalidate on free (x86 0xcc, arm64 BRK): free() re-fills through
 *   the alias (text_poke_set), so no flip and no global flush on alias arches.
 * - shrink() with hysteresis: keep one empty block per pool so a load/unload loop does not map
 *   and unmap each time (Linux frees a bpf pack the moment it is empty, kernel/bpf/core.c).
 * - Metadata never lives in executable memory: tags and bitmaps are side tables (heap.ts).
 * - Bad input: a typed ExecmemError and no state change. Validation happens before any mutation;
 *   growth maps, fills and protects a block before the allocator records it, and unmaps it again
 *   if any of those steps fails.
 *
 * Addresses: the public API uses bigint (kernel addresses exceed 2^53); the `*Va` twins use
 * 48-bit numbers for hot paths (base/addr.ts).
 */
import type { ExecmemType, Prot, VaRange } from '../arch/types.js';
import { archHex, archToBig, archToVa, EXECMEM_TYPES } from '../arch/types.js';
import { alignUp, isPow2, SZ_2M, SZ_4K } from '../base/addr.js';
import { assert } from '../base/assert.js';
import type { Backend, BackendBlock, BackendCounters, ExecLock } from './backend.js';
import { BackendError } from './backend.js';
import { ExecmemError } from './errors.js';
import { type BlockClass, Heap, SMALL } from './heap.js';
import { buildRangeTable, type TypeClass, type TypeRange } from './ranges.js';
import type { ExecmemCounters, ExecmemPoolStats, ExecmemStats, ExecmemTypeStats } from './stats.js';

/** How types share pools (a measurement knob; 'family' is the design). */
export type PoolSharing = 'family' | 'type' | 'kind';

export interface ExecmemOptions {
  /** KASLR offset RNG seed, default 1 (unused when the backend reports its modulesStart). */
  seed?: number;
  /** Randomise the module-area start (x86: 1..1024 pages), default true. */
  kaslr?: boolean;
  /** Packing granule for sub-page pools (16 or 64 bytes); default DEFAULT_GRANULE_BYTES. */
  granuleBytes?: 16 | 64;
  /** Which types share blocks; default 'family' (see header). */
  sharing?: PoolSharing;
  /**
   * Requests below this many bytes are placed apart from larger ones (SMALL_OBJECT_BYTES, the
   * default); 0 turns the segregation off. A measurement knob like `sharing`.
   */
  smallObjectBytes?: number;
}

export interface AllocContext {
  /** Must not map new blocks (gfp atomic): fails with EAGAIN instead of growing. */
  atomic?: boolean;
  /** Power of two, at most 4096. */
  alignBytes?: number;
}

/**
 * Packing granule, chosen by measurement (bench/execmem.ts, BPF churn, fake backend, small objects
 * apart): after 200k ops at 10k live both end at mapped/requested 1.207 on seed 23, and 16 B is
 * one block (4%) lower on two of seeds 1-6 (means 1.138 vs 1.151); after 2M ops at 100k live
 * 1.051 vs 1.055 (seed 23) and 1.058 vs 1.046 (seed 5). The rounding costs 0.2% vs 0.7% of live
 * bytes, side tables are about the same (they scale with runs, not granules), and throughput is
 * equal within noise. 64 B wins on what remains: every object starts on a cache
 * line (what JITs align function entries to), and it equals bpf_prog_pack's chunk, so the
 * comparison with Linux is like for like.
 */
export const DEFAULT_GRANULE_BYTES = 64;
/** Blocks are one 2 MiB leaf (PMD) each (every pool but ro_after_init). */
export const BLOCK_BYTES = SZ_2M;
/**
 * ro_after_init blocks: 256 KiB mapped with 4 KiB leaves, by design. The pool is page-granular
 * and sealed page by page after init, which splits a 2 MiB leaf anyway, so a large page buys it
 * nothing, while a whole 2 MiB block for a pool that is "a pretty small portion of modules" costs
 * most of it as empty mapped memory (tglx: "keep 2M pages for text and RW data, and split one
 * page for rodata", research/lkml-thread.md section 5). 256 KiB = 64 pages: big enough that a
 * typical module's ro_after_init (a few pages) packs many to a block, small enough that one spare
 * block (shrink's hysteresis) costs at most 256 KiB. Objects above it get their own 4 KiB-leaf
 * mapping, rounded to the page. Measured (cli compare/stats, mixed workload): the pool holds
 * 268 KiB live in 512 KiB mapped instead of 2048 KiB; execmem's mapped/live 1.61 -> 1.49.
 */
export const RO_AFTER_INIT_BLOCK_BYTES = 256 * 1024;
/**
 * Objects below this size (granule-rounded) are placed apart from larger ones: SMALL blocks hold
 * only them, and they spill into holes of LARGE blocks only when the SMALL blocks are full (never
 * the reverse), so small objects do not chop up the holes large ones need. Measured
 * (bench/execmem.ts, BPF churn, fake backend): mapped/requested after a 2M-op churn at 100k live
 * 1.122 -> 1.055 (seed 23), after 200k-op churns at 10k live, mean of seeds 1-6, 1.192 -> 1.151.
 * 2 KiB is the published BPF split ("75% ... less than 2kB", Song Liu
 * <20221107223921.3451913-1-song@kernel.org>); in a first version without spill, 1 KiB, 4 KiB
 * and three classes (512 B / 2 KiB / 8 KiB) measured worse than 2 KiB at 10k live (more partly
 * filled blocks). Pools at page granule (ro_after_init) have no small class.
 */
export const SMALL_OBJECT_BYTES = 2048;
/**
 * The split turns on once a pool has this many blocks (32 MiB); smaller pools keep small and large
 * objects together. The SMALL blocks' last, partly filled block costs about half a block in any
 * pool; the holes the split saves pay only under churn (about 6% of the pool at 100k live).
 * Measured, execmem's mapped/live with the split from 0 / 8 / 16 blocks (unsplit): cli compare
 * mixed 2.13 / 1.49 / 1.49 (1.49), debian-modules 1.22 / 1.17 / 1.12 (1.12); BPF churn at 10k
 * live, mean over seeds 1-6 and 23, 1.147 / 1.141 / 1.159 (1.194). 16 leaves every compare
 * workload where it was.
 */
export const SPLIT_MIN_BLOCKS = 16;
/** Block look-up granule: the smallest block size, so no two blocks share a look-up slot. */
const CHUNK_BYTES = RO_AFTER_INIT_BLOCK_BYTES;
/** Address span of one block-directory table (execmem.blockAt): 4096 entries of CHUNK_BYTES. */
const DIR_SPAN_BYTES = 2 ** 30;
const DIR_ENTRIES = DIR_SPAN_BYTES / CHUNK_BYTES;
/** Explicit limits. */
export const MAX_ALLOC_BYTES = 256 * 1024 * 1024;
export const MAX_ALIGN_BYTES = SZ_4K;
const MAX_BLOCKS_PER_POOL = 8192;

const TYPE_INDEX: ReadonlyMap<string, number> = new Map(EXECMEM_TYPES.map((t, i) => [t, i]));
/** kinds byte of a used run: low 3 bits type index, bit 3 sealed. */
const KIND_TYPE_MASK = 7;
const KIND_SEALED = 8;

const ZERO = Uint8Array.of(0);

interface Pool {
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
}

interface Block {
  readonly pool: Pool;
  /** Index in the block directory (register()). */
  id: number;
  /** Heap slot of a shared block; -1 for a large object's own mapping. */
  readonly slot: number;
  readonly bb: BackendBlock;
  readonly va: number;
  readonly sizeBytes: number;
  /** Large object only: type index, usable bytes, sealed. */
  readonly largeType: number;
  readonly largeUsableBytes: number;
  largeSealed: boolean;
  /** RW window open (non-alias arches, inside batch()). */
  open: boolean;
}

/** In-process lock: JavaScript is single-threaded here, so it only asserts non-reentrancy. */
class LocalLock implements ExecLock {
  private held = false;
  acquire(): void {
    assert(!this.held, 'execmem lock taken twice (re-entrant call)');
    this.held = true;
  }
  release(): void {
    assert(this.held, 'execmem lock released while not held');
    this.held = false;
  }
}

function fail(code: ExecmemError['code'], message: string): never {
  throw new ExecmemError(code, message);
}

function fromBackend(e: unknown, what: string): never {
  if (e instanceof BackendError) {
    const code = e.code === 'ENOMEM' || e.code === 'ENOSPC' ? e.code : 'ENOMEM';
    throw new ExecmemError(code, `${what}: ${e.message}`);
  }
  throw e;
}

export class Execmem {
  readonly backend: Backend;
  readonly ranges: Readonly<Record<ExecmemType, TypeRange>>;
  readonly granuleBytes: number;
  readonly sharing: PoolSharing;
  readonly smallObjectBytes: number;
  private readonly lock: ExecLock;
  private readonly pools: Pool[] = [];
  private readonly poolOfType: Pool[] = [];
  /**
   * Block directory: per DIR_SPAN_BYTES of address space that holds blocks, a table with one
   * entry per CHUNK_BYTES (block id + 1, 0 = none); the table last used is cached. A typed
   * array read instead of a Map of boxed 48-bit keys: one cache line per look-up.
   */
  private readonly dirTables = new Map<number, Int32Array>();
  private dirTop = -1;
  private dirTable: Int32Array = new Int32Array(0);
  private readonly blockById: (Block | undefined)[] = [];
  private readonly freeBlockIds: number[] = [];
  private readonly liveBytes = new Float64Array(EXECMEM_TYPES.length);
  private readonly liveObjects = new Float64Array(EXECMEM_TYPES.length);
  private readonly baseline: BackendCounters;
  private readonly counts = {
    allocs: 0,
    frees: 0,
    updates: 0,
    seals: 0,
    batches: 0,
    blocksMapped: 0,
    blocksReleased: 0,
    atomicRefusals: 0,
  };
  private batchDepth = 0;
  private readonly openBlocks: Block[] = [];
  // Scratch results of locate() (no allocation on the hot path).
  private hitBlock: Block | undefined;
  private hitStart = 0;
  private hitBytes = 0;
  private hitKind = 0;

  constructor(backend: Backend, options: ExecmemOptions = {}) {
    const seed = options.seed ?? 1;
    const granule = options.granuleBytes ?? DEFAULT_GRANULE_BYTES;
    if (granule !== 16 && granule !== 64) fail('EINVAL', `granuleBytes must be 16 or 64, got ${granule}`);
    if (!Number.isInteger(seed)) fail('EINVAL', `seed must be an integer, got ${seed}`);
    const small = options.smallObjectBytes ?? SMALL_OBJECT_BYTES;
    if (!Number.isSafeInteger(small) || small < 0 || small >= BLOCK_BYTES)
      fail('EINVAL', `smallObjectBytes must be an integer in [0, ${BLOCK_BYTES}), got ${String(small)}`);
    const sharing = options.sharing ?? 'family';
    if (sharing !== 'family' && sharing !== 'type' && sharing !== 'kind')
      fail('EINVAL', `unknown sharing '${sharing}'`);
    assert(backend.largePageBytes === BLOCK_BYTES, 'backend large page must be 2 MiB');
    assert(backend.pageBytes === SZ_4K, 'backend page must be 4 KiB');
    this.backend = backend;
    this.granuleBytes = granule;
    this.sharing = sharing;
    this.smallObjectBytes = small;
    this.lock = backend.lock ?? new LocalLock();
    this.ranges = buildRangeTable(backend.arch, options.kaslr ?? true, seed, backend.modulesStart);
    this.buildPools();
    this.baseline = { ...backend.counters() };
  }

  // ---------------------------------------------------------------- public API (bigint)

  alloc(type: ExecmemType, sizeBytes: number, ctx?: AllocContext): bigint {
    return this.toBig(this.allocVa(type, sizeBytes, ctx));
  }

  update(dst: bigint, bytes: Uint8Array): void {
    this.updateVa(this.toNum(dst), bytes);
  }

  free(ptr: bigint): void {
    this.freeVa(this.toNum(ptr));
  }

  seal(ptr: bigint): void {
    this.sealVa(this.toNum(ptr));
  }

  read(ptr: bigint, sizeBytes: number): Uint8Array {
    return this.readVa(this.toNum(ptr), sizeBytes);
  }

  /** The 64-bit form of a 48-bit address as this backend's callers see it. */
  toBig(va: number): bigint {
    return this.backend.kind === 'host' ? BigInt(va) : archToBig(this.backend.arch, va);
  }

  // ---------------------------------------------------------------- hot-path twins (numbers)

  allocVa(type: ExecmemType, sizeBytes: number, ctx?: AllocContext): number {
    const ti = TYPE_INDEX.get(type as string);
    if (ti === undefined)
      fail('EINVAL', `unknown type '${String(type)}' (known: ${EXECMEM_TYPES.join(', ')})`);
    if (typeof sizeBytes !== 'number' || !Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) {
      fail('EINVAL', `size must be a positive integer number of bytes, got ${String(sizeBytes)}`);
    }
    const pool = this.poolOfType[ti];
    const rangeBytes = Math.max(
      pool.range.end - pool.range.start,
      pool.fallback ? pool.fallback.end - pool.fallback.start : 0,
    );
    if (sizeBytes > MAX_ALLOC_BYTES || sizeBytes > rangeBytes) {
      fail(
        'E2BIG',
        `size ${sizeBytes} exceeds the limit (${Math.min(MAX_ALLOC_BYTES, rangeBytes)} bytes) for ${type}`,
      );
    }
    const alignBytes = ctx?.alignBytes ?? 1;
    if (!isPow2(alignBytes) || alignBytes > MAX_ALIGN_BYTES) {
      fail('EINVAL', `alignment must be a power of two <= ${MAX_ALIGN_BYTES}, got ${String(alignBytes)}`);
    }
    const atomic = ctx?.atomic === true;
    this.enter();
    try {
      const va =
        sizeBytes > pool.blockBytes
          ? this.allocLarge(pool, ti, sizeBytes, atomic)
          : this.allocSmall(pool, ti, sizeBytes, alignBytes, atomic);
      this.counts.allocs++;
      return va;
    } finally {
      this.leave();
    }
  }

  updateVa(dst: number, bytes: Uint8Array): void {
    if (!(bytes instanceof Uint8Array) || bytes.length === 0)
      fail('EINVAL', 'update needs a non-empty Uint8Array');
    this.checkVa(dst);
    this.enter();
    try {
      this.locate(dst, false, 'update');
      const block = this.hitBlock!;
      if (dst + bytes.length > this.hitStart + this.hitBytes) {
        fail(
          'ERANGE',
          `update of ${bytes.length} bytes at ${this.hex(dst)} crosses the end of the allocation ` +
            `[${this.hex(this.hitStart)}, +${this.hitBytes})`,
        );
      }
      switch (block.pool.cls) {
        case 'data':
          this.plainWrite(dst, bytes);
          break;
        case 'ro_after_init':
          if (this.hitKind & KIND_SEALED)
            fail('EPERM', `ro_after_init allocation at ${this.hex(this.hitStart)} is sealed`);
          this.plainWrite(dst, bytes);
          break;
        default:
          this.helperWrite(block, dst, bytes);
      }
      this.counts.updates++;
    } finally {
      this.leave();
    }
  }

  freeVa(va: number): void {
    this.checkVa(va);
    this.enter();
    try {
      this.locate(va, true, 'free');
      const block = this.hitBlock!;
      const ti = this.hitKind & KIND_TYPE_MASK;
      const bytes = this.hitBytes;
      if (block.slot < 0) {
        this.releaseLarge(block);
      } else {
        this.invalidate(block, va, bytes, (this.hitKind & KIND_SEALED) !== 0);
        block.pool.heap.free(block.slot, (va - block.va) / block.pool.granuleBytes);
      }
      this.liveBytes[ti] -= bytes;
      this.liveObjects[ti]--;
      this.counts.frees++;
    } finally {
      this.leave();
    }
  }

  sealVa(va: number): void {
    this.checkVa(va);
    this.enter();
    try {
      this.locate(va, true, 'seal');
      const block = this.hitBlock!;
      if (block.pool.cls !== 'ro_after_init') {
        fail('EPERM', `seal needs a module_ro_after_init allocation; ${this.hex(va)} is ${block.pool.name}`);
      }
      if (this.hitKind & KIND_SEALED) fail('EPERM', `allocation at ${this.hex(va)} is already sealed`);
      this.protect(block, va, this.hitBytes, 'ro');
      if (block.slot < 0) block.largeSealed = true;
      else {
        const g = (va - block.va) / block.pool.granuleBytes;
        block.pool.heap.setKind(block.slot, g, this.hitKind | KIND_SEALED);
      }
      this.counts.seals++;
    } finally {
      this.leave();
    }
  }

  sizeOf(va: number): number {
    this.checkVa(va);
    this.enter();
    try {
      this.locate(va, true, 'sizeOf');
      return this.hitBytes;
    } finally {
      this.leave();
    }
  }

  /** The type of the live allocation containing va (tests, consumers). */
  typeOf(va: number): ExecmemType {
    this.checkVa(va);
    this.enter();
    try {
      this.locate(va, false, 'typeOf');
      return EXECMEM_TYPES[this.hitKind & KIND_TYPE_MASK];
    } finally {
      this.leave();
    }
  }

  readVa(va: number, sizeBytes: number): Uint8Array {
    this.checkVa(va);
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0)
      fail('EINVAL', `read size must be a positive integer`);
    const block = this.blockAt(va);
    if (block === undefined) fail('ENOENT', `${this.hex(va)} is not execmem memory`);
    if (va + sizeBytes > block.va + block.sizeBytes) fail('ERANGE', `read crosses the end of the block`);
    return this.backend.read(va, sizeBytes);
  }

  /**
   * Run `fn` holding the lock; updates and frees inside it open each touched block's RW window
   * once (non-alias arches) and close all windows when the outermost batch ends.
   */
  batch<T>(fn: () => T): T {
    if (this.batchDepth === 0) this.lock.acquire();
    this.batchDepth++;
    try {
      return fn();
    } finally {
      this.batchDepth--;
      if (this.batchDepth === 0) {
        try {
          this.closeWindows();
        } finally {
          this.counts.batches++;
          this.lock.release();
        }
      }
    }
  }

  /**
   * Release whole empty blocks beyond one spare per pool (or all empty blocks with
   * `keepSpare: false`, e.g. at teardown); returns the bytes released.
   */
  shrink(options?: { keepSpare?: boolean }): number {
    const keepSpare = options?.keepSpare ?? true;
    if (this.batchDepth > 0) fail('EBUSY', 'shrink inside batch()');
    this.enter();
    try {
      let released = 0;
      for (const pool of this.pools) {
        let keptSpare = !keepSpare;
        for (const slot of pool.heap.slots()) {
          if (!pool.heap.isBlockEmpty(slot)) continue;
          if (!keptSpare) {
            keptSpare = true;
            continue;
          }
          released += this.releaseBlock(pool.blocks[slot]!);
        }
      }
      return released;
    } finally {
      this.leave();
    }
  }

  stats(): ExecmemStats {
    const pools: Record<string, ExecmemPoolStats> = {};
    for (const pool of this.pools) pools[pool.name] = this.poolStats(pool);
    const types = {} as Record<ExecmemType, ExecmemTypeStats>;
    EXECMEM_TYPES.forEach((type, ti) => {
      const p = pools[this.poolOfType[ti].name];
      types[type] = {
        pool: this.poolOfType[ti].name,
        liveBytes: this.liveBytes[ti],
        liveObjects: this.liveObjects[ti],
        mappedBytes: p.mappedBytes,
        largeMappedBytes: p.largeMappedBytes,
        freeBytes: p.freeBytes,
        largestFreeBytes: p.largestFreeBytes,
        blocks: p.blocks,
        fallbackBlocks: p.fallbackBlocks,
      };
    });
    const now = this.backend.counters();
    const b = this.baseline;
    const counters: ExecmemCounters = {
      ...this.counts,
      allocSearchSteps: this.pools.reduce((sum, pool) => sum + pool.heap.searchSteps, 0),
      permissionFlips: now.permissionFlips - b.permissionFlips,
      pokes: now.pokes - b.pokes,
      pokeBytes: now.pokeBytes - b.pokeBytes,
      localFlushes: now.localFlushes - b.localFlushes,
      shootdowns: now.shootdowns - b.shootdowns,
      ipis: now.ipis - b.ipis,
      directMapSplits: now.directMapSplits - b.directMapSplits,
      hugeFallbacks: now.hugeFallbacks - b.hugeFallbacks,
    };
    return {
      backend: this.backend.kind,
      arch: this.backend.arch.name,
      aliasWrite: this.backend.hasAliasWrite,
      blockBytes: BLOCK_BYTES,
      types,
      pools,
      counters,
    };
  }

  /**
   * Every mapped region with its pool and, for shared blocks, its runs (tests and audits):
   * calls `fn` for each run of each block, in address order per block.
   */
  forEachRun(
    fn: (
      pool: string,
      prot: Prot,
      va: number,
      sizeBytes: number,
      used: boolean,
      type: ExecmemType | null,
    ) => void,
  ): void {
    for (const pool of this.pools) {
      for (const slot of pool.heap.slots()) {
        const block = pool.blocks[slot]!;
        const gb = pool.granuleBytes;
        pool.heap.forEachRun(slot, (g, len, used) => {
          const type = used ? EXECMEM_TYPES[pool.heap.kindAt(slot, g) & KIND_TYPE_MASK] : null;
          fn(pool.name, pool.prot, block.va + g * gb, len * gb, used, type);
        });
      }
      for (const block of pool.largeBlocks) {
        fn(pool.name, pool.prot, block.va, block.largeUsableBytes, true, EXECMEM_TYPES[block.largeType]);
        const slack = block.sizeBytes - block.largeUsableBytes;
        if (slack > 0) fn(pool.name, pool.prot, block.va + block.largeUsableBytes, slack, false, null);
      }
    }
  }

  /** Is this allocation sealed (tests)? */
  isSealed(va: number): boolean {
    this.enter();
    try {
      this.locate(va, true, 'isSealed');
      return (this.hitKind & KIND_SEALED) !== 0;
    } finally {
      this.leave();
    }
  }

  /** Full consistency check of the heaps and the block table (tests only). */
  audit(): void {
    for (const pool of this.pools) {
      pool.heap.audit();
      for (const slot of pool.heap.slots()) {
        const block = pool.blocks[slot];
        assert(
          block !== undefined && block.slot === slot,
          `audit: pool ${pool.name} slot ${slot} has no block`,
        );
        assert(this.blockAt(block.va) === block, 'audit: block not registered');
        assert(block.sizeBytes === pool.blockBytes, 'audit: shared block of the wrong size');
        assert(block.bb.largePages === false || pool.leafBytes === SZ_2M, 'audit: 2 MiB leaf in 4K pool');
      }
    }
    let live = 0;
    for (let ti = 0; ti < EXECMEM_TYPES.length; ti++) live += this.liveObjects[ti];
    let runs = 0;
    this.forEachRun((_p, _prot, _va, _size, used) => {
      if (used) runs++;
    });
    assert(runs === live, `audit: ${runs} used runs but ${live} live objects`);
  }

  // ---------------------------------------------------------------- internals: pools

  private buildPools(): void {
    const byKey = new Map<string, Pool>();
    EXECMEM_TYPES.forEach((type, ti) => {
      const r = this.ranges[type];
      const family = this.familyOf(type, r.cls);
      const fb = r.fallback ? `${r.fallback.start}-${r.fallback.end}` : '-';
      const key = `${family}|${r.range.start}-${r.range.end}|${fb}`;
      let pool = byKey.get(key);
      if (pool === undefined) {
        const rai = r.cls === 'ro_after_init';
        const granule = rai ? SZ_4K : this.granuleBytes;
        const blockBytes = rai ? RO_AFTER_INIT_BLOCK_BYTES : BLOCK_BYTES;
        const small = Math.floor(this.smallObjectBytes / granule);
        const max = this.maxBlocks(r, granule, blockBytes);
        const heap = new Heap(granule, blockBytes, max, small, SPLIT_MIN_BLOCKS);
        pool = {
          name: type,
          types: [],
          cls: r.cls,
          prot: r.prot,
          range: r.range,
          fallback: r.fallback,
          granuleBytes: granule,
          blockBytes,
          leafBytes: rai ? SZ_4K : SZ_2M,
          heap,
          blocks: [],
          largeBlocks: new Set(),
        };
        byKey.set(key, pool);
        this.pools.push(pool);
      }
      pool.types.push(type);
      (pool as { name: string }).name = pool.types.join('+');
      this.poolOfType[ti] = pool;
    });
  }

  private familyOf(type: ExecmemType, cls: TypeClass): string {
    if (this.sharing === 'type') return type;
    if (cls !== 'text') return cls;
    if (this.sharing === 'kind') return 'text';
    return type === 'module_text' ? 'module_text' : 'jit';
  }

  private maxBlocks(r: TypeRange, granule: number, blockBytes: number): number {
    const span = Math.max(r.range.end - r.range.start, r.fallback ? r.fallback.end - r.fallback.start : 0);
    const byRange = Math.max(1, Math.floor(span / blockBytes));
    const byIds = Math.floor(2 ** 31 / (blockBytes / granule));
    return Math.min(byRange, byIds, MAX_BLOCKS_PER_POOL);
  }

  // ---------------------------------------------------------------- internals: alloc

  private allocSmall(pool: Pool, ti: number, sizeBytes: number, alignBytes: number, atomic: boolean): number {
    const gb = pool.granuleBytes;
    const granules = Math.ceil(sizeBytes / gb);
    const alignGranules = alignBytes > gb ? alignBytes / gb : 1;
    let node = pool.heap.alloc(granules, alignGranules, ti);
    if (node < 0) {
      if (atomic) {
        this.counts.atomicRefusals++;
        fail('EAGAIN', `atomic ${EXECMEM_TYPES[ti]} allocation of ${sizeBytes} bytes needs a new block`);
      }
      this.grow(pool, pool.heap.classFor(granules));
      node = pool.heap.alloc(granules, alignGranules, ti);
      assert(node >= 0, 'a fresh block must satisfy a request of at most one block');
    }
    const slot = pool.heap.slotOfNode(node);
    const block = pool.blocks[slot]!;
    this.liveBytes[ti] += granules * gb;
    this.liveObjects[ti]++;
    return block.va + pool.heap.granuleOfNode(node) * gb;
  }

  private allocLarge(pool: Pool, ti: number, sizeBytes: number, atomic: boolean): number {
    if (atomic) {
      this.counts.atomicRefusals++;
      fail('EAGAIN', `atomic allocation of ${sizeBytes} bytes needs its own mapping`);
    }
    const mapBytes = alignUp(sizeBytes, pool.leafBytes);
    const usable = alignUp(sizeBytes, pool.granuleBytes);
    const bb = this.mapPrepared(pool, mapBytes);
    const block: Block = {
      pool,
      id: -1,
      slot: -1,
      bb,
      va: bb.va,
      sizeBytes: bb.sizeBytes,
      largeType: ti,
      largeUsableBytes: usable,
      largeSealed: false,
      open: false,
    };
    pool.largeBlocks.add(block);
    this.register(block);
    this.liveBytes[ti] += usable;
    this.liveObjects[ti]++;
    return block.va;
  }

  /** Map one more shared block for the pool: RW+NX, filled, then given the pool's protection. */
  private grow(pool: Pool, cls: BlockClass): void {
    if (!pool.heap.hasFreeSlot())
      fail('ENOSPC', `pool ${pool.name} reached its block limit (${pool.heap.maxSlots})`);
    const bb = this.mapPrepared(pool, pool.blockBytes);
    const slot = pool.heap.addBlock(cls);
    const block: Block = {
      pool,
      id: -1,
      slot,
      bb,
      va: bb.va,
      sizeBytes: bb.sizeBytes,
      largeType: -1,
      largeUsableBytes: 0,
      largeSealed: false,
      open: false,
    };
    pool.blocks[slot] = block;
    this.register(block);
  }

  private mapPrepared(pool: Pool, sizeBytes: number): BackendBlock {
    let bb: BackendBlock;
    try {
      bb = this.backend.mapBlock({
        type: pool.types[0],
        range: pool.range,
        fallback: pool.fallback,
        sizeBytes,
        alignBytes: pool.blockBytes,
        huge: pool.leafBytes === SZ_2M,
      });
    } catch (e) {
      fromBackend(e, `mapping a ${sizeBytes}-byte block for ${pool.name}`);
    }
    try {
      assert(
        bb.va % pool.blockBytes === 0 &&
          bb.sizeBytes === sizeBytes &&
          (pool.leafBytes === SZ_2M || !bb.largePages),
        'backend returned a misplaced block',
      );
      if (pool.cls === 'text') this.backend.fill(bb.va, sizeBytes, this.backend.arch.trapPattern);
      else this.backend.fill(bb.va, sizeBytes, ZERO);
      if (pool.prot !== 'rw') this.backend.protect(bb, bb.va, sizeBytes, pool.prot);
    } catch (e) {
      this.backend.unmapBlock(bb);
      fromBackend(e, `preparing a block for ${pool.name}`);
    }
    this.counts.blocksMapped++;
    return bb;
  }

  /** Directory entries of a block: blocks are CHUNK_BYTES aligned, so no entry holds two blocks. */
  private register(block: Block): void {
    const id = this.freeBlockIds.length > 0 ? this.freeBlockIds.pop()! : this.blockById.length;
    this.blockById[id] = block;
    block.id = id;
    this.setDirectory(block, id + 1);
  }

  private unregister(block: Block): void {
    this.setDirectory(block, 0);
    this.blockById[block.id] = undefined;
    this.freeBlockIds.push(block.id);
  }

  private setDirectory(block: Block, entry: number): void {
    const end = Math.ceil((block.va + block.sizeBytes) / CHUNK_BYTES);
    for (let c = block.va / CHUNK_BYTES; c < end; c++) {
      const top = Math.floor(c / DIR_ENTRIES);
      let table = this.dirTables.get(top);
      if (table === undefined) {
        table = new Int32Array(DIR_ENTRIES);
        this.dirTables.set(top, table);
      }
      table[c - top * DIR_ENTRIES] = entry;
    }
  }

  /** The block mapped at va, if any (a page-rounded large mapping may end inside its last entry). */
  private blockAt(va: number): Block | undefined {
    const top = Math.floor(va / DIR_SPAN_BYTES);
    if (top !== this.dirTop) {
      const table = this.dirTables.get(top);
      if (table === undefined) return undefined;
      this.dirTop = top;
      this.dirTable = table;
    }
    const entry = this.dirTable[Math.floor((va - top * DIR_SPAN_BYTES) / CHUNK_BYTES)];
    if (entry === 0) return undefined;
    const block = this.blockById[entry - 1]!;
    return va < block.va + block.sizeBytes ? block : undefined;
  }

  private releaseBlock(block: Block): number {
    const pool = block.pool;
    assert(block.slot >= 0 && pool.heap.isBlockEmpty(block.slot), 'releaseBlock: block in use');
    assert(!block.open, 'releaseBlock: block has an open window');
    this.backend.unmapBlock(block.bb);
    pool.heap.removeBlock(block.slot);
    pool.blocks[block.slot] = undefined;
    this.unregister(block);
    this.counts.blocksReleased++;
    return block.sizeBytes;
  }

  private releaseLarge(block: Block): void {
    if (block.open) {
      // Freed inside a batch after an update opened it: unmapping resets its protections anyway.
      this.openBlocks.splice(this.openBlocks.indexOf(block), 1);
      block.open = false;
    }
    this.backend.unmapBlock(block.bb);
    block.pool.largeBlocks.delete(block);
    this.unregister(block);
    this.counts.blocksReleased++;
  }

  // ---------------------------------------------------------------- internals: lookup

  /**
   * Find the live allocation at (needStart) or containing va; fills hitBlock/hitStart/hitBytes/
   * hitKind or throws ENOENT / EFREE / EINSIDE. O(1) for starts; interior addresses scan back
   * over the block's run-start bitmap, bounded by the allocation's own length.
   */
  private locate(va: number, needStart: boolean, op: string): void {
    const block = this.blockAt(va);
    if (block === undefined) fail('ENOENT', `${op}: ${this.hex(va)} is not execmem memory`);
    if (block.slot < 0) {
      const end = block.va + block.largeUsableBytes;
      if (va >= end) fail('EFREE', `${op}: ${this.hex(va)} is in the slack after a large allocation`);
      if (needStart && va !== block.va)
        fail('EINSIDE', `${op}: ${this.hex(va)} is inside the allocation at ${this.hex(block.va)}`);
      this.hitBlock = block;
      this.hitStart = block.va;
      this.hitBytes = block.largeUsableBytes;
      this.hitKind = block.largeType | (block.largeSealed ? KIND_SEALED : 0);
      return;
    }
    const heap = block.pool.heap;
    const gb = block.pool.granuleBytes;
    const off = va - block.va;
    const g = Math.floor(off / gb);
    let id = off === g * gb ? heap.runIdAt(block.slot, g) : -1;
    const exact = id >= 0;
    if (!exact) {
      id = heap.usedRunCovering(block.slot, g);
      if (id < 0) fail('EFREE', `${op}: ${this.hex(va)} is free memory (double free, or never allocated)`);
    }
    const start = heap.startOf(id);
    const tag = heap.lenOf(id);
    if (tag < 0) fail('EFREE', `${op}: ${this.hex(va)} is free memory (double free, or never allocated)`);
    if (needStart && !exact) {
      fail(
        'EINSIDE',
        `${op}: ${this.hex(va)} is inside the allocation at ${this.hex(block.va + start * gb)}`,
      );
    }
    this.hitBlock = block;
    this.hitStart = block.va + start * gb;
    this.hitBytes = tag * gb;
    this.hitKind = heap.kindOf(id);
  }

  // ---------------------------------------------------------------- internals: writes

  private plainWrite(dst: number, bytes: Uint8Array): void {
    try {
      this.backend.write(dst, bytes);
    } catch (e) {
      fromBackend(e, 'write');
    }
  }

  /** The one write helper for memory callers may not write plainly (text, rodata). */
  private helperWrite(block: Block, dst: number, bytes: Uint8Array): void {
    try {
      if (this.backend.hasAliasWrite) {
        this.backend.poke(dst, bytes);
        return;
      }
      this.openWindow(block);
      try {
        this.backend.write(dst, bytes);
      } finally {
        if (this.batchDepth === 0) this.closeWindow(block);
      }
    } catch (e) {
      fromBackend(e, 'update');
    }
  }

  /** Fill free space of text/rodata through the helper. */
  private helperFill(block: Block, va: number, sizeBytes: number, pattern: Uint8Array): void {
    try {
      if (this.backend.hasAliasWrite) {
        this.backend.pokeSet(va, sizeBytes, pattern);
        return;
      }
      this.openWindow(block);
      try {
        this.backend.fill(va, sizeBytes, pattern);
      } finally {
        if (this.batchDepth === 0) this.closeWindow(block);
      }
    } catch (e) {
      fromBackend(e, 'invalidate');
    }
  }

  /** Make freed space safe again: traps for text, zeros for data (unsealing ro_after_init first). */
  private invalidate(block: Block, va: number, sizeBytes: number, sealed: boolean): void {
    switch (block.pool.cls) {
      case 'text':
        this.helperFill(block, va, sizeBytes, this.backend.arch.trapPattern);
        return;
      case 'rodata':
        this.helperFill(block, va, sizeBytes, ZERO);
        return;
      case 'ro_after_init':
        if (sealed) this.protect(block, va, sizeBytes, 'rw');
        this.backend.fill(va, sizeBytes, ZERO);
        return;
      case 'data':
        this.backend.fill(va, sizeBytes, ZERO);
        return;
    }
  }

  private protect(block: Block, va: number, sizeBytes: number, prot: Prot): void {
    try {
      this.backend.protect(block.bb, va, sizeBytes, prot);
    } catch (e) {
      fromBackend(e, `protect ${prot}`);
    }
  }

  private openWindow(block: Block): void {
    if (block.open) return;
    this.backend.protect(block.bb, block.va, block.sizeBytes, 'rw');
    block.open = true;
    if (this.batchDepth > 0) this.openBlocks.push(block);
  }

  private closeWindow(block: Block): void {
    if (!block.open) return;
    this.backend.protect(block.bb, block.va, block.sizeBytes, block.pool.prot);
    block.open = false;
  }

  private closeWindows(): void {
    while (this.openBlocks.length > 0) this.closeWindow(this.openBlocks.pop()!);
  }

  // ---------------------------------------------------------------- internals: misc

  private enter(): void {
    if (this.batchDepth === 0) this.lock.acquire();
  }

  private leave(): void {
    if (this.batchDepth === 0) this.lock.release();
  }

  private checkVa(va: number): void {
    if (typeof va !== 'number' || !Number.isSafeInteger(va) || va < 0)
      fail('EINVAL', `bad address ${String(va)}`);
  }

  private toNum(addr: bigint): number {
    if (typeof addr !== 'bigint') fail('EINVAL', `address must be a bigint, got ${typeof addr}`);
    if (this.backend.kind === 'host') {
      if (addr < 0n || addr >= 1n << 53n) fail('EINVAL', `bad host address 0x${addr.toString(16)}`);
      return Number(addr);
    }
    try {
      return archToVa(this.backend.arch, addr);
    } catch (e) {
      if (e instanceof RangeError) fail('EINVAL', e.message);
      throw e;
    }
  }

  private hex(va: number): string {
    return this.backend.kind === 'host' ? `0x${va.toString(16)}` : archHex(this.backend.arch, va);
  }

  private poolStats(pool: Pool): ExecmemPoolStats {
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
      rangeStart: this.hex(pool.range.start),
      rangeEnd: this.hex(pool.range.end),
      liveBytes: pool.heap.usedGranules * gb + largeLive,
      liveObjects: liveObjects + pool.largeBlocks.size,
      mappedBytes: mapped,
      largeMappedBytes: large,
      freeBytes: pool.heap.freeGranules * gb,
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
}
