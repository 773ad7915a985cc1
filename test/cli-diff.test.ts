/**
 * `execmem diff A.json B.json` on two generated compare outputs (and a report output): the
 * change per design and figure agrees with the two files, designs in one run only are listed,
 * differences that still compare are said, runs that do not compare are refused (exit 2), and
 * --json / --csv carry the same numbers.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { type CompareOptions, runCompare } from '../src/metrics/compare.js';
import { parseCsv } from '../src/metrics/csv.js';
import { DIRECTIONS, diffFigure } from '../src/metrics/diff.js';
import { METRIC_KEYS } from '../src/metrics/report/types.js';
import { assertUsageError, execmem } from './cli-helpers.js';
import { withTempDir } from './helpers/tempdir.js';

type Doc = ReturnType<typeof runCompare>;

function save(dir: string, name: string, opts: Partial<CompareOptions>): { path: string; doc: Doc } {
  const doc = runCompare({ workload: 'trampolines', scale: 0.004, ...opts });
  const path = join(dir, name);
  writeFileSync(path, JSON.stringify(doc, null, 2));
  return { path, doc };
}

interface FigureJson {
  key: string;
  a: number;
  b: number;
  change: number;
  relative: number | null;
  verdict: string | null;
}

describe('diffFigure', () => {
  it('change, relative change and verdict by the figure direction', () => {
    assert.deepEqual(diffFigure('shootdowns', 10, 5), {
      key: 'shootdowns',
      a: 10,
      b: 5,
      change: -5,
      relative: -0.5,
      verdict: 'better',
    });
    assert.equal(diffFigure('largePageShare', 0.5, 0.25).verdict, 'worse');
    assert.equal(diffFigure('liveBytes', 1, 2).verdict, null);
    assert.equal(diffFigure('mappedBytes', 0, 4096).relative, null);
    assert.equal(diffFigure('mappedBytes', 0, 0).relative, 0);
    assert.equal(diffFigure('mappedBytes', 7, 7).verdict, null);
    assert.deepEqual(Object.keys(DIRECTIONS).sort(), [...METRIC_KEYS].sort());
  });
});

describe('execmem diff', () => {
  it('prints the change of every figure that moved, per design, aligned, with a legend', () => {
    withTempDir('diff-', (dir) => {
      const a = save(dir, 'a.json', { policies: ['module_alloc', 'bpf_prog_pack', 'execmem'] });
      const b = save(dir, 'b.json', { policies: ['module_alloc', 'execmem', 'execmem-6.10'], seed: 2 });
      const r = execmem(['diff', a.path, b.path]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(
        r.stdout,
        /^execmem diff: A = .*a\.json \(compare --json\), B = .*b\.json \(compare --json\)/,
      );
      assert.match(r.stdout, /\ntrampolines on x86_64\n/);
      assert.match(r.stdout, /note: seed differs: 1 in A, 2 in B/);
      assert.match(r.stdout, /\npolicy\s+figure\s+A\s+B\s+change\s+relative/);
      assert.match(r.stdout, /designs only in A: bpf_prog_pack/);
      assert.match(r.stdout, /designs only in B: execmem-6.10/);
      assert.match(r.stdout, /change = B - A/);
      assert.match(r.stdout, /Only the figures that changed are shown; --all shows every figure/);
      // aligned: every row of the table has its columns at the header's positions
      const lines = r.stdout.split('\n');
      const head = lines.findIndex((l) => l.startsWith('policy '));
      const rule = lines[head + 1];
      assert.match(rule, /^-+( +-+)+$/);
      const widths = rule.split(/ +/).map((d) => d.length);
      for (const l of lines.slice(head + 2)) {
        if (l === '' || l.startsWith('designs only')) break;
        if (/^\S*\s+\(\d+ figures unchanged\)$|no figure changed/.test(l)) continue;
        assert.ok(l.length <= widths.reduce((s, w) => s + w + 2, -2), `row wider than the table: ${l}`);
      }

      const j = execmem(['diff', a.path, b.path, '--json']);
      assert.equal(j.status, 0, j.stderr);
      const d = JSON.parse(j.stdout);
      assert.deepEqual(d.workloadsOnlyInA, []);
      const w = d.workloads[0];
      assert.deepEqual(
        w.designs.map((x: { name: string }) => x.name),
        ['module_alloc', 'execmem'],
      );
      assert.deepEqual(w.onlyInA, ['bpf_prog_pack']);
      assert.deepEqual(w.onlyInB, ['execmem-6.10']);
      for (const design of w.designs as { name: string; figures: FigureJson[] }[]) {
        const pa = a.doc.policies.find((p) => p.name === design.name);
        const pb = b.doc.policies.find((p) => p.name === design.name);
        assert.ok(pa && pb);
        assert.deepEqual(
          design.figures.map((f) => f.key),
          [...METRIC_KEYS],
        );
        for (const f of design.figures) {
          const key = f.key as (typeof METRIC_KEYS)[number];
          assert.equal(f.a, pa.metrics[key]);
          assert.equal(f.b, pb.metrics[key]);
          assert.equal(f.change, f.b - f.a);
          if (f.a !== 0) assert.equal(f.relative, (f.b - f.a) / Math.abs(f.a));
        }
      }

      const csv = execmem(['diff', a.path, b.path, '--csv']);
      assert.equal(csv.status, 0, csv.stderr);
      const [header, ...rows] = parseCsv(csv.stdout);
      assert.deepEqual(header, [
        'workload',
        'arch',
        'policy',
        'figure',
        'a',
        'b',
        'change',
        'relative',
        'verdict',
      ]);
      const figures = (w.designs as { name: string; figures: FigureJson[] }[]).flatMap((x) =>
        x.figures.map((f) => [x.name, f]),
      ) as [string, FigureJson][];
      assert.equal(rows.length, figures.length);
      rows.forEach((row, i) => {
        const [name, f] = figures[i];
        assert.deepEqual(row.slice(0, 4), ['trampolines', 'x86_64', name, f.key]);
        assert.deepEqual(row.slice(4, 7).map(Number), [f.a, f.b, f.change]);
        assert.equal(row[7] === '' ? null : Number(row[7]), f.relative);
        assert.equal(row[8] === '' ? null : row[8], f.verdict);
      });
    });
  });

  it('two identical runs: no figure changed; --all shows them all', () => {
    withTempDir('diff-', (dir) => {
      const a = save(dir, 'a.json', { policies: ['module_alloc', 'execmem'] });
      const r = execmem(['diff', a.path, a.path]);
      assert.equal(r.status, 0, r.stderr);
      assert.equal((r.stdout.match(/no figure changed/g) ?? []).length, 2);
      const all = execmem(['diff', a.path, a.path, '--all']);
      assert.match(all.stdout, /module_alloc\s+kernel time \(modelled\)\s+\S+ \S+\s+\S+ \S+\s+=/);
      assert.doesNotMatch(all.stdout, /figures unchanged/);
    });
  });

  it('compares a report output with a compare output of the same workload', () => {
    withTempDir('diff-', (dir) => {
      const a = save(dir, 'a.json', { policies: ['module_alloc', 'execmem'] });
      const rep = execmem([
        'report',
        '--workloads',
        'trampolines,bpf-churn',
        '--policies',
        'module_alloc,execmem',
        '--scale',
        '0.004',
        '--out',
        join(dir, 'report'),
        '--json',
      ]);
      assert.equal(rep.status, 0, rep.stderr);
      const b = join(dir, 'report.json');
      writeFileSync(b, rep.stdout);
      const r = execmem(['diff', a.path, b, '--json']);
      assert.equal(r.status, 0, r.stderr);
      const d = JSON.parse(r.stdout);
      assert.deepEqual(d.workloadsOnlyInB, ['bpf-churn']);
      // same workload, seed and scale, same code: the same figures
      for (const design of d.workloads[0].designs) assert.equal(design.changed, 0, design.name);
      const text = execmem(['diff', a.path, b]);
      assert.match(text.stdout, /B = .*report\.json \(report --json\)/);
      assert.match(text.stdout, /workloads only in B: bpf-churn/);
    });
  });

  it('refuses runs that do not compare, and files that are not runs', () => {
    withTempDir('diff-', (dir) => {
      const a = save(dir, 'a.json', { policies: ['execmem'] });
      const arm = save(dir, 'arm.json', { policies: ['execmem'], arch: 'arm64' });
      assertUsageError(
        execmem(['diff', a.path, arm.path]),
        /cannot diff: trampolines ran on x86_64 in .*a\.json and on arm64 in .*arm\.json: figures of different arches do not compare/,
      );
      const other = join(dir, 'other.json');
      writeFileSync(
        other,
        JSON.stringify(runCompare({ workload: 'bpf-churn', scale: 0.004, policies: ['execmem'] })),
      );
      assertUsageError(
        execmem(['diff', a.path, other]),
        /cannot diff: no workload in common: .*a\.json ran trampolines; .*other\.json ran bpf-churn/,
      );
      const trace = join(dir, 'trace.json');
      writeFileSync(trace, JSON.stringify({ format: 'execmem-trace/1', name: 'x', seed: 1, events: [] }));
      assertUsageError(
        execmem(['diff', a.path, trace]),
        /B: .*trace\.json is neither the output of 'execmem compare --json'/,
      );
      const broken = join(dir, 'broken.json');
      writeFileSync(
        broken,
        '{"workload": "x", "arch": "x86_64", "policies": [{"name": "p", "metrics": {}}]}',
      );
      assertUsageError(
        execmem(['diff', broken, a.path]),
        /A: .*broken\.json\.policies\[0\] \(p\) has no number for modelledKernelTimeNs/,
      );
      assertUsageError(
        execmem(['diff', join(dir, 'nope.json'), a.path]),
        /cannot read .*nope\.json \(ENOENT\)/,
      );
      writeFileSync(broken, 'not json');
      assertUsageError(execmem(['diff', a.path, broken]), /broken\.json is not JSON/);
      assertUsageError(execmem(['diff', a.path]), /missing required argument 'b'/);
    });
  });
});
