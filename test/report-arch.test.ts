/**
 * The report speaks each architecture's language and ranks only what says something about Linux
 * (issue 11 items 11 and 12), on hand-made data (report-fixture.ts: made-up numbers):
 * - no table, chart or markdown line shows or ranks the simulator's speed;
 * - arm64 runs say "linear map" and "broadcast TLBIs", never the x86 words;
 * - global-flush columns are the arch's own kinds plus any kind that is non-zero;
 * - a design that equals another on the arch is one "= other" line when its figures are the
 *   other's, is never ranked or charted, and keeps its figures (labelled) otherwise.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { tableColumns } from '../src/metrics/report/format.js';
import {
  chartIds,
  type ReportData,
  renderHtml,
  renderMarkdown,
  renderTerminalSummary,
  type WorkloadRun,
} from '../src/metrics/report/index.js';
import { globalFlushColumns, sameAsRows, vocabularyFor } from '../src/metrics/report/vocabulary.js';
import { reportFixture } from './report-fixture.js';

const SPEED = /speed|ops\/s|opsPerSecond|throughput|simulator/i;
const X86_WORDS = /DirectMap|direct map|direct-map|skylake|text_poke/i;

/** The fixture as an arm64 run: no IPI shootdowns (arm64 broadcasts), a made-up TLB profile name. */
function arm64Fixture(): ReportData {
  const data = reportFixture();
  return {
    ...data,
    runs: data.runs.map((r) => ({
      ...r,
      arch: 'arm64',
      tlb: 'made-up-arm64-profile',
      policies: r.policies.map((p) => ({
        ...p,
        metrics: {
          ...p.metrics,
          broadcastFlushes: p.metrics.shootdowns + 1,
          shootdowns: 0,
          ipis: 0,
          allFlushEvents: p.metrics.localFlushes + p.metrics.shootdowns + 1,
        },
      })),
    })),
  };
}

/** Adds an `execmem-rox` row declared equal to `module_alloc`, with the given metrics. */
function withSameAs(
  data: ReportData,
  same: (run: WorkloadRun) => WorkloadRun['policies'][number]['metrics'],
) {
  return {
    ...data,
    runs: data.runs.map((r) => ({
      ...r,
      policies: [
        ...r.policies,
        {
          name: 'execmem-rox',
          modelled: true,
          kernel: 'Linux fixture rox',
          sameAs: 'module_alloc',
          wxHoles: null,
          description: 'fixture design execmem-rox: made-up text',
          metrics: same(r),
          counters: {},
          kernelTime: r.policies[0].kernelTime,
          area: null,
        },
      ],
    })),
  };
}

function tableLines(md: string): string[] {
  return md.split('\n').filter((l) => l.startsWith('|'));
}

function htmlTables(html: string): string[] {
  return html.match(/<table class="results"[\s\S]*?<\/table>/g) ?? [];
}

describe('the simulator speed is in no table, chart or ranking', () => {
  for (const [arch, data] of [
    ['x86_64', reportFixture()],
    ['arm64', arm64Fixture()],
  ] as const) {
    it(`${arch}: headings, chart ids, titles and captions never name it`, () => {
      for (const run of data.runs) {
        for (const c of tableColumns(run)) assert.doesNotMatch(`${c.key} ${c.heading}`, SPEED);
      }
      const { html, charts } = renderHtml(data);
      for (const c of charts) assert.doesNotMatch(`${c.id} ${c.title} ${c.caption}`, SPEED, c.id);
      for (const id of chartIds(data)) assert.doesNotMatch(id, SPEED);
      for (const t of htmlTables(html)) assert.doesNotMatch(t, SPEED);
      for (const l of tableLines(renderMarkdown(data))) assert.doesNotMatch(l, SPEED);
      assert.doesNotMatch(renderTerminalSummary(data), SPEED);
      // The at-a-glance verdicts rank figures too: none of them is speed.
      const cells = html.match(/<td class="verdict[\s\S]*?<\/td>/g) ?? [];
      assert.ok(cells.length > 0);
      for (const c of cells) assert.doesNotMatch(c, SPEED);
    });
  }
});

describe('arm64 runs are labelled in arm64 words', () => {
  it('vocabulary: linear map, broadcast TLBIs, fixmap; x86: direct map, shootdowns and IPIs, text_poke', () => {
    const arm = vocabularyFor('arm64');
    assert.equal(arm.physMap, 'linear map');
    assert.equal(arm.physMap4kGrowth, 'linear map 4K +');
    assert.equal(arm.physMapSplits, 'linear-map splits');
    assert.equal(arm.patching, 'fixmap');
    const x86 = vocabularyFor('x86_64');
    assert.equal(x86.physMap4kGrowth, 'DirectMap4k +');
    assert.equal(x86.patching, 'text_poke');
  });

  it('global-flush columns: the arch kinds, plus any kind that is non-zero', () => {
    const zero = { shootdowns: 0, ipis: 0, broadcastFlushes: 0 };
    assert.deepEqual(globalFlushColumns('arm64', [zero]), ['broadcastFlushes']);
    assert.deepEqual(globalFlushColumns('x86_64', [zero]), ['shootdowns', 'ipis']);
    assert.deepEqual(globalFlushColumns('arm64', [zero, { ...zero, shootdowns: 2, ipis: 6 }]), [
      'shootdowns',
      'ipis',
      'broadcastFlushes',
    ]);
    assert.deepEqual(globalFlushColumns('x86_64', [{ ...zero, broadcastFlushes: 1 }]), [
      'shootdowns',
      'ipis',
      'broadcastFlushes',
    ]);
  });

  it('page, markdown and terminal summary: linear map and broadcast TLBIs, no x86 words', () => {
    const data = arm64Fixture();
    const { html: page, charts } = renderHtml(data);
    // The cost table quotes publications measured on x86 CPUs (Skylake, text_poke): their words
    // are facts about the sources, so only the cost table may carry them.
    const html = page.replace(/<section class="cost-table">[\s\S]*?<\/section>/, '');
    const md = renderMarkdown(data).replace(/## The cost table[\s\S]*?(?=\n## )/, '');
    assert.notEqual(html, page, 'the page has its cost table');
    const term = renderTerminalSummary(data);
    for (const text of [html, md, term]) {
      assert.doesNotMatch(text, X86_WORDS);
      assert.match(text, /broadcast TLBIs/);
      assert.match(text, /made-up-arm64-profile/, "the TLB profile is the run's");
    }
    for (const text of [html, md]) {
      assert.match(text, /linear map 4K \+/);
      assert.match(text, /linear-map splits/);
      assert.match(text, /fixmap writes/);
      assert.match(text, /all flush events/);
    }
    assert.match(term, /linear map 4K \+/);
    // No shootdown or IPI column where every figure is 0 on arm64.
    for (const t of htmlTables(html)) assert.doesNotMatch(t, /<th>(shootdowns|IPIs)<\/th>/);
    assert.deepEqual(charts.map((c) => c.id).slice(0, 6), [
      'kernel-time',
      'overhead',
      'large-page-share',
      'broadcast-tlbis',
      'flush-events',
      'linear-map-4k',
    ]);
    for (const c of charts) assert.doesNotMatch(`${c.title} ${c.caption}`, X86_WORDS, c.id);
  });

  it('x86 page keeps its words: DirectMap4k, shootdowns and IPIs, text_poke', () => {
    const data = reportFixture();
    const tables = htmlTables(renderHtml(data).html).join('');
    for (const h of [
      'DirectMap4k +',
      'DM splits',
      'shootdowns',
      'IPIs',
      'all flush events',
      'text_poke writes',
    ])
      assert.ok(tables.includes(`<th>${h}</th>`), h);
    assert.ok(!tables.includes('<th>broadcast TLBIs</th>'), 'no broadcast column when none happened on x86');
  });

  it('all flush events stands next to local flushes and is not ranked', () => {
    const cols = tableColumns(reportFixture().runs[0]);
    const i = cols.findIndex((c) => c.key === 'localFlushes');
    assert.equal(cols[i + 1].key, 'allFlushEvents');
    assert.equal(cols[i + 1].better, null);
  });
});

describe('a design that equals another on the arch', () => {
  it('equal figures: one "= other on arm64" line, never ranked, no bars of its own', () => {
    const base = arm64Fixture();
    const data = withSameAs(base, (r) => ({ ...r.policies[0].metrics }));
    const rows = sameAsRows('arm64', data.runs[0].policies);
    assert.deepEqual(rows.at(-1), { collapsed: true, label: '= module_alloc on arm64 (no ROX cache)' });
    const { html, charts } = renderHtml(data);
    const row = html.match(/<tr><td>execmem-rox[\s\S]*?<\/tr>/)?.[0] ?? '';
    assert.match(row, /<td class="same" colspan="\d+">= module_alloc on arm64 \(no ROX cache\)<\/td>/);
    assert.match(row, /Linux fixture rox/, 'the kernel version stands next to the name');
    assert.doesNotMatch(row, /class="best"/);
    // module_alloc's best cells are still marked: the duplicate takes nothing from it.
    // (first cell: kernel time; module_alloc has the fixture's lowest and its lowest mapped bytes).
    assert.match(
      html,
      /<td>module_alloc<span class="kernel">Linux fixture 0<\/span><\/td><td class="best">[^<]*<\/td><td>[^<]*<\/td><td class="best">/,
    );
    const overhead = charts.find((c) => c.id === 'overhead');
    assert.ok(overhead && !overhead.svg.includes('>execmem-rox<'), 'not a chart series');
    const md = tableLines(renderMarkdown(data)).find((l) => l.startsWith('| execmem-rox'));
    assert.equal(
      md,
      // The first of the workload's tables (format.ts COLUMN_GROUPS): its columns of the first group.
      `| execmem-rox (Linux fixture rox) | = module_alloc on arm64 (no ROX cache) |${'  |'.repeat(tableColumns(data.runs[0]).filter((c) => c.group === 'memory').length - 1)}`,
    );
    assert.match(
      renderTerminalSummary(data),
      /execmem-rox +Linux fixture rox += module_alloc on arm64 \(no ROX cache\)\n/,
    );
    // Linux designs carry their kernel version in markdown; ours says so.
    assert.match(renderMarkdown(data), /\| module_alloc \(Linux fixture 0\) \|/);
    assert.match(renderMarkdown(data), /\| \*\*execmem\*\* \(ours\) \|/);
  });

  it('different figures: kept, and labelled as differing from the declared equal', () => {
    const data = withSameAs(arm64Fixture(), (r) => ({ ...r.policies[0].metrics, overhead: 99 }));
    const rows = sameAsRows('arm64', data.runs[0].policies);
    assert.equal(rows.at(-1)?.collapsed, false);
    assert.match(rows.at(-1)?.label ?? '', /^expected = module_alloc on arm64 .*figures differ/);
    const { html } = renderHtml(data);
    assert.match(html, /<td>execmem-rox \[expected = module_alloc on arm64[^<]*\]<span class="kernel">/);
    assert.match(html, /<td>99.00x<\/td>/, 'its own figures are shown');
  });

  it('the other design not in the run: figures kept with the note', () => {
    const base = arm64Fixture();
    const data = withSameAs(
      { ...base, runs: base.runs.map((r) => ({ ...r, policies: r.policies.slice(1) })) },
      (r) => ({ ...r.policies[0].metrics }),
    );
    const rows = sameAsRows('arm64', data.runs[0].policies);
    assert.deepEqual(rows.at(-1), { collapsed: false, label: '= module_alloc on arm64 (no ROX cache)' });
    assert.match(
      renderMarkdown(data),
      /\| execmem-rox \(Linux fixture rox\) \[= module_alloc on arm64 \(no ROX cache\)\] \| (\*\*)?\d/,
    );
  });
});
