/**
 * The report's real-consumers section (issue 15 items 4 and 6): the bpf-real image histogram beside
 * the published mix, bucketed from the traces themselves, and the ftrace-real patch counts with
 * each design's cost of the run.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ModuleLoads } from '../src/metrics/consumers.js';
import { consumerFigures } from '../src/metrics/consumers.js';
import {
  consumersHtml,
  consumersMarkdown,
  moduleLoadsHtml,
  moduleLoadsMarkdown,
} from '../src/metrics/report/consumers-view.js';
import { bpfChurn } from '../src/workloads/bpf.js';
import { BPF_SIZE_BUCKETS, bpfImageHistogram } from '../src/workloads/bpf-real.js';
import { assertUsageError, execmem } from './cli-helpers.js';
import { reportFixture } from './report-fixture.js';

const figures = consumerFigures({ seed: 1, scale: 0.1 });

test('each histogram bucket counts exactly the bpf allocs of its size range', () => {
  const trace = bpfChurn({ seed: 2, scale: 0.1 });
  const h = bpfImageHistogram(trace);
  const sizes = trace.events.flatMap((e) => (e.op === 'alloc' && e.type === 'bpf' ? [e.sizeBytes] : []));
  assert.equal(h.totalLoads, sizes.length);
  BPF_SIZE_BUCKETS.forEach((bound, i) => {
    const lo = i === 0 ? 0 : BPF_SIZE_BUCKETS[i - 1];
    const inBucket = sizes.filter((s) => s > lo && (s <= bound || i === BPF_SIZE_BUCKETS.length - 1)).length;
    assert.equal(h.loads[i], inBucket, `bucket <= ${bound}`);
  });
  const sorted = [...sizes].sort((a, b) => a - b);
  assert.equal(h.medianImageBytes, sorted[Math.floor(sorted.length / 2)]);
});

test('a trace without BPF loads is refused, not shown as an empty histogram', () => {
  assert.throws(() => bpfImageHistogram({ ...bpfChurn({ seed: 1, scale: 0.1 }), events: [] }));
});

test('real BPF images are smaller than the published mix (seccomp filters dominate a machine)', () => {
  assert.ok(figures.bpf.real.medianImageBytes < figures.bpf.published.medianImageBytes);
  assert.ok(figures.ftrace.sitePatches > 0 && figures.ftrace.ftraceTrampolines > 0);
});

test('markdown and HTML show both histograms, the ftrace counts and one cost row per design', () => {
  const data = reportFixture();
  const runs = data.runs.map((r, i) => (i === 0 ? { ...r, workload: 'ftrace-real' } : r));
  const withFtrace = { ...data, runs };
  const md = consumersMarkdown(withFtrace, figures);
  assert.match(md, /## Real consumers/);
  assert.match(md, new RegExp(`${figures.ftrace.sitePatches.toLocaleString('en-US')} site patches`));
  for (const p of runs[0].policies) assert.match(md, new RegExp(`\\| ${p.name}( \\(ours\\))? \\|`));
  // Nine buckets, each a row with both columns.
  assert.equal(md.split('\n').filter((l) => /^\| (≤|\d).*\|.*%.*%/.test(l)).length, BPF_SIZE_BUCKETS.length);
  const html = consumersHtml(withFtrace, figures);
  assert.match(html, /id="consumers"/);
  assert.equal((html.match(/<tr>/g) ?? []).length, 1 + BPF_SIZE_BUCKETS.length + 1 + runs[0].policies.length);
  // Without an ftrace-real run there is no cost table, only the counts.
  assert.doesNotMatch(consumersMarkdown(data, figures), /modelled kernel time \|/);
});

test('real module loading: one row per design with loaded/requested and PLT entries; --load-modules on generic is usage', () => {
  const loads: ModuleLoads = {
    packageName: 'linux-image-test-arm64',
    arch: 'arm64',
    rows: [
      {
        policy: 'execmem',
        requested: 10,
        loaded: 10,
        failed: 0,
        unresolvedSymbols: 0,
        relocOverflows: 0,
        relocations: 1234,
        pltEntries: 7,
        wxViolations: 0,
      },
      {
        policy: 'module_alloc',
        requested: 10,
        loaded: 9,
        failed: 1,
        unresolvedSymbols: 2,
        relocOverflows: 0,
        relocations: 1200,
        pltEntries: 31,
        wxViolations: 0,
      },
    ],
  };
  const md = moduleLoadsMarkdown(loads);
  assert.match(md, /\| execmem \| 10 \/ 10 \| 0 \| 0 \| 0 \| 1,234 \| 7 \| 0 \|/);
  assert.match(md, /\| module_alloc \| 9 \/ 10 \| 1 \| 2 \| 0 \| 1,200 \| 31 \| 0 \|/);
  assert.equal((moduleLoadsHtml(loads).match(/<tr>/g) ?? []).length, 3);
  const r = execmem(['report', '--arch', 'generic', '--load-modules', '--out', '/tmp/execmem-never-written']);
  assertUsageError(r, /--load-modules needs --arch x86_64 or arm64/);
});
