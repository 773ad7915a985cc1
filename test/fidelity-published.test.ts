/**
 * Published figures the Linux rows must reproduce, on the workloads and machine states that
 * reproduce the published experiments.
 *
 * - Aaron Lu, <Y2ioTodn+mBXdIqp@ziqianlu-desk2> (research/linux-execmem.md section 6): on an 8 GB
 *   x86-64 VM, 2048 sockex1 instances (three JIT images of 64, 64 and 192 B) grew DirectMap4k from
 *   87,900 kB to 1,654,620 kB (+1,566,720 kB) on v5.17 and split three 1 GiB direct-map pages;
 *   on v6.1-rc3 (bpf_prog_pack) "no change at all", and "it would need 6144 such progs to use up
 *   the cache". The workload `bpf-aaronlu` runs on its own machine state (WorkloadSpec.machine:
 *   8 GiB, booted fresh with systemd's programs, then aged at the phase marker 'test'); the
 *   figures here are taken over the 'test' phase, as his before/after /proc/meminfo were.
 * - Song Liu, <20221107223921.3451913-1-song@kernel.org>: "Before bpf_prog_pack loading and
 *   unloading BPF programs requires global TLB shootdown. This patchset (and bpf_prog_pack)
 *   replaces it with a local TLB flush": in steady-state churn a pack design sends no shootdown.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Rng } from '../src/base/rng.js';
import { createMachine, type Machine } from '../src/machine/machine.js';
import { type PolicyName, policyByName } from '../src/policies/index.js';
import { WORKLOADS } from '../src/workloads/registry.js';
import { replay } from '../src/workloads/replay.js';

const AARONLU_GROWTH_BYTES = (1_654_620 - 87_900) * 1024;

interface Window {
  dm4kGrowthBytes: number;
  splits1G: number;
  splits2M: number;
  shootdowns: number;
  localFlushes: number;
  /** Policy counters at the end, and their change over the window. */
  counters: Readonly<Record<string, number>>;
  delta: Readonly<Record<string, number>>;
}

/** Replay `workload` on its own machine state and measure from phase `from` to the end. */
function runPhase(workload: string, policy: PolicyName, from: string, scale = 1): Window {
  const spec = WORKLOADS[workload];
  const m: Machine = createMachine({ arch: 'x86_64', seed: 1, memoryBytes: spec.machine?.memoryBytes });
  const p = policyByName(policy).create(m, 1);
  let c0 = { ...m.counters };
  let dm0 = m.directMapStats().bytes4k;
  let pc0 = p.policyCounters();
  replay(
    spec.generate({ seed: 1, scale }),
    p,
    {
      onEvent(ev) {
        if (ev.op !== 'phase' || ev.name !== from) return;
        if (spec.machine?.agePhase === from) m.phys.age(spec.machine.ageFraction ?? 0, new Rng(1 ^ 0x5eed));
        c0 = { ...m.counters };
        dm0 = m.directMapStats().bytes4k;
        pc0 = p.policyCounters();
      },
    },
    { strict: true },
  );
  const c = m.counters;
  const pc = p.policyCounters();
  assert.equal(m.wxViolationCount(), 0, `${policy}: W^X`);
  return {
    dm4kGrowthBytes: m.directMapStats().bytes4k - dm0,
    splits1G: c.splitsDirectMap1G - c0.splitsDirectMap1G,
    splits2M: c.splitsDirectMap2M - c0.splitsDirectMap2M,
    shootdowns: c.shootdowns - c0.shootdowns,
    localFlushes: c.localFlushes - c0.localFlushes,
    counters: pc,
    delta: Object.fromEntries(Object.entries(pc).map(([k, v]) => [k, v - (pc0[k] ?? 0)])),
  };
}

test('Aaron Lu, v5.17 (module_alloc): DirectMap4k grows within 2x of +1,566,720 kB, 1 GiB leaves split', () => {
  const w = runPhase('bpf-aaronlu', 'module_alloc', 'test');
  const ratio = w.dm4kGrowthBytes / AARONLU_GROWTH_BYTES;
  assert.ok(
    ratio >= 0.5 && ratio <= 2,
    `growth ${(w.dm4kGrowthBytes / 2 ** 20).toFixed(0)} MiB, ratio ${ratio}`,
  );
  assert.ok(w.splits1G > 0, 'the published run split 1 GiB direct-map pages');
  assert.ok(
    w.shootdowns >= 2 * 6144,
    'set_memory_ro and set_memory_x per program: a shootdown each at least',
  );
});

test('Aaron Lu, v6.1 (bpf_prog_pack): no DirectMap change; 6144 such programs fit the pack that boot made', () => {
  const w = runPhase('bpf-aaronlu', 'bpf_prog_pack', 'test');
  assert.equal(w.dm4kGrowthBytes, 0, '"no change at all"');
  assert.equal(w.splits1G + w.splits2M, 0);
  assert.equal(w.shootdowns, 0, 'loads into an existing pack are text_poke_copy only');
  assert.equal(w.counters.blocksMapped, 1, 'one 2 MiB pack for 8 boot programs + 6144 test programs');
});

test('Song Liu: bpf_prog_pack churn in steady state sends no shootdown, only local flushes', () => {
  const w = runPhase('bpf-churn', 'bpf_prog_pack', 'churn', 0.25);
  assert.ok(w.delta.allocs > 1000 && w.delta.frees > 1000, 'a real churn');
  assert.equal(w.delta.blocksMapped + w.delta.blocksReleased, 0, 'the packs outlive the churn');
  assert.ok(w.localFlushes > 0, 'text_poke_copy / text_poke_set flush locally');
  assert.equal(w.shootdowns, 0, 'loads and unloads into existing packs never shoot down');
});
