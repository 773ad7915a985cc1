/**
 * modules-synthetic: module-like section sets loaded, initialised and some unloaded.
 *
 * Why this lifecycle: it is the kernel's (kernel/module/main.c): load_module() allocates one
 * region per memory type (MOD_TEXT, MOD_RODATA, MOD_RO_AFTER_INIT, MOD_DATA, MOD_INIT_TEXT,
 * MOD_INIT_RODATA, MOD_INIT_DATA), copies sections and applies relocations, then protects them
 * (module_enable_rodata_ro / module_enable_text_rox = our `finalize`); do_init_module() runs the
 * init function, frees the init regions and seals ro_after_init read-only
 * (module_enable_rodata_ro_after_init = our `seal`). tglx asked for exactly this split: init and
 * ro_after_init separate, ro_after_init handled at page granularity (<878rjqqhxf.ffs@tglx>).
 * Init regions map to types module_text / module_rodata / module_data, as Linux allocates them
 * with the same execmem type as their non-init twin.
 *
 * Sizes are ASSUMED (./sizes.ts says how); engineer E's Debian dataset is the measured source.
 * Text is written function by function so the fetch model sees function-sized targets.
 */
import type { ExecmemType } from '../arch/types.js';
import { Rng } from '../base/rng.js';
import { LiveSet, scaled, scaleOf, seedOf, TraceBuilder, type WorkloadOptions } from './builder.js';
import { type ModuleSizes, moduleSizes, splitFunctions } from './sizes.js';
import { TRACE_MAX_ALLOC_BYTES, type Trace } from './trace.js';

export interface ModulesOptions extends WorkloadOptions {
  /** Module loads over the run (before scale); default 300. */
  readonly loads?: number;
  /** Share of loads done at boot, before any unload; default 0.6. */
  readonly bootShare?: number;
  /** After boot, probability that a step unloads a random module instead of loading; default 0.4. */
  readonly unloadProbability?: number;
  /** Calls per exec hint; default 10000. An exec hint follows every 10 loads, and each init. */
  readonly execCalls?: number;
  /**
   * Where module sizes come from; default the ASSUMED distribution `moduleSizes`. A measured
   * source (engineer E's Debian dataset) plugs in here and keeps this lifecycle.
   */
  readonly sample?: (rng: Rng) => ModuleSizes;
  /** Trace name; default 'modules-synthetic'. */
  readonly name?: string;
}

/** The regions of one loaded module that outlive init. */
export interface LoadedModule {
  readonly text: number;
  readonly rest: readonly number[];
}

function allocText(b: TraceBuilder, rng: Rng, type: ExecmemType, sizeBytes: number): number {
  const id = b.alloc(type, sizeBytes);
  for (const [offset, size] of splitFunctions(rng, sizeBytes)) b.write(id, offset, size, 'code');
  return id;
}

/** Emit one module load, init and init free; returns the regions that stay. */
export function emitModuleLoad(
  b: TraceBuilder,
  rng: Rng,
  sizes: ModuleSizes,
  initCalls: number,
): LoadedModule {
  const text = allocText(b, rng, 'module_text', sizes.textBytes);
  const rest: number[] = [];
  const initIds: number[] = [];
  const data = (type: ExecmemType, bytes: number, into: number[]): number => {
    if (bytes === 0) return -1;
    const id = b.alloc(type, bytes);
    // .data is partly .bss: write the initialised half, leave the rest as allocated (zeroed).
    b.write(id, 0, type === 'module_data' ? Math.max(1, bytes >> 1) : bytes, 'data');
    into.push(id);
    return id;
  };
  data('module_rodata', sizes.rodataBytes, rest);
  const roAfterInit = data('module_ro_after_init', sizes.roAfterInitBytes, rest);
  data('module_data', sizes.dataBytes, rest);
  const initText = sizes.initTextBytes > 0 ? allocText(b, rng, 'module_text', sizes.initTextBytes) : -1;
  if (initText >= 0) initIds.push(initText);
  data('module_rodata', sizes.initRodataBytes, initIds);
  data('module_data', sizes.initDataBytes, initIds);
  // Relocations done: protect everything (module_enable_*), then run init.
  b.finalize(text);
  for (const id of rest) b.finalize(id);
  for (const id of initIds) b.finalize(id);
  if (initText >= 0) b.exec(initCalls, [initText]);
  // do_init_module(): free init memory, seal ro_after_init.
  for (const id of initIds) b.free(id);
  if (roAfterInit >= 0) b.seal(roAfterInit);
  return { text, rest };
}

/** A sampled size set must be whole, non-negative byte counts with some text; else a RangeError. */
function checkSizes(s: ModuleSizes): ModuleSizes {
  for (const [key, v] of Object.entries(s)) {
    if (!Number.isSafeInteger(v) || v < 0 || v > TRACE_MAX_ALLOC_BYTES) {
      throw new RangeError(
        `module sizes: ${key} must be an integer in [0, ${TRACE_MAX_ALLOC_BYTES}], got ${v}`,
      );
    }
  }
  if (s.textBytes === 0) throw new RangeError('module sizes: textBytes must be > 0');
  return s;
}

export function emitModuleUnload(b: TraceBuilder, m: LoadedModule): void {
  b.free(m.text);
  for (const id of m.rest) b.free(id);
}

export function modulesSynthetic(opts: ModulesOptions = {}): Trace {
  const seed = seedOf(opts);
  const loads = scaled(opts.loads ?? 300, scaleOf(opts), 4);
  const bootShare = opts.bootShare ?? 0.6;
  const pUnload = opts.unloadProbability ?? 0.4;
  if (!(bootShare > 0 && bootShare <= 1))
    throw new RangeError(`bootShare must be in (0, 1], got ${bootShare}`);
  if (!(pUnload >= 0 && pUnload < 1))
    throw new RangeError(`unloadProbability must be in [0, 1), got ${pUnload}`);
  const execCalls = opts.execCalls ?? 10_000;
  const initCalls = Math.max(1, Math.round(execCalls / 100));
  const rng = new Rng(seed);
  const sample = opts.sample ?? moduleSizes;
  const b = new TraceBuilder(opts.name ?? 'modules-synthetic', seed);
  const live = new LiveSet<LoadedModule>();
  const bootLoads = Math.max(1, Math.round(loads * bootShare));
  let done = 0;
  b.phase('boot');
  while (done < bootLoads) {
    live.add(emitModuleLoad(b, rng, checkSizes(sample(rng)), initCalls));
    if (++done % 10 === 0) b.exec(execCalls);
  }
  b.phase('runtime');
  while (done < loads) {
    if (live.size > 1 && rng.next() < pUnload) {
      emitModuleUnload(b, live.takeRandom(rng));
      continue;
    }
    live.add(emitModuleLoad(b, rng, checkSizes(sample(rng)), initCalls));
    if (++done % 10 === 0) b.exec(execCalls);
  }
  b.exec(execCalls);
  return b.build();
}
