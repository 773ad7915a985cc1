/**
 * The write helper: every write into execmem memory, and every permission change, goes through
 * here (DESIGN.md rule 3: one write helper, no exported permission flipping).
 *
 * Why it is built this way:
 * - Text and rodata are never written plainly: an alias write where the backend has one (x86
 *   text_poke through a temporary mm, arm64 fixmap patching, host RW view), else the block's RW
 *   window is opened, written, and closed again, inside the allocator's lock (Kent's
 *   jitalloc_update, <ZHFDO/95KMXRdOWI@moria.home.lan>). A window is the whole block, whose
 *   mapping is one 2 MiB leaf, so a flip changes one PMD entry and never splits the large page
 *   (sub-range flips would split it, and only x86 collapses it back); inside batch() a window
 *   stays open across many updates and frees and is closed once when the batch ends.
 * - Failed calls change nothing (issue 16): the only fallible step of a write is the first one,
 *   opening the window (set_memory_rw may need a page-table frame for a split, and the machine
 *   rolls a failed call back, machine/cpa.ts). Closing restores the protection the same range
 *   had before, which the Backend contract says cannot fail (backend.ts protect): the splits it
 *   needs were made when the block was first protected. A failure there is a backend bug and
 *   is asserted, never left as an open, writable block.
 * - Free space is made safe on free: traps for text, zeros for data; a sealed ro_after_init
 *   object is unsealed first (the free's one fallible step, one set_memory_rw call).
 * - On alias arches every update and every free's trap fill is one write session of the backend
 *   (sim: machine/write-session.ts: the destination mapped at once, one local flush), and inside
 *   batch() ONE session is held open across all of them, begun at the first alias write and ended
 *   by closeAll() when the outermost batch ends, also when its callback threw (execmem.ts calls
 *   closeAll in a finally). Within a batch nothing else is deferred: each update's bytes and each
 *   free's trap fill are written and verified before the call returns; only the alias's teardown
 *   (unmap and its one flush) waits for the batch's end. Outside a batch, execmem.ts queues a
 *   free's trap fill (fills.ts) and an update holds one call session (beginCallSession) for its
 *   own write and the queued fills. A session's writes cannot fail for memory (its
 *   tables exist from the backend's creation), so "failed calls change nothing" holds as before,
 *   and ending a session cannot fail.
 */
import type { Prot } from '../arch/types.js';
import { assert } from '../base/assert.js';
import type { Backend } from './backend.js';
import { fromBackend } from './errors.js';
import type { Block } from './pools.js';

const ZERO = Uint8Array.of(0);

export class Writer {
  /** batch() nesting depth (Execmem keeps it here so windows know whether to stay open). */
  batchDepth = 0;
  private readonly openBlocks: Block[] = [];
  /** A backend write session is open for this batch (alias arches with sessions). */
  private sessionOpen = false;

  constructor(private readonly backend: Backend) {}

  /** Write bytes a caller may write plainly (data, unsealed ro_after_init). */
  plainWrite(dst: number, bytes: Uint8Array): void {
    try {
      this.backend.write(dst, bytes);
    } catch (e) {
      fromBackend(e, 'update');
    }
  }

  /** The one write helper for memory callers may not write plainly (text, rodata). */
  helperWrite(block: Block, dst: number, bytes: Uint8Array): void {
    if (this.backend.hasAliasWrite) {
      this.joinSession();
      try {
        this.backend.poke(dst, bytes);
      } catch (e) {
        fromBackend(e, 'update');
      }
      return;
    }
    this.openWindow(block, 'update');
    try {
      this.backend.write(dst, bytes);
    } catch (e) {
      this.closeUnlessBatched(block);
      fromBackend(e, 'update');
    }
    this.closeUnlessBatched(block);
  }

  /** Make freed space safe again: traps for text, zeros for data (unsealing ro_after_init first). */
  invalidate(block: Block, va: number, sizeBytes: number, sealed: boolean): void {
    switch (block.pool.cls) {
      case 'text':
        this.helperFill(block, va, sizeBytes, this.backend.arch.trapPattern);
        return;
      case 'rodata':
        this.helperFill(block, va, sizeBytes, ZERO);
        return;
      case 'ro_after_init':
        if (sealed) this.protect(block, va, sizeBytes, 'rw', 'free: unseal');
        this.plainFill(va, sizeBytes);
        return;
      case 'data':
        this.plainFill(va, sizeBytes);
        return;
    }
  }

  /** One protection change inside a block, typed on failure (atomic in the backend). */
  protect(block: Block, va: number, sizeBytes: number, prot: Prot, op: string): void {
    try {
      this.backend.protect(block.bb, va, sizeBytes, prot);
    } catch (e) {
      fromBackend(e, `${op}: protect ${prot}`);
    }
  }

  /** Close every window and the write session a batch opened (the end of the outermost batch). */
  closeAll(): void {
    while (this.openBlocks.length > 0) this.closeWindow(this.openBlocks.pop()!);
    if (this.sessionOpen) {
      this.sessionOpen = false;
      try {
        this.backend.endWriteSession!();
      } catch (e) {
        assert(false, `backend failed to end a write session: ${String(e)}`);
      }
    }
  }

  /** Does the backend have write sessions (several alias writes under one flush)? */
  hasSessions(): boolean {
    const b = this.backend;
    return b.hasAliasWrite && b.beginWriteSession !== undefined && b.endWriteSession !== undefined;
  }

  /**
   * Outside a batch, hold one backend write session across the alias writes of one call (an
   * update and the queued trap fills it takes along, execmem.ts): the call's first fallible step.
   */
  beginCallSession(op: string): void {
    assert(this.batchDepth === 0 && !this.sessionOpen && this.hasSessions(), 'call session misuse');
    try {
      this.backend.beginWriteSession!();
    } catch (e) {
      fromBackend(e, `${op}: opening the write session`);
    }
    this.sessionOpen = true;
  }

  /** End the session beginCallSession opened (cannot fail: see the header). */
  endCallSession(): void {
    assert(this.batchDepth === 0 && this.sessionOpen, 'call session not open');
    this.closeAll();
  }

  /** Is a batch's write session open (tests, audit)? */
  writeSessionOpen(): boolean {
    return this.sessionOpen;
  }

  /** A block with an open window was unmapped (its protections went with it). */
  forget(block: Block): void {
    if (!block.open) return;
    this.openBlocks.splice(this.openBlocks.indexOf(block), 1);
    block.open = false;
  }

  openWindowCount(): number {
    return this.openBlocks.length;
  }

  private helperFill(block: Block, va: number, sizeBytes: number, pattern: Uint8Array): void {
    if (this.backend.hasAliasWrite) {
      this.joinSession();
      try {
        this.backend.pokeSet(va, sizeBytes, pattern);
      } catch (e) {
        fromBackend(e, 'free: invalidate');
      }
      return;
    }
    this.openWindow(block, 'free');
    try {
      this.backend.fill(va, sizeBytes, pattern);
    } catch (e) {
      this.closeUnlessBatched(block);
      fromBackend(e, 'free: invalidate');
    }
    this.closeUnlessBatched(block);
  }

  /** Inside a batch, open the backend's write session at the first alias write (if it has them). */
  private joinSession(): void {
    if (this.batchDepth === 0 || this.sessionOpen) return;
    const b = this.backend;
    if (b.beginWriteSession === undefined || b.endWriteSession === undefined) return;
    try {
      b.beginWriteSession();
    } catch (e) {
      fromBackend(e, 'update: opening the write session');
    }
    this.sessionOpen = true;
  }

  private plainFill(va: number, sizeBytes: number): void {
    try {
      this.backend.fill(va, sizeBytes, ZERO);
    } catch (e) {
      fromBackend(e, 'free: invalidate');
    }
  }

  /** Make the whole block RW (non-alias arches): a write's one fallible step. */
  private openWindow(block: Block, op: string): void {
    if (block.open) return;
    this.protect(block, block.va, block.sizeBytes, 'rw', `${op}: opening the write window`);
    block.open = true;
    if (this.batchDepth > 0) this.openBlocks.push(block);
  }

  private closeUnlessBatched(block: Block): void {
    if (this.batchDepth === 0) this.closeWindow(block);
  }

  /** Give the block its pool's protection back: cannot fail (see the header). */
  private closeWindow(block: Block): void {
    if (!block.open) return;
    try {
      this.backend.protect(block.bb, block.va, block.sizeBytes, block.pool.prot);
    } catch (e) {
      assert(false, `backend failed to restore ${block.pool.prot} after a write window: ${String(e)}`);
    }
    block.open = false;
  }
}
