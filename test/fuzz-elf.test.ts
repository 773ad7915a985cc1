/**
 * A fixed-seed slice of the `elf` fuzz target (fuzz/elf.ts), so the suite finds the next
 * hostile .ko, not a user: mutated modules through the loader on the simulated machine must end
 * in success or a typed ModuleLoadError, a refused load must change nothing, and work must stay
 * within the per-file bounds. One slice runs on the built-in module alone (no dataset, no gcc);
 * one on the real Debian modules when they are in the cache (required when
 * EXECMEM_REQUIRE_DATASET=1, as in CI). `npm run fuzz -- elf` runs the same target long.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { elfFuzzInputs, runElfFuzz } from '../fuzz/elf.js';
import { FUZZ_TARGETS } from '../fuzz/targets.js';
import { findCachedDataset } from '../src/workloads/dataset/dataset.js';

/** No findings, and (for `allOutcomes`) every outcome seen, else the oracle went untested. */
function assertClean(r: ReturnType<typeof runElfFuzz>, cases: number, allOutcomes: boolean): void {
  assert.deepEqual(
    r.findings.map((f) => `case ${f.caseIndex}: ${f.message}`),
    [],
    `findings (replay: npm run fuzz -- elf --seed ${r.seed} --iterations ${cases})`,
  );
  const s = r.stats;
  assert.equal(
    s.loaded + s.refusedBeforeAllocating + s.refusedAfterAllocating,
    cases,
    'every case accounted for',
  );
  assert.ok(s.loaded > 0, 'some loads succeed');
  assert.ok(s.refusedBeforeAllocating > 0, 'some refused before allocating');
  // The built-in slice is the same everywhere; the dataset's depends on the package version.
  if (!allOutcomes) return;
  assert.ok(s.refusedAfterAllocating > 0, 'some refused after allocating');
  assert.ok(Object.keys(s.bySource).length >= 4, `sources seen: ${JSON.stringify(s.bySource)}`);
}

describe('fuzz target elf (fixed-seed slice)', () => {
  it('is registered for npm run fuzz', () => {
    assert.ok(FUZZ_TARGETS.some((t) => t.name === 'elf'));
  });

  it('built-in module: 240 mutated loads, typed errors, nothing changed, bounded work', () => {
    const r = runElfFuzz(16, 240, elfFuzzInputs({ dataset: false }));
    assertClean(r, 240, true);
    assert.deepEqual(r.stats.inputs, ['sample (elf-build.ts)']);
  });

  const root = findCachedDataset();
  const required = process.env.EXECMEM_REQUIRE_DATASET === '1';
  it('real Debian modules: 240 mutated loads', {
    skip: root || required ? false : 'Debian dataset not in the cache (run: execmem dataset fetch)',
  }, () => {
    assert.ok(root, 'EXECMEM_REQUIRE_DATASET=1 but the dataset is not in the cache');
    const inputs = elfFuzzInputs();
    assert.ok(inputs.length > 1 && inputs[1].name === 'crc7', `inputs: ${inputs.map((i) => i.name)}`);
    const r = runElfFuzz(17, 240, inputs);
    assertClean(r, 240, false);
  });
});
