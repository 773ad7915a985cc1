/**
 * A picture of one policy's module area: every 2 MiB block a tile, tinted by the type that uses
 * it most and filled from the bottom to the share of it that is live; a strip across the top
 * shows the mix of types when several share the block; a dark frame marks a block mapped with
 * one 2 MiB leaf.
 *
 * Why 2 MiB tiles: that is the unit the whole debate is about (a PMD leaf: one iTLB entry for a
 * block of code, and the unit the ROX cache and bpf_prog_pack fill and release; see
 * research/linux-execmem.md sections 2.3 and 3). A kernel developer sees at a glance whether a
 * design packs types into few large blocks or scatters 4 KiB mappings over the area.
 *
 * Why only the used span, with tiles scaled to it (issue 13 item 8): the x86-64 module area is
 * ~512 blocks and a run uses a handful, which as 10 px tiles are dots nobody can read. The picture
 * shows the used span (plus a block each side) and sizes the tiles so the span fills the width;
 * the caption says which blocks of the area are shown. Colours are far apart per type and the page
 * carries a legend (areaLegendHtml).
 *
 * Why hand-written SVG and not a chart: it is a grid of rectangles; a chart library adds nothing.
 */
import { EXECMEM_TYPES, type ExecmemType } from '../../arch/types.js';
import { escapeHtml, formatBytes } from './format.js';
import type { AreaMap, AreaRegion } from './types.js';

/**
 * One colour per type, chosen far apart: the smallest CIE76 distance between two of them is 36
 * (test/report-render.test.ts checks it stays above 30), so text, rodata and data never read as
 * shades of one colour, and none is the grey of a mapped block with nothing live.
 */
export const TYPE_COLOURS: Readonly<Record<ExecmemType, string>> = {
  module_text: '#1f4e9c',
  module_rodata: '#17a589',
  module_ro_after_init: '#8e44ad',
  module_data: '#f39c12',
  kprobes: '#e84393',
  ftrace: '#7f4f24',
  bpf: '#d62728',
};

/** Width the tiles of one picture fill (px), whatever the number of tiles shown. */
export const PICTURE_WIDTH_PX = 576;
export const TILE_COLUMNS = 48;
/** Tile size bounds: small tiles for long spans, large ones when a few blocks are used. */
export const MIN_TILE_PX = 10;
export const MAX_TILE_PX = 44;
/** Unused blocks shown either side of the used span, so its edges are visible. */
const MARGIN_TILES = 1;
/** Above this many tiles the picture shows only the first part of the used span (and says so). */
export const MAX_TILES = 2048;

export interface AreaPicture {
  readonly svg: string;
  readonly tileCount: number;
  readonly mappedTiles: number;
  /** Address of the first tile (48-bit VA). */
  readonly firstVa: number;
  /** Side of one tile (px): larger when fewer blocks are shown. */
  readonly tilePx: number;
  /** Set when the picture shows only part of the area. */
  readonly note: string | null;
}

function liveTotal(region: AreaRegion): number {
  let sum = 0;
  for (const type of EXECMEM_TYPES) sum += region.liveBytesByType[type] ?? 0;
  return sum;
}

function dominantType(region: AreaRegion): ExecmemType | null {
  let best: ExecmemType | null = null;
  let bestBytes = 0;
  for (const type of EXECMEM_TYPES) {
    const bytes = region.liveBytesByType[type] ?? 0;
    if (bytes > bestBytes) {
      best = type;
      bestBytes = bytes;
    }
  }
  return best;
}

/**
 * The tile span to draw: the used span (first to last mapped block) with a block of margin each
 * side, so a picture of 3 used blocks in a 1 GiB area shows those blocks large, not 3 dots among
 * 512. The note says which part of the area it is.
 */
function tileSpan(area: AreaMap): { firstVa: number; count: number; note: string | null } {
  const areaFirst = Math.floor(area.start / area.regionBytes) * area.regionBytes;
  const total = Math.ceil((area.end - areaFirst) / area.regionBytes);
  const used = area.regions.filter((r) => r.mappedBytes > 0).map((r) => r.va);
  if (used.length === 0) return { firstVa: areaFirst, count: 0, note: `nothing mapped in ${total} blocks` };
  const lo = Math.max(areaFirst, Math.min(...used) - MARGIN_TILES * area.regionBytes);
  const hi = Math.min(
    areaFirst + (total - 1) * area.regionBytes,
    Math.max(...used) + MARGIN_TILES * area.regionBytes,
  );
  const span = (hi - lo) / area.regionBytes + 1;
  const count = Math.min(MAX_TILES, span);
  const first = (lo - areaFirst) / area.regionBytes;
  const note =
    count === total
      ? null
      : `showing blocks ${first}..${first + count - 1} of ${total} (the used span${count < span ? ', cut' : ''})`;
  return { firstVa: lo, count, note };
}

export function renderAreaMap(area: AreaMap, label: string): AreaPicture {
  const span = tileSpan(area);
  const columns = Math.max(1, Math.min(TILE_COLUMNS, span.count));
  const step = Math.max(MIN_TILE_PX + 2, Math.min(MAX_TILE_PX + 4, Math.floor(PICTURE_WIDTH_PX / columns)));
  const gap = step >= 24 ? 4 : 2;
  const tilePx = step - gap;
  const rows = Math.max(1, Math.ceil(span.count / columns));
  const widthPx = columns * step;
  const heightPx = rows * step;
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" class="area-map" width="${widthPx}" height="${heightPx}" ` +
      `viewBox="0 0 ${widthPx} ${heightPx}" role="img" aria-label="${escapeHtml(label)}" data-tile-px="${tilePx}">`,
  );
  // Unmapped blocks: one light outline each (a few hundred at most: the span is the used one).
  for (let i = 0; i < span.count; i++) {
    parts.push(
      `<rect class="empty" x="${(i % columns) * step + 0.5}" y="${Math.floor(i / columns) * step + 0.5}" ` +
        `width="${tilePx - 1}" height="${tilePx - 1}" fill="#f9fafb" stroke="#e5e7eb"/>`,
    );
  }
  let mappedTiles = 0;
  let hidden = 0;
  for (const region of area.regions) {
    const index = (region.va - span.firstVa) / area.regionBytes;
    if (region.mappedBytes === 0) continue;
    if (index < 0 || index >= span.count) {
      hidden++;
      continue;
    }
    mappedTiles++;
    parts.push(
      regionTile(
        region,
        area.regionBytes,
        (index % columns) * step,
        Math.floor(index / columns) * step,
        tilePx,
      ),
    );
  }
  parts.push('</svg>');
  const notes = [span.note, hidden > 0 ? `${hidden} mapped blocks lie outside the picture` : null];
  const note = notes.filter((n) => n !== null).join('; ');
  return {
    svg: parts.join(''),
    tileCount: span.count,
    mappedTiles,
    firstVa: span.firstVa,
    tilePx,
    note: note === '' ? null : note,
  };
}

/**
 * One mapped block: a light tint of its main type's colour, filled from the bottom in full colour
 * to the share of the block that is live; a strip across the top gives the mix of types when
 * several share the block; a dark frame marks a block mapped with one 2 MiB leaf.
 */
function regionTile(region: AreaRegion, regionBytes: number, x: number, y: number, tilePx: number): string {
  const live = liveTotal(region);
  const type = dominantType(region);
  const occupancy = Math.min(1, live / regionBytes);
  const colour = type ? TYPE_COLOURS[type] : '#9ca3af';
  const frame = region.largeLeaf
    ? ' stroke="#111827" stroke-width="2"'
    : ' stroke="#6b7280" stroke-width="0.75"';
  const inner = tilePx - 2;
  const out = [
    `<g class="tile" data-type="${type ?? 'none'}" data-occupancy="${occupancy.toFixed(3)}">`,
    `<title>${escapeHtml(tileTitle(region, regionBytes, live))}</title>`,
    `<rect x="${x + 1}" y="${y + 1}" width="${inner}" height="${inner}" fill="${type ? colour : '#e5e7eb'}" ` +
      `fill-opacity="${type ? 0.22 : 1}"${frame}/>`,
  ];
  if (type) {
    // At least one pixel of colour for any live byte, so a nearly empty block still shows its type.
    const fillPx = Math.max(1, inner * occupancy);
    out.push(
      `<rect class="live" x="${x + 1}" y="${(y + 1 + inner - fillPx).toFixed(2)}" width="${inner}" ` +
        `height="${fillPx.toFixed(2)}" fill="${colour}"/>`,
    );
  }
  const present = EXECMEM_TYPES.filter((t) => (region.liveBytesByType[t] ?? 0) > 0);
  if (present.length > 1) {
    let cx = x + 1;
    const stripPx = Math.max(2.5, tilePx / 6);
    for (const t of present) {
      const w = (inner * (region.liveBytesByType[t] ?? 0)) / live;
      out.push(
        `<rect class="mix" x="${cx.toFixed(2)}" y="${y + 1}" width="${w.toFixed(2)}" height="${stripPx.toFixed(2)}" fill="${TYPE_COLOURS[t]}"/>`,
      );
      cx += w;
    }
  }
  out.push('</g>');
  return out.join('');
}

function tileTitle(region: AreaRegion, regionBytes: number, live: number): string {
  const lines = [
    `0x${region.va.toString(16)}: ${formatBytes(region.mappedBytes)} of ${formatBytes(regionBytes)} mapped ` +
      `(${region.largeLeaf ? 'one 2 MiB leaf' : 'small leaves'}), ${formatBytes(live)} live`,
  ];
  for (const t of EXECMEM_TYPES) {
    const bytes = region.liveBytesByType[t] ?? 0;
    if (bytes > 0) lines.push(`${t}: ${formatBytes(bytes)}`);
  }
  return lines.join('\n');
}

/** The legend shared by all area pictures (HTML): every type's colour and how a tile reads. */
export function areaLegendHtml(): string {
  const items = EXECMEM_TYPES.map(
    (t) =>
      `<span class="legend-item" data-type="${t}"><span class="swatch" style="background:${TYPE_COLOURS[t]}"></span>${t}</span>`,
  );
  items.push('<span class="legend-item"><span class="swatch swatch-frame"></span>one 2 MiB leaf</span>');
  items.push(
    '<span class="legend-item"><span class="swatch swatch-mapped"></span>mapped, nothing live</span>',
  );
  items.push('<span class="legend-item"><span class="swatch swatch-empty"></span>not mapped</span>');
  return (
    `<div class="legend area-legend">${items.join('')}<span class="legend-note">colour = the type with most live bytes; ` +
    'filled height = live share of the 2 MiB block; top strip = mix of types where several share it</span></div>'
  );
}
