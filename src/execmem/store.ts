/**
 * The block store: maps and unmaps blocks, places objects in them (TLSF heaps, heap.ts), and
 * finds the allocation behind an address. Execmem (execmem.ts) checks arguments, holds the lock
 * and calls in here; nothing here sees a caller's argument unchecked.
 *
 * Why the order of every step is what it is (failed calls change nothing, issue 16):
 * - Growth maps a block, fills it while RW+NX (traps for text, zeros for data), gives it the
 *   pool's protection, and only then records it; if a step fails the block is unmapped again.
 *   Should even that unmap fail (memory so short that vfree's own direct-map splits fail too),
 *   the block is kept as a stray: empty, RW and never executable, unmapped by the next shrink.
 * - A large object is freed by one unmap, atomic in the backend (machine vfree, mm/vmalloc.c:
 *   vm_reset_perms' direct-map splits are made first and rolled back if one fails); the store
 *   forgets the object only after the unmap succeeded.
 * - shrink is best effort: a block whose unmap fails for lack of memory stays mapped, empty and
 *   consistent; the next shrink tries again. It never fails for lack of memory.
 * - Blocks go to the backend for 2 MiB leaves where the pool wants them, physically 2 MiB
 *   aligned; a 4 KiB fallback is the backend's to report (largePages false) and stats count it.
 */
import type { ExecmemType, Prot } from '../arch/types.js';
import { EXECMEM_TYPES } from '../arch/types.js';
import { alignUp, SZ_2M } from '../base/addr.js';
import { assert } from '../base/assert.js';
import type { Backend, BackendBlock } from './backend.js';
import { BackendError } from './backend.js';
import { fail, fromBackend } from './errors.js';
import type { BlockClass } from './heap.js';
import type { PoolSharing } from './limits.js';
import {
  type Block,
  BlockDirectory,
  buildPools,
  KIND_PENDING_FILL,
  KIND_SEALED,
  KIND_SLACK_SHIFT,
  KIND_TYPE_MASK,
  noteMapped,
  type Pool,
} from './pools.js';
import type { TypeClass, TypeRange } from './ranges.js';

const ZERO = Uint8Array.of(0);

/** What locate() found (one object, reused: no allocation on the hot path). */
export interface Hit {
  block: Block | undefined;
  /** Start of the allocation. */
  start: number;
  /** Its granule-rounded size (what it occupies). */
  bytes: number;
  /** Its requested size (what a caller may write). */
  requested: number;
  /** Type index, sealed bit and slack (pools.ts KIND_*). */
  kind: number;
}

export type RunVisitor = (
  pool: string,
  prot: Prot,
  va: number,
  sizeBytes: number,
  used: boolean,
  type: ExecmemType | null,
  /** A used run that was freed and waits for its trap fill (fills.ts): not a live object. */
  pendingFill: boolean,
) => void;

export class BlockStore {
  readonly pools: Pool[];
  readonly poolOfType: Pool[];
  /** Per type index: live bytes (granule-rounded; large objects: usable size) and objects. */
  readonly liveBytes = new Float64Array(EXECMEM_TYPES.length);
  readonly liveObjects = new Float64Array(EXECMEM_TYPES.length);
  readonly hit: Hit = { block: undefined, start: 0, bytes: 0, requested: 0, kind: 0 };
  blocksMapped = 0;
  blocksReleased = 0;
  /** Bytes of every block and large-object mapping the store holds (strays not included). */
  mappedBytes = 0;
  /** Allocator calls so far (tick), and when the next spare is due for release (-1: none). */
  private clock = 0;
  private nextExpiry = -1;
  atomicRefusals = 0;
  private readonly dir = new BlockDirectory();
  /** Mappings of failed growths whose undo could not unmap them either (see the header). */
  private readonly strays: BackendBlock[] = [];

  constructor(
    private readonly backend: Backend,
    ranges: Readonly<Record<ExecmemType, TypeRange>>,
    sharing: PoolSharing,
    granuleBytes: number,
    smallObjectBytes: number,
    largeFrom: Readonly<Record<TypeClass, number>>,
    private readonly releaseDelayCalls: number,
    private readonly spareMaxShare: number,
    private readonly hex: (va: number) => string,
  ) {
    const { pools, poolOfType } = buildPools(ranges, sharing, granuleBytes, smallObjectBytes, largeFrom);
    this.pools = pools;
    this.poolOfType = poolOfType;
  }

  /** Allocator calls (allocs and frees) so far: the clock of the release delay and of fills.ts. */
  get calls(): number {
    return this.clock;
  }

  // ---------------------------------------------------------------- alloc

  /**
   * The tier a new object of type `ti` goes to: the family's small tier while its live bytes are
   * below the threshold, else its large-page blocks (limits.ts LARGE_TIER_FROM_BYTES).
   */
  poolFor(ti: number): Pool {
    const family = this.poolOfType[ti];
    return family.small !== null && !family.useLarge ? family.small : family;
  }

  /**
   * Count `deltaBytes` of live memory in `pool`'s family and move the family between its tiers:
   * up once live bytes reach the threshold, down again below half of it (hysteresis, so a family
   * near the threshold does not alternate between the tiers with every load and unload).
   */
  noteLive(pool: Pool, deltaBytes: number): void {
    const family = pool.family;
    family.familyLiveBytes += deltaBytes;
    if (family.small === null) return;
    if (!family.useLarge && family.familyLiveBytes >= family.largeFromBytes) family.useLarge = true;
    else if (family.useLarge && family.familyLiveBytes < family.largeFromBytes / 2) family.useLarge = false;
  }

  allocSmall(pool: Pool, ti: number, sizeBytes: number, alignBytes: number, atomic: boolean): number {
    const gb = pool.granuleBytes;
    const granules = Math.ceil(sizeBytes / gb);
    const alignGranules = alignBytes > gb ? alignBytes / gb : 1;
    const kind = ti | ((granules * gb - sizeBytes) << KIND_SLACK_SHIFT);
    let node = pool.heap.alloc(granules, alignGranules, kind);
    // A hole in the family's other tier before a new block: those blocks are mapped anyway.
    const other = pool.family === pool ? pool.small : pool.family;
    if (node < 0 && other !== null && sizeBytes <= other.blockBytes) {
      node = other.heap.alloc(granules, alignGranules, kind);
      if (node >= 0) pool = other;
    }
    if (node < 0) {
      if (atomic) {
        this.atomicRefusals++;
        fail('EAGAIN', `atomic ${EXECMEM_TYPES[ti]} allocation of ${sizeBytes} bytes needs a new block`);
      }
      this.grow(pool, pool.heap.classFor(granules));
      node = pool.heap.alloc(granules, alignGranules, kind);
      assert(node >= 0, 'a fresh block must satisfy a request of at most one block');
    }
    const slot = pool.heap.slotOfNode(node);
    const block = pool.blocks[slot]!;
    this.liveBytes[ti] += granules * gb;
    this.liveObjects[ti]++;
    this.noteLive(pool, granules * gb);
    return block.va + pool.heap.granuleOfNode(node) * gb;
  }

  allocLarge(pool: Pool, ti: number, sizeBytes: number, atomic: boolean): number {
    if (atomic) {
      this.atomicRefusals++;
      fail('EAGAIN', `atomic allocation of ${sizeBytes} bytes needs its own mapping`);
    }
    const usable = alignUp(sizeBytes, pool.granuleBytes);
    const bb = this.mapPrepared(pool, alignUp(sizeBytes, pool.leafBytes));
    const block: Block = {
      pool,
      id: -1,
      slot: -1,
      bb,
      va: bb.va,
      sizeBytes: bb.sizeBytes,
      largeType: ti,
      largeUsableBytes: usable,
      largeRequestedBytes: sizeBytes,
      largeSealed: false,
      open: false,
    };
    pool.largeBlocks.add(block);
    this.dir.register(block);
    this.liveBytes[ti] += usable;
    this.liveObjects[ti]++;
    this.noteLive(pool, usable);
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
      largeRequestedBytes: 0,
      largeSealed: false,
      open: false,
    };
    pool.blocks[slot] = block;
    this.dir.register(block);
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
      this.undoMap(bb);
      fromBackend(e, `preparing a block for ${pool.name}`);
    }
    noteMapped(pool, bb.va, bb.sizeBytes);
    this.blocksMapped++;
    this.mappedBytes += bb.sizeBytes;
    return bb;
  }

  private undoMap(bb: BackendBlock): void {
    try {
      this.backend.unmapBlock(bb);
    } catch (e) {
      if (!(e instanceof BackendError)) throw e;
      this.strays.push(bb);
    }
  }

  // ---------------------------------------------------------------- free, seal, shrink

  /** Free the small object the hit names (its space already invalidated). */
  freeRun(block: Block, va: number): void {
    block.pool.heap.free(block.slot, (va - block.va) / block.pool.granuleBytes);
  }

  /** Mark the small object the hit names as freed with its fill queued (fills.ts). */
  markPendingFill(block: Block, va: number, kind: number): void {
    block.pool.heap.setKind(block.slot, (va - block.va) / block.pool.granuleBytes, kind | KIND_PENDING_FILL);
  }

  /** Mark the object the hit names sealed. */
  markSealed(block: Block, va: number, kind: number): void {
    if (block.slot < 0) block.largeSealed = true;
    else block.pool.heap.setKind(block.slot, (va - block.va) / block.pool.granuleBytes, kind | KIND_SEALED);
  }

  /** Free a large object: one unmap (atomic in the backend), then forget it. */
  releaseLarge(block: Block): void {
    try {
      this.backend.unmapBlock(block.bb);
    } catch (e) {
      fromBackend(e, `free: unmapping the ${block.sizeBytes}-byte mapping at ${this.hex(block.va)}`);
    }
    block.pool.largeBlocks.delete(block);
    this.dir.unregister(block);
    this.blocksReleased++;
    this.mappedBytes -= block.sizeBytes;
  }

  /**
   * The clean after a free (limits.ts SPARE_MAX_SHARE, RELEASE_DELAY_CALLS: the rule and its
   * numbers). A free that left its block empty releases it at once when it is more than
   * 1/spareMaxShare of all the allocator maps (0: never); otherwise makes it its pool's one spare,
   * releasing the previous spare; a spare still empty RELEASE_DELAY_CALLS allocator calls later
   * is released (tick). Best effort, as
   * shrink: a block whose unmap fails (any backend error) or whose write window is open (a batch
   * on a non-alias arch) stays mapped, empty and consistent, and a later clean or shrink tries
   * again; the free itself has already succeeded.
   */
  releaseEmptied(block: Block): void {
    const pool = block.pool;
    if (block.slot < 0 || !pool.heap.isBlockEmpty(block.slot)) return;
    if (this.spareMaxShare > 0 && block.sizeBytes * this.spareMaxShare > this.mappedBytes) {
      // Most of what is mapped: released at once, as Linux's clean does (limits.ts).
      if (!block.open) this.releaseBlock(block, true);
      return;
    }
    const old = pool.spare;
    pool.spare = block;
    pool.spareSince = this.clock;
    if (this.nextExpiry < 0) this.nextExpiry = this.clock + this.releaseDelayCalls;
    if (old !== null && old !== block && this.isEmptyShared(old) && !old.open) this.releaseBlock(old, true);
  }

  /**
   * One allocator call (alloc or free) has passed: the clock of the release delay. When the
   * oldest spare has waited RELEASE_DELAY_CALLS calls, release every spare that has and is still
   * empty (a spare refilled since is simply forgotten). O(1) but for that scan, once per expiry.
   */
  tick(): void {
    this.clock++;
    if (this.nextExpiry < 0 || this.clock < this.nextExpiry) return;
    this.nextExpiry = -1;
    for (const pool of this.pools) {
      const spare = pool.spare;
      if (spare === null) continue;
      if (!this.isEmptyShared(spare)) pool.spare = null;
      else if (this.clock - pool.spareSince >= this.releaseDelayCalls && !spare.open) {
        if (this.releaseBlock(spare, true) === 0) pool.spareSince = this.clock;
      }
      if (pool.spare !== null) {
        const due = pool.spareSince + this.releaseDelayCalls;
        if (this.nextExpiry < 0 || due < this.nextExpiry) this.nextExpiry = Math.max(due, this.clock + 1);
      }
    }
  }

  /** Release empty blocks beyond one spare per pool (none with keepSpare false); bytes released. */
  shrink(keepSpare: boolean): number {
    let released = this.releaseStrays();
    for (const pool of this.pools) {
      const spare = pool.spare !== null && this.isEmptyShared(pool.spare) ? pool.spare : null;
      let kept = !keepSpare || spare !== null;
      for (const slot of pool.heap.slots()) {
        if (!pool.heap.isBlockEmpty(slot)) continue;
        const block = pool.blocks[slot]!;
        if (keepSpare && block === spare) continue;
        if (!kept) {
          kept = true;
          pool.spare = block;
          continue;
        }
        released += this.releaseBlock(block, false);
      }
    }
    return released;
  }

  /** Is `block` a shared block still mapped and empty? */
  private isEmptyShared(block: Block): boolean {
    return (
      block.slot >= 0 && block.pool.blocks[block.slot] === block && block.pool.heap.isBlockEmpty(block.slot)
    );
  }

  /** Unmap an empty shared block; 0 (and nothing changed) when the backend has no memory for it. */
  private releaseBlock(block: Block, anyError: boolean): number {
    const pool = block.pool;
    assert(block.slot >= 0 && pool.heap.isBlockEmpty(block.slot), 'releaseBlock: block in use');
    assert(!block.open, 'releaseBlock: block has an open window');
    try {
      this.backend.unmapBlock(block.bb);
    } catch (e) {
      if (e instanceof BackendError && (e.code === 'ENOMEM' || anyError)) return 0;
      fromBackend(e, `shrink: unmapping the block at ${this.hex(block.va)}`);
    }
    if (pool.spare === block) pool.spare = null;
    pool.heap.removeBlock(block.slot);
    pool.blocks[block.slot] = undefined;
    this.dir.unregister(block);
    this.blocksReleased++;
    this.mappedBytes -= block.sizeBytes;
    return block.sizeBytes;
  }

  private releaseStrays(): number {
    let released = 0;
    for (let i = this.strays.length - 1; i >= 0; i--) {
      const bb = this.strays[i];
      try {
        this.backend.unmapBlock(bb);
      } catch (e) {
        if (e instanceof BackendError) continue;
        throw e;
      }
      this.strays.splice(i, 1);
      released += bb.sizeBytes;
    }
    return released;
  }

  // ---------------------------------------------------------------- lookup

  blockAt(va: number): Block | undefined {
    return this.dir.blockAt(va);
  }

  /**
   * Find the live allocation at (needStart) or containing va and describe it in `hit`, or throw
   * ENOENT / EFREE / EINSIDE. O(1) for starts; interior addresses scan back over the block's run
   * starts, bounded by the allocation's own length.
   */
  locate(va: number, needStart: boolean, op: string): void {
    const hit = this.hit;
    const block = this.dir.blockAt(va);
    if (block === undefined) this.missing(va, op);
    if (block.slot < 0) {
      const end = block.va + block.largeUsableBytes;
      if (va >= end) fail('EFREE', `${op}: ${this.hex(va)} is in the slack after a large allocation`);
      if (needStart && va !== block.va)
        fail('EINSIDE', `${op}: ${this.hex(va)} is inside the allocation at ${this.hex(block.va)}`);
      hit.block = block;
      hit.start = block.va;
      hit.bytes = block.largeUsableBytes;
      hit.requested = block.largeRequestedBytes;
      hit.kind = block.largeType | (block.largeSealed ? KIND_SEALED : 0);
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
      if (id < 0) this.freeMemory(va, op);
    }
    const start = heap.startOf(id);
    const tag = heap.lenOf(id);
    if (tag < 0) this.freeMemory(va, op);
    if (needStart && !exact) {
      fail(
        'EINSIDE',
        `${op}: ${this.hex(va)} is inside the allocation at ${this.hex(block.va + start * gb)}`,
      );
    }
    const kind = heap.kindOf(id);
    // A run whose fill is queued (fills.ts) was freed: free memory to every lookup.
    if (kind & KIND_PENDING_FILL) this.freeMemory(va, op);
    hit.block = block;
    hit.start = block.va + start * gb;
    hit.bytes = tag * gb;
    hit.requested = hit.bytes - (kind >>> KIND_SLACK_SHIFT);
    hit.kind = kind;
  }

  /** va lies in a block but in no live allocation. */
  private freeMemory(va: number, op: string): never {
    fail('EFREE', `${op}: ${this.hex(va)} is free memory (double free, or never allocated)`);
  }

  /**
   * No block holds va: EFREE when va lies in the span a pool has ever mapped (a freed large
   * object, a double free of one, a pointer never handed out), else ENOENT.
   */
  missing(va: number, op: string): never {
    for (const pool of this.pools) {
      if (va >= pool.everStart && va < pool.everEnd) {
        fail('EFREE', `${op}: ${this.hex(va)} holds no live allocation (freed, or never handed out)`);
      }
    }
    fail('ENOENT', `${op}: ${this.hex(va)} is not execmem memory (outside everything this allocator mapped)`);
  }

  /** Every run of every block, in address order per block (see Execmem.forEachRun). */
  eachRun(fn: RunVisitor): void {
    for (const pool of this.pools) {
      for (const slot of pool.heap.slots()) {
        const block = pool.blocks[slot]!;
        const gb = pool.granuleBytes;
        pool.heap.forEachRun(slot, (g, len, used) => {
          const kind = used ? pool.heap.kindAt(slot, g) : 0;
          const type = used ? EXECMEM_TYPES[kind & KIND_TYPE_MASK] : null;
          fn(pool.name, pool.prot, block.va + g * gb, len * gb, used, type, (kind & KIND_PENDING_FILL) !== 0);
        });
      }
      for (const block of pool.largeBlocks) {
        fn(
          pool.name,
          pool.prot,
          block.va,
          block.largeUsableBytes,
          true,
          EXECMEM_TYPES[block.largeType],
          false,
        );
        const slack = block.sizeBytes - block.largeUsableBytes;
        if (slack > 0) fn(pool.name, pool.prot, block.va + block.largeUsableBytes, slack, false, null, false);
      }
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
        assert(this.dir.blockAt(block.va) === block, 'audit: block not registered');
        assert(block.sizeBytes === pool.blockBytes, 'audit: shared block of the wrong size');
        assert(block.bb.largePages === false || pool.leafBytes === SZ_2M, 'audit: 2 MiB leaf in 4K pool');
        assert(
          block.va >= pool.everStart && block.va + block.sizeBytes <= pool.everEnd,
          'audit: block outside the span its pool has mapped',
        );
      }
      for (const block of pool.largeBlocks) {
        assert(this.dir.blockAt(block.va) === block, 'audit: large block not registered');
        assert(
          block.largeRequestedBytes <= block.largeUsableBytes && block.largeUsableBytes <= block.sizeBytes,
          'audit: large object sizes',
        );
      }
    }
    let live = 0;
    for (let ti = 0; ti < EXECMEM_TYPES.length; ti++) live += this.liveObjects[ti];
    let runs = 0;
    let pendingRuns = 0;
    let pendingBytes = 0;
    this.eachRun((_p, _prot, _va, sizeBytes, used, _type, pendingFill) => {
      if (pendingFill) {
        pendingRuns++;
        pendingBytes += sizeBytes;
      } else if (used) runs++;
    });
    assert(runs === live, `audit: ${runs} used runs but ${live} live objects`);
    let poolRuns = 0;
    let poolBytes = 0;
    for (const pool of this.pools) {
      poolRuns += pool.pendingFillRuns;
      poolBytes += pool.pendingFillBytes;
    }
    assert(
      pendingRuns === poolRuns && pendingBytes === poolBytes,
      `audit: ${pendingRuns} runs (${pendingBytes} bytes) marked pending fill, pools count ${poolRuns} (${poolBytes})`,
    );
  }
}
