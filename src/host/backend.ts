/**
 * The host backend: real executable memory in this Node.js process (x86-64 Linux), behind the
 * same Backend interface the simulated kernel machine serves (execmem/backend.ts).
 *
 * Why two modes, and why these:
 * - `dualmap` is the user-space text_poke: one memfd mapped twice, an RX view that runs and an RW
 *   alias that is written, at a constant distance (arena.ts). No permission ever flips on live
 *   code, so calls need no lock, and an update is a memcpy (.NET's double mapping,
 *   DynamoRIO's constant offset; research/userspace-jit-alloc.md sections 1 and 6). The cost is a
 *   permanent writable alias of the code: the W^X guarantee is per mapping, not per frame, and a
 *   stray store through the alias would change code. The alias of a page sealed read-only ('ro')
 *   is made read-only as well, as set_memory_ro also changes the kernel's direct-map alias.
 * - `mprotect` is the fallback where executable shared mappings are refused (SELinux-like
 *   policies): one anonymous mapping per block, RW+NX while filled or updated, RX otherwise, the
 *   flips done by the allocator's update helper under one lock and batched (LuaJIT, SpiderMonkey,
 *   V8 batch compilation: "the cost of calling mprotect for each individual compiled function
 *   became a major bottleneck", v8.dev/blog/v8-release-93). A flip is process-wide, so calling JIT
 *   code takes the shared side of a reader/writer lock and a flip the exclusive side (rwlock.ts).
 * - `auto` runs the dualmap probe (probe.ts: a real write-through-alias-then-call) and says why
 *   it chose what it chose; a forced probe failure tests the fallback (open.ts).
 *
 * The kernel VA ranges in MapBlockRequest mean nothing in user space and are ignored; blocks are
 * placed in the family's reservation instead. Huge pages are requested (MADV_HUGEPAGE where the
 * policy is "madvise"), verified in /proc/self/smaps and reported per block, never assumed.
 *
 * x86-64 only: x86 keeps instruction and data caches coherent, so no cache maintenance is needed
 * after a write (compiler-rt __clear_cache is a no-op there). arm64 would need `ic ivau`/`isb`
 * after every update and membarrier for other threads; that is not faked here: openHost refuses.
 *
 * Hostile input (issue 16): bytes are counted from their backing store and must be a genuine
 * Uint8Array whose `length` cannot lie (bytes.ts); request fields are read once into locals before
 * they are checked; a function is refused on freed, never-allocated or unmapped code (call.ts).
 * After close() every call, including the allocator's lock, fails with BackendError ECLOSED.
 *
 * Worker threads: `share()` gives a structured-cloneable handle; `attachHost(handle)` in a worker
 * builds a backend over the same mappings, page tables and lock. Blocks belong to the backend that
 * mapped them (the page-owner table); code may be called from any thread. The owner closes last
 * (its close unmaps). Choice for threads that die (terminated workers), documented in rwlock.ts:
 * the arena survives them. The lock records its holder's kernel thread id, every wait is bounded
 * (ETIMEDOUT), a dead holder is detected and replaced and its journalled change finished
 * (pages.ts), and `reclaimDead()` frees the blocks dead threads left behind.
 * Cross-modifying code: a function written on one CPU and first run on another relies on x86
 * cache coherence plus the thousands of instructions between publishing (a seq-cst Atomics store
 * in the tests) and the call; the SDM's strict protocol (a serializing instruction on the
 * executing CPU) is not performed. In mprotect mode the flip's TLB-shootdown IPI does serialize.
 */

import type { Prot } from '../arch/types.js';
import { x86_64 } from '../arch/x86_64.js';
import {
  type Backend,
  type BackendBlock,
  type BackendCounters,
  BackendError,
  type ExecLock,
  type MapBlockRequest,
  newBackendCounters,
} from '../execmem/backend.js';
import { codeProt, FamilyArena, type FamilyLayout, P_RW, releaseLayout } from './arena.js';
import { byteCount, copyInto, fillPattern, patternCopy } from './bytes.js';
import { Callables, type HostFunction, makeFunction } from './call.js';
import { HostError } from './errors.js';
import { type Libc, loadLibc } from './libc.js';
import {
  checkThreadOptions,
  type HostFaultPoint,
  type HostOptions,
  type HostReport,
  type HostShareHandle,
  type HostThreadOptions,
  prepareHost,
} from './open.js';
import { J_FREE, J_PROTECT, PageOps } from './pages.js';
import { hugeBytesIn, readMaps } from './procmaps.js';
import { aliasCodeFor, checkMapRequest, checkProtect, familyIndexOf, HostBlock, TEXT } from './request.js';
import { ArenaLock, arenaAllocatorLock, type LockInspection, ThreadLock } from './rwlock.js';
import { currentThread } from './threads.js';
import { createTrampoline, releaseTrampoline } from './trampoline.js';

export type { HostFunction } from './call.js';
export type {
  HostFaultPoint,
  HostMode,
  HostOptions,
  HostReport,
  HostShareHandle,
  HostThreadOptions,
} from './open.js';
export { HostBlock } from './request.js';

function hex(va: number): string {
  return `0x${va.toString(16)}`;
}

export class HostBackend implements Backend {
  readonly kind = 'host' as const;
  readonly arch = x86_64;
  readonly pageBytes: number;
  readonly largePageBytes: number;
  readonly hasAliasWrite: boolean;
  readonly mode: 'dualmap' | 'mprotect';
  /**
   * The lock the allocator holds around each operation and across batch(). mprotect mode: the
   * exclusive side of the shared arena lock, because an open update window makes pages RW+NX for
   * every thread. dualmap mode: a per-thread flag (ThreadLock). Both refuse re-entry (EDEADLK)
   * and fail with ECLOSED once closed.
   */
  readonly lock: ExecLock;

  private readonly arena: ArenaLock;
  private readonly families: readonly [FamilyArena, FamilyArena];
  private readonly pages: PageOps;
  private readonly blocks = new Map<number, HostBlock>();
  private readonly ctr: BackendCounters = newBackendCounters();
  private readonly callables: Callables;
  private readonly hook: ((point: HostFaultPoint) => void) | undefined;
  private closed = false;

  private constructor(
    private readonly libc: Libc,
    private readonly hostReport: HostReport,
    layouts: readonly [FamilyLayout, FamilyLayout],
    lockSab: SharedArrayBuffer,
    private readonly owner: boolean,
    private readonly trampolineVa: number,
    options: HostThreadOptions,
  ) {
    this.mode = hostReport.mode;
    this.hasAliasWrite = this.mode === 'dualmap';
    this.pageBytes = 4096;
    this.largePageBytes = hostReport.thpPolicy.pmdBytes;
    this.hook = options.faultHook;
    this.callables = new Callables(trampolineVa);
    this.families = [new FamilyArena(layouts[0]), new FamilyArena(layouts[1])];
    const families = this.families;
    let pages: PageOps | null = null;
    this.arena = new ArenaLock(lockSab, currentThread(), {
      recover: () => pages?.replay(),
      ownsPages: (slot) => families.some((f) => f.ownsAny(slot)),
    });
    pages = new PageOps(libc, families, this.arena.journal, this.pageBytes, this.largePageBytes);
    this.pages = pages;
    const arena = this.arena;
    const isClosed = (): boolean => this.isClosed;
    this.lock = this.mode === 'mprotect' ? arenaAllocatorLock(arena, isClosed) : new ThreadLock(isClosed);
  }

  /** Open the arena in this thread (see openHost). */
  static open(options: HostOptions): HostBackend {
    const p = prepareHost(options);
    const stub = createTrampoline(p.libc);
    try {
      const sab = ArenaLock.newBuffer(p.report.lockTimeoutMs);
      return new HostBackend(p.libc, p.report, p.layouts, sab, true, stub, { faultHook: options.faultHook });
    } catch (e) {
      for (const l of p.layouts) releaseLayout(p.libc, l);
      releaseTrampoline(p.libc, stub);
      throw e;
    }
  }

  /** Attach to an arena opened in another thread (see attachHost). */
  static attach(handle: HostShareHandle, options?: HostThreadOptions): HostBackend {
    if (handle?.kind !== 'execmem-host') throw new HostError('EINVAL', 'not a host share handle');
    const checked = checkThreadOptions(options);
    const stub = Number.isSafeInteger(handle.trampoline) ? handle.trampoline : 0;
    return new HostBackend(loadLibc(), handle.report, handle.families, handle.lock, false, stub, checked);
  }

  // ---------------------------------------------------------------- what was decided

  get modeReason(): string {
    return this.hostReport.modeReason;
  }

  report(): HostReport {
    const families = this.families.map((f) => ({
      name: f.name,
      viewBase: hex(f.layout.viewBase),
      aliasBase: f.layout.aliasBase === 0 ? null : hex(f.layout.aliasBase),
      capacityBytes: f.layout.capacityBytes,
      mappedBytes: f.mappedBytes(),
    }));
    return { ...this.hostReport, families };
  }

  share(): HostShareHandle {
    this.checkOpen();
    return {
      kind: 'execmem-host',
      mode: this.mode,
      report: this.hostReport,
      families: [this.families[0].layout, this.families[1].layout],
      lock: this.arena.sab,
      trampoline: this.trampolineVa,
    };
  }

  /** Protection of the page holding `va` as the backend's table has it; null if not mapped. */
  protAt(va: number): Prot | null {
    const f = this.familyOf(va, 1);
    return f === null ? null : codeProt(f.viewCodes[f.pageOf(va)]);
  }

  /** Bytes of the view reservations mapped with 2 MiB pages right now, read from smaps. */
  hugeMappedBytes(): number {
    const field = this.mode === 'dualmap' ? 'ShmemPmdMapped' : 'AnonHugePages';
    let total = 0;
    for (const f of this.families) total += hugeBytesIn(f.layout.viewBase, f.viewEnd, field);
    return total;
  }

  /** The arena lock's shared state: holder, readers, recoveries, journal (tests, reports). */
  lockState(): LockInspection {
    return this.arena.inspect();
  }

  /**
   * Pages whose protection in /proc/self/maps differs from the shared tables (empty when every
   * page agrees). Meaningful when no thread is changing the arena (tests, after a recovery).
   */
  auditProtections(): string[] {
    this.checkOpen();
    return this.pages.disagreements(readMaps());
  }

  // ---------------------------------------------------------------- Backend

  mapBlock(req: MapBlockRequest): BackendBlock {
    this.checkOpen();
    const { type, sizeBytes, alignBytes, huge } = checkMapRequest(req, this.pageBytes, this.largePageBytes);
    const fi = familyIndexOf(type);
    const fam = this.families[fi];
    const pageCount = sizeBytes / this.pageBytes;
    let alignPages = Math.max(1, alignBytes / this.pageBytes);
    if (huge) alignPages = Math.max(alignPages, this.largePageBytes / this.pageBytes);
    this.arena.acquire();
    try {
      const first = fam.findRun(pageCount, alignPages);
      if (first < 0) {
        throw new BackendError(
          'ENOSPC',
          `${fam.name} reservation (${fam.layout.capacityBytes} bytes) has no free run of ${sizeBytes} bytes`,
        );
      }
      const va = fam.layout.viewBase + first * this.pageBytes;
      this.pages.begin(J_FREE, fi, first, pageCount);
      let large: boolean;
      try {
        try {
          this.pages.populate(fam, first, pageCount);
        } catch (e) {
          throw e instanceof HostError ? new BackendError('ENOMEM', e.message) : e;
        }
        this.hook?.('map:populated');
        fam.setCodes(fam.viewCodes, first, pageCount, P_RW);
        if (fam.alias) fam.setCodes(fam.aliasCodes, first, pageCount, P_RW);
        fam.setCodes(fam.owners, first, pageCount, this.arena.slot + 1);
        large = huge && this.pages.tryHuge(fam, first, pageCount, this.hostReport.thpForBlocks);
      } finally {
        // Not reached when this thread dies in between: then the next holder rolls the map back.
        this.pages.end();
      }
      const block = new HostBlock(va, sizeBytes, large, type, fi, first, pageCount);
      this.blocks.set(va, block);
      this.ctr.blocksMapped++;
      if (huge && !large) this.ctr.hugeFallbacks++;
      return block;
    } finally {
      this.arena.release();
    }
  }

  unmapBlock(block: BackendBlock): void {
    this.checkOpen();
    const b = this.liveBlock(block);
    const fam = this.families[b.family];
    this.arena.acquire();
    try {
      this.pages.begin(J_FREE, b.family, b.firstPage, b.pageCount);
      try {
        this.pages.release(fam, b.firstPage, b.pageCount, this.hook && (() => this.hook?.('unmap:released')));
      } finally {
        this.pages.end();
      }
      this.blocks.delete(b.va);
      this.ctr.blocksUnmapped++;
    } finally {
      this.arena.release();
    }
  }

  write(va: number, bytes: Uint8Array): void {
    this.checkOpen();
    const n = byteCount(bytes, 'write bytes');
    if (n === 0) return;
    const f = this.familyFor(va, n);
    if (!f.allEqual(f.viewCodes, va, n, P_RW)) throw this.notAccessible('written', va, n);
    copyInto(f.view, bytes, va - f.layout.viewBase, n);
  }

  fill(va: number, sizeBytes: number, pattern: Uint8Array): void {
    this.checkOpen();
    const pat = this.checkFill(sizeBytes, pattern);
    if (sizeBytes === 0) return;
    const f = this.familyFor(va, sizeBytes);
    if (!f.allEqual(f.viewCodes, va, sizeBytes, P_RW)) throw this.notAccessible('written', va, sizeBytes);
    fillPattern(f.view, va - f.layout.viewBase, sizeBytes, pat);
  }

  protect(block: BackendBlock, va: number, sizeBytes: number, prot: Prot): void {
    this.checkOpen();
    const b = this.liveBlock(block);
    const code = checkProtect(b, va, sizeBytes, prot, this.pageBytes);
    const fam = this.families[b.family];
    const first = fam.pageOf(va);
    const count = sizeBytes / this.pageBytes;
    const aliasCode = aliasCodeFor(code, b.type);
    const hook = this.hook;
    this.arena.acquire();
    try {
      this.pages.begin(J_PROTECT, b.family, first, count, code, aliasCode);
      try {
        this.ctr.permissionFlips += this.pages.protect(
          fam,
          first,
          count,
          code,
          aliasCode,
          hook && ((step) => hook(step === 'view' ? 'protect:view' : 'protect:alias')),
        );
      } finally {
        this.pages.end();
      }
    } finally {
      this.arena.release();
    }
  }

  poke(va: number, bytes: Uint8Array): void {
    this.checkOpen();
    this.checkAlias();
    const n = byteCount(bytes, 'poke bytes');
    if (n === 0) return;
    const f = this.familyFor(va, n);
    if (!f.allEqual(f.aliasCodes, va, n, P_RW)) throw this.notAccessible('poked', va, n);
    copyInto(f.alias as Uint8Array, bytes, va - f.layout.viewBase, n);
    this.ctr.pokes++;
    this.ctr.pokeBytes += n;
  }

  pokeSet(va: number, sizeBytes: number, pattern: Uint8Array): void {
    this.checkOpen();
    this.checkAlias();
    const pat = this.checkFill(sizeBytes, pattern);
    if (sizeBytes === 0) return;
    const f = this.familyFor(va, sizeBytes);
    if (!f.allEqual(f.aliasCodes, va, sizeBytes, P_RW)) throw this.notAccessible('poked', va, sizeBytes);
    fillPattern(f.alias as Uint8Array, va - f.layout.viewBase, sizeBytes, pat);
    this.ctr.pokes++;
    this.ctr.pokeBytes += sizeBytes;
  }

  read(va: number, sizeBytes: number): Uint8Array {
    this.checkOpen();
    if (!Number.isInteger(sizeBytes) || sizeBytes <= 0) {
      throw new HostError('EINVAL', `read size must be a positive integer, got ${sizeBytes}`);
    }
    const f = this.familyFor(va, sizeBytes);
    if (!f.allReadable(va, sizeBytes)) throw this.notAccessible('read', va, sizeBytes);
    const off = va - f.layout.viewBase;
    return f.view.slice(off, off + sizeBytes);
  }

  counters(): BackendCounters {
    return { ...this.ctr };
  }

  // ---------------------------------------------------------------- calling code

  /**
   * A JS function that calls the code at `ptr` with the C signature `signature`, e.g.
   * 'int (int, int)'. Refused (HostError EFAULT) unless the entry page is executable and holds
   * code, not the trap fill; each call checks again (call.ts), so a function whose code was freed
   * or unmapped since is a typed error, not a SIGTRAP or SIGSEGV. After close: ECLOSED.
   */
  fn<T extends HostFunction = HostFunction>(ptr: number | bigint, signature: string): T {
    this.checkOpen();
    const va = typeof ptr === 'bigint' ? Number(ptr) : ptr;
    const fam = this.families[TEXT];
    if (typeof va !== 'number' || !Number.isInteger(va) || !fam.contains(va, 1)) {
      throw new HostError('EFAULT', `${String(ptr)} is not inside the text reservation`);
    }
    if (typeof signature !== 'string') throw new HostError('EINVAL', 'the C signature must be a string');
    this.callables.proto(signature);
    const hook = this.hook;
    return makeFunction<T>({
      va,
      fam,
      raw: () => this.callables.raw(va, signature),
      trapByte: this.arch.trapPattern[0],
      lock: this.mode === 'mprotect' ? this.arena : null,
      isClosed: () => this.isClosed,
      onCall: hook && (() => hook('call:shared')),
    });
  }

  // ---------------------------------------------------------------- threads that died

  /**
   * Unmap every block whose owner's thread is gone (or whose backend closed without freeing it)
   * and give their lock slots back; returns the bytes released. Under the exclusive lock, so in
   * mprotect mode a call into such a block is refused (EFAULT) rather than faulting. In dualmap
   * calls take no lock: the caller must know that no thread still runs code from those blocks.
   */
  reclaimDead(): number {
    this.checkOpen();
    this.arena.acquire();
    try {
      const bytes = this.pages.reclaim(new Set(this.arena.deadSlots().map((slot) => slot + 1)));
      this.arena.reapDead();
      return bytes;
    } finally {
      this.arena.release();
    }
  }

  // ---------------------------------------------------------------- life

  /**
   * Close. The owner unmaps both reservations (after taking the lock, so no mprotect-mode call is
   * running; ETIMEDOUT with nothing changed if a live thread holds it past the bound); an attached
   * backend gives its lock slot back (its blocks stay mapped and owned, for
   * the owner's reclaimDead()). Every later call throws ECLOSED. Idempotent. Refused (EDEADLK)
   * while this backend holds the arena lock, e.g. inside an mprotect-mode batch().
   */
  close(): void {
    if (this.closed) return;
    if (this.arena.heldByMe()) {
      throw new BackendError('EDEADLK', 'close() while this backend holds the arena lock (inside batch?)');
    }
    if (this.owner && !this.arena.isClosed()) {
      this.arena.acquire();
      try {
        this.arena.markClosed();
        for (const f of this.families) releaseLayout(this.libc, f.layout);
        releaseTrampoline(this.libc, this.trampolineVa);
      } finally {
        this.arena.release();
      }
    }
    this.closed = true;
    this.blocks.clear();
    if (!this.arena.isClosed()) this.arena.detach();
  }

  get isClosed(): boolean {
    return this.closed || this.arena.isClosed();
  }

  // ---------------------------------------------------------------- internals

  private checkOpen(): void {
    if (this.isClosed) throw new BackendError('ECLOSED', 'host backend is closed');
  }

  private checkAlias(): void {
    if (!this.hasAliasWrite) {
      throw new BackendError('ENOTSUP', 'mprotect mode has no alias; updates flip permissions instead');
    }
  }

  private checkFill(sizeBytes: number, pattern: Uint8Array): Uint8Array {
    if (!Number.isInteger(sizeBytes) || sizeBytes < 0) {
      throw new HostError('EINVAL', `fill size must be a non-negative integer, got ${sizeBytes}`);
    }
    return patternCopy(pattern, 'fill pattern');
  }

  private liveBlock(block: BackendBlock): HostBlock {
    const va = block?.va;
    const b = this.blocks.get(va);
    if (b === undefined || b !== block) {
      throw new HostError(
        'EINVAL',
        `not a live block of this backend: ${typeof va === 'number' ? hex(va) : String(va)}`,
      );
    }
    return b;
  }

  private familyOf(va: number, sizeBytes: number): FamilyArena | null {
    if (typeof va !== 'number' || !Number.isInteger(va)) return null;
    for (const f of this.families) if (f.contains(va, sizeBytes)) return f;
    return null;
  }

  private familyFor(va: number, sizeBytes: number): FamilyArena {
    const f = this.familyOf(va, sizeBytes);
    if (f === null)
      throw new HostError('EFAULT', `${String(va)}+${sizeBytes} is outside the host reservations`);
    return f;
  }

  private notAccessible(what: string, va: number, sizeBytes: number): HostError {
    const f = this.familyOf(va, sizeBytes);
    const code = f === null ? 0 : f.viewCodes[f.pageOf(va)];
    return new HostError(
      'EFAULT',
      `${hex(va)}+${sizeBytes} cannot be ${what} (view page is ${codeProt(code) ?? 'free'})`,
    );
  }
}

/**
 * Open the host backend. Throws HostError EINVAL on bad options, BackendError ENOTSUP when the
 * process cannot have executable memory in the asked mode (with the probe's reason).
 */
export function openHost(options: HostOptions = {}): HostBackend {
  return HostBackend.open(options);
}

/** Attach to an arena opened in another thread (see HostBackend.share()). */
export function attachHost(handle: HostShareHandle, options?: HostThreadOptions): HostBackend {
  return HostBackend.attach(handle, options);
}
