/**
 * Deterministic bytes for replayed writes: code-like, data-like, or zero.
 *
 * Why per-event seeding: the same trace must write the same bytes under every policy, even when
 * one policy fails an allocation another serves (a skipped write must not shift the bytes of all
 * later writes). So the bytes of a write depend only on (trace seed, event index, byte position),
 * through a small integer hash, never on a shared stream.
 *
 * Why code bytes avoid two values: every architecture's trap pattern (x86 INT3 0xcc, arm64 BRK
 * 0xd4202000 stored 00 20 20 d4, generic 00 00 00 00) contains its own first byte, so if code
 * never contains any arch's first trap byte, no written instruction start can look like the trap
 * pattern on any arch, whatever the alignment. Tests that check "free space is trap-filled" or a
 * fetch model that treats the pattern as a trap can then tell code from filler. The price: real
 * x86 code does contain 0x00 bytes; this is code-LIKE (random bytes), not decodable code.
 */
import { ARCHES } from '../arch/index.js';

const EXCLUDED: ReadonlySet<number> = new Set(Object.values(ARCHES).map((a) => a.trapPattern[0]));

/** Byte values that code writes never contain (the first byte of every arch's trap pattern). */
export const CODE_EXCLUDED_BYTES: readonly number[] = [...EXCLUDED].sort((x, y) => x - y);

/** A 32-bit integer hash (the "lowbias32" constants published by Chris Wellons' hash-prospector). */
function mix32(x: number): number {
  let h = x >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Byte -> allowed code byte: the identity except for excluded values, which step to an allowed one. */
const CODE_MAP: Uint8Array = (() => {
  const map = new Uint8Array(256);
  for (let v = 0; v < 256; v++) {
    let b = v;
    while (EXCLUDED.has(b)) b = (b + 0x11) & 0xff; // at most |EXCLUDED| steps
    map[v] = b;
  }
  return map;
})();

/**
 * Whether this platform stores a Uint32Array element least significant byte first. The fills
 * below are defined byte by byte (byte k of a word = bits 8k..8k+7); on a little-endian platform
 * that is exactly how a 32-bit store lays the word out, so whole words are stored at once.
 */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([0x04030201]).buffer)[0] === 0x01;

/** A 32-bit word view of `out`'s whole words, or null where word stores would not be byte-exact. */
function wordView(out: Uint8Array): Uint32Array | null {
  if (!LITTLE_ENDIAN || out.byteOffset % 4 !== 0 || out.length < 4) return null;
  return new Uint32Array(out.buffer, out.byteOffset, out.length >>> 2);
}

/** Fill `out` with data-like bytes for event `eventIndex` (any value, including 0 and 0xcc). */
export function fillData(out: Uint8Array, seed: number, eventIndex: number): void {
  const key = mix32(mix32(seed) ^ eventIndex);
  const n = out.length;
  // Hot path (every replayed write of every design): whole words stored at once, same bytes.
  const words = wordView(out);
  let w = 0;
  if (words !== null) for (; w < words.length; w++) words[w] = mix32((key + w) | 0);
  for (; w * 4 < n; w++) {
    const word = mix32((key + w) | 0);
    const i = w * 4;
    out[i] = word & 0xff;
    if (i + 1 < n) out[i + 1] = (word >>> 8) & 0xff;
    if (i + 2 < n) out[i + 2] = (word >>> 16) & 0xff;
    if (i + 3 < n) out[i + 3] = word >>> 24;
  }
}

/** CODE_MAP applied to both bytes of a 16-bit value (low byte first): two look-ups map a word. */
const CODE_MAP16: Uint16Array = (() => {
  const map = new Uint16Array(65536);
  for (let v = 0; v < 65536; v++) map[v] = CODE_MAP[v & 0xff] | (CODE_MAP[v >>> 8] << 8);
  return map;
})();

/** Fill `out` with code-like bytes for event `eventIndex`: never a value in CODE_EXCLUDED_BYTES. */
export function fillCode(out: Uint8Array, seed: number, eventIndex: number): void {
  const words = wordView(out);
  if (words === null) {
    fillData(out, seed, eventIndex);
    for (let i = 0; i < out.length; i++) out[i] = CODE_MAP[out[i]];
    return;
  }
  // fillData then CODE_MAP on every byte, done a word at a time (the same bytes: see fillData).
  const key = mix32(mix32(seed) ^ eventIndex);
  for (let w = 0; w < words.length; w++) {
    const word = mix32((key + w) | 0);
    words[w] = (CODE_MAP16[word & 0xffff] | (CODE_MAP16[word >>> 16] << 16)) >>> 0;
  }
  const tail = words.length * 4;
  if (tail < out.length) {
    const word = mix32((key + words.length) | 0);
    for (let i = tail; i < out.length; i++) out[i] = CODE_MAP[(word >>> (8 * (i - tail))) & 0xff];
  }
}

export type FillKind = 'code' | 'data' | 'zero';

/** A fresh buffer of `sizeBytes` with the requested content. */
export function bytesFor(kind: FillKind, sizeBytes: number, seed: number, eventIndex: number): Uint8Array {
  const out = new Uint8Array(sizeBytes);
  fillBytes(out, kind, seed, eventIndex);
  return out;
}

/** Fill `out` with the content bytesFor gives for the same arguments (zero: all 0). */
export function fillBytes(out: Uint8Array, kind: FillKind, seed: number, eventIndex: number): void {
  if (kind === 'code') fillCode(out, seed, eventIndex);
  else if (kind === 'data') fillData(out, seed, eventIndex);
  else out.fill(0);
}

/**
 * One buffer reused for every write of a replay (see replay.ts: a design reads a write's bytes
 * during the call only): `bytes` returns the first sizeBytes of it, filled as bytesFor would. A
 * compare writes hundreds of MB per design; a fresh buffer each time cost more than the fill.
 */
export class WriteBuffer {
  private buffer = new Uint8Array(64 * 1024);

  bytes(kind: FillKind, sizeBytes: number, seed: number, eventIndex: number): Uint8Array {
    if (sizeBytes > this.buffer.length)
      this.buffer = new Uint8Array(Math.max(sizeBytes, 2 * this.buffer.length));
    const out = this.buffer.subarray(0, sizeBytes);
    fillBytes(out, kind, seed, eventIndex);
    return out;
  }
}
