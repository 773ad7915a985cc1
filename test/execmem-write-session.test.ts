/**
 * execmem's writes through the machine's write session (issue 12 item 1; src/execmem/writer.ts,
 * src/execmem/sim-backend.ts, src/machine/write-session.ts): every update and every free's trap
 * fill is one session (one local flush, however many pages), and a batch() of N updates and M
 * frees is ONE session, closed when the batch ends, also when its callback throws. The guarantees
 * stay: the bytes (and the trap fill) are in memory when each call returns, the W^X audit stays at
 * 0, and a call that fails inside an open session (an injected fault) changes nothing. Those tests
 * run with fillOnFree 'immediate'; the default, a free's trap fill queued for the next session
 * (src/execmem/fills.ts), is tested at the end.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ArchName } from '../src/arch/types.js';
import { ExecmemError } from '../src/execmem/errors.js';
import { Execmem } from '../src/execmem/execmem.js';
import { FILL_DELAY_CALLS, FILL_QUEUE_RUNS } from '../src/execmem/limits.js';
import { SimBackend } from '../src/execmem/sim-backend.js';
import { formatStats } from '../src/execmem/stats.js';
import { createMachine, type Machine } from '../src/machine/machine.js';
import type { MachineCounters } from '../src/machine/types.js';
import { writeSessionWindow } from '../src/machine/write-session.js';
import { simProbe } from './helpers/sim-probe.js';

const GIB = 2 ** 30;
const PAGE = 4096;

function world(arch: ArchName, fillOnFree: 'deferred' | 'immediate' = 'immediate') {
  const m = createMachine({ arch, memoryBytes: GIB, cpus: 4, seed: 1 });
  const em = new Execmem(new SimBackend(m), { seed: 1, fillOnFree });
  return { m, em };
}

function code(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 13 + seed) & 0x7f;
  return b;
}

function delta(m: Machine, fn: () => void): Record<keyof MachineCounters, number> {
  const c0 = { ...m.counters };
  fn();
  const out = {} as Record<keyof MachineCounters, number>;
  for (const k of Object.keys(c0) as (keyof MachineCounters)[]) out[k] = m.counters[k] - c0[k];
  return out;
}

function assertNoSession(m: Machine): void {
  assert.equal(m.openedWriteSession(), null, 'no session left open');
  const w = writeSessionWindow(m.arch)!;
  for (let va = w.start; va < w.end; va += PAGE) assert.equal(m.writeSessionLeaf(va), null);
  for (const t of m.tlbs) assert.equal(t.overlapping(w.start, w.end - w.start).length, 0);
}

function isTrap(m: Machine, bytes: Uint8Array): boolean {
  const pat = m.arch.trapPattern;
  return bytes.every((b, i) => b === pat[i % pat.length]);
}

for (const arch of ['x86_64', 'arm64'] as const) {
  test(`execmem ${arch}: an update is one session: one local flush whatever its length, no broadcast`, () => {
    const { m, em } = world(arch);
    const big = em.allocVa('module_text', 40 * PAGE);
    const small = em.allocVa('bpf', 300);
    for (const [va, n] of [
      [small, 300],
      [big, 40 * PAGE],
      [big + 100, 9 * PAGE],
    ] as const) {
      const d = delta(m, () => em.updateVa(va, code(n, 1)));
      assert.equal(d.localFlushes, 1, `${n} bytes: one flush (Linux: one per 2-page step / fixmap page)`);
      assert.equal(d.broadcastFlushes + d.shootdowns + d.ipis, 0);
      assert.deepEqual(em.readVa(va, n), code(n, 1));
      assertNoSession(m);
    }
    const d = delta(m, () => em.freeVa(small));
    assert.equal(d.localFlushes, 1, "a free's trap fill is one session");
    assert.equal(m.wxViolationCount(), 0);
  });

  test(`execmem ${arch}: a batch of N updates and M frees costs one session; outside a batch N + M`, () => {
    for (const batched of [true, false]) {
      const { m, em } = world(arch);
      // Allocate (and grow the pools) first, so the counted work is only writes and frees.
      const texts = Array.from({ length: 6 }, (_, k) => em.allocVa('module_text', 3000 + k * 5000));
      const rodata = Array.from({ length: 3 }, () => em.allocVa('module_rodata', 2000));
      const doomed = Array.from({ length: 5 }, () => em.allocVa('bpf', 700));
      for (const va of doomed) em.updateVa(va, code(700, 9));
      const work = (): void => {
        texts.forEach((va, k) => {
          em.updateVa(va, code(3000 + k * 5000, k));
        });
        rodata.forEach((va, k) => {
          em.updateVa(va, code(2000, 40 + k));
        });
        for (const va of doomed) {
          em.freeVa(va);
          // The trap fill is in memory before free returns (only the alias teardown waits).
          assert.ok(isTrap(m, simProbe(m).raw(va, 700)), 'trap-filled when free returned');
        }
        if (batched) assert.notEqual(m.openedWriteSession(), null, 'the session is held open');
      };
      const d = delta(m, () => (batched ? em.batch(work) : work()));
      const n = texts.length + rodata.length;
      const writes = n + doomed.length;
      assert.equal(d.localFlushes, batched ? 1 : writes, batched ? 'one session' : 'one per call');
      assert.equal(d.broadcastFlushes + d.shootdowns + d.ipis, 0);
      assert.equal(d.pokes, writes);
      assert.equal(d.pokeSteps, writes, 'one switch into the session mm per write');
      assert.equal(d.icacheFlushes, arch === 'arm64' ? writes : 0);
      texts.forEach((va, k) => {
        assert.deepEqual(em.readVa(va, 3000 + k * 5000), code(3000 + k * 5000, k));
      });
      assertNoSession(m);
      assert.equal(m.wxViolationCount(), 0);
      assert.equal(m.wxFullScan().length, 0);
      em.audit();
      m.checkConsistency();
    }
  });

  test(`execmem ${arch}: a throwing batch still closes the session; its writes stay made`, () => {
    const { m, em } = world(arch);
    const a = em.allocVa('module_text', 5 * PAGE);
    const b = em.allocVa('bpf', 100);
    const d = delta(m, () => {
      assert.throws(
        () =>
          em.batch(() => {
            em.updateVa(a, code(5 * PAGE, 3));
            em.freeVa(b);
            throw new Error('the caller failed half way');
          }),
        /half way/,
      );
    });
    assert.equal(d.localFlushes, 1, 'the session ended (unmap + one flush) when the batch unwound');
    assertNoSession(m);
    assert.deepEqual(em.readVa(a, 5 * PAGE), code(5 * PAGE, 3));
    // A failed call inside the batch (ERANGE) does not leave the session open either.
    assert.throws(
      () =>
        em.batch(() => {
          em.updateVa(a, code(10, 1));
          em.updateVa(a, code(6 * PAGE, 1));
        }),
      (e: unknown) => e instanceof ExecmemError && e.code === 'ERANGE',
    );
    assertNoSession(m);
    assert.deepEqual(em.readVa(a, 10), code(10, 1));
    // The next update is a session of its own.
    assert.equal(
      delta(m, () => em.updateVa(a, code(PAGE, 4))).localFlushes,
      1,
      'sessions work after a throwing batch',
    );
    em.audit();
    m.checkConsistency();
  });

  test(`execmem ${arch}: a call failing inside an open session (injected fault) changes nothing`, () => {
    const { m, em } = world(arch);
    const text = em.allocVa('module_text', 2 * PAGE);
    const sealed = em.allocVa('module_ro_after_init', 3 * PAGE);
    em.sealVa(sealed);
    const big = em.allocVa('kprobes', 3 * 2 ** 20); // its own mapping: freeing it vfrees it
    const state = (): string =>
      JSON.stringify({
        stats: em.stats().types,
        acct: m.frameAccounting(),
        areas: m.areas().map((x) => [x.va, x.sizeBytes]),
        wx: m.wxViolationCount(),
        mapped: m.openedWriteSession()?.mappedPageCount,
        text: Array.from(em.readVa(text, 2 * PAGE)),
      });
    let injected = 0;
    em.batch(() => {
      em.updateVa(text, code(2 * PAGE, 7));
      for (const victim of [sealed, big]) {
        for (let nth = 1; nth <= 8; nth++) {
          const before = state();
          m.phys.injectFailure(0, nth);
          try {
            em.freeVa(victim);
            break; // succeeded: the fault fell beyond the call's allocations
          } catch (e) {
            assert.ok(e instanceof ExecmemError && e.code === 'ENOMEM', String(e));
            injected++;
          } finally {
            m.phys.clearInjectedFailures();
          }
          assert.equal(state(), before, `a failed free (fault #${nth}) changed state`);
          assert.notEqual(m.openedWriteSession(), null, 'the session is still open');
        }
      }
      em.updateVa(text + 10, code(20, 8));
    });
    assert.ok(injected > 0 || arch === 'arm64', `faults were injected (${injected})`);
    assertNoSession(m);
    assert.deepEqual(em.readVa(text + 10, 20), code(20, 8));
    assert.equal(m.wxViolationCount(), 0);
    em.audit();
    m.checkConsistency();
  });

  test(`execmem ${arch}: freeing a large object the session maps ends the chunk before the vfree`, () => {
    const { m, em } = world(arch);
    const big = em.allocVa('module_text', 3 * 2 ** 20);
    const small = em.allocVa('module_text', 100);
    const d = delta(m, () =>
      em.batch(() => {
        em.updateVa(big, code(8 * PAGE, 2));
        em.updateVa(small, code(100, 2));
        em.freeVa(big); // its pages are in the window: torn down (one flush), then vfree
        em.updateVa(small, code(50, 3));
      }),
    );
    assert.equal(d.localFlushes, 2, 'the chunk ended early once, the end of the session once more');
    assertNoSession(m);
    assert.deepEqual(em.readVa(small, 50), code(50, 3));
    m.checkConsistency();
  });
}

test('execmem generic: no alias, no session; batch() still opens each block once', () => {
  const { m, em } = world('generic');
  const a = em.allocVa('module_text', 100);
  const b = em.allocVa('module_text', 100);
  const d = delta(m, () =>
    em.batch(() => {
      em.updateVa(a, code(100, 1));
      em.updateVa(b, code(100, 1));
    }),
  );
  assert.equal(d.cpaCalls, 2, 'one window: opened and closed once');
  assert.equal(d.pokes, 0);
  assert.equal(m.openedWriteSession(), null);
});

for (const arch of ['x86_64', 'arm64'] as const) {
  test(`execmem ${arch} deferred fills: a free queues its trap fill; the next update writes it in its session`, () => {
    const { m, em } = world(arch, 'deferred');
    const a = em.allocVa('bpf', 700);
    const b = em.allocVa('bpf', 700);
    em.updateVa(a, code(700, 1));
    em.updateVa(b, code(700, 2));
    const pending = (): number => Object.values(em.stats().pools).reduce((n, p) => n + p.pendingFillBytes, 0);
    const live0 = em.stats().types.bpf.liveBytes;
    const d1 = delta(m, () => em.freeVa(a));
    assert.equal(d1.localFlushes + d1.pokes, 0, 'the free opened no session');
    assert.equal(pending(), 704, 'the run waits, granule-rounded');
    // The text table shows it in its own column (1 kB, rounded), beside free_kB.
    const lines = formatStats(em.stats()).split('\n');
    const col = lines[1].trim().split(/\s+/).indexOf('pend_kB');
    const bpfPool = em.stats().types.bpf.pool;
    const bpfRow = lines
      .find((l) => l.trim().startsWith(`${bpfPool} `))!
      .trim()
      .split(/\s+/);
    assert.equal(bpfRow[col], '1');
    assert.equal(em.stats().types.bpf.liveBytes, live0 - 704, 'and is no longer live');
    assert.deepEqual(simProbe(m).raw(a, 700), code(700, 1), 'the old code is still in place (the window)');
    // A freed pointer is free to every lookup, however its fill waits.
    assert.throws(
      () => em.sizeOfVa(a),
      (e: unknown) => e instanceof ExecmemError && e.code === 'EFREE',
    );
    assert.throws(
      () => em.freeVa(a),
      (e: unknown) => e instanceof ExecmemError && e.code === 'EFREE',
    );
    assert.throws(
      () => em.updateVa(a, code(4, 1)),
      (e: unknown) => e instanceof ExecmemError && e.code === 'EFREE',
    );
    const d2 = delta(m, () => em.updateVa(b, code(700, 3)));
    assert.equal(d2.localFlushes, 1, 'the update and the queued fill: one session');
    assert.equal(d2.pokes, 2);
    assert.ok(isTrap(m, simProbe(m).raw(a, 700)), 'trap-filled by the update');
    assert.equal(pending(), 0);
    assert.throws(
      () => m.fetch(1, a, 4),
      (e: unknown) => e instanceof Error && /trap/.test(String(e)),
    );
    assert.deepEqual(em.readVa(b, 700), code(700, 3));
    assertNoSession(m);
    assert.equal(m.wxViolationCount(), 0);
    em.audit();
  });

  test(`execmem ${arch} deferred fills: bounded in runs and in calls; read, shrink and batch take them along`, () => {
    const { m, em } = world(arch, 'deferred');
    const vas = Array.from({ length: FILL_QUEUE_RUNS }, () => em.allocVa('bpf', 100));
    for (const va of vas) em.updateVa(va, code(100, 5));
    // Runs: the free that fills the queue writes every fill, in one session.
    const frees = vas.map((va) => delta(m, () => em.freeVa(va)).localFlushes);
    assert.deepEqual(frees, [...Array(FILL_QUEUE_RUNS - 1).fill(0), 1]);
    for (const va of vas) assert.ok(isTrap(m, simProbe(m).raw(va, 100)));
    // Calls: a queued fill is written once it has waited FILL_DELAY_CALLS allocator calls.
    const c = em.allocVa('module_text', 100);
    em.freeVa(c);
    const data: number[] = [];
    const flushes: number[] = [];
    for (let i = 0; i < FILL_DELAY_CALLS; i++) {
      flushes.push(delta(m, () => data.push(em.allocVa('module_data', 64))).localFlushes);
    }
    assert.equal(
      flushes.slice(0, -1).reduce((s, f) => s + f, 0),
      0,
      'no session before the delay',
    );
    assert.equal(flushes.at(-1), 1, 'the due fill: one session');
    assert.ok(isTrap(m, simProbe(m).raw(c, 100)));
    // read(): an inspection of a queued run shows its trap fill (written first); of others, nothing.
    const r = em.allocVa('module_text', 100);
    const keep = em.allocVa('module_text', 100);
    em.updateVa(r, code(100, 7));
    em.updateVa(keep, code(100, 8));
    em.freeVa(r);
    assert.equal(delta(m, () => em.readVa(keep, 100)).localFlushes, 0);
    const dr = delta(m, () => assert.ok(isTrap(m, em.readVa(r, 100))));
    assert.equal(dr.localFlushes, 1);
    // batch(): queued fills ride in the batch's session.
    em.freeVa(keep);
    const s = em.allocVa('module_text', 100);
    const db = delta(m, () => em.batch(() => em.updateVa(s, code(100, 9))));
    assert.equal(db.localFlushes, 1, 'the batch session took the queued fill along');
    assert.ok(isTrap(m, simProbe(m).raw(keep, 100)));
    // shrink(): fills first, so the blocks they empty can go.
    em.freeVa(s);
    for (const va of data) em.freeVa(va);
    em.shrink({ keepSpare: false });
    assert.equal(
      Object.values(em.stats().pools).reduce((n, p) => n + p.mappedBytes, 0),
      0,
      'nothing left mapped',
    );
    assertNoSession(m);
    assert.equal(m.wxViolationCount(), 0);
    em.audit();
    m.checkConsistency();
  });
}
