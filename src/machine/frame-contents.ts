/**
 * The bytes of the frames that were written (phys.ts): pfn -> a 4 KiB Buffer, sparse.
 *
 * Why not a Map: every simulated write, text_poke step and compare looks a frame up here, and a
 * free looks up each frame of the block. A two-level table (an array per 512 frames, made at the
 * first write into those 2 MiB, with a count) answers with two indexed loads instead of a hash
 * lookup, and a free skips 512 frames at once where nothing was written.
 */
import type { Buffer } from 'node:buffer';
import { assert } from '../base/assert.js';

const CHUNK_SHIFT = 9;
const CHUNK_FRAMES = 1 << CHUNK_SHIFT;
const CHUNK_MASK = CHUNK_FRAMES - 1;

type Chunk = (Buffer | undefined)[];

export class FrameContents {
  private readonly chunks: (Chunk | undefined)[];
  /** Frames holding bytes, per chunk. */
  private readonly chunkCounts: Uint16Array;
  private count = 0;

  constructor(readonly totalFrames: number) {
    const chunkCount = Math.ceil(totalFrames / CHUNK_FRAMES);
    this.chunks = new Array<Chunk | undefined>(chunkCount).fill(undefined);
    this.chunkCounts = new Uint16Array(chunkCount);
  }

  /** Frames holding bytes. */
  get size(): number {
    return this.count;
  }

  get(pfn: number): Buffer | undefined {
    const chunk = this.chunks[pfn >>> CHUNK_SHIFT];
    return chunk === undefined ? undefined : chunk[pfn & CHUNK_MASK];
  }

  /** Gives an unwritten frame its bytes. */
  set(pfn: number, bytes: Buffer): void {
    const c = pfn >>> CHUNK_SHIFT;
    let chunk = this.chunks[c];
    if (chunk === undefined) {
      chunk = new Array<Buffer | undefined>(CHUNK_FRAMES).fill(undefined);
      this.chunks[c] = chunk;
    }
    const i = pfn & CHUNK_MASK;
    assert(chunk[i] === undefined, `frame ${pfn} already has contents`);
    chunk[i] = bytes;
    this.chunkCounts[c]++;
    this.count++;
  }

  /**
   * Drops the contents of frames [pfn, pfn + frameCount); the dropped arrays are appended to
   * `spare` while it holds fewer than `spareMax`. The chunk arrays stay for the next writes.
   */
  dropRange(pfn: number, frameCount: number, spare: Buffer[], spareMax: number): void {
    const end = pfn + frameCount;
    for (let p = pfn; p < end; ) {
      const c = p >>> CHUNK_SHIFT;
      const chunkEnd = Math.min(end, (c + 1) << CHUNK_SHIFT);
      const chunk = this.chunks[c];
      if (chunk !== undefined && this.chunkCounts[c] > 0) {
        for (let q = p; q < chunkEnd; q++) {
          const bytes = chunk[q & CHUNK_MASK];
          if (bytes === undefined) continue;
          chunk[q & CHUNK_MASK] = undefined;
          this.chunkCounts[c]--;
          this.count--;
          if (spare.length < spareMax) spare.push(bytes);
        }
      }
      p = chunkEnd;
    }
  }
}
