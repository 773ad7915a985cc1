/**
 * A picture of one policy's module area: every 2 MiB block a tile, shaded by occupancy and
 * coloured by the type that uses it most; a thin strip at the tile's foot shows the mix of
 * types when several share the block; a dark frame marks a block mapped with one 2 MiB leaf.
 *
 * Why 2 MiB tiles: that is the unit the whole debate is about (a PMD leaf: one iTLB entry for a
 * block of code, and the unit the ROX cache and bpf_prog_pack fill and release; see
 * research/linux-execmem.md sections 2.3 and 3). A kernel developer sees at a glance whether a
 * design packs types into few large blocks or scatters 4 KiB mappings over the area.
 *
 * Why hand-written SVG and not a chart: it is a grid of a few hundred rectangles; a chart
 * library adds nothing. Unmapped tiles are one patterned background rectangle, so the file size
 * grows with what is mapped, not with the size of the area (x86-64: ~1 GiB = 512 tiles).
 */
import { EXECMEM_TYPES, type ExecmemType } from '../../arch/types.js';
import { escapeHtml, formatBytes } from './format.js';
import type { AreaMap, AreaRegion } from './types.js';

/** Okabe-Ito colours (distinguishable with the common colour-vision deficiencies). */
export const TYPE_COLOURS: Readonly<Record<ExecmemType, string>> = {
  module_text: '#0072b2',
  module_rodata: '#56b4e9',
  module_ro_after_init: '#009e73',
  module_data: '#e69f00',
  kprobes: '#cc79a7',
  ftrace: '#d55e00',
  bpf: '#c9b400',
};

export const TILE_PX = 10;
export const TILE_GAP_PX = 2;
export const TILE_COLUMNS = 48;
/** Above this many tiles the picture shows only the span that is used (and says so). */
export const MAX_TILES = 2048;

export interface AreaPicture {
  readonly svg: string;
  readonly tileCount: number;
  readonly mappedTiles: number;
  /** Address of the first tile (48-bit VA). */
  readonly firstVa: number;
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

/** The tile span to draw: the whole area, or the used span when the area is too large. */
function tileSpan(area: AreaMap): { firstVa: number; count: number; note: string | null } {
  const firstVa = Math.floor(area.start / area.regionBytes) * area.regionBytes;
  const count = Math.ceil((area.end - firstVa) / area.regionBytes);
  if (count <= MAX_TILES || area.regions.length === 0) {
    return { firstVa, count: Math.min(count, MAX_TILES), note: count > MAX_TILES ? 'area truncated' : null };
  }
  const vas = area.regions.map((r) => r.va);
  const lo = Math.min(...vas);
  const span = Math.min(MAX_TILES, (Math.max(...vas) - lo) / area.regionBytes + 1);
  return { firstVa: lo, count: span, note: `showing ${span} of ${count} blocks (the used span)` };
}

export function renderAreaMap(area: AreaMap, label: string): AreaPicture {
  const span = tileSpan(area);
  const step = TILE_PX + TILE_GAP_PX;
  const rows = Math.ceil(span.count / TILE_COLUMNS);
  const widthPx = TILE_COLUMNS * step;
  const heightPx = rows * step;
  const patternId = `empty-${label.replace(/[^a-z0-9]/gi, '-')}`;
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" class="area-map" width="${widthPx}" height="${heightPx}" ` +
      `viewBox="0 0 ${widthPx} ${heightPx}" role="img" aria-label="${escapeHtml(label)}">`,
  );
  parts.push(
    `<defs><pattern id="${patternId}" width="${step}" height="${step}" patternUnits="userSpaceOnUse">` +
      `<rect x="0.5" y="0.5" width="${TILE_PX - 1}" height="${TILE_PX - 1}" fill="#f9fafb" stroke="#e5e7eb"/>` +
      '</pattern></defs>',
  );
  const fullRows = Math.floor(span.count / TILE_COLUMNS);
  if (fullRows > 0)
    parts.push(`<rect width="${widthPx}" height="${fullRows * step}" fill="url(#${patternId})"/>`);
  const rest = span.count - fullRows * TILE_COLUMNS;
  if (rest > 0) {
    parts.push(
      `<rect y="${fullRows * step}" width="${rest * step}" height="${step}" fill="url(#${patternId})"/>`,
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
        (index % TILE_COLUMNS) * step,
        Math.floor(index / TILE_COLUMNS) * step,
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
    note: note === '' ? null : note,
  };
}

function regionTile(region: AreaRegion, regionBytes: number, x: number, y: number): string {
  const live = liveTotal(region);
  const type = dominantType(region);
  const occupancy = Math.min(1, live / regionBytes);
  const colour = type ? TYPE_COLOURS[type] : '#9ca3af';
  // Mapped but empty blocks stay visible (light grey); otherwise 30%..100% opacity, by the square
  // root of occupancy so that a block 5% used is still visibly coloured.
  const opacity = type ? 0.3 + 0.7 * Math.sqrt(occupancy) : 1;
  const fill = type ? colour : '#e5e7eb';
  const frame = region.largeLeaf
    ? ' stroke="#111827" stroke-width="1.5"'
    : ' stroke="#9ca3af" stroke-width="0.5"';
  const title = tileTitle(region, regionBytes, live);
  const out = [
    `<g class="tile" data-type="${type ?? 'none'}" data-occupancy="${occupancy.toFixed(3)}">`,
    `<title>${escapeHtml(title)}</title>`,
    `<rect x="${x + 0.75}" y="${y + 0.75}" width="${TILE_PX - 1.5}" height="${TILE_PX - 1.5}" ` +
      `fill="${fill}" fill-opacity="${opacity.toFixed(3)}"${frame}/>`,
  ];
  // Type mix strip (only when more than one type lives here).
  const present = EXECMEM_TYPES.filter((t) => (region.liveBytesByType[t] ?? 0) > 0);
  if (present.length > 1) {
    let cx = x + 1.5;
    const stripPx = TILE_PX - 3;
    for (const t of present) {
      const w = (stripPx * (region.liveBytesByType[t] ?? 0)) / live;
      out.push(
        `<rect x="${cx.toFixed(2)}" y="${y + TILE_PX - 4}" width="${w.toFixed(2)}" height="2.5" fill="${TYPE_COLOURS[t]}"/>`,
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

/** The legend shared by all area pictures (HTML). */
export function areaLegendHtml(): string {
  const items = EXECMEM_TYPES.map(
    (t) =>
      `<span class="legend-item"><span class="swatch" style="background:${TYPE_COLOURS[t]}"></span>${t}</span>`,
  );
  items.push('<span class="legend-item"><span class="swatch swatch-frame"></span>one 2 MiB leaf</span>');
  items.push('<span class="legend-item"><span class="swatch swatch-mapped"></span>mapped, empty</span>');
  items.push('<span class="legend-item"><span class="swatch swatch-empty"></span>not mapped</span>');
  return `<div class="legend">${items.join('')}<span class="legend-note">shade = occupancy (live / 2 MiB)</span></div>`;
}
