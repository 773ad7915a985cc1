/**
 * A fixed-seed slice of the `api` fuzz target (fuzz/api.ts) in `npm test`: a few hundred random
 * API sequences with hostile arguments on the fake and sim backends must produce no finding, so
 * a regression in argument checking, re-entrancy, typed errors or "failed calls change nothing"
 * is found by the suite. `npm run fuzz -- api` runs the same target long, from any seed.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { apiTarget } from '../fuzz/api.js';
import { FUZZ_TARGETS } from '../fuzz/targets.js';

test('fuzz api: 200 fixed-seed cases of hostile API sequences on the fake, sim and host backends find nothing', () => {
  const report = apiTarget.run(0x16, 200);
  assert.equal(report.cases, 200);
  const shown = report.findings
    .slice(0, 3)
    .map((f) => `case ${f.caseIndex}: ${f.message}`)
    .join('\n');
  assert.equal(report.findings.length, 0, `findings (seed ${report.seed}):\n${shown}`);
});

test('fuzz api: registered as `api` for npm run fuzz', () => {
  assert.ok(FUZZ_TARGETS.includes(apiTarget));
  assert.equal(apiTarget.name, 'api');
});
