/**
 * Host benchmark: what one JIT'd function costs to write and call on real memory, per mode.
 *
 * For 64 B, 256 B and 4 KiB bodies, N functions are written through Execmem.updateVa (the one
 * write path) and each is called once through the host backend's callable; the cost per function
 * is (all updates + all calls) / N, the best of a few rounds. Modes:
 * - dualmap: updates write the RW alias; no permission change (the user-space text_poke).
 * - mprotect, unbatched: every update opens and closes its block (two mprotect calls, each a
 *   process-wide TLB flush), as V8 did per function before batch compilation.
 * - mprotect, batched: all N updates inside one Execmem.batch(), one flip per block and direction.
 * The baseline writes the same bytes into an RWX anonymous mapping and calls them with raw koffi
 * functions: a MEASUREMENT-ONLY lower bound that is never a product mode (it violates W^X).
 *
 * Targets (research/userspace-jit-alloc.md, "Numbers to beat"; the issue): dualmap within 1.5x of
 * RWX for 256 B (its speed at least 1/1.5 = 0.667 of RWX's), batching at least 10x cheaper than
 * one flip per update. Reported as speed ratios from this one process run (types.ts); nothing
 * here is asserted.
 */
import koffi from 'koffi';
import { Execmem } from '../src/execmem/execmem.js';
import { type HostBackend, type HostFunction, openHost } from '../src/host/index.js';
import {
  loadLibc,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  memoryView,
  PROT_EXEC,
  PROT_READ,
  PROT_WRITE,
} from '../src/host/libc.js';
import { genSized } from '../src/host/x86gen.js';
import type { BenchResult, BenchRow, BenchTarget } from './types.js';

const MiB = 1024 * 1024;
const SIZES = [64, 256, 4096] as const;
const ROUNDS = 7;

function countFor(sizeBytes: number): number {
  return sizeBytes >= 4096 ? 400 : 2000;
}

interface Bodies {
  readonly code: Uint8Array[];
  readonly expected: number[];
}

function bodies(sizeBytes: number, n: number): Bodies {
  const code: Uint8Array[] = [];
  const expected: number[] = [];
  for (let i = 0; i < n; i++) {
    const g = genSized(sizeBytes, i + 1);
    code.push(g.code);
    expected.push(g.expected);
  }
  return { code, expected };
}

function check(got: number, want: number, what: string): void {
  if (got !== want) throw new Error(`${what}: JIT function returned ${got}, expected ${want}`);
}

/** One measured configuration: `round` writes and calls all n functions once. */
interface Config {
  readonly name: string;
  readonly round: () => void;
  bestMs: number;
}

/**
 * Run every config once to warm up, then ROUNDS times interleaved (so background load hits all
 * configs alike), keeping each config's best round. Returns nanoseconds per function.
 */
function measure(n: number, configs: Config[]): Map<string, number> {
  for (const c of configs) c.round();
  for (let r = 0; r < ROUNDS; r++) {
    for (const c of configs) {
      const t0 = performance.now();
      c.round();
      c.bestMs = Math.min(c.bestMs, performance.now() - t0);
    }
  }
  return new Map(configs.map((c) => [c.name, (c.bestMs * 1e6) / n]));
}

/** The measurement-only RWX baseline: one private anonymous RWX mapping, raw koffi calls. */
function rwxConfig(sizeBytes: number, b: Bodies, cleanups: (() => void)[]): Config {
  const libc = loadLibc();
  const n = b.code.length;
  const bytes = Math.ceil((n * sizeBytes) / 4096) * 4096;
  const va = libc.mmap(0, bytes, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (va === -1) throw new Error(`RWX baseline mapping refused (errno ${libc.errno()})`);
  cleanups.push(() => libc.munmap(va, bytes));
  const mem = memoryView(va, bytes);
  const proto = koffi.proto('int (void)');
  const fns = b.code.map((_, i) => koffi.decode(va + i * sizeBytes, proto) as HostFunction);
  return {
    name: 'rwx',
    bestMs: Number.POSITIVE_INFINITY,
    round: () => {
      for (let i = 0; i < n; i++) mem.set(b.code[i], i * sizeBytes);
      for (let i = 0; i < n; i++) check(fns[i](), b.expected[i], 'rwx');
    },
  };
}

/** N slots of `sizeBytes` in a fresh Execmem over `h`, written once and made callable. */
function hostSlots(h: HostBackend, sizeBytes: number, b: Bodies, cleanups: (() => void)[]) {
  const em = new Execmem(h);
  const vas = b.code.map(() => em.allocVa('bpf', sizeBytes));
  em.batch(() => {
    for (let i = 0; i < vas.length; i++) em.updateVa(vas[i], b.code[i]);
  });
  const fns = vas.map((va) => h.fn(va, 'int (void)'));
  cleanups.push(() => {
    for (const va of vas) em.freeVa(va);
    em.shrink({ keepSpare: false });
  });
  return { em, vas, fns };
}

/**
 * Updates through Execmem (the product path), batched or not, then one call each (unless
 * `call` is false: the update path alone, which is what batching changes).
 */
function execmemConfig(
  name: string,
  s: ReturnType<typeof hostSlots>,
  b: Bodies,
  batched: boolean,
  call = true,
): Config {
  const { em, vas, fns } = s;
  const n = vas.length;
  const updateAll = (): void => {
    for (let i = 0; i < n; i++) em.updateVa(vas[i], b.code[i]);
  };
  return {
    name,
    bestMs: Number.POSITIVE_INFINITY,
    round: () => {
      if (batched) em.batch(updateAll);
      else updateAll();
      if (call) for (let i = 0; i < n; i++) check(fns[i](), b.expected[i], name);
    },
  };
}

/** The dualmap mechanism alone: backend alias writes (poke) and calls, no allocator lookup. */
function pokeConfig(h: HostBackend, s: ReturnType<typeof hostSlots>, b: Bodies): Config {
  const { vas, fns } = s;
  const n = vas.length;
  return {
    name: 'poke',
    bestMs: Number.POSITIVE_INFINITY,
    round: () => {
      for (let i = 0; i < n; i++) h.poke(vas[i], b.code[i]);
      for (let i = 0; i < n; i++) check(fns[i](), b.expected[i], 'poke');
    },
  };
}

/** A cost against the RWX baseline's: ratio = its cost / this cost (speed relative to it). */
function ratioRow(
  name: string,
  ns: number,
  baseName: string,
  baseNs: number,
  note: string,
  target?: BenchTarget,
): BenchResult {
  return { name, value: ns, unit: 'ns/function', baseline: baseName, ratio: baseNs / ns, note, target };
}

/** Within 1.5x of the RWX cost for 256 B bodies (research/userspace-jit-alloc.md). */
const DUALMAP_TARGET: BenchTarget = {
  of: 'ratio',
  op: '>=',
  bound: 0.667,
  source: 'research/userspace-jit-alloc.md: at most 1.5x the RWX cost at 256 B',
};

export async function benchHost(): Promise<BenchRow[]> {
  const out: BenchRow[] = [];
  const dual = openHost({ mode: 'dualmap', textReserveBytes: 64 * MiB, dataReserveBytes: 2 * MiB });
  const mprot = openHost({ mode: 'mprotect', textReserveBytes: 64 * MiB, dataReserveBytes: 2 * MiB });
  try {
    for (const size of SIZES) {
      const b = bodies(size, countFor(size));
      const cleanups: (() => void)[] = [];
      try {
        const ds = hostSlots(dual, size, b, cleanups);
        const ms = hostSlots(mprot, size, b, cleanups);
        const t = measure(b.code.length, [
          rwxConfig(size, b, cleanups),
          execmemConfig('dualmap', ds, b, false),
          pokeConfig(dual, ds, b),
          execmemConfig('mprotect', ms, b, false),
          execmemConfig('mprotect-batched', ms, b, true),
          execmemConfig('mprotect-update-only', ms, b, false, false),
          execmemConfig('mprotect-batched-update-only', ms, b, true, false),
        ]);
        const rwx = t.get('rwx')!;
        const rwxName = `rwx update+call ${size} B`;
        out.push({
          name: rwxName,
          value: rwx,
          unit: 'ns/function',
          note: 'MEASUREMENT-ONLY baseline: one RWX mapping, raw memcpy + raw koffi call (violates W^X, never a product mode)',
        });
        const target = size === 256 ? DUALMAP_TARGET : undefined;
        out.push(
          ratioRow(
            `dualmap update+call ${size} B`,
            t.get('dualmap')!,
            rwxName,
            rwx,
            'through Execmem.updateVa',
            target,
          ),
        );
        out.push(
          ratioRow(
            `dualmap poke+call ${size} B`,
            t.get('poke')!,
            rwxName,
            rwx,
            'backend alias write, no allocator',
            target,
          ),
        );
        const unb = t.get('mprotect')!;
        const bat = t.get('mprotect-batched')!;
        out.push(
          ratioRow(`mprotect unbatched update+call ${size} B`, unb, rwxName, rwx, 'two mprotect per update'),
        );
        out.push(
          ratioRow(
            `mprotect batched update+call ${size} B`,
            bat,
            rwxName,
            rwx,
            `${b.code.length} updates per batch`,
          ),
        );
        out.push({
          name: `mprotect batching gain ${size} B`,
          value: unb / bat,
          unit: 'x',
          baseline: `mprotect unbatched update+call ${size} B`,
          note: 'value = unbatched / batched cost, each including one koffi call per function',
        });
        const unbU = t.get('mprotect-update-only')!;
        const batU = t.get('mprotect-batched-update-only')!;
        out.push({
          name: `mprotect batching gain, update only ${size} B`,
          value: unbU / batU,
          unit: 'x',
          baseline: `mprotect unbatched update ${size} B (${unbU.toFixed(0)} ns)`,
          note: `value = unbatched / batched update cost (${batU.toFixed(0)} ns batched), no calls`,
          target: {
            of: 'value',
            op: '>=',
            bound: 10,
            source: 'research/userspace-jit-alloc.md: batching at least 10x cheaper than a flip per update',
          },
        });
      } finally {
        for (const c of cleanups.reverse()) c();
      }
    }
    out.push({
      name: 'host modes',
      fact:
        `dualmap: ${dual.modeReason}; THP for memfd: ${dual.report().thpForBlocks.why}; ` +
        `mprotect THP: ${mprot.report().thpForBlocks.why}`,
    });
  } finally {
    dual.close();
    mprot.close();
  }
  return out;
}
