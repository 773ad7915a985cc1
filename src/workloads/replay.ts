/**
 * The replay engine: run a trace against any ExecAllocator and count what happened.
 *
 * Why it is built this way:
 * - One engine for every design (src/policies/types.ts ExecAllocator), so a comparison differs only
 *   in the allocator, never in how the work was driven.
 * - Failures are data, not crashes: a policy that runs out of space (ENOSPC) or memory is a
 *   result to report, so by default each allocator error is caught, recorded with its event index
 *   and reason, and the run goes on; events on an id whose alloc failed are skipped and counted.
 *   `strict: true` rethrows instead (for tests that expect a clean run). Failed calls must leave
 *   the allocator unchanged (DESIGN.md: "A failed call changes nothing"), which is what makes
 *   carrying on meaningful.
 * - Bytes written are deterministic per (seed, event) (./bytes.ts), code-like and never the trap
 *   pattern of any arch, so every design stores identical contents.
 * - The engine does not model instruction fetch; it tells the hook which code is live where
 *   (`onExec`) and the metrics layer above runs the fetch model. It also reports progress.
 * - Peaks: live bytes (what callers asked for) are exact; mapped bytes come from
 *   allocator.usage() sampled after every successful alloc, which is where mapping grows.
 * - A module load (consecutive allocs with one `module` number) is handed to the allocator as one
 *   batch (allocModuleSections), as load_module allocates every region before copying; if the
 *   batch fails, every id of the load is lost. An alloc's `caller` reaches the allocator as a hint.
 * - A code write's `functions` (default: the whole write) are what the fetch model may call.
 * - For a design with `batch()` (ours), the consecutive write/finalize events into the regions of
 *   one module load are run as one batch, and so are the consecutive frees of one module's regions
 *   (an unload, or the init frees after init): load_module copies every section in one step and
 *   delete_module frees every region in one step, so a design may hand them over together. Each
 *   event keeps its own failure handling inside the batch. Designs without batch() (the Linux
 *   rows: their kernels write section by section) replay exactly as before, event by event.
 *
 * Hot-path note: every write's bytes are made in one buffer reused for the whole replay
 * (bytes.ts WriteBuffer): a design reads a write's bytes during the write call only, as the
 * kernel's copies do (text_poke_copy, memcpy into a module section, bpf_prog_pack's copy into its
 * RW image), and keeps its own copy where it needs one (ExecAllocator.write in policies/types.ts).
 */
import { type ExecmemType, typeIsText } from '../arch/types.js';
import { assert } from '../base/assert.js';
import { allocModuleSections, type ExecAllocator } from '../policies/types.js';
import { WriteBuffer } from './bytes.js';
import {
  type AllocEvent,
  defaultFill,
  TRACE_OPS,
  type Trace,
  type TraceEvent,
  type TraceOp,
  validateTrace,
} from './trace.js';

/** Code a fetch model may run: one written code range. */
export interface ExecFunction {
  readonly va: number;
  readonly sizeBytes: number;
}

export interface ReplayHooks {
  /**
   * After each event is applied (or failed / skipped: `ok` says which). `va` is the address of
   * the event's allocation (after a free: where it was), or null for exec/phase and lost ids.
   */
  onEvent?(event: TraceEvent, index: number, ok: boolean, va: number | null): void;
  /** At each exec hint: the code ranges to run and how many calls to make. */
  onExec?(functions: readonly ExecFunction[], calls: number, index: number): void;
  /** Progress in events; called every `progressEveryEvents` and at the end. */
  progress?(done: number, total: number): void;
}

export interface ReplayOptions {
  /** Rethrow the first allocator error instead of recording it; default false. */
  readonly strict?: boolean;
  /** Validate the trace first (skip only for traces just validated); default true. */
  readonly validate?: boolean;
  /** Default 1000. */
  readonly progressEveryEvents?: number;
  /** At most this many failures are kept with details (all are counted); default 1000. */
  readonly maxFailuresKept?: number;
}

export interface ReplayFailure {
  readonly eventIndex: number;
  readonly op: TraceOp;
  readonly id: number | null;
  /** The error's `code` if it has one (ExecmemError, BackendError, MachineError), else its name. */
  readonly code: string;
  readonly reason: string;
}

export interface ReplayResult {
  readonly trace: string;
  readonly allocator: string;
  readonly events: number;
  /** Successfully applied events by op (exec and phase always succeed). */
  readonly ops: Record<TraceOp, number>;
  /** Allocator calls that threw, by op. */
  readonly failed: Record<TraceOp, number>;
  /** Events skipped because their id's alloc had failed. */
  readonly skipped: number;
  readonly failureCount: number;
  readonly failures: readonly ReplayFailure[];
  readonly writtenBytes: number;
  readonly liveBytes: number;
  readonly liveCount: number;
  readonly peakLiveBytes: number;
  readonly peakLiveCount: number;
  readonly mappedBytes: number;
  readonly peakMappedBytes: number;
  /** Live bytes by type at the end. */
  readonly liveBytesByType: Partial<Record<ExecmemType, number>>;
}

interface Placed {
  readonly va: number;
  readonly type: ExecmemType;
  readonly sizeBytes: number;
  readonly code: ExecFunction[];
  /**
   * Set when the allocation's `finalize` succeeded. Only finalized code runs: Linux never executes
   * a module or BPF image before the loader/JIT published it (set_memory_rox, text_poke_copy), and
   * designs that keep text RW or in a staging buffer until then would fault or be measured on code
   * that is not there yet.
   */
  finalized: boolean;
}

function zeroOps(): Record<TraceOp, number> {
  return Object.fromEntries(TRACE_OPS.map((op) => [op, 0])) as Record<TraceOp, number>;
}

function errorCode(err: unknown): string {
  if (err && typeof err === 'object') {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    const name = (err as { name?: unknown }).name;
    if (typeof name === 'string') return name;
  }
  return 'unknown';
}

/** Replay `trace` against `allocator`. See the header comment for failure semantics. */
export function replay(
  trace: Trace,
  allocator: ExecAllocator,
  hooks: ReplayHooks = {},
  options: ReplayOptions = {},
): ReplayResult {
  if (options.validate !== false) validateTrace(trace);
  const strict = options.strict ?? false;
  const progressEvery = Math.max(1, options.progressEveryEvents ?? 1000);
  const maxKept = Math.max(0, options.maxFailuresKept ?? 1000);
  const events = trace.events;
  const placed = new Map<number, Placed>();
  const writeBuffer = new WriteBuffer();
  /** Ids whose alloc failed: their later events are skipped. */
  const lost = new Set<number>();
  const ops = zeroOps();
  const failed = zeroOps();
  const failures: ReplayFailure[] = [];
  let failureCount = 0;
  let skipped = 0;
  let writtenBytes = 0;
  let liveBytes = 0;
  let peakLiveBytes = 0;
  let peakLiveCount = 0;
  let peakMappedBytes = 0;

  const record = (index: number, ev: TraceEvent, err: unknown): void => {
    if (strict) throw err;
    failed[ev.op]++;
    failureCount++;
    if (failures.length < maxKept) {
      const id = 'id' in ev ? ev.id : null;
      failures.push({
        eventIndex: index,
        op: ev.op,
        id,
        code: errorCode(err),
        reason: (err as Error)?.message ?? String(err),
      });
    }
  };

  const execFunctions = (ids: readonly number[] | undefined): ExecFunction[] => {
    const out: ExecFunction[] = [];
    if (ids === undefined) {
      for (const p of placed.values()) if (typeIsText(p.type) && p.finalized) out.push(...p.code);
    } else {
      for (const id of ids) {
        const p = placed.get(id);
        if (p?.finalized) out.push(...p.code);
      }
    }
    return out;
  };

  const step = (i: number): void => {
    const ev = events[i];
    let ok = true;
    let va: number | null = null;
    if (ev.op === 'phase') {
      ops.phase++;
    } else if (ev.op === 'exec') {
      ops.exec++;
      const fns = execFunctions(ev.ids);
      if (hooks.onExec && fns.length > 0) hooks.onExec(fns, ev.calls, i);
    } else if (lost.has(ev.id)) {
      skipped++;
      ok = false;
      if (ev.op === 'free') lost.delete(ev.id);
    } else if (ev.op === 'alloc') {
      if (placed.has(ev.id)) {
        va = placed.get(ev.id)!.va; // allocated with its module's first alloc
      } else {
        const batch = ev.module === undefined ? [ev] : moduleBatch(events, i);
        try {
          const vas =
            ev.module === undefined
              ? [
                  allocator.alloc(
                    ev.type,
                    ev.sizeBytes,
                    ev.alignBytes,
                    ev.caller ? { caller: ev.caller } : undefined,
                  ),
                ]
              : allocModuleSections(
                  allocator,
                  batch.map((a) => ({ type: a.type, sizeBytes: a.sizeBytes, init: a.init === true })),
                );
          batch.forEach((a, k) => {
            placed.set(a.id, {
              va: vas[k],
              type: a.type,
              sizeBytes: a.sizeBytes,
              code: [],
              finalized: false,
            });
            liveBytes += a.sizeBytes;
          });
          va = vas[0];
          if (liveBytes > peakLiveBytes) peakLiveBytes = liveBytes;
          if (placed.size > peakLiveCount) peakLiveCount = placed.size;
          const mapped = allocator.usage().mappedBytes;
          if (mapped > peakMappedBytes) peakMappedBytes = mapped;
        } catch (err) {
          for (const a of batch) lost.add(a.id);
          ok = false;
          record(i, ev, err);
        }
      }
      if (ok) ops.alloc++;
    } else {
      const p = placed.get(ev.id);
      if (p === undefined) assert(false, `validated trace names a dead id ${ev.id}`);
      va = p.va;
      try {
        switch (ev.op) {
          case 'write': {
            const fill = ev.fill ?? defaultFill(p.type);
            allocator.write(p.va + ev.offsetBytes, writeBuffer.bytes(fill, ev.sizeBytes, trace.seed, i));
            writtenBytes += ev.sizeBytes;
            if (fill === 'code') {
              for (const [off, size] of ev.functions ?? [[ev.offsetBytes, ev.sizeBytes]])
                p.code.push({ va: p.va + off, sizeBytes: size });
            }
            break;
          }
          case 'finalize':
            allocator.finalize(p.va);
            p.finalized = true;
            break;
          case 'seal':
            allocator.seal(p.va);
            break;
          case 'free':
            allocator.free(p.va);
            placed.delete(ev.id);
            liveBytes -= p.sizeBytes;
            break;
        }
        ops[ev.op]++;
      } catch (err) {
        ok = false;
        record(i, ev, err);
      }
    }
    if (hooks.onEvent) hooks.onEvent(ev, i, ok, va);
    if (hooks.progress && (i + 1) % progressEvery === 0) hooks.progress(i + 1, events.length);
  };

  // Designs with batch(): each run of one module's writes/finalizes, or of its frees, is one batch.
  const batch = allocator.batch?.bind(allocator);
  const moduleOf = batch === undefined ? null : moduleNumbers(events);
  for (let i = 0; i < events.length; ) {
    const end = moduleOf === null ? i : batchEnd(events, i, moduleOf);
    if (end === i || batch === undefined) {
      step(i++);
      continue;
    }
    const from = i;
    batch(() => {
      for (let k = from; k < end; k++) step(k);
    });
    i = end;
  }
  if (hooks.progress && events.length % progressEvery !== 0) hooks.progress(events.length, events.length);

  const liveBytesByType: Partial<Record<ExecmemType, number>> = {};
  for (const p of placed.values()) liveBytesByType[p.type] = (liveBytesByType[p.type] ?? 0) + p.sizeBytes;
  const usage = allocator.usage();
  return {
    trace: trace.name,
    allocator: allocator.name,
    events: events.length,
    ops,
    failed,
    skipped,
    failureCount,
    failures,
    writtenBytes,
    liveBytes,
    liveCount: placed.size,
    peakLiveBytes,
    peakLiveCount,
    mappedBytes: usage.mappedBytes,
    peakMappedBytes: Math.max(peakMappedBytes, usage.mappedBytes),
    liveBytesByType,
  };
}

/** Module number of every id allocated as part of a module load. */
function moduleNumbers(events: readonly TraceEvent[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const ev of events) if (ev.op === 'alloc' && ev.module !== undefined) out.set(ev.id, ev.module);
  return out;
}

/**
 * The end (exclusive) of the batch that starts at event `start`, or `start` when none does: the
 * consecutive write/finalize events into the regions of one module load (its publish step), or
 * the consecutive frees of one module's regions (its unload, or do_init_module's init frees).
 */
function batchEnd(
  events: readonly TraceEvent[],
  start: number,
  moduleOf: ReadonlyMap<number, number>,
): number {
  const kind = (ev: TraceEvent): string | null => {
    if (ev.op === 'write' || ev.op === 'finalize') return 'load';
    if (ev.op === 'free') return 'free';
    return null;
  };
  const first = events[start];
  const k = kind(first);
  if (k === null || !('id' in first)) return start;
  const module = moduleOf.get(first.id);
  if (module === undefined) return start;
  let end = start + 1;
  while (end < events.length) {
    const ev = events[end];
    if (kind(ev) !== k || !('id' in ev) || moduleOf.get(ev.id) !== module) break;
    end++;
  }
  return end;
}

/** The allocs of the module load that starts at event `start` (consecutive, one module number). */
function moduleBatch(events: readonly TraceEvent[], start: number): AllocEvent[] {
  const first = events[start] as AllocEvent;
  const out: AllocEvent[] = [];
  for (let k = start; k < events.length; k++) {
    const ev = events[k];
    if (ev.op !== 'alloc' || ev.module !== first.module) break;
    out.push(ev);
  }
  return out;
}
