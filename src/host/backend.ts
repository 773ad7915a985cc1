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
 *   it chose what it chose; a forced probe failure tests the fallback.
 *
 * The kernel VA ranges in MapBlockRequest mean nothing in user space and are ignored; blocks are
 * placed in the family's reservation instead. Huge pages are requested (MADV_HUGEPAGE where the
 * policy is "madvise"), verified in /proc/self/smaps and reported per block, never assumed.
 *
 * x86-64 only: x86 keeps instruction and data caches coherent, so no cache maintenance is needed
 * after a write (compiler-rt __clear_cache is a no-op there). arm64 would need `ic ivau`/`isb`
 * after every update and membarrier for other threads; that is not faked here: openHost refuses.
 *
 * Worker threads: `share()` gives a structured-cloneable handle; `attachHost(handle)` in a worker
 * builds a backend over the same mappings, page tables and lock. Blocks belong to the backend that
 * mapped them; code may be called from any thread. The owner closes last (its close unmaps).
 * Locking, per mode: mprotect-mode calls hold the shared side of the lock, so a flip or an unmap
 * waits for running calls and a call after an unmap is a typed error. dualmap calls take no lock
 * (nothing they execute ever changes protection while live), so freeing code another thread may
 * still be running is the caller's race, exactly as with free() of any memory in use.
 * Cross-modifying code: a function written on one CPU and first run on another relies on x86
 * cache coherence plus the thousands of instructions between publishing (a seq-cst Atomics store
 * in the tests) and the call; the SDM's strict protocol (a serializing instruction on the
 * executing CPU) is not performed. In mprotect mode the flip's TLB-shootdown IPI does serialize.
 */

import koffi, { type TypeObject } from 'koffi';
import { EXECMEM_TYPES, type ExecmemType, type Prot, typeIsText } from '../arch/types.js';
import { x86_64 } from '../arch/x86_64.js';
import { isPow2 } from '../base/addr.js';
import { assert } from '../base/assert.js';
import {
  type Backend,
  type BackendBlock,
  type BackendCounters,
  BackendError,
  type MapBlockRequest,
  newBackendCounters,
} from '../execmem/backend.js';
import {
  codeProt,
  FamilyArena,
  type FamilyLayout,
  type FamilyName,
  P_FREE,
  P_NONE,
  P_RO,
  P_ROX,
  P_RW,
  protBits,
  protCode,
  releaseLayout,
  reserveAnon,
  reserveDual,
} from './arena.js';
import { HostError } from './errors.js';
import {
  type Libc,
  loadLibc,
  MADV_HUGEPAGE,
  MADV_REMOVE,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_NORESERVE,
  MAP_PRIVATE,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  RLIMIT_AS,
  RLIMIT_FSIZE,
  SC_PAGESIZE,
} from './libc.js';
import {
  createMemfd,
  memfdFlagsName,
  type ProbeFault,
  type ProbeResult,
  probeAnonExec,
  probeDualmap,
} from './probe.js';
import { hugeBytesIn, readThpPolicy, type ThpPolicy, type ThpUse, thpUse } from './procmaps.js';
import { SharedRwLock } from './rwlock.js';

export type HostMode = 'auto' | 'dualmap' | 'mprotect';

export interface HostOptions {
  /** Default 'auto'. */
  readonly mode?: HostMode;
  /** Reservation for text types (module_text, kprobes, ftrace, bpf). Default 512 MiB. */
  readonly textReserveBytes?: number;
  /** Reservation for data types (module_rodata, module_ro_after_init, module_data). Default 256 MiB. */
  readonly dataReserveBytes?: number;
  /** Make a step of the dualmap probe fail as if refused (tests the fallback). */
  readonly probeFault?: ProbeFault;
  /** memfd name shown in /proc/self/maps as /memfd:<name>. Default 'execmem'. */
  readonly memfdName?: string;
}

/** What openHost decided and measured; JSON-friendly. */
export interface HostReport {
  readonly mode: 'dualmap' | 'mprotect';
  readonly requestedMode: HostMode;
  readonly modeReason: string;
  readonly probes: { readonly dualmap: ProbeResult | null; readonly anonExec: ProbeResult | null };
  /** memfd flags accepted by the kernel (dualmap), else null. */
  readonly memfdFlags: string | null;
  readonly thpPolicy: ThpPolicy;
  /** Can blocks get 2 MiB pages in this mode (anon or shmem) under this policy, and why. */
  readonly thpForBlocks: ThpUse;
  /** RLIMIT_FSIZE soft limit; null when unlimited. */
  readonly rlimitFsizeBytes: number | null;
  readonly families: readonly {
    readonly name: FamilyName;
    readonly viewBase: string;
    readonly aliasBase: string | null;
    readonly capacityBytes: number;
    readonly mappedBytes: number;
  }[];
}

/** Everything a worker needs to attach to the same arena (structured-cloneable). */
export interface HostShareHandle {
  readonly kind: 'execmem-host';
  readonly mode: 'dualmap' | 'mprotect';
  readonly report: HostReport;
  readonly families: readonly [FamilyLayout, FamilyLayout];
  readonly lock: SharedArrayBuffer;
}

/** A JIT function callable from JS. */
// biome-ignore lint/suspicious/noExplicitAny: koffi converts arguments per the C signature.
export type HostFunction = (...args: any[]) => any;

export class HostBlock implements BackendBlock {
  constructor(
    readonly va: number,
    readonly sizeBytes: number,
    readonly largePages: boolean,
    readonly type: ExecmemType,
    readonly family: number,
    readonly firstPage: number,
    readonly pageCount: number,
  ) {}
}

/** dualmap's allocator lock: re-entrant, this thread only (see HostBackend.lock). */
class ThreadLock {
  private depth = 0;
  acquire(): void {
    this.depth++;
  }
  release(): void {
    assert(this.depth > 0, 'lock released while not held');
    this.depth--;
  }
}

const SZ_2M = 2 * 1024 * 1024;
const DEFAULT_TEXT_RESERVE = 512 * 1024 * 1024;
const DEFAULT_DATA_RESERVE = 256 * 1024 * 1024;
/** A family is at most 16 GiB (two views in dualmap: 32 GiB of address space). */
const RESERVE_MAX = 16 * 1024 * 1024 * 1024;
const TEXT = 0;
const DATA = 1;

function hex(va: number): string {
  return `0x${va.toString(16)}`;
}

function familyIndexOf(type: ExecmemType): number {
  return typeIsText(type) ? TEXT : DATA;
}

/**
 * The alias protection that goes with a view protection in dualmap mode. The alias stays RW
 * while the allocator still writes through it (text: ROX view; module_rodata: RO view, updated
 * through the helper). A sealed ro_after_init page (RO view of a module_ro_after_init block) has no
 * writer left, so its alias becomes RO too, as set_memory_ro also write-protects the kernel's
 * direct-map alias; unsealing (RW view) restores it.
 */
function aliasCodeFor(viewCode: number, type: ExecmemType): number {
  if (viewCode === P_NONE) return P_NONE;
  if (viewCode === P_RO && type === 'module_ro_after_init') return P_RO;
  return P_RW;
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
   * exclusive side of the shared reader/writer lock, because an open update window makes pages
   * RW+NX for every thread. dualmap mode: a per-thread re-entrant counter, because nothing the
   * allocator does there changes what another thread may execute (each thread's Execmem state is
   * its own, and the backend locks its shared tables itself in mapBlock/unmapBlock/protect); the
   * shared lock would only add its atomics to every update.
   */
  readonly lock: { acquire(): void; release(): void };

  private readonly rw: SharedRwLock;
  private readonly families: readonly [FamilyArena, FamilyArena];
  private readonly blocks = new Map<number, HostBlock>();
  private readonly ctr: BackendCounters = newBackendCounters();
  private readonly protos = new Map<string, TypeObject>();
  private closed = false;

  private constructor(
    private readonly libc: Libc,
    private readonly hostReport: HostReport,
    layouts: readonly [FamilyLayout, FamilyLayout],
    lockSab: SharedArrayBuffer,
    private readonly owner: boolean,
  ) {
    this.mode = hostReport.mode;
    this.hasAliasWrite = this.mode === 'dualmap';
    this.pageBytes = 4096;
    this.largePageBytes = hostReport.thpPolicy.pmdBytes;
    this.rw = new SharedRwLock(lockSab);
    this.families = [new FamilyArena(layouts[0]), new FamilyArena(layouts[1])];
    const rw = this.rw;
    this.lock =
      this.mode === 'mprotect'
        ? { acquire: () => rw.acquire(), release: () => rw.release() }
        : new ThreadLock();
  }

  /** Used by openHost only. */
  static create(libc: Libc, report: HostReport, layouts: readonly [FamilyLayout, FamilyLayout]): HostBackend {
    return new HostBackend(libc, report, layouts, SharedRwLock.newBuffer(), true);
  }

  /** Used by attachHost only. */
  static attach(handle: HostShareHandle): HostBackend {
    return new HostBackend(loadLibc(), handle.report, handle.families, handle.lock, false);
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
      lock: this.rw.sab,
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

  // ---------------------------------------------------------------- Backend

  mapBlock(req: MapBlockRequest): BackendBlock {
    this.checkOpen();
    this.checkRequest(req);
    const fam = this.families[familyIndexOf(req.type)];
    const pageCount = req.sizeBytes / this.pageBytes;
    let alignPages = Math.max(1, req.alignBytes / this.pageBytes);
    if (req.huge) alignPages = Math.max(alignPages, this.largePageBytes / this.pageBytes);
    this.rw.acquire();
    try {
      const first = fam.findRun(pageCount, alignPages);
      if (first < 0) {
        throw new BackendError(
          'ENOSPC',
          `${fam.name} reservation (${fam.layout.capacityBytes} bytes) has no free run of ${req.sizeBytes} bytes`,
        );
      }
      const va = fam.layout.viewBase + first * this.pageBytes;
      this.populate(fam, va, req.sizeBytes);
      fam.setCodes(fam.viewCodes, first, pageCount, P_RW);
      if (fam.alias) fam.setCodes(fam.aliasCodes, first, pageCount, P_RW);
      const large = req.huge && this.tryHuge(fam, va, req.sizeBytes);
      const block = new HostBlock(
        va,
        req.sizeBytes,
        large,
        req.type,
        familyIndexOf(req.type),
        first,
        pageCount,
      );
      this.blocks.set(va, block);
      this.ctr.blocksMapped++;
      if (req.huge && !large) this.ctr.hugeFallbacks++;
      return block;
    } finally {
      this.rw.release();
    }
  }

  unmapBlock(block: BackendBlock): void {
    this.checkOpen();
    const b = this.liveBlock(block);
    const fam = this.families[b.family];
    this.rw.acquire();
    try {
      this.depopulate(fam, b);
      fam.setCodes(fam.viewCodes, b.firstPage, b.pageCount, P_FREE);
      fam.setCodes(fam.aliasCodes, b.firstPage, b.pageCount, P_FREE);
      this.blocks.delete(b.va);
      this.ctr.blocksUnmapped++;
    } finally {
      this.rw.release();
    }
  }

  write(va: number, bytes: Uint8Array): void {
    this.checkOpen();
    if (bytes.length === 0) return;
    const f = this.familyFor(va, bytes.length);
    if (!f.allEqual(f.viewCodes, va, bytes.length, P_RW))
      throw this.notAccessible('written', va, bytes.length);
    f.view.set(bytes, va - f.layout.viewBase);
  }

  fill(va: number, sizeBytes: number, pattern: Uint8Array): void {
    this.checkOpen();
    this.checkFill(sizeBytes, pattern);
    if (sizeBytes === 0) return;
    const f = this.familyFor(va, sizeBytes);
    if (!f.allEqual(f.viewCodes, va, sizeBytes, P_RW)) throw this.notAccessible('written', va, sizeBytes);
    fillPattern(f.view, va - f.layout.viewBase, sizeBytes, pattern);
  }

  protect(block: BackendBlock, va: number, sizeBytes: number, prot: Prot): void {
    this.checkOpen();
    const b = this.liveBlock(block);
    if (prot === 'rwx') {
      throw new HostError('EINVAL', 'RWX is never granted (measurement-only baselines map their own memory)');
    }
    const code = protCode(prot);
    if (
      !Number.isInteger(va) ||
      va % this.pageBytes !== 0 ||
      !Number.isInteger(sizeBytes) ||
      sizeBytes <= 0
    ) {
      throw new HostError('EINVAL', `protect range must be whole pages: va ${hex(va)}, ${sizeBytes} bytes`);
    }
    if (sizeBytes % this.pageBytes !== 0 || va < b.va || va + sizeBytes > b.va + b.sizeBytes) {
      throw new HostError(
        'EINVAL',
        `protect range ${hex(va)}+${sizeBytes} is not whole pages of block ${hex(b.va)}`,
      );
    }
    const fam = this.families[b.family];
    this.rw.acquire();
    try {
      this.flip(fam, b, va, sizeBytes, code);
    } finally {
      this.rw.release();
    }
  }

  poke(va: number, bytes: Uint8Array): void {
    this.checkOpen();
    this.checkAlias();
    if (bytes.length === 0) return;
    const f = this.familyFor(va, bytes.length);
    if (!f.allEqual(f.aliasCodes, va, bytes.length, P_RW))
      throw this.notAccessible('poked', va, bytes.length);
    (f.alias as Uint8Array).set(bytes, va - f.layout.viewBase);
    this.ctr.pokes++;
    this.ctr.pokeBytes += bytes.length;
  }

  pokeSet(va: number, sizeBytes: number, pattern: Uint8Array): void {
    this.checkOpen();
    this.checkAlias();
    this.checkFill(sizeBytes, pattern);
    if (sizeBytes === 0) return;
    const f = this.familyFor(va, sizeBytes);
    if (!f.allEqual(f.aliasCodes, va, sizeBytes, P_RW)) throw this.notAccessible('poked', va, sizeBytes);
    fillPattern(f.alias as Uint8Array, va - f.layout.viewBase, sizeBytes, pattern);
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
   * 'int (int, int)'. Each call checks that the entry page is still executable (a typed error
   * instead of SIGSEGV if the block was unmapped); in mprotect mode it holds the shared side of the
   * lock so no flip can make the page non-executable while it runs. Calling freed (trap-filled)
   * memory still traps: that is the point of the trap fill.
   */
  fn<T extends HostFunction = HostFunction>(ptr: number | bigint, signature: string): T {
    this.checkOpen();
    const va = typeof ptr === 'bigint' ? Number(ptr) : ptr;
    const fam = this.families[TEXT];
    if (!Number.isInteger(va) || !fam.contains(va, 1)) {
      throw new HostError('EFAULT', `${hex(va)} is not inside the text reservation`);
    }
    const page = fam.pageOf(va);
    // In mprotect mode another thread may have this block open (RW+NX) for an update right now:
    // look at the page under the shared lock, as a call would.
    const shared = this.mode === 'mprotect' && !this.rw.heldByMe();
    if (shared) this.rw.acquireShared();
    const code = fam.viewCodes[page];
    if (shared) this.rw.releaseShared();
    if (code !== P_ROX) {
      throw new HostError('EFAULT', `${hex(va)} is not executable (page is ${codeProt(code) ?? 'free'})`);
    }
    const raw = koffi.decode(va, this.proto(signature)) as HostFunction;
    const codes = fam.viewCodes;
    const enter = (): void => {
      if (this.closed || this.rw.isClosed()) throw new BackendError('ECLOSED', 'host backend is closed');
      if (codes[page] !== P_ROX) {
        throw new HostError(
          'EFAULT',
          `${hex(va)} is no longer executable (${codeProt(codes[page]) ?? 'free'})`,
        );
      }
    };
    if (this.mode === 'dualmap') {
      return ((...args: unknown[]) => {
        enter();
        return raw(...args);
      }) as T;
    }
    const rw = this.rw;
    return ((...args: unknown[]) => {
      if (rw.heldByMe()) {
        enter();
        return raw(...args);
      }
      rw.acquireShared();
      try {
        enter();
        return raw(...args);
      } finally {
        rw.releaseShared();
      }
    }) as T;
  }

  // ---------------------------------------------------------------- life

  /**
   * Close. The owner unmaps both reservations (after taking the lock, so no mprotect-mode call is
   * running); an attached backend only detaches. Every later call throws ECLOSED. Idempotent.
   */
  close(): void {
    if (this.closed) return;
    if (this.owner) {
      this.rw.acquire();
      try {
        this.rw.markClosed();
        for (const f of this.families) releaseLayout(this.libc, f.layout);
      } finally {
        this.rw.release();
      }
    }
    this.closed = true;
    this.blocks.clear();
  }

  get isClosed(): boolean {
    return this.closed || this.rw.isClosed();
  }

  // ---------------------------------------------------------------- internals

  private checkOpen(): void {
    if (this.closed || this.rw.isClosed()) throw new BackendError('ECLOSED', 'host backend is closed');
  }

  private checkAlias(): void {
    if (!this.hasAliasWrite) {
      throw new BackendError('ENOTSUP', 'mprotect mode has no alias; updates flip permissions instead');
    }
  }

  private checkFill(sizeBytes: number, pattern: Uint8Array): void {
    if (!Number.isInteger(sizeBytes) || sizeBytes < 0) {
      throw new HostError('EINVAL', `fill size must be a non-negative integer, got ${sizeBytes}`);
    }
    if (pattern.length === 0) throw new HostError('EINVAL', 'fill pattern is empty');
  }

  private checkRequest(req: MapBlockRequest): void {
    if (!(EXECMEM_TYPES as readonly string[]).includes(req.type)) {
      throw new HostError('EINVAL', `unknown type '${String(req.type)}'`);
    }
    const s = req.sizeBytes;
    if (!Number.isInteger(s) || s <= 0 || s % this.pageBytes !== 0) {
      throw new HostError('EINVAL', `block size must be a positive multiple of ${this.pageBytes}, got ${s}`);
    }
    if (!isPow2(req.alignBytes)) {
      throw new HostError('EINVAL', `block alignment must be a power of two, got ${req.alignBytes}`);
    }
    if (req.huge && s % this.largePageBytes !== 0) {
      throw new HostError(
        'EINVAL',
        `a huge block must be a multiple of ${this.largePageBytes} bytes, got ${s}`,
      );
    }
  }

  private liveBlock(block: BackendBlock): HostBlock {
    const b = this.blocks.get(block?.va);
    if (b === undefined || b !== block) {
      throw new HostError('EINVAL', `not a live block of this backend: ${hex(block?.va ?? Number.NaN)}`);
    }
    return b;
  }

  private familyOf(va: number, sizeBytes: number): FamilyArena | null {
    if (!Number.isInteger(va)) return null;
    for (const f of this.families) if (f.contains(va, sizeBytes)) return f;
    return null;
  }

  private familyFor(va: number, sizeBytes: number): FamilyArena {
    const f = this.familyOf(va, sizeBytes);
    if (f === null) throw new HostError('EFAULT', `${hex(va)}+${sizeBytes} is outside the host reservations`);
    return f;
  }

  private notAccessible(what: string, va: number, sizeBytes: number): HostError {
    const f = this.familyOf(va, sizeBytes);
    const code = f === null ? P_FREE : f.viewCodes[f.pageOf(va)];
    return new HostError(
      'EFAULT',
      `${hex(va)}+${sizeBytes} cannot be ${what} (view page is ${codeProt(code) ?? 'free'})`,
    );
  }

  private syscallError(what: string): BackendError {
    return new BackendError('ENOMEM', `${what} failed with errno ${this.libc.errno()}`);
  }

  /** Give a free range its pages, RW+NX (and RW alias in dualmap). Nothing changes on failure. */
  private populate(fam: FamilyArena, va: number, sizeBytes: number): void {
    const libc = this.libc;
    const rw = PROT_READ | PROT_WRITE;
    if (fam.alias === null) {
      if (libc.mmap(va, sizeBytes, rw, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) !== va) {
        const err = this.syscallError(`mmap of a ${sizeBytes}-byte block`);
        this.restoreReservation(va, sizeBytes);
        throw err;
      }
      return;
    }
    if (libc.mprotect(va, sizeBytes, rw) !== 0) throw this.syscallError('mprotect of the view');
    const alias = va + fam.layout.aliasBase - fam.layout.viewBase;
    if (libc.mprotect(alias, sizeBytes, rw) !== 0) {
      const err = this.syscallError('mprotect of the alias');
      libc.mprotect(va, sizeBytes, PROT_NONE);
      throw err;
    }
  }

  /** Return a block's pages to the reservation (memory freed, PROT_NONE). */
  private depopulate(fam: FamilyArena, b: HostBlock): void {
    const libc = this.libc;
    if (fam.alias === null) {
      this.restoreReservation(b.va, b.sizeBytes);
      return;
    }
    const alias = b.va + fam.layout.aliasBase - fam.layout.viewBase;
    // MADV_REMOVE needs a writable shared mapping: reset the alias first (VM_FLUSH_RESET_PERMS-like).
    let rc = libc.mprotect(alias, b.sizeBytes, PROT_READ | PROT_WRITE);
    if (rc === 0) rc = libc.madvise(alias, b.sizeBytes, MADV_REMOVE);
    if (rc === 0) rc = libc.mprotect(b.va, b.sizeBytes, PROT_NONE);
    if (rc === 0) rc = libc.mprotect(alias, b.sizeBytes, PROT_NONE);
    if (rc !== 0)
      throw new HostError('ESYSCALL', `unmapping block ${hex(b.va)} failed with errno ${libc.errno()}`);
  }

  private restoreReservation(va: number, sizeBytes: number): void {
    const flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE;
    const r = this.libc.mmap(va, sizeBytes, PROT_NONE, flags, -1, 0);
    if (r !== va)
      throw new HostError('ESYSCALL', `re-reserving ${hex(va)} failed with errno ${this.libc.errno()}`);
  }

  /** One protection change of whole pages, under the exclusive lock (held by the caller). */
  private flip(fam: FamilyArena, b: HostBlock, va: number, sizeBytes: number, code: number): void {
    const libc = this.libc;
    const prot = codeProt(code) as Prot;
    if (libc.mprotect(va, sizeBytes, protBits(prot)) !== 0) {
      throw new HostError(
        'ESYSCALL',
        `mprotect(${hex(va)}, ${sizeBytes}, ${prot}) failed with errno ${libc.errno()}`,
      );
    }
    this.ctr.permissionFlips++;
    const first = fam.pageOf(va);
    const count = sizeBytes / this.pageBytes;
    fam.setCodes(fam.viewCodes, first, count, code);
    if (fam.alias === null) return;
    const aliasCode = aliasCodeFor(code, b.type);
    if (fam.allEqual(fam.aliasCodes, va, sizeBytes, aliasCode)) return;
    const alias = va + fam.layout.aliasBase - fam.layout.viewBase;
    if (libc.mprotect(alias, sizeBytes, protBits(codeProt(aliasCode) as Prot)) !== 0) {
      throw new HostError(
        'ESYSCALL',
        `mprotect of the alias at ${hex(alias)} failed with errno ${libc.errno()}`,
      );
    }
    this.ctr.permissionFlips++;
    fam.setCodes(fam.aliasCodes, first, count, aliasCode);
  }

  /**
   * Ask for 2 MiB pages and check what the kernel did: advise where the policy wants it, touch
   * one byte per 2 MiB (the block is fresh and zero, so writing 0 changes nothing) so the fault
   * decides the page size now, and compare smaps before and after.
   */
  private tryHuge(fam: FamilyArena, va: number, sizeBytes: number): boolean {
    const pmd = this.largePageBytes;
    assert(va % pmd === 0 && sizeBytes % pmd === 0, 'huge block not PMD aligned');
    const use = this.hostReport.thpForBlocks;
    if (!use.usable) return false;
    if (use.needsMadvise) {
      if (this.libc.madvise(va, sizeBytes, MADV_HUGEPAGE) !== 0) return false;
      if (fam.alias !== null) {
        this.libc.madvise(va + fam.layout.aliasBase - fam.layout.viewBase, sizeBytes, MADV_HUGEPAGE);
      }
    }
    const field = this.mode === 'dualmap' ? 'ShmemPmdMapped' : 'AnonHugePages';
    const before = hugeBytesIn(va, va + sizeBytes, field);
    const off = va - fam.layout.viewBase;
    for (let o = 0; o < sizeBytes; o += pmd) fam.view[off + o] = 0;
    const after = hugeBytesIn(va, va + sizeBytes, field);
    return after - before >= sizeBytes;
  }

  private proto(signature: string): TypeObject {
    let p = this.protos.get(signature);
    if (p === undefined) {
      try {
        p = koffi.proto(signature);
      } catch (e) {
        throw new HostError('EINVAL', `bad C signature '${signature}': ${(e as Error).message}`);
      }
      this.protos.set(signature, p);
    }
    return p;
  }
}

/** Fill [off, off+sizeBytes) of `mem` with `pattern` repeated (the tail may be partial). */
function fillPattern(mem: Uint8Array, off: number, sizeBytes: number, pattern: Uint8Array): void {
  if (pattern.length === 1) {
    mem.fill(pattern[0], off, off + sizeBytes);
    return;
  }
  const first = Math.min(pattern.length, sizeBytes);
  mem.set(pattern.subarray(0, first), off);
  let done = first;
  while (done < sizeBytes) {
    const n = Math.min(done, sizeBytes - done);
    mem.copyWithin(off + done, off, off + n);
    done += n;
  }
}

function checkReserve(name: string, bytes: number): void {
  if (!Number.isInteger(bytes) || bytes < SZ_2M || bytes % SZ_2M !== 0 || bytes > RESERVE_MAX) {
    throw new HostError('EINVAL', `${name} must be a multiple of 2 MiB in [2 MiB, 16 GiB], got ${bytes}`);
  }
}

function alignDown2M(bytes: number): number {
  return Math.floor(bytes / SZ_2M) * SZ_2M;
}

/**
 * Open the host backend. Throws HostError EINVAL on bad options, BackendError ENOTSUP when the
 * process cannot have executable memory in the asked mode (with the probe's reason).
 */
export function openHost(options: HostOptions = {}): HostBackend {
  const requested = options.mode ?? 'auto';
  if (requested !== 'auto' && requested !== 'dualmap' && requested !== 'mprotect') {
    throw new HostError('EINVAL', `unknown mode '${String(requested)}' (auto, dualmap, mprotect)`);
  }
  const textBytes = options.textReserveBytes ?? DEFAULT_TEXT_RESERVE;
  const dataBytes = options.dataReserveBytes ?? DEFAULT_DATA_RESERVE;
  checkReserve('textReserveBytes', textBytes);
  checkReserve('dataReserveBytes', dataBytes);
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new BackendError(
      'ENOTSUP',
      `the host backend runs on x86-64 Linux only (this is ${process.platform}/${process.arch}); arm64 would ` +
        'need I-cache maintenance (__clear_cache, membarrier) after every write, which is not faked here',
    );
  }
  const libc = loadLibc();
  const pageBytes = libc.sysconf(SC_PAGESIZE);
  if (pageBytes !== 4096)
    throw new BackendError('ENOTSUP', `page size ${pageBytes} (only 4096 is supported)`);
  const fsize = libc.getrlimit(RLIMIT_FSIZE).cur;
  const as = libc.getrlimit(RLIMIT_AS).cur;
  const thpPolicy = readThpPolicy();

  let dualProbe: ProbeResult | null = null;
  let anonProbe: ProbeResult | null = null;
  let mode: 'dualmap' | 'mprotect';
  let reason: string;
  // Clip each memfd to RLIMIT_FSIZE (no SIGXFSZ) and the address space to RLIMIT_AS / 4.
  const clip = (bytes: number, views: number): number =>
    Math.min(bytes, alignDown2M(fsize), alignDown2M(as / (4 * views)));

  if (requested === 'mprotect') {
    mode = 'mprotect';
    reason = 'mprotect mode requested';
  } else {
    dualProbe = probeDualmap(libc, options.probeFault);
    const room = clip(Math.min(textBytes, dataBytes), 4);
    if (dualProbe.ok && room >= SZ_2M) {
      mode = 'dualmap';
      reason =
        requested === 'dualmap' ? `dualmap requested; ${dualProbe.reason}` : `auto: ${dualProbe.reason}`;
    } else {
      const why = dualProbe.ok
        ? `RLIMIT_FSIZE ${fsize} / RLIMIT_AS ${as} leave no room for a memfd arena`
        : dualProbe.reason;
      if (requested === 'dualmap') throw new BackendError('ENOTSUP', `dualmap unavailable: ${why}`);
      mode = 'mprotect';
      reason = `auto: dualmap unavailable (${why}); falling back to mprotect`;
    }
  }
  if (mode === 'mprotect') {
    anonProbe = probeAnonExec(libc);
    if (!anonProbe.ok)
      throw new BackendError('ENOTSUP', `no executable memory in this process: ${anonProbe.reason}`);
  }

  const thpForBlocks = thpUse(thpPolicy, mode === 'dualmap' ? 'shmem' : 'anon');
  const base = {
    requestedMode: requested,
    modeReason: reason,
    probes: { dualmap: dualProbe, anonExec: anonProbe },
  };
  const views = mode === 'dualmap' ? 4 : 2;
  const caps: [number, number] = [clip(textBytes, views), clip(dataBytes, views)];
  const names: [FamilyName, FamilyName] = ['text', 'data'];
  const layouts: FamilyLayout[] = [];
  let memfdFlags: string | null = null;
  try {
    for (let i = 0; i < 2; i++) {
      let res: ReturnType<typeof reserveAnon>;
      if (mode === 'dualmap') {
        const mfd = createMemfd(libc, `${options.memfdName ?? 'execmem'}-${names[i]}`, options.probeFault);
        if ('errno' in mfd) throw new BackendError('ENOTSUP', `memfd_create failed with errno ${mfd.errno}`);
        memfdFlags = memfdFlagsName(mfd.flags);
        res = reserveDual(libc, names[i], mfd.fd, caps[i], thpPolicy.pmdBytes);
        libc.close(mfd.fd);
      } else {
        res = reserveAnon(libc, names[i], caps[i], thpPolicy.pmdBytes);
      }
      if ('error' in res) throw new BackendError('ENOMEM', `${names[i]} reservation: ${res.error}`);
      layouts.push(res.layout);
    }
  } catch (e) {
    for (const l of layouts) releaseLayout(libc, l);
    throw e;
  }
  const report: HostReport = {
    mode,
    ...base,
    memfdFlags,
    thpPolicy,
    thpForBlocks,
    rlimitFsizeBytes: Number.isFinite(fsize) ? fsize : null,
    families: [],
  };
  return HostBackend.create(libc, report, [layouts[0], layouts[1]]);
}

/** Attach to an arena opened in another thread (see HostBackend.share()). */
export function attachHost(handle: HostShareHandle): HostBackend {
  if (handle?.kind !== 'execmem-host') throw new HostError('EINVAL', 'not a host share handle');
  return HostBackend.attach(handle);
}
