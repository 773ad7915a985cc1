/**
 * What `npm run bench` prints (issue 13 item 15): lines of at most 120 columns however long a
 * name or note, each target shown as met or NOT met (and counted at the end), ratios that all
 * point one way (speed relative to the baseline), facts as notes instead of rows with a made-up
 * value, and a --json document with the verdicts as --help documents it. The benchmarks
 * themselves are not run here (they time things); the output is built from fixed results.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { formatReport, HELP, LINE_COLUMNS, toJsonDoc, wrap } from '../bench/run.js';
import { type BenchRow, targetMet } from '../bench/types.js';

const runJs = join(dirname(fileURLToPath(import.meta.url)), '..', 'bench', 'run.js');

const ROWS: BenchRow[] = [
  { name: 'raw loop', value: 9e7, unit: 'reads/s', note: 'limit' },
  {
    name: 'ifetch sequential (TLB-filtered)',
    value: 6e7,
    unit: 'fetches/s',
    baseline: 'raw loop',
    ratio: 6e7 / 9e7,
    target: { of: 'value', op: '>=', bound: 2e7, source: 'issue 2' },
  },
  {
    name: `mapped / requested after a churn with a very long name ${'x'.repeat(80)}`,
    value: 1.2,
    unit: 'ratio',
    note: `${'a long note with many words '.repeat(20)}${'y'.repeat(150)}`,
    target: { of: 'value', op: '<=', bound: 1.15, source: 'issue 3' },
  },
  { name: 'host modes', fact: 'dualmap: memfd mapped twice' },
];

test('every line fits 120 columns, targets say met / NOT met and are counted', () => {
  const text = formatReport([{ module: 'demo', rows: ROWS }]);
  for (const line of text.split('\n')) assert.ok(line.length <= LINE_COLUMNS, `${line.length}: ${line}`);
  assert.match(
    text,
    /ifetch sequential \(TLB-filtered\): 60\.00 M fetches\/s, 0\.667x the baseline's speed, target >= 20\.00M: met/,
  );
  assert.match(text, /target <= 1\.15:\s+NOT\s+met/);
  assert.match(text, /\ntargets: 1 met, 1 not met \(demo: mapped \/ requested after a churn/);
  assert.match(text, /\n {2}note: host modes: dualmap: memfd mapped twice/);
  assert.doesNotMatch(text, /info|0\.000/, 'no fact printed as a measurement');
});

test('targets are judged on the figure they bound', () => {
  assert.equal(
    targetMet({
      name: 'a',
      value: 1,
      unit: 'x',
      ratio: 0.7,
      target: { of: 'ratio', op: '>=', bound: 0.667, source: 's' },
    }),
    true,
  );
  assert.equal(
    targetMet({
      name: 'a',
      value: 1,
      unit: 'x',
      ratio: 0.6,
      target: { of: 'ratio', op: '>=', bound: 0.667, source: 's' },
    }),
    false,
  );
  assert.equal(
    targetMet({ name: 'a', value: 1, unit: 'x', target: { of: 'ratio', op: '>=', bound: 1, source: 's' } }),
    null,
  );
  assert.equal(targetMet({ name: 'a', value: 1, unit: 'x' }), null);
});

test('--json carries results with verdicts and facts apart; --help documents it', () => {
  const doc = toJsonDoc([{ module: 'demo', rows: ROWS }]);
  assert.equal(doc[0].results.length, 3);
  assert.deepEqual(doc[0].facts, [{ name: 'host modes', fact: 'dualmap: memfd mapped twice' }]);
  const withTarget = doc[0].results.filter((r) => r.target !== undefined) as {
    target: { met: boolean | null };
  }[];
  assert.deepEqual(
    withTarget.map((r) => r.target.met),
    [true, false],
  );
  assert.match(HELP, /--json +one JSON document/);
  assert.match(HELP, /"met": boolean\|null/);
  const help = execFileSync(process.execPath, [runJs, '--help'], { encoding: 'utf8' });
  assert.equal(help, `${HELP}\n`);
  const bad = spawnSync(process.execPath, [runJs, '--nope'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /unknown option '--nope'/);
});

test('wrap keeps words, indents continuation lines and cuts only words longer than a line', () => {
  assert.deepEqual(wrap('aa bb cc', 5, '  ', ''), ['aa bb', '  cc']);
  const long = wrap('z'.repeat(12), 5, '', '');
  assert.deepEqual(long, ['zzzzz', 'zzzzz', 'zz']);
});
