/**
 * The report renderer on a fixture: the page has one SVG chart per documented chart id, each
 * with drawn bars carrying the data; area pictures place tiles where regions are; markdown and
 * terminal tables carry the numbers; bad data is refused.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { toWorkloadRun } from '../src/cli/commands/report.js';
import { runCompare } from '../src/metrics/compare.js';
import { areaLegendHtml } from '../src/metrics/report/area-map.js';
import {
  chartHeightPx,
  chartIds,
  logAxis,
  MISSING_LABEL,
  POLICY_COLOURS,
  renderAreaMap,
  renderHtml,
  renderMarkdown,
  renderTerminalSummary,
  summaryLines,
  TYPE_COLOURS,
  writeReport,
} from '../src/metrics/report/index.js';
import { policyByName } from '../src/policies/index.js';
import { WORKLOADS } from '../src/workloads/registry.js';
import { FIXTURE_POLICIES, FIXTURE_WORKLOADS, reportFixture } from './report-fixture.js';

const SZ_2M = 2 * 1024 * 1024;

function figures(html: string): Map<string, string> {
  const out = new Map<string, string>();
  const re = /<figure class="chart" data-chart="([^"]+)">([\s\S]*?)<\/figure>/g;
  for (let m = re.exec(html); m; m = re.exec(html)) out.set(m[1], m[2]);
  return out;
}

test('page has exactly the documented charts, each an SVG with bars', () => {
  const data = reportFixture();
  const { html, charts } = renderHtml(data);
  const ids = chartIds(data);
  assert.equal(ids.length, 9);
  assert.deepEqual(
    charts.map((c) => c.id),
    ids,
  );
  const found = figures(html);
  assert.deepEqual([...found.keys()], ids);
  for (const [id, inner] of found) {
    const height = chartHeightPx(FIXTURE_WORKLOADS.length, FIXTURE_POLICIES.length);
    assert.match(
      inner,
      new RegExp(`<svg[^>]*width="560"[^>]*height="${height}"`),
      `${id}: svg of the chart size`,
    );
    // ECharts draws every bar as a <path>; legends and axes add a few more.
    const paths = inner.match(/<path /g)?.length ?? 0;
    assert.ok(paths >= 4, `${id}: expected drawn paths, found ${paths}`);
  }
});

test('charts carry the data: legends name every policy, axes every workload', () => {
  const data = reportFixture();
  const overhead = renderHtml(data).charts.find((c) => c.id === 'overhead');
  assert.ok(overhead);
  for (const p of FIXTURE_POLICIES) assert.ok(overhead.svg.includes(`>${p}<`), `legend has ${p}`);
  for (const w of FIXTURE_WORKLOADS) assert.ok(overhead.svg.includes(`>${w}<`), `axis has ${w}`);
  // A chart of different data must differ (the values reach the SVG).
  const changed = reportFixture();
  const bumped = {
    ...changed,
    runs: changed.runs.map((r) => ({
      ...r,
      policies: r.policies.map((p) => ({
        ...p,
        metrics: { ...p.metrics, overhead: p.metrics.overhead * 7 },
      })),
    })),
  };
  const other = renderHtml(bumped).charts.find((c) => c.id === 'overhead');
  assert.notEqual(other?.svg, overhead.svg);
});

test('tables: one per workload, our row marked, best values marked', () => {
  const data = reportFixture();
  const { html } = renderHtml(data);
  const tables = html.match(/<table class="results"/g) ?? [];
  assert.equal(tables.length, 2 * FIXTURE_WORKLOADS.length, 'two column groups per workload');
  assert.ok(html.includes('<tr class="ours"><td>execmem (ours)</td>'));
  // module_alloc has the lowest kernel time and mapped bytes in the fixture: its cells are marked
  // best (kernel time first, then live, not ranked, then mapped). Its kernel version stands under
  // its name.
  assert.match(
    html,
    /<td>module_alloc<span class="kernel">Linux fixture 0<\/span><\/td><td class="best">[^<]*<\/td><td>[^<]*<\/td><td class="best">/,
  );
  assert.ok(html.includes('What is modelled and what is real'));
  assert.ok(html.includes('Test fixture: made-up numbers.'));
});

test('area picture: the used span, tiles scaled to it, one tile per mapped region at its place', () => {
  const data = reportFixture();
  const a = data.runs[0].policies[0].area;
  assert.ok(a);
  const pic = renderAreaMap(a, 'x');
  // Mapped blocks 1, 4 and 11 of 65 (the first full block after the unaligned start is index 1):
  // the used span 1..11 plus one block each side.
  assert.equal(pic.tileCount, 13);
  assert.match(pic.note ?? '', /showing blocks 0\.\.12 of 65/);
  assert.equal(pic.mappedTiles, 3);
  // 13 tiles fill the width: tiles far larger than the 10 px of a whole-area picture.
  assert.equal(pic.tilePx, 40);
  const tiles = pic.svg.match(/<g class="tile"[^>]*>/g) ?? [];
  assert.equal(tiles.length, 3);
  assert.ok(tiles[0].includes('data-type="module_text"'));
  assert.ok(tiles[0].includes('data-occupancy="0.750"'));
  assert.ok(tiles[1].includes('data-type="module_data"'));
  assert.ok(tiles[2].includes('data-type="none"'));
  // Tile index 1 of a 44 px step, framed dark (one 2 MiB leaf).
  assert.match(pic.svg, /<rect x="45" y="1" width="38" height="38" fill="#1f4e9c"[^>]*stroke="#111827"/);
  // Live share as fill height: 75% of the 38 px inside.
  assert.match(pic.svg, /<rect class="live" x="45" y="10\.50" width="38" height="28\.50"/);
  // Mixed region gets a type-mix strip: one rect per type.
  const firstTile = pic.svg.slice(pic.svg.indexOf('<g class="tile"'), pic.svg.indexOf('</g>'));
  assert.equal(firstTile.match(/<rect class="mix"/g)?.length, 2);
  // A whole-area span of many blocks keeps small tiles.
  const wide = renderAreaMap(
    {
      ...a,
      regions: [
        { ...a.regions[0], va: a.regions[0].va },
        { ...a.regions[0], va: a.regions[0].va + 60 * SZ_2M },
      ],
    },
    'wide',
  );
  assert.ok(wide.tilePx < 12, `${wide.tilePx}`);
});

test('area legend: every type, its colour, far apart from every other', () => {
  const legend = areaLegendHtml();
  for (const [type, colour] of Object.entries(TYPE_COLOURS)) {
    assert.ok(
      legend.includes(`data-type="${type}"><span class="swatch" style="background:${colour}">`),
      type,
    );
  }
  assert.match(legend, /one 2 MiB leaf/);
  assert.match(legend, /filled height = live share/);
  // CIE76 distance between every two type colours (sRGB D65 -> Lab).
  const lab = (hex: string): number[] => {
    const lin = [1, 3, 5].map((i) => {
      const c = Number.parseInt(hex.slice(i, i + 2), 16) / 255;
      return c > 0.04045 ? ((c + 0.055) / 1.055) ** 2.4 : c / 12.92;
    });
    const [r, g, b] = lin;
    const xyz = [
      (r * 0.4124 + g * 0.3576 + b * 0.1805) / 0.95047,
      r * 0.2126 + g * 0.7152 + b * 0.0722,
      (r * 0.0193 + g * 0.1192 + b * 0.9505) / 1.08883,
    ].map((v) => (v > 0.008856 ? Math.cbrt(v) : 7.787 * v + 16 / 116));
    return [116 * xyz[1] - 16, 500 * (xyz[0] - xyz[1]), 200 * (xyz[1] - xyz[2])];
  };
  const colours = Object.values(TYPE_COLOURS);
  for (let i = 0; i < colours.length; i++)
    for (let j = i + 1; j < colours.length; j++) {
      const d = Math.hypot(...lab(colours[i]).map((v, k) => v - lab(colours[j])[k]));
      assert.ok(d > 30, `${colours[i]} and ${colours[j]} are ${d.toFixed(1)} apart`);
    }
  const { html } = renderHtml(reportFixture());
  assert.ok(html.includes('class="legend area-legend"'), 'the page carries the legend');
});

test('markdown and terminal summaries carry every workload and policy', () => {
  const data = reportFixture();
  const md = renderMarkdown(data);
  const term = renderTerminalSummary(data);
  for (const w of FIXTURE_WORKLOADS) {
    assert.ok(md.includes(`## ${w}`));
    assert.ok(term.includes(`${w} (x86_64, seed 1, skylake TLBs)`));
  }
  for (const p of FIXTURE_POLICIES) assert.ok(term.includes(p));
  assert.ok(md.includes('**execmem** (ours)'));
  assert.ok(md.includes('| 1.00x |') || md.includes('**1.00x**'));
  assert.ok(!term.includes('undefined') && !md.includes('NaN'));
});

test('bad data is refused with the field named', () => {
  const data = reportFixture();
  const broken = {
    ...data,
    runs: [
      {
        ...data.runs[0],
        policies: [
          {
            ...data.runs[0].policies[0],
            metrics: { ...data.runs[0].policies[0].metrics, overhead: Number.NaN },
          },
        ],
      },
    ],
  };
  assert.throws(() => renderHtml(broken), /bpf-churn\/module_alloc\.overhead/);
  assert.throws(() => renderHtml({ ...data, runs: [] }), /at least one workload/);
});

test('writeReport writes index.html and summary.md', () => {
  const dir = mkdtempSync(join(tmpdir(), 'execmem-report-'));
  const written = writeReport(reportFixture(), dir);
  assert.equal(written.chartCount, 9);
  assert.equal(written.areaPictureCount, 5); // 6 policy runs, one without a map
  assert.ok(readFileSync(written.htmlPath, 'utf8').startsWith('<!doctype html>'));
  assert.ok(readFileSync(written.markdownPath, 'utf8').startsWith('# execmem report'));
});

test('summary: a leader per workload and figure, computed from the figures; ours trailing says why', () => {
  const data = reportFixture();
  const { html } = renderHtml(data);
  const md = renderMarkdown(data);
  assert.ok(html.indexOf('id="summary"') < html.indexOf('id="kernel-time"'), 'the summary opens the page');
  for (const run of data.runs) {
    const lines = summaryLines(run);
    assert.equal(lines.length, 7, `${run.workload}: every headline figure`);
    for (const { verdict: v, text } of lines) {
      // The leaders are exactly the designs printing the best value.
      const values = run.policies.map((p) => p.metrics[v.figure.key]);
      const best = v.figure.better === 'low' ? Math.min(...values) : Math.max(...values);
      const shown = v.figure.format({ ...run.policies[0].metrics, [v.figure.key]: best });
      const expected = run.policies.filter((p) => v.figure.format(p.metrics) === shown).map((p) => p.name);
      assert.deepEqual(v.leaders, expected, `${run.workload}/${v.figure.key}`);
      assert.ok(text.includes(expected[0]), text);
      assert.ok(md.includes(`- ${text}`), 'the same line in summary.md');
      if (!v.leaders.includes('execmem')) assert.match(text, /ours .*; why: .{10,}/);
    }
  }
  // The fixture's module_alloc has the lowest kernel time: it leads, by its margin over the next.
  const kt = summaryLines(data.runs[0])[0].text;
  assert.match(
    kt,
    /^kernel time \(modelled\): module_alloc leads with [\d.]+ µs, [\d.]+x lower than bpf_prog_pack/,
  );
  // Descriptions of every design (with its kernel version) and workload, as the data carries them.
  for (const p of data.runs[0].policies)
    assert.ok(md.includes(`- **${p.name}** (${p.modelled ? p.kernel : 'ours'}): ${p.description}`));
  for (const r of data.runs) assert.ok(html.includes(`<dd>${r.description}</dd>`));
});

test('log charts: a 0 is labelled 0 at the base, a missing design n/a, every bar labelled', () => {
  const axis = logAxis([0, 1, 139, 135_757]);
  assert.equal(axis.position(0), 0);
  assert.equal(axis.position(1), 1, 'the smallest positive value is one gridline long');
  assert.ok(axis.position(139) > 3 && axis.position(139) < 4);
  assert.equal(axis.max, 7);
  assert.equal(axis.tick(0), '0');
  assert.equal(axis.tick(6), '100k');
  const data = reportFixture();
  // module_alloc's shootdowns are 0 in the fixture; drop bpf_prog_pack from the second run.
  const missing = {
    ...data,
    runs: data.runs.map((r, i) =>
      i === 1 ? { ...r, policies: r.policies.filter((p) => p.name !== 'bpf_prog_pack') } : r,
    ),
  };
  const charts = renderHtml(missing).charts;
  const shootdowns = charts.find((c) => c.id === 'shootdowns');
  assert.ok(shootdowns);
  const labels = [...shootdowns.svg.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]);
  assert.ok(labels.includes('0'), 'the zero is labelled');
  assert.ok(labels.includes(MISSING_LABEL), 'the missing design is labelled n/a');
  for (const v of ['10', '20']) assert.ok(labels.includes(v), `value label ${v}`);
  // Ours is the same colour in every chart.
  for (const c of charts) assert.ok(c.svg.includes(POLICY_COLOURS.execmem), `${c.id}: ours in its colour`);
});

test('ties: every design printing the best value is marked, in the page and in summary.md', () => {
  const data = reportFixture();
  const run = data.runs[0];
  // execmem's overhead a hair above module_alloc's best 1.00x: it prints 1.00x too, a tie.
  const tied = {
    ...data,
    runs: [
      {
        ...run,
        policies: run.policies.map((p) =>
          p.name === 'execmem' ? { ...p, metrics: { ...p.metrics, overhead: 1.0000001 } } : p,
        ),
      },
    ],
  };
  const { html } = renderHtml(tied);
  const cells = [...html.matchAll(/<tr[^>]*><td>(\w+)[\s\S]*?<\/tr>/g)].filter((m) => m[0].includes('1.00x'));
  const marked = cells.filter((m) => /<td class="best">1\.00x<\/td>/.test(m[0])).map((m) => m[1]);
  assert.deepEqual(marked.sort(), ['execmem', 'module_alloc']);
  const md = renderMarkdown(tied);
  assert.equal(md.match(/\| \*\*1\.00x\*\* \|/g)?.length, 2);
  assert.ok(!md.includes('| 1.00x |'), 'no plain 1.00x next to a bold one');
});

test('descriptions: compare --json carries them from the registries, the report shows the same text', () => {
  const r = runCompare({
    workload: 'trampolines',
    scale: 0.003,
    policies: ['module_alloc', 'execmem'],
    fetch: false,
  });
  assert.equal(r.description, WORKLOADS.trampolines.describe);
  for (const p of r.policies) assert.equal(p.description, policyByName(p.name).describe);
  const run = toWorkloadRun(r);
  const data = { ...reportFixture(), runs: [run] };
  const md = renderMarkdown(data);
  const { html } = renderHtml(data);
  assert.ok(md.includes(`- **trampolines**: ${WORKLOADS.trampolines.describe}`));
  assert.ok(md.includes(`- **module_alloc** (Linux 5.17): ${policyByName('module_alloc').describe}`));
  assert.ok(
    html.includes(`<dt data-policy="execmem">execmem (ours) <span class="kernel-inline">ours</span></dt>`),
  );
});
