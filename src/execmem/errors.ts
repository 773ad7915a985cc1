/**
 * Typed errors of the execmem allocator.
 *
 * Why one class with a `code`: DESIGN.md section 4 asks that every bad input gets a typed error
 * that says what was wrong and leaves state unchanged. Callers (the module loader, the BPF JIT
 * flow, tests) branch on `code`, never on message text. The codes follow errno names where one
 * fits (EINVAL, ENOSPC, ENOMEM, EAGAIN for "would have to sleep/grow in atomic context", as
 * GFP_ATOMIC allocations fail in Linux) and are descriptive where errno has no precise word
 * (EFREE: the address lies in free space, i.e. a double free or a pointer never handed out).
 * A backend's own errors never reach a caller: fromBackend() turns them into these.
 */
import { BackendError } from './backend.js';

export type ExecmemErrorCode =
  /** Bad argument: size not a positive safe integer, unknown type, bad alignment, bad buffer, bad address. */
  | 'EINVAL'
  /** Size larger than the allocator's limit or than the type's whole range. */
  | 'E2BIG'
  /** The address lies outside everything this allocator has ever mapped. */
  | 'ENOENT'
  /**
   * The address holds no live allocation but lies where this allocator has mapped memory: a
   * double free (of a small or a large allocation), a freed pointer, or one never handed out.
   */
  | 'EFREE'
  /** The address is inside a live allocation but not at its start (free/seal/sizeOf need the start). */
  | 'EINSIDE'
  /** A write would cross the end of the live allocation it starts in (its requested size). */
  | 'ERANGE'
  /** Not permitted for this type or state: seal of a non-ro_after_init type, write to sealed memory. */
  | 'EPERM'
  /** No virtual address space left in the type's range (and its fallback). */
  | 'ENOSPC'
  /** Physical memory (or page-table memory) could not be had; nothing changed. */
  | 'ENOMEM'
  /** Atomic context: serving the request would need a new block to be mapped. */
  | 'EAGAIN'
  /**
   * The allocator is busy: shrink() inside batch(), or a call made while another call on the
   * same allocator is in progress (an argument's getter, a Proxy trap or a forEachRun callback
   * calling back in). Nothing changed.
   */
  | 'EBUSY'
  /** The backend was closed (host backend after close()). */
  | 'ECLOSED'
  /**
   * The backend's lock is already held by this thread through another backend instance (host,
   * mprotect mode): waiting could never end, so nothing was tried and nothing changed.
   */
  | 'EDEADLK'
  /** The backend's lock is held by another live thread past the backend's bound; nothing changed. */
  | 'ETIMEDOUT';

/** Every code, at run time (a Record, so a code added to the type must be added here). */
const CODES: Readonly<Record<ExecmemErrorCode, true>> = {
  EINVAL: true,
  E2BIG: true,
  ENOENT: true,
  EFREE: true,
  EINSIDE: true,
  ERANGE: true,
  EPERM: true,
  ENOSPC: true,
  ENOMEM: true,
  EAGAIN: true,
  EBUSY: true,
  ECLOSED: true,
  EDEADLK: true,
  ETIMEDOUT: true,
};
export const EXECMEM_ERROR_CODES: readonly ExecmemErrorCode[] = Object.keys(CODES) as ExecmemErrorCode[];

export class ExecmemError extends Error {
  override name = 'ExecmemError';
  constructor(
    readonly code: ExecmemErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

export function fail(code: ExecmemErrorCode, message: string): never {
  throw new ExecmemError(code, message);
}

const PASSED_THROUGH: ReadonlySet<string> = new Set<ExecmemErrorCode>([
  'ENOMEM',
  'ENOSPC',
  'ECLOSED',
  'EINVAL',
  'EDEADLK',
  'ETIMEDOUT',
]);

/** A BackendError as the allocator's typed error; anything else is a bug and propagates as is. */
export function fromBackend(e: unknown, what: string): never {
  if (e instanceof BackendError) {
    const code = PASSED_THROUGH.has(e.code) ? (e.code as ExecmemErrorCode) : 'ENOMEM';
    throw new ExecmemError(code, `${what}: ${e.message}`);
  }
  throw e;
}
