/**
 * What the host backend accepts as a block request and a protection change, and the block record
 * it hands back.
 *
 * Why a request is copied field by field before it is checked: the backend turns these numbers
 * into mmap(MAP_FIXED)/mprotect calls on real memory. A request object with getters could pass
 * the checks with one size and then map another over memory outside the reservation; reading each
 * field exactly once into a local closes that window (issue 16: nothing the caller passes may
 * change between the check and the use).
 */
import { EXECMEM_TYPES, type ExecmemType, type Prot, typeIsText } from '../arch/types.js';
import { isPow2 } from '../base/addr.js';
import type { BackendBlock, MapBlockRequest } from '../execmem/backend.js';
import { P_NONE, P_RO, P_RW, protCode } from './arena.js';
import { HostError } from './errors.js';

export const TEXT = 0;
export const DATA = 1;

export class HostBlock implements BackendBlock {
  constructor(
    readonly va: number,
    readonly sizeBytes: number,
    readonly largePages: boolean,
    readonly type: ExecmemType,
    readonly family: number,
    readonly firstPage: number,
    readonly pageCount: number,
  ) {}
}

export interface CheckedRequest {
  readonly type: ExecmemType;
  readonly sizeBytes: number;
  readonly alignBytes: number;
  readonly huge: boolean;
}

function hex(va: number): string {
  return `0x${va.toString(16)}`;
}

export function familyIndexOf(type: ExecmemType): number {
  return typeIsText(type) ? TEXT : DATA;
}

/** The fields of a map request, each read once, checked (HostError EINVAL otherwise). */
export function checkMapRequest(
  req: MapBlockRequest,
  pageBytes: number,
  largePageBytes: number,
): CheckedRequest {
  const type = req?.type;
  const s = req?.sizeBytes;
  const alignBytes = req?.alignBytes;
  const huge = req?.huge === true;
  if (!(EXECMEM_TYPES as readonly unknown[]).includes(type)) {
    throw new HostError('EINVAL', `unknown type '${String(type)}'`);
  }
  if (typeof s !== 'number' || !Number.isInteger(s) || s <= 0 || s % pageBytes !== 0) {
    throw new HostError('EINVAL', `block size must be a positive multiple of ${pageBytes}, got ${String(s)}`);
  }
  if (typeof alignBytes !== 'number' || !Number.isSafeInteger(alignBytes) || !isPow2(alignBytes)) {
    throw new HostError('EINVAL', `block alignment must be a power of two, got ${String(alignBytes)}`);
  }
  if (huge && s % largePageBytes !== 0) {
    throw new HostError('EINVAL', `a huge block must be a multiple of ${largePageBytes} bytes, got ${s}`);
  }
  return { type, sizeBytes: s, alignBytes, huge };
}

/** The page code for protecting whole pages [va, va+sizeBytes) of block `b` (HostError EINVAL otherwise). */
export function checkProtect(
  b: HostBlock,
  va: number,
  sizeBytes: number,
  prot: Prot,
  pageBytes: number,
): number {
  if (prot === 'rwx') {
    throw new HostError('EINVAL', 'RWX is never granted (measurement-only baselines map their own memory)');
  }
  if (prot !== 'none' && prot !== 'ro' && prot !== 'rw' && prot !== 'rox') {
    throw new HostError('EINVAL', `unknown protection '${String(prot)}'`);
  }
  if (!Number.isInteger(va) || va % pageBytes !== 0 || !Number.isInteger(sizeBytes) || sizeBytes <= 0) {
    throw new HostError('EINVAL', `protect range must be whole pages: va ${String(va)}, ${sizeBytes} bytes`);
  }
  if (sizeBytes % pageBytes !== 0 || va < b.va || va + sizeBytes > b.va + b.sizeBytes) {
    throw new HostError(
      'EINVAL',
      `protect range ${hex(va)}+${sizeBytes} is not whole pages of block ${hex(b.va)}`,
    );
  }
  return protCode(prot);
}

/**
 * The alias protection that goes with a view protection in dualmap mode. The alias stays RW
 * while the allocator still writes through it (text: ROX view; module_rodata: RO view, updated
 * through the helper). A sealed ro_after_init page (RO view of a module_ro_after_init block) has no
 * writer left, so its alias becomes RO too, as set_memory_ro also write-protects the kernel's
 * direct-map alias; unsealing (RW view) restores it.
 */
export function aliasCodeFor(viewCode: number, type: ExecmemType): number {
  if (viewCode === P_NONE) return P_NONE;
  if (viewCode === P_RO && type === 'module_ro_after_init') return P_RO;
  return P_RW;
}
