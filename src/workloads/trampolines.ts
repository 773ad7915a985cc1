/**
 * Trampolines workload: ftrace trampolines, BPF trampolines and kprobe instruction slots,
 * attached and detached.
 *
 * Why: these are the small, long-lived-or-not producers that Linux moved off module_alloc when it
 * made execmem type-aware (EXECMEM_FTRACE, EXECMEM_KPROBES; Mark Rutland: "kprobes XOL and
 * DIRECT_CALL trampolines can go anywhere", lkml-thread.md). Their sizes are tiny (a 16 B kprobe
 * slot, a few hundred bytes of ftrace trampoline), so they test sub-page packing and the cost of
 * per-object permission changes: Linux's kprobe_insn_cache takes a whole ROX page for its slots,
 * and an ftrace trampoline used to be a whole module_alloc page.
 *
 * The mix (ASSUMED, no published census): the walk picks a kind by weight (kprobes 0.5, BPF
 * trampolines 0.3, ftrace ops 0.2) and attaches one or detaches a random attached one, keeping
 * each kind near its live target. Sizes come from ./sizes.ts. BPF trampolines are type `bpf` with
 * caller `bpf_trampoline`: Linux allocates them through bpf_prog_pack since 6.7
 * (arch_alloc_bpf_trampoline) but gave each its own page before (bpf_tramp_image_alloc), so a
 * design must be able to tell them from programs.
 */
import type { ExecmemType } from '../arch/types.js';
import { Rng } from '../base/rng.js';
import type { AllocCaller } from '../policies/types.js';
import { LiveSet, scaled, scaleOf, seedOf, TraceBuilder, type WorkloadOptions } from './builder.js';
import { bpfTrampolineBytes, ftraceTrampolineBytes, KPROBE_SLOT_BYTES, kprobeInsnBytes } from './sizes.js';
import type { Trace } from './trace.js';

export interface TrampolinesOptions extends WorkloadOptions {
  /** Attach/detach steps (before scale); default 5000. */
  readonly steps?: number;
  /** Live targets per kind (before scale); defaults kprobes 400, bpf trampolines 100, ftrace 30. */
  readonly kprobesLive?: number;
  readonly bpfTrampolinesLive?: number;
  readonly ftraceLive?: number;
  readonly execEverySteps?: number;
  readonly execCalls?: number;
}

interface Kind {
  readonly type: ExecmemType;
  readonly caller?: AllocCaller;
  readonly weight: number;
  readonly target: number;
  readonly live: LiveSet<number>;
  /** Returns [allocation bytes, code bytes]. */
  size(rng: Rng): [number, number];
}

function kinds(opts: TrampolinesOptions, scale: number): Kind[] {
  return [
    {
      type: 'kprobes',
      weight: 0.5,
      target: scaled(opts.kprobesLive ?? 400, scale, 2),
      live: new LiveSet(),
      size: (rng) => [KPROBE_SLOT_BYTES, kprobeInsnBytes(rng)],
    },
    {
      type: 'bpf',
      caller: 'bpf_trampoline',
      weight: 0.3,
      target: scaled(opts.bpfTrampolinesLive ?? 100, scale, 2),
      live: new LiveSet(),
      size: (rng) => {
        const n = bpfTrampolineBytes(rng);
        return [n, n];
      },
    },
    {
      type: 'ftrace',
      weight: 0.2,
      target: scaled(opts.ftraceLive ?? 30, scale, 2),
      live: new LiveSet(),
      size: (rng) => {
        const n = ftraceTrampolineBytes(rng);
        return [n, n];
      },
    },
  ];
}

function pickKind(rng: Rng, list: readonly Kind[]): Kind {
  let u = rng.next();
  for (const k of list) {
    if (u < k.weight) return k;
    u -= k.weight;
  }
  return list[list.length - 1];
}

export function trampolines(opts: TrampolinesOptions = {}): Trace {
  return trampolinesBuilder(opts).build();
}

/** trampolines's events in a builder, not validated yet (TraceBuilder.unchecked: mixed validates the merged trace). */
export function trampolinesBuilder(opts: TrampolinesOptions = {}): TraceBuilder {
  const seed = seedOf(opts);
  const scale = scaleOf(opts);
  const steps = scaled(opts.steps ?? 5000, scale, 8);
  const execEvery = Math.max(1, opts.execEverySteps ?? 250);
  const execCalls = opts.execCalls ?? 10_000;
  const rng = new Rng(seed);
  const b = new TraceBuilder('trampolines', seed);
  const list = kinds(opts, scale);
  b.phase('attach-detach');
  for (let s = 1; s <= steps; s++) {
    const k = pickKind(rng, list);
    // Attach with probability falling from 0.9 (empty) to 0.1 (at twice the target).
    const pAttach = Math.max(0.1, 0.9 - (0.4 * k.live.size) / k.target);
    if (k.live.size === 0 || rng.next() < pAttach) {
      const [allocBytes, codeBytes] = k.size(rng);
      const id = b.alloc(k.type, allocBytes, k.caller === undefined ? {} : { caller: k.caller });
      b.write(id, 0, codeBytes, 'code');
      b.finalize(id);
      k.live.add(id);
    } else {
      b.free(k.live.takeRandom(rng));
    }
    if (s % execEvery === 0) b.exec(execCalls);
  }
  b.exec(execCalls);
  return b;
}
