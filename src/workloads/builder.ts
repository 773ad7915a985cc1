/**
 * TraceBuilder: how generators write traces.
 *
 * Why a builder: every generator needs the same bookkeeping (fresh ids, which ids are live, which
 * hold code) and the same guarantees (a generated trace is valid by construction). Keeping that
 * here makes each generator a short description of its workload; a generator bug trips an
 * assertion at the event that breaks a rule instead of producing a trace that fails later.
 * `build()` still runs the full validator, so the two can never silently disagree.
 */
import { type ExecmemType, typeIsText } from '../arch/types.js';
import { assert } from '../base/assert.js';
import type { Rng } from '../base/rng.js';
import type { AllocCaller } from '../policies/types.js';
import {
  type AllocEvent,
  type FunctionRange,
  TRACE_FORMAT,
  type Trace,
  type TraceEvent,
  validateTrace,
  type WriteEvent,
  type WriteFill,
} from './trace.js';

/** Optional parts of an alloc event (see trace.ts). */
export interface AllocExtras {
  readonly alignBytes?: number;
  readonly module?: number;
  readonly init?: boolean;
  readonly caller?: AllocCaller;
}

interface LiveAlloc {
  readonly type: ExecmemType;
  readonly sizeBytes: number;
  finalized: boolean;
  sealed: boolean;
}

export class TraceBuilder {
  private readonly events: TraceEvent[] = [];
  private readonly live = new Map<number, LiveAlloc>();
  private nextId = 0;
  private nextModule = 0;

  constructor(
    readonly name: string,
    readonly seed: number,
  ) {
    assert(Number.isInteger(seed) && seed >= 0 && seed <= 0xffffffff, `seed must be a uint32: ${seed}`);
  }

  get eventCount(): number {
    return this.events.length;
  }

  get liveCount(): number {
    return this.live.size;
  }

  alloc(type: ExecmemType, sizeBytes: number, extras: AllocExtras = {}): number {
    // Messages are built only on failure: a generator calls this tens of thousands of times.
    if (!(Number.isInteger(sizeBytes) && sizeBytes > 0)) assert(false, `alloc size ${sizeBytes}`);
    const id = this.nextId++;
    this.live.set(id, { type, sizeBytes, finalized: false, sealed: false });
    const ev: AllocEvent = { op: 'alloc', id, type, sizeBytes, ...extras };
    this.events.push(ev);
    return id;
  }

  /** A fresh module-load number for the allocs of one load (emit them back to back). */
  newModule(): number {
    return this.nextModule++;
  }

  write(
    id: number,
    offsetBytes: number,
    sizeBytes: number,
    fill?: WriteFill,
    functions?: readonly FunctionRange[],
  ): void {
    const a = this.get(id);
    if (a.sealed) assert(false, `write to sealed id ${id}`);
    if (!(offsetBytes >= 0 && sizeBytes > 0 && offsetBytes + sizeBytes <= a.sizeBytes))
      assert(false, `write outside id ${id}`);
    if (!(fill !== 'code' || typeIsText(a.type))) assert(false, `code write into ${a.type}`);
    // Optional keys only when given, in the order the validator and `trace export` list them.
    const ev: { -readonly [K in keyof WriteEvent]: WriteEvent[K] } = {
      op: 'write',
      id,
      offsetBytes,
      sizeBytes,
    };
    if (fill !== undefined) ev.fill = fill;
    if (functions !== undefined) ev.functions = functions;
    this.events.push(ev);
  }

  finalize(id: number): void {
    const a = this.get(id);
    if (a.finalized) assert(false, `finalize twice: ${id}`);
    a.finalized = true;
    this.events.push({ op: 'finalize', id });
  }

  seal(id: number): void {
    const a = this.get(id);
    if (!(a.type === 'module_ro_after_init' && a.finalized && !a.sealed))
      assert(false, `bad seal of id ${id}`);
    a.sealed = true;
    this.events.push({ op: 'seal', id });
  }

  free(id: number): void {
    this.get(id);
    this.live.delete(id);
    this.events.push({ op: 'free', id });
  }

  /** An exec hint over `ids` (all live code when omitted). */
  exec(calls: number, ids?: readonly number[]): void {
    assert(Number.isInteger(calls) && calls > 0, `exec calls ${calls}`);
    if (ids === undefined) {
      this.events.push({ op: 'exec', calls });
      return;
    }
    for (const id of ids) assert(typeIsText(this.get(id).type), `exec of non-text id ${id}`);
    this.events.push({ op: 'exec', ids: [...ids], calls });
  }

  phase(name: string): void {
    this.events.push({ op: 'phase', name });
  }

  isLive(id: number): boolean {
    return this.live.has(id);
  }

  /** Validates the whole trace (a generator bug surfaces here at the latest). */
  build(): Trace {
    return validateTrace(this.unchecked());
  }

  /**
   * The trace without validateTrace, for a caller that validates everything it makes of it
   * (mixed merges three generators' events and validates the merged trace): not checked twice.
   */
  unchecked(): Trace {
    return { format: TRACE_FORMAT, name: this.name, seed: this.seed, events: this.events };
  }

  private get(id: number): LiveAlloc {
    const a = this.live.get(id);
    if (a === undefined) assert(false, `id ${id} is not live`);
    return a;
  }
}

/**
 * A set of live ids that supports O(1) removal of a uniformly random member: the churn
 * generators pick "a random loaded program" thousands of times.
 */
export class LiveSet<T> {
  private readonly items: T[] = [];

  get size(): number {
    return this.items.length;
  }

  add(item: T): void {
    this.items.push(item);
  }

  /** Remove and return a uniformly chosen member (swap with the last, pop). */
  takeRandom(rng: Rng): T {
    assert(this.items.length > 0, 'takeRandom from an empty set');
    const i = rng.int(0, this.items.length - 1);
    const item = this.items[i];
    const last = this.items.pop() as T;
    if (i < this.items.length) this.items[i] = last;
    return item;
  }

  /** Remove and return every member, in insertion-order-agnostic order. */
  drain(): T[] {
    return this.items.splice(0, this.items.length);
  }

  values(): readonly T[] {
    return this.items;
  }
}

/** Common generator options: every generator takes these. */
export interface WorkloadOptions {
  /** uint32 seed; default 1. */
  readonly seed?: number;
  /** Multiplies every count (programs, modules, steps); default 1. Tests use small values. */
  readonly scale?: number;
}

/** `n * scale`, at least `min` (so tiny scales still exercise every path). */
export function scaled(n: number, scale: number, min = 1): number {
  assert(Number.isFinite(scale) && scale > 0, `scale must be a positive number, got ${scale}`);
  return Math.max(min, Math.round(n * scale));
}

export function seedOf(opts: WorkloadOptions | undefined): number {
  const seed = opts?.seed ?? 1;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new RangeError(`seed must be an integer in [0, 2^32), got ${seed}`);
  }
  return seed;
}

export function scaleOf(opts: WorkloadOptions | undefined): number {
  const scale = opts?.scale ?? 1;
  if (!Number.isFinite(scale) || scale <= 0 || scale > 1000) {
    throw new RangeError(`scale must be a number in (0, 1000], got ${scale}`);
  }
  return scale;
}
