/**
 * `execmem compare` as a user runs it: the built binary, its help, its exit codes for bad usage
 * (2, one line on stderr, no stack trace), and --json output with the documented keys.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { execmem } from './cli-helpers.js';

describe('execmem compare (CLI)', () => {
  it('--help lists the flags and an example', () => {
    const r = execmem(['compare', '--help']);
    assert.equal(r.status, 0);
    for (const flag of ['--workload', '--policies', '--arch', '--seed', '--scale', '--age'])
      assert.match(r.stdout, new RegExp(flag));
    assert.match(r.stdout, /execmem compare --workload mixed/);
  });

  it('bad usage exits 2 with one line on stderr', () => {
    for (const args of [
      ['compare', '--workload', 'nope'],
      ['compare', '--workload', 'mixed', '--policies', 'module_alloc,nope'],
      ['compare', '--workload', 'mixed', '--age', '3'],
      ['compare'],
    ]) {
      const r = execmem(args);
      assert.equal(r.status, 2, args.join(' '));
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.doesNotMatch(r.stderr, /\n\s+at /);
    }
  });

  it('--json prints one CompareResult with every documented metric', () => {
    const r = execmem([
      'compare',
      '--workload',
      'trampolines',
      '--scale',
      '0.003',
      '--policies',
      'module_alloc,execmem',
      '--json',
    ]);
    assert.equal(r.status, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.equal(doc.workload, 'trampolines');
    assert.equal(doc.arch, 'x86_64');
    assert.equal(doc.seed, 1);
    assert.deepEqual(
      doc.policies.map((p: { name: string }) => p.name),
      ['module_alloc', 'execmem'],
    );
    const keys = [
      'modelledKernelTimeNs',
      'liveBytes',
      'mappedBytes',
      'overhead',
      'largePageShare',
      'directMap4kBytes',
      'directMapSplits',
      'shootdowns',
      'ipis',
      'localFlushes',
      'permissionFlips',
      'itlbMissesPerMillion',
      'itlbLowerBoundPerMillion',
      'wxViolations',
      'broadcastFlushes',
      'allFlushEvents',
      'simulatorOpsPerSecond',
      'simulatorOpsPerSecondRatio',
    ];
    // The simulator's speed is in --json only, under a name nobody takes for kernel speed.
    assert.match(doc.simulatorSpeedNote, /simulator's own throughput/);
    // Modelled kernel time first, with its breakdown and the ranking's sensitivity (issue 12).
    assert.equal(typeof doc.kernelTime.sensitivity.summary, 'string');
    assert.equal(doc.kernelTime.costsNs.ipiShootdowns, 707.5);
    for (const p of doc.policies) {
      assert.equal(Object.keys(p.metrics)[0], 'modelledKernelTimeNs', 'the figure comes first');
      assert.equal(p.kernelTime.totalNs, p.metrics.modelledKernelTimeNs);
      for (const k of keys) assert.equal(typeof p.metrics[k], 'number', `${p.name}.${k}`);
      assert.equal(p.metrics.opsPerSecondRatio, undefined, 'the old speed name is gone');
      assert.equal(typeof p.kernel, 'string');
      assert.equal(p.sameAs, null, `${p.name}: no x86 design equals another`);
      if (p.wxHoles === null) assert.equal(p.metrics.wxViolations, 0, p.name);
      assert.ok(Array.isArray(p.occupancy.regions));
    }
  });
});
