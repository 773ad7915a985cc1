/**
 * Checking what callers pass to execmem: addresses, sizes, bytes, contexts, options, backends.
 *
 * Why a layer of its own, and why this strict (DESIGN.md section 4; issue 16 items 2, 5, 7):
 * - Every bad argument gets an ExecmemError EINVAL that says what was expected and what came,
 *   never an AssertionError, TypeError or SyntaxError from deeper down, and never a guess.
 * - No argument's own code is trusted: messages are built with describe() (base/describe.ts),
 *   bytes are taken from their real backing store (base/bytes.ts), and an option is read once,
 *   so a getter cannot answer the check one way and the use another. A getter or trap that
 *   throws something other than an ExecmemError is reported as EINVAL; an ExecmemError from it
 *   (typically EBUSY: it tried to call back into the allocator, which refuses while a call is in
 *   progress, execmem.ts) passes through unchanged.
 * - Table look-ups by a caller's string are own-property look-ups (a Map here), so '__proto__'
 *   or 'toString' is an unknown name, not Object.prototype.
 * All of this runs before the allocator takes its lock or changes anything.
 */
import { EXECMEM_TYPES } from '../arch/types.js';
import { isPow2, SZ_2M, SZ_4K, VA_LIMIT } from '../base/addr.js';
import { realBytes } from '../base/bytes.js';
import { describe } from '../base/describe.js';
import type { Backend, ExecLock } from './backend.js';
import { ExecmemError, fail } from './errors.js';
import {
  BLOCK_BYTES,
  LARGE_TIER_FROM_BYTES,
  MAX_ALIGN_BYTES,
  type PoolSharing,
  RELEASE_DELAY_CALLS,
  SMALL_OBJECT_BYTES,
  SPARE_MAX_SHARE,
} from './limits.js';
import type { TypeClass } from './ranges.js';

/** Node's Buffer prototype (a Uint8Array subclass that does not override length). */
const BUFFER_PROTO: object | undefined =
  typeof Buffer === 'function' ? Object.getPrototypeOf(Buffer.alloc(0)) : undefined;

export const TYPE_INDEX: ReadonlyMap<unknown, number> = new Map(EXECMEM_TYPES.map((t, i) => [t, i]));

/**
 * `obj[key]`, read once. An ExecmemError thrown by a getter passes through; anything else a
 * getter or Proxy trap throws becomes EINVAL.
 */
export function readProp(obj: object, key: string, what: string): unknown {
  try {
    return (obj as Record<string, unknown>)[key];
  } catch (e) {
    if (e instanceof ExecmemError) throw e;
    fail('EINVAL', `reading ${what}.${key} threw (${e instanceof Error ? e.name : describe(e)})`);
  }
}

function requireObject(value: unknown, what: string, example: string): object | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    fail('EINVAL', `${what} must be an object like ${example}, got ${describe(value)}`);
  return value;
}

/** A 48-bit address as a number (the *Va twins). */
export function checkAddress(va: unknown, op: string): number {
  if (typeof va !== 'number' || !Number.isSafeInteger(va) || va < 0 || va >= VA_LIMIT) {
    fail(
      'EINVAL',
      `${op}: the address must be a non-negative integer below 2^48 (a 48-bit VA as a number), got ${describe(va)}`,
    );
  }
  return va;
}

/** The bytes of an update: a genuine Uint8Array, not empty, whose `length` tells the truth. */
export function checkBytes(bytes: unknown, op: string): Uint8Array {
  const real = realBytes(bytes);
  if (real === undefined) {
    fail(
      'EINVAL',
      `${op}: bytes must be a Uint8Array or Buffer (not a Proxy, another typed array or an array-like), got ${describe(bytes)}`,
    );
  }
  if (real.length === 0) fail('EINVAL', `${op}: bytes must not be empty (a detached buffer is empty)`);
  // A plain Uint8Array or Buffer without an own `length` cannot lie about it (the hot path);
  // getPrototypeOf and hasOwn run no user code on a genuine typed array.
  const proto = Object.getPrototypeOf(bytes);
  if ((proto === Uint8Array.prototype || proto === BUFFER_PROTO) && !Object.hasOwn(bytes as object, 'length'))
    return real;
  const claimed = readProp(bytes as object, 'length', 'bytes');
  if (claimed !== real.length) {
    fail('EINVAL', `${op}: bytes.length says ${describe(claimed)} but the array holds ${real.length} bytes`);
  }
  return real;
}

export interface AllocArgs {
  readonly ti: number;
  readonly atomic: boolean;
  readonly alignBytes: number;
}

/** alloc's type, size and context (the size's upper limit depends on the pool: execmem.ts). */
export function checkAlloc(type: unknown, sizeBytes: unknown, ctx: unknown): AllocArgs {
  const ti = TYPE_INDEX.get(type);
  if (ti === undefined) fail('EINVAL', `unknown type ${describe(type)} (known: ${EXECMEM_TYPES.join(', ')})`);
  if (typeof sizeBytes !== 'number' || !Number.isSafeInteger(sizeBytes) || sizeBytes <= 0)
    fail('EINVAL', `size must be a positive integer number of bytes, got ${describe(sizeBytes)}`);
  const c = requireObject(ctx, 'the allocation context', '{ atomic: true, alignBytes: 64 }');
  if (c === undefined) return { ti, atomic: false, alignBytes: 1 };
  const atomic = readProp(c, 'atomic', 'ctx');
  if (atomic !== undefined && typeof atomic !== 'boolean')
    fail('EINVAL', `ctx.atomic must be a boolean, got ${describe(atomic)}`);
  const align = readProp(c, 'alignBytes', 'ctx');
  if (align !== undefined && (typeof align !== 'number' || !isPow2(align) || align > MAX_ALIGN_BYTES))
    fail('EINVAL', `alignment must be a power of two <= ${MAX_ALIGN_BYTES}, got ${describe(align)}`);
  return { ti, atomic: atomic === true, alignBytes: (align as number | undefined) ?? 1 };
}

/** read's size. */
export function checkReadSize(sizeBytes: unknown): number {
  if (typeof sizeBytes !== 'number' || !Number.isSafeInteger(sizeBytes) || sizeBytes <= 0)
    fail('EINVAL', `read: size must be a positive integer number of bytes, got ${describe(sizeBytes)}`);
  return sizeBytes;
}

/** shrink's options: keepSpare. */
export function checkShrink(options: unknown): boolean {
  const o = requireObject(options, 'shrink options', '{ keepSpare: false }');
  if (o === undefined) return true;
  const keep = readProp(o, 'keepSpare', 'options');
  if (keep !== undefined && typeof keep !== 'boolean')
    fail('EINVAL', `shrink: keepSpare must be a boolean, got ${describe(keep)}`);
  return keep !== false;
}

export interface CheckedOptions {
  readonly seed: number;
  readonly kaslr: boolean;
  readonly granuleBytes: 16 | 64;
  readonly sharing: PoolSharing;
  readonly smallObjectBytes: number;
  readonly largeFromBytes: Readonly<Record<TypeClass, number>>;
  readonly releaseDelayCalls: number;
  readonly spareMaxShare: number;
  readonly deferFills: boolean;
}

/** new Execmem's options, with their defaults. */
export function checkOptions(options: unknown, defaultGranule: 16 | 64): CheckedOptions {
  const o = requireObject(options, 'execmem options', '{ seed: 1, granuleBytes: 64 }') ?? {};
  const seed = readProp(o, 'seed', 'options') ?? 1;
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0)
    fail('EINVAL', `seed must be a non-negative integer, got ${describe(seed)}`);
  const kaslr = readProp(o, 'kaslr', 'options') ?? true;
  if (typeof kaslr !== 'boolean') fail('EINVAL', `kaslr must be a boolean, got ${describe(kaslr)}`);
  const granule = readProp(o, 'granuleBytes', 'options') ?? defaultGranule;
  if (granule !== 16 && granule !== 64)
    fail('EINVAL', `granuleBytes must be 16 or 64, got ${describe(granule)}`);
  const sharing = readProp(o, 'sharing', 'options') ?? 'family';
  if (sharing !== 'family' && sharing !== 'type' && sharing !== 'kind')
    fail('EINVAL', `sharing must be 'family', 'type' or 'kind', got ${describe(sharing)}`);
  const small = readProp(o, 'smallObjectBytes', 'options') ?? SMALL_OBJECT_BYTES;
  if (typeof small !== 'number' || !Number.isSafeInteger(small) || small < 0 || small >= BLOCK_BYTES)
    fail('EINVAL', `smallObjectBytes must be an integer in [0, ${BLOCK_BYTES}), got ${describe(small)}`);
  const from = readProp(o, 'largeFromBytes', 'options') ?? {};
  const largeFromBytes = { ...LARGE_TIER_FROM_BYTES };
  if (typeof from !== 'object' || from === null)
    fail('EINVAL', `largeFromBytes must be an object of byte counts per class, got ${describe(from)}`);
  for (const cls of Object.keys(LARGE_TIER_FROM_BYTES) as TypeClass[]) {
    const v = readProp(from, cls, 'options.largeFromBytes') ?? LARGE_TIER_FROM_BYTES[cls];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
      fail('EINVAL', `largeFromBytes.${cls} must be a non-negative integer, got ${describe(v)}`);
    largeFromBytes[cls] = v;
  }
  const delay = readProp(o, 'releaseDelayCalls', 'options') ?? RELEASE_DELAY_CALLS;
  if (typeof delay !== 'number' || !Number.isSafeInteger(delay) || delay < 0)
    fail('EINVAL', `releaseDelayCalls must be a non-negative integer, got ${describe(delay)}`);
  const share = readProp(o, 'spareMaxShare', 'options') ?? SPARE_MAX_SHARE;
  if (typeof share !== 'number' || !Number.isSafeInteger(share) || share < 0)
    fail('EINVAL', `spareMaxShare must be a non-negative integer, got ${describe(share)}`);
  const fillOnFree = readProp(o, 'fillOnFree', 'options') ?? 'immediate';
  if (fillOnFree !== 'deferred' && fillOnFree !== 'immediate')
    fail('EINVAL', `fillOnFree must be 'deferred' or 'immediate', got ${describe(fillOnFree)}`);
  return {
    seed,
    spareMaxShare: share,
    deferFills: fillOnFree === 'deferred',
    kaslr,
    granuleBytes: granule,
    sharing,
    smallObjectBytes: small,
    largeFromBytes,
    releaseDelayCalls: delay,
  };
}

const BACKEND_METHODS = [
  'mapBlock',
  'unmapBlock',
  'write',
  'fill',
  'protect',
  'poke',
  'pokeSet',
  'read',
  'counters',
] as const;

/** Is this a Backend (backend.ts)? Checked member by member; returns the lock it offered. */
export function checkBackend(backend: unknown): { backend: Backend; lock: ExecLock | undefined } {
  const what = 'new Execmem: the backend';
  if (typeof backend !== 'object' || backend === null)
    fail('EINVAL', `${what} must be a Backend (a SimBackend, a HostBackend), got ${describe(backend)}`);
  const get = (key: string): unknown => readProp(backend, key, 'backend');
  const kind = get('kind');
  if (kind !== 'sim' && kind !== 'host')
    fail('EINVAL', `${what} must be a Backend: its kind must be 'sim' or 'host', got ${describe(kind)}`);
  for (const m of BACKEND_METHODS) {
    if (typeof get(m) !== 'function') fail('EINVAL', `${what} must be a Backend: it has no method ${m}()`);
  }
  const arch = get('arch');
  if (typeof arch !== 'object' || arch === null) fail('EINVAL', `${what} has no arch`);
  const trap = realBytes(readProp(arch, 'trapPattern', 'backend.arch'));
  if (
    typeof readProp(arch, 'name', 'backend.arch') !== 'string' ||
    typeof readProp(arch, 'execmemRanges', 'backend.arch') !== 'function' ||
    trap === undefined ||
    trap.length === 0
  )
    fail('EINVAL', `${what}'s arch is not an ArchSpec (name, execmemRanges, trapPattern)`);
  if (get('pageBytes') !== SZ_4K) fail('EINVAL', `${what}'s pageBytes must be ${SZ_4K}`);
  if (get('largePageBytes') !== SZ_2M) fail('EINVAL', `${what}'s largePageBytes must be ${SZ_2M}`);
  if (typeof get('hasAliasWrite') !== 'boolean') fail('EINVAL', `${what}'s hasAliasWrite must be a boolean`);
  const lock = get('lock');
  if (
    lock !== undefined &&
    (typeof lock !== 'object' ||
      lock === null ||
      typeof readProp(lock, 'acquire', 'backend.lock') !== 'function' ||
      typeof readProp(lock, 'release', 'backend.lock') !== 'function')
  )
    fail('EINVAL', `${what}'s lock must have acquire() and release()`);
  const start = get('modulesStart');
  if (start !== undefined && (typeof start !== 'number' || !Number.isSafeInteger(start) || start < 0))
    fail('EINVAL', `${what}'s modulesStart must be a non-negative integer, got ${describe(start)}`);
  return { backend: backend as Backend, lock: lock as ExecLock | undefined };
}
