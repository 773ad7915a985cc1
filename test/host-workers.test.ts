/**
 * Several worker_threads share one host arena: each JITs functions through its own Execmem on an
 * attached backend (same mappings, same page tables, same Atomics lock) and calls both its own
 * functions and the ones other workers published, while those workers keep updating the same
 * blocks. In mprotect mode that is exactly the hazard the reader/writer lock exists for: without
 * it, a call landing while the owner has its block RW+NX would kill the process with SIGSEGV.
 *
 * The workers run this same file (no separate fixture for the test runner to mistake for a test);
 * node:test is imported only on the main thread.
 */
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { Execmem } from '../src/execmem/execmem.js';
import { attachHost, genLinear, type HostShareHandle, openHost } from '../src/host/index.js';

const MiB = 1024 * 1024;
const WORKERS = 3;
const FUNCS_PER_WORKER = 150;
const CROSS_CALLS_PER_FUNC = 4;
/** Board layout per published function: va (f64), mul, add (i32). */
const SLOTS = WORKERS * FUNCS_PER_WORKER;

interface WorkerInput {
  readonly hostWorker: true;
  readonly index: number;
  readonly handle: HostShareHandle;
  readonly board: SharedArrayBuffer;
  readonly counts: SharedArrayBuffer;
}

interface WorkerResult {
  readonly index: number;
  readonly ownCalls: number;
  readonly crossCalls: number;
  readonly mismatches: number;
  readonly error: string | null;
}

function boardViews(board: SharedArrayBuffer) {
  return {
    va: new Float64Array(board, 0, SLOTS),
    params: new Int32Array(board, SLOTS * 8, SLOTS * 2),
  };
}

function expected(mul: number, add: number, a: number, b: number): number {
  return (Math.imul(a, mul) + b + add) | 0;
}

function runWorker(input: WorkerInput): WorkerResult {
  const h = attachHost(input.handle);
  const em = new Execmem(h);
  const { va: boardVa, params } = boardViews(input.board);
  // counts[i] = functions published by worker i; counts[WORKERS] = workers done calling.
  const counts = new Int32Array(input.counts);
  let ownCalls = 0;
  let crossCalls = 0;
  let mismatches = 0;
  const mine: number[] = [];
  try {
    for (let k = 0; k < FUNCS_PER_WORKER; k++) {
      const mul = input.index * 1000 + k + 1;
      const add = k * 7 - input.index;
      const va = em.allocVa('bpf', 24 + ((k * 13) % 200));
      em.updateVa(va, genLinear(mul, add));
      mine.push(va);
      const f = h.fn(va, 'int (int, int)');
      if (f(k, 3) !== expected(mul, add, k, 3)) mismatches++;
      ownCalls++;
      const slot = input.index * FUNCS_PER_WORKER + k;
      boardVa[slot] = va;
      params[2 * slot] = mul;
      params[2 * slot + 1] = add;
      Atomics.store(counts, input.index, k + 1);
      // Call what other workers published (they may be updating those very blocks now).
      for (let c = 0; c < CROSS_CALLS_PER_FUNC; c++) {
        const other = (input.index + 1 + ((k + c) % (WORKERS - 1))) % WORKERS;
        const n = Atomics.load(counts, other);
        if (n === 0) continue;
        const s = other * FUNCS_PER_WORKER + ((k * 31 + c * 17) % n);
        const g = h.fn(boardVa[s], 'int (int, int)');
        if (g(k, -5 - c) !== expected(params[2 * s], params[2 * s + 1], k, -5 - c)) mismatches++;
        crossCalls++;
      }
    }
    // Nobody frees until every worker has finished calling (the functions are shared).
    Atomics.add(counts, WORKERS, 1);
    while (Atomics.load(counts, WORKERS) < WORKERS)
      Atomics.wait(counts, WORKERS, Atomics.load(counts, WORKERS), 5);
    for (const va of mine) em.freeVa(va);
    em.shrink({ keepSpare: false });
    h.close();
    return { index: input.index, ownCalls, crossCalls, mismatches, error: null };
  } catch (e) {
    Atomics.add(counts, WORKERS, 1);
    return { index: input.index, ownCalls, crossCalls, mismatches, error: String((e as Error).stack ?? e) };
  }
}

if (!isMainThread && (workerData as WorkerInput | undefined)?.hostWorker) {
  parentPort!.postMessage(runWorker(workerData as WorkerInput));
} else if (isMainThread) {
  const { describe, test } = await import('node:test');
  const SELF = fileURLToPath(import.meta.url);

  describe('host arena shared by worker_threads', () => {
    for (const mode of ['dualmap', 'mprotect'] as const) {
      test(`${mode}: concurrent JIT-and-call from ${WORKERS} workers gives right answers`, async () => {
        const h = openHost({ mode, textReserveBytes: 64 * MiB, dataReserveBytes: 4 * MiB });
        try {
          const handle = h.share();
          const board = new SharedArrayBuffer(SLOTS * 8 + SLOTS * 2 * 4);
          const counts = new SharedArrayBuffer((WORKERS + 1) * 4);
          const results = await Promise.all(
            Array.from({ length: WORKERS }, (_, index) => {
              const input: WorkerInput = { hostWorker: true, index, handle, board, counts };
              const w = new Worker(SELF, { workerData: input });
              return new Promise<WorkerResult>((resolve, reject) => {
                w.once('message', resolve);
                w.once('error', reject);
                w.once('exit', (code) => {
                  if (code !== 0) reject(new Error(`worker ${index} exited with ${code}`));
                });
              });
            }),
          );
          for (const r of results) {
            assert.equal(r.error, null, `worker ${r.index}: ${r.error}`);
            assert.equal(r.mismatches, 0, `worker ${r.index} got wrong answers`);
            assert.equal(r.ownCalls, FUNCS_PER_WORKER);
          }
          const cross = results.reduce((n, r) => n + r.crossCalls, 0);
          assert.ok(cross > FUNCS_PER_WORKER, `only ${cross} cross-worker calls happened`);
          // Each worker mapped its own blocks in the shared reservation and released them.
          assert.equal(h.report().families[0].mappedBytes, 0);
          assert.equal(h.lock !== undefined, true);
        } finally {
          h.close();
        }
      });
    }
  });
}
