/**
 * A set of non-negative integer keys below 2^53 (leaf keys such as va + level, 2 MiB region bases)
 * for the machine's hot paths: the TLB lower-bound shadow (tlb-shadow.ts) and the W^X audit's
 * per-CPU filter (wx.ts) add, test and drop such keys on every TLB fill and flush.
 *
 * Why not a Set<number>: these keys are above 2^31, so a Set stores each as a boxed heap number
 * (an allocation per add) and hashes it through the generic path, and clearing a Set (every full
 * TLB flush) rebuilds its table. Here the keys live in a Float64Array with open addressing and
 * linear probing (a slot's home is a Fibonacci hash of the key's two 32-bit halves), a delete
 * shifts the following run back (no tombstones), and clear() is O(1): a slot is occupied only
 * while its stamp equals the set's current generation, so a new generation empties every slot.
 * The keys are also kept densely (swap-remove on delete), so walking them costs the set's size,
 * not its table's capacity, which stays as large as the set ever was.
 *
 * Only membership is kept (no order): the callers never depend on the order of their keys.
 */
import { assert } from '../base/assert.js';

const CAPACITY_MIN = 16;
const KEY_MAX = 2 ** 53;
const TWO_32 = 4294967296;

export class NumberSet {
  // Assigned by allocate(), which the constructor and resize() call.
  private keys!: Float64Array;
  /** Slot i is occupied iff stamps[i] === generation. */
  private stamps!: Uint32Array;
  private generation = 1;
  /** The keys densely, and for each dense index its slot; slotPos[slot] is the dense index. */
  private dense!: Float64Array;
  private denseSlot!: Int32Array;
  private slotPos!: Int32Array;
  private mask = 0;
  /** 32 - log2(capacity): the top bits of the multiplicative hash pick the home slot. */
  private shift = 0;
  private count = 0;

  constructor() {
    this.allocate(CAPACITY_MIN);
  }

  /** Fresh, empty arrays of `capacity` slots (a power of two). */
  private allocate(capacity: number): void {
    this.keys = new Float64Array(capacity);
    this.stamps = new Uint32Array(capacity);
    this.dense = new Float64Array(capacity);
    this.denseSlot = new Int32Array(capacity);
    this.slotPos = new Int32Array(capacity);
    this.mask = capacity - 1;
    this.shift = 32 - Math.log2(capacity);
  }

  get size(): number {
    return this.count;
  }

  has(key: number): boolean {
    return this.slotOf(key) >= 0;
  }

  /** Adds key; true when it was not in the set. */
  add(key: number): boolean {
    let i = this.home(key);
    const g = this.generation;
    while (this.stamps[i] === g) {
      if (this.keys[i] === key) return false;
      i = (i + 1) & this.mask;
    }
    if (!(Number.isInteger(key) && key >= 0 && key < KEY_MAX)) assert(false, `NumberSet key ${key}`);
    this.keys[i] = key;
    this.stamps[i] = g;
    this.dense[this.count] = key;
    this.denseSlot[this.count] = i;
    this.slotPos[i] = this.count;
    this.count++;
    // At most half full, so probe runs stay short.
    if (this.count * 2 > this.keys.length) this.resize(this.keys.length * 2);
    return true;
  }

  /** Removes key; true when it was in the set. */
  delete(key: number): boolean {
    let i = this.slotOf(key);
    if (i < 0) return false;
    const g = this.generation;
    const mask = this.mask;
    // Swap-remove from the dense keys: the last one takes the deleted one's place.
    const pos = this.slotPos[i];
    const last = this.count - 1;
    this.dense[pos] = this.dense[last];
    this.denseSlot[pos] = this.denseSlot[last];
    this.slotPos[this.denseSlot[pos]] = pos;
    // Backward-shift deletion: move back every later key of the run whose home does not lie
    // cyclically in (i, j], so each remaining key stays reachable from its home.
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      if (this.stamps[j] !== g) break;
      const k = this.home(this.keys[j]);
      const between = i <= j ? i < k && k <= j : i < k || k <= j;
      if (between) continue;
      this.keys[i] = this.keys[j];
      this.slotPos[i] = this.slotPos[j];
      this.denseSlot[this.slotPos[i]] = i;
      i = j;
    }
    this.stamps[i] = 0;
    this.count--;
    return true;
  }

  /**
   * delete() of first, first + stride, ... (count keys). One call for a range of leaves: a key
   * passed to a call that is not inlined is boxed, so a caller's loop of delete() allocates.
   */
  deleteSeries(first: number, stride: number, count: number): void {
    for (let i = 0; i < count && this.count > 0; i++) this.delete(first + i * stride);
  }

  /** Empties the set in O(1) (a new generation). */
  clear(): void {
    if (this.count === 0) return;
    this.count = 0;
    if (this.generation === 0xffffffff) {
      this.stamps.fill(0);
      this.generation = 1;
    } else this.generation++;
  }

  /** Calls fn with every key (any order). fn must not change the set. */
  forEach(fn: (key: number) => void): void {
    for (let d = 0; d < this.count; d++) fn(this.dense[d]);
  }

  private slotOf(key: number): number {
    let i = this.home(key);
    const g = this.generation;
    while (this.stamps[i] === g) {
      if (this.keys[i] === key) return i;
      i = (i + 1) & this.mask;
    }
    return -1;
  }

  private home(key: number): number {
    // ToUint32 of an integer double is its low 32 bits; the high part of a key < 2^53 fits 21 bits.
    const x = (key >>> 0) ^ Math.imul((key / TWO_32) >>> 0, 0x85ebca6b);
    return Math.imul(x ^ (x >>> 16), 0x9e3779b1) >>> this.shift;
  }

  private resize(capacity: number): void {
    const oldDense = this.dense;
    this.allocate(capacity);
    this.generation = 1;
    for (let d = 0; d < this.count; d++) {
      const key = oldDense[d];
      let i = this.home(key);
      while (this.stamps[i] === 1) i = (i + 1) & this.mask;
      this.keys[i] = key;
      this.stamps[i] = 1;
      this.dense[d] = key;
      this.denseSlot[d] = i;
      this.slotPos[i] = d;
    }
  }
}
