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
 * The file also holds what the execmem property tests share (fake and sim alike): `ExecmemModel`,
 * a model of every live allocation that applies random ops and checks every DESIGN.md section 5
 * invariant through a `ModelProbe` each backend answers its own way, and `opArb`, the fast-check
 * generator of op sequences.
 */
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import type { ArchSpec, ExecmemType, Prot, VaRange } from '../../src/arch/types.js';
import { EXECMEM_TYPES, protIsExec, protIsWrite, typeIsText } from '../../src/arch/types.js';
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
import { ExecmemError } from '../../src/execmem/errors.js';
import type { Execmem } from '../../src/execmem/execmem.js';

export class FakeFault extends Error {
  override name = 'FakeFault';
}

const PROTS: readonly Prot[] = ['none', 'ro', 'rw', 'rox', 'rwx'];
const ZERO = Uint8Array.of(0);

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

function fillPattern(dst: Uint8Array, off: number, sizeBytes: number, pattern: Uint8Array): void {
  if (pattern.length === 1 || pattern.every((x) => x === pattern[0])) {
    dst.fill(pattern[0], off, off + sizeBytes);
    return;
  }
  // Seed one period, then double it with copyWithin (the phase runs from `off`).
  const first = Math.min(pattern.length, sizeBytes);
  for (let i = 0; i < first; i++) dst[off + i] = pattern[i];
  for (let n = first; n < sizeBytes; n *= 2) dst.copyWithin(off + n, off, off + Math.min(n, sizeBytes - n));
}

/** Does `got` (starting at address va) hold `pattern` repeated with the phase of va? */
function holdsPattern(got: Uint8Array, va: number, pattern: Uint8Array): number {
  const CHUNK = 65536;
  const want = new Uint8Array(Math.min(CHUNK, got.length) + pattern.length);
  fillPattern(want, 0, want.length, pattern);
  const phase = va % pattern.length;
  const ref = Buffer.from(want.buffer, phase, want.length - pattern.length);
  for (let off = 0; off < got.length; off += CHUNK) {
    const n = Math.min(CHUNK, got.length - off);
    const a = Buffer.from(got.buffer, got.byteOffset + off, n);
    if (!a.equals(ref.subarray(0, n))) {
      for (let i = 0; i < n; i++) if (a[i] !== ref[i]) return off + i;
    }
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------
// Model-based checking shared by the fake-backend and sim property tests (execmem-props,
// execmem-sim). It keeps a model of every live allocation (type, requested size, alignment,
// expected contents, sealed) and after every step asserts DESIGN.md section 5 through callbacks
// that each backend answers its own way.

export interface ModelProbe {
  /** Raw bytes at va, bypassing permissions and TLBs (free-space checks). */
  raw(va: number, sizeBytes: number): Uint8Array;
  /** Effective protection of the page at va (primary mapping). */
  protAt(va: number): Prot | undefined;
  /** Backend-level invariants: W^X audit, frame accounting; throws on violation. */
  check(): void;
  /** Bytes the backend has mapped for execmem (blocks and large objects). */
  mappedBytes(): number;
}

export interface LiveObject {
  type: ExecmemType;
  sizeBytes: number;
  alignBytes: number;
  content: Uint8Array;
  sealed: boolean;
}

export type ModelOp =
  | { kind: 'alloc'; type: ExecmemType; sizeBytes: number; alignBytes?: number; atomic: boolean }
  | { kind: 'update'; pick: number; offset: number; sizeBytes: number; byte: number }
  | { kind: 'free'; pick: number }
  | { kind: 'seal'; pick: number }
  | { kind: 'shrink'; keepSpare: boolean }
  | { kind: 'batch'; ops: ModelOp[] }
  | { kind: 'bad'; which: number; pick: number };

export class ExecmemModel {
  readonly live = new Map<number, LiveObject>();
  steps = 0;
  private batchDepth = 0;

  constructor(
    readonly em: Execmem,
    readonly probe: ModelProbe,
  ) {}

  private pickVa(pick: number, filter?: (o: LiveObject) => boolean): number | undefined {
    const vas = [...this.live.entries()].filter(([, o]) => !filter || filter(o)).map(([va]) => va);
    return vas.length === 0 ? undefined : vas[pick % vas.length];
  }

  apply(op: ModelOp): void {
    const em = this.em;
    switch (op.kind) {
      case 'alloc': {
        const before = this.stateKey();
        let va: number;
        try {
          va = em.allocVa(op.type, op.sizeBytes, { atomic: op.atomic, alignBytes: op.alignBytes });
        } catch (e) {
          if (!(e instanceof ExecmemError) || !['EAGAIN', 'ENOSPC', 'ENOMEM'].includes(e.code)) throw e;
          if (e.code === 'EAGAIN' && !op.atomic) throw new Error('EAGAIN outside atomic context');
          if (this.stateKey() !== before) throw new Error(`failed alloc (${e.code}) changed state`);
          return;
        }
        if (this.live.has(va)) throw new Error(`alloc returned a live address 0x${va.toString(16)}`);
        const usable = em.sizeOf(va);
        const text = typeIsText(op.type);
        const content = new Uint8Array(usable);
        if (text) fillPattern(content, 0, usable, em.backend.arch.trapPattern);
        this.live.set(va, {
          type: op.type,
          sizeBytes: op.sizeBytes,
          alignBytes: op.alignBytes ?? 1,
          content,
          sealed: false,
        });
        return;
      }
      case 'update': {
        const va = this.pickVa(op.pick, (o) => !o.sealed);
        if (va === undefined) return;
        const o = this.live.get(va)!;
        const off = op.offset % o.content.length;
        const n = Math.max(1, Math.min(op.sizeBytes, o.content.length - off));
        const bytes = new Uint8Array(n).fill(op.byte);
        em.updateVa(va + off, bytes);
        o.content.set(bytes, off);
        return;
      }
      case 'free': {
        const va = this.pickVa(op.pick);
        if (va === undefined) return;
        em.freeVa(va);
        this.live.delete(va);
        return;
      }
      case 'seal': {
        const va = this.pickVa(op.pick, (o) => o.type === 'module_ro_after_init' && !o.sealed);
        if (va === undefined) return;
        em.sealVa(va);
        this.live.get(va)!.sealed = true;
        return;
      }
      case 'shrink':
        if (this.batchDepth > 0) {
          this.expectRefused('EBUSY', () => em.shrink({ keepSpare: op.keepSpare }));
          return;
        }
        em.shrink({ keepSpare: op.keepSpare });
        return;
      case 'batch':
        em.batch(() => {
          this.batchDepth++;
          try {
            for (const inner of op.ops) this.apply(inner);
          } finally {
            this.batchDepth--;
          }
        });
        return;
      case 'bad':
        this.applyBad(op.which, op.pick);
        return;
    }
  }

  /** A hostile call against live state: must fail typed and change nothing. */
  private applyBad(which: number, pick: number): void {
    const va = this.pickVa(pick);
    if (va === undefined) return;
    const o = this.live.get(va)!;
    const usable = o.content.length;
    const calls: [string, () => unknown][] = [
      ['ERANGE', () => this.em.updateVa(va + usable - 1, new Uint8Array(2))],
      ['EINSIDE', () => this.em.freeVa(va + Math.min(usable - 1, 64))],
      ['EPERM', () => this.em.sealVa(va)],
      ['EINVAL', () => this.em.allocVa(o.type, 0)],
    ];
    const [expected, fn] = calls[which % calls.length];
    if (which % calls.length === 1 && usable <= 64) return; // no interior granule to aim at
    if (which % calls.length === 2 && o.type === 'module_ro_after_init' && !o.sealed) return; // a legal seal
    this.expectRefused(expected, fn);
  }

  private expectRefused(expected: string, fn: () => unknown): void {
    const before = this.stateKey();
    let code = 'no error';
    try {
      fn();
    } catch (e) {
      if (!(e instanceof ExecmemError)) throw e;
      code = e.code;
    }
    if (code !== expected) throw new Error(`hostile call: expected ${expected}, got ${code}`);
    if (this.stateKey() !== before) throw new Error('hostile call changed state');
  }

  private stateKey(): string {
    const s = this.em.stats();
    return `${JSON.stringify(s.pools)}|${JSON.stringify(s.types)}|${this.probe.mappedBytes()}`;
  }

  /** Every DESIGN.md section 5 invariant, checked from the outside. */
  check(): void {
    const em = this.em;
    this.steps++;
    em.audit();
    this.probe.check();
    // Live allocations: inside their range, aligned, non-overlapping, contents as written.
    const sorted = [...this.live.entries()].sort((a, b) => a[0] - b[0]);
    let prevEnd = 0;
    for (const [va, o] of sorted) {
      const r = em.ranges[o.type];
      const inRange = (x: VaRange | null) => x !== null && va >= x.start && va + o.sizeBytes <= x.end;
      if (!inRange(r.range) && !inRange(r.fallback))
        throw new Error(`0x${va.toString(16)} outside ${o.type} range`);
      if (va % o.alignBytes !== 0) throw new Error(`0x${va.toString(16)} not aligned to ${o.alignBytes}`);
      if (va < prevEnd) throw new Error(`allocations overlap at 0x${va.toString(16)}`);
      prevEnd = va + o.content.length;
      if (em.sizeOf(va) !== o.content.length || em.sizeOf(va) < o.sizeBytes)
        throw new Error('usable size changed');
      if (em.typeOf(va) !== o.type) throw new Error('type changed');
      const got = em.readVa(va, o.content.length);
      if (!bytesEqual(got, o.content))
        throw new Error(`contents of 0x${va.toString(16)} differ from what was written`);
      const prot = this.probe.protAt(va);
      const want = o.sealed ? 'ro' : em.ranges[o.type].prot;
      if (prot !== want) throw new Error(`0x${va.toString(16)} (${o.type}) has prot ${prot}, want ${want}`);
    }
    // Free space, and the rounding after each live object's requested size (which no update can
    // reach): traps in text pools, zeros elsewhere. Accounting per pool.
    const trap = em.backend.arch.trapPattern;
    const unused: [number, number, Prot][] = [];
    let runs = 0;
    em.forEachRun((_pool, prot, va, sizeBytes, used) => {
      if (!used) {
        unused.push([va, sizeBytes, prot]);
        return;
      }
      runs++;
      const o = this.live.get(va);
      if (o === undefined) throw new Error(`used run at 0x${va.toString(16)} is no live object`);
      if (sizeBytes < o.content.length)
        throw new Error(`run at 0x${va.toString(16)} shorter than its object`);
      if (sizeBytes > o.content.length)
        unused.push([va + o.content.length, sizeBytes - o.content.length, prot]);
    });
    for (const [va, sizeBytes, prot] of unused) {
      // The pattern's phase is that of the block (trap patterns are aligned to their length).
      const pattern = prot === 'rox' ? trap : ZERO;
      const bad = holdsPattern(this.probe.raw(va, sizeBytes), va, pattern);
      if (bad >= 0)
        throw new Error(`unused byte at 0x${(va + bad).toString(16)} is not the free-space pattern`);
    }
    if (runs !== this.live.size) throw new Error(`${runs} used runs, ${this.live.size} live objects`);
    const stats = em.stats();
    let mapped = 0;
    for (const [name, p] of Object.entries(stats.pools)) {
      if (p.liveBytes + p.freeBytes + p.largeSlackBytes !== p.mappedBytes)
        throw new Error(`pool ${name}: live + free != mapped`);
      mapped += p.mappedBytes;
    }
    if (mapped !== this.probe.mappedBytes())
      throw new Error(`execmem says ${mapped} mapped, backend ${this.probe.mappedBytes()}`);
  }

  /** Free everything, release every block: nothing may remain mapped. */
  drain(): void {
    for (const va of [...this.live.keys()]) {
      this.em.freeVa(va);
      this.live.delete(va);
    }
    this.em.shrink({ keepSpare: false });
    this.check();
    if (this.probe.mappedBytes() !== 0) throw new Error('blocks remain mapped after drain');
  }
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  return Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));
}

/** The probe for a FakeBackend. */
export function fakeProbe(fb: FakeBackend): ModelProbe {
  return {
    raw: (va, n) => fb.peek(va, n),
    protAt: (va) => fb.protAt(va),
    check: () => {
      if (fb.wxViolationCount() !== 0) throw new Error('W^X violation');
    },
    mappedBytes: () => fb.mappedBytes(),
  };
}

/** Random op sequences for the model (sizes weighted towards BPF-like small objects). */
const typeArb = fc.constantFrom<ExecmemType>(...EXECMEM_TYPES);
const sizeArb = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 1, max: 600 }) },
  { weight: 3, arbitrary: fc.integer({ min: 600, max: 9000 }) },
  { weight: 1, arbitrary: fc.integer({ min: 9000, max: 700_000 }) },
  { weight: 1, arbitrary: fc.integer({ min: 2 * 1024 * 1024 - 64, max: 2 * 1024 * 1024 + 70_000 }) },
);
const allocArb: fc.Arbitrary<ModelOp> = fc.record({
  kind: fc.constant('alloc' as const),
  type: typeArb,
  sizeBytes: sizeArb,
  alignBytes: fc.constantFrom(undefined, 1, 16, 64, 256, 4096),
  atomic: fc.boolean(),
});
const simpleArb: fc.Arbitrary<ModelOp> = fc.oneof(
  { weight: 5, arbitrary: allocArb },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('update' as const),
      pick: fc.nat(),
      offset: fc.nat(),
      sizeBytes: fc.integer({ min: 1, max: 5000 }),
      byte: fc.integer({ min: 0, max: 255 }),
    }),
  },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('free' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('seal' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('shrink' as const), keepSpare: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('bad' as const), which: fc.nat(), pick: fc.nat() }) },
);
export const opArb: fc.Arbitrary<ModelOp> = fc.oneof(
  { weight: 9, arbitrary: simpleArb },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('batch' as const), ops: fc.array(simpleArb, { maxLength: 6 }) }),
  },
);
