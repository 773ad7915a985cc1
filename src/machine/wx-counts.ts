/**
 * Per-frame W^X counts (how many mappings make a frame writable, how many executable) for the
 * audit in wx.ts, and the number of frames where both are non-zero.
 *
 * Why chunks that start uniform: the direct map covers every frame with 1 GiB leaves, so a plain
 * pair of per-frame arrays is written in full at every boot (4 Mi frames of a 16 GiB machine:
 * 16 MB of counts touched and a 4 Mi-step loop, most of a machine's start-up), while the frames
 * anything else maps are a few chunks of low memory. So frames are grouped in chunks of
 * CHUNK_FRAMES; a chunk holds one (writable, executable) pair for all its frames until a change
 * covers only part of it, and only then gets its own per-frame arrays, filled with that pair.
 * A change covering whole uniform chunks moves their pair, and the violation count by the
 * chunk's frame count when the pair's state flips. Counts are exactly what the per-frame arrays
 * held: Uint16 per frame, as before.
 */
import { assert } from '../base/assert.js';

/** Frames per chunk (16 MiB of memory): a 2 MiB leaf lies in one chunk, a 1 GiB leaf spans 64. */
const CHUNK_SHIFT = 12;
const CHUNK_FRAMES = 1 << CHUNK_SHIFT;
const CHUNK_MASK = CHUNK_FRAMES - 1;

export class WxCounts {
  /** Per chunk: its own per-frame counts, or null while every frame has the chunk's pair. */
  private readonly writable: (Uint16Array | null)[];
  private readonly executable: (Uint16Array | null)[];
  /** Per chunk: the pair of a uniform chunk (meaningless once it has arrays). */
  private readonly uniformW: Uint16Array;
  private readonly uniformX: Uint16Array;
  /** Frames whose writable and executable counts are both non-zero. */
  violations = 0;

  constructor(readonly totalFrames: number) {
    assert(Number.isInteger(totalFrames) && totalFrames > 0, 'frame count must be a positive integer');
    const chunks = Math.ceil(totalFrames / CHUNK_FRAMES);
    this.writable = new Array<Uint16Array | null>(chunks).fill(null);
    this.executable = new Array<Uint16Array | null>(chunks).fill(null);
    this.uniformW = new Uint16Array(chunks);
    this.uniformX = new Uint16Array(chunks);
  }

  /** Writable count of frame `pfn`. */
  writableOf(pfn: number): number {
    const c = pfn >>> CHUNK_SHIFT;
    return this.writable[c]?.[pfn & CHUNK_MASK] ?? this.uniformW[c];
  }

  /** Executable count of frame `pfn`. */
  executableOf(pfn: number): number {
    const c = pfn >>> CHUNK_SHIFT;
    return this.executable[c]?.[pfn & CHUNK_MASK] ?? this.uniformX[c];
  }

  /**
   * Add `delta` to the writable count (if `w`) and the executable count (if `x`) of frames
   * [pfn, pfn + frameCount), keeping `violations` exact.
   */
  add(pfn: number, frameCount: number, w: boolean, x: boolean, delta: 1 | -1): void {
    assert(pfn >= 0 && pfn + frameCount <= this.totalFrames, 'W^X count range beyond memory');
    if (!w && !x) return;
    const end = pfn + frameCount;
    let f = pfn;
    while (f < end) {
      const c = f >>> CHUNK_SHIFT;
      const chunkEnd = Math.min((c + 1) << CHUNK_SHIFT, end);
      if (this.writable[c] === null && (f & CHUNK_MASK) === 0 && chunkEnd - f === CHUNK_FRAMES)
        this.addUniform(c, w, x, delta);
      else this.addFrames(c, f & CHUNK_MASK, chunkEnd - f, w, x, delta);
      f = chunkEnd;
    }
    assert(this.violations >= 0, 'negative W^X violation count');
  }

  private addUniform(c: number, w: boolean, x: boolean, delta: 1 | -1): void {
    const before = this.uniformW[c] > 0 && this.uniformX[c] > 0;
    if (w) this.uniformW[c] += delta;
    if (x) this.uniformX[c] += delta;
    const after = this.uniformW[c] > 0 && this.uniformX[c] > 0;
    if (before !== after) this.violations += after ? CHUNK_FRAMES : -CHUNK_FRAMES;
  }

  /** Frames [from, from + n) of chunk c, which gets its own arrays first if it has none. */
  private addFrames(c: number, from: number, n: number, w: boolean, x: boolean, delta: 1 | -1): void {
    let wc = this.writable[c];
    let xc = this.executable[c];
    if (wc === null || xc === null) {
      wc = new Uint16Array(CHUNK_FRAMES).fill(this.uniformW[c]);
      xc = new Uint16Array(CHUNK_FRAMES).fill(this.uniformX[c]);
      this.writable[c] = wc;
      this.executable[c] = xc;
    }
    const end = from + n;
    if (w && x) {
      for (let f = from; f < end; f++) {
        const before = wc[f] > 0 && xc[f] > 0;
        wc[f] += delta;
        xc[f] += delta;
        const after = wc[f] > 0 && xc[f] > 0;
        if (before !== after) this.violations += after ? 1 : -1;
      }
      return;
    }
    // One count moves; a frame's state flips only if the other count is non-zero and this one
    // crosses zero.
    const mine = w ? wc : xc;
    const other = w ? xc : wc;
    let v = this.violations;
    for (let f = from; f < end; f++) {
      const before = mine[f];
      mine[f] = before + delta;
      if (other[f] !== 0 && (before === 0) !== (mine[f] === 0)) v += mine[f] === 0 ? -1 : 1;
    }
    this.violations = v;
  }
}
