/**
 * Threads that die holding the arena (issue 16, item 4): a worker terminated inside batch(),
 * inside mapBlock, unmapBlock or protect (a test hook stops it exactly between a system call and
 * the table update), or inside a call's shared hold. After each death the survivor must make
 * progress within a bound, /proc/self/maps must show no W+X mapping of the arena, the kernel's
 * protections must agree with the shared page tables page by page, the survivor's code must still
 * run, and the dead thread's blocks must be reclaimable. A live holder that never lets go must be
 * a typed ETIMEDOUT, a wait on oneself an immediate EDEADLK: nothing hangs.
 *
 * Then the random version: two workers share one arena under churn (alloc/update/call/free,
 * batches), one is terminated at a random moment, repeatedly.
 *
 * The workers run this same file (as host-workers.test.ts does); node:test is imported only on
 * the main thread.
 */
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { BackendError } from '../src/execmem/backend.js';
import { ExecmemError } from '../src/execmem/errors.js';
import { Execmem } from '../src/execmem/execmem.js';
import {
  attachHost,
  genConst,
  genLinear,
  type HostBackend,
  type HostFaultPoint,
  type HostShareHandle,
  openHost,
  readMaps,
} from '../src/host/index.js';

const MiB = 1024 * 1024;
/** The survivor must move on within this bound after a death (recovery, not the lock timeout). */
const SURVIVE_MS = 3000;
/** The arenas' lock timeout: longer than SURVIVE_MS, so passing proves recovery, not a timeout. */
const LOCK_TIMEOUT_MS = 8000;

type Scenario = 'batch' | HostFaultPoint;

interface VictimInput {
  readonly role: 'victim';
  readonly handle: HostShareHandle;
  readonly scenario: Scenario;
}

interface ChurnInput {
  readonly role: 'churn';
  readonly handle: HostShareHandle;
  readonly index: number;
  readonly seed: number;
  /** [0] stop flag, [1 + index] operations done by worker index. */
  readonly shared: SharedArrayBuffer;
}

interface ChurnResult {
  readonly ops: number;
  readonly calls: number;
  readonly mismatches: number;
  readonly error: string | null;
}

function blockForever(): never {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
  throw new Error('unreachable');
}

/** Set up one live function, then enter the scenario's critical section, say so, and stop there. */
function runVictim(input: VictimInput): void {
  let armed = false;
  const stop = (): never => {
    parentPort!.postMessage({ t: 'in' });
    return blockForever();
  };
  const h = attachHost(input.handle, {
    faultHook: (point) => {
      if (armed && point === input.scenario) stop();
    },
  });
  const em = new Execmem(h);
  const va = em.allocVa('bpf', 64);
  em.updateVa(va, genConst(7));
  switch (input.scenario) {
    case 'batch':
      em.batch(() => {
        em.updateVa(va, genConst(8));
        stop();
      });
      break;
    case 'map:populated':
      armed = true;
      em.allocVa('module_data', 64);
      break;
    case 'unmap:released': {
      const big = em.allocVa('bpf', 3 * MiB);
      armed = true;
      em.freeVa(big);
      break;
    }
    case 'protect:view':
      armed = true;
      em.allocVa('module_rodata', 64);
      break;
    case 'protect:alias': {
      const r = em.allocVa('module_ro_after_init', 100);
      armed = true;
      em.sealVa(r);
      break;
    }
    case 'call:shared': {
      const f = h.fn(va, 'int (void)');
      armed = true;
      f();
      break;
    }
  }
  parentPort!.postMessage({ t: 'missed' });
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** Alloc/update/call/free until told to stop; then check every live function, free all, close. */
function runChurn(input: ChurnInput): ChurnResult {
  const shared = new Int32Array(input.shared);
  const rnd = mulberry32(input.seed);
  let ops = 0;
  let calls = 0;
  let mismatches = 0;
  const live: { va: number; mul: number; add: number }[] = [];
  try {
    const h = attachHost(input.handle);
    const em = new Execmem(h);
    const jit = (): void => {
      const mul = 1 + Math.floor(rnd() * 1000);
      const add = Math.floor(rnd() * 100000) - 50000;
      const va = em.allocVa('bpf', 14 + Math.floor(rnd() * 300));
      em.updateVa(va, genLinear(mul, add));
      live.push({ va, mul, add });
    };
    const call = (l: { va: number; mul: number; add: number }, a: number): void => {
      const got = h.fn(l.va, 'int (int, int)')(a, 3);
      if (got !== ((Math.imul(a, l.mul) + 3 + l.add) | 0)) mismatches++;
      calls++;
    };
    while (Atomics.load(shared, 0) === 0) {
      const r = rnd();
      if (r < 0.45) {
        em.batch(() => {
          for (let k = 1 + Math.floor(rnd() * 4); k > 0; k--) jit();
          if (live.length > 8) em.freeVa(live.splice(Math.floor(rnd() * live.length), 1)[0].va);
        });
      } else if (r < 0.75 || live.length === 0) {
        jit();
      } else {
        em.freeVa(live.splice(Math.floor(rnd() * live.length), 1)[0].va);
      }
      for (let c = 0; c < 2 && live.length > 0; c++) call(live[Math.floor(rnd() * live.length)], ops + c);
      if (live.length > 60) em.freeVa(live.shift()!.va);
      if (ops % 50 === 49) em.shrink();
      ops++;
      Atomics.store(shared, 1 + input.index, ops);
    }
    for (const l of live) call(l, -7);
    for (const l of live) em.freeVa(l.va);
    em.shrink({ keepSpare: false });
    h.close();
    return { ops, calls, mismatches, error: null };
  } catch (e) {
    return { ops, calls, mismatches, error: String((e as Error).stack ?? e) };
  }
}

if (!isMainThread && (workerData as { role?: string } | undefined)?.role === 'victim') {
  runVictim(workerData as VictimInput);
} else if (!isMainThread && (workerData as { role?: string } | undefined)?.role === 'churn') {
  parentPort!.postMessage({ t: 'done', result: runChurn(workerData as ChurnInput) });
} else if (isMainThread) {
  const { describe, test } = await import('node:test');
  const SELF = fileURLToPath(import.meta.url);
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  const open = (mode: 'dualmap' | 'mprotect', lockTimeoutMs = LOCK_TIMEOUT_MS): HostBackend =>
    openHost({ mode, textReserveBytes: 64 * MiB, dataReserveBytes: 16 * MiB, lockTimeoutMs });

  const codeOf = (fn: () => unknown): string => {
    try {
      fn();
    } catch (e) {
      if (e instanceof BackendError || e instanceof ExecmemError) return e.code;
      throw e;
    }
    return 'no error';
  };

  /** Start a victim and wait until it is stopped inside its critical section. */
  const startVictim = async (h: HostBackend, scenario: Scenario): Promise<Worker> => {
    const input: VictimInput = { role: 'victim', handle: h.share(), scenario };
    const w = new Worker(SELF, { workerData: input });
    const said = await new Promise<string>((resolve, reject) => {
      w.once('message', (m: { t: string }) => resolve(m.t));
      w.once('error', reject);
    });
    assert.equal(said, 'in', `the victim never reached ${scenario}`);
    return w;
  };

  const assertNoWx = (h: HostBackend): void => {
    const ranges = h.report().families.flatMap((f) => {
      const out = [Number.parseInt(f.viewBase, 16)];
      if (f.aliasBase !== null) out.push(Number.parseInt(f.aliasBase, 16));
      return out.map((start) => ({ start, end: start + f.capacityBytes }));
    });
    for (const m of readMaps()) {
      if (!ranges.some((r) => m.start < r.end && m.end > r.start)) continue;
      assert.ok(
        !(m.perms[1] === 'w' && m.perms[2] === 'x'),
        `W+X mapping of the arena: ${JSON.stringify(m)}`,
      );
    }
  };

  /** The owner's own work after a death: a new block (arena lock), an update, a call. */
  const ownerWorks = (h: HostBackend, em: Execmem, k: number): number => {
    const big = em.allocVa('bpf', 3 * MiB);
    em.updateVa(big, genLinear(k, 1));
    const got = h.fn(big, 'int (int, int)')(2, 3);
    assert.equal(got, 2 * k + 3 + 1);
    return big;
  };

  /** Everything the arena must look like once no thread is changing it. */
  const assertHealthy = (h: HostBackend): void => {
    assertNoWx(h);
    assert.deepEqual(h.auditProtections(), [], 'kernel protections and page tables disagree');
    const s = h.lockState();
    assert.equal(s.holder, null, 'lock still held');
    assert.equal(s.readers, 0, 'a reader left behind');
    assert.equal(s.journalOp, 0, 'a journal left open');
  };

  const DEATHS: Record<'dualmap' | 'mprotect', Scenario[]> = {
    dualmap: ['batch', 'map:populated', 'unmap:released', 'protect:view', 'protect:alias'],
    mprotect: ['batch', 'map:populated', 'unmap:released', 'protect:view', 'call:shared'],
  };

  for (const mode of ['dualmap', 'mprotect'] as const) {
    describe(`host arena: a thread that dies holding it (${mode})`, () => {
      for (const scenario of DEATHS[mode]) {
        test(`terminated inside ${scenario}: the owner goes on, protections are consistent, nothing is W+X`, async () => {
          const h = open(mode);
          let victim: Awaited<ReturnType<typeof startVictim>> | null = null;
          try {
            const em = new Execmem(h);
            const mine = em.allocVa('bpf', 64);
            em.updateVa(mine, genConst(41));
            const f = h.fn(mine, 'int (void)');
            victim = await startVictim(h, scenario);
            const holdsExclusive =
              scenario !== 'call:shared' && !(mode === 'dualmap' && scenario === 'batch');
            if (holdsExclusive) assert.notEqual(h.lockState().holder, null, 'the victim holds the lock');
            await victim.terminate();
            victim = null;
            const t0 = performance.now();
            const big = ownerWorks(h, em, 5);
            const took = performance.now() - t0;
            assert.ok(took < SURVIVE_MS, `the owner needed ${took.toFixed(0)} ms after the death`);
            assert.equal(f(), 41, "the owner's code still runs");
            const s = h.lockState();
            if (holdsExclusive) assert.ok(s.recoveries >= 1, 'the dead holder was taken over');
            if (scenario === 'call:shared') assert.ok(s.readerResets >= 1, 'the dead reader was cleared');
            assertHealthy(h);
            // The dead thread's blocks are found and released; then only the owner's remain.
            const reclaimed = h.reclaimDead();
            assert.ok(reclaimed >= 4096, `reclaimed ${reclaimed} bytes`);
            assert.equal(h.lockState().slotsInUse, 1);
            em.freeVa(big);
            em.freeVa(mine);
            em.shrink({ keepSpare: false });
            assert.deepEqual(
              h.report().families.map((x) => x.mappedBytes),
              [0, 0],
            );
            assertHealthy(h);
          } finally {
            await victim?.terminate(); // a failed assertion must not leave the victim alive
            h.close();
          }
        });
      }

      test('a live holder that never lets go: ETIMEDOUT within the bound, nothing changed', async () => {
        const h = open(mode, 300);
        let victim: Awaited<ReturnType<typeof startVictim>> | null = null;
        try {
          const em = new Execmem(h);
          victim = await startVictim(h, 'map:populated');
          const before = JSON.stringify(h.report().families);
          const t0 = performance.now();
          const code =
            mode === 'mprotect'
              ? codeOf(() => em.allocVa('bpf', 64))
              : codeOf(() =>
                  h.mapBlock({
                    type: 'bpf',
                    range: { start: 0, end: 0 },
                    fallback: null,
                    sizeBytes: 4096,
                    alignBytes: 4096,
                    huge: false,
                  }),
                );
          const took = performance.now() - t0;
          assert.equal(code, 'ETIMEDOUT');
          assert.ok(took >= 250 && took < SURVIVE_MS, `timed out after ${took.toFixed(0)} ms`);
          assert.equal(JSON.stringify(h.report().families), before);
          await victim.terminate();
          victim = null;
          ownerWorks(h, em, 3);
          assertHealthy(h);
        } finally {
          // A failed assertion above must not leave the holder alive: the file would never exit.
          await victim?.terminate();
          h.close();
        }
      });
    });
  }

  describe('host arena: waits that could only end by this thread never start', () => {
    test('mprotect: another backend of the same thread holding the lock is EDEADLK at once', () => {
      const h = open('mprotect');
      const h2 = attachHost(h.share());
      try {
        const b = h2.mapBlock({
          type: 'bpf',
          range: { start: 0, end: 0 },
          fallback: null,
          sizeBytes: 4096,
          alignBytes: 4096,
          huge: false,
        });
        h.lock.acquire();
        const t0 = performance.now();
        try {
          assert.equal(
            codeOf(() => h2.protect(b, b.va, 4096, 'rox')),
            'EDEADLK',
          );
          assert.equal(
            codeOf(() => h2.lock.acquire()),
            'EDEADLK',
          );
        } finally {
          h.lock.release();
        }
        assert.ok(performance.now() - t0 < 1000, 'refused without waiting');
        assert.equal(h2.protAt(b.va), 'rw', 'nothing changed');
        h2.protect(b, b.va, 4096, 'rox');
        assert.equal(h2.protAt(b.va), 'rox');
        assert.equal(
          codeOf(() => h.close()),
          'no error',
        );
      } finally {
        h2.close();
        h.close();
      }
    });
  });

  const ROUNDS = 6;
  for (const mode of ['dualmap', 'mprotect'] as const) {
    test(`${mode}: two workers churn one arena, one is terminated at a random moment (${ROUNDS} rounds)`, async (t) => {
      const h = open(mode);
      const rnd = mulberry32(mode === 'dualmap' ? 11 : 12);
      let recoveries = 0;
      try {
        for (let round = 0; round < ROUNDS; round++) {
          const shared = new SharedArrayBuffer(3 * 4);
          const words = new Int32Array(shared);
          const start = (index: number): { w: Worker; done: Promise<ChurnResult> } => {
            const input: ChurnInput = {
              role: 'churn',
              handle: h.share(),
              index,
              seed: round * 2 + index + 1,
              shared,
            };
            const w = new Worker(SELF, { workerData: input });
            const done = new Promise<ChurnResult>((resolve, reject) => {
              w.on('message', (m: { t: string; result: ChurnResult }) => {
                if (m.t === 'done') resolve(m.result);
              });
              w.once('error', reject);
            });
            return { w, done };
          };
          const victim = start(0);
          const survivor = start(1);
          const t0 = performance.now();
          while (Atomics.load(words, 1) < 5 || Atomics.load(words, 2) < 5) {
            assert.ok(performance.now() - t0 < 10_000, 'the workers never got going');
            await sleep(2);
          }
          await sleep(Math.floor(rnd() * 40));
          const before = h.lockState().recoveries + h.lockState().readerResets;
          await victim.w.terminate();
          const at = Atomics.load(words, 2);
          const t1 = performance.now();
          while (Atomics.load(words, 2) < at + 30) {
            const took = performance.now() - t1;
            assert.ok(
              took < SURVIVE_MS,
              `round ${round}: the survivor stalled (${at} ops, ${took.toFixed(0)} ms)`,
            );
            assertNoWx(h);
            await sleep(2);
          }
          Atomics.store(words, 0, 1);
          const r = await survivor.done;
          assert.equal(r.error, null, `round ${round}: ${r.error}`);
          assert.equal(r.mismatches, 0, `round ${round}: wrong answers`);
          assert.ok(r.calls > 0);
          await survivor.w.terminate();
          assertHealthy(h);
          recoveries += h.lockState().recoveries + h.lockState().readerResets - before;
          h.reclaimDead();
          assert.deepEqual(
            h.report().families.map((x) => x.mappedBytes),
            [0, 0],
            `round ${round}: blocks left after the survivor freed all and the dead one was reclaimed`,
          );
          assert.equal(h.lockState().slotsInUse, 1, `round ${round}: lock slots left`);
        }
        t.diagnostic(`${mode}: deaths while holding the lock, recovered: ${recoveries} of ${ROUNDS}`);
      } finally {
        h.close();
      }
    });
  }
}
