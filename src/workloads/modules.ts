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
 * Text is written in one write per region, which names its functions so the fetch model sees
 * function-sized targets.
 */
import type { ExecmemType } from '../arch/types.js';
import { assert } from '../base/assert.js';
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

/** One region of a load: its type, its size and whether init frees it, in enum mod_mem_type order. */
interface Region {
  readonly type: ExecmemType;
  readonly bytes: number;
  readonly init: boolean;
}

/** include/linux/module.h enum mod_mem_type order: the order move_module allocates in. */
function regionsOf(sizes: ModuleSizes): Region[] {
  return [
    { type: 'module_text', bytes: sizes.textBytes, init: false }, // MOD_TEXT
    { type: 'module_data', bytes: sizes.dataBytes, init: false }, // MOD_DATA
    { type: 'module_rodata', bytes: sizes.rodataBytes, init: false }, // MOD_RODATA
    { type: 'module_ro_after_init', bytes: sizes.roAfterInitBytes, init: false }, // MOD_RO_AFTER_INIT
    { type: 'module_text', bytes: sizes.initTextBytes, init: true }, // MOD_INIT_TEXT
    { type: 'module_data', bytes: sizes.initDataBytes, init: true }, // MOD_INIT_DATA
    { type: 'module_rodata', bytes: sizes.initRodataBytes, init: true }, // MOD_INIT_RODATA
  ];
}

/**
 * Emit one module load, init and init free; returns the regions that stay.
 *
 * The order is load_module's (kernel/module/main.c): move_module allocates every non-empty region
 * (one module number: a batch), then copies the sections in (one write per region: text with its
 * functions, .data's initialised half, as .bss stays zero), relocations done, the protections
 * (complete_formation: module_enable_rodata_ro / _text_rox / _data_nx = finalize), then
 * do_init_module: init runs, ro_after_init is sealed (module_enable_rodata_ro_after_init), and
 * only then the init regions are freed (the init_free_wq work).
 */
export function emitModuleLoad(
  b: TraceBuilder,
  rng: Rng,
  sizes: ModuleSizes,
  initCalls: number,
): LoadedModule {
  const module = b.newModule();
  const placed = regionsOf(sizes)
    .filter((r) => r.bytes > 0)
    .map((r) => ({ ...r, id: b.alloc(r.type, r.bytes, r.init ? { module, init: true } : { module }) }));
  for (const r of placed) {
    if (r.type === 'module_text') b.write(r.id, 0, r.bytes, 'code', splitFunctions(rng, r.bytes));
    else b.write(r.id, 0, r.type === 'module_data' ? Math.max(1, r.bytes >> 1) : r.bytes, 'data');
  }
  for (const r of placed) b.finalize(r.id);
  const initText = placed.find((r) => r.init && r.type === 'module_text');
  if (initText !== undefined) b.exec(initCalls, [initText.id]);
  const roAfterInit = placed.find((r) => r.type === 'module_ro_after_init');
  if (roAfterInit !== undefined) b.seal(roAfterInit.id);
  for (const r of placed) if (r.init) b.free(r.id);
  const text = placed.find((r) => r.type === 'module_text' && !r.init);
  assert(text !== undefined, 'a module load has text');
  return { text: text.id, rest: placed.filter((r) => !r.init && r !== text).map((r) => r.id) };
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
  return modulesSyntheticBuilder(opts).build();
}

/** modulesSynthetic's events in a builder, not validated yet (TraceBuilder.unchecked: mixed validates the merged trace). */
export function modulesSyntheticBuilder(opts: ModulesOptions = {}): TraceBuilder {
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
  return b;
}
