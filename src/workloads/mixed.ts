/**
 * mixed: modules, BPF churn and trampolines interleaved over one long run.
 *
 * Why: a real machine does not run one producer at a time, and the thread's design question is
 * whether ONE allocator serves all of them well together (Song Liu: one allocator "for all the use
 * cases of modules, text, data, rodata, etc.", then "bpf, ftrace, kprobe, bcachefs"; lkml-thread.md).
 * Interleaving is where type separation, sub-page packing and large-page sharing interact: BPF
 * churn frees holes next to long-lived module text, trampolines fill them, and so on.
 *
 * How: the three generators run with seeds forked from this one; their ids and module numbers
 * are renumbered into disjoint ranges; the modules' boot phase runs first (a machine boots before
 * it serves), then the remaining events of all three are merged at random, each stream chosen
 * with probability proportional to its remaining events, so all three progress evenly and each
 * keeps its own order (which keeps every stream's lifecycle valid). Streams are merged in
 * segments that end where the stream has no load in flight (every allocation it made is
 * finalized or freed) and no module's frees are half done: a module load (allocs, writes,
 * finalizes) and a module's frees (its unload, or its init frees) each stay together, as
 * load_module and delete_module / do_free_init do them in one step, so a design that batches them
 * (replay.ts) sees them whole; between segments the whole machine is quiescent. The streams' own exec hints are dropped and replaced by one hint over all live
 * code after the first segment that ends at or past every `execEveryEvents` merged events, so a
 * sample never sees a load half done (Linux runs nothing from a load in flight).
 */
import { assert } from '../base/assert.js';
import { Rng } from '../base/rng.js';
import { bpfChurnBuilder } from './bpf.js';
import { scaleOf, seedOf, type WorkloadOptions } from './builder.js';
import { modulesSyntheticBuilder } from './modules.js';
import { TRACE_FORMAT, type Trace, type TraceEvent, validateTrace } from './trace.js';
import { trampolinesBuilder } from './trampolines.js';

export interface MixedOptions extends WorkloadOptions {
  readonly moduleLoads?: number;
  readonly bpfLoads?: number;
  readonly trampolineSteps?: number;
  /** An exec hint over all live code every this many merged events; default 2000. */
  readonly execEveryEvents?: number;
  readonly execCalls?: number;
}

/**
 * Shift `ev`'s id (and module number) in place; exec and phase are not expected here. In place,
 * not a copy: the event belongs to a trace mixed has just generated and nobody else holds.
 */
function shiftIds(ev: TraceEvent, offset: number, moduleOffset: number): void {
  assert(ev.op !== 'exec' && ev.op !== 'phase', 'shiftIds of a hint');
  const e = ev as { id: number; module?: number };
  e.id += offset;
  if (ev.op === 'alloc' && e.module !== undefined) e.module += moduleOffset;
}

interface Stream {
  /** Runs of events, each ending where the stream has no load in flight. */
  readonly segments: TraceEvent[][];
  /** Segments of the boot phase (before the stream's 'runtime' phase marker). */
  readonly bootSegments: number;
  readonly nextId: number;
  readonly nextModule: number;
}

/**
 * Is event `i` a free of a module's region followed directly by another free of that module (an
 * unload, or the init frees after init, still under way)?
 */
function insideModuleFrees(
  events: readonly TraceEvent[],
  i: number,
  moduleOf: ReadonlyMap<number, number>,
): boolean {
  const ev = events[i];
  const next = events[i + 1];
  if (ev.op !== 'free' || next === undefined || next.op !== 'free') return false;
  const module = moduleOf.get(ev.id);
  return module !== undefined && moduleOf.get(next.id) === module;
}

/** Events of `trace` without hints, ids shifted, cut into quiescent segments. */
function stream(trace: Trace, offset: number, moduleOffset: number): Stream {
  const segments: TraceEvent[][] = [];
  const inFlight = new Set<number>();
  const moduleOf = new Map<number, number>();
  let current: TraceEvent[] = [];
  let bootSegments = 0;
  let maxId = -1;
  let maxModule = -1;
  const events = trace.events;
  for (let i = 0; i < events.length; i++) {
    const ev = events[i];
    if (ev.op === 'phase') {
      if (ev.name === 'runtime') bootSegments = segments.length;
      continue;
    }
    if (ev.op === 'exec') continue;
    if (ev.op === 'alloc') {
      maxId = Math.max(maxId, ev.id);
      maxModule = Math.max(maxModule, ev.module ?? -1);
      inFlight.add(ev.id);
      if (ev.module !== undefined) moduleOf.set(ev.id, ev.module);
    } else if (ev.op === 'finalize' || ev.op === 'free') inFlight.delete(ev.id);
    // Read before ev is renumbered: insideModuleFrees looks ev and the next event up by their own ids.
    const closes = inFlight.size === 0 && !insideModuleFrees(events, i, moduleOf);
    shiftIds(ev, offset, moduleOffset);
    current.push(ev);
    if (closes) {
      segments.push(current);
      current = [];
    }
  }
  assert(current.length === 0, `${trace.name}: ends with a load in flight`);
  return { segments, bootSegments, nextId: offset + maxId + 1, nextModule: moduleOffset + maxModule + 1 };
}

export function mixed(opts: MixedOptions = {}): Trace {
  const seed = seedOf(opts);
  const scale = scaleOf(opts);
  const rng = new Rng(seed);
  const execEvery = Math.max(1, opts.execEveryEvents ?? 2000);
  const execCalls = opts.execCalls ?? 10_000;
  const seedA = rng.nextU32();
  const seedB = rng.nextU32();
  const seedC = rng.nextU32();
  const mods = stream(
    modulesSyntheticBuilder({ seed: seedA, scale, loads: opts.moduleLoads ?? 300 }).unchecked(),
    0,
    0,
  );
  const bpf = stream(
    bpfChurnBuilder({ seed: seedB, scale, loads: opts.bpfLoads ?? 20_000 }).unchecked(),
    mods.nextId,
    mods.nextModule,
  );
  const tramps = stream(
    trampolinesBuilder({ seed: seedC, scale, steps: opts.trampolineSteps ?? 5000 }).unchecked(),
    bpf.nextId,
    bpf.nextModule,
  );

  const events: TraceEvent[] = [{ op: 'phase', name: 'boot' }];
  let nextExec = execEvery;
  const push = (segment: readonly TraceEvent[]) => {
    events.push(...segment);
    if (events.length >= nextExec) {
      events.push({ op: 'exec', calls: execCalls });
      nextExec = events.length + execEvery;
    }
  };
  for (let i = 0; i < mods.bootSegments; i++) push(mods.segments[i]);
  events.push({ op: 'phase', name: 'steady' });
  const streams = [mods, bpf, tramps];
  const pos = [mods.bootSegments, 0, 0];
  const left = (k: number) => {
    let n = 0;
    for (let j = pos[k]; j < streams[k].segments.length; j++) n += streams[k].segments[j].length;
    return n;
  };
  const remaining = streams.map((_, k) => left(k));
  let total = remaining.reduce((a, b) => a + b, 0);
  while (total > 0) {
    let u = rng.int(0, total - 1);
    let k = 0;
    while (u >= remaining[k]) {
      u -= remaining[k];
      k++;
    }
    const segment = streams[k].segments[pos[k]++];
    remaining[k] -= segment.length;
    total -= segment.length;
    push(segment);
  }
  events.push({ op: 'exec', calls: execCalls });
  return validateTrace({ format: TRACE_FORMAT, name: 'mixed', seed, events });
}
