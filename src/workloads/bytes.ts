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

/** A 32-bit integer hash (lowbias32 by Chris Wellons' search; public-domain constants). */
function mix32(x: number): number {
  let h = x >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  return h >>> 0;
}

function wordAt(seed: number, eventIndex: number, word: number): number {
  return mix32(mix32(mix32(seed) ^ eventIndex) + word);
}

/** Fill `out` with data-like bytes for event `eventIndex` (any value, including 0 and 0xcc). */
export function fillData(out: Uint8Array, seed: number, eventIndex: number): void {
  for (let i = 0; i < out.length; i++) out[i] = (wordAt(seed, eventIndex, i >>> 2) >>> ((i & 3) * 8)) & 0xff;
}

/** Fill `out` with code-like bytes for event `eventIndex`: never a value in CODE_EXCLUDED_BYTES. */
export function fillCode(out: Uint8Array, seed: number, eventIndex: number): void {
  fillData(out, seed, eventIndex);
  for (let i = 0; i < out.length; i++) {
    let b = out[i];
    // Step to the next value until it is allowed; at most |EXCLUDED| steps.
    while (EXCLUDED.has(b)) b = (b + 0x11) & 0xff;
    out[i] = b;
  }
}

export type FillKind = 'code' | 'data' | 'zero';

/** A fresh buffer of `sizeBytes` with the requested content. */
export function bytesFor(kind: FillKind, sizeBytes: number, seed: number, eventIndex: number): Uint8Array {
  const out = new Uint8Array(sizeBytes);
  if (kind === 'code') fillCode(out, seed, eventIndex);
  else if (kind === 'data') fillData(out, seed, eventIndex);
  return out;
}
