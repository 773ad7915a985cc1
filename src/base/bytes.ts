/**
 * Take bytes from an untrusted argument by their real backing store.
 *
 * Why: a Uint8Array's `length`, `byteLength`, `subarray` and `set` can be overridden (an own
 * property, a subclass, a species constructor) and a Proxy can pose as one, so a check that reads
 * `bytes.length` and a copy that uses the real length disagree (issue 16 item 2: a 256-byte
 * write that claims 1 byte passes the bounds check and overwrites a neighbour). Here only the
 * intrinsic %TypedArray% getters, captured when this module loads, are consulted: they read the
 * array's internal slots and run no user code. The result is a plain Uint8Array over the same
 * bytes (or a copy when they live in a SharedArrayBuffer, which another thread could change
 * while a write verifies them), so code that receives it can trust `length` and `subarray`.
 * A Proxy is refused: ArrayBuffer.isView sees through no Proxy. A detached buffer reads as empty.
 * A shared buffer is recognised by its internal slot (node:util/types), not by an exception from
 * a getter: update() is a hot path, and a thrown exception costs microseconds.
 */

import { isSharedArrayBuffer } from 'node:util/types';

const TYPED_ARRAY_PROTO: object = Object.getPrototypeOf(Uint8Array.prototype);

function intrinsicGetter(proto: object, key: PropertyKey): (this: unknown) => unknown {
  const d = Object.getOwnPropertyDescriptor(proto, key);
  if (d?.get === undefined) throw new Error(`bytes.ts: no intrinsic getter ${String(key)}`);
  return d.get;
}

const tagOf = intrinsicGetter(TYPED_ARRAY_PROTO, Symbol.toStringTag);
const bufferOf = intrinsicGetter(TYPED_ARRAY_PROTO, 'buffer') as (this: unknown) => ArrayBufferLike;
const byteOffsetOf = intrinsicGetter(TYPED_ARRAY_PROTO, 'byteOffset') as (this: unknown) => number;
const byteLengthOf = intrinsicGetter(TYPED_ARRAY_PROTO, 'byteLength') as (this: unknown) => number;
/**
 * A plain Uint8Array over exactly the bytes `value` really holds, or undefined when `value` is
 * not a genuine Uint8Array (or subclass, e.g. Buffer): a Proxy, another typed array, a DataView,
 * an array-like. Runs no code of `value`.
 */
export function realBytes(value: unknown): Uint8Array | undefined {
  if (!ArrayBuffer.isView(value)) return undefined;
  if (tagOf.call(value) !== 'Uint8Array') return undefined;
  const length = byteLengthOf.call(value);
  if (length === 0) return new Uint8Array(0);
  const buffer = bufferOf.call(value);
  const offset = byteOffsetOf.call(value);
  if (isSharedArrayBuffer(buffer)) {
    const copy = new Uint8Array(length);
    copy.set(new Uint8Array(buffer, offset, length));
    return copy;
  }
  return new Uint8Array(buffer, offset, length);
}

/** The real byte length of a genuine Uint8Array (see realBytes), or -1 for anything else. */
export function realByteLength(value: unknown): number {
  if (!ArrayBuffer.isView(value) || tagOf.call(value) !== 'Uint8Array') return -1;
  return byteLengthOf.call(value);
}
