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
 *   the allocator flips permissions (writer.ts; store.ts only protects a new block once). On
 *   non-alias arches the helper flips the whole block, whose mapping is one 2 MiB leaf, so a
 *   flip changes one PMD entry and never splits the large page (sub-range flips would split it,
 *   and only x86 collapses it back); `batch()` keeps a block's window open across many updates
 *   so it flips once per direction.
 * - Sub-page packing: blocks of 2 MiB are shared by many objects at a small granule (75% of BPF
 *   programs are < 2 KiB, half < 500 B; Song Liu, <20221107223921.3451913-1-song@kernel.org>),
 *   with a TLSF heap per pool (heap.ts) so alloc and free are O(1) regardless of live objects
 *   or fragmentation. ro_after_init is packed at page granule: it is sealed page by page, so its
 *   blocks are small (RO_AFTER_INIT_BLOCK_BYTES) and mapped with 4 KiB leaves by design.
 * - Large pages, text and data never in one: pools are per family and per range; a pool holds
 *   only text (ROX), only rodata (RO), only ro_after_init, or only RW data (tglx: text and data in
 *   one 2M page means "RWX for the whole 2M page", <87mt86rbvy.ffs@tglx>). Blocks (all but
 *   ro_after_init's, which page-by-page sealing would split anyway) are mapped with 2 MiB leaves,
 *   physically 2 MiB aligned, so the direct-map alias changes at 2 MiB granularity at most; when the backend cannot get a 2 MiB frame it falls back to 4 KiB leaves and we count
 *   it. By default module text has its own pool and the short-lived text producers (bpf,
 *   kprobes, ftrace) share one, so a load/unload churn of BPF programs never pins blocks that
 *   long-lived module text needs, and vice versa. Measured (bench/execmem.ts): 9.7 MiB of module
 *   text loaded during a 60k-program BPF churn leaves 10 MiB mapped after the churn with these
 *   pools, and 28 MiB when all text types share one pool (module text scattered through the
 *   blocks the churn used pins them).
 * - Trap-fill free space and invalidate on free (x86 0xcc, arm64 BRK): free() re-fills through
 *   the alias (text_poke_set), so no flip and no global flush on alias arches.
 * - Memory that fits small live sets (issue 12 item 2; limits.ts, docs/MEMORY.md): a free that
 *   empties a block keeps it as its pool's one spare, released once it has stayed empty for
 *   RELEASE_DELAY_CALLS calls (a release delay, where Linux's execmem_cache_clean releases at
 *   once and the old rule here kept every block until shrink()); data, rodata and ro_after_init
 *   families start in 4 KiB-leaf small blocks and move to 2 MiB blocks at LARGE_TIER_FROM_BYTES;
 *   text is on 2 MiB from its first byte (iTLB). shrink() releases empty blocks beyond one
 *   spare per pool (Linux frees a bpf pack the moment it is empty, kernel/bpf/core.c).
 * - Metadata never lives in executable memory: tags and bitmaps are side tables (heap.ts).
 * - A failed call changes nothing (DESIGN.md section 5; issue 16). Arguments are checked before
 *   the lock is taken (args.ts). Every call makes its one fallible step first, and that step is
 *   atomic in the backend, so when it fails nothing has moved: growth maps, fills and protects a
 *   block before the allocator records it, and unmaps it again if a step fails; seal and the
 *   unseal in a free of sealed ro_after_init are one set_memory_* call, which the machine rolls
 *   back (machine/cpa.ts); the free of a large object is one vfree, which the machine makes
 *   atomic (machine/vmalloc.ts), and the allocator forgets the object only after it succeeded;
 *   an update or free on a non-alias arch fails only when opening the write window. Closing a
 *   window restores the protection the same range had before it opened, which the backend
 *   contract says cannot fail (backend.ts protect), so nothing is written and then left open.
 *   shrink() is best effort and cannot fail for lack of memory: a block whose unmap fails stays
 *   mapped, empty and consistent, and the next shrink() tries again. Physical-memory failures
 *   surface as ExecmemError ENOMEM, never as a backend's or the machine's own error.
 * - No call runs while another is in progress on the same allocator: an argument's getter, a
 *   Proxy trap or a forEachRun callback that calls back in gets EBUSY (only batch()'s callback
 *   may call in: that is what it is for). The lock the backend provides guards other threads;
 *   this guards the allocator's own call stack.
 * - The state the "failed calls change nothing" contract covers is everything stats() reports
 *   and the backend holds (blocks, protections, contents), except the cost counters, which count
 *   work really done whatever the outcome (stats.ts ExecmemCounters, COST_COUNTERS): attempts
 *   (atomicRefusals: an EAGAIN is what it counts; allocSearchSteps) and the backend's costs,
 *   which move only when a growth failed after its block was mapped (and unmapped again). The
 *   operation counters count completed calls only; `batches` counts batches whose callback
 *   returned.
 *
 * Addresses: the public API uses bigint (kernel addresses exceed 2^53): every method that takes
 * an address takes what `alloc` returns. The `*Va` twins (allocVa, updateVa, freeVa, sealVa,
 * readVa, sizeOfVa, typeOfVa, isSealedVa) take and return the 48-bit form as a number, for hot
 * paths and the layers below (base/addr.ts); their name says so. A bigint where a number is
 * expected, or the reverse, is EINVAL with a message naming the form the method takes.
 *
 * Files: this one is the public surface (argument checks, the lock, the re-entrancy guard, the
 * order of each call's steps); args.ts checks arguments; store.ts maps blocks, places objects
 * and finds them (pools.ts: pools and the block directory; heap.ts: the TLSF heap); writer.ts
 * is the write helper and the only code that changes the protection of a block in use (store.ts
 * gives a new block its pool's protection once); limits.ts holds the sizes.
 */
import type { ExecmemType } from '../arch/types.js';
import { archHex, archToBig, archToVa, EXECMEM_TYPES } from '../arch/types.js';
import { assert } from '../base/assert.js';
import { describe } from '../base/describe.js';
import {
  checkAddress,
  checkAlloc,
  checkBackend,
  checkBytes,
  checkOptions,
  checkReadSize,
  checkShrink,
} from './args.js';
import type { Backend, BackendCounters, ExecLock } from './backend.js';
import { fail, fromBackend } from './errors.js';
import { PendingFills } from './fills.js';
import {
  BLOCK_BYTES,
  DEFAULT_GRANULE_BYTES,
  FILL_DELAY_CALLS,
  FILL_QUEUE_RUNS,
  MAX_ALLOC_BYTES,
  type PoolSharing,
} from './limits.js';
import { type Block, KIND_SEALED, KIND_TYPE_MASK, poolStats } from './pools.js';
import { buildRangeTable, type TypeClass, type TypeRange } from './ranges.js';
import type { ExecmemCounters, ExecmemPoolStats, ExecmemStats, ExecmemTypeStats } from './stats.js';
import { BlockStore, type RunVisitor } from './store.js';
import { Writer } from './writer.js';

export {
  BLOCK_BYTES,
  DEFAULT_GRANULE_BYTES,
  LARGE_TIER_FROM_BYTES,
  MAX_ALIGN_BYTES,
  MAX_ALLOC_BYTES,
  type PoolSharing,
  RELEASE_DELAY_CALLS,
  RO_AFTER_INIT_BLOCK_BYTES,
  SMALL_OBJECT_BYTES,
  SPLIT_MIN_BLOCKS,
} from './limits.js';

export interface ExecmemOptions {
  /** KASLR offset RNG seed, a non-negative integer; default 1 (unused when the backend reports its modulesStart). */
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
  /**
   * Per class, the live bytes from which a family's objects go to 2 MiB blocks instead of its
   * 4 KiB-leaf tier (LARGE_TIER_FROM_BYTES, the default; 0: large blocks from the start). A
   * measurement knob like `sharing`.
   */
  largeFromBytes?: Partial<Record<TypeClass, number>>;
  /**
   * Allocator calls an emptied block stays mapped as its pool's spare before the clean releases
   * it (RELEASE_DELAY_CALLS, the default; 0: at once, as Linux). A measurement knob.
   */
  releaseDelayCalls?: number;
  /**
   * A block a free empties is released at once when it is more than 1/spareMaxShare of all the
   * allocator maps (SPARE_MAX_SHARE, the default, is 0: never). A measurement knob.
   */
  spareMaxShare?: number;
  /**
   * When a free of text or rodata writes its trap fill. 'immediate' (the default, DESIGN.md rule
   * 6: a stale pointer traps as soon as free returns) opens a write session per free outside a
   * batch. 'deferred' queues the fill for the next write session on backends that have sessions
   * (fills.ts, limits.ts FILL_QUEUE_RUNS): one flush per update instead of one per update and one
   * per free, at the price of freed code staying in place, unreachable through the allocator, for
   * at most FILL_DELAY_CALLS calls. A measurement knob (docs/LEAD.md has both).
   */
  fillOnFree?: 'deferred' | 'immediate';
}

export interface AllocContext {
  /** Must not map new blocks (gfp atomic): fails with EAGAIN instead of growing. */
  atomic?: boolean;
  /** Power of two, at most 4096. */
  alignBytes?: number;
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

export class Execmem {
  readonly backend: Backend;
  readonly ranges: Readonly<Record<ExecmemType, TypeRange>>;
  readonly granuleBytes: number;
  readonly sharing: PoolSharing;
  readonly smallObjectBytes: number;
  /** Per class, the family live bytes from which objects go to large-page blocks (limits.ts). */
  readonly largeFromBytes: Readonly<Record<TypeClass, number>>;
  private readonly lock: ExecLock;
  private readonly store: BlockStore;
  private readonly writer: Writer;
  /** Queued trap fills (fills.ts); null when frees fill at once (no sessions, or the knob). */
  private readonly fills: PendingFills | null;
  private readonly baseline: BackendCounters;
  private readonly counts = { allocs: 0, frees: 0, updates: 0, seals: 0, batches: 0 };
  /** A call is in progress (see the header: re-entrant calls get EBUSY). */
  private busy = false;

  constructor(backend: Backend, options: ExecmemOptions = {}) {
    const checked = checkBackend(backend);
    this.backend = checked.backend;
    const o = checkOptions(options, DEFAULT_GRANULE_BYTES);
    this.granuleBytes = o.granuleBytes;
    this.sharing = o.sharing;
    this.smallObjectBytes = o.smallObjectBytes;
    this.lock = checked.lock ?? new LocalLock();
    this.ranges = buildRangeTable(backend.arch, o.kaslr, o.seed, backend.modulesStart);
    const hex = (va: number): string => this.hex(va);
    this.largeFromBytes = o.largeFromBytes;
    this.store = new BlockStore(
      backend,
      this.ranges,
      o.sharing,
      o.granuleBytes,
      o.smallObjectBytes,
      o.largeFromBytes,
      o.releaseDelayCalls,
      o.spareMaxShare,
      hex,
    );
    this.writer = new Writer(backend);
    this.fills = o.deferFills && this.writer.hasSessions() ? new PendingFills(FILL_QUEUE_RUNS) : null;
    this.baseline = { ...backend.counters() };
  }

  // ---------------------------------------------------------------- public API (bigint)

  alloc(type: ExecmemType, sizeBytes: number, ctx?: AllocContext): bigint {
    return this.big(this.allocVa(type, sizeBytes, ctx));
  }

  update(dst: bigint, bytes: Uint8Array): void {
    this.updateVa(this.toNum(dst, 'update'), bytes);
  }

  free(ptr: bigint): void {
    this.freeVa(this.toNum(ptr, 'free'));
  }

  seal(ptr: bigint): void {
    this.sealVa(this.toNum(ptr, 'seal'));
  }

  /**
   * An inspection of mapped memory, for debugging and tests: the `sizeBytes` bytes at `ptr` as the
   * backend holds them, whatever lies there. The range may start inside an object and cross its
   * end, into free space (which reads as the trap fill, 0xcc on x86, after a free) or a
   * neighbour, so the README's quickstart reads a freed object to show its trap fill. It must lie
   * in one block this allocator mapped: a range that is not mapped (never was, or its block was
   * released by shrink) is ERANGE. Not a way to fetch an object's contents: keep your own copy.
   */
  read(ptr: bigint, sizeBytes: number): Uint8Array {
    return this.readVa(this.toNum(ptr, 'read'), sizeBytes);
  }

  /** The requested size of the live allocation starting at `ptr`: update() may write up to it. */
  sizeOf(ptr: bigint): number {
    return this.sizeOfVa(this.toNum(ptr, 'sizeOf'));
  }

  /** The type of the live allocation containing `ptr`. */
  typeOf(ptr: bigint): ExecmemType {
    return this.typeOfVa(this.toNum(ptr, 'typeOf'));
  }

  /** Is the (module_ro_after_init) allocation starting at `ptr` sealed? */
  isSealed(ptr: bigint): boolean {
    return this.isSealedVa(this.toNum(ptr, 'isSealed'));
  }

  /** The 64-bit form of a 48-bit address as this backend's callers see it. */
  toBig(va: number): bigint {
    return this.big(checkAddress(va, 'toBig'));
  }

  // ---------------------------------------------------------------- hot-path twins (numbers)

  allocVa(type: ExecmemType, sizeBytes: number, ctx?: AllocContext): number {
    this.begin('alloc');
    try {
      const { ti, atomic, alignBytes } = checkAlloc(type, sizeBytes, ctx);
      const pool = this.store.poolFor(ti);
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
      this.enter('alloc');
      try {
        const va =
          sizeBytes > pool.blockBytes
            ? this.store.allocLarge(pool, ti, sizeBytes, atomic)
            : this.store.allocSmall(pool, ti, sizeBytes, alignBytes, atomic);
        this.counts.allocs++;
        this.store.tick();
        if (!atomic) this.drainFillsIfDue();
        return va;
      } finally {
        this.leave();
      }
    } finally {
      this.end();
    }
  }

  updateVa(dst: number, bytes: Uint8Array): void {
    this.begin('update');
    try {
      const va = checkAddress(dst, 'update');
      const data = checkBytes(bytes, 'update');
      this.enter('update');
      try {
        const hit = this.store.hit;
        this.store.locate(va, false, 'update');
        const block = hit.block!;
        if (va + data.length > hit.start + hit.requested) {
          fail(
            'ERANGE',
            `update of ${data.length} bytes at ${this.hex(va)} crosses the end of the allocation ` +
              `[${this.hex(hit.start)}, +${hit.requested}) (its requested size)`,
          );
        }
        switch (block.pool.cls) {
          case 'data':
            this.writer.plainWrite(va, data);
            break;
          case 'ro_after_init':
            if (hit.kind & KIND_SEALED)
              fail('EPERM', `ro_after_init allocation at ${this.hex(hit.start)} is sealed`);
            this.writer.plainWrite(va, data);
            break;
          default:
            if (this.fills !== null && this.fills.runs > 0 && this.writer.batchDepth === 0)
              this.writeWithFills(block, va, data);
            else this.writer.helperWrite(block, va, data);
        }
        this.counts.updates++;
      } finally {
        this.leave();
      }
    } finally {
      this.end();
    }
  }

  freeVa(ptr: number): void {
    this.begin('free');
    try {
      const va = checkAddress(ptr, 'free');
      this.enter('free');
      try {
        const hit = this.store.hit;
        this.store.locate(va, true, 'free');
        const block = hit.block!;
        const ti = hit.kind & KIND_TYPE_MASK;
        const bytes = hit.bytes;
        // The one fallible step first (unmap; or unseal / open a window), then the bookkeeping.
        let queued = false;
        if (block.slot < 0) {
          this.store.releaseLarge(block);
          this.writer.forget(block);
        } else if (this.canQueueFill(block)) {
          this.store.markPendingFill(block, va, hit.kind);
          this.fills!.push(block, va, bytes, this.store.calls + 1); // the clock after this free's tick
          queued = true;
        } else {
          this.writer.invalidate(block, va, bytes, (hit.kind & KIND_SEALED) !== 0);
          this.store.freeRun(block, va);
        }
        this.store.liveBytes[ti] -= bytes;
        this.store.liveObjects[ti]--;
        this.store.noteLive(block.pool, -bytes);
        this.counts.frees++;
        // The free is done; the clean after it is best effort and cannot fail (store.ts).
        if (!queued) this.store.releaseEmptied(block);
        this.store.tick();
        if (this.fills?.isFull()) this.drainFills('free');
        else this.drainFillsIfDue();
      } finally {
        this.leave();
      }
    } finally {
      this.end();
    }
  }

  sealVa(ptr: number): void {
    this.begin('seal');
    try {
      const va = checkAddress(ptr, 'seal');
      this.enter('seal');
      try {
        const hit = this.store.hit;
        this.store.locate(va, true, 'seal');
        const block = hit.block!;
        if (block.pool.cls !== 'ro_after_init') {
          fail(
            'EPERM',
            `seal needs a module_ro_after_init allocation; ${this.hex(va)} is ${block.pool.name}`,
          );
        }
        if (hit.kind & KIND_SEALED) fail('EPERM', `allocation at ${this.hex(va)} is already sealed`);
        const kind = hit.kind;
        this.writer.protect(block, va, hit.bytes, 'ro', 'seal');
        this.store.markSealed(block, va, kind);
        this.counts.seals++;
      } finally {
        this.leave();
      }
    } finally {
      this.end();
    }
  }

  /** sizeOf() with the 48-bit address as a number. */
  sizeOfVa(ptr: number): number {
    this.lookup(ptr, true, 'sizeOf');
    return this.store.hit.requested;
  }

  /** typeOf() with the 48-bit address as a number. */
  typeOfVa(ptr: number): ExecmemType {
    this.lookup(ptr, false, 'typeOf');
    return EXECMEM_TYPES[this.store.hit.kind & KIND_TYPE_MASK];
  }

  /** isSealed() with the 48-bit address as a number. */
  isSealedVa(ptr: number): boolean {
    this.lookup(ptr, true, 'isSealed');
    return (this.store.hit.kind & KIND_SEALED) !== 0;
  }

  /** read() with the 48-bit address as a number (see read: mapped memory, ERANGE otherwise). */
  readVa(ptr: number, sizeBytes: number): Uint8Array {
    this.begin('read');
    try {
      const va = checkAddress(ptr, 'read');
      const n = checkReadSize(sizeBytes);
      const block = this.store.blockAt(va);
      if (block === undefined)
        fail('ERANGE', `read: ${this.hex(va)} is not in memory this allocator has mapped`);
      if (va + n > block.va + block.sizeBytes)
        fail('ERANGE', `read of ${n} bytes at ${this.hex(va)} crosses the end of its block`);
      if (this.fills?.overlaps(va, n)) {
        // An inspection shows freed space as what it is: its trap fill is written first.
        this.enter('read');
        try {
          this.drainFills('read');
        } finally {
          this.leave();
        }
      }
      try {
        return this.backend.read(va, n);
      } catch (e) {
        fromBackend(e, 'read');
      }
    } finally {
      this.end();
    }
  }

  /**
   * Run `fn` holding the lock; updates and frees inside it open each touched block's RW window
   * once (non-alias arches) and close all windows when the outermost batch ends. Not atomic: the
   * calls `fn` made before it threw stay made. `counters.batches` counts outermost batches whose
   * `fn` returned (a refused batch, or one whose `fn` threw, is not counted).
   */
  batch<T>(fn: () => T): T {
    this.begin('batch');
    try {
      if (typeof fn !== 'function') fail('EINVAL', `batch needs a function, got ${describe(fn)}`);
      if (this.writer.batchDepth === 0) this.acquire('batch');
      this.writer.batchDepth++;
    } finally {
      this.end();
    }
    let returned = false;
    try {
      const result = fn();
      returned = true;
      return result;
    } finally {
      if (--this.writer.batchDepth === 0) {
        this.busy = true;
        try {
          // Queued fills ride in the batch's session if it opened one (fills.ts).
          if (this.fills !== null && this.fills.runs > 0 && this.writer.writeSessionOpen()) this.fillQueued();
          this.writer.closeAll();
          if (this.fills !== null && this.fills.runs > 0 && this.fills.filled) this.finishFills();
        } finally {
          if (returned) this.counts.batches++;
          this.lock.release();
          this.busy = false;
        }
      }
    }
  }

  /**
   * Release whole empty blocks beyond one spare per pool (or all empty blocks with
   * `keepSpare: false`, e.g. at teardown); returns the bytes released. Best effort: a block whose
   * unmap fails for lack of memory stays mapped, empty and consistent (see the header).
   */
  shrink(options?: { keepSpare?: boolean }): number {
    this.begin('shrink');
    try {
      const keepSpare = checkShrink(options);
      if (this.writer.batchDepth > 0) fail('EBUSY', 'shrink inside batch()');
      this.enter('shrink');
      try {
        this.drainFills('shrink');
        return this.store.shrink(keepSpare);
      } finally {
        this.leave();
      }
    } finally {
      this.end();
    }
  }

  stats(): ExecmemStats {
    const hex = (va: number): string => this.hex(va);
    const store = this.store;
    const pools: Record<string, ExecmemPoolStats> = {};
    for (const pool of store.pools) pools[pool.name] = poolStats(pool, hex);
    const types = {} as Record<ExecmemType, ExecmemTypeStats>;
    EXECMEM_TYPES.forEach((type, ti) => {
      const family = store.poolOfType[ti];
      const p = pools[family.name];
      // The family's figures: its large-page blocks plus its small tier, if it has one.
      const t = family.small === null ? undefined : pools[family.small.name];
      types[type] = {
        pool: family.name,
        liveBytes: store.liveBytes[ti],
        liveObjects: store.liveObjects[ti],
        mappedBytes: p.mappedBytes + (t?.mappedBytes ?? 0),
        largeMappedBytes: p.largeMappedBytes + (t?.largeMappedBytes ?? 0),
        freeBytes: p.freeBytes + (t?.freeBytes ?? 0),
        largestFreeBytes: Math.max(p.largestFreeBytes, t?.largestFreeBytes ?? 0),
        blocks: p.blocks + (t?.blocks ?? 0),
        fallbackBlocks: p.fallbackBlocks + (t?.fallbackBlocks ?? 0),
      };
    });
    const now = this.backend.counters();
    const b = this.baseline;
    const counters: ExecmemCounters = {
      ...this.counts,
      blocksMapped: store.blocksMapped,
      blocksReleased: store.blocksReleased,
      atomicRefusals: store.atomicRefusals,
      allocSearchSteps: store.pools.reduce((sum, pool) => sum + pool.heap.searchSteps, 0),
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
   * Every mapped region with its pool and, for shared blocks, its runs (tests and audits): calls
   * `fn` for each run of each block, in address order per block. A used run is reported with its
   * granule-rounded size. `fn` may not call back into the allocator (EBUSY).
   */
  forEachRun(fn: RunVisitor): void {
    this.begin('forEachRun');
    try {
      if (typeof fn !== 'function') fail('EINVAL', `forEachRun needs a function, got ${describe(fn)}`);
      this.store.eachRun(fn);
    } finally {
      this.end();
    }
  }

  /** Full consistency check of the heaps and the block table (tests only). */
  audit(): void {
    this.store.audit();
    if (this.fills !== null) {
      // The queue and the pools' counts (which store.audit checks against the heaps' marks) agree.
      let poolRuns = 0;
      for (const pool of this.store.pools) poolRuns += pool.pendingFillRuns;
      assert(poolRuns === this.fills.runs, `audit: ${this.fills.runs} fills queued, pools count ${poolRuns}`);
    }
    assert(
      this.writer.batchDepth > 0 || this.writer.openWindowCount() === 0,
      'audit: a write window open outside a batch',
    );
  }

  // ---------------------------------------------------------------- internals

  /** May this free queue its trap fill (fills.ts)? Text and rodata runs, outside a batch. */
  private canQueueFill(block: Block): boolean {
    const cls = block.pool.cls;
    return this.fills !== null && this.writer.batchDepth === 0 && (cls === 'text' || cls === 'rodata');
  }

  /** An update outside a batch with fills queued: its write and the fills share one session. */
  private writeWithFills(block: Block, va: number, data: Uint8Array): void {
    this.writer.beginCallSession('update');
    try {
      this.writer.helperWrite(block, va, data);
      this.fillQueued();
    } finally {
      this.writer.endCallSession();
    }
    this.finishFills();
  }

  /** Write every queued fill in a session of its own (outside a batch) or the batch's. */
  private drainFills(op: string): void {
    const q = this.fills;
    if (q === null || q.runs === 0) return;
    const own = this.writer.batchDepth === 0;
    if (own) this.writer.beginCallSession(op);
    try {
      this.fillQueued();
    } finally {
      if (own) this.writer.endCallSession();
    }
    this.finishFills();
  }

  /** The age bound (limits.ts FILL_DELAY_CALLS), checked after each alloc and free. */
  private drainFillsIfDue(): void {
    if (this.fills?.isDue(this.store.calls, FILL_DELAY_CALLS)) this.drainFills('fill');
  }

  /** Write the trap (or zero) fill of every queued run through the open session. */
  private fillQueued(): void {
    const q = this.fills!;
    for (let i = 0; i < q.runs; i++) this.writer.invalidate(q.blockAt(i), q.vaAt(i), q.sizeAt(i), false);
    q.filled = true;
  }

  /** Give the filled runs back to their heaps, then the clean for the blocks they emptied. */
  private finishFills(): void {
    const q = this.fills!;
    assert(q.filled, 'finishFills before the fills were written');
    for (let i = 0; i < q.runs; i++) this.store.freeRun(q.blockAt(i), q.vaAt(i));
    for (let i = 0; i < q.runs; i++) this.store.releaseEmptied(q.blockAt(i));
    q.clear();
  }

  /** locate() for the read-only queries, under the re-entrancy guard and the lock. */
  private lookup(ptr: number, needStart: boolean, op: string): void {
    this.begin(op);
    try {
      const va = checkAddress(ptr, op);
      this.enter(op);
      try {
        this.store.locate(va, needStart, op);
      } finally {
        this.leave();
      }
    } finally {
      this.end();
    }
  }

  /** Start a public call: refuse re-entry (see the header). */
  private begin(op: string): void {
    if (this.busy) {
      fail(
        'EBUSY',
        `${op}: called while another call on this allocator is in progress (from an argument's ` +
          'getter, a Proxy trap or a callback); only batch() callbacks may call in',
      );
    }
    this.busy = true;
  }

  private end(): void {
    this.busy = false;
  }

  private enter(op: string): void {
    if (this.writer.batchDepth === 0) this.acquire(op);
  }

  private leave(): void {
    if (this.writer.batchDepth === 0) this.lock.release();
  }

  private acquire(op: string): void {
    try {
      this.lock.acquire();
    } catch (e) {
      fromBackend(e, op);
    }
  }

  private toNum(addr: bigint, op: string): number {
    if (typeof addr !== 'bigint') {
      fail(
        'EINVAL',
        `${op}: the address must be a bigint (what alloc returns), got ${describe(addr)}; ` +
          `the 48-bit number form goes to ${op}Va`,
      );
    }
    if (this.backend.kind === 'host') {
      if (addr < 0n || addr >= 1n << 53n) {
        fail(
          'EINVAL',
          `${op}: 0x${addr.toString(16)} is not a host address (expected a user-space address below 2^53, as alloc returns)`,
        );
      }
      return Number(addr);
    }
    try {
      return archToVa(this.backend.arch, addr);
    } catch (e) {
      if (e instanceof RangeError) fail('EINVAL', `${op}: ${e.message}`);
      throw e;
    }
  }

  private big(va: number): bigint {
    return this.backend.kind === 'host' ? BigInt(va) : archToBig(this.backend.arch, va);
  }

  private hex(va: number): string {
    return this.backend.kind === 'host' ? `0x${va.toString(16)}` : archHex(this.backend.arch, va);
  }
}
