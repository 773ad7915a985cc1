/**
 * Deterministic bytes for replayed writes: code-like, data-like, or zero.
 *
 * Why per-event seeding: the same trace must write the same bytes under every policy, even when
 * one policy fails an allocation another serves (a skipped write must not shift the bytes of all
 * later writes). So the bytes of a write depend only on (trace seed, event index, byte position),
 * never on a shared stream: a small integer hash of (seed, event index) picks where the write
 * starts in a fixed 1 MiB table of hashed bytes, and the write is that table from there on
 * (wrapping). Why a table and not a hash per word: every design of a compare writes the same
 * ~100 MB, and a copy from the table costs a fraction of hashing every word of it again.
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

/** Bytes of each table (a power of two): 1 MiB each, built at the first write (~15 ms), not at import. */
const TABLE_BYTES = 1 << 20;
const TABLE_MASK = TABLE_BYTES - 1;
/** The key of the tables' hash stream (any constant; fixed so that runs are reproducible). */
const TABLE_KEY = 0x6a09e667;

/**
 * The data-like table (byte k of word w is bits 8k..8k+7 of mix32(TABLE_KEY + w)) and the
 * code-like one (the same through CODE_MAP, so it never holds a CODE_EXCLUDED_BYTES value).
 * Constants, made once when first needed: a command that writes nothing never pays for them.
 */
let tables: { readonly data: Uint8Array; readonly code: Uint8Array } | null = null;

function byteTables(): { readonly data: Uint8Array; readonly code: Uint8Array } {
  if (tables !== null) return tables;
  const data = new Uint8Array(TABLE_BYTES);
  for (let w = 0; w < TABLE_BYTES / 4; w++) {
    const word = mix32((TABLE_KEY + w) | 0);
    data[4 * w] = word & 0xff;
    data[4 * w + 1] = (word >>> 8) & 0xff;
    data[4 * w + 2] = (word >>> 16) & 0xff;
    data[4 * w + 3] = word >>> 24;
  }
  tables = { data, code: data.map((b) => CODE_MAP[b]) };
  return tables;
}

/** Where event `eventIndex`'s bytes start in a table. */
function tableStart(seed: number, eventIndex: number): number {
  return mix32(mix32(seed) ^ eventIndex) & TABLE_MASK;
}

/** out[i] = table[(start + i) mod TABLE_BYTES]: whole runs copied at once. */
function copyFromTable(out: Uint8Array, table: Uint8Array, start: number): void {
  let done = 0;
  let at = start;
  while (done < out.length) {
    const n = Math.min(TABLE_BYTES - at, out.length - done);
    out.set(table.subarray(at, at + n), done);
    done += n;
    at = 0;
  }
}

/** Fill `out` with data-like bytes for event `eventIndex` (any value, including 0 and 0xcc). */
export function fillData(out: Uint8Array, seed: number, eventIndex: number): void {
  copyFromTable(out, byteTables().data, tableStart(seed, eventIndex));
}

/** Fill `out` with code-like bytes for event `eventIndex`: never a value in CODE_EXCLUDED_BYTES. */
export function fillCode(out: Uint8Array, seed: number, eventIndex: number): void {
  copyFromTable(out, byteTables().code, tableStart(seed, eventIndex));
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
