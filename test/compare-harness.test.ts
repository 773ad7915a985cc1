/**
 * The compare harness on every workload (scaled down for test speed) with every policy: W^X is 0
 * after every event for every design, the figures obey their definitions (overhead = mapped /
 * live, live bytes identical across designs, all flush events add up, the slowest design has
 * simulator speed ratio 1, occupancy
 * regions add up to the totals), and the designs differ where their sources say they must.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CompareError, type CompareResult, runCompare } from '../src/metrics/compare.js';
import { POLICY_NAMES, policyByName } from '../src/policies/index.js';
import { WORKLOADS } from '../src/workloads/registry.js';

const GIB = 1024 ** 3;
const SMALL = { memoryBytes: GIB, cpus: 2 } as const;

function small(workload: string): CompareResult {
  return runCompare({ workload, scale: 0.003, seed: 5, machine: SMALL, fetch: { callsScale: 0.01 } });
}

function byName(r: CompareResult, name: string) {
  const p = r.policies.find((x) => x.name === name);
  assert.ok(p, name);
  return p;
}

describe('compare: every policy on every workload', () => {
  for (const workload of Object.keys(WORKLOADS)) {
    it(`${workload}: W^X 0, no failures, consistent figures`, () => {
      const r = small(workload);
      assert.equal(r.workload, workload);
      assert.deepEqual(
        r.policies.map((p) => p.name),
        [...POLICY_NAMES],
      );
      const live = r.policies[0].metrics.liveBytes;
      let minRatio = Number.POSITIVE_INFINITY;
      for (const p of r.policies) {
        const m = p.metrics;
        // Only a Linux version that leaves W+X pages (PolicySpec.wxHoles: 5.17's BPF trampolines)
        // may show any, and only on a workload that makes them.
        if (p.wxHoles === null || !hasBpfTrampolines(workload)) {
          assert.equal(m.wxViolations, 0, `${p.name}: W^X max`);
          assert.equal(m.wxViolationsTotal, 0, `${p.name}: W^X total`);
        } else assert.ok(m.wxViolations > 0, `${p.name}: ${p.wxHoles}`);
        assert.equal(m.failures, 0, `${p.name}: ${JSON.stringify(p.failureSamples)}`);
        assert.equal(m.liveBytes, live, `${p.name}: same live bytes for every design`);
        if (live > 0) assert.equal(m.overhead, m.mappedBytes / live);
        assert.ok(m.largePageShare >= 0 && m.largePageShare <= 1);
        assert.ok(m.execLargeBytes <= m.execMappedBytes && m.execMappedBytes <= m.mappedBytes);
        assert.equal(
          m.ipis,
          m.shootdowns * (SMALL.cpus - 1),
          `${p.name}: one IPI per other CPU per shootdown`,
        );
        assert.equal(
          m.allFlushEvents,
          m.localFlushes + m.shootdowns + m.broadcastFlushes,
          `${p.name}: all flush events`,
        );
        assert.ok(p.kernel.length > 0, `${p.name}: names its kernel`);
        assert.equal(p.sameAs, policyByName(p.name).sameAs('x86_64'));
        assert.ok(m.fetches > 0, `${p.name}: the fetch model ran`);
        assert.ok(
          m.itlbMissesPerMillion >= m.itlbLowerBoundPerMillion,
          `${p.name}: misses >= compulsory bound`,
        );
        minRatio = Math.min(minRatio, m.simulatorOpsPerSecondRatio);
        // Occupancy regions add up to the page-table and live totals.
        let mapped = 0;
        let liveInRegions = 0;
        for (const region of p.occupancy.regions) {
          mapped += region.mappedBytes;
          for (const n of Object.values(region.liveBytesByType)) liveInRegions += n ?? 0;
        }
        assert.equal(mapped, m.mappedBytes, `${p.name}: regions' mapped bytes`);
        assert.equal(liveInRegions, m.liveBytes, `${p.name}: regions' live bytes`);
      }
      assert.equal(minRatio, 1, "the simulator's speed is relative to the slowest policy");
    });
  }
});

describe('compare: designs differ as their sources say', () => {
  it('bpf-churn: packs and our allocator avoid shootdowns; page-granular designs do not', () => {
    const r = small('bpf-churn');
    // Linux 5.17 (a page per program) and jit_alloc (a page per slab) flip permissions per load;
    // every kernel since 5.18 allocates BPF through bpf_prog_pack (issue 11 item 3).
    for (const name of ['module_alloc', 'jit_alloc-2023']) {
      assert.ok(byName(r, name).metrics.shootdowns > 10, `${name} pays shootdowns`);
    }
    // Per pack: set_memory_rox's cpa_flush plus one flush_tlb_all per direct-map split
    // (__split_large_page); then nothing per program.
    for (const name of ['bpf_prog_pack', 'execmem-6.10', 'execmem-rox', 'execmem-rox-bpf']) {
      const m = byName(r, name).metrics;
      assert.ok(m.shootdowns <= 2 + m.directMapSplits, `${name}: one set_memory per pack, ${m.shootdowns}`);
    }
    assert.equal(byName(r, 'jit_alloc-2023').metrics.largePageShare, 0);
    assert.equal(byName(r, 'module_alloc').metrics.largePageShare, 0);
    // 6.17 keeps BPF packs on 4 KiB execmem pages; the 2026 series carves them from 2 MiB ROX blocks.
    assert.equal(byName(r, 'execmem-rox').metrics.largePageShare, 0);
    assert.ok(byName(r, 'execmem-rox-bpf').metrics.largePageShare > 0.9);
  });

  it('bad options are refused before any work', () => {
    assert.throws(() => runCompare({ workload: 'nope' }), CompareError);
    assert.throws(() => runCompare({ workload: 'mixed', policies: ['nope'] }), CompareError);
    assert.throws(() => runCompare({ workload: 'mixed', policies: [] }), CompareError);
    assert.throws(() => runCompare({ workload: 'mixed', seed: -1 }), CompareError);
    assert.throws(() => runCompare({ workload: 'mixed', scale: 0 }), CompareError);
    assert.throws(() => runCompare({ workload: 'mixed', ageFraction: 2 }), CompareError);
    assert.throws(() => runCompare({ workload: 'mixed', arch: 'sparc' as 'x86_64' }), CompareError);
  });

  it('progress reports every policy and reaches the end', () => {
    const seen = new Map<string, number>();
    let total = 0;
    runCompare({
      workload: 'trampolines',
      scale: 0.003,
      policies: ['module_alloc', 'execmem'],
      machine: SMALL,
      fetch: false,
      progress(p) {
        seen.set(p.policy, p.eventsDone);
        total = p.eventsTotal;
        assert.equal(p.policyCount, 2);
      },
    });
    assert.deepEqual([...seen.keys()], ['module_alloc', 'execmem']);
    for (const done of seen.values()) assert.equal(done, total);
  });
});

/** Does the workload allocate BPF trampoline images (the pages 5.17 keeps W+X)? */
function hasBpfTrampolines(workload: string): boolean {
  return WORKLOADS[workload]
    .generate({ seed: 1, scale: 0.01 })
    .events.some((e) => e.op === 'alloc' && e.caller === 'bpf_trampoline');
}
