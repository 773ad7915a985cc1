/**
 * The backend interface: the only seam between the allocator and memory.
 *
 * Why it is this small: the allocator must behave identically on the simulated kernel machine
 * (sim) and on real memory of this process (host), and every permission change must stay inside
 * the allocator's update helper (DESIGN.md rule 3). So a backend offers exactly: map a block in a
 * type's range (large pages where possible), fill it while it is still RW+NX, change protection
 * (called only by execmem's helper, never exported to callers), alias-write (`poke`, `pokeSet`)
 * where the platform has an alias, read, unmap, and counters. Nothing here knows about objects,
 * sizes of allocations or types' policies: those are the allocator's.
 *
 * Addresses are plain numbers: 48-bit kernel VAs on sim (see base/addr.ts), real process
 * addresses on host (below 2^47).
 */
import type { ArchSpec, ExecmemType, Prot, VaRange } from '../arch/types.js';

export type BackendErrorCode =
  /** Physical memory (or memfd growth) could not be had. */
  | 'ENOMEM'
  /** No virtual address space left in the range (and its fallback). */
  | 'ENOSPC'
  /** The backend is closed. */
  | 'ECLOSED'
  /** The operation is not available (alias write without an alias). */
  | 'ENOTSUP'
  /** The lock is already held by this thread (a re-entrant call, refused with nothing changed). */
  | 'EDEADLK'
  /** The lock's holder is alive but did not release it within the backend's bound. */
  | 'ETIMEDOUT'

  /** A bad argument (bytes that are not a genuine Uint8Array). */
  | 'EINVAL';

export class BackendError extends Error {
  override name = 'BackendError';
  constructor(
    readonly code: BackendErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

export interface MapBlockRequest {
  /** Which type the block is for (a host backend keeps one reservation per type family). */
  readonly type: ExecmemType;
  readonly range: VaRange;
  readonly fallback: VaRange | null;
  /** A multiple of the page size; a multiple of 2 MiB when `huge`. */
  readonly sizeBytes: number;
  /** Virtual alignment of the block start (2 MiB for huge blocks). */
  readonly alignBytes: number;
  /** Try to map with 2 MiB leaves, physically 2 MiB-aligned; fall back to 4 KiB and say so. */
  readonly huge: boolean;
}

/** A mapped block. Backends may extend it with private fields. */
export interface BackendBlock {
  readonly va: number;
  readonly sizeBytes: number;
  /** True when the whole block is mapped with 2 MiB leaves (false after a 4 KiB fallback). */
  readonly largePages: boolean;
}

export interface BackendCounters {
  /** Protection changes (set_memory_* / mprotect calls), each possibly many pages. */
  permissionFlips: number;
  /** Alias writes and bytes written through them. */
  pokes: number;
  pokeBytes: number;
  /** TLB cost as the platform sees it; host reports what it can (0 where unknowable). */
  shootdowns: number;
  ipis: number;
  localFlushes: number;
  /** Direct-map large-leaf splits (sim only; the host cannot see its kernel's direct map). */
  directMapSplits: number;
  blocksMapped: number;
  blocksUnmapped: number;
  /** Blocks that wanted 2 MiB leaves but got 4 KiB ones. */
  hugeFallbacks: number;
}

/**
 * The one lock the allocator holds around every operation and across a batch (Kent's
 * jitalloc_update: racing updates handled "in a single place (e.g. with sticking a lock
 * somewhere)", <ZHFDO/95KMXRdOWI@moria.home.lan>). A backend may provide one (the host backend
 * backs it with Atomics so workers share it); otherwise execmem uses an in-process lock that
 * asserts it is never taken twice. Added by engineer A as an optional member.
 * acquire() throws BackendError ECLOSED once the backend is closed, EDEADLK when this thread
 * already holds it (re-entry is refused, nothing changes) and ETIMEDOUT when another live thread
 * holds it past the backend's bound; it never waits without a bound. release() never throws a
 * BackendError.
 */
export interface ExecLock {
  acquire(): void;
  release(): void;
}

export interface Backend {
  readonly kind: 'sim' | 'host';
  /** Optional shared lock (see ExecLock); absent means execmem's own in-process lock. */
  readonly lock?: ExecLock;
  readonly arch: ArchSpec;
  readonly pageBytes: number;
  readonly largePageBytes: number;
  /** Is there an alias write (text_poke, fixmap, host RW view)? If not, updates flip permissions. */
  readonly hasAliasWrite: boolean;
  /**
   * Where the platform already randomised the module area (its MODULES_VADDR after KASLR), when
   * it did. Execmem then builds its range table from this start instead of drawing its own
   * offset, so its blocks lie in the module area the platform (ptdump, other users) sees. Absent:
   * execmem draws the start from its seed. Added by engineer A2 as an optional member.
   */
  readonly modulesStart?: number;

  /**
   * Map a new block, RW and not executable, in `range` (else `fallback`). Throws BackendError
   * ENOSPC/ENOMEM and leaves nothing behind on failure.
   */
  mapBlock(req: MapBlockRequest): BackendBlock;
  /**
   * Unmap a block entirely (its protections are reset first, as VM_FLUSH_RESET_PERMS does).
   * Atomic: when it throws (BackendError ENOMEM: the reset needed memory it could not get),
   * the block is still mapped and nothing changed (the sim: machine vfree, mm/vmalloc.c).
   */
  unmapBlock(block: BackendBlock): void;

  /**
   * Plain store through the primary mapping; the range must currently be writable. execmem
   * passes a plain Uint8Array whose length is real (base/bytes.ts); a backend called by anyone
   * else takes the length from the real backing store too.
   */
  write(va: number, bytes: Uint8Array): void;
  /** Plain fill with a repeating pattern through the primary mapping; must be writable. */
  fill(va: number, sizeBytes: number, pattern: Uint8Array): void;
  /**
   * Set the protection of page-aligned [va, va+sizeBytes) inside `block`. Allocator-internal.
   * Atomic: when it throws (BackendError ENOMEM), nothing changed. Giving a whole block back
   * the protection it was prepared with, after execmem made it RW (closing an update window),
   * must not fail: the backend kept what the first change needed (sim: the direct-map splits
   * of the first set_memory_ro/rox stay split and whole-block flips change whole leaves, with
   * no collapse on the arches that use windows; host: mprotect of a range merges mappings
   * back). execmem relies on it, so a write never ends with a block left open.
   */
  protect(block: BackendBlock, va: number, sizeBytes: number, prot: Prot): void;

  /**
   * Write through the alias (never making the primary mapping writable). Requires hasAliasWrite.
   * The bytes are in place, verified and (arm64) I-cache coherent when it returns, inside a write
   * session too; only the alias's teardown may be deferred to the session's end.
   */
  poke(va: number, bytes: Uint8Array): void;
  /** Fill through the alias with a repeating pattern. Requires hasAliasWrite. Same guarantees. */
  pokeSet(va: number, sizeBytes: number, pattern: Uint8Array): void;
  /**
   * Optional, both or neither (sim: the machine's write session, machine/write-session.ts): from
   * beginWriteSession() until endWriteSession(), poke/pokeSet share one alias mapping, torn down
   * with one flush at the end instead of one per call. Outside a session each poke/pokeSet is
   * its own session. execmem's batch() holds one session open across its updates and frees.
   * beginWriteSession() may be called only with no session open; endWriteSession() only with
   * one open, and must not fail. The host backend has neither: its RW view is permanent and needs
   * no teardown and no flush.
   */
  beginWriteSession?(): void;
  endWriteSession?(): void;

  read(va: number, sizeBytes: number): Uint8Array;
  counters(): BackendCounters;
}

export function newBackendCounters(): BackendCounters {
  return {
    permissionFlips: 0,
    pokes: 0,
    pokeBytes: 0,
    shootdowns: 0,
    ipis: 0,
    localFlushes: 0,
    directMapSplits: 0,
    blocksMapped: 0,
    blocksUnmapped: 0,
    hugeFallbacks: 0,
  };
}
