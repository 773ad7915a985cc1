/**
 * The report renderer: HTML page with SVG charts, module-area pictures, summary.md and the
 * terminal table, all from one `ReportData`. Producing the data (running policies on workloads)
 * is not this module's job; see src/cli/commands/report.ts.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderHtml } from './html.js';
import { renderMarkdown } from './markdown.js';
import type { ReportData } from './types.js';

export { renderAreaMap, TYPE_COLOURS } from './area-map.js';
export {
  CHART_WIDTH_PX,
  chartHeightPx,
  chartIds,
  logAxis,
  MISSING_LABEL,
  POLICY_COLOURS,
  renderCharts,
} from './charts.js';
export { renderHtml } from './html.js';
export { renderMarkdown, renderTerminalSummary } from './markdown.js';
export { modelledVsReal } from './provenance.js';
export { summaryLines } from './summary.js';
export * from './types.js';
export { sameAsLabel, VOCABULARIES, vocabularyFor } from './vocabulary.js';

export interface WrittenReport {
  readonly htmlPath: string;
  readonly markdownPath: string;
  readonly chartCount: number;
  readonly areaPictureCount: number;
}

/** Write index.html and summary.md into `dir` (created if missing). */
export function writeReport(data: ReportData, dir: string): WrittenReport {
  const rendered = renderHtml(data);
  const markdown = renderMarkdown(data);
  mkdirSync(dir, { recursive: true });
  const htmlPath = join(dir, 'index.html');
  const markdownPath = join(dir, 'summary.md');
  writeFileSync(htmlPath, rendered.html);
  writeFileSync(markdownPath, markdown);
  return {
    htmlPath,
    markdownPath,
    chartCount: rendered.charts.length,
    areaPictureCount: rendered.areaPictureCount,
  };
}
