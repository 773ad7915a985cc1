/**
 * A list-based reference model of the TLBs (src/machine/tlb.ts), shared by the TLB tests.
 *
 * Why a reference model: the TLB keeps its state in typed arrays with LRU stamps, thread tags
 * folded into keys and a shadow set for the lower bound, for speed; this model keeps each set as
 * a plain list in recency order (the textbook definition of LRU), tags as part of a string key,
 * shared arrays as one object referenced by both threads of a core, and the lower bound as a set
 * of leaf strings. Random operation sequences must give identical results in both.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { TlbSide } from '../src/machine/tlb.js';
import type { TlbArraySpec, TlbProfile } from '../src/machine/tlb-profiles.js';
import { LEVEL_BYTES, type LeafLevel, type Translation } from '../src/machine/types.js';

export const K4 = 4096;
export const M2 = 2 * 1024 * 1024;
export const G1 = 1024 * 1024 * 1024;

export function tr(va: number, level: LeafLevel, flags = 1): Translation {
  return { va, level, pfn: va / K4, flags };
}

export function same(a: Translation | undefined, b: Translation | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.va === b.va && a.level === b.level && a.pfn === b.pfn && a.flags === b.flags;
}

interface RefSlot {
  key: string;
  tag: number;
  t: Translation;
}

export class RefArray {
  readonly sets: RefSlot[][];
  constructor(readonly spec: TlbArraySpec) {
    this.sets = Array.from({ length: spec.entries / spec.ways }, () => []);
  }
  keyLevel(level: LeafLevel): LeafLevel | 0 {
    if (this.spec.levels.includes(level)) return level;
    if (level === 3 && this.spec.smash1g) return 2;
    return 0;
  }
  private where(va: number, keyLevel: LeafLevel, tag: number): { set: RefSlot[]; key: string } {
    const page = Math.floor(va / LEVEL_BYTES[keyLevel]);
    return { set: this.sets[page % this.sets.length], key: `${tag}:${keyLevel}:${page}` };
  }
  find(va: number, tag: number): Translation | undefined {
    for (const level of [...this.spec.levels].sort()) {
      const { set, key } = this.where(va, level, tag);
      const i = set.findIndex((s) => s.key === key);
      if (i >= 0) {
        const [slot] = set.splice(i, 1);
        set.push(slot);
        return slot.t;
      }
    }
    return undefined;
  }
  /** Returns what left the array and whose it was. */
  put(t: Translation, accessVa: number, tag: number): { t: Translation; tag: number } | undefined {
    const kl = this.keyLevel(t.level);
    assert.notEqual(kl, 0);
    const { set, key } = this.where(kl === t.level ? t.va : accessVa, kl as LeafLevel, tag);
    const i = set.findIndex((s) => s.key === key);
    if (i >= 0) {
      const [old] = set.splice(i, 1);
      set.push({ key, tag, t });
      return same(old.t, t) ? undefined : { t: old.t, tag };
    }
    set.push({ key, tag, t });
    if (set.length > this.spec.ways) {
      const gone = set.shift()!;
      return { t: gone.t, tag: gone.tag };
    }
    return undefined;
  }
  all(tag: number): Translation[] {
    return this.sets.flatMap((s) => s.filter((x) => x.tag === tag).map((x) => x.t));
  }
  drop(start: number, end: number, tag: number): number {
    let n = 0;
    for (const set of this.sets) {
      for (let i = set.length - 1; i >= 0; i--) {
        const t = set[i].t;
        if (set[i].tag === tag && t.va < end && t.va + LEVEL_BYTES[t.level] > start) {
          set.splice(i, 1);
          n++;
        }
      }
    }
    return n;
  }
}

/** The threads of one core: who they are and the arrays they share. */
export class RefCore {
  readonly members: RefTlb[] = [];
  readonly shared = new Map<TlbArraySpec, RefArray>();
  constructor(readonly threads: number) {}
}

export class RefTlb {
  stats = { i: { l1Hits: 0, l2Hits: 0, misses: 0 }, d: { l1Hits: 0, l2Hits: 0, misses: 0 } };
  evicted: Translation[] = [];
  bound = 0;
  readonly shadow = new Set<string>();
  l1: Record<TlbSide, RefArray[]>;
  l2: Record<TlbSide, RefArray[]>;
  arrays: RefArray[];
  private readonly sharedL2: RefArray[];

  constructor(
    readonly p: TlbProfile,
    readonly core: RefCore = new RefCore(1),
    readonly thread = 0,
  ) {
    core.members[thread] = this;
    const make = (s: TlbArraySpec): RefArray => {
      const policy = s.smt ?? 'replicated';
      if (core.threads === 1 || policy === 'replicated') return new RefArray(s);
      if (policy === 'partitioned') return new RefArray({ ...s, entries: s.entries / core.threads });
      if (!core.shared.has(s)) core.shared.set(s, new RefArray(s));
      return core.shared.get(s)!;
    };
    this.sharedL2 = p.l2shared.map(make);
    this.l1 = { i: p.l1i.map(make), d: p.l1d.map(make) };
    this.l2 = {
      i: [...p.l2i.map(make), ...this.sharedL2],
      d: [...p.l2d.map(make), ...this.sharedL2],
    };
    this.arrays = [...this.l1.i, ...this.l1.d, ...new Set([...this.l2.i, ...this.l2.d])];
  }
  holds(t: Translation): boolean {
    return this.arrays.some((x) => x.all(this.thread).some((y) => same(y, t)));
  }
  private fill(arrays: RefArray[], t: Translation, va: number): void {
    const a = arrays.find((x) => x.keyLevel(t.level) !== 0);
    if (!a) return;
    const gone = a.put(t, va, this.thread);
    if (!gone) return;
    const owner = this.core.members[gone.tag];
    if (!owner.holds(gone.t)) owner.evicted.push(gone.t);
  }
  lookup(side: TlbSide, va: number): Translation | undefined {
    for (const a of this.l1[side]) {
      const t = a.find(va, this.thread);
      if (t) {
        this.stats[side].l1Hits++;
        return t;
      }
    }
    for (const a of this.l2[side]) {
      const t = a.find(va, this.thread);
      if (t) {
        this.stats[side].l2Hits++;
        this.fill(this.l1[side], t, va);
        return t;
      }
    }
    this.stats[side].misses++;
    return undefined;
  }
  insert(side: TlbSide, t: Translation, va: number): void {
    const leaf = `${t.va}:${t.level}`;
    if (side === 'i') {
      if (!this.shadow.has(leaf)) this.bound++;
      this.shadow.add(leaf);
    } else if (this.sharedL2.some((a) => a.keyLevel(t.level) !== 0)) {
      this.shadow.add(leaf);
    }
    this.fill(this.l1[side], t, va);
    this.fill(this.l2[side], t, va);
  }
  flushRange(va: number, size: number): number {
    for (const leaf of this.shadow) {
      const [lva, level] = leaf.split(':').map(Number);
      if (lva < va + size && lva + LEVEL_BYTES[level as LeafLevel] > va) this.shadow.delete(leaf);
    }
    return this.arrays.reduce((n, a) => n + a.drop(va, va + size, this.thread), 0);
  }
  flushAll(): number {
    this.shadow.clear();
    return this.arrays.reduce((n, a) => n + a.drop(0, 2 ** 48, this.thread), 0);
  }
  count(): number {
    return this.arrays.reduce((n, a) => n + a.all(this.thread).length, 0);
  }
}

// ---------------------------------------------------------------- test profiles and address space

/** Tiny geometry so that random sequences hit conflicts and evictions quickly. */
export const TINY_SPLIT: TlbProfile = {
  name: 'tiny-split',
  source: 'test',
  unverified: [],
  threadsPerCore: 1,
  l1i: [
    { name: 'i4k', entries: 4, ways: 2, levels: [1] },
    { name: 'i2m', entries: 2, ways: 2, levels: [2], smash1g: true },
  ],
  l1d: [
    { name: 'd4k', entries: 4, ways: 2, levels: [1] },
    { name: 'd2m', entries: 2, ways: 1, levels: [2] },
    { name: 'd1g', entries: 1, ways: 1, levels: [3] },
  ],
  l2i: [],
  l2d: [],
  l2shared: [
    { name: 's', entries: 8, ways: 2, levels: [1, 2] },
    { name: 's1g', entries: 2, ways: 2, levels: [3] },
  ],
};
export const TINY_AMD: TlbProfile = {
  name: 'tiny-amd',
  source: 'test',
  unverified: [],
  threadsPerCore: 1,
  l1i: [{ name: 'i', entries: 3, ways: 3, levels: [1, 2, 3] }],
  l1d: [{ name: 'd', entries: 3, ways: 3, levels: [1, 2, 3] }],
  l2i: [{ name: 'l2i', entries: 4, ways: 2, levels: [1, 2], smash1g: true }],
  l2d: [{ name: 'l2d', entries: 8, ways: 4, levels: [1, 2], smash1g: true }],
  l2shared: [],
};

/**
 * The "page table": 1 GiB region 0 holds 4 KiB pages, region 1 holds 2 MiB pages (or 4 KiB
 * pages after a 'split' op, without a flush, so stale entries of both sizes overlap), region 2
 * is one 1 GiB page.
 */
export function walk(va: number, flags: number, region1Split: boolean): Translation {
  if (va < G1 || (va < 2 * G1 && region1Split)) return tr(Math.floor(va / K4) * K4, 1, flags);
  if (va < 2 * G1) return tr(Math.floor(va / M2) * M2, 2, flags);
  return tr(2 * G1, 3, flags);
}

export const vaArb = fc.oneof(
  fc.integer({ min: 0, max: 40 }).map((p) => p * K4 + 7),
  fc.integer({ min: 0, max: 12 }).map((p) => G1 + p * M2 + 100),
  fc.integer({ min: 0, max: 6 }).map((w) => 2 * G1 + w * M2 + 3),
);
export type Op =
  | { op: 'access'; side: TlbSide; va: number; flags: number }
  | { op: 'flush'; va: number; size: number }
  | { op: 'flushAll' }
  | { op: 'split' };
export const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.record({
      op: fc.constant('access' as const),
      side: fc.constantFrom<TlbSide>('i', 'd'),
      va: vaArb,
      flags: fc.constantFrom(1, 3),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('flush' as const),
      va: vaArb.map((v) => Math.floor(v / K4) * K4),
      size: fc.constantFrom(K4, 3 * K4, M2, G1),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ op: 'flushAll' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'split' as const }) },
);
