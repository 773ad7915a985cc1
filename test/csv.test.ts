/**
 * CSV output (src/metrics/csv.ts): RFC 4180 quoting, a reader that takes back exactly what the
 * writer writes, and each command's --csv read back and compared with its --json figures
 * (compare, report, stats), so a CSV can never say something the JSON does not.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { CsvError, csvField, csvFileName, parseCsv, RUN_CSV_HEADER, toCsv } from '../src/metrics/csv.js';
import { execmem } from './cli-helpers.js';
import { withTempDir } from './helpers/tempdir.js';

/** A CSV field back as the JSON value it was written from. */
function value(field: string, like: unknown): unknown {
  if (typeof like === 'number') return Number(field);
  if (typeof like === 'boolean') return field === 'true';
  if (like === null) return field === '' ? null : field;
  return field;
}

/** Every record of `csv` as an object keyed by the header. */
function records(csv: string): Record<string, string>[] {
  const [header, ...rows] = parseCsv(csv);
  return rows.map((r) => Object.fromEntries(header.map((h, i) => [h, r[i]])));
}

describe('RFC 4180', () => {
  it('quotes fields with a comma, a double quote, CR or LF, and doubles the quote', () => {
    assert.equal(csvField('plain'), 'plain');
    assert.equal(csvField('a,b'), '"a,b"');
    assert.equal(csvField('say "hi"'), '"say ""hi"""');
    assert.equal(csvField('two\nlines'), '"two\nlines"');
    assert.equal(csvField('cr\r'), '"cr\r"');
    assert.equal(csvField(null), '');
    assert.equal(csvField(undefined), '');
    assert.equal(csvField(0.1 + 0.2), '0.30000000000000004');
    assert.equal(csvField(-0), '0');
    assert.equal(csvField(true), 'true');
    assert.throws(() => csvField(Number.NaN), RangeError);
    assert.equal(toCsv(['a', 'b'], [['x,y', 2]]), 'a,b\r\n"x,y",2\r\n');
    assert.throws(() => toCsv(['a', 'b'], [['only one']]), /1 fields under 2 columns/);
  });

  it('reads back what it writes, whatever the text (property)', () => {
    const cell = fc.oneof(fc.string(), fc.constantFrom('', ',', '"', '\r\n', '\n', 'a"b,c\rd'));
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5 }),
        fc.array(fc.array(cell, { minLength: 5, maxLength: 5 })),
        (n, rows) => {
          const table = rows.map((r) => r.slice(0, n));
          const header = Array.from({ length: n }, (_, i) => `c${i}`);
          assert.deepEqual(parseCsv(toCsv(header, table)), [header, ...table]);
        },
      ),
    );
    fc.assert(
      fc.property(fc.array(fc.double({ noNaN: true, noDefaultInfinity: true }), { minLength: 1 }), (xs) => {
        const [, row] = parseCsv(
          toCsv(
            xs.map((_, i) => `x${i}`),
            [xs],
          ),
        );
        assert.deepEqual(
          row.map(Number),
          xs.map((x) => (Object.is(x, -0) ? 0 : x)),
        );
      }),
    );
  });

  it('refuses what is not RFC 4180', () => {
    assert.throws(() => parseCsv('a,"b'), CsvError);
    assert.throws(() => parseCsv('a,b"c'), CsvError);
    assert.throws(() => parseCsv('"a"b'), CsvError);
    assert.deepEqual(parseCsv('a,b\nc,d'), [
      ['a', 'b'],
      ['c', 'd'],
    ]);
  });

  it('names a CSV file after its workload, safely', () => {
    assert.equal(csvFileName('bpf-churn'), 'bpf-churn.csv');
    assert.equal(csvFileName('my machine/2024'), 'my_machine_2024.csv');
    assert.equal(csvFileName('..'), '_.csv');
  });
});

describe('--csv against --json', () => {
  const run = [
    '--workload',
    'trampolines',
    '--scale',
    '0.004',
    '--policies',
    'module_alloc,bpf_prog_pack,execmem',
  ];

  it('compare --csv holds the figures of compare --json', () => {
    const csv = execmem(['compare', ...run, '--csv']);
    const json = execmem(['compare', ...run, '--json']);
    assert.equal(csv.status, 0, csv.stderr);
    assert.equal(json.status, 0, json.stderr);
    assert.match(csv.stdout, /\r\n$/);
    const [header] = parseCsv(csv.stdout);
    assert.deepEqual(header, RUN_CSV_HEADER);
    const doc = JSON.parse(json.stdout);
    const rows = records(csv.stdout);
    assert.equal(rows.length, doc.policies.length);
    rows.forEach((row, i) => {
      const p = doc.policies[i];
      assert.equal(row.workload, doc.workload);
      assert.equal(row.arch, doc.arch);
      assert.equal(Number(row.seed), doc.seed);
      assert.equal(row.policy, p.name);
      assert.equal(row.kernel, p.kernel);
      assert.equal(value(row.modelled, p.modelled), p.modelled);
      assert.equal(value(row.sameAs, p.sameAs), p.sameAs);
      for (const key of RUN_CSV_HEADER.slice(8)) {
        // figures that depend on the simulator's own timing are not in the CSV; all others are exact
        assert.equal(Number(row[key]), p.metrics[key], `${p.name} ${key}`);
      }
    });
    const both = execmem(['compare', ...run, '--csv', '--json']);
    assert.equal(both.status, 2);
    assert.match(both.stderr, /--csv and --json/);
  });

  it('report --csv writes one file per workload with the figures of report --json', () => {
    withTempDir('csv-report-', (dir) => {
      const r = execmem([
        'report',
        '--workloads',
        'trampolines,bpf-churn',
        '--policies',
        'module_alloc,execmem',
        '--scale',
        '0.004',
        '--out',
        dir,
        '--csv',
        '--json',
      ]);
      assert.equal(r.status, 0, r.stderr);
      const doc = JSON.parse(r.stdout);
      assert.deepEqual(doc.csv, [join(dir, 'trampolines.csv'), join(dir, 'bpf-churn.csv')]);
      doc.runs.forEach(
        (
          run: { workload: string; policies: { name: string; metrics: Record<string, number> }[] },
          i: number,
        ) => {
          const rows = records(readFileSync(doc.csv[i], 'utf8'));
          assert.deepEqual(
            rows.map((row) => row.policy),
            run.policies.map((p) => p.name),
          );
          rows.forEach((row, j) => {
            assert.equal(row.workload, run.workload);
            for (const key of RUN_CSV_HEADER.slice(8))
              assert.equal(Number(row[key]), run.policies[j].metrics[key], key);
          });
        },
      );
    });
  });

  it('stats --csv holds every figure of stats --json', () => {
    const args = ['stats', '--workload', 'trampolines', '--scale', '0.004'];
    const csv = execmem([...args, '--csv']);
    const json = execmem([...args, '--json']);
    assert.equal(csv.status, 0, csv.stderr);
    const { stats } = JSON.parse(json.stdout);
    const rows = records(csv.stdout);
    let figures = 0;
    for (const row of rows) {
      const where =
        row.table === 'pool'
          ? stats.pools[row.name]
          : row.table === 'type'
            ? stats.types[row.name]
            : stats.counters;
      const expected = where[row.figure];
      assert.equal(
        row.value,
        Array.isArray(expected) ? expected.join(' ') : String(expected),
        `${row.table} ${row.name} ${row.figure}`,
      );
      figures++;
    }
    const inJson =
      Object.values(stats.pools).reduce((s: number, p) => s + Object.keys(p as object).length, 0) +
      Object.values(stats.types).reduce((s: number, t) => s + Object.keys(t as object).length, 0) +
      Object.keys(stats.counters).length;
    assert.equal(figures, inJson, 'every figure of the JSON is in the CSV');
  });
});
