/**
 * The `elf` fuzz target: mutated kernel modules through the module loader, on the simulated
 * machine, against our allocator and Linux 6.1's module_alloc.
 *
 * Why this oracle: a .ko is untrusted input (issue 16 item 3: a 4.5 MB crafted file drove the
 * parser to ~7 GB and an abort). So for every mutated file:
 * - the load succeeds, or throws a ModuleLoadError with a known code and source (load-errors.ts);
 *   anything else (a TypeError, an AssertionError, an untyped Error) is a finding;
 * - a load refused before the allocator was called leaves allocator and machine exactly as they
 *   were: every counter, frame, mapping, vmalloc area and live allocation (full snapshot);
 * - a load refused after allocating (only address-dependent failures can be, loader.ts) frees
 *   all it allocated: the allocator's live set and live bytes are as before, the W^X count is
 *   unchanged and the machine passes checkConsistency(); it may keep what a vfree keeps;
 * - a loaded module inits and unloads cleanly, leaving the live set as before; the machine's
 *   (slow) checkConsistency() runs after every 4th such case and once more at the end of a run;
 * - work is bounded by the file, not wall time: name bytes scanned <= the names.ts budget for
 *   the file, relocation entries decoded <= 2 x file bytes / 24 (checked, then applied), and
 *   the allocator (a budget facade) refuses more than CASE_ALLOC_BUDGET_BYTES per load as an
 *   exhausted module area would (ENOMEM), so a mutated sh_size cannot make one case cost more.
 *   A case slower than CASE_TIME_LIMIT_MS is reported too, as a hang detector only.
 *
 * Inputs: a module assembled in memory (elf-build.ts, always) and, when the Debian dataset is in
 * the cache, small real modules with no dependencies (crc7 first, the file of the issue).
 * Mutations: elf-mutations.ts. Every finding names the seed, case, input and mutations.
 */
import { join } from 'node:path';
import type { ExecmemType } from '../src/arch/types.js';
import { Rng } from '../src/base/rng.js';
import { parseElf, stripModuleSignature } from '../src/consumers/modules/elf.js';
import { sampleKernelSymbols, sampleModuleElf } from '../src/consumers/modules/elf-build.js';
import {
  ModuleLoadError,
  type ModuleLoadErrorCode,
  type ModuleLoadErrorSource,
  ModuleLoader,
} from '../src/consumers/modules/loader.js';
import { NAME_BYTES_PER_FILE_BYTE, NAME_SLACK_BYTES, newParseStats } from '../src/consumers/modules/names.js';
import type { KernelSymbols } from '../src/consumers/modules/symbols.js';
import { createMachine, type Machine } from '../src/machine/machine.js';
import type { InstrumentedAllocator } from '../src/policies/common.js';
import { policyByName } from '../src/policies/index.js';
import { allocModuleSections, type ExecAllocator, type ModuleSection } from '../src/policies/types.js';
import {
  datasetKernelSymbols,
  findCachedDataset,
  openDataset,
  readModuleFile,
} from '../src/workloads/dataset/dataset.js';
import { type ElfShape, mutateElf, shapeOf } from './elf-mutations.js';
import type { FuzzFinding, FuzzReport, FuzzTarget } from './target.js';

/** One load may allocate at most this much (a mutated .bss may ask for 2^53 bytes). */
export const CASE_ALLOC_BUDGET_BYTES = 16 << 20;
/** A hang detector, not a performance bound: work is bounded by the counters above. */
const CASE_TIME_LIMIT_MS = 10_000;
/** The designs each case runs against, in turn: ours and Linux 6.1's module_alloc. */
const POLICIES = ['execmem', 'module_alloc'] as const;
/** Real modules used when the dataset is present (smallest first, no dependencies). */
const DATASET_INPUTS = 6;
const DATASET_MAX_FILE_BYTES = 64 << 10;

const KNOWN_CODES: ReadonlySet<ModuleLoadErrorCode> = new Set([
  'ENOEXEC',
  'ENOENT',
  'EEXIST',
  'ENOMEM',
  'EINVAL',
  'EBUSY',
]);
const KNOWN_SOURCES: ReadonlySet<ModuleLoadErrorSource> = new Set([
  'elf',
  'layout',
  'symbols',
  'relocation',
  'exports',
  'percpu',
  'allocator',
  'state',
]);

export interface Input {
  readonly name: string;
  /** The ELF without its signature trailer. */
  readonly bytes: Uint8Array;
  readonly kernel: KernelSymbols;
  readonly shape: ElfShape;
}

function input(name: string, fileBytes: Uint8Array, kernel: KernelSymbols): Input {
  const bytes = stripModuleSignature(fileBytes).bytes.slice();
  return { name, bytes, kernel, shape: shapeOf(parseElf(bytes)) };
}

/** The built-in module, plus small real modules when the dataset is in the cache (and wanted). */
export function elfFuzzInputs(opts: { dataset?: boolean } = {}): Input[] {
  const inputs = [input('sample (elf-build.ts)', sampleModuleElf('fuzz_sample'), sampleKernelSymbols())];
  const root = (opts.dataset ?? true) ? findCachedDataset() : null;
  if (!root) return inputs;
  const index = openDataset(root);
  const kernel = datasetKernelSymbols(index);
  const small = index.modules
    .filter((m) => m.depends.length === 0 && m.fileBytes <= DATASET_MAX_FILE_BYTES)
    .sort((a, b) => Number(b.name === 'crc7') - Number(a.name === 'crc7') || a.fileBytes - b.fileBytes);
  for (const m of small.slice(0, DATASET_INPUTS))
    inputs.push(input(m.name, readModuleFile(join(index.root, m.path)), kernel));
  return inputs;
}

/** Thrown by the budget facade: a typed allocator error, as an exhausted module area gives. */
class BudgetError extends Error {
  override name = 'FuzzBudgetError';
  readonly code = 'ENOMEM';
}

/** Passes calls to the real allocator, counting them, and refuses loads above the budget. */
class BudgetAllocator implements ExecAllocator {
  readonly name: string;
  innerCalls = 0;
  private allocatedBytes = 0;
  constructor(private readonly inner: ExecAllocator) {
    this.name = inner.name;
  }
  private charge(bytes: number): void {
    if (!(this.allocatedBytes + bytes <= CASE_ALLOC_BUDGET_BYTES))
      throw new BudgetError(
        `fuzz budget: ${bytes} more bytes exceed ${CASE_ALLOC_BUDGET_BYTES} for one load`,
      );
    this.allocatedBytes += bytes;
  }
  alloc(type: ExecmemType, sizeBytes: number, alignBytes?: number): number {
    this.charge(sizeBytes);
    this.innerCalls++;
    return this.inner.alloc(type, sizeBytes, alignBytes);
  }
  allocModule(sections: readonly ModuleSection[]): number[] {
    this.charge(sections.reduce((n, s) => n + s.sizeBytes, 0));
    this.innerCalls++;
    return allocModuleSections(this.inner, sections);
  }
  write(va: number, bytes: Uint8Array): void {
    this.innerCalls++;
    this.inner.write(va, bytes);
  }
  finalize(va: number): void {
    this.innerCalls++;
    this.inner.finalize(va);
  }
  seal(va: number): void {
    this.innerCalls++;
    this.inner.seal(va);
  }
  free(va: number): void {
    this.innerCalls++;
    this.inner.free(va);
  }
  shrink(): void {
    this.innerCalls++;
    this.inner.shrink();
  }
  usage() {
    return this.inner.usage();
  }
}

interface Env {
  readonly machine: Machine;
  /** The input's kernel exports moved to this machine's KASLR offset (made once per input). */
  kernelFor(inp: Input): KernelSymbols;
  readonly allocator: InstrumentedAllocator;
  /** The design promises no W^X page at any time (ours; Linux rows may have documented holes). */
  readonly wxFree: boolean;
}

function newEnv(policy: (typeof POLICIES)[number], seed: number): Env {
  const machine = createMachine({ arch: 'x86_64', seed, memoryBytes: 2 ** 30, cpus: 2 });
  const spec = policyByName(policy);
  const kaslrOffsetBytes = machine.kernelTextStart - machine.arch.layout.kernelImage.textStart;
  const kernels = new Map<Input, KernelSymbols>();
  return {
    machine,
    kernelFor(inp) {
      let k = kernels.get(inp);
      if (!k) {
        k = inp.kernel.withKaslrOffset(kaslrOffsetBytes);
        kernels.set(inp, k);
      }
      return k;
    },
    allocator: spec.create(machine, seed),
    wxFree: spec.wxHoles('x86_64') === null,
  };
}

/** What a failed call may not change: live allocations, live bytes, W^X. */
function liveSnapshot(env: Env): string {
  const live: number[] = [];
  env.allocator.forEachLive((e) => live.push(e.va, e.sizeBytes));
  return JSON.stringify({
    live,
    liveBytes: env.allocator.usage().liveBytes,
    wx: env.machine.wxViolationCount(),
  });
}

/** Everything: a load refused before allocating must leave all of it as it was. */
function fullSnapshot(env: Env): string {
  const m = env.machine;
  return JSON.stringify({
    live: liveSnapshot(env),
    usage: env.allocator.usage(),
    policy: env.allocator.policyCounters(),
    counters: m.counters,
    frames: m.frameAccounting(),
    areas: m.areas().map((a) => [a.va, a.sizeBytes, a.prot, a.leafBytes]),
    buddy: m.phys.buddyInfo(),
    dmap: m.directMapStats(),
  });
}

/** Counts of outcomes, so a test can see the slice exercised what it should. */
export interface ElfFuzzStats {
  loaded: number;
  refusedBeforeAllocating: number;
  refusedAfterAllocating: number;
  bySource: Record<string, number>;
  /** Largest name bytes scanned per file byte over all cases. */
  maxNameBytesPerFileByte: number;
  inputs: string[];
}

export interface ElfFuzzReport extends FuzzReport {
  readonly stats: ElfFuzzStats;
}

/** One case: returns a finding message, or null. */
function runCase(env: Env, inp: Input, bytes: Uint8Array, stats: ElfFuzzStats): string | null {
  const before = fullSnapshot(env);
  const liveBefore = liveSnapshot(env);
  const parse = newParseStats();
  const facade = new BudgetAllocator(env.allocator);
  const loader = new ModuleLoader({
    allocator: facade,
    kernel: env.kernelFor(inp),
    parseStats: parse,
  });
  const t0 = performance.now();
  let problem: string | null = null;
  try {
    const mod = loader.load(bytes, 'fuzz');
    stats.loaded++;
    if (env.wxFree && env.machine.wxViolationCount() !== 0) problem = 'W^X violation after a load';
    loader.init(mod.name);
    loader.unload(mod.name);
    if (liveSnapshot(env) !== liveBefore) problem ??= 'load + init + unload left allocations behind';
    if (stats.loaded % 4 === 0) env.machine.checkConsistency();
  } catch (e) {
    if (!(e instanceof ModuleLoadError)) {
      const err = e instanceof Error ? e : new Error(String(e));
      return `not a typed error: ${err.name}: ${err.message}`;
    }
    if (!KNOWN_CODES.has(e.code) || !KNOWN_SOURCES.has(e.source))
      return `unknown code/source ${e.code}/${e.source}: ${e.message}`;
    stats.bySource[e.source] = (stats.bySource[e.source] ?? 0) + 1;
    if (loader.list().length !== 0) return `failed load left a module behind: ${e.message}`;
    if (facade.innerCalls === 0) {
      stats.refusedBeforeAllocating++;
      if (fullSnapshot(env) !== before) return `refused before allocating, yet state changed: ${e.message}`;
    } else {
      stats.refusedAfterAllocating++;
      if (liveSnapshot(env) !== liveBefore) return `refused after allocating, allocations left: ${e.message}`;
      env.machine.checkConsistency();
    }
  }
  const nameBudget = bytes.length * NAME_BYTES_PER_FILE_BYTE + NAME_SLACK_BYTES;
  if (parse.nameBytesScanned > nameBudget)
    problem ??= `scanned ${parse.nameBytesScanned} name bytes, above the ${nameBudget}-byte budget`;
  if (bytes.length > 0) {
    const perByte = parse.nameBytesScanned / bytes.length;
    stats.maxNameBytesPerFileByte = Math.max(stats.maxNameBytesPerFileByte, perByte);
  }
  const relocLimit = 2 * Math.floor(bytes.length / 24);
  if (parse.relocEntries > relocLimit)
    problem ??= `decoded ${parse.relocEntries} relocation entries, above 2 x file / 24 = ${relocLimit}`;
  const ms = performance.now() - t0;
  if (ms > CASE_TIME_LIMIT_MS) problem ??= `took ${ms.toFixed(0)} ms (limit ${CASE_TIME_LIMIT_MS})`;
  return problem;
}

/** Run `iterations` cases from `seed` (the target's `run`, with outcome counts). */
export function runElfFuzz(seed: number, iterations: number, inputs = elfFuzzInputs()): ElfFuzzReport {
  const rng = new Rng(seed);
  const envs = POLICIES.map((p) => newEnv(p, seed));
  const findings: FuzzFinding[] = [];
  const stats: ElfFuzzStats = {
    loaded: 0,
    refusedBeforeAllocating: 0,
    refusedAfterAllocating: 0,
    bySource: {},
    maxNameBytesPerFileByte: 0,
    inputs: inputs.map((i) => i.name),
  };
  for (let c = 0; c < iterations; c++) {
    const inp = rng.pick(inputs);
    // Every 8th case loads the input unmutated: the oracle must see successes too.
    const { bytes, done } =
      c % 8 === 0 ? { bytes: inp.bytes, done: ['unmutated'] } : mutateElf(inp.bytes, inp.shape, rng);
    const env = envs[c % envs.length];
    let message: string | null;
    try {
      message = runCase(env, inp, bytes, stats);
    } catch (e) {
      message = `the oracle itself failed: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`;
    }
    if (message !== null) {
      findings.push({
        caseIndex: c,
        message: `${POLICIES[c % envs.length]}, input ${inp.name}, ${done.join('; ')}: ${message}`,
      });
    }
  }
  envs.forEach((env, k) => {
    try {
      env.machine.checkConsistency();
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      findings.push({ caseIndex: iterations - 1, message: `${POLICIES[k]}: after the last case: ${why}` });
    }
  });
  return { target: 'elf', seed, cases: iterations, findings, stats };
}

export const elfTarget: FuzzTarget = {
  name: 'elf',
  describe:
    'mutated .ko files (truncation, header/section/symbol/relocation fields, string-table games, huge counts, overlaps) through the module loader: typed errors, nothing changed, bounded work',
  run: (seed, iterations) => runElfFuzz(seed, iterations),
};
