/**
 * Model-based checking shared by the execmem property tests and the `api` fuzz target (fake and
 * sim backends alike): `ExecmemModel` keeps a model of every live allocation (type, requested
 * size, alignment, expected contents, sealed), applies random ops, and checks every DESIGN.md
 * section 5 invariant through a `ModelProbe` each backend answers its own way; `opArb` is the
 * fast-check generator of op sequences; `fakeProbe` answers for the FakeBackend.
 *
 * Why a model and not a second allocator: the invariants are properties of what the caller sees
 * (contents as written, trap-filled free space, protections, accounting, no overlap, no leak
 * after a drain), so the model tracks only what callers did and reads the rest from the backend.
 */
import fc from 'fast-check';
import type { ExecmemType, Prot, VaRange } from '../../src/arch/types.js';
import { EXECMEM_TYPES, typeIsText } from '../../src/arch/types.js';
import { ExecmemError } from '../../src/execmem/errors.js';
import type { Execmem } from '../../src/execmem/execmem.js';
import { FILL_QUEUE_RUNS } from '../../src/execmem/limits.js';
import { type FakeBackend, fillPattern } from './fake-backend.js';

const ZERO = Uint8Array.of(0);

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
        const usable = em.sizeOfVa(va);
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
      // The host backend places blocks in its own arena of this process: the kernel's ranges
      // do not apply there (src/host/backend.ts), everything else does.
      if (em.backend.kind !== 'host' && !inRange(r.range) && !inRange(r.fallback))
        throw new Error(`0x${va.toString(16)} outside ${o.type} range`);
      if (va % o.alignBytes !== 0) throw new Error(`0x${va.toString(16)} not aligned to ${o.alignBytes}`);
      if (va < prevEnd) throw new Error(`allocations overlap at 0x${va.toString(16)}`);
      prevEnd = va + o.content.length;
      if (em.sizeOfVa(va) !== o.content.length || em.sizeOfVa(va) < o.sizeBytes)
        throw new Error('usable size changed');
      if (em.typeOfVa(va) !== o.type) throw new Error('type changed');
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
    let pendingBytes = 0;
    let pendingRuns = 0;
    em.forEachRun((_pool, prot, va, sizeBytes, used, _type, pendingFill) => {
      if (!used) {
        unused.push([va, sizeBytes, prot]);
        return;
      }
      if (pendingFill) {
        // Freed with its trap fill queued (src/execmem/fills.ts): no live object, no lookup.
        if (this.live.has(va)) throw new Error(`live object at 0x${va.toString(16)} marked pending fill`);
        if (prot === 'rw') throw new Error(`RW run at 0x${va.toString(16)} has a queued fill`);
        if (em.backend.kind !== 'sim') throw new Error('fills are queued only on write-session backends');
        pendingBytes += sizeBytes;
        pendingRuns++;
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
    let statsPending = 0;
    for (const [name, p] of Object.entries(stats.pools)) {
      if (p.liveBytes + p.freeBytes + p.pendingFillBytes + p.largeSlackBytes !== p.mappedBytes)
        throw new Error(`pool ${name}: live + free + pending fill != mapped`);
      mapped += p.mappedBytes;
      statsPending += p.pendingFillBytes;
    }
    if (statsPending !== pendingBytes)
      throw new Error(`stats count ${statsPending} pending-fill bytes, the runs ${pendingBytes}`);
    if (pendingRuns > FILL_QUEUE_RUNS)
      throw new Error(`${pendingRuns} fills queued, bound ${FILL_QUEUE_RUNS}`);
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
