/**
 * A fake execmem Backend for tests and the allocator benchmark: plain memory, a protection per
 * page, and faults on any write a real MMU would refuse.
 *
 * Why: the allocator must be testable before (and independently of) the simulated machine, and
 * its rules must fail loudly when broken: a plain write to a page that is not writable throws
 * (`FakeFault`), an alias write on a backend without an alias throws ENOTSUP, an RWX protection
 * is counted as a W^X violation. Protection flips are recorded so tests can assert "no flip on
 * alloc/free" on alias arches. It is a model, not a machine: there are no TLBs here, so
 * `shootdowns` counts protection changes that remove a permission (what would need one) and
 * `localFlushes` counts alias writes (text_poke flushes locally). Fault injection: fail the nth
 * next mapBlock, unmapBlock or protect, or make the next huge blocks fall back to 4 KiB leaves.
 *
 * `storeBytes: false` keeps protections but no contents (reads return zeros): the benchmark uses
 * it so that throughput measures the allocator, not memset of megabytes.
 *
 * What the execmem property tests share (the model of live allocations, `fakeProbe`, `opArb`)
 * is in execmem-model.ts.
 */
import { createHash } from 'node:crypto';
import type { ArchSpec, Prot, VaRange } from '../../src/arch/types.js';
import { protIsExec, protIsWrite } from '../../src/arch/types.js';
import { SZ_2M, SZ_4K } from '../../src/base/addr.js';
import { realBytes } from '../../src/base/bytes.js';
import {
  type Backend,
  type BackendBlock,
  type BackendCounters,
  BackendError,
  type MapBlockRequest,
  newBackendCounters,
} from '../../src/execmem/backend.js';

export class FakeFault extends Error {
  override name = 'FakeFault';
}

const PROTS: readonly Prot[] = ['none', 'ro', 'rw', 'rox', 'rwx'];

interface FakeBlock extends BackendBlock {
  readonly prot: Uint8Array; // index into PROTS, per page
  /**
   * Per page, a bit per PROTS index: the protections protect() has given the page since it was
   * mapped (the mapping's own RW does not count: a backend may need memory for the first change
   * to any protection, as a host mprotect may to split a mapping).
   */
  readonly held: Uint8Array;
  readonly bytes: Uint8Array | null;
  /** Bumped by every store into the block (stateKey: contents without hashing them). */
  writes: number;
}

export interface FakeBackendOptions {
  /** Alias write available (default: arch.patch !== 'none'). */
  alias?: boolean;
  /** Store contents (default true). */
  storeBytes?: boolean;
  /** Report a platform-chosen module start (Backend.modulesStart); default: none reported. */
  modulesStart?: number;
}

export interface Flip {
  va: number;
  sizeBytes: number;
  prot: Prot;
}

export class FakeBackend implements Backend {
  readonly kind = 'sim' as const;
  readonly pageBytes = SZ_4K;
  readonly largePageBytes = SZ_2M;
  readonly hasAliasWrite: boolean;
  readonly storeBytes: boolean;
  readonly modulesStart?: number;
  readonly flips: Flip[] = [];
  private readonly blocks: FakeBlock[] = []; // sorted by va
  // 2 MiB chunk index -> the blocks overlapping it (one, unless blocks are smaller than 2 MiB,
  // as execmem's 256 KiB ro_after_init blocks are).
  private readonly byChunk = new Map<number, FakeBlock[]>();
  private readonly c: BackendCounters = newBackendCounters();
  private failMapIn = 0;
  private failMapCode: 'ENOMEM' | 'ENOSPC' = 'ENOMEM';
  private failProtectIn = 0;
  private failUnmapIn = 0;
  private hugeFallbacksLeft = 0;
  /** Keep the flips list bounded for long runs. */
  recordFlips = true;

  constructor(
    readonly arch: ArchSpec,
    options: FakeBackendOptions = {},
  ) {
    this.hasAliasWrite = options.alias ?? arch.patch !== 'none';
    this.storeBytes = options.storeBytes ?? true;
    if (options.modulesStart !== undefined) this.modulesStart = options.modulesStart;
  }

  // ---- fault injection ----

  /** The nth next mapBlock (1 = the very next) throws BackendError(code). */
  failMapBlock(nth: number, code: 'ENOMEM' | 'ENOSPC' = 'ENOMEM'): void {
    this.failMapIn = nth;
    this.failMapCode = code;
  }

  /**
   * The nth next protect throws BackendError ENOMEM (as CPA failing to allocate a page table).
   * Calls that give every page a protection it has held before are not counted: they cannot
   * fail (the model of CPA above; the Backend contract, backend.ts protect).
   */
  failProtect(nth: number): void {
    this.failProtectIn = nth;
  }

  /**
   * The nth next unmapBlock throws BackendError ENOMEM with the block still mapped (as a vfree
   * whose direct-map reset gets no page-table frame: atomic, machine/vmalloc.ts).
   */
  failUnmapBlock(nth: number): void {
    this.failUnmapIn = nth;
  }

  /** The next `count` huge requests get 4 KiB leaves (no 2 MiB frame available). */
  hugeFallbackNext(count: number): void {
    this.hugeFallbacksLeft = count;
  }

  // ---- Backend ----

  mapBlock(req: MapBlockRequest): BackendBlock {
    if (this.failMapIn > 0 && --this.failMapIn === 0)
      throw new BackendError(this.failMapCode, 'injected mapBlock failure');
    if (req.sizeBytes <= 0 || req.sizeBytes % SZ_4K !== 0)
      throw new Error(`fake: bad block size ${req.sizeBytes}`);
    if (req.huge && req.sizeBytes % SZ_2M !== 0)
      throw new Error('fake: huge block size must be a 2 MiB multiple');
    const va = this.place(req.range, req) ?? (req.fallback ? this.place(req.fallback, req) : null);
    if (va === null) throw new BackendError('ENOSPC', `no room for ${req.sizeBytes} bytes`);
    let largePages = req.huge;
    if (req.huge && this.hugeFallbacksLeft > 0) {
      this.hugeFallbacksLeft--;
      largePages = false;
      this.c.hugeFallbacks++;
    }
    const pages = req.sizeBytes / SZ_4K;
    const block: FakeBlock = {
      va,
      sizeBytes: req.sizeBytes,
      largePages,
      prot: new Uint8Array(pages).fill(PROTS.indexOf('rw')),
      held: new Uint8Array(pages),
      writes: 0,
      bytes: this.storeBytes ? new Uint8Array(req.sizeBytes) : null,
    };
    const i = this.blocks.findIndex((b) => b.va > va);
    this.blocks.splice(i < 0 ? this.blocks.length : i, 0, block);
    for (let c = Math.floor(va / SZ_2M); c * SZ_2M < va + req.sizeBytes; c++) {
      const list = this.byChunk.get(c);
      if (list === undefined) this.byChunk.set(c, [block]);
      else list.push(block);
    }
    this.c.blocksMapped++;
    return block;
  }

  unmapBlock(block: BackendBlock): void {
    const i = this.blocks.indexOf(block as FakeBlock);
    if (i < 0) throw new Error('fake: unmap of an unknown block');
    if (this.failUnmapIn > 0 && --this.failUnmapIn === 0)
      throw new BackendError('ENOMEM', 'injected unmapBlock failure');
    this.blocks.splice(i, 1);
    for (let c = Math.floor(block.va / SZ_2M); c * SZ_2M < block.va + block.sizeBytes; c++) {
      const list = this.byChunk.get(c)!;
      if (list.length === 1) this.byChunk.delete(c);
      else list.splice(list.indexOf(block as FakeBlock), 1);
    }
    this.c.blocksUnmapped++;
  }

  write(va: number, bytes: Uint8Array): void {
    const data = real(bytes);
    const b = this.check(va, data.length, 'write');
    if (b.bytes) b.bytes.set(data, va - b.va);
    b.writes++;
  }

  fill(va: number, sizeBytes: number, pattern: Uint8Array): void {
    const b = this.check(va, sizeBytes, 'write');
    if (b.bytes) fillPattern(b.bytes, va - b.va, sizeBytes, pattern);
    b.writes++;
  }

  protect(block: BackendBlock, va: number, sizeBytes: number, prot: Prot): void {
    const b = block as FakeBlock;
    if (!this.blocks.includes(b)) throw new Error('fake: protect of an unmapped block');
    if (va % SZ_4K !== 0 || sizeBytes % SZ_4K !== 0 || sizeBytes <= 0)
      throw new Error('fake: protect not page aligned');
    if (va < b.va || va + sizeBytes > b.va + b.sizeBytes) throw new Error('fake: protect outside the block');
    const p = PROTS.indexOf(prot);
    const first = (va - b.va) / SZ_4K;
    const end = (va - b.va + sizeBytes) / SZ_4K;
    // Giving pages a protection protect() gave them all before needs nothing new (as CPA: the
    // splits were made the first time and nothing here collapses them), so it cannot fail; the
    // Backend contract relies on it for closing update windows (backend.ts protect). Injected
    // failures skip such calls and hit the next change that could fail.
    let again = true;
    for (let i = first; i < end && again; i++) again = (b.held[i] & (1 << p)) !== 0;
    if (!again && this.failProtectIn > 0 && --this.failProtectIn === 0)
      throw new BackendError('ENOMEM', 'injected protect failure');
    let removes = false;
    for (let i = first; i < end; i++) {
      const old = PROTS[b.prot[i]];
      if ((protIsWrite(old) && !protIsWrite(prot)) || (protIsExec(old) && !protIsExec(prot))) removes = true;
      b.held[i] |= 1 << p;
      b.prot[i] = p;
    }
    this.c.permissionFlips++;
    if (removes) this.c.shootdowns++;
    if (this.recordFlips) this.flips.push({ va, sizeBytes, prot });
  }

  poke(va: number, bytes: Uint8Array): void {
    if (!this.hasAliasWrite) throw new BackendError('ENOTSUP', 'no alias write');
    const data = real(bytes);
    const b = this.check(va, data.length, 'map');
    if (b.bytes) b.bytes.set(data, va - b.va);
    b.writes++;
    this.c.pokes++;
    this.c.pokeBytes += data.length;
    this.c.localFlushes++;
  }

  pokeSet(va: number, sizeBytes: number, pattern: Uint8Array): void {
    if (!this.hasAliasWrite) throw new BackendError('ENOTSUP', 'no alias write');
    const b = this.check(va, sizeBytes, 'map');
    if (b.bytes) fillPattern(b.bytes, va - b.va, sizeBytes, pattern);
    b.writes++;
    this.c.pokes++;
    this.c.pokeBytes += sizeBytes;
    this.c.localFlushes++;
  }

  read(va: number, sizeBytes: number): Uint8Array {
    const b = this.check(va, sizeBytes, 'read');
    return b.bytes ? b.bytes.slice(va - b.va, va - b.va + sizeBytes) : new Uint8Array(sizeBytes);
  }

  counters(): BackendCounters {
    return { ...this.c };
  }

  // ---- inspection for tests ----

  protAt(va: number): Prot | undefined {
    const b = this.find(va);
    return b ? PROTS[b.prot[Math.floor((va - b.va) / SZ_4K)]] : undefined;
  }

  /** Contents without any permission check (tests reading free space). */
  peek(va: number, sizeBytes: number): Uint8Array {
    const b = this.find(va);
    if (!b || va + sizeBytes > b.va + b.sizeBytes) throw new Error('fake: peek outside a block');
    return b.bytes ? b.bytes.subarray(va - b.va, va - b.va + sizeBytes) : new Uint8Array(sizeBytes);
  }

  mappedBytes(): number {
    return this.blocks.reduce((s, b) => s + b.sizeBytes, 0);
  }

  blockCount(): number {
    return this.blocks.length;
  }

  /** Pages that are writable and executable at once (must always be 0). */
  wxViolationCount(): number {
    let n = 0;
    for (const b of this.blocks) for (const p of b.prot) if (PROTS[p] === 'rwx') n++;
    return n;
  }

  /**
   * A digest of everything observable: blocks, protections, contents and (unless `state only`)
   * counters. Fault-injection tests compare state only: a block mapped and unmapped again leaves
   * the state as it was but has moved the blocksMapped/blocksUnmapped counters.
   */
  digest(stateOnly = false): string {
    const h = createHash('sha1');
    for (const b of this.blocks) {
      h.update(`${b.va}:${b.sizeBytes}:${b.largePages};`);
      h.update(b.prot);
      if (b.bytes) h.update(b.bytes);
    }
    return stateOnly ? h.digest('hex') : `${h.digest('hex')}:${JSON.stringify(this.c)}`;
  }

  /**
   * The same as digest() without hashing contents: each block's count of stores stands for
   * them (a store of identical bytes counts as a change, which is stricter). Cheap enough to take
   * before every call of a fuzz case.
   */
  stateKey(withCounters = true): string {
    const parts = this.blocks.map(
      (b) => `${b.va}:${b.sizeBytes}:${b.largePages}:${b.writes}:${b.prot.join('')}`,
    );
    return withCounters ? `${parts.join(';')}|${JSON.stringify(this.c)}` : parts.join(';');
  }

  // ---- internals ----

  private find(va: number): FakeBlock | undefined {
    const list = this.byChunk.get(Math.floor(va / SZ_2M));
    if (list === undefined) return undefined;
    for (const b of list) if (va >= b.va && va < b.va + b.sizeBytes) return b;
    return undefined;
  }

  private check(va: number, sizeBytes: number, access: 'read' | 'write' | 'map'): FakeBlock {
    const b = this.find(va);
    if (!b || sizeBytes <= 0 || va + sizeBytes > b.va + b.sizeBytes) {
      throw new FakeFault(
        `fake: ${access} of ${sizeBytes} bytes at 0x${va.toString(16)} outside a mapped block`,
      );
    }
    if (access === 'map') return b;
    for (let i = Math.floor((va - b.va) / SZ_4K); i * SZ_4K < va - b.va + sizeBytes; i++) {
      const prot = PROTS[b.prot[i]];
      if (prot === 'none' || (access === 'write' && !protIsWrite(prot))) {
        throw new FakeFault(
          `fake: ${access} fault at page 0x${(b.va + i * SZ_4K).toString(16)} (prot ${prot})`,
        );
      }
    }
    return b;
  }

  private place(range: VaRange, req: MapBlockRequest): number | null {
    const align = Math.max(req.alignBytes, SZ_4K);
    let cursor = Math.ceil(range.start / align) * align;
    for (const b of this.blocks) {
      if (b.va + b.sizeBytes <= cursor) continue;
      if (b.va >= cursor + req.sizeBytes) break;
      cursor = Math.ceil((b.va + b.sizeBytes) / align) * align;
    }
    return cursor + req.sizeBytes <= range.end ? cursor : null;
  }
}

/** Bytes by their real length (base/bytes.ts), as every backend takes them. */
function real(bytes: Uint8Array): Uint8Array {
  const data = realBytes(bytes);
  if (data === undefined || data.length === 0)
    throw new BackendError('EINVAL', 'fake: bytes must be a non-empty Uint8Array');
  return data;
}

export function fillPattern(dst: Uint8Array, off: number, sizeBytes: number, pattern: Uint8Array): void {
  if (pattern.length === 1 || pattern.every((x) => x === pattern[0])) {
    dst.fill(pattern[0], off, off + sizeBytes);
    return;
  }
  // Seed one period, then double it with copyWithin (the phase runs from `off`).
  const first = Math.min(pattern.length, sizeBytes);
  for (let i = 0; i < first; i++) dst[off + i] = pattern[i];
  for (let n = first; n < sizeBytes; n *= 2) dst.copyWithin(off + n, off, off + Math.min(n, sizeBytes - n));
}
