/**
 * The compare harness: the same workload through every design, each on an identical fresh
 * simulated machine, measured by the same code.
 *
 * Why it is built this way (issue 4; DESIGN.md section 7):
 * - One machine per policy, created from the same MachineConfig (same seed, same KASLR offsets,
 *   same physical memory, same aging), so one design's leftovers never cost another anything and
 *   every difference in the table is a difference between designs.
 * - Costs are read from the MACHINE, never from a policy's own claims: TLB shootdowns, IPIs,
 *   local flushes, CPA calls (permission flips) and direct-map splits are deltas of the machine's
 *   counters over the replay; mapped and large-page bytes come from walking the kernel page
 *   tables over the allocation ranges (the kernel image excluded); W^X violations are the
 *   machine's incremental audit sampled after every event (max and sum over samples; must be 0).
 * - liveBytes is what the trace asked for (identical for every policy), so overhead =
 *   mapped / live compares designs on one unit. policyMappedBytes (the design's own accounting)
 *   is reported beside it as a cross-check.
 * - The instruction-fetch model (src/metrics/fetch-model.ts, engineer M2) runs at every exec hint
 *   of the trace on the code that is live at that moment, on every CPU, with the TLBs as the
 *   workload left them (steady state: no flush of its own, so nothing to subtract); its lower bound
 *   is the machine's per-CPU infinite-TLB count (CpuTlb.iBoundMisses).
 * - Flushes are counted per kind, because the kinds cost differently and arches use different ones:
 *   local flushes (one CPU), IPI shootdowns (x86 flush_tlb_kernel_range -> on_each_cpu) with their
 *   IPIs, and broadcast invalidations (arm64 flush_tlb_kernel_range: TLBI ...IS, no IPI).
 *   allFlushEvents adds the three, because a design that flushes globally has no local flushes,
 *   so local flushes alone mislead.
 * - The simulator's own throughput: allocator calls are timed one by one (performance.now around
 *   each call, outside the W^X sampling and the fetch model) as simulatorOpsPerSecond and its
 *   ratio to the slowest policy of the run (simulatorOpsPerSecondRatio). It times the TypeScript
 *   simulation, varies up to 2x between runs and says nothing about Linux, so it is only in
 *   `--json` (simulatorSpeedNote says so), never in a table, chart or ranking (issue 11 item 12).
 *
 * - Modelled kernel time (issue 12 item 4, src/metrics/kernel-time.ts) is the figure that says who
 *   wins overall: every counted event of the run (machine counter deltas and the fetch model's
 *   iTLB misses) times its published cost. It comes first in the metrics, with its breakdown per
 *   event class (PolicyResult.kernelTime) and, per run, the ranking's sensitivity to the weights.
 *
 * Everything here runs on the simulated machine: the Linux designs are re-implementations
 * (src/policies), the costs are the model's. Output says so (`modelledNote`).
 */
import { ARCHES, type ArchName, typeIsText } from '../arch/index.js';
import { Rng } from '../base/rng.js';
import { createMachine, type Machine, type MachineConfig } from '../machine/machine.js';
import {
  type InstrumentedAllocator,
  POLICIES,
  POLICY_NAMES,
  type PolicyName,
  policyByName,
} from '../policies/index.js';
import { WORKLOADS, workloadByName } from '../workloads/registry.js';
import { type ExecFunction, replay } from '../workloads/replay.js';
import { type Trace, validateTrace } from '../workloads/trace.js';
import { type FetchFunction, runFetchCounts } from './fetch-model.js';
import { type OccupancyMap, occupancy, pageTableFootprint } from './footprint.js';
import {
  eventsFromRun,
  type KernelTimeBreakdown,
  kernelTime,
  type RunKernelTime,
  runKernelTime,
} from './kernel-time.js';
import { TimedAllocator } from './timed-allocator.js';

export {
  allocationRanges,
  OCCUPANCY_TYPES,
  type OccupancyMap,
  type OccupancyRegion,
} from './footprint.js';

export const MODELLED_NOTE =
  'All figures come from the simulated kernel machine. The Linux designs ' +
  `(${POLICY_NAMES.filter((n) => POLICIES[n].modelled).join(', ')}) are re-implementations of one kernel ` +
  'version each on that machine (docs/FIDELITY.md); iTLB figures come from a TLB model (no caches, no prefetch).';

export const SIMULATOR_SPEED_NOTE =
  "simulatorOpsPerSecond and simulatorOpsPerSecondRatio are the simulator's own throughput: allocator " +
  'calls of these TypeScript re-implementations timed in this process (ratio to the slowest policy of ' +
  'the run). They vary up to 2x between runs and say nothing about kernel speed; no table, chart or ' +
  'ranking uses them.';

export interface CompareFetchOptions {
  /** Multiplies the calls of every exec hint (default 1; tests use less). */
  readonly callsScale?: number;
  /** Zipf exponent of function hotness (default 1). */
  readonly exponent?: number;
}

export interface CompareOptions {
  /** A workload name from WORKLOADS, or a trace. */
  readonly workload: string | Trace;
  readonly policies?: readonly string[];
  readonly arch?: ArchName;
  readonly seed?: number;
  /** Passed to the workload generator (ignored for a given trace). */
  readonly scale?: number;
  /** Machine size and shape; arch and seed come from the options above. */
  readonly machine?: Omit<MachineConfig, 'arch' | 'seed'>;
  /**
   * Fragment free memory before the run (PhysMem.age), as on a long-running system. Default: the
   * workload's own machine state (WorkloadSpec.machine), else 0.
   */
  readonly ageFraction?: number;
  /** Instruction-fetch model settings, or false to skip it. */
  readonly fetch?: CompareFetchOptions | false;
  readonly progress?: (p: CompareProgress) => void;
}

export interface CompareProgress {
  readonly policy: string;
  readonly policyIndex: number;
  readonly policyCount: number;
  readonly eventsDone: number;
  readonly eventsTotal: number;
}

export interface PolicyMetrics {
  /** Sum of the counted events x their published costs (src/metrics/kernel-time.ts); first figure. */
  modelledKernelTimeNs: number;
  liveBytes: number;
  /** Bytes mapped in the allocation ranges, from the page tables. */
  mappedBytes: number;
  /** The policy's own figure (cross-check). */
  policyMappedBytes: number;
  /** mappedBytes / liveBytes (0 when nothing is live). */
  overhead: number;
  peakLiveBytes: number;
  peakMappedBytes: number;
  /** Executable bytes on 2 MiB leaves / executable bytes mapped (page tables). */
  largePageShare: number;
  execMappedBytes: number;
  execLargeBytes: number;
  directMap4kBytes: number;
  directMap4kGrowthBytes: number;
  directMapSplits: number;
  shootdowns: number;
  ipis: number;
  /** arm64 broadcast TLB invalidations (TLBI ...IS): no IPIs, counted apart from shootdowns. */
  broadcastFlushes: number;
  localFlushes: number;
  /** localFlushes + shootdowns + broadcastFlushes: every flush event, whatever its reach. */
  allFlushEvents: number;
  permissionFlips: number;
  /** Alias writes (x86 text_poke through the temporary mm, arm64 fixmap). */
  pokes: number;
  fetches: number;
  itlbMisses: number;
  itlbMissesPerMillion: number;
  /**
   * Lower bound per million fetches: the misses an infinite-capacity TLB would take on the same
   * CPUs with the same flushes (per CPU, first instruction access to a leaf since that CPU last
   * invalidated it; FetchReport.boundMisses). Not the distinct leaves touched.
   */
  itlbLowerBoundPerMillion: number;
  fetchFaults: number;
  /** Max of the W^X audit over samples after every event (must be 0). */
  wxViolations: number;
  /** Sum of the audit over all samples (must be 0). */
  wxViolationsTotal: number;
  allocatorOps: number;
  /** The simulator's own throughput (allocator calls per second of this process); --json only. */
  simulatorOpsPerSecond: number;
  /** simulatorOpsPerSecond / the slowest policy's in the same run; --json only. */
  simulatorOpsPerSecondRatio: number;
  failures: number;
  events: number;
}

export interface PolicyResult {
  readonly name: string;
  readonly modelled: boolean;
  /** The kernel version the design models (PolicySpec.kernel), e.g. 'Linux 6.10'. */
  readonly kernel: string;
  /** The policy this design behaves exactly like on this run's arch (PolicySpec.sameAs), or null. */
  readonly sameAs: string | null;
  /** W+X pages this kernel version leaves on this arch (PolicySpec.wxHoles), or null: W^X must be 0. */
  readonly wxHoles: string | null;
  /** One paragraph on the design (PolicySpec.describe): the text the report shows too. */
  readonly description: string;
  /** The events behind modelledKernelTimeNs and what each class adds (ns). */
  readonly kernelTime: KernelTimeBreakdown;
  readonly metrics: PolicyMetrics;
  readonly occupancy: OccupancyMap;
  readonly counters: Readonly<Record<string, number>>;
  readonly failureSamples: readonly { eventIndex: number; op: string; code: string; reason: string }[];
}

export interface CompareResult {
  readonly workload: string;
  /** One paragraph on the workload (WorkloadSpec.describe, or the trace file's): the report shows it too. */
  readonly description: string;
  readonly arch: ArchName;
  readonly seed: number;
  readonly scale: number;
  readonly machine: {
    memoryBytes: number;
    cpus: number;
    tlb: string;
    ageFraction: number;
    /** Why the machine is in this state when the workload chose it (WorkloadSpec.machine), else null. */
    state: string | null;
  };
  readonly modelledNote: string;
  /** What the simulatorOpsPerSecond fields are (and are not). */
  readonly simulatorSpeedNote: string;
  /** How modelledKernelTimeNs is made, the costs on this arch, and how robust its ranking is. */
  readonly kernelTime: RunKernelTime;
  readonly policies: readonly PolicyResult[];
}

export class CompareError extends Error {
  override name = 'CompareError';
  readonly code = 'EINVAL';
}

/**
 * A compare checked and resolved but not yet run: the policies, the trace, the machine config.
 * Every (policy) run of a plan is independent of the others (a fresh machine each), which is what
 * lets the CLI run them on worker threads (src/cli/pool.ts) and merge them with assembleCompare:
 * runCompare is planCompare, runPlannedPolicy for each policy in order, then assembleCompare.
 */
export interface ComparePlan {
  /** The workload's one-paragraph description (the registry's, or a trace's own). */
  readonly description: string;
  readonly arch: ArchName;
  readonly seed: number;
  readonly scale: number;
  readonly ageFraction: number;
  readonly agePhase: string | null;
  readonly names: readonly PolicyName[];
  readonly trace: Trace;
  readonly config: MachineConfig;
  /** Why the machine is in this state, when the workload's own preset chose it; else null. */
  readonly presetWhy: string | null;
  readonly fetch: CompareFetchOptions | false;
}

/** One policy's run of a plan, with the TLB profile its machine was built with. */
export interface PlannedPolicyRun {
  readonly result: PolicyResult;
  readonly tlbProfile: string;
}

/** Check the options and resolve the workload (CompareError before any work). */
export function planCompare(options: Omit<CompareOptions, 'progress'>): ComparePlan {
  const arch = options.arch ?? 'x86_64';
  if (!(arch in ARCHES))
    throw new CompareError(`unknown arch '${arch}' (known: ${Object.keys(ARCHES).join(', ')})`);
  const seed = options.seed ?? 1;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff)
    throw new CompareError(`seed must be a uint32: ${seed}`);
  const scale = options.scale ?? 1;
  if (!(Number.isFinite(scale) && scale > 0))
    throw new CompareError(`scale must be a positive number: ${scale}`);
  const preset = typeof options.workload === 'string' ? WORKLOADS[options.workload]?.machine : undefined;
  const ageFraction = options.ageFraction ?? preset?.ageFraction ?? 0;
  // The workload's own state may age the machine at a phase marker (after its boot), not before.
  const agePhase = options.ageFraction === undefined ? (preset?.agePhase ?? null) : null;
  if (!(ageFraction >= 0 && ageFraction <= 1))
    throw new CompareError(`ageFraction must be in [0, 1]: ${ageFraction}`);
  const names = resolvePolicies(options.policies);
  const trace = resolveTrace(options.workload, seed, scale);
  // A given trace is checked once here, not again in each design's replay; a registry workload's
  // generator has checked its own (WorkloadSpec.generate).
  if (typeof options.workload !== 'string') validateTrace(trace);
  const memoryBytes = options.machine?.memoryBytes ?? preset?.memoryBytes;
  const config: MachineConfig = {
    ...options.machine,
    ...(memoryBytes === undefined ? {} : { memoryBytes }),
    arch,
    seed,
  };
  const usesPreset =
    preset !== undefined && options.ageFraction === undefined && options.machine?.memoryBytes === undefined;
  return {
    description: workloadDescription(options.workload, trace),
    arch,
    seed,
    scale,
    ageFraction,
    agePhase,
    names,
    trace,
    config,
    presetWhy: usesPreset ? preset.why : null,
    fetch: options.fetch ?? {},
  };
}

/** Run one policy of a plan on its own fresh machine. */
export function runPlannedPolicy(
  plan: ComparePlan,
  policyIndex: number,
  progress?: (p: CompareProgress) => void,
): PlannedPolicyRun {
  const { ageFraction, agePhase, seed, names } = plan;
  const name = names[policyIndex];
  const machine = createMachine(plan.config);
  const age = () => machine.phys.age(ageFraction, new Rng(seed ^ 0x5eed));
  if (ageFraction > 0 && agePhase === null) age();
  const policy = policyByName(name).create(machine, seed);
  const report = (eventsDone: number, eventsTotal: number) =>
    progress?.({ policy: name, policyIndex, policyCount: names.length, eventsDone, eventsTotal });
  const onPhase = (phase: string) => {
    if (ageFraction > 0 && phase === agePhase) age();
  };
  const result = runOne(machine, policy, name, plan.trace, plan.fetch, seed, report, onPhase);
  return { result, tlbProfile: machine.tlbProfileName };
}

/** The result of a plan from its policy runs (in the plan's policy order). */
export function assembleCompare(plan: ComparePlan, runs: readonly PlannedPolicyRun[]): CompareResult {
  if (runs.length !== plan.names.length)
    throw new CompareError(`${runs.length} policy runs for ${plan.names.length} policies`);
  const results = runs.map((r) => r.result);
  completeMetrics(results);
  const tlbProfile = runs.find((r) => r.tlbProfile !== '')?.tlbProfile ?? '';
  const m = { ...createMachineInfo(plan.config, plan.ageFraction, tlbProfile), state: plan.presetWhy };
  return {
    workload: plan.trace.name,
    description: plan.description,
    arch: plan.arch,
    seed: plan.seed,
    scale: plan.scale,
    machine: m,
    modelledNote: MODELLED_NOTE,
    simulatorSpeedNote: SIMULATOR_SPEED_NOTE,
    kernelTime: runKernelTime(results, plan.arch),
    policies: results,
  };
}

/** Runs every requested policy on the workload. Bad options throw CompareError before any work. */
export function runCompare(options: CompareOptions): CompareResult {
  const plan = planCompare(options);
  const runs = plan.names.map((_, i) => runPlannedPolicy(plan, i, options.progress));
  return assembleCompare(plan, runs);
}

/** The registry's words for a named workload; a trace passed in says what it is and how long it is. */
function workloadDescription(workload: string | Trace, trace: Trace): string {
  if (typeof workload === 'string') return workloadByName(workload).describe;
  return `a recorded trace '${trace.name}' of ${trace.events.length.toLocaleString('en-US')} events (execmem trace import; docs/TRACES.md)`;
}

function resolvePolicies(list: readonly string[] | undefined): PolicyName[] {
  if (list === undefined) return [...POLICY_NAMES];
  if (list.length === 0) throw new CompareError('no policies given');
  for (const n of list) {
    if (!(POLICY_NAMES as readonly string[]).includes(n)) {
      throw new CompareError(`unknown policy '${n}' (known: ${POLICY_NAMES.join(', ')})`);
    }
  }
  return [...new Set(list)] as PolicyName[];
}

function resolveTrace(workload: string | Trace, seed: number, scale: number): Trace {
  if (typeof workload !== 'string') return workload;
  try {
    return workloadByName(workload).generate({ seed, scale });
  } catch (e) {
    if (e instanceof RangeError) throw new CompareError(e.message);
    throw e;
  }
}

/** The figures that need every policy's run (the speed ratio) or the other fields (flush total). */
function completeMetrics(results: readonly PolicyResult[]): void {
  const speeds = results.map((r) => r.metrics.simulatorOpsPerSecond).filter((x) => x > 0);
  const slowest = speeds.length > 0 ? Math.min(...speeds) : 0;
  for (const { metrics: m } of results) {
    m.simulatorOpsPerSecondRatio = slowest > 0 ? m.simulatorOpsPerSecond / slowest : 0;
    m.allFlushEvents = m.localFlushes + m.shootdowns + m.broadcastFlushes;
  }
}

function createMachineInfo(
  config: MachineConfig,
  ageFraction: number,
  tlbProfile: string,
): Omit<CompareResult['machine'], 'state'> {
  return {
    memoryBytes: config.memoryBytes ?? 16 * 1024 ** 3,
    cpus: config.cpus ?? 4,
    tlb: tlbProfile,
    ageFraction,
  };
}

interface FetchTotals {
  fetches: number;
  misses: number;
  /** First-level iTLB misses that hit the second level (no walk). */
  stlbHits: number;
  lowerBound: number;
  faults: number;
  walks: number;
}

function runOne(
  machine: Machine,
  policy: InstrumentedAllocator,
  name: PolicyName,
  trace: Trace,
  fetch: CompareFetchOptions | false,
  seed: number,
  progress: (done: number, total: number) => void,
  onPhase: (phase: string) => void,
): PolicyResult {
  const c0 = { ...machine.counters };
  const dm0 = machine.directMapStats();
  const timed = new TimedAllocator(policy);
  const totals: FetchTotals = { fetches: 0, misses: 0, stlbHits: 0, lowerBound: 0, faults: 0, walks: 0 };
  const cpus = Array.from({ length: machine.cpuCount }, (_, i) => i);
  let wxMax = 0;
  let wxTotal = 0;
  let execRuns = 0;
  const runFetch = (fns: readonly FetchFunction[], calls: number, index: number) => {
    if (fetch === false || fns.length === 0) return;
    const n = Math.max(1, Math.round(calls * (fetch.callsScale ?? 1)));
    const r = runFetchCounts(machine, fns, {
      calls: n,
      exponent: fetch.exponent ?? 1,
      rng: new Rng((seed * 2654435761 + index) >>> 0),
      cpus,
    });
    execRuns++;
    totals.fetches += r.fetches;
    totals.misses += r.itlbMisses;
    totals.stlbHits += r.l1Misses - r.itlbMisses;
    totals.lowerBound += r.boundMisses;
    totals.faults += r.faults;
    totals.walks += r.pageWalks;
  };
  const result = replay(
    trace,
    timed,
    {
      onEvent(ev) {
        if (ev.op === 'phase') onPhase(ev.name);
        const v = machine.wxViolationCount();
        if (v > wxMax) wxMax = v;
        wxTotal += v;
      },
      onExec: (fns: readonly ExecFunction[], calls: number, index: number) => runFetch(fns, calls, index),
      progress,
    },
    { validate: false }, // planCompare validated it once for every design
  );
  if (execRuns === 0) runFetch(liveText(policy), 10_000, trace.events.length);

  const c1 = machine.counters;
  const dm1 = machine.directMapStats();
  const pt = pageTableFootprint(machine);
  const usage = policy.usage();
  const perMillion = (n: number) => (totals.fetches > 0 ? (n * 1e6) / totals.fetches : 0);
  const seconds = timed.elapsedMs / 1000;
  const kt = kernelTime(eventsFromRun(c0, c1, totals), machine.arch.name);
  const metrics: PolicyMetrics = {
    modelledKernelTimeNs: kt.totalNs,
    liveBytes: result.liveBytes,
    mappedBytes: pt.mappedBytes,
    policyMappedBytes: usage.mappedBytes,
    overhead: result.liveBytes > 0 ? pt.mappedBytes / result.liveBytes : 0,
    peakLiveBytes: result.peakLiveBytes,
    peakMappedBytes: result.peakMappedBytes,
    largePageShare: pt.execBytes > 0 ? pt.execLargeBytes / pt.execBytes : 0,
    execMappedBytes: pt.execBytes,
    execLargeBytes: pt.execLargeBytes,
    directMap4kBytes: dm1.bytes4k,
    directMap4kGrowthBytes: dm1.bytes4k - dm0.bytes4k,
    directMapSplits:
      c1.splitsDirectMap2M - c0.splitsDirectMap2M + (c1.splitsDirectMap1G - c0.splitsDirectMap1G),
    shootdowns: c1.shootdowns - c0.shootdowns,
    ipis: c1.ipis - c0.ipis,
    broadcastFlushes: c1.broadcastFlushes - c0.broadcastFlushes,
    localFlushes: c1.localFlushes - c0.localFlushes,
    allFlushEvents: 0, // completeMetrics adds the kinds up
    permissionFlips: c1.cpaCalls - c0.cpaCalls,
    pokes: c1.pokes - c0.pokes,
    fetches: totals.fetches,
    itlbMisses: totals.misses,
    itlbMissesPerMillion: perMillion(totals.misses),
    itlbLowerBoundPerMillion: perMillion(totals.lowerBound),
    fetchFaults: totals.faults,
    wxViolations: wxMax,
    wxViolationsTotal: wxTotal,
    allocatorOps: timed.ops,
    simulatorOpsPerSecond: seconds > 0 ? timed.ops / seconds : 0,
    simulatorOpsPerSecondRatio: 0,
    failures: result.failureCount,
    events: result.events,
  };
  const spec = policyByName(name);
  return {
    name,
    modelled: policy.modelled,
    kernel: spec.kernel,
    sameAs: spec.sameAs(machine.arch.name),
    wxHoles: spec.wxHoles(machine.arch.name),
    description: spec.describe,
    kernelTime: kt,
    metrics,
    occupancy: occupancy(machine, policy, pt.regions),
    counters: policy.policyCounters(),
    failureSamples: result.failures.slice(0, 10).map((f) => ({
      eventIndex: f.eventIndex,
      op: f.op,
      code: f.code,
      reason: f.reason,
    })),
  };
}

/** Every live text allocation as one function (used only when a trace has no exec hints). */
function liveText(policy: InstrumentedAllocator): FetchFunction[] {
  const out: FetchFunction[] = [];
  policy.forEachLive((e) => {
    if (typeIsText(e.type)) out.push({ va: e.va, sizeBytes: e.sizeBytes });
  });
  return out;
}
