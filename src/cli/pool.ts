/**
 * Runs many compares at once: every (workload, seed, design) run on this thread and a pool of
 * worker threads, then each compare assembled in this thread exactly as `runCompare` assembles it.
 *
 * Why this is safe for the figures: each design of a compare already runs on its own fresh machine
 * built from the same config (src/metrics/compare.ts), so a run depends only on its plan and its
 * design, never on which runs came before it in the same thread. Every thread gets the plans (the
 * traces themselves, so a worker generates nothing) and claims the next run from one shared
 * counter, biggest plans first; results go back in the plan's order. The bench (bench/tool.ts) and
 * a test check that the JSON of a parallel run equals the serial one, timing fields aside.
 *
 * Why this thread runs designs too (`jobs` threads = this one + jobs - 1 workers): it holds the
 * plans already, so its first run starts at once, with no plan to encode, send and parse; and one
 * worker fewer is one start-up and one JIT warm-up fewer (on a 2-CPU machine, half the pool). Why a
 * shared counter instead of handing out runs: while this thread runs a design it answers no
 * message, so a worker that asked for its next run would wait; claiming from an Atomics counter
 * needs nobody to answer. Worker messages (progress, results) are read between this thread's runs.
 *
 * Why worker threads (node:worker_threads) and not processes: a plan and a result are plain data,
 * start-up is a fraction of a second, and the CLI's own command thread (worker.ts) can own the
 * pool. `jobs: 1` runs everything in the calling thread, in order: that is the serial run, with
 * no worker at all.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import {
  assembleCompare,
  type CompareOptions,
  type ComparePlan,
  type CompareResult,
  type PlannedPolicyRun,
  planCompare,
  runPlannedPolicy,
} from '../metrics/compare.js';

/** One compare to run: the options of runCompare without the progress callback. */
export type CompareJob = Omit<CompareOptions, 'progress'>;

/** Progress of one (compare, design) run. */
export interface PoolProgress {
  /** Index of the compare in the jobs given. */
  readonly job: number;
  readonly policy: string;
  readonly eventsDone: number;
  readonly eventsTotal: number;
  /** The run has finished (its result is in). */
  readonly finished: boolean;
}

export interface PoolOptions {
  /** Threads that run designs, this one included; 1 = serial in this thread. Default: defaultJobCount(). */
  readonly jobs?: number;
  readonly progress?: (p: PoolProgress) => void;
  /** Threads started before the plans were made (prestartPool); the run takes them over. */
  readonly threads?: PoolThreads | null;
}

function newPoolWorker(): Worker {
  return new Worker(new URL('./pool-worker.js', import.meta.url));
}

/**
 * Worker threads started before the plans are ready: the CLI starts them, then generates the
 * traces on its own thread while they load their modules (a few hundred milliseconds each that
 * would otherwise come after the traces). runPlans takes them over and ends them when it is done;
 * close() ends any that no run took (a usage error in between). A thread that failed or stopped
 * before it was taken fails the run that takes it.
 */
export class PoolThreads {
  private workers: Worker[] | null;
  private failure: Error | null = null;

  constructor(count: number) {
    this.workers = Array.from({ length: count }, () => {
      const w = newPoolWorker();
      w.on('error', (e) => {
        this.failure ??= e;
      });
      w.on('exit', (code) => {
        this.failure ??= new Error(
          `a compare worker thread stopped before its first run (exit code ${code})`,
        );
      });
      return w;
    });
  }

  /** The threads, once (later calls get none); throws if one failed or stopped already. */
  take(): Worker[] {
    const workers = this.workers ?? [];
    this.workers = null;
    if (this.failure !== null) {
      for (const w of workers) void w.terminate();
      throw this.failure;
    }
    for (const w of workers) w.removeAllListeners('exit');
    return workers;
  }

  /** Ends the threads no run took. */
  close(): void {
    const workers = this.workers ?? [];
    this.workers = null;
    for (const w of workers) {
      w.removeAllListeners('exit');
      void w.terminate();
    }
  }
}

/**
 * The worker threads runPlans will use for `jobs` (default one per CPU; this thread is one of
 * them), started now; null when serial.
 */
export function prestartPool(jobs?: number): PoolThreads | null {
  const count = jobs ?? defaultJobCount();
  if (!(Number.isInteger(count) && count > 1 && count <= POOL_JOBS_MAX)) return null;
  return new PoolThreads(count - 1);
}

/** The most threads a pool starts. */
export const POOL_JOBS_MAX = 64;

/** One thread per CPU Node reports (os.availableParallelism), at most POOL_JOBS_MAX. */
export function defaultJobCount(): number {
  return Math.max(1, Math.min(availableParallelism(), POOL_JOBS_MAX));
}

/** One run as a worker claims it: which task, of which plan, which design. */
export interface PoolClaim {
  readonly id: number;
  readonly planId: number;
  readonly policyIndex: number;
}

/**
 * What this thread sends a worker: every plan it may claim a run of (encodePlan's text, in the
 * order of the claims, the first one before `go`), and `go` with the shared claim counter and the
 * claims in the order they are taken.
 */
export type PoolMessage =
  | { readonly kind: 'plan'; readonly planId: number; readonly text: string }
  | { readonly kind: 'go'; readonly counter: SharedArrayBuffer; readonly claims: readonly PoolClaim[] };

/** What a pool worker sends back. */
export type PoolReply =
  | {
      readonly kind: 'progress';
      readonly id: number;
      readonly eventsDone: number;
      readonly eventsTotal: number;
    }
  | { readonly kind: 'result'; readonly id: number; readonly run: PlannedPolicyRun }
  | { readonly kind: 'error'; readonly id: number; readonly message: string; readonly stack: string };

/**
 * A plan as the text a worker receives: JSON, because a plan is plain data (numbers, strings,
 * arrays, null; no undefined, NaN or typed array: test/compare-pool.test.ts checks every
 * workload's plan comes back equal) and the runtime's JSON is the fastest way across: for mixed's
 * 95,275 events about 40 ms to encode and 90 ms to parse in a fresh worker, against 100 and 210 ms
 * with v8.serialize / v8.deserialize, both on the path to a worker's first run.
 */
export function encodePlan(plan: ComparePlan): string {
  return JSON.stringify(plan);
}

/** The plan encodePlan encoded. */
export function decodePlan(text: string): ComparePlan {
  return JSON.parse(text) as ComparePlan;
}

/** Events of one run: the plan's trace length (what the replay's progress counts to). */
export function planEvents(plan: ComparePlan): number {
  return plan.trace.events.length;
}

/**
 * Run every job (each a whole compare of every design it names) and return their results in
 * order. Options are checked and traces resolved first, in this thread: a bad job throws
 * CompareError before any run starts.
 */
export async function runCompareJobs(
  jobs: readonly CompareJob[],
  options: PoolOptions = {},
): Promise<CompareResult[]> {
  return runPlans(jobs.map(planCompare), options);
}

/** As runCompareJobs, for plans already made (planCompare). */
export async function runPlans(
  plans: readonly ComparePlan[],
  options: PoolOptions = {},
): Promise<CompareResult[]> {
  const jobCount = options.jobs ?? defaultJobCount();
  if (!(Number.isInteger(jobCount) && jobCount >= 1 && jobCount <= POOL_JOBS_MAX))
    throw new RangeError(`jobs must be an integer in [1, ${POOL_JOBS_MAX}]: ${jobCount}`);
  const tasks = plans.flatMap((plan, job) =>
    plan.names.map((_, policyIndex) => ({ job, plan, policyIndex })),
  );
  const runs: PlannedPolicyRun[][] = plans.map(() => []);
  const progress = options.progress;
  if (jobCount === 1 || tasks.length <= 1) {
    options.threads?.close();
    for (const t of tasks) {
      const policy = t.plan.names[t.policyIndex];
      const run = runPlannedPolicy(t.plan, t.policyIndex, (p) =>
        progress?.({
          job: t.job,
          policy,
          eventsDone: p.eventsDone,
          eventsTotal: p.eventsTotal,
          finished: false,
        }),
      );
      runs[t.job][t.policyIndex] = run;
      progress?.({
        job: t.job,
        policy,
        eventsDone: planEvents(t.plan),
        eventsTotal: planEvents(t.plan),
        finished: true,
      });
    }
  } else {
    await runShared(
      tasks,
      Math.min(jobCount, tasks.length) - 1,
      options.threads?.take() ?? [],
      (id, run) => {
        const t = tasks[id];
        runs[t.job][t.policyIndex] = run;
      },
      (id, eventsDone, eventsTotal, finished) => {
        const t = tasks[id];
        progress?.({ job: t.job, policy: t.plan.names[t.policyIndex], eventsDone, eventsTotal, finished });
      },
    );
  }
  return plans.map((plan, job) => assembleCompare(plan, runs[job]));
}

interface Task {
  readonly job: number;
  readonly plan: ComparePlan;
  readonly policyIndex: number;
}

/**
 * A rough size of a run, to start the biggest first (so no thread is left alone with a long run
 * at the end): its events plus its fetch-model calls over 100 (a call runs a function, an event
 * a few allocator steps). Only the order of dispatch depends on it, never a result.
 */
function taskWeight(plan: ComparePlan): number {
  let weight = 0;
  for (const ev of plan.trace.events) weight += ev.op === 'exec' ? 1 + ev.calls / 100 : 1;
  return weight;
}

/** The next macrotask: lets worker messages (progress, results, failures) in between two runs. */
function yieldToMessages(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Run the tasks on this thread and `threads` workers, each claiming the next task (biggest plan
 * first) from one shared counter until none is left.
 */
async function runShared(
  tasks: readonly Task[],
  threads: number,
  prestarted: readonly Worker[],
  onResult: (id: number, run: PlannedPolicyRun) => void,
  onProgress: (id: number, eventsDone: number, eventsTotal: number, finished: boolean) => void,
): Promise<void> {
  const weights = new Map<ComparePlan, number>();
  for (const t of tasks) if (!weights.has(t.plan)) weights.set(t.plan, taskWeight(t.plan));
  const order = tasks
    .map((t, id) => ({ id, weight: weights.get(t.plan) ?? 0 }))
    .sort((a, b) => b.weight - a.weight || a.id - b.id)
    .map((x) => x.id);
  /** The plans in the order their first run is claimed; a plan's id is its index here. */
  const plansInOrder: ComparePlan[] = [];
  const planIds = new Map<ComparePlan, number>();
  for (const id of order) {
    const plan = tasks[id].plan;
    if (planIds.has(plan)) continue;
    planIds.set(plan, plansInOrder.length);
    plansInOrder.push(plan);
  }
  const claims: PoolClaim[] = order.map((id) => ({
    id,
    planId: planIds.get(tasks[id].plan) ?? -1,
    policyIndex: tasks[id].policyIndex,
  }));
  const counter = new Int32Array(new SharedArrayBuffer(4));
  let finished = 0;
  let failure: Error | null = null;
  let allDone: () => void = () => {};
  const done = new Promise<void>((resolve) => {
    allDone = resolve;
  });
  const finish = (id: number, run: PlannedPolicyRun): void => {
    onResult(id, run);
    const events = planEvents(tasks[id].plan);
    onProgress(id, events, events, true);
    if (++finished === tasks.length) allDone();
  };
  const fail = (error: Error): void => {
    failure ??= error;
    Atomics.store(counter, 0, claims.length); // nothing more is claimed
    allDone();
  };

  const workers: Worker[] = [];
  for (const w of prestarted.slice(threads)) void w.terminate();
  for (let i = 0; i < threads; i++) {
    const w = prestarted[i] ?? newPoolWorker();
    workers.push(w);
    w.on('message', (m: PoolReply) => {
      if (failure !== null) return;
      if (m.kind === 'progress') onProgress(m.id, m.eventsDone, m.eventsTotal, false);
      else if (m.kind === 'error') {
        const e = new Error(m.message);
        e.stack = m.stack;
        fail(e);
      } else finish(m.id, m.run);
    });
    w.on('error', (e) => fail(e));
    w.on('exit', (code) => {
      if (finished < tasks.length) fail(new Error(`a compare worker thread stopped (exit code ${code})`));
    });
  }
  try {
    // The first plan, then go, then the others (a worker waits for a plan it has not received).
    plansInOrder.forEach((plan, planId) => {
      const text = encodePlan(plan);
      for (const w of workers) {
        w.postMessage({ kind: 'plan', planId, text } satisfies PoolMessage);
        if (planId === 0)
          w.postMessage({
            kind: 'go',
            counter: counter.buffer as SharedArrayBuffer,
            claims,
          } satisfies PoolMessage);
      }
    });
    for (;;) {
      await yieldToMessages();
      const k = Atomics.add(counter, 0, 1);
      if (k >= claims.length || failure !== null) break;
      const { id } = claims[k];
      const t = tasks[id];
      const run = runPlannedPolicy(t.plan, t.policyIndex, (p) =>
        onProgress(id, p.eventsDone, p.eventsTotal, false),
      );
      finish(id, run);
    }
    await done;
  } finally {
    for (const w of workers) {
      w.removeAllListeners('exit');
      void w.terminate();
    }
  }
  if (failure !== null) throw failure;
}
