/**
 * A reader/writer lock in a SharedArrayBuffer, usable from every worker_thread of the process.
 *
 * Why a reader/writer lock and not one mutex: in mprotect mode an update makes pages RW+NX for a
 * moment (unprotect/memcpy/protect inside the helper under one lock, Kent Overstreet's
 * jitalloc_update shape; DESIGN.md rule 3). A worker that calls code on such a page during that
 * window takes SIGSEGV on the instruction fetch and the whole process dies. So calling JIT code
 * takes the lock *shared* (many callers at once, no cost between callers) and a permission flip
 * takes it *exclusive* (waits for running calls to return, blocks new ones). Writers announce
 * themselves in a waiting counter so a stream of callers cannot starve a flip forever.
 *
 * The exclusive side is re-entrant for the thread that holds it (depth kept in the shared words),
 * because the allocator's batch() holds it across many updates that each take it again.
 *
 * Layout (Int32 words): [0] state: -1 writer, n >= 0 readers; [1] writers waiting; [2] owner
 * thread (threadId + 1, 0 = none); [3] exclusive depth; [4] arena closed flag (see backend.ts);
 * [5] sleepers (threads inside Atomics.wait or about to be).
 *
 * Cost: the uncontended paths are one compare-exchange to take and one store to give back;
 * Atomics.notify (which takes a process-wide waiter-list lock in V8) runs only when a sleeper
 * announced itself. That is safe because all of these are sequentially consistent: a sleeper
 * increments `sleepers` before Atomics.wait re-checks the state word, and a releaser writes the
 * state word before reading `sleepers`, so either the releaser sees the sleeper or the sleeper
 * sees the new state and does not sleep.
 *
 * Lost wake-ups: a reader blocked only because writers are waiting sleeps on the state word,
 * whose value may already be back to what it saw; it therefore waits with a short timeout
 * (READER_RECHECK_MS) and re-checks. Writers wait on the reader count itself, which always
 * changes (and is notified) when the last reader leaves, so they never need the timeout.
 */
import { threadId } from 'node:worker_threads';
import { assert } from '../base/assert.js';

const STATE = 0;
const WRITERS_WAITING = 1;
const OWNER = 2;
const DEPTH = 3;
export const LOCK_WORD_CLOSED = 4;
const SLEEPERS = 5;
const WORDS = 8;
const READER_RECHECK_MS = 1;
const DEPTH_MAX = 1 << 20;

export class SharedRwLock {
  private readonly words: Int32Array;
  private readonly self: number;

  constructor(readonly sab: SharedArrayBuffer) {
    assert(sab.byteLength >= WORDS * 4, 'lock buffer too small');
    this.words = new Int32Array(sab, 0, WORDS);
    this.self = threadId + 1;
  }

  static newBuffer(): SharedArrayBuffer {
    return new SharedArrayBuffer(WORDS * 4);
  }

  /** Exclusive acquire; re-entrant for the owning thread. */
  acquire(): void {
    const w = this.words;
    if (Atomics.load(w, OWNER) === this.self) {
      assert(w[DEPTH] < DEPTH_MAX, 'lock depth runaway');
      w[DEPTH]++;
      return;
    }
    if (Atomics.compareExchange(w, STATE, 0, -1) !== 0) {
      Atomics.add(w, WRITERS_WAITING, 1);
      for (;;) {
        const s = Atomics.compareExchange(w, STATE, 0, -1);
        if (s === 0) break;
        this.sleep(s, Number.POSITIVE_INFINITY);
      }
      Atomics.sub(w, WRITERS_WAITING, 1);
    }
    Atomics.store(w, OWNER, this.self);
    w[DEPTH] = 1;
  }

  /** Wait while the state word still equals `seen`, announced as a sleeper. */
  private sleep(seen: number, timeoutMs: number): void {
    const w = this.words;
    Atomics.add(w, SLEEPERS, 1);
    Atomics.wait(w, STATE, seen, timeoutMs);
    Atomics.sub(w, SLEEPERS, 1);
  }

  private wake(): void {
    if (Atomics.load(this.words, SLEEPERS) > 0) Atomics.notify(this.words, STATE);
  }

  release(): void {
    const w = this.words;
    assert(Atomics.load(w, OWNER) === this.self, 'release of a lock this thread does not hold');
    assert(w[DEPTH] > 0, 'lock depth underflow');
    w[DEPTH]--;
    if (w[DEPTH] > 0) return;
    Atomics.store(w, OWNER, 0);
    Atomics.store(w, STATE, 0);
    this.wake();
  }

  /** Does this thread hold the exclusive side? */
  heldByMe(): boolean {
    return Atomics.load(this.words, OWNER) === this.self;
  }

  acquireShared(): void {
    const w = this.words;
    assert(!this.heldByMe(), 'shared acquire while holding the exclusive side (would deadlock)');
    for (;;) {
      const s = Atomics.load(w, STATE);
      if (s >= 0 && Atomics.load(w, WRITERS_WAITING) === 0) {
        if (Atomics.compareExchange(w, STATE, s, s + 1) === s) return;
        continue;
      }
      this.sleep(s, READER_RECHECK_MS);
    }
  }

  releaseShared(): void {
    const prev = Atomics.sub(this.words, STATE, 1);
    assert(prev > 0, 'shared release without a shared holder');
    if (prev === 1) this.wake();
  }

  /** Readers currently inside (for tests and reports); -1 while a writer holds it. */
  state(): number {
    return Atomics.load(this.words, STATE);
  }

  /** The shared closed flag: set once by the owning backend, seen by every attached one. */
  markClosed(): void {
    Atomics.store(this.words, LOCK_WORD_CLOSED, 1);
  }

  isClosed(): boolean {
    return Atomics.load(this.words, LOCK_WORD_CLOSED) !== 0;
  }
}
