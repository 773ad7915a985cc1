/**
 * Batches in the replay engine (src/workloads/replay.ts; issue 12 item 1): for a design with
 * ExecAllocator.batch (ours), the consecutive write/finalize events of one module load and the
 * consecutive frees of one module's regions are each one batch; designs without it (the Linux
 * rows: their kernels write section by section) replay exactly as before the change. `mixed`
 * keeps a module's frees together in one segment, so they reach the replay as one run.
 *
 * The Linux figures below were recorded from the commit before batching existed (332c5bd,
 * `compare --workload modules-synthetic --scale 0.2 --json`); they must stay byte-identical. A
 * fidelity fix to a Linux row that moves them legitimately must update them and say so.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ExecmemType } from '../src/arch/types.js';
import { createMachine } from '../src/machine/machine.js';
import { runCompare } from '../src/metrics/compare.js';
import { POLICIES, POLICY_NAMES } from '../src/policies/index.js';
import type { AllocHint, ExecAllocator, ModuleSection } from '../src/policies/types.js';
import { mixed } from '../src/workloads/mixed.js';
import { modulesSynthetic } from '../src/workloads/modules.js';
import { replay } from '../src/workloads/replay.js';
import type { Trace, TraceEvent } from '../src/workloads/trace.js';

/** Wraps an allocator and logs each call with the batch it ran in (0 = none). */
class Recorder implements ExecAllocator {
  readonly log: { op: string; va: number; batch: number }[] = [];
  batches = 0;
  private current = 0;
  readonly batch?: (fn: () => void) => void;
  constructor(
    private readonly inner: ExecAllocator,
    withBatch: boolean,
  ) {
    if (withBatch) {
      this.batch = (fn) => {
        assert.equal(this.current, 0, 'batches do not nest in replay');
        this.current = ++this.batches;
        try {
          if (inner.batch !== undefined) inner.batch(fn);
          else fn();
        } finally {
          this.current = 0;
        }
      };
    }
  }
  get name(): string {
    return this.inner.name;
  }
  private note(op: string, va: number): void {
    this.log.push({ op, va, batch: this.current });
  }
  alloc(type: ExecmemType, sizeBytes: number, alignBytes?: number, hint?: AllocHint): number {
    return this.inner.alloc(type, sizeBytes, alignBytes, hint);
  }
  allocModule(sections: readonly ModuleSection[]): number[] {
    const vas = this.inner.allocModule
      ? this.inner.allocModule(sections)
      : sections.map((s) => this.inner.alloc(s.type, s.sizeBytes, s.alignBytes));
    return vas;
  }
  write(va: number, bytes: Uint8Array): void {
    this.note('write', va);
    this.inner.write(va, bytes);
  }
  finalize(va: number): void {
    this.note('finalize', va);
    this.inner.finalize(va);
  }
  seal(va: number): void {
    this.note('seal', va);
    this.inner.seal(va);
  }
  free(va: number): void {
    this.note('free', va);
    this.inner.free(va);
  }
  shrink(): void {
    this.inner.shrink();
  }
  usage(): { liveBytes: number; mappedBytes: number } {
    return this.inner.usage();
  }
}

/** Runs of write/finalize (one module's load) and of frees (one module's) in a trace. */
function expectedRuns(trace: Trace): { kind: 'load' | 'free'; ids: number[] }[] {
  const moduleOf = new Map<number, number>();
  for (const ev of trace.events)
    if (ev.op === 'alloc' && ev.module !== undefined) moduleOf.set(ev.id, ev.module);
  const kindOf = (ev: TraceEvent): 'load' | 'free' | null =>
    ev.op === 'write' || ev.op === 'finalize' ? 'load' : ev.op === 'free' ? 'free' : null;
  const runs: { kind: 'load' | 'free'; ids: number[]; module: number }[] = [];
  let last: (typeof runs)[number] | null = null;
  for (const ev of trace.events) {
    const kind = kindOf(ev);
    const module = kind !== null && 'id' in ev ? moduleOf.get(ev.id) : undefined;
    if (kind === null || module === undefined || !('id' in ev)) {
      last = null;
      continue;
    }
    if (last !== null && last.kind === kind && last.module === module) last.ids.push(ev.id);
    else {
      last = { kind, ids: [ev.id], module };
      runs.push(last);
    }
  }
  return runs;
}

test('replay: each module load (writes + finalizes) and each module free run is one batch for ours', () => {
  const trace = modulesSynthetic({ seed: 5, scale: 0.05 });
  const runs = expectedRuns(trace);
  assert.ok(
    runs.some((r) => r.kind === 'load' && r.ids.length >= 6),
    'loads with several writes',
  );
  assert.ok(
    runs.some((r) => r.kind === 'free' && r.ids.length >= 2),
    'unloads with several frees',
  );
  const m = createMachine({ memoryBytes: 2 ** 31, cpus: 2, seed: 5 });
  const ours = POLICIES.execmem.create(m, 5);
  assert.equal(typeof ours.batch, 'function', 'our adapter batches');
  const rec = new Recorder(ours, true);
  const r = replay(trace, rec, {}, { strict: true });
  assert.equal(r.failureCount, 0);
  assert.equal(rec.batches, runs.length, 'one batch per run');
  // Every write/finalize/free of a module region ran inside a batch, one batch per run, in order.
  const inRuns = rec.log.filter((e) => e.op !== 'seal');
  let k = 0;
  runs.forEach((run, index) => {
    for (let j = 0; j < run.ids.length; j++, k++) assert.equal(inRuns[k].batch, index + 1, `run ${index}`);
  });
  assert.equal(k, inRuns.length, 'nothing outside the runs');
  assert.ok(
    rec.log.filter((e) => e.op === 'seal').every((e) => e.batch === 0),
    'seals are not batched',
  );
  assert.equal(m.openedWriteSession(), null);
  assert.equal(m.wxViolationCount(), 0);
  const counters = ours.policyCounters();
  assert.equal(counters.batches, runs.length, 'execmem counted every batch');
});

test('replay: a module load costs our allocator one local flush for all its writes', () => {
  const trace = modulesSynthetic({ seed: 2, scale: 0.05 });
  for (const arch of ['x86_64', 'arm64'] as const) {
    const flushes = (batched: boolean): { local: number; broadcast: number } => {
      const m = createMachine({ arch, memoryBytes: 2 ** 31, cpus: 2, seed: 2 });
      const ours = POLICIES.execmem.create(m, 2);
      const c0 = { ...m.counters };
      replay(trace, new Recorder(ours, batched), {}, { strict: true });
      return {
        local: m.counters.localFlushes - c0.localFlushes,
        broadcast: m.counters.broadcastFlushes - c0.broadcastFlushes,
      };
    };
    const runs = expectedRuns(trace);
    const writesAndFills = trace.events.filter(
      (e) => e.op === 'write' || e.op === 'free' || e.op === 'finalize',
    ).length;
    const batched = flushes(true);
    const unbatched = flushes(false);
    assert.ok(batched.local < unbatched.local, `${arch}: batching saves flushes`);
    assert.ok(batched.local <= runs.length + 8, `${arch}: about one flush per run (${batched.local})`);
    assert.ok(unbatched.local <= writesAndFills, `${arch}: at most one per call without batches`);
    assert.equal(batched.broadcast, unbatched.broadcast, `${arch}: no write session broadcasts`);
  }
});

test('replay: the Linux designs have no batch() and their figures are unchanged (recorded before batching)', () => {
  for (const name of POLICY_NAMES) {
    if (name === 'execmem') continue;
    const p = POLICIES[name].create(createMachine({ memoryBytes: 2 ** 30, cpus: 2 }), 1);
    assert.equal(p.batch, undefined, `${name} must not batch: its kernel writes section by section`);
  }
  const keys = [
    'allFlushEvents',
    'localFlushes',
    'shootdowns',
    'broadcastFlushes',
    'ipis',
    'pokes',
    'permissionFlips',
    'mappedBytes',
    'itlbMisses',
    'directMapSplits',
    'modelledKernelTimeNs',
  ] as const;
  // Recorded at 332c5bd (before write sessions and batches), in the order of `keys`.
  const recorded: Record<'x86_64' | 'arm64', Record<string, number[]>> = {
    x86_64: {
      module_alloc: [407, 0, 407, 0, 1221, 0, 533, 1552384, 4116, 1, 512200],
      bpf_prog_pack: [407, 0, 407, 0, 1221, 0, 533, 1552384, 4116, 1, 512200],
      'jit_alloc-2023': [598, 230, 368, 0, 1104, 111, 414, 1544192, 4111, 1, 536574],
      'execmem-6.10': [382, 0, 382, 0, 1146, 0, 422, 1552384, 4116, 1, 490486],
      'execmem-rox': [990, 0, 990, 0, 2970, 0, 1245, 2813952, 228, 2, 911470],
      'execmem-rox-bpf': [990, 0, 990, 0, 2970, 0, 1245, 2813952, 228, 2, 911470],
    },
    arm64: {
      module_alloc: [1958, 0, 0, 1958, 0, 0, 533, 1552384, 4116, 0, 850752.6666666666],
      bpf_prog_pack: [1958, 0, 0, 1958, 0, 0, 533, 1552384, 4116, 0, 850752.6666666666],
      'jit_alloc-2023': [2371, 0, 0, 2371, 0, 111, 517, 1544192, 4111, 0, 995271.3333333334],
      'execmem-6.10': [2044, 0, 0, 2044, 0, 0, 533, 1552384, 4116, 0, 880852.6666666666],
      'execmem-rox': [2044, 0, 0, 2044, 0, 0, 533, 1552384, 4116, 0, 880852.6666666666],
      'execmem-rox-bpf': [2044, 0, 0, 2044, 0, 0, 533, 1552384, 4116, 0, 880852.6666666666],
    },
  };
  for (const arch of ['x86_64', 'arm64'] as const) {
    const r = runCompare({
      workload: 'modules-synthetic',
      scale: 0.2,
      arch,
      policies: Object.keys(recorded[arch]),
    });
    for (const p of r.policies) {
      assert.deepEqual(
        keys.map((k) => p.metrics[k]),
        recorded[arch][p.name],
        `${arch} ${p.name}: Linux figures moved`,
      );
    }
  }
});

test("mixed: a module's frees (its init frees, its unload) are consecutive events", () => {
  const t = mixed({ seed: 3, scale: 0.05 });
  const groupOf = new Map<number, string>();
  for (const ev of t.events) {
    if (ev.op === 'alloc' && ev.module !== undefined) groupOf.set(ev.id, `${ev.module}/${ev.init === true}`);
  }
  const at = new Map<string, number[]>();
  t.events.forEach((ev, i) => {
    if (ev.op !== 'free') return;
    const g = groupOf.get(ev.id);
    if (g !== undefined) at.set(g, [...(at.get(g) ?? []), i]);
  });
  let several = 0;
  for (const [g, idx] of at) {
    if (idx.length > 1) several++;
    for (let k = 1; k < idx.length; k++) assert.equal(idx[k], idx[k - 1] + 1, `frees of ${g} split apart`);
  }
  assert.ok(several > 5, `groups with several frees were found (${several})`);
});
