/**
 * Typed errors of the host backend for bad requests.
 *
 * Why a second error type next to execmem/backend.ts's BackendError: BackendError's codes are the
 * conditions the allocator is expected to handle (ENOMEM, ENOSPC, ECLOSED, ENOTSUP). A request that
 * is simply wrong (an address outside every live block, a write to a page that is not writable, a
 * protection the backend never grants such as RWX, bytes that are not a genuine Uint8Array, a
 * function at an address that holds no code) is a caller bug on real memory: letting it reach
 * the MMU would kill the whole process with SIGSEGV. So the backend checks against its own page
 * table first and throws a HostError with nothing changed.
 */
export type HostErrorCode =
  /** Malformed argument: unaligned, zero or negative size, unknown signature, forbidden protection. */
  | 'EINVAL'
  /** The address range is not (entirely) inside live memory with the needed access. */
  | 'EFAULT'
  /** A system call failed (errno in the message). */
  | 'ESYSCALL'
  /** Every lock slot of the arena is taken by a live thread (too many threads attached). */
  | 'EUSERS';

export class HostError extends Error {
  override name = 'HostError';
  constructor(
    readonly code: HostErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}
