/**
 * The other Debian amd64 flavours, when they are in the cache: the full `linux-image-amd64`
 * (about 4,000 modules, an xz-compressed bzImage whose size trailer broke `xz -dc`) and the
 * real-time `linux-image-rt-amd64`. Each loads every module through execmem with 0 unresolved
 * symbols (modversions CRCs compared against the exports read from its own vmlinuz) and 0
 * relocation overflows, and relocation counts per type add up to what the files hold.
 *
 * These packages are large (the full flavour is a 71 MB download, 409 MB extracted), so CI does
 * not fetch them and the suites skip with that reason when they are absent
 * (`scripts/fetch-dataset.sh --flavour generic` / `--flavour rt` fetches them).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createMachine } from '../src/machine/machine.js';
import { policyByName } from '../src/policies/index.js';
import { datasetKernelSymbols, findCachedDataset, openDataset } from '../src/workloads/dataset/dataset.js';
import { datasetArch } from '../src/workloads/dataset/flavour.js';
import { loadDatasetModules } from '../src/workloads/dataset/load.js';
import { buildModuleTable } from '../src/workloads/dataset/table.js';

for (const [flavour, what] of [
  ['amd64', 'the full amd64 flavour (linux-image-amd64)'],
  ['rt-amd64', 'the real-time amd64 flavour (linux-image-rt-amd64)'],
] as const) {
  const root = findCachedDataset(undefined, flavour);
  describe(what, {
    skip: root
      ? false
      : `not in the cache (scripts/fetch-dataset.sh --flavour ${flavour === 'amd64' ? 'generic' : 'rt'})`,
  }, () => {
    it('every module loads through execmem: 0 unresolved symbols, 0 overflows, counts as in the files', () => {
      assert.ok(root);
      const index = openDataset(root);
      assert.equal(datasetArch(index), 'x86_64');
      const machine = createMachine({ arch: 'x86_64', seed: 1 });
      const allocator = policyByName('execmem').create(machine, 1);
      const offset = machine.kernelTextStart - machine.arch.layout.kernelImage.textStart;
      const kernel = datasetKernelSymbols(index).withKaslrOffset(offset);
      assert.match(kernel.source, /__ksymtab/, 'exports read from the vmlinuz');
      const { report } = loadDatasetModules(index, kernel, allocator);
      assert.deepEqual(report.failed, []);
      assert.equal(report.loaded, index.modules.length);
      assert.equal(report.unresolvedSymbols, 0);
      assert.equal(report.relocOverflows, 0);
      assert.equal(machine.wxViolationCount(), 0);
      // The derived table counts the relocations in the files; the loader applied each once.
      const want: Record<string, number> = {};
      for (const row of buildModuleTable(index).modules)
        for (const [t, n] of Object.entries(row.relocs)) want[t] = (want[t] ?? 0) + n;
      assert.deepEqual(report.relocsByType, want);
    });
  });
}
