/**
 * Addresses and sizes.
 *
 * Why numbers, not bigints, inside: kernel virtual addresses exceed 2^53 as unsigned 64-bit
 * values, but on x86-64 and arm64 (48-bit VA) the top 16 bits are a sign extension of bit 47.
 * The low 48 bits identify the address uniquely and fit exactly in a double, so hot paths use
 * plain numbers ("va48") and the public API converts at the edge (`toBigAddr`, `toVa`).
 * JavaScript bit operators truncate to 32 bits, so alignment uses exact float arithmetic:
 * every value here is an integer below 2^53 and every alignment a power of two.
 */
import { assert } from './assert.js';

export const SZ_4K = 4096;
export const SZ_2M = 2 * 1024 * 1024;
export const SZ_1G = 1024 * 1024 * 1024;
export const VA_BITS = 48;
export const VA_LIMIT = 2 ** VA_BITS;
const VA_MASK_BIG = (1n << 48n) - 1n;
const SIGN_EXT_BIG = 0xffff_0000_0000_0000n;

/** A 64-bit address (bigint) to its 48-bit form. Throws if it is not canonical. */
export function toVa(addr: bigint): number {
  const low = addr & VA_MASK_BIG;
  const high = addr >> 48n;
  const bit47 = (low >> 47n) & 1n;
  if (!((high === 0n && bit47 === 0n) || (high === 0xffffn && bit47 === 1n))) {
    throw new RangeError(`address 0x${addr.toString(16)} is not canonical (48-bit VA)`);
  }
  return Number(low);
}

/** A 48-bit address to its canonical 64-bit form (sign-extends bit 47). */
export function toBigAddr(va: number): bigint {
  assert(Number.isInteger(va) && va >= 0 && va < VA_LIMIT, `va out of range: ${va}`);
  const b = BigInt(va);
  return va >= 2 ** 47 ? b | SIGN_EXT_BIG : b;
}

/** Hex rendering of a 48-bit address as its canonical 64-bit form, for messages and dumps. */
export function hexAddr(va: number): string {
  return `0x${toBigAddr(va).toString(16).padStart(16, '0')}`;
}

export function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

export function alignDown(value: number, align: number): number {
  return Math.floor(value / align) * align;
}

/**
 * value % align for an integer value in [0, 2^53) and a power-of-two align, without the
 * floating-point remainder (a library call, several times slower than this on the machine's hot
 * paths, where addresses above 2^31 are doubles).
 */
export function offsetIn(value: number, align: number): number {
  return value - alignDown(value, align);
}

export function alignUp(value: number, align: number): number {
  return Math.ceil(value / align) * align;
}

export function isAligned(value: number, align: number): boolean {
  return value % align === 0;
}

/** Human-readable byte size: 4096 -> "4K", 2097152 -> "2M". */
export function fmtSize(bytes: number): string {
  const units = ['', 'K', 'M', 'G', 'T', 'P'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && v % 1024 === 0 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v}${units[u]}`;
}
