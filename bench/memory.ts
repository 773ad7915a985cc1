/**
 * Benchmark: execmem's mapped/live against the best other design, per workload and scale
 * (issue 12 item 2: "mapped/live within 5% of the best design on every workload at scales 0.25,
 * 1 and 4, and at most 1.15 at steady state on large live sets").
 *
 * Why it is measured this way: every design runs through the compare harness (runCompare, the
 * code behind `execmem compare`) on identical fresh simulated machines, seed 1, x86_64, with the
 * instruction-fetch model off (it does not change what is mapped), so the ratio ours / best other
 * comes from one run of this process. Each row also carries the bound our design cannot go below
 * (docs/MEMORY.md; compare reports it as ours' counter mappedBoundBytes, ExecmemPolicy): text
 * keeps 2 MiB leaves from its first byte (limits.ts LARGE_TIER_FROM_BYTES: 4 KiB text costs the
 * iTLB far more than the memory it saves), so every text pool maps at least its requested live
 * bytes rounded up to 2 MiB, and the rest at least its live bytes. Where that bound is
 * already above 1.05 x the best design, the target is out of reach for a design that keeps text
 * on large pages; the row says so and the verdict stays what was measured.
 * A live set of 16 MiB or more (eight 2 MiB blocks) is "large": there the 1.15 target applies.
 * Everything runs on the simulated machine; the Linux designs are re-implementations.
 */
import { SZ_2M } from '../src/base/addr.js';
import { runCompare } from '../src/metrics/compare.js';
import { WORKLOADS } from '../src/workloads/registry.js';
import type { BenchResult, BenchRow } from './types.js';

const SEED = 1;
const SCALES = [0.25, 1, 4] as const;
const LARGE_LIVE_BYTES = 8 * SZ_2M;
const TARGET_OF_BEST = 1.05;
const TARGET_LARGE = 1.15;
const SOURCE = 'issue 12 item 2';

/** One workload at one scale: the ratio row, and the large-live-set row where it applies. */
export function measureMemory(workload: string, scale: number): BenchResult[] {
  const rows: BenchResult[] = [];
  const started = Date.now();
  const cmp = runCompare({ workload, scale, seed: SEED, arch: 'x86_64', fetch: false });
  const mine = cmp.policies.find((p) => p.name === 'execmem')!;
  let best = cmp.policies.find((p) => p.name !== 'execmem')!;
  for (const p of cmp.policies)
    if (p.name !== 'execmem' && p.metrics.overhead < best.metrics.overhead) best = p;
  const live = mine.metrics.liveBytes;
  const oursRatio = mine.metrics.overhead;
  const bestRatio = best.metrics.overhead;
  // Ours' bound, as compare reports it (ExecmemPolicy.mappedBoundBytes).
  const boundBytes = mine.counters.mappedBoundBytes;
  const boundRatio = live > 0 ? boundBytes / live : 0;
  const reach = boundRatio <= bestRatio * TARGET_OF_BEST;
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(2)} MiB`;
  rows.push({
    name: `memory: ${workload} x${scale} mapped/live ours / best`,
    value: bestRatio > 0 ? oursRatio / bestRatio : 0,
    unit: 'x best',
    baseline: `${best.name} (mapped/live ${bestRatio.toFixed(3)})`,
    note:
      `ours ${oursRatio.toFixed(3)} (${mib(mine.metrics.mappedBytes)} for ${mib(live)} live); our bound ` +
      `${boundRatio.toFixed(3)} (text on 2 MiB leaves)` +
      (reach
        ? ''
        : `: the target is out of reach, the bound is ${(boundRatio / bestRatio).toFixed(3)} x best`) +
      `; ${((Date.now() - started) / 1000).toFixed(1)} s`,
    target: { of: 'value', op: '<=', bound: TARGET_OF_BEST, source: SOURCE },
  });
  if (live >= LARGE_LIVE_BYTES) {
    rows.push({
      name: `memory: ${workload} x${scale} mapped/live ours (large live set)`,
      value: oursRatio,
      unit: 'mapped/live',
      note: `live ${mib(live)} >= ${mib(LARGE_LIVE_BYTES)}: at the end of the run`,
      target: { of: 'value', op: '<=', bound: TARGET_LARGE, source: SOURCE },
    });
  }
  return rows;
}

export async function benchMemory(): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  for (const workload of Object.keys(WORKLOADS))
    for (const scale of SCALES) rows.push(...measureMemory(workload, scale));
  rows.push({
    name: 'memory: how',
    fact: 'x86_64, seed 1, every design on an identical fresh simulated machine (runCompare, fetch model off); mapped bytes from the page tables at the end of each run',
  });
  return rows;
}
