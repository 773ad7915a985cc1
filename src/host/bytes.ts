/**
 * Bytes entering the host backend: how many there really are, decided without running caller code.
 *
 * Why: the backend stores into real memory, and a count taken from an overridable `length` was the
 * bug of issue 16, item 2: `Object.defineProperty(evil, 'length', { value: 1 })` on a 256-byte
 * array passed a 1-byte bounds check, then `TypedArray.prototype.set` copied all 256 bytes (it
 * reads the array's internal length) into the neighbour, or past a block's end into PROT_NONE
 * memory (SIGSEGV). A getter may also run arbitrary code (free the target) in the middle of an
 * operation. So:
 * - the count is the array's internal byte length, read with the intrinsic
 *   %TypedArray%.prototype.byteLength getter (internal slots only; 0 for a detached buffer);
 * - the input must be a genuine Uint8Array (the intrinsic @@toStringTag getter reads the internal
 *   [[TypedArrayName]] slot, so a Proxy, a plain object or another element type is refused);
 * - its visible `length` must be the intrinsic getter too (no own `length`, no subclass getter, no
 *   Proxy in the prototype chain; node:util's isProxy asks V8 without running traps), so whatever
 *   bounds a caller checked with `.length` are the bounds the copy uses; anything else is EINVAL;
 * - copies go through the intrinsic `set` (typed-array source: no species, no getters) of exactly
 *   the counted bytes, even from a growable SharedArrayBuffer another thread grows meanwhile, and
 *   a fill pattern is first copied into a fresh array the caller cannot reach.
 */
import { types } from 'node:util';
import { HostError } from './errors.js';

const TYPED_ARRAY_PROTO: object = Object.getPrototypeOf(Uint8Array.prototype);

function intrinsicGetter(key: PropertyKey): (this: unknown) => unknown {
  const d = Object.getOwnPropertyDescriptor(TYPED_ARRAY_PROTO, key);
  if (d?.get === undefined) throw new Error(`%TypedArray%.prototype has no ${String(key)} getter`);
  return d.get;
}

const TAG = intrinsicGetter(Symbol.toStringTag);
const BYTE_LENGTH = intrinsicGetter('byteLength');
const LENGTH = intrinsicGetter('length');
const BUFFER = intrinsicGetter('buffer');
const BYTE_OFFSET = intrinsicGetter('byteOffset');
const SET = Uint8Array.prototype.set;
const U8 = Uint8Array;
const GROWABLE = Object.getOwnPropertyDescriptor(SharedArrayBuffer.prototype, 'growable')?.get;
const RESIZABLE = Object.getOwnPropertyDescriptor(ArrayBuffer.prototype, 'resizable')?.get;
/** Longest prototype chain walked when checking `length` (Uint8Array itself needs 2 steps). */
const CHAIN_MAX = 32;

/**
 * The real byte count of `x`, or HostError EINVAL if `x` is not a genuine Uint8Array whose
 * `length` is the built-in one.
 */
export function byteCount(x: unknown, what: string): number {
  if (typeof x !== 'object' || x === null || types.isProxy(x) || Reflect.apply(TAG, x, []) !== 'Uint8Array') {
    throw new HostError('EINVAL', `${what} must be a Uint8Array`);
  }
  let o: object | null = x;
  for (let depth = 0; ; depth++) {
    if (o === null || depth > CHAIN_MAX || types.isProxy(o)) {
      throw new HostError('EINVAL', `${what}: cannot tell its length without running its code`);
    }
    const d = Object.getOwnPropertyDescriptor(o, 'length');
    if (d !== undefined) {
      if (d.get !== LENGTH) throw new HostError('EINVAL', `${what} has an overridden length`);
      break;
    }
    o = Object.getPrototypeOf(o) as object | null;
  }
  return Reflect.apply(BYTE_LENGTH, x, []) as number;
}

/**
 * Copy exactly `n` bytes (the count byteCount returned) of `src` into `dst` at `offset`. A view
 * that tracks the length of a growable SharedArrayBuffer may have grown since it was counted
 * (another thread can grow the buffer at any time), and `set` would copy the new length: such a
 * source is re-viewed at its counted length first.
 */
export function copyInto(dst: Uint8Array, src: Uint8Array, offset: number, n: number): void {
  const buf = Reflect.apply(BUFFER, src, []) as ArrayBufferLike;
  const varies = types.isSharedArrayBuffer(buf)
    ? GROWABLE !== undefined && Reflect.apply(GROWABLE, buf, []) === true
    : RESIZABLE !== undefined && Reflect.apply(RESIZABLE, buf, []) === true;
  const from = varies ? new U8(buf, Reflect.apply(BYTE_OFFSET, src, []) as number, n) : src;
  Reflect.apply(SET, dst, [from, offset]);
}

/** A private copy of a fill pattern (non-empty, checked). */
export function patternCopy(x: unknown, what: string): Uint8Array {
  const n = byteCount(x, what);
  if (n === 0) throw new HostError('EINVAL', `${what} is empty`);
  const out = new Uint8Array(n);
  copyInto(out, x as Uint8Array, 0, n);
  return out;
}

/** Fill [off, off+sizeBytes) of `mem` with `pattern` repeated (the tail may be partial). */
export function fillPattern(mem: Uint8Array, off: number, sizeBytes: number, pattern: Uint8Array): void {
  if (pattern.length === 1) {
    mem.fill(pattern[0], off, off + sizeBytes);
    return;
  }
  const first = Math.min(pattern.length, sizeBytes);
  mem.set(pattern.subarray(0, first), off);
  let done = first;
  while (done < sizeBytes) {
    const n = Math.min(done, sizeBytes - done);
    mem.copyWithin(off + done, off, off + n);
    done += n;
  }
}
