/**
 * BPF workloads: program churn with the published size mix, and Aaron Lu's 2048-instance test.
 *
 * Why these two: BPF is the producer that made executable memory a problem. Song Liu's fleet
 * numbers (50% of programs < 500 B, 75% < 2 KiB, <20221128190245.2337461-1-song@kernel.org) are
 * why sub-page packing exists, and "Before bpf_prog_pack loading and unloading BPF programs
 * requires global TLB shootdown" is why churn (load and unload, not just load) is the workload.
 * Aaron Lu's test (<Y2ioTodn+mBXdIqp@ziqianlu-desk2>: 2048 sockex1 instances split three 1 GiB
 * direct-map pages before packing, none after) is the one published before/after figure, so
 * `bpf-aaronlu` reproduces its shape: 2048 instances of three small images, all loaded at once.
 *
 * Each load follows the JIT's flow (kernel/bpf/core.c bpf_jit_binary_pack_alloc/_finalize):
 * allocate the image (header + 16 B random illegal prefix + program, rounded to 64 B, 64 B
 * aligned), write it in ONE write of the whole image (the JIT fills a RW copy and
 * bpf_jit_binary_pack_finalize copies it with one text_poke_copy; designs without packs get the
 * same single write of the image), finalize. The program itself is the function the fetch model
 * calls. Unload frees the image.
 */

import { Rng } from '../base/rng.js';
import { LiveSet, scaled, scaleOf, seedOf, TraceBuilder, type WorkloadOptions } from './builder.js';
import {
  AARONLU_IMAGE_BYTES,
  BPF_CHUNK_BYTES,
  bpfJitImage,
  bpfJitImageOfSize,
  bpfProgBytes,
  type JitImage,
} from './sizes.js';
import type { Trace } from './trace.js';

export interface BpfChurnOptions extends WorkloadOptions {
  /** Programs loaded over the whole run (before scale); default 20000. */
  readonly loads?: number;
  /** Programs kept loaded in steady state (before scale); default 1000. */
  readonly liveTarget?: number;
  /** An exec hint after every this many loads; default 200. */
  readonly execEveryLoads?: number;
  /** Calls per exec hint; default 10000. */
  readonly execCalls?: number;
}

/** Emit one program load; returns its id. */
export function emitBpfLoad(b: TraceBuilder, image: JitImage): number {
  const id = b.alloc('bpf', image.imageBytes, { alignBytes: BPF_CHUNK_BYTES });
  b.write(id, 0, image.imageBytes, 'code', [[image.codeOffsetBytes, image.progBytes]]);
  b.finalize(id);
  return id;
}

export function bpfChurn(opts: BpfChurnOptions = {}): Trace {
  return bpfChurnBuilder(opts).build();
}

/** bpfChurn's events in a builder, not validated yet (TraceBuilder.unchecked: mixed validates the merged trace). */
export function bpfChurnBuilder(opts: BpfChurnOptions = {}): TraceBuilder {
  const seed = seedOf(opts);
  const scale = scaleOf(opts);
  const loads = scaled(opts.loads ?? 20_000, scale, 4);
  const liveTarget = Math.min(loads, scaled(opts.liveTarget ?? 1000, scale, 2));
  const execEvery = Math.max(1, opts.execEveryLoads ?? 200);
  const execCalls = opts.execCalls ?? 10_000;
  const rng = new Rng(seed);
  const b = new TraceBuilder('bpf-churn', seed);
  const live = new LiveSet<number>();
  b.phase('load');
  for (let n = 1; n <= loads; n++) {
    if (n === liveTarget + 1) b.phase('churn');
    // Steady state: the live count wanders around the target (unload 0..2 per load).
    if (live.size >= liveTarget) {
      const unloads = live.size > liveTarget ? 2 : rng.int(0, 2);
      for (let u = 0; u < unloads && live.size > 0; u++) b.free(live.takeRandom(rng));
    }
    live.add(emitBpfLoad(b, bpfJitImage(rng, bpfProgBytes(rng))));
    if (n % execEvery === 0) b.exec(execCalls);
  }
  b.exec(execCalls);
  return b;
}

export interface BpfAaronLuOptions extends WorkloadOptions {
  /** sockex1 instances (before scale); default 2048, as in the published test. */
  readonly instances?: number;
  /**
   * Programs loaded at boot before the test (systemd's per-unit cgroup filters; ASSUMED 8, not
   * scaled). On a bpf_prog_pack kernel they are why the pack already exists when the test starts,
   * as in the published run ("it would need 6144 such progs to use up the cache").
   */
  readonly bootPrograms?: number;
  /** Unload everything at the end (the published figures are taken while loaded); default false. */
  readonly unload?: boolean;
  readonly execCalls?: number;
}

export function bpfAaronLu(opts: BpfAaronLuOptions = {}): Trace {
  const seed = seedOf(opts);
  const instances = scaled(opts.instances ?? 2048, scaleOf(opts), 1);
  const rng = new Rng(seed);
  const b = new TraceBuilder('bpf-aaronlu', seed);
  const ids: number[] = [];
  b.phase('boot');
  for (let i = 0; i < (opts.bootPrograms ?? 8); i++) emitBpfLoad(b, bpfJitImage(rng, bpfProgBytes(rng)));
  b.phase('test');
  for (let i = 0; i < instances; i++) {
    for (const imageBytes of AARONLU_IMAGE_BYTES)
      ids.push(emitBpfLoad(b, bpfJitImageOfSize(rng, imageBytes)));
  }
  b.exec(opts.execCalls ?? 10_000);
  if (opts.unload) {
    b.phase('unload');
    for (const id of ids) b.free(id);
  }
  return b.build();
}
