/**
 * Runs many compares at once: every (workload, seed, design) run on a pool of worker threads, then
 * each compare assembled in the main thread exactly as `runCompare` assembles it.
 *
 * Why this is safe for the figures: each design of a compare already runs on its own fresh machine
 * built from the same config (src/metrics/compare.ts), so a run depends only on its plan and its
 * design, never on which runs came before it in the same thread. The pool hands each worker a
 * plan (the trace itself, so a worker generates nothing) and a design index, and puts the results
 * back in the plan's order. The bench (bench/tool.ts) and a test check that the JSON of a parallel
 * run equals the serial one, timing fields aside.
 *
 * Why worker threads (node:worker_threads) and not processes: a plan and a result are plain data
 * (structured clone), start-up is a fraction of a second, and the CLI's own command thread
 * (worker.ts) can own the pool. `jobs: 1` runs everything in the calling thread, in order: that is
 * the serial run, with no worker at all.
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
  /** Worker threads; 1 = serial in this thread. Default: defaultJobCount(). */
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

/** The threads runPlans will use for `jobs` (default one per CPU), started now; null when serial. */
export function prestartPool(jobs?: number): PoolThreads | null {
  const count = jobs ?? defaultJobCount();
  if (!(Number.isInteger(count) && count > 1 && count <= POOL_JOBS_MAX)) return null;
  return new PoolThreads(count);
}

/** The most threads a pool starts. */
export const POOL_JOBS_MAX = 64;

/** One thread per CPU Node reports (os.availableParallelism), at most POOL_JOBS_MAX. */
export function defaultJobCount(): number {
  return Math.max(1, Math.min(availableParallelism(), POOL_JOBS_MAX));
}

/**
 * A run sent to a pool worker. The plan (its trace is most of it: tens of thousands of events)
 * goes to a worker only with its first run there, encoded once per plan (encodePlan) however many
 * workers receive it; the worker keeps the last plan it was sent, and later runs of that plan name
 * it by `planId` alone.
 */
export interface PoolTask {
  readonly kind: 'task';
  readonly id: number;
  readonly planId: number;
  /** The plan as encodePlan gives it, or null when the worker already holds plan `planId`. */
  readonly plan: string | null;
  readonly policyIndex: number;
}

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
    await runOnWorkers(
      tasks,
      Math.min(jobCount, tasks.length),
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

/** Hand the tasks to `threads` workers, biggest first, the next one to whichever worker is free. */
function runOnWorkers(
  tasks: readonly Task[],
  threads: number,
  prestarted: readonly Worker[],
  onResult: (id: number, run: PlannedPolicyRun) => void,
  onProgress: (id: number, eventsDone: number, eventsTotal: number, finished: boolean) => void,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const workers: Worker[] = [];
    /** Per worker: the plan it holds (the last one sent to it). */
    const held = new Map<Worker, ComparePlan>();
    /** Per plan: its serialized form, made when the first worker needs it, dropped after its last run is sent. */
    const serialized = new Map<ComparePlan, string>();
    const undispatched = new Map<ComparePlan, number>();
    for (const t of tasks) undispatched.set(t.plan, (undispatched.get(t.plan) ?? 0) + 1);
    const serializedPlan = (plan: ComparePlan): string => {
      let text = serialized.get(plan);
      if (text === undefined) {
        text = encodePlan(plan);
        serialized.set(plan, text);
      }
      return text;
    };
    const planIds = new Map<ComparePlan, number>();
    for (const t of tasks) if (!planIds.has(t.plan)) planIds.set(t.plan, planIds.size);
    const weights = new Map<ComparePlan, number>();
    for (const t of tasks) if (!weights.has(t.plan)) weights.set(t.plan, taskWeight(t.plan));
    const order = tasks
      .map((t, id) => ({ id, weight: weights.get(t.plan) ?? 0 }))
      .sort((a, b) => b.weight - a.weight || a.id - b.id)
      .map((x) => x.id);
    let next = 0;
    let finished = 0;
    let failed = false;
    const stopAll = () => {
      for (const w of workers) void w.terminate();
    };
    const fail = (error: Error) => {
      if (failed) return;
      failed = true;
      stopAll();
      reject(error);
    };
    const give = (w: Worker) => {
      if (next >= order.length) return;
      const id = order[next++];
      const t = tasks[id];
      const plan = held.get(w) === t.plan ? null : serializedPlan(t.plan);
      const left = (undispatched.get(t.plan) ?? 1) - 1;
      undispatched.set(t.plan, left);
      if (left === 0) serialized.delete(t.plan);
      held.set(w, t.plan);
      const planId = planIds.get(t.plan) ?? -1;
      w.postMessage({ kind: 'task', id, planId, plan, policyIndex: t.policyIndex } satisfies PoolTask);
    };
    for (const w of prestarted.slice(threads)) void w.terminate();
    for (let i = 0; i < threads; i++) {
      const w = prestarted[i] ?? newPoolWorker();
      workers.push(w);
      w.on('message', (m: PoolReply) => {
        if (failed) return;
        if (m.kind === 'progress') onProgress(m.id, m.eventsDone, m.eventsTotal, false);
        else if (m.kind === 'error') {
          const e = new Error(m.message);
          e.stack = m.stack;
          fail(e);
        } else {
          onResult(m.id, m.run);
          const events = planEvents(tasks[m.id].plan);
          onProgress(m.id, events, events, true);
          finished++;
          if (finished === tasks.length) {
            stopAll();
            resolve();
          } else give(w);
        }
      });
      w.on('error', (e) => fail(e));
      w.on('exit', (code) => {
        if (!failed && finished < tasks.length)
          fail(new Error(`a compare worker thread stopped (exit code ${code})`));
      });
      give(w);
    }
  });
}
