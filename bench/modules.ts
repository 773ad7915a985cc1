/**
 * Benchmark: load every module of the Debian package (issue 5 target: "loading the whole
 * package takes at most a few seconds").
 *
 * Why these numbers: the time to load the package through each design, as modules per second,
 * with the loader's own work (parse, layout, symbol resolution, relocation into private copies)
 * measured alone through a null allocator in the same process run as the baseline, so the
 * ratio says what each design and the simulated machine add on top. Also reported, not timed:
 * mapped/live bytes after init per design (the allocator's memory overhead on real modules).
 * Skipped with a note when the dataset is not in the cache.
 */
import { createMachine } from '../src/machine/machine.js';
import { policyByName } from '../src/policies/index.js';
import type { ExecAllocator } from '../src/policies/types.js';
import { datasetKernelSymbols, findCachedDataset, openDataset } from '../src/workloads/dataset/dataset.js';
import { loadDatasetModules } from '../src/workloads/dataset/load.js';
import type { BenchResult, BenchRow } from './types.js';

// execmem-rox is left out: it took ~100 s for the package (about 14x execmem) when measured; run it via
// `execmem modules load --all --policy execmem-rox`.
const POLICIES = ['execmem', 'module_alloc'] as const;
const SEED = 1;

/** Hands out distinct page-aligned addresses in the module area and keeps nothing. */
function nullAllocator(): ExecAllocator {
  let next = 0xffffc0001000;
  let live = 0;
  return {
    name: 'null',
    alloc(_t, sizeBytes) {
      const va = next;
      next += Math.ceil(sizeBytes / 4096) * 4096;
      live += sizeBytes;
      return va;
    },
    write() {},
    finalize() {},
    seal() {},
    free() {},
    shrink() {},
    usage: () => ({ liveBytes: live, mappedBytes: live }),
  };
}

export async function benchModules(): Promise<BenchRow[]> {
  const root = findCachedDataset();
  if (!root) {
    return [
      {
        name: 'modules: load whole package',
        fact: 'skipped: the Debian dataset is not in the cache (scripts/fetch-dataset.sh)',
      },
    ];
  }
  const index = openDataset(root);
  const kernel = datasetKernelSymbols(index);
  const base = loadDatasetModules(index, kernel, nullAllocator()).report;
  const results: BenchResult[] = [
    {
      name: 'modules: loader alone (null allocator)',
      value: base.modulesPerSecond,
      unit: 'modules/s',
      note: `${base.loaded}/${base.requested} modules of ${index.kernelRelease} in ${base.loadMs.toFixed(0)} ms; ${base.failed.length} failed`,
    },
  ];
  for (const p of POLICIES) {
    const machine = createMachine({ arch: 'x86_64', seed: SEED });
    const allocator = policyByName(p).create(machine, SEED);
    const offset = machine.kernelTextStart - machine.arch.layout.kernelImage.textStart;
    const r = loadDatasetModules(index, kernel.withKaslrOffset(offset), allocator).report;
    results.push({
      name: `modules: load whole package (${p})`,
      value: r.modulesPerSecond,
      unit: 'modules/s',
      baseline: 'modules: loader alone (null allocator)',
      ratio: r.modulesPerSecond / base.modulesPerSecond,
      note: `${r.loaded}/${r.requested} loaded, ${r.unresolvedSymbols} unresolved, ${r.relocOverflows} overflows, ${r.loadMs.toFixed(0)} ms (target: a few seconds)`,
    });
    results.push({
      name: `modules: mapped/live bytes after init (${p})`,
      value: r.usage.liveBytes > 0 ? r.usage.mappedBytes / r.usage.liveBytes : 0,
      unit: 'ratio',
      note: `live ${r.usage.liveBytes} B, mapped ${r.usage.mappedBytes} B (limit 1.0)`,
    });
  }
  return results;
}
