/**
 * An ordered set of disjoint address ranges [start, end), each with a value: a balanced (AVL)
 * binary search tree keyed by start, where every node also knows the longest range in its subtree.
 *
 * Why: vmalloc keeps free VA as gaps and busy VA as areas, and both grow with the number of
 * allocations. Sorted arrays made every insert and remove an O(n) splice, and a first-fit search
 * walked every gap too small for the request. Linux solves the same problem the same way:
 * mm/vmalloc.c keeps free vmap_areas in an rb-tree augmented with `subtree_max_size`
 * (find_vmap_lowest_match descends only into subtrees that can hold the request). Here the
 * augmentation is the longest range length, so `firstFit` skips whole subtrees of too-small gaps
 * and still returns exactly the lowest fitting address: the result equals a linear first-fit scan
 * (the test compares them). Insert, remove, floor and ceiling are O(log n); first fit is
 * O(log n) plus the gaps that are long enough but fail on alignment or the range's edges.
 *
 * AVL rather than a randomised tree so that every run is deterministic in time as well as result.
 * Nodes are objects (one per range, not per page); the tree holds at most one node per live area
 * or free gap, bounded by the VA space divided by the page size.
 */
import { assert } from '../base/assert.js';

export interface RangeNode<V> {
  start: number;
  end: number;
  value: V;
  left: RangeNode<V> | null;
  right: RangeNode<V> | null;
  height: number;
  /** Longest end - start in this subtree. */
  maxLen: number;
}

function heightOf<V>(n: RangeNode<V> | null): number {
  return n === null ? 0 : n.height;
}

function maxLenOf<V>(n: RangeNode<V> | null): number {
  return n === null ? 0 : n.maxLen;
}

function update<V>(n: RangeNode<V>): void {
  n.height = 1 + Math.max(heightOf(n.left), heightOf(n.right));
  n.maxLen = Math.max(n.end - n.start, maxLenOf(n.left), maxLenOf(n.right));
}

function rotateRight<V>(n: RangeNode<V>): RangeNode<V> {
  const l = n.left as RangeNode<V>;
  n.left = l.right;
  l.right = n;
  update(n);
  update(l);
  return l;
}

function rotateLeft<V>(n: RangeNode<V>): RangeNode<V> {
  const r = n.right as RangeNode<V>;
  n.right = r.left;
  r.left = n;
  update(n);
  update(r);
  return r;
}

function balance<V>(n: RangeNode<V>): RangeNode<V> {
  update(n);
  const b = heightOf(n.left) - heightOf(n.right);
  if (b > 1) {
    if (heightOf(n.left?.left ?? null) < heightOf(n.left?.right ?? null)) n.left = rotateLeft(n.left!);
    return rotateRight(n);
  }
  if (b < -1) {
    if (heightOf(n.right?.right ?? null) < heightOf(n.right?.left ?? null)) n.right = rotateRight(n.right!);
    return rotateLeft(n);
  }
  return n;
}

/** Result of firstFit when the search passed the range's end (stop the in-order walk). */
const STOP = -2;

export class RangeTree<V> {
  private root: RangeNode<V> | null = null;
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Adds [start, end) with `value`; the caller keeps ranges disjoint (asserted against neighbours). */
  insert(start: number, end: number, value: V): void {
    assert(end > start, 'empty range');
    const below = this.floor(start);
    const above = this.ceil(start);
    assert(below === null || below.end <= start, 'range overlaps the one below');
    assert(above === null || above.start >= end, 'range overlaps the one above');
    this.root = this.insertAt(this.root, start, end, value);
    this.count++;
  }

  /** Removes the range starting exactly at `start`; returns its value. */
  remove(start: number): V {
    const n = this.find(start);
    assert(n !== null, 'no range starts there');
    const value = n.value;
    this.root = this.removeAt(this.root, start);
    this.count--;
    return value;
  }

  /** The range starting exactly at `start`, or null. */
  find(start: number): RangeNode<V> | null {
    let n = this.root;
    while (n !== null) {
      if (start === n.start) return n;
      n = start < n.start ? n.left : n.right;
    }
    return null;
  }

  /** The range with the greatest start <= key, or null. */
  floor(key: number): RangeNode<V> | null {
    let n = this.root;
    let best: RangeNode<V> | null = null;
    while (n !== null) {
      if (n.start <= key) {
        best = n;
        n = n.right;
      } else n = n.left;
    }
    return best;
  }

  /** The range with the smallest start >= key, or null. */
  ceil(key: number): RangeNode<V> | null {
    let n = this.root;
    let best: RangeNode<V> | null = null;
    while (n !== null) {
      if (n.start >= key) {
        best = n;
        n = n.left;
      } else n = n.right;
    }
    return best;
  }

  /**
   * Lowest `va`, a multiple of `alignBytes`, with [va, va + sizeBytes) inside one range and inside
   * [lo, hi); -1 if none. Same answer as trying every range in address order.
   */
  firstFit(lo: number, hi: number, sizeBytes: number, alignBytes: number): number {
    const va = this.fitIn(this.root, lo, hi, sizeBytes, alignBytes);
    return va < 0 ? -1 : va;
  }

  /** Visit every range in address order. */
  forEach(fn: (start: number, end: number, value: V) => void): void {
    const walk = (n: RangeNode<V> | null): void => {
      if (n === null) return;
      walk(n.left);
      fn(n.start, n.end, n.value);
      walk(n.right);
    };
    walk(this.root);
  }

  /** Full structural check (tests): order, disjointness, heights, balance and maxLen. */
  check(): void {
    let prevEnd = Number.NEGATIVE_INFINITY;
    let seen = 0;
    const walk = (n: RangeNode<V> | null): void => {
      if (n === null) return;
      walk(n.left);
      assert(n.start >= prevEnd && n.end > n.start, 'ranges out of order or overlapping');
      prevEnd = n.end;
      seen++;
      walk(n.right);
      const h = 1 + Math.max(heightOf(n.left), heightOf(n.right));
      assert(n.height === h, 'stale height');
      assert(Math.abs(heightOf(n.left) - heightOf(n.right)) <= 1, 'unbalanced');
      assert(n.maxLen === Math.max(n.end - n.start, maxLenOf(n.left), maxLenOf(n.right)), 'stale maxLen');
    };
    walk(this.root);
    assert(seen === this.count, 'node count drifted');
  }

  private fitIn(n: RangeNode<V> | null, lo: number, hi: number, size: number, align: number): number {
    if (n === null || n.maxLen < size) return -1;
    // Ranges ending at or before `lo` cannot help; everything left of such a node ends earlier.
    if (n.end <= lo) return this.fitIn(n.right, lo, hi, size, align);
    const left = this.fitIn(n.left, lo, hi, size, align);
    if (left !== -1) return left;
    if (n.start >= hi) return STOP;
    const from = Math.max(n.start, lo);
    const va = Math.ceil(from / align) * align;
    if (va + size <= Math.min(n.end, hi)) return va;
    return this.fitIn(n.right, lo, hi, size, align);
  }

  private insertAt(n: RangeNode<V> | null, start: number, end: number, value: V): RangeNode<V> {
    if (n === null) return { start, end, value, left: null, right: null, height: 1, maxLen: end - start };
    if (start < n.start) n.left = this.insertAt(n.left, start, end, value);
    else n.right = this.insertAt(n.right, start, end, value);
    return balance(n);
  }

  private removeAt(n: RangeNode<V> | null, start: number): RangeNode<V> | null {
    if (n === null) return null;
    if (start < n.start) n.left = this.removeAt(n.left, start);
    else if (start > n.start) n.right = this.removeAt(n.right, start);
    else {
      if (n.left === null) return n.right;
      if (n.right === null) return n.left;
      // Replace by the smallest range of the right subtree.
      let m = n.right;
      while (m.left !== null) m = m.left;
      n.start = m.start;
      n.end = m.end;
      n.value = m.value;
      n.right = this.removeAt(n.right, m.start);
    }
    return balance(n);
  }
}
