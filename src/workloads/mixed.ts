/**
 * mixed: modules, BPF churn and trampolines interleaved over one long run.
 *
 * Why: a real machine does not run one producer at a time, and the thread's design question is
 * whether ONE allocator serves all of them well together (Song Liu: one allocator "for all the use
 * cases of modules, text, data, rodata, etc.", then "bpf, ftrace, kprobe, bcachefs"; lkml-thread.md).
 * Interleaving is where type separation, sub-page packing and large-page sharing interact: BPF
 * churn frees holes next to long-lived module text, trampolines fill them, and so on.
 *
 * How: the three generators run with seeds forked from this one; their ids are renumbered into
 * disjoint ranges; the modules' boot phase runs first (a machine boots before it serves), then
 * the remaining events of all three are merged at random, each stream chosen with probability
 * proportional to its remaining events, so all three progress evenly and each keeps its own order
 * (which keeps every stream's lifecycle valid). The streams' own exec hints are dropped and
 * replaced by one hint over all live code every `execEveryEvents` merged events.
 */
import { assert } from '../base/assert.js';
import { Rng } from '../base/rng.js';
import { bpfChurn } from './bpf.js';
import { scaleOf, seedOf, type WorkloadOptions } from './builder.js';
import { modulesSynthetic } from './modules.js';
import { TRACE_FORMAT, type Trace, type TraceEvent, validateTrace } from './trace.js';
import { trampolines } from './trampolines.js';

export interface MixedOptions extends WorkloadOptions {
  readonly moduleLoads?: number;
  readonly bpfLoads?: number;
  readonly trampolineSteps?: number;
  /** An exec hint over all live code every this many merged events; default 2000. */
  readonly execEveryEvents?: number;
  readonly execCalls?: number;
}

/** A copy of `ev` with its ids shifted by `offset`; exec and phase events are not expected here. */
function shiftIds(ev: TraceEvent, offset: number): TraceEvent {
  assert(ev.op !== 'exec' && ev.op !== 'phase', 'shiftIds of a hint');
  return { ...ev, id: ev.id + offset };
}

/** Events of `trace` without hints, ids shifted; returns the next free id too. */
function stream(trace: Trace, offset: number): { events: TraceEvent[]; bootEnd: number; nextId: number } {
  const events: TraceEvent[] = [];
  let bootEnd = 0;
  let maxId = -1;
  for (const ev of trace.events) {
    if (ev.op === 'phase') {
      if (ev.name === 'runtime') bootEnd = events.length;
      continue;
    }
    if (ev.op === 'exec') continue;
    if (ev.op === 'alloc') maxId = Math.max(maxId, ev.id);
    events.push(shiftIds(ev, offset));
  }
  return { events, bootEnd, nextId: offset + maxId + 1 };
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
  const mods = stream(modulesSynthetic({ seed: seedA, scale, loads: opts.moduleLoads ?? 300 }), 0);
  const bpf = stream(bpfChurn({ seed: seedB, scale, loads: opts.bpfLoads ?? 20_000 }), mods.nextId);
  const tramps = stream(trampolines({ seed: seedC, scale, steps: opts.trampolineSteps ?? 5000 }), bpf.nextId);

  const events: TraceEvent[] = [{ op: 'phase', name: 'boot' }];
  const push = (ev: TraceEvent) => {
    events.push(ev);
    if (events.length % execEvery === 0) events.push({ op: 'exec', calls: execCalls });
  };
  for (let i = 0; i < mods.bootEnd; i++) push(mods.events[i]);
  events.push({ op: 'phase', name: 'steady' });
  const streams = [mods.events, bpf.events, tramps.events];
  const pos = [mods.bootEnd, 0, 0];
  let remaining = streams.reduce((n, s, i) => n + s.length - pos[i], 0);
  while (remaining > 0) {
    let u = rng.int(0, remaining - 1);
    let k = 0;
    while (u >= streams[k].length - pos[k]) {
      u -= streams[k].length - pos[k];
      k++;
    }
    push(streams[k][pos[k]++]);
    remaining--;
  }
  events.push({ op: 'exec', calls: execCalls });
  return validateTrace({ format: TRACE_FORMAT, name: 'mixed', seed, events });
}
