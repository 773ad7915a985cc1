// Replay on the simulated kernel machine: every policy (the re-implemented Linux designs and
// ours) runs every workload on a fresh machine with no failure and no W^X violation at any event,
// and at the end every live allocation holds, as read through the machine's page tables, exactly
// the bytes the trace's writes put there (computed independently from the trace). Plus the
// direction of Aaron Lu's figure on `bpf-aaronlu`: per-program vmalloc (module_alloc) splits the
// direct map, packing does not (or barely), ours not more than packing.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createMachine } from '../src/machine/machine.js';
import { POLICIES, POLICY_NAMES } from '../src/policies/index.js';
import { bpfAaronLu } from '../src/workloads/bpf.js';
import { bytesFor } from '../src/workloads/bytes.js';
import { WORKLOADS } from '../src/workloads/registry.js';
import { replay } from '../src/workloads/replay.js';
import { defaultFill, type Trace } from '../src/workloads/trace.js';

/** Per live id at the end of the trace: its size, expected bytes, and which bytes were written. */
function expectedContents(trace: Trace): Map<number, { bytes: Uint8Array; written: Uint8Array }> {
  const out = new Map<number, { bytes: Uint8Array; written: Uint8Array }>();
  const types = new Map<number, Parameters<typeof defaultFill>[0]>();
  trace.events.forEach((ev, i) => {
    if (ev.op === 'alloc') {
      types.set(ev.id, ev.type);
      out.set(ev.id, { bytes: new Uint8Array(ev.sizeBytes), written: new Uint8Array(ev.sizeBytes) });
    } else if (ev.op === 'free') {
      out.delete(ev.id);
    } else if (ev.op === 'write') {
      const e = out.get(ev.id)!;
      e.bytes.set(
        bytesFor(ev.fill ?? defaultFill(types.get(ev.id)!), ev.sizeBytes, trace.seed, i),
        ev.offsetBytes,
      );
      e.written.fill(1, ev.offsetBytes, ev.offsetBytes + ev.sizeBytes);
    }
  });
  return out;
}

const SCALE = 0.005;

for (const policyName of POLICY_NAMES) {
  test(`${policyName}: every workload replays on a fresh sim machine, W^X clean, contents as written`, () => {
    for (const [name, spec] of Object.entries(WORKLOADS)) {
      const trace = spec.generate({ seed: 13, scale: SCALE });
      const machine = createMachine({ seed: 13, memoryBytes: 4 * 2 ** 30 });
      const policy = POLICIES[policyName].create(machine, 13);
      const addr = new Map<number, number>();
      let wxMax = 0;
      const r = replay(
        trace,
        policy,
        {
          onEvent(ev, _i, ok, va) {
            assert.ok(ok);
            if (ev.op === 'alloc') addr.set(ev.id, va!);
            else if (ev.op === 'free') addr.delete(ev.id);
            wxMax = Math.max(wxMax, machine.wxViolationCount());
          },
        },
        { strict: true },
      );
      const where = `${policyName} on ${name}`;
      assert.equal(r.failureCount, 0, where);
      // Only the W+X pages the kernel version itself leaves (PolicySpec.wxHoles), on workloads
      // that make them (BPF trampolines for 5.17); ours and every other row: none, ever.
      const holes = POLICIES[policyName].wxHoles(machine.arch.name);
      const makesHoles = trace.events.some((e) => e.op === 'alloc' && e.caller === 'bpf_trampoline');
      if (holes === null || !makesHoles) {
        assert.equal(wxMax, 0, `${where}: W^X violations`);
        assert.equal(machine.wxFullScan().length, 0, `${where}: full W^X scan`);
      }
      assert.equal(policy.usage().liveBytes, r.liveBytes, where);
      assert.ok(policy.usage().mappedBytes >= r.liveBytes, `${where}: mapped >= live`);
      const expected = expectedContents(trace);
      assert.equal(expected.size, addr.size, where);
      let checked = 0;
      for (const [id, e] of expected) {
        const got = machine.load(0, addr.get(id)!, e.bytes.length);
        for (let b = 0; b < e.bytes.length; b++) {
          if (e.written[b]) assert.equal(got[b], e.bytes[b], `${where}: id ${id} byte ${b}`);
        }
        checked += e.bytes.length;
      }
      assert.ok(checked > 0, where);
    }
  });
}

test("bpf-aaronlu on the sim machine: module_alloc splits the direct map, bpf_prog_pack and execmem (almost) don't", () => {
  const trace = bpfAaronLu({ seed: 1, scale: 0.25 }); // 512 instances, 1536 images
  const run = (name: (typeof POLICY_NAMES)[number]) => {
    const machine = createMachine({ seed: 1, memoryBytes: 8 * 2 ** 30 });
    const policy = POLICIES[name].create(machine, 1);
    const c0 = { ...machine.counters };
    const d0 = machine.directMapStats();
    replay(trace, policy, {}, { strict: true });
    const c1 = machine.counters;
    return {
      splits: c1.splitsDirectMap2M - c0.splitsDirectMap2M + (c1.splitsDirectMap1G - c0.splitsDirectMap1G),
      growth4kBytes: machine.directMapStats().bytes4k - d0.bytes4k,
      shootdowns: c1.shootdowns - c0.shootdowns,
    };
  };
  const legacy = run('module_alloc');
  const pack = run('bpf_prog_pack');
  const ours = run('execmem');
  // One page per image, each set_memory_ro/x'd: splits grow with the program count.
  assert.ok(legacy.splits >= 3, `module_alloc splits ${legacy.splits}`);
  assert.ok(legacy.growth4kBytes > pack.growth4kBytes, 'legacy grows DirectMap4k more than packing');
  // Packing: one 2 MiB pack holds all 1536 images (Aaron Lu: ~6144 fit), so at most the pack's own split.
  assert.ok(pack.splits <= 2, `bpf_prog_pack splits ${pack.splits}`);
  assert.ok(ours.splits <= pack.splits, `execmem splits ${ours.splits}`);
  // Global shootdowns: one per image for legacy, a constant for packing and ours (the pack's
  // set_memory_rox, plus one flush_tlb_all per direct-map split it needed: __split_large_page).
  assert.ok(legacy.shootdowns > 1000, `module_alloc shootdowns ${legacy.shootdowns}`);
  assert.ok(
    pack.shootdowns <= 2 + pack.splits && ours.shootdowns <= 2 + ours.splits,
    `pack ${pack.shootdowns}, ours ${ours.shootdowns}`,
  );
});
