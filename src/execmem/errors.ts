/**
 * Typed errors of the execmem allocator.
 *
 * Why one class with a `code`: DESIGN.md section 4 asks that every bad input gets a typed error
 * that says what was wrong and leaves state unchanged. Callers (the module loader, the BPF JIT
 * flow, tests) branch on `code`, never on message text. The codes follow errno names where one
 * fits (EINVAL, ENOSPC, ENOMEM, EAGAIN for "would have to sleep/grow in atomic context", as
 * GFP_ATOMIC allocations fail in Linux) and are descriptive where errno has no precise word
 * (EFREE: the address lies in free space, i.e. a double free or a pointer never handed out).
 */
export type ExecmemErrorCode =
  /** Bad argument: size not a positive safe integer, unknown type, bad alignment, bad buffer. */
  | 'EINVAL'
  /** Size larger than the allocator's limit or than the type's whole range. */
  | 'E2BIG'
  /** The address is not inside any memory this allocator has mapped. */
  | 'ENOENT'
  /** The address lies in free space: a double free, or a pointer never handed out. */
  | 'EFREE'
  /** The address is inside a live allocation but not at its start (free/seal/sizeOf need the start). */
  | 'EINSIDE'
  /** A write would cross the end of the live allocation it starts in. */
  | 'ERANGE'
  /** Not permitted for this type or state: seal of a non-ro_after_init type, write to sealed memory. */
  | 'EPERM'
  /** No virtual address space left in the type's range (and its fallback). */
  | 'ENOSPC'
  /** Physical memory (or page-table memory) could not be had. */
  | 'ENOMEM'
  /** Atomic context: serving the request would need a new block to be mapped. */
  | 'EAGAIN'
  /** The operation is not allowed while a batch is open (e.g. shrink inside batch()). */
  | 'EBUSY';

export class ExecmemError extends Error {
  override name = 'ExecmemError';
  constructor(
    readonly code: ExecmemErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}
