/**
 * Typed errors of the machine.
 *
 * Why two kinds: a `MachineFault` is what hardware raises on an access (page not present,
 * write to a read-only page, fetch from a non-executable page, or executing the trap pattern):
 * it is an expected, testable outcome. A `MachineError` is a bad request from software (an
 * unaligned range, an address outside a range, out of memory); it leaves the machine unchanged.
 */
import type { FaultKind } from './types.js';

export type MachineErrorCode =
  | 'EINVAL' // bad argument (unaligned, zero size, wrong range)
  | 'ENOMEM' // no physical memory of the needed order
  | 'ENOSPC' // no virtual address space left in the range
  | 'ENOENT' // no mapping / no area at that address
  | 'EBUSY' // overlaps an existing mapping or area
  | 'ENOTSUP'; // the arch has no such primitive (e.g. no alias write on `generic`)

export class MachineError extends Error {
  override name = 'MachineError';
  constructor(
    readonly code: MachineErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

export class MachineFault extends Error {
  override name = 'MachineFault';
  constructor(
    readonly kind: FaultKind,
    readonly cpu: number,
    readonly va: number,
    message: string,
  ) {
    super(message);
  }
}
