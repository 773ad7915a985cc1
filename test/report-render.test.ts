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
import {
  chartIds,
  renderAreaMap,
  renderHtml,
  renderMarkdown,
  renderTerminalSummary,
  writeReport,
} from '../src/metrics/report/index.js';
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
  assert.equal(ids.length, 7 + FIXTURE_WORKLOADS.length);
  assert.deepEqual(
    charts.map((c) => c.id),
    ids,
  );
  const found = figures(html);
  assert.deepEqual([...found.keys()], ids);
  for (const [id, inner] of found) {
    assert.match(inner, /<svg[^>]*width="560"[^>]*height="320"/, `${id}: svg of the chart size`);
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
  assert.equal(tables.length, FIXTURE_WORKLOADS.length);
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

test('area picture: one tile per mapped region at its place, large leaves framed', () => {
  const data = reportFixture();
  const a = data.runs[0].policies[0].area;
  assert.ok(a);
  const pic = renderAreaMap(a, 'x');
  assert.equal(pic.tileCount, 65); // 64 blocks from an unaligned start span 65 tiles
  assert.equal(pic.mappedTiles, 3);
  const tiles = pic.svg.match(/<g class="tile"[^>]*>/g) ?? [];
  assert.equal(tiles.length, 3);
  assert.ok(tiles[0].includes('data-type="module_text"'));
  assert.ok(tiles[0].includes('data-occupancy="0.750"'));
  assert.ok(tiles[1].includes('data-type="module_data"'));
  assert.ok(tiles[2].includes('data-type="none"'));
  // The first region is the first full 2 MiB block after the unaligned start: tile index 1.
  assert.match(pic.svg, /<rect x="12.75" y="0.75"[^>]*stroke="#111827"/);
  // Mixed region gets a type-mix strip (two coloured rects besides the tile).
  const firstTile = pic.svg.slice(pic.svg.indexOf('<g class="tile"'), pic.svg.indexOf('</g>'));
  assert.equal(firstTile.match(/<rect /g)?.length, 3);
});

test('huge areas are cut to the used span and say so', () => {
  const base = 0x7f0000000000;
  const pic = renderAreaMap(
    {
      start: base,
      end: base + 5000 * SZ_2M,
      regionBytes: SZ_2M,
      regions: [
        { va: base + 100 * SZ_2M, mappedBytes: 4096, largeLeaf: false, liveBytesByType: { bpf: 100 } },
        { va: base + 110 * SZ_2M, mappedBytes: 4096, largeLeaf: false, liveBytesByType: { bpf: 100 } },
      ],
    },
    'big',
  );
  assert.equal(pic.tileCount, 11);
  assert.equal(pic.mappedTiles, 2);
  assert.match(pic.note ?? '', /showing 11 of 5000 blocks/);
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
