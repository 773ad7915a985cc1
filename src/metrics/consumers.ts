/**
 * The real consumers' own figures for the report: what the real BPF programs look like beside the
 * published size mix the synthetic workload draws from, and what the ftrace-real run patched.
 *
 * Why a producer of its own: these figures describe the workloads, not a design, so they are the
 * same for every row and belong beside the tables, computed once from the same generators the
 * runs replay (bpf-real's JIT sizes, bpf-churn's published mix, ftrace-real's summary). Both
 * histograms count alloc events of type `bpf` in the trace, bucketed by image size, so the two
 * columns are measured the same way.
 */
import { bpfChurn } from '../workloads/bpf.js';
import {
  BPF_SIZE_BUCKETS,
  type BpfImageHistogram,
  bpfImageHistogram,
  bpfReal,
} from '../workloads/bpf-real.js';
import { type FtraceRealSummary, ftraceRealSummary } from '../workloads/ftrace-real.js';
import type { Trace } from '../workloads/trace.js';

export interface BpfSizeComparison {
  readonly bucketsBytes: readonly number[];
  /** bpf-real: programs of one Debian machine, sizes from our x86 JIT. */
  readonly real: BpfImageHistogram;
  /** bpf-churn: the published mix (Song Liu: 50% < 500 B, 75% < 2 KiB) with JIT overhead. */
  readonly published: BpfImageHistogram;
}

export interface ConsumerFigures {
  readonly seed: number;
  readonly scale: number;
  readonly bpf: BpfSizeComparison;
  readonly ftrace: FtraceRealSummary;
}

/**
 * Traces the caller already generated with the same seed and scale (the report's runs): used
 * instead of generating them again, which would be the same trace (the generators are
 * deterministic in seed and scale) at a second's cost on the main thread.
 */
export interface ConsumerTraces {
  readonly bpfReal?: Trace;
  readonly bpfChurn?: Trace;
}

/** The figures the report's "real consumers" section shows, for one seed and scale. */
export function consumerFigures(
  opts: { seed: number; scale: number },
  traces: ConsumerTraces = {},
): ConsumerFigures {
  return {
    seed: opts.seed,
    scale: opts.scale,
    bpf: {
      bucketsBytes: BPF_SIZE_BUCKETS,
      real: bpfImageHistogram(traces.bpfReal ?? bpfReal(opts)),
      published: bpfImageHistogram(traces.bpfChurn ?? bpfChurn(opts)),
    },
    ftrace: ftraceRealSummary(opts),
  };
}

/** One design's load of every module of a real package (`execmem modules load --all`). */
export interface ModuleLoadRow {
  readonly policy: string;
  readonly requested: number;
  readonly loaded: number;
  readonly failed: number;
  readonly unresolvedSymbols: number;
  readonly relocOverflows: number;
  readonly relocations: number;
  /** arm64 module PLT entries the placement forced (0 on x86-64, which has none). */
  readonly pltEntries: number;
  readonly wxViolations: number;
}

export interface ModuleLoads {
  readonly packageName: string;
  readonly arch: string;
  readonly rows: readonly ModuleLoadRow[];
}
