/**
 * A hand-made ReportData for renderer tests (test fixture: made-up numbers, never shown as
 * results). It exercises what the renderer must handle: several workloads and policies, zeros,
 * a mixed-type 2 MiB region, a large-leaf region, and a policy without an area map.
 */
import { KERNEL_EVENT_KEYS, type KernelEvents, kernelTime, sensitivity } from '../src/metrics/kernel-time.js';
import type { AreaMap, PolicyMetrics, ReportData } from '../src/metrics/report/types.js';

const SZ_2M = 2 * 1024 * 1024;
export const FIXTURE_AREA_START = 0xffffc0000000 - 0x1000 * 37; // 48-bit form, not 2 MiB aligned

/** Made-up event counts, consistent with the made-up flush figures of `metrics`. */
export function fixtureEvents(i: number, w: number): KernelEvents {
  const events = Object.fromEntries(KERNEL_EVENT_KEYS.map((k) => [k, 0])) as KernelEvents;
  return {
    ...events,
    ipiShootdowns: 10 * i,
    ipiTargets: 30 * i,
    localFlushes: 5 + i,
    pokeSteps: 3 * i,
    itlbStlbHits: 1000 * (1 + w),
    itlbWalks: 100 + 10 * i,
    cpaCalls: 7 * i,
  };
}

function metrics(i: number, w: number): PolicyMetrics {
  return {
    modelledKernelTimeNs: kernelTime(fixtureEvents(i, w), 'x86_64').totalNs,
    liveBytes: 1_000_000 + 1000 * w,
    mappedBytes: 1_000_000 * (1 + i),
    overhead: 1 + i + w / 10,
    largePageShare: i === 0 ? 0 : 1 / (i + 1),
    directMap4kBytes: 80 * 1024 * 1024 + i * 3 * 1024 * 1024,
    directMap4kGrowthBytes: i * 3 * 1024 * 1024,
    directMapSplits: i * 2,
    shootdowns: 10 * i,
    ipis: 30 * i,
    broadcastFlushes: 0,
    localFlushes: 5 + i,
    allFlushEvents: 5 + i + 10 * i,
    permissionFlips: 7 * i,
    pokes: 3 * i,
    itlbMissesPerMillion: 100 + 10 * i,
    itlbLowerBoundPerMillion: 90,
    wxViolations: 0,
    failures: 0,
  };
}

function area(i: number): AreaMap {
  const base = Math.ceil(FIXTURE_AREA_START / SZ_2M) * SZ_2M;
  return {
    start: FIXTURE_AREA_START,
    end: FIXTURE_AREA_START + 64 * SZ_2M,
    regionBytes: SZ_2M,
    regions: [
      {
        va: base,
        mappedBytes: SZ_2M,
        largeLeaf: true,
        liveBytesByType: { module_text: SZ_2M / 2, bpf: SZ_2M / 4 },
      },
      {
        va: base + SZ_2M * (3 + i),
        mappedBytes: 4096 * 3,
        largeLeaf: false,
        liveBytesByType: { module_data: 5000 },
      },
      { va: base + SZ_2M * 10, mappedBytes: SZ_2M, largeLeaf: true, liveBytesByType: {} },
    ],
  };
}

export const FIXTURE_POLICIES = ['module_alloc', 'bpf_prog_pack', 'execmem'];
export const FIXTURE_WORKLOADS = ['bpf-churn', 'mixed'];

export function reportFixture(): ReportData {
  return {
    generatedAt: '2026-01-01T00:00:00.000Z',
    command: 'npm start',
    notes: ['Test fixture: made-up numbers.'],
    runs: FIXTURE_WORKLOADS.map((workload, w) => ({
      workload,
      description: `fixture workload ${workload}: made-up text`,
      arch: 'x86_64',
      tlb: 'skylake',
      seed: 1,
      scale: 1,
      policies: FIXTURE_POLICIES.map((name, i) => ({
        name,
        modelled: name !== 'execmem',
        kernel: name === 'execmem' ? 'execmem (ours)' : `Linux fixture ${i}`,
        sameAs: null,
        wxHoles: null,
        description: `fixture design ${name}: made-up text`,
        metrics: metrics(i, w),
        counters: (name === 'execmem' ? { frees: 40 + w, updates: 60 } : {}) as Record<string, number>,
        kernelTime: kernelTime(fixtureEvents(i, w), 'x86_64'),
        area: name === 'module_alloc' && workload === 'mixed' ? null : area(i),
      })),
      kernelTimeSensitivity: sensitivity(
        FIXTURE_POLICIES.map((name, i) => ({ name, events: fixtureEvents(i, w) })),
        'x86_64',
      ),
    })),
  };
}
