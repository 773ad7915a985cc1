/**
 * Typed errors of the re-implemented Linux policies.
 *
 * Why a separate class: the policies are baselines, not the product, but they are driven by the
 * same workloads as execmem, and a workload must be able to tell "the design ran out of module
 * space" (ENOSPC, a real outcome worth reporting) from "the trace asked for nonsense" (EINVAL).
 * Every policy validates its input before touching the machine, so a PolicyError for bad input
 * always means the machine and the policy are unchanged. Machine failures (ENOMEM, ENOSPC) are
 * re-thrown with the policy's name, after the policy has undone its own partial work.
 */
export type PolicyErrorCode =
  | 'EINVAL' // bad argument: size, type, alignment, a write that crosses an allocation's end
  | 'ENOENT' // no live allocation at (or containing) that address
  | 'EPERM' // write to memory the design made read-only for good (sealed ro_after_init)
  | 'ENOMEM' // physical memory could not be had
  | 'ENOSPC' // no virtual address space left in the type's range (and its fallback)
  | 'ENOTSUP'; // the architecture lacks a primitive the design needs

export class PolicyError extends Error {
  override name = 'PolicyError';
  constructor(
    readonly code: PolicyErrorCode,
    readonly policy: string,
    message: string,
  ) {
    super(`${policy}: ${code}: ${message}`);
  }
}
