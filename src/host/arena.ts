/**
 * One reservation per type family (text, data) in this process, populated block by block.
 *
 * Why one big reservation per family: every mature JIT keeps one contiguous region for code and
 * sub-allocates inside it (V8's CodeRange, SpiderMonkey's 2 GiB reservation, .NET's preferred
 * range; research/userspace-jit-alloc.md, "Design lessons" 1): calls between JIT functions stay
 * within rel32 reach, there are few VMAs (the 65530 map-count limit, urbit/vere#624), and blocks
 * are 2 MiB aligned so huge pages stay possible. Text and data never share a reservation, so text
 * and data never share a large page (DESIGN.md rule 5).
 *
 * dualmap: the reservation is two equal halves at a constant distance, both mapping ONE memfd:
 * the view (RX once published) at [viewBase, +cap) and the RW alias at [aliasBase, +cap), so
 * alias = va + (aliasBase - viewBase), one add (DynamoRIO's constant offset, DynamoRIO#3607).
 * The memfd is mapped while it is still empty (DynamoRIO#3612 did this against IMA hashing stalls),
 * then sized once to the capacity and its fd closed; shmem allocates pages only when touched, so
 * a block is "populated" by giving its pages access rights and touching them. The capacity is
 * clipped to RLIMIT_FSIZE beforehand, so ftruncate can never raise SIGXFSZ (dotnet/runtime#117819,
 * erlang/otp#11661, asmjit#527 died of exactly that). Both halves get MADV_DONTFORK: MAP_SHARED
 * would otherwise follow fork() and let a child write the parent's code (llvm-project#98538).
 *
 * mprotect: one anonymous PROT_NONE reservation; each block is a fresh anonymous mapping placed
 * over it with MAP_FIXED, and unmapping puts PROT_NONE reservation back (the pages are freed).
 *
 * Shared state (a SharedArrayBuffer, so worker_threads can attach to the same arena): one byte per
 * page for the view's protection, one for the alias's, and one for the page's owner (the lock slot
 * + 1 of the backend that mapped it, rwlock.ts; 0 = none). The backend checks the protections
 * before every store, so a wrong request is a typed error instead of a SIGSEGV that kills the
 * process; the owners let the blocks of a dead thread be found and reclaimed.
 */

import type { Prot } from '../arch/types.js';
import { assert } from '../base/assert.js';
import {
  type Libc,
  MADV_DONTFORK,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_NORESERVE,
  MAP_PRIVATE,
  MAP_SHARED,
  memoryView,
  PROT_EXEC,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
} from './libc.js';

export type FamilyName = 'text' | 'data';

/** Bytes of shared state per page: view code, alias code, owner. */
const STATE_BYTES_PER_PAGE = 3;

/** Page state codes in the shared tables. */
export const P_FREE = 0;
export const P_NONE = 1;
export const P_RO = 2;
export const P_RW = 3;
export const P_ROX = 4;

/** Structured-cloneable description of a family's reservation (sent to workers). */
export interface FamilyLayout {
  readonly name: FamilyName;
  readonly viewBase: number;
  /** 0 when there is no alias (mprotect mode). */
  readonly aliasBase: number;
  readonly capacityBytes: number;
  readonly pageBytes: number;
  /** 3 * pageCount bytes: view codes, alias codes, owners. */
  readonly state: SharedArrayBuffer;
}

export function protCode(prot: Prot): number {
  switch (prot) {
    case 'none':
      return P_NONE;
    case 'ro':
      return P_RO;
    case 'rw':
      return P_RW;
    case 'rox':
      return P_ROX;
    case 'rwx':
      throw new RangeError('rwx has no page code: the host backend never grants it');
  }
}

export function codeProt(code: number): Prot | null {
  return [null, 'none', 'ro', 'rw', 'rox'][code] as Prot | null;
}

export function protBits(prot: Prot): number {
  switch (prot) {
    case 'none':
      return PROT_NONE;
    case 'ro':
      return PROT_READ;
    case 'rw':
      return PROT_READ | PROT_WRITE;
    case 'rox':
      return PROT_READ | PROT_EXEC;
    case 'rwx':
      return PROT_READ | PROT_WRITE | PROT_EXEC;
  }
}

/** A family's reservation as one thread sees it: views over the memory plus the shared tables. */
export class FamilyArena {
  readonly viewEnd: number;
  readonly pageCount: number;
  /** Zero-copy byte views (koffi.view); only touched after the page tables allow it. */
  readonly view: Uint8Array;
  readonly alias: Uint8Array | null;
  readonly viewCodes: Uint8Array;
  readonly aliasCodes: Uint8Array;
  /** Owner of each page: lock slot + 1 of the backend that mapped it, 0 for a free page. */
  readonly owners: Uint8Array;

  constructor(readonly layout: FamilyLayout) {
    this.pageCount = layout.capacityBytes / layout.pageBytes;
    assert(Number.isInteger(this.pageCount) && this.pageCount > 0, 'capacity must be whole pages');
    assert(layout.state.byteLength === STATE_BYTES_PER_PAGE * this.pageCount, 'state table size mismatch');
    this.viewEnd = layout.viewBase + layout.capacityBytes;
    this.view = memoryView(layout.viewBase, layout.capacityBytes);
    this.alias = layout.aliasBase === 0 ? null : memoryView(layout.aliasBase, layout.capacityBytes);
    this.viewCodes = new Uint8Array(layout.state, 0, this.pageCount);
    this.aliasCodes = new Uint8Array(layout.state, this.pageCount, this.pageCount);
    this.owners = new Uint8Array(layout.state, 2 * this.pageCount, this.pageCount);
  }

  get name(): FamilyName {
    return this.layout.name;
  }

  contains(va: number, sizeBytes: number): boolean {
    return va >= this.layout.viewBase && va + sizeBytes <= this.viewEnd;
  }

  pageOf(va: number): number {
    return Math.floor((va - this.layout.viewBase) / this.layout.pageBytes);
  }

  /** Is every page touched by [va, va+sizeBytes) in `codes` equal to `code`? (sizeBytes > 0) */
  allEqual(codes: Uint8Array, va: number, sizeBytes: number, code: number): boolean {
    const last = this.pageOf(va + sizeBytes - 1);
    for (let p = this.pageOf(va); p <= last; p++) if (codes[p] !== code) return false;
    return true;
  }

  /** Is every page touched by [va, va+sizeBytes) readable (RO, RW or ROX)? */
  allReadable(va: number, sizeBytes: number): boolean {
    const last = this.pageOf(va + sizeBytes - 1);
    for (let p = this.pageOf(va); p <= last; p++) if (this.viewCodes[p] < P_RO) return false;
    return true;
  }

  setCodes(codes: Uint8Array, firstPage: number, pageCount: number, code: number): void {
    codes.fill(code, firstPage, firstPage + pageCount);
  }

  /** First free run of `pageCount` pages starting at a multiple of `alignPages`; -1 if none. */
  findRun(pageCount: number, alignPages: number): number {
    const codes = this.viewCodes;
    let start = 0;
    while (start + pageCount <= this.pageCount) {
      let busy = -1;
      for (let p = start; p < start + pageCount; p++) {
        if (codes[p] !== P_FREE) {
          busy = p;
          break;
        }
      }
      if (busy < 0) return start;
      start = Math.ceil((busy + 1) / alignPages) * alignPages;
    }
    return -1;
  }

  /** Does any page belong to the backend in lock slot `slot`? */
  ownsAny(slot: number): boolean {
    return this.owners.includes(slot + 1);
  }

  /** Bytes of pages in use (any state but free). */
  mappedBytes(): number {
    let n = 0;
    for (let p = 0; p < this.pageCount; p++) if (this.viewCodes[p] !== P_FREE) n++;
    return n * this.layout.pageBytes;
  }
}

/** Reserve `sizeBytes` of PROT_NONE address space aligned to `alignBytes`; -1 on failure. */
function reserveAligned(libc: Libc, sizeBytes: number, alignBytes: number): number {
  const raw = libc.mmap(
    0,
    sizeBytes + alignBytes,
    PROT_NONE,
    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
    -1,
    0,
  );
  if (raw === -1) return -1;
  const base = Math.ceil(raw / alignBytes) * alignBytes;
  if (base > raw) libc.munmap(raw, base - raw);
  const tail = raw + sizeBytes + alignBytes - (base + sizeBytes);
  if (tail > 0) libc.munmap(base + sizeBytes, tail);
  return base;
}

export type ReserveResult = { layout: FamilyLayout } | { error: string };

/** The mprotect-mode reservation of one family. */
export function reserveAnon(
  libc: Libc,
  name: FamilyName,
  capacityBytes: number,
  alignBytes: number,
): ReserveResult {
  const base = reserveAligned(libc, capacityBytes, alignBytes);
  if (base === -1) return { error: `reserving ${capacityBytes} bytes failed with errno ${libc.errno()}` };
  const state = new SharedArrayBuffer(STATE_BYTES_PER_PAGE * (capacityBytes / 4096));
  return { layout: { name, viewBase: base, aliasBase: 0, capacityBytes, pageBytes: 4096, state } };
}

/** The dualmap reservation of one family over `fd`, which the caller closes afterwards. */
export function reserveDual(
  libc: Libc,
  name: FamilyName,
  fd: number,
  capacityBytes: number,
  alignBytes: number,
): ReserveResult {
  const base = reserveAligned(libc, 2 * capacityBytes, alignBytes);
  if (base === -1) return { error: `reserving ${2 * capacityBytes} bytes failed with errno ${libc.errno()}` };
  const alias = base + capacityBytes;
  const fixed = MAP_SHARED | MAP_FIXED;
  const fail = (what: string): ReserveResult => {
    const e = libc.errno();
    libc.munmap(base, 2 * capacityBytes);
    return { error: `${what} failed with errno ${e}` };
  };
  // Map while the file is empty, then size it (DynamoRIO#3612); PROT_NONE until a block is mapped.
  if (libc.mmap(base, capacityBytes, PROT_NONE, fixed, fd, 0) !== base) return fail('mmap of the view');
  if (libc.mmap(alias, capacityBytes, PROT_NONE, fixed, fd, 0) !== alias) return fail('mmap of the alias');
  if (libc.ftruncate(fd, capacityBytes) !== 0) return fail('ftruncate of the memfd');
  if (libc.madvise(base, 2 * capacityBytes, MADV_DONTFORK) !== 0) return fail('madvise(MADV_DONTFORK)');
  const state = new SharedArrayBuffer(STATE_BYTES_PER_PAGE * (capacityBytes / 4096));
  return { layout: { name, viewBase: base, aliasBase: alias, capacityBytes, pageBytes: 4096, state } };
}

export function releaseLayout(libc: Libc, layout: FamilyLayout): void {
  const bytes = layout.aliasBase === 0 ? layout.capacityBytes : 2 * layout.capacityBytes;
  const rc = libc.munmap(layout.viewBase, bytes);
  assert(rc === 0, `munmap of the ${layout.name} reservation failed`);
}
