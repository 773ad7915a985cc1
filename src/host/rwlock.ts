/**
 * The arena lock: a reader/writer lock in a SharedArrayBuffer, shared by every worker_thread
 * attached to one host arena, that survives the death of a thread holding it.
 *
 * Why a reader/writer lock: in mprotect mode an update makes pages RW+NX for a moment (the
 * allocator's helper, DESIGN.md rule 3). A thread calling code on such a page takes SIGSEGV on the
 * fetch and the process dies, so a call holds the lock *shared* and a permission flip, a map or an
 * unmap holds it *exclusive*. dualmap uses only the exclusive side, for its shared page tables.
 *
 * Why it must survive a dead holder (issue 16, item 4): `worker.terminate()` stops a worker at its
 * next JS safepoint without running `finally` blocks, so a worker terminated inside batch(),
 * mapBlock or protect used to leave the lock held forever and the next alloc never returned.
 * Chosen: recover, not refuse to share. Every holder is recorded by kernel thread identity, every
 * wait has a bound, and a waiter that sees the same holder after a wait slice asks the kernel
 * whether that thread still exists (threads.ts). If not, it takes the lock over with one
 * compare-exchange (so only one waiter recovers) and replays the dead holder's journal (the
 * backend's `recover` callback: an interrupted map is rolled back, an unmap or a protection
 * change rolled forward, so the kernel's protections match the shared page tables again; no state
 * in between is ever W+X, see pages.ts). A live holder that keeps the lock past the bound makes
 * the waiter fail with BackendError ETIMEDOUT; a wait that could only end by this thread's own
 * release fails at once with EDEADLK. Nothing waits forever.
 *
 * Protocol (all Atomics, sequentially consistent):
 * - Every backend instance claims a slot: [tid, start ticks (2 words), shared depth]. A slot is
 *   claimed by compare-exchange of its tid word (0 = free, -1 = detached but still owning pages).
 * - Exclusive: compare-exchange STATE from 0 to (slot + 1), so the holder's identity is in the very
 *   word that is the lock (no window where the lock is held by nobody known). Then drain readers:
 *   wait until every other slot's shared depth is 0. Re-entrant for the holding instance (the
 *   backend's map/protect run inside the allocator's hold); `acquireOnce` refuses re-entry.
 * - Shared, in the shape of Linux's percpu_rw_semaphore (kernel/locking/percpu-rwsem.c, 6.18:
 *   __percpu_down_read_trylock() counts up its own CPU's read_count, then backs off and wakes the
 *   writer if `block` is set; percpu_down_write() sets `block`, then waits until the counts sum to
 *   zero): a reader stores 1 in its own slot, then reads STATE; if a writer is there, it retracts
 *   and waits. A writer sets STATE before reading the slots, so either the reader sees the writer
 *   or the writer sees the reader. Nested calls only count up the own word. No stream of readers
 *   can starve a writer: a writer that holds STATE turns new readers away while it drains the old.
 * - Waits are Atomics.wait slices (SLICE_MS) on the word that will change; a releaser notifies
 *   STATE only when a sleeper announced itself, and a slot word only while a writer is present.
 *   A thread terminated inside Atomics.wait leaves SLEEPERS one too high: that costs a needless
 *   notify per release, never a missed one.
 * - A dead reader (a thread terminated inside a call) is found the same way while draining: its
 *   shared depth is cleared.
 */
import { assert } from '../base/assert.js';
import { BackendError, type ExecLock } from '../execmem/backend.js';
import { HostError } from './errors.js';
import { type ThreadIdentity, threadAlive } from './threads.js';

const STATE = 0;
const CLOSED = 1;
const SLEEPERS = 2;
const TIMEOUT_MS = 3;
const RECOVERIES = 4;
const READER_RESETS = 5;
const HIGH = 6;
const JOURNAL = 8;
export const JOURNAL_WORDS = 8;
const SLOTS = 16;
const SLOT_WORDS = 4;
const S_TID = 0;
const S_START_LO = 1;
const S_START_HI = 2;
const S_READERS = 3;
/** Slots per arena; a page's owner is stored as slot + 1 in one byte (arena.ts). */
export const MAX_SLOTS = 128;
const WORDS = SLOTS + MAX_SLOTS * SLOT_WORDS;
/** tid word of a slot whose backend closed while it still owned pages (never alive). */
const DETACHED = -1;
const SLICE_MS = 10;
const DEPTH_MAX = 1 << 20;
export const DEFAULT_LOCK_TIMEOUT_MS = 10_000;
const TICKS_HI = 2 ** 31;

/** What the lock needs from the backend that owns the arena tables. */
export interface LockClient {
  /** Repair whatever a dead exclusive holder left half done (called holding the lock). */
  recover(): void;
  /** Does `slot` still own mapped pages? (A dead slot that does not is freed for reuse.) */
  ownsPages(slot: number): boolean;
}

export interface LockInspection {
  /** Slot of the exclusive holder, or null. */
  readonly holder: number | null;
  /** Sum of the shared depths of all slots. */
  readonly readers: number;
  /** Dead exclusive holders taken over, and dead readers cleared, since the arena was opened. */
  readonly recoveries: number;
  readonly readerResets: number;
  readonly slotsInUse: number;
  /** Journal operation left by a holder (0 = none). */
  readonly journalOp: number;
}

function slotBase(slot: number): number {
  return SLOTS + slot * SLOT_WORDS;
}

export class ArenaLock {
  readonly slot: number;
  /** Words the exclusive holder uses to journal a multi-step change (pages.ts). */
  readonly journal: Int32Array;
  private readonly w: Int32Array;
  private readonly mine: number;
  private readonly readersAt: number;
  private depth = 0;

  constructor(
    readonly sab: SharedArrayBuffer,
    private readonly me: ThreadIdentity,
    private readonly client: LockClient,
  ) {
    assert(sab.byteLength >= WORDS * 4, 'lock buffer too small');
    this.w = new Int32Array(sab, 0, WORDS);
    this.journal = new Int32Array(sab, JOURNAL * 4, JOURNAL_WORDS);
    let slot = this.claim();
    if (slot < 0) {
      this.reapDead();
      slot = this.claim();
    }
    if (slot < 0) throw new HostError('EUSERS', `all ${MAX_SLOTS} lock slots of this arena are in use`);
    this.slot = slot;
    this.mine = slot + 1;
    this.readersAt = slotBase(slot) + S_READERS;
  }

  static newBuffer(timeoutMs: number): SharedArrayBuffer {
    const sab = new SharedArrayBuffer(WORDS * 4);
    new Int32Array(sab)[TIMEOUT_MS] = timeoutMs;
    return sab;
  }

  // ---------------------------------------------------------------- exclusive side

  /** Exclusive acquire, re-entrant for this instance (the backend's own map/unmap/protect). */
  acquire(): void {
    if (this.depth > 0) {
      assert(this.depth < DEPTH_MAX, 'lock depth runaway');
      this.depth++;
      return;
    }
    this.takeExclusive();
    this.depth = 1;
  }

  /**
   * Exclusive acquire for the allocator: re-entry from this instance is refused with EDEADLK and
   * changes nothing (a getter that frees during an update must not run inside the update).
   */
  acquireOnce(): void {
    if (this.depth > 0) {
      throw new BackendError(
        'EDEADLK',
        'the arena lock is already held by this thread (re-entrant call refused)',
      );
    }
    this.acquire();
  }

  release(): void {
    assert(this.depth > 0, 'release of a lock this backend does not hold');
    this.depth--;
    if (this.depth === 0) this.releaseState();
  }

  heldByMe(): boolean {
    return this.depth > 0;
  }

  private takeExclusive(): void {
    this.checkOpen();
    if (Atomics.load(this.w, this.readersAt) > 0) {
      throw new BackendError('EDEADLK', 'exclusive acquire while this thread is inside a call (shared side)');
    }
    const deadline = performance.now() + this.timeoutMs();
    let tookOver = false;
    for (;;) {
      const s = Atomics.compareExchange(this.w, STATE, 0, this.mine);
      if (s === 0) break;
      if (this.waitOnHolder(s, deadline)) {
        tookOver = true;
        break;
      }
    }
    try {
      this.drainReaders(deadline);
      // A holder clears its journal before it lets go, so one left open means its writer died
      // (found now by takeover, or earlier by a recoverer that could not finish): finish it.
      if (tookOver || Atomics.load(this.journal, 0) !== 0) this.client.recover();
    } catch (e) {
      this.releaseState();
      throw e;
    }
  }

  private releaseState(): void {
    Atomics.store(this.w, STATE, 0);
    if (Atomics.load(this.w, SLEEPERS) > 0) Atomics.notify(this.w, STATE);
  }

  /**
   * Sleep one slice while STATE is `seen`; then, if the same holder is still there and its thread
   * is gone, take the lock over. Returns true when this thread now holds it in the dead one's place.
   */
  private waitOnHolder(seen: number, deadline: number): boolean {
    const holder = seen - 1;
    if (this.slotTid(holder) === this.me.tid) {
      throw new BackendError('EDEADLK', 'the arena lock is held by another backend of this same thread');
    }
    const left = deadline - performance.now();
    if (left <= 0) throw this.timedOut(`held by thread ${this.slotTid(holder)}`);
    Atomics.add(this.w, SLEEPERS, 1);
    Atomics.wait(this.w, STATE, seen, Math.min(SLICE_MS, left));
    Atomics.sub(this.w, SLEEPERS, 1);
    this.checkOpen();
    if (Atomics.load(this.w, STATE) !== seen || this.slotAlive(holder)) return false;
    if (Atomics.compareExchange(this.w, STATE, seen, this.mine) !== seen) return false;
    Atomics.add(this.w, RECOVERIES, 1);
    return true;
  }

  /** Wait (bounded) until no other slot holds the shared side; dead readers are cleared. */
  private drainReaders(deadline: number): void {
    const high = Atomics.load(this.w, HIGH);
    for (let s = 0; s < high; s++) {
      if (s === this.slot) continue;
      const at = slotBase(s) + S_READERS;
      for (;;) {
        const r = Atomics.load(this.w, at);
        if (r === 0) break;
        if (this.slotTid(s) === this.me.tid) {
          throw new BackendError('EDEADLK', 'another backend of this thread is inside a call (shared side)');
        }
        const left = deadline - performance.now();
        if (left <= 0) throw this.timedOut(`thread ${this.slotTid(s)} is inside a call`);
        Atomics.wait(this.w, at, r, Math.min(SLICE_MS, left));
        if (Atomics.load(this.w, at) !== 0 && !this.slotAlive(s)) {
          Atomics.store(this.w, at, 0);
          Atomics.add(this.w, READER_RESETS, 1);
        }
      }
    }
  }

  // ---------------------------------------------------------------- shared side

  /** Shared acquire (calling code). Not for the exclusive holder (it may call directly). */
  acquireShared(): void {
    const w = this.w;
    const r = Atomics.load(w, this.readersAt);
    if (r > 0) {
      assert(r < DEPTH_MAX, 'shared depth runaway');
      Atomics.store(w, this.readersAt, r + 1);
      return;
    }
    assert(this.depth === 0, 'shared acquire while holding the exclusive side (would deadlock)');
    this.checkOpen();
    let deadline = 0;
    for (;;) {
      Atomics.store(w, this.readersAt, 1);
      const s = Atomics.load(w, STATE);
      if (s === 0) return;
      Atomics.store(w, this.readersAt, 0);
      Atomics.notify(w, this.readersAt);
      if (deadline === 0) deadline = performance.now() + this.timeoutMs();
      if (this.waitOnHolder(s, deadline)) {
        // Took a dead writer's place: repair, then let go and compete as a reader again.
        try {
          this.drainReaders(deadline);
          this.client.recover();
        } finally {
          this.releaseState();
        }
      }
    }
  }

  releaseShared(): void {
    const r = Atomics.load(this.w, this.readersAt);
    assert(r > 0, 'shared release without a shared hold');
    Atomics.store(this.w, this.readersAt, r - 1);
    if (r === 1 && Atomics.load(this.w, STATE) !== 0) Atomics.notify(this.w, this.readersAt);
  }

  // ---------------------------------------------------------------- slots

  private claim(): number {
    const w = this.w;
    for (let s = 0; s < MAX_SLOTS; s++) {
      const b = slotBase(s);
      if (Atomics.compareExchange(w, b + S_TID, 0, this.me.tid) !== 0) continue;
      Atomics.store(w, b + S_START_LO, this.me.startTicks % TICKS_HI);
      Atomics.store(w, b + S_START_HI, Math.floor(this.me.startTicks / TICKS_HI));
      Atomics.store(w, b + S_READERS, 0);
      for (let h = Atomics.load(w, HIGH); h < s + 1; h = Atomics.load(w, HIGH)) {
        if (Atomics.compareExchange(w, HIGH, h, s + 1) === h) break;
      }
      return s;
    }
    return -1;
  }

  private slotTid(slot: number): number {
    return Atomics.load(this.w, slotBase(slot) + S_TID);
  }

  /** Is the thread recorded in `slot` alive? A free or detached slot is not. */
  slotAlive(slot: number): boolean {
    const b = slotBase(slot);
    const tid = Atomics.load(this.w, b + S_TID);
    if (tid <= 0) return false;
    if (tid === this.me.tid) return true;
    const startTicks = Atomics.load(this.w, b + S_START_HI) * TICKS_HI + Atomics.load(this.w, b + S_START_LO);
    return threadAlive({ tid, startTicks });
  }

  /** Slots (other than this one) whose thread is gone or whose backend detached. */
  deadSlots(): number[] {
    const out: number[] = [];
    const high = Atomics.load(this.w, HIGH);
    for (let s = 0; s < high; s++) {
      if (s !== this.slot && this.slotTid(s) !== 0 && !this.slotAlive(s)) out.push(s);
    }
    return out;
  }

  /**
   * Free the slots of dead threads that own no pages and hold nothing; returns how many. A slot
   * that is the recorded exclusive holder is left for the waiter that will recover it.
   */
  reapDead(): number {
    let freed = 0;
    for (const s of this.deadSlots()) {
      if (Atomics.load(this.w, STATE) === s + 1 || this.client.ownsPages(s)) continue;
      const b = slotBase(s);
      const tid = this.slotTid(s);
      Atomics.store(this.w, b + S_READERS, 0);
      if (Atomics.compareExchange(this.w, b + S_TID, tid, 0) === tid) freed++;
    }
    return freed;
  }

  /** Give the slot back (the backend closed). Keeps it as detached while it still owns pages. */
  detach(): void {
    assert(this.depth === 0 && Atomics.load(this.w, this.readersAt) === 0, 'detach while holding the lock');
    Atomics.store(this.w, slotBase(this.slot) + S_TID, this.client.ownsPages(this.slot) ? DETACHED : 0);
  }

  // ---------------------------------------------------------------- closing and inspection

  markClosed(): void {
    Atomics.store(this.w, CLOSED, 1);
  }

  isClosed(): boolean {
    return Atomics.load(this.w, CLOSED) !== 0;
  }

  private checkOpen(): void {
    if (this.isClosed()) throw new BackendError('ECLOSED', 'host backend is closed');
  }

  timeoutMs(): number {
    return Atomics.load(this.w, TIMEOUT_MS);
  }

  private timedOut(why: string): BackendError {
    return new BackendError('ETIMEDOUT', `arena lock not acquired within ${this.timeoutMs()} ms (${why})`);
  }

  inspect(): LockInspection {
    const w = this.w;
    const high = Atomics.load(w, HIGH);
    let readers = 0;
    let slotsInUse = 0;
    for (let s = 0; s < high; s++) {
      readers += Atomics.load(w, slotBase(s) + S_READERS);
      if (this.slotTid(s) !== 0) slotsInUse++;
    }
    const state = Atomics.load(w, STATE);
    return {
      holder: state === 0 ? null : state - 1,
      readers,
      recoveries: Atomics.load(w, RECOVERIES),
      readerResets: Atomics.load(w, READER_RESETS),
      slotsInUse,
      journalOp: Atomics.load(this.journal, 0),
    };
  }
}

/**
 * The allocator's lock in mprotect mode: the exclusive side of the arena lock, refusing re-entry
 * (EDEADLK) and use after the backend closed (ECLOSED; the arena's own flag covers only the owner's
 * close, `isClosed` also this backend's).
 */
export function arenaAllocatorLock(arena: ArenaLock, isClosed: () => boolean): ExecLock {
  return {
    acquire: () => {
      if (isClosed()) throw new BackendError('ECLOSED', 'host backend is closed');
      arena.acquireOnce();
    },
    release: () => arena.release(),
  };
}

/**
 * dualmap's allocator lock: this thread only, because nothing the allocator does there changes
 * what another thread may execute (the backend locks its shared tables itself). Not re-entrant:
 * a second acquire by the same thread (a getter that frees during an update) is EDEADLK.
 */
export class ThreadLock implements ExecLock {
  private held = false;
  constructor(private readonly isClosed: () => boolean) {}
  acquire(): void {
    if (this.isClosed()) throw new BackendError('ECLOSED', 'host backend is closed');
    if (this.held) {
      throw new BackendError(
        'EDEADLK',
        'the allocator lock is already held by this thread (re-entrant call refused)',
      );
    }
    this.held = true;
  }
  release(): void {
    assert(this.held, 'lock released while not held');
    this.held = false;
  }
}
