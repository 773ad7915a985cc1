/**
 * execmem allocator benchmark: alloc+free throughput as the live set grows, against the
 * bpf_prog_pack method; memory efficiency after a long churn; the granule choice; pool sharing.
 *
 * Why these measurements (issue 3):
 * - Throughput at 1k, 10k and 100k live objects with the published BPF size mix ("50% of the
 *   loaded BPF programs are less than 500 byte in size, and 75% of them are less than 2kB",
 *   Song Liu, <20221107223921.3451913-1-song@kernel.org>; the rest here log-uniform up to 64 KiB).
 *   The 100k figure must stay within 2x of the 1k figure (cost independent of the live set).
 *   The churn driver (random picks into arrays of 100k addresses and sizes) also slows as its
 *   arrays leave the cache, so it runs alone with a no-op allocator in the same run, and the
 *   allocator's own cost (ns/op minus the driver's ns/op) is reported next to the raw ratio.
 * - Baseline in the same run: bpf_prog_pack's first fit (kernel/bpf/core.c): 2 MiB packs of 64 B
 *   chunks, `bitmap_find_next_zero_area()` pack by pack in list order, a pack freed as soon as its
 *   bitmap is empty. Implemented below with word-at-a-time bit scans, so it is a fair, fast
 *   version of that method, not a strawman.
 * - mapped / requested bytes after a long churn (target <= 1.15), at 10k live (seed 23 and the
 *   spread over seeds 1-6: with ~25 blocks, one block either way is 4%) and at 100k live, with
 *   small objects placed apart (the default) and without, and per granule (16 B vs 64 B), with
 *   side-table metadata per block: the measurement the default granule and split rest on.
 * - Pinning: module text that stays loaded while BPF programs churn. With all text types in one
 *   pool ('kind'), long-lived module text ends up scattered through blocks the churn used, and
 *   those blocks stay mapped after the churn ends; with the default 'family' pools they do not.
 *
 * Backend: the fake backend (test/helpers/fake-backend.ts) with `storeBytes: false` and x86_64
 * ranges with alias writes: protections are tracked but no bytes are stored, so the timings
 * measure the allocator (free lists, tags, lookups), not memset of megabytes. Every timing is a
 * ratio against a figure measured in this same run.
 */
import { ARCHES } from '../src/arch/index.js';
import { Rng } from '../src/base/rng.js';
import { Execmem, type PoolSharing, SMALL_OBJECT_BYTES } from '../src/execmem/execmem.js';
import { FakeBackend } from '../test/helpers/fake-backend.js';
import type { BenchResult, BenchTarget } from './types.js';

const PACK_BYTES = 2 * 1024 * 1024;
const CHUNK_BYTES = 64;
const CHUNKS_PER_PACK = PACK_BYTES / CHUNK_BYTES;
const CHURN_OPS = 100_000;
const REPEATS = 7;
const BACKEND_NOTE = 'fake backend (x86_64 ranges, alias writes, no byte storage)';
/** Memory after a long churn (issue 3). */
const MEMORY_TARGET: BenchTarget = {
  of: 'value',
  op: '<=',
  bound: 1.15,
  source: 'issue 3: at most 1.15 mapped per requested byte after a long churn',
};

/** The BPF size mix: 50% < 500 B, 75% < 2 KiB, the rest log-uniform 2 KiB..64 KiB. */
function bpfSize(rng: Rng): number {
  const r = rng.next();
  if (r < 0.5) return rng.int(64, 499);
  if (r < 0.75) return rng.int(500, 2047);
  return Math.round(2048 * 32 ** rng.next());
}

/** Allocator under test, reduced to what the churn needs. */
interface Subject {
  alloc(sizeBytes: number): number;
  free(va: number, sizeBytes: number): void;
  mappedBytes(): number;
  /** Work done by alloc searches so far (execmem: runs examined + bitmap look-ups; bitmap: words read). */
  searchSteps(): number;
}

// ---------------------------------------------------------------- bpf_prog_pack baseline

/** bpf_prog_pack: list of 2 MiB packs, bitmap of 64 B chunks, first fit, free when empty. */
class BitmapPacks implements Subject {
  private readonly packs: { base: number; bits: Uint32Array; used: number }[] = [];
  private readonly byBase = new Map<number, { base: number; bits: Uint32Array; used: number }>();
  private nextBase = 0;
  private readonly scan = { words: 0 };

  searchSteps(): number {
    return this.scan.words;
  }

  alloc(sizeBytes: number): number {
    const nbits = Math.ceil(sizeBytes / CHUNK_BYTES);
    for (const pack of this.packs) {
      const pos = findZeroArea(pack.bits, CHUNKS_PER_PACK, nbits, this.scan);
      if (pos >= 0) return this.take(pack, pos, nbits);
    }
    const pack = { base: this.nextBase, bits: new Uint32Array(CHUNKS_PER_PACK / 32), used: 0 };
    this.nextBase += PACK_BYTES;
    this.packs.push(pack);
    this.byBase.set(pack.base, pack);
    return this.take(pack, 0, nbits);
  }

  free(va: number, sizeBytes: number): void {
    const base = va - (va % PACK_BYTES);
    const pack = this.byBase.get(base)!;
    const nbits = Math.ceil(sizeBytes / CHUNK_BYTES);
    setBits(pack.bits, (va - base) / CHUNK_BYTES, nbits, false);
    pack.used -= nbits;
    if (pack.used === 0) {
      this.packs.splice(this.packs.indexOf(pack), 1);
      this.byBase.delete(base);
    }
  }

  mappedBytes(): number {
    return this.packs.length * PACK_BYTES;
  }

  private take(pack: { base: number; bits: Uint32Array; used: number }, pos: number, nbits: number): number {
    setBits(pack.bits, pos, nbits, true);
    pack.used += nbits;
    return pack.base + pos * CHUNK_BYTES;
  }
}

/** Next zero bit at or after `from` (word at a time), or `size`; counts the words read. */
function nextZero(bits: Uint32Array, size: number, from: number, scan: { words: number }): number {
  let i = from;
  while (i < size) {
    scan.words++;
    const w = ~bits[i >>> 5] & (-1 << (i & 31));
    if (w !== 0) return Math.min(size, (i & ~31) + (31 - Math.clz32(w & -w)));
    i = (i & ~31) + 32;
  }
  return size;
}

/** Next set bit at or after `from`, or `size`; counts the words read. */
function nextOne(bits: Uint32Array, size: number, from: number, scan: { words: number }): number {
  let i = from;
  while (i < size) {
    scan.words++;
    const w = bits[i >>> 5] & (-1 << (i & 31));
    if (w !== 0) return Math.min(size, (i & ~31) + (31 - Math.clz32(w & -w)));
    i = (i & ~31) + 32;
  }
  return size;
}

/** bitmap_find_next_zero_area(map, size, 0, nr, 0): first run of `nr` zero bits, or -1. */
function findZeroArea(bits: Uint32Array, size: number, nr: number, scan: { words: number }): number {
  let start = nextZero(bits, size, 0, scan);
  while (start + nr <= size) {
    const busy = nextOne(bits, start + nr, start, scan);
    if (busy >= start + nr) return start;
    start = nextZero(bits, size, busy + 1, scan);
  }
  return -1;
}

function setBits(bits: Uint32Array, pos: number, n: number, value: boolean): void {
  for (let i = pos; i < pos + n; i++) {
    if (value) bits[i >>> 5] |= 1 << (i & 31);
    else bits[i >>> 5] &= ~(1 << (i & 31));
  }
}

// ---------------------------------------------------------------- execmem subject

function execmemSubject(
  granuleBytes: 16 | 64,
  sharing: PoolSharing = 'family',
  smallObjectBytes = SMALL_OBJECT_BYTES,
) {
  const fb = new FakeBackend(ARCHES.x86_64, { storeBytes: false });
  fb.recordFlips = false;
  const em = new Execmem(fb, { granuleBytes, sharing, smallObjectBytes });
  const subject: Subject = {
    alloc: (sizeBytes) => em.allocVa('bpf', sizeBytes),
    free: (va) => em.freeVa(va),
    mappedBytes: () => fb.mappedBytes(),
    searchSteps: () => em.stats().counters.allocSearchSteps,
  };
  return { em, fb, subject };
}

// ---------------------------------------------------------------- churn driver

interface ChurnResult {
  /** Per CPU-second of this process (process.cpuUsage), which other processes' load disturbs less than wall time. */
  opsPerSecond: number;
  requestedBytes: number;
  /** Highest requested total during the timed churn: blocks mapped at a peak stay mapped. */
  peakRequestedBytes: number;
  mappedBytes: number;
  /** Mean of mapped / requested sampled every `sampleEvery` ops during the churn (0: not sampled). */
  meanMappedPerRequested: number;
  /** Alloc search work per churn op (Subject.searchSteps): the work, independent of the cache. */
  searchStepsPerOp: number;
}

/**
 * Fill to `live` objects, then `ops` times free a random live object and allocate a new one.
 * With `sampleEvery` > 0, mapped / requested is sampled during the churn (memory runs only: the
 * sampling is inside the timed loop, so timed runs pass 0).
 */
function churn(subject: Subject, live: number, ops: number, seed: number, sampleEvery = 0): ChurnResult {
  const rng = new Rng(seed);
  const vas = new Float64Array(live);
  const sizes = new Float64Array(live);
  let requested = 0;
  for (let i = 0; i < live; i++) {
    sizes[i] = bpfSize(rng);
    vas[i] = subject.alloc(sizes[i]);
    requested += sizes[i];
  }
  // Pre-draw the churn so the timed loop is allocator work only.
  const picks = new Uint32Array(ops);
  const next = new Float64Array(ops);
  for (let k = 0; k < ops; k++) {
    picks[k] = rng.int(0, live - 1);
    next[k] = bpfSize(rng);
  }
  let peak = requested;
  let sampleSum = 0;
  let samples = 0;
  const steps0 = subject.searchSteps();
  const t0 = process.cpuUsage();
  for (let k = 0; k < ops; k++) {
    const i = picks[k];
    subject.free(vas[i], sizes[i]);
    requested += next[k] - sizes[i];
    if (requested > peak) peak = requested;
    sizes[i] = next[k];
    vas[i] = subject.alloc(sizes[i]);
    if (sampleEvery > 0 && k % sampleEvery === 0) {
      sampleSum += subject.mappedBytes() / requested;
      samples++;
    }
  }
  const used = process.cpuUsage(t0);
  const searchStepsPerOp = (subject.searchSteps() - steps0) / ops;
  const cpuMs = Math.max((used.user + used.system) / 1000, 1e-3);
  return {
    opsPerSecond: (ops * 1000) / cpuMs,
    requestedBytes: requested,
    peakRequestedBytes: peak,
    mappedBytes: subject.mappedBytes(),
    meanMappedPerRequested: samples > 0 ? sampleSum / samples : 0,
    searchStepsPerOp,
  };
}

// ---------------------------------------------------------------- pinning scenario

/** Module text loaded now and then while BPF churns; then the churn ends. Mapped text left? */
function pinning(sharing: PoolSharing): { textMappedBytes: number; textLiveBytes: number } {
  const fb = new FakeBackend(ARCHES.x86_64, { storeBytes: false });
  fb.recordFlips = false;
  const em = new Execmem(fb, { sharing });
  const rng = new Rng(5);
  const bpf: number[] = [];
  let moduleLive = 0;
  for (let i = 0; i < 60_000; i++) {
    bpf.push(em.allocVa('bpf', bpfSize(rng)));
    if (bpf.length > 3000) em.freeVa(bpf.splice(rng.int(0, bpf.length - 1), 1)[0]);
    if (i % 300 === 0) {
      const size = rng.int(4096, 96 * 1024);
      em.allocVa('module_text', size);
      moduleLive += size;
    }
  }
  for (const va of bpf) em.freeVa(va);
  em.shrink({ keepSpare: false });
  return { textMappedBytes: fb.mappedBytes(), textLiveBytes: moduleLive };
}

// ---------------------------------------------------------------- the benchmark

export async function benchExecmem(): Promise<BenchResult[]> {
  const out: BenchResult[] = [];
  const liveSets = [1000, 10_000, 100_000];
  const em64: Record<number, ChurnResult> = {};
  const bitmap: Record<number, ChurnResult> = {};
  // Warm-up both code paths (JIT) on a small run first.
  churn(execmemSubject(64).subject, 1000, 5000, 1);
  churn(new BitmapPacks(), 1000, 5000, 1);
  // Best of REPEATS for execmem, interleaving the live-set sizes so that a burst of load from
  // other processes hits all of them alike; the bitmap baseline runs once with fewer ops at large
  // live sets (it is slow there, which is the point).
  // The churn driver alone (an allocator that does nothing) at the same live sets, interleaved
  // with the execmem runs: its own arrays (picks, sizes, addresses) leave the CPU cache as the
  // live set grows, and that cost is in every figure above it. Subtracting its ns/op gives the
  // allocator's own cost. It runs 5x the ops so its short runs are not lost in timer resolution.
  const driver: Record<number, ChurnResult> = {};
  let noopCount = 0;
  const nothing: Subject = {
    alloc: () => noopCount++,
    free: () => {},
    mappedBytes: () => 0,
    searchSteps: () => 0,
  };
  for (let rep = 0; rep < REPEATS; rep++) {
    for (const live of liveSets) {
      const r = churn(execmemSubject(64).subject, live, CHURN_OPS, 11);
      if (em64[live] === undefined || r.opsPerSecond > em64[live].opsPerSecond) em64[live] = r;
      const d = churn(nothing, live, CHURN_OPS * 5, 11);
      if (driver[live] === undefined || d.opsPerSecond > driver[live].opsPerSecond) driver[live] = d;
    }
  }
  for (const live of liveSets) {
    bitmap[live] = churn(new BitmapPacks(), live, Math.min(CHURN_OPS, Math.round(2e8 / live)), 11);
  }
  for (const live of liveSets) {
    out.push({
      name: `alloc+free @${live / 1000}k live (execmem, 64 B granule)`,
      value: em64[live].opsPerSecond,
      unit: 'ops/s',
      baseline: `bpf_prog_pack bitmap first fit @${live / 1000}k`,
      ratio: em64[live].opsPerSecond / bitmap[live].opsPerSecond,
      note: `${BACKEND_NOTE}; one op = one free + one alloc`,
    });
    out.push({
      name: `alloc+free @${live / 1000}k live (bpf_prog_pack bitmap)`,
      value: bitmap[live].opsPerSecond,
      unit: 'ops/s',
      note: '64 B chunks, 2 MiB packs, bitmap_find_next_zero_area in list order (in-bench re-implementation)',
    });
  }
  const nsPerOp = (r: ChurnResult) => 1e9 / r.opsPerSecond;
  const ownNs = (live: number) => nsPerOp(em64[live]) - nsPerOp(driver[live]);
  out.push({
    name: 'execmem throughput 100k / 1k live (raw, driver included)',
    value: em64[100_000].opsPerSecond / em64[1000].opsPerSecond,
    unit: 'ratio',
    note: `${nsPerOp(em64[1000]).toFixed(0)} -> ${nsPerOp(em64[100_000]).toFixed(0)} ns/op`,
    target: { of: 'value', op: '>=', bound: 0.5, source: 'issue 3: throughput at 100k live within 2x of 1k' },
  });
  out.push({
    name: 'churn driver alone (no allocator) 100k / 1k live',
    value: driver[100_000].opsPerSecond / driver[1000].opsPerSecond,
    unit: 'ratio',
    note: `the same random picks and size arrays with a no-op allocator, same run: ${nsPerOp(driver[1000]).toFixed(1)} -> ${nsPerOp(driver[100_000]).toFixed(1)} ns/op; the floor the memory hierarchy sets for the driver`,
  });
  out.push({
    name: "execmem own cost 100k / 1k live (raw minus driver's ns/op)",
    value: ownNs(1000) / ownNs(100_000),
    unit: 'ratio',
    note: `allocator (and fake backend) ns/op ${ownNs(1000).toFixed(0)} @1k, ${ownNs(10_000).toFixed(0)} @10k, ${ownNs(100_000).toFixed(0)} @100k; >= 0.5 means its own cost stays within 2x`,
  });
  const steps = (r: Record<number, ChurnResult>) =>
    liveSets.map((live) => r[live].searchStepsPerOp.toFixed(1)).join(' / ');
  out.push({
    name: 'alloc search work per op, execmem @1k / 10k / 100k live',
    value: em64[100_000].searchStepsPerOp / em64[1000].searchStepsPerOp,
    unit: 'ratio',
    note: `free runs examined + class-bitmap look-ups per op: ${steps(em64)} (the work stays flat; the time above is cache misses); bpf_prog_pack bitmap words read per op: ${steps(bitmap)}`,
  });
  out.push({
    name: 'bpf_prog_pack throughput 100k / 1k live',
    value: bitmap[100_000].opsPerSecond / bitmap[1000].opsPerSecond,
    unit: 'ratio',
    note: 'first fit over packs in list order: cost grows with the live set',
  });

  // Memory after a long churn: the default (64 B granule, small objects apart), the same with
  // the small/large split off, and granule 16 B; at 10k live (seed 23, the figure the target is
  // read on, and seeds 1-6 for its spread) and at 100k live (2M ops, 20 turnovers of the set).
  const memory = (granule: 16 | 64, small: number, live: number, ops: number, seed: number) => {
    const { subject, em } = execmemSubject(granule, 'family', small);
    const r = churn(subject, live, ops, seed, Math.max(100, ops / 2000));
    const before = em.stats().pools['kprobes+ftrace+bpf'];
    em.shrink();
    const pool = em.stats().pools['kprobes+ftrace+bpf'];
    return { r, before, pool, ratio: pool.mappedBytes / r.requestedBytes };
  };
  /** Whole 2 MiB blocks that hold `bytes` packed perfectly, plus one spare, in bytes. */
  const packedWithSpareBytes = (bytes: number) => (Math.ceil(bytes / PACK_BYTES) + 1) * PACK_BYTES;
  const peakBound = (x: ReturnType<typeof memory>) =>
    packedWithSpareBytes(x.r.peakRequestedBytes) / x.r.requestedBytes;
  const variants: [string, 16 | 64, number][] = [
    ['64 B granule, small objects apart (default)', 64, SMALL_OBJECT_BYTES],
    ['64 B granule, no small/large split', 64, 0],
    ['16 B granule, small objects apart', 16, SMALL_OBJECT_BYTES],
  ];
  for (const [label, granule, small] of variants) {
    const m = memory(granule, small, 10_000, 200_000, 23);
    const runs = [1, 2, 3, 4, 5, 6].map((seed) => memory(granule, small, 10_000, 200_000, seed));
    out.push({
      name: `mapped / requested after 200k churn @10k live (${label})`,
      value: m.ratio,
      unit: 'ratio',
      target: MEMORY_TARGET,
      note: `seed 23, after shrink (one spare kept; ${m.before.blocks} blocks before, ${m.pool.blocks} after, ${m.pool.smallObjectBlocks} small-object); seeds 1-6: ${runs.map((x) => `${x.ratio.toFixed(3)} (peak bound ${peakBound(x).toFixed(3)})`).join(' ')}, mean ${(runs.reduce((sum, x) => sum + x.ratio, 0) / runs.length).toFixed(3)}; mapped / peak requested ${(m.pool.mappedBytes / m.r.peakRequestedBytes).toFixed(3)}; time-average mapped / requested during the churn ${m.r.meanMappedPerRequested.toFixed(3)}; an ideal packing with one spare (objects moved, which executable code cannot be) would need ${(packedWithSpareBytes(m.r.requestedBytes) / m.r.requestedBytes).toFixed(3)}; peak bound (perfect packing at the peak of requested bytes plus one spare, if no block drains after it: none does under random frees) ${peakBound(m).toFixed(3)}; live (granule-rounded) / requested ${(m.pool.liveBytes / m.r.requestedBytes).toFixed(3)}; side tables ${Math.round(m.pool.metadataBytes / m.pool.blocks / 1024)} KiB per 2 MiB block`,
    });
  }
  for (const [label, granule, small] of variants.slice(0, 2)) {
    const m = memory(granule, small, 100_000, 2_000_000, 23);
    out.push({
      name: `mapped / requested after 2M churn @100k live (${label})`,
      value: m.ratio,
      unit: 'ratio',
      target: MEMORY_TARGET,
      note: `seed 23, after shrink (${m.pool.blocks} blocks, ${m.pool.smallObjectBlocks} small-object); mapped / peak requested ${(m.pool.mappedBytes / m.r.peakRequestedBytes).toFixed(3)}; time-average during the churn ${m.r.meanMappedPerRequested.toFixed(3)}; at this size one 2 MiB block is 0.4% of the live set, so the figure is fragmentation, not block rounding`,
    });
  }
  {
    const b = new BitmapPacks();
    const r = churn(b, 10_000, 200_000, 23, 100);
    out.push({
      name: 'mapped / requested after 200k churn @10k live (bpf_prog_pack)',
      value: r.mappedBytes / r.requestedBytes,
      unit: 'ratio',
      note: `mapped / peak requested ${(r.mappedBytes / r.peakRequestedBytes).toFixed(3)}; time-average during the churn ${r.meanMappedPerRequested.toFixed(3)} (packs freed when empty); bitmap metadata 4 KiB per 2 MiB pack`,
    });
  }

  // Pool sharing: long-lived module text among churning BPF programs.
  for (const sharing of ['family', 'kind'] as PoolSharing[]) {
    const p = pinning(sharing);
    out.push({
      name: `mapped after BPF churn ends, module text kept (sharing '${sharing}')`,
      value: p.textMappedBytes / (1024 * 1024),
      unit: 'MiB',
      note: `module text live ${(p.textLiveBytes / (1024 * 1024)).toFixed(1)} MiB; 'kind' = all text types in one pool, 'family' = module_text apart from bpf/kprobes/ftrace`,
    });
  }
  return out;
}
