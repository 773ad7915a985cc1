/**
 * Schemas for every JSON file the dataset layer reads back (index.json, kernel-exports.json, the
 * derived module table), and the one error type that names the file and the field.
 *
 * Why hand-written checks: a cache file is input like any other. It can be truncated by a full
 * disk, edited by hand, or written by another version, and it used to reach the code as a typed
 * object on trust: an index.json without `modules` gave "internal error (TypeError)", a
 * kernel-exports.json with `perCpuEndBytes: -5` an AssertionError deep in the per-CPU allocator
 * (issue 16 item 9). Each file is now checked whole right after JSON.parse, so everything after
 * it can rely on the shape, and a bad file is refused with a DatasetError saying which file,
 * which field, what was expected and what was found. A few combinators keep each schema short;
 * no dependency is needed for that.
 */
import { readFileSync } from 'node:fs';

export class DatasetError extends Error {
  override name = 'DatasetError';
  constructor(
    message: string,
    /** The file the problem is in, when it is one file. */
    readonly file: string | null = null,
    /** The field inside it, as a path ('modules[3].fileBytes'), when it is one field. */
    readonly field: string | null = null,
  ) {
    super(message);
  }
}

/** A schema check: returns the value typed, or throws FieldError. */
export type Check<T> = (value: unknown, path: string) => T;

class FieldError extends Error {
  constructor(
    readonly path: string,
    readonly expected: string,
    readonly got: unknown,
  ) {
    super(`${path}: expected ${expected}`);
  }
}

function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing (missing)';
  if (v === null) return 'null';
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === 'object') return 'an object';
  const s = JSON.stringify(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function fail(path: string, expected: string, got: unknown): never {
  throw new FieldError(path, expected, got);
}

/** For checks beyond a schema (inside checkFile): the field, what it should be, what it is. */
export function fieldError(path: string, expected: string, got: unknown): Error {
  return new FieldError(path, expected, got);
}

export const str: Check<string> = (v, p) => (typeof v === 'string' ? v : fail(p, 'a string', v));

export function text(maxChars: number, pattern?: RegExp, what = 'a string'): Check<string> {
  return (v, p) => {
    if (typeof v !== 'string' || v.length === 0 || v.length > maxChars || (pattern && !pattern.test(v)))
      fail(p, `${what} of 1 to ${maxChars} characters`, v);
    return v;
  };
}

export const bool: Check<boolean> = (v, p) => (typeof v === 'boolean' ? v : fail(p, 'true or false', v));

export function int(min: number, max: number): Check<number> {
  return (v, p) =>
    typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max
      ? v
      : fail(p, `an integer in [${min}, ${max}]`, v);
}

export function nullable<T>(check: Check<T>): Check<T | null> {
  return (v, p) => (v === null ? null : check(v, p));
}

export function arrayOf<T>(check: Check<T>, minLength = 0): Check<T[]> {
  return (v, p) => {
    if (!Array.isArray(v) || v.length < minLength)
      fail(p, minLength > 0 ? `an array of at least ${minLength}` : 'an array', v);
    return v.map((x, i) => check(x, `${p}[${i}]`));
  };
}

export function oneOf<T extends string>(values: readonly T[]): Check<T> {
  return (v, p) => ((values as readonly unknown[]).includes(v) ? (v as T) : fail(p, values.join(' | '), v));
}

export function recordOf<T>(check: Check<T>): Check<Record<string, T>> {
  return (v, p) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(p, 'an object', v);
    const out: Record<string, T> = {};
    for (const [k, x] of Object.entries(v)) out[k] = check(x, `${p}.${k}`);
    return out;
  };
}

type Shape<T> = { [K in keyof T]: Check<T[K]> };

/** An object with exactly these fields checked (others are ignored, as JSON.parse gives them). */
export function object<T>(shape: Shape<T>): Check<T> {
  return (v, p) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(p, 'an object', v);
    const out = {} as T;
    for (const key of Object.keys(shape) as (keyof T & string)[]) {
      out[key] = shape[key]((v as Record<string, unknown>)[key], p === '' ? key : `${p}.${key}`);
    }
    return out;
  };
}

/** Names in `items` (by `key`) must be unique; reports the first duplicate's path. */
export function uniqueBy<T>(items: readonly T[], key: (t: T) => string, path: string): void {
  const seen = new Set<string>();
  items.forEach((t, i) => {
    const k = key(t);
    if (seen.has(k)) fail(`${path}[${i}]`, `a unique name (${JSON.stringify(k)} appears twice)`, k);
    seen.add(k);
  });
}

export type DatasetErrorClass = new (
  message: string,
  file: string | null,
  field: string | null,
) => DatasetError;

/** Run `fn` (which applies checks), turning a FieldError into a DatasetError naming the file. */
export function checkFile<T>(
  file: string,
  remedy: string,
  fn: () => T,
  errorClass: DatasetErrorClass = DatasetError,
): T {
  try {
    return fn();
  } catch (e) {
    if (!(e instanceof FieldError)) throw e;
    const field = e.path === '' ? '(top level)' : e.path;
    throw new errorClass(
      `${file}: field '${field}': expected ${e.expected}, found ${describeValue(e.got)} (${remedy})`,
      file,
      field,
    );
  }
}

/** Read and JSON.parse a file; an unreadable file or invalid JSON is a DatasetError naming it. */
export function readJson(
  file: string,
  remedy: string,
  errorClass: DatasetErrorClass = DatasetError,
): unknown {
  let raw: string;
  try {
    raw = readFileSync(file, 'utf8');
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new errorClass(`${file}: cannot be read: ${why}`, file, null);
  }
  try {
    return JSON.parse(raw);
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new errorClass(`${file}: invalid JSON: ${why} (${remedy})`, file, null);
  }
}
