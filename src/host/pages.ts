/**
 * The kernel side of the host arena: give pages memory, take it back, change protections, and keep
 * a journal of the change in progress so another thread can finish it if this one dies.
 *
 * Why a journal: each of these changes is several system calls plus updates of the shared page
 * tables (arena.ts), and a worker may be terminated between any two of them (issue 16, item 4). A
 * survivor that takes the lock over (rwlock.ts) must find the kernel's protections and the tables
 * in agreement again, or a call would pass the table check and fault on the real page. Before the
 * first step the holder writes what it is doing; recovery replays it to a known end state:
 * - J_FREE (a map in progress is rolled back, an unmap rolled forward): the range loses its
 *   memory and goes back to PROT_NONE, tables FREE, owner none. A half-mapped block belongs to
 *   the dead thread, which can no longer hand it out.
 * - J_PROTECT (rolled forward): the view and, in dualmap, the alias get the journalled codes.
 * Every step is W^X on its own: a mapping is never given write and execute together (the view is
 * never writable in dualmap, the alias never executable; mprotect mode flips one mapping between
 * RW and RX), so an interruption can leave stale protections but never a W+X page. Replay is
 * idempotent: a recoverer that dies in turn leaves the same journal for the next one.
 *
 * The free path follows VM_FLUSH_RESET_PERMS (vm_reset_perms(), mm/vmalloc.c): permissions are
 * reset before the memory is given back, so nothing freed stays executable.
 */
import type { Prot } from '../arch/types.js';
import { assert } from '../base/assert.js';
import { codeProt, type FamilyArena, P_FREE, P_NONE, protBits } from './arena.js';
import { HostError } from './errors.js';
import {
  type Libc,
  MADV_HUGEPAGE,
  MADV_REMOVE,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_NORESERVE,
  MAP_PRIVATE,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
} from './libc.js';
import { hugeBytesIn, type ThpUse } from './procmaps.js';

export const J_NONE = 0;
export const J_FREE = 1;
export const J_PROTECT = 2;
const J_OP = 0;
const J_FAMILY = 1;
const J_FIRST = 2;
const J_COUNT = 3;
const J_VIEW = 4;
const J_ALIAS = 5;

function hex(va: number): string {
  return `0x${va.toString(16)}`;
}

export class PageOps {
  constructor(
    private readonly libc: Libc,
    private readonly families: readonly FamilyArena[],
    private readonly journal: Int32Array,
    private readonly pageBytes: number,
    private readonly pmdBytes: number,
  ) {}

  // ---------------------------------------------------------------- journal

  /** Record the change about to be made (caller holds the exclusive lock). */
  begin(op: number, family: number, firstPage: number, pageCount: number, view = 0, alias = 0): void {
    const j = this.journal;
    Atomics.store(j, J_FAMILY, family);
    Atomics.store(j, J_FIRST, firstPage);
    Atomics.store(j, J_COUNT, pageCount);
    Atomics.store(j, J_VIEW, view);
    Atomics.store(j, J_ALIAS, alias);
    Atomics.store(j, J_OP, op);
  }

  end(): void {
    Atomics.store(this.journal, J_OP, J_NONE);
  }

  /** Finish what a dead holder journalled (caller holds the lock in its place). */
  replay(): void {
    const j = this.journal;
    const op = Atomics.load(j, J_OP);
    if (op === J_NONE) return;
    const fam = this.families[Atomics.load(j, J_FAMILY)];
    const first = Atomics.load(j, J_FIRST);
    const count = Atomics.load(j, J_COUNT);
    if (fam === undefined || first < 0 || count <= 0 || first + count > fam.pageCount) {
      this.end();
      return;
    }
    if (op === J_FREE) this.release(fam, first, count);
    else if (op === J_PROTECT)
      this.protect(fam, first, count, Atomics.load(j, J_VIEW), Atomics.load(j, J_ALIAS));
    this.end();
  }

  // ---------------------------------------------------------------- page changes

  /** Give a free range its pages, RW+NX (and an RW alias in dualmap). Nothing changes on failure. */
  populate(fam: FamilyArena, firstPage: number, pageCount: number): void {
    const libc = this.libc;
    const va = this.vaOf(fam, firstPage);
    const sizeBytes = pageCount * this.pageBytes;
    const rw = PROT_READ | PROT_WRITE;
    if (fam.alias === null) {
      if (libc.mmap(va, sizeBytes, rw, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) !== va) {
        const errno = libc.errno();
        this.restoreReservation(va, sizeBytes);
        throw new HostError('ESYSCALL', `mmap of a ${sizeBytes}-byte block failed with errno ${errno}`);
      }
      return;
    }
    if (libc.mprotect(va, sizeBytes, rw) !== 0) {
      throw new HostError('ESYSCALL', `mprotect of the view failed with errno ${libc.errno()}`);
    }
    if (libc.mprotect(this.aliasOf(fam, va), sizeBytes, rw) !== 0) {
      const errno = libc.errno();
      libc.mprotect(va, sizeBytes, PROT_NONE);
      throw new HostError('ESYSCALL', `mprotect of the alias failed with errno ${errno}`);
    }
  }

  /**
   * Return a range to the reservation: memory freed, PROT_NONE, tables FREE and unowned. Works
   * from any state the range can be in, so it serves unmap, rollback of a map, and reclaim.
   */
  release(fam: FamilyArena, firstPage: number, pageCount: number, onStep?: () => void): void {
    const libc = this.libc;
    const va = this.vaOf(fam, firstPage);
    const sizeBytes = pageCount * this.pageBytes;
    if (fam.alias === null) {
      this.restoreReservation(va, sizeBytes);
    } else {
      const alias = this.aliasOf(fam, va);
      // MADV_REMOVE needs a writable shared mapping: reset the alias first (VM_FLUSH_RESET_PERMS-like).
      let rc = libc.mprotect(alias, sizeBytes, PROT_READ | PROT_WRITE);
      if (rc === 0) rc = libc.madvise(alias, sizeBytes, MADV_REMOVE);
      if (rc === 0) rc = libc.mprotect(va, sizeBytes, PROT_NONE);
      if (rc === 0) rc = libc.mprotect(alias, sizeBytes, PROT_NONE);
      if (rc !== 0)
        throw new HostError('ESYSCALL', `releasing pages at ${hex(va)} failed with errno ${libc.errno()}`);
    }
    onStep?.();
    fam.setCodes(fam.viewCodes, firstPage, pageCount, P_FREE);
    fam.setCodes(fam.aliasCodes, firstPage, pageCount, P_FREE);
    fam.setCodes(fam.owners, firstPage, pageCount, 0);
  }

  /**
   * Give whole pages the view code `view` and, in dualmap, the alias code `alias` (skipped when
   * the alias already has it, unless `always`). Returns the number of mprotect calls made.
   * `onStep` runs between the system calls (tests force a death there).
   */
  protect(
    fam: FamilyArena,
    firstPage: number,
    pageCount: number,
    view: number,
    alias: number,
    onStep?: (step: 'view' | 'alias') => void,
  ): number {
    const libc = this.libc;
    const va = this.vaOf(fam, firstPage);
    const sizeBytes = pageCount * this.pageBytes;
    const viewProt = codeProt(view) as Prot;
    if (libc.mprotect(va, sizeBytes, protBits(viewProt)) !== 0) {
      throw new HostError(
        'ESYSCALL',
        `mprotect(${hex(va)}, ${sizeBytes}, ${viewProt}) failed with errno ${libc.errno()}`,
      );
    }
    onStep?.('view');
    fam.setCodes(fam.viewCodes, firstPage, pageCount, view);
    if (fam.alias === null || fam.allEqual(fam.aliasCodes, va, sizeBytes, alias)) return 1;
    const aliasVa = this.aliasOf(fam, va);
    if (libc.mprotect(aliasVa, sizeBytes, protBits(codeProt(alias) as Prot)) !== 0) {
      throw new HostError(
        'ESYSCALL',
        `mprotect of the alias at ${hex(aliasVa)} failed with errno ${libc.errno()}`,
      );
    }
    onStep?.('alias');
    fam.setCodes(fam.aliasCodes, firstPage, pageCount, alias);
    return 2;
  }

  /**
   * Ask for 2 MiB pages for a fresh block and check what the kernel did: advise where the policy
   * wants it, touch one byte per 2 MiB (the block is fresh and zero, so writing 0 changes nothing)
   * so the fault decides the page size now, and compare smaps before and after.
   */
  tryHuge(fam: FamilyArena, firstPage: number, pageCount: number, use: ThpUse): boolean {
    const va = this.vaOf(fam, firstPage);
    const sizeBytes = pageCount * this.pageBytes;
    const pmd = this.pmdBytes;
    assert(va % pmd === 0 && sizeBytes % pmd === 0, 'huge block not PMD aligned');
    if (!use.usable) return false;
    if (use.needsMadvise) {
      if (this.libc.madvise(va, sizeBytes, MADV_HUGEPAGE) !== 0) return false;
      if (fam.alias !== null) this.libc.madvise(this.aliasOf(fam, va), sizeBytes, MADV_HUGEPAGE);
    }
    const field = fam.alias !== null ? 'ShmemPmdMapped' : 'AnonHugePages';
    const before = hugeBytesIn(va, va + sizeBytes, field);
    const off = va - fam.layout.viewBase;
    for (let o = 0; o < sizeBytes; o += pmd) fam.view[off + o] = 0;
    const after = hugeBytesIn(va, va + sizeBytes, field);
    return after - before >= sizeBytes;
  }

  /**
   * Release every run of pages whose owner (lock slot + 1) is in `deadOwners`, each run journalled;
   * returns the bytes released. The caller holds the exclusive lock.
   */
  reclaim(deadOwners: ReadonlySet<number>): number {
    let bytes = 0;
    for (let fi = 0; fi < this.families.length; fi++) {
      const fam = this.families[fi];
      const owners = fam.owners;
      let p = 0;
      while (p < fam.pageCount) {
        const o = owners[p];
        if (o === 0 || !deadOwners.has(o)) {
          p++;
          continue;
        }
        let q = p + 1;
        while (q < fam.pageCount && owners[q] === o) q++;
        this.begin(J_FREE, fi, p, q - p);
        try {
          this.release(fam, p, q - p);
        } finally {
          this.end();
        }
        bytes += (q - p) * this.pageBytes;
        p = q;
      }
    }
    return bytes;
  }

  private restoreReservation(va: number, sizeBytes: number): void {
    const flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE;
    if (this.libc.mmap(va, sizeBytes, PROT_NONE, flags, -1, 0) !== va)
      throw new HostError('ESYSCALL', `re-reserving ${hex(va)} failed with errno ${this.libc.errno()}`);
  }

  private vaOf(fam: FamilyArena, page: number): number {
    return fam.layout.viewBase + page * this.pageBytes;
  }

  private aliasOf(fam: FamilyArena, va: number): number {
    return va + fam.layout.aliasBase - fam.layout.viewBase;
  }

  // ---------------------------------------------------------------- audits

  /**
   * Pages whose kernel protection (from /proc/self/maps entries given) differs from the tables, as
   * "<family> view|alias page <n>: table <code> kernel <perms>" (tests; empty when they agree).
   */
  disagreements(maps: readonly { start: number; end: number; perms: string }[]): string[] {
    const out: string[] = [];
    const want = (code: number): string => {
      if (code === P_FREE || code === P_NONE) return '---';
      const prot = codeProt(code);
      return prot === 'ro' ? 'r--' : prot === 'rw' ? 'rw-' : 'r-x';
    };
    for (const fam of this.families) {
      const views: [string, number, Uint8Array][] = [['view', fam.layout.viewBase, fam.viewCodes]];
      if (fam.alias !== null) views.push(['alias', fam.layout.aliasBase, fam.aliasCodes]);
      for (const [what, base, codes] of views) {
        const end = base + fam.layout.capacityBytes;
        for (const m of maps) {
          const lo = Math.max(m.start, base);
          const hi = Math.min(m.end, end);
          for (let va = lo; va < hi; va += this.pageBytes) {
            const p = (va - base) / this.pageBytes;
            const perms = m.perms.slice(0, 3);
            if (perms !== want(codes[p]) && out.length < 20) {
              out.push(
                `${fam.name} ${what} page ${p}: table ${codeProt(codes[p]) ?? 'free'} kernel ${perms}`,
              );
            }
          }
        }
      }
    }
    return out;
  }
}
