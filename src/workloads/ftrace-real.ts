/**
 * `ftrace-real`: tracers attached to and detached from the real call sites of the Debian modules,
 * as the ftrace consumer (src/consumers/ftrace) does it, for every design.
 *
 * Why this workload: ftrace's cost in executable memory is one trampoline per attached ops
 * (create_trampoline, type `ftrace`) and, for a BPF program, one BPF trampoline image (type `bpf`,
 * caller `bpf_trampoline`), plus a live patch of every call site the ops covers: text_poke_bp's
 * int3 / tail / first-byte writes into module text that the module owns. The sites are real:
 * data/ftrace-sites.json (scripts/gen-ftrace-sites.mjs) holds the `__mcount_loc` offsets of
 * every module of the traced subsystem (net/netfilter) and the sites of five hot functions, read
 * from linux-image-6.1.0-57-cloud-amd64 6.1.192-3 with the loader's own layout; module sizes come
 * from the shipped table (data/debian-modules.json, 6.1.0-56: the two builds differ in nfsd's
 * text only, and a site that would not fit the table's text is dropped and counted).
 *
 * The run (the order is ASSUMED, a plausible tracing session of one machine, not a recorded one):
 * - boot: the traced subsystem's modules and the hot functions' modules, with their depends=, in
 *   dependency order, each loaded and initialised (emitModuleLoad); ftrace_module_init's NOPs are
 *   part of the loader's one text write, so they cost no event;
 * - per cycle: `echo function_graph > current_tracer` filtered to the subsystem: one ftrace
 *   trampoline (207 B: ftrace_caller's 194 + RET 5 + ops pointer 8, x86.ts) and every site
 *   re-pointed (graph_ops, kernel/trace/fgraph.c, has no preset trampoline on x86 with
 *   DYNAMIC_FTRACE_WITH_ARGS: FTRACE_GRAPH_TRAMP_ADDR is defined only without it since "x86/ftrace:
 *   Make function graph use ftrace directly", 5.16, so __register_ftrace_function() ->
 *   arch_ftrace_update_trampoline() creates one from ftrace_caller, no SAVE_REGS); two bpftrace-style sessions, each a BPF fentry trampoline on each hot function
 *   (89 + 8 x args bytes, x86.ts) attached, run, detached (one register_ftrace_direct each, so one
 *   batch per function); the graph tracer off; one more BPF session without it.
 * Each site update is three writes into the module's text allocation: 1 byte (int3), 4 bytes
 * (tail), 1 byte (first), in text_poke_bp_batch's order, batched by TP_VEC_MAX (records.ts). The
 * writes carry fill 'data' so the fetch model does not take a 1-byte patch for a function; every
 * design writes them through its own path for finalized text (text_poke on the Linux rows,
 * update() on ours). The trace cannot express the three text_poke_sync()s per batch (sync_core
 * IPIs to every CPU): they are the same for every design and are counted by ftraceRealSummary()
 * and in `describe`. Batches are cut as if modules lay in load order at rising addresses (first
 * fit in the module area): the library cuts them at the real addresses (tp_order_fail).
 */
import { readFileSync } from 'node:fs';
import { Rng } from '../base/rng.js';
import {
  addrNew,
  type OpsShape,
  POKES_PER_SITE,
  SYNCS_PER_BATCH,
  splitBatches,
} from '../consumers/ftrace/records.js';
import { bpfFentryTrampolineBytes, MCOUNT_INSN_BYTES, trampolineBytes } from '../consumers/ftrace/x86.js';
import { scaled, scaleOf, seedOf, TraceBuilder, type WorkloadOptions } from './builder.js';
import { type ModuleTable, readModuleTable, rowSizes, tableLoadOrder } from './dataset/table.js';
import { DEFAULT_MODULE_TABLE } from './dataset/workload.js';
import { emitModuleLoad } from './modules.js';
import type { Trace } from './trace.js';

export const FTRACE_SITES_DATA = new URL('../../../data/ftrace-sites.json', import.meta.url);

export interface FtraceSitesData {
  readonly format: 'execmem-ftrace-sites/1';
  readonly packageName: string;
  readonly packageVersion: string | null;
  readonly kernelRelease: string;
  readonly totals: { readonly modules: number; readonly sites: number; readonly initSites: number };
  readonly subsystem: string;
  readonly modules: readonly {
    readonly name: string;
    readonly dir: string;
    readonly textBytes: number;
    readonly sites: number;
    readonly initSites: number;
  }[];
  /** Per module of the subsystem: site offsets in its text, delta-encoded. */
  readonly traced: Readonly<Record<string, readonly number[]>>;
  readonly hot: readonly {
    readonly module: string;
    readonly function: string;
    readonly nrArgs: number;
    readonly offsetBytes: number;
  }[];
}

let cached: FtraceSitesData | null = null;

export function ftraceSitesData(): FtraceSitesData {
  if (cached) return cached;
  const d = JSON.parse(readFileSync(FTRACE_SITES_DATA, 'utf8')) as FtraceSitesData;
  if (d.format !== 'execmem-ftrace-sites/1')
    throw new Error(`ftrace sites data: unknown format ${String(d.format)}`);
  cached = d;
  return d;
}

export interface FtraceRealOptions extends WorkloadOptions {
  /** Graph-tracer cycles (before scale); default 4. */
  readonly cycles?: number;
  /** BPF sessions while the graph tracer is on, per cycle; default 2. */
  readonly bpfSessionsPerCycle?: number;
  readonly table?: ModuleTable;
}

/** What one run patches and allocates: the figures compare and the report show beside the costs. */
export interface FtraceRealSummary {
  readonly packageName: string;
  readonly subsystem: string;
  readonly modulesLoaded: number;
  /** Sites in the whole package (core text / init text), and those the graph tracer covers. */
  readonly packageSites: number;
  readonly packageInitSites: number;
  readonly graphSites: number;
  /** Sites dropped because they do not fit the table's text (a package-version difference). */
  readonly sitesDropped: number;
  readonly ftraceTrampolines: number;
  readonly ftraceTrampolineBytes: number;
  readonly bpfTrampolines: number;
  readonly bpfTrampolineBytes: readonly number[];
  /** Site updates (each 3 text_pokes), text_poke_bp batches (each 3 sync_core IPI rounds). */
  readonly sitePatches: number;
  readonly pokes: number;
  readonly batches: number;
  readonly syncs: number;
}

interface Site {
  readonly textId: number;
  readonly offsetBytes: number;
  /** Address-order key: load order, then offset (modules at rising addresses). */
  readonly key: number;
  readonly ops: OpsShape[];
  target: number | null;
}

/** Stand-in call targets: only whether a site's target changes matters to the trace. */
const CORE = { ftraceCaller: -1, ftraceRegsCaller: -2 };

type Generated = { readonly trace: Trace; readonly summary: FtraceRealSummary };

/**
 * The last run generated with the default table and shape, by seed and scale. One compare or
 * report asks for the same run up to three times (the registry's description, the trace, the
 * report's consumers section), each a full generation on the main thread; a trace is never
 * changed once built, so handing the same one out again changes nothing.
 */
let lastGenerated: { key: string; run: Generated } | null = null;

function generate(opts: FtraceRealOptions): Generated {
  const defaults =
    opts.table === undefined && opts.cycles === undefined && opts.bpfSessionsPerCycle === undefined;
  if (!defaults) return generateRun(opts);
  const key = `${seedOf(opts)}/${scaleOf(opts)}`;
  if (lastGenerated?.key !== key) lastGenerated = { key, run: generateRun(opts) };
  return lastGenerated.run;
}

function generateRun(opts: FtraceRealOptions): Generated {
  const seed = seedOf(opts);
  const scale = scaleOf(opts);
  const data = ftraceSitesData();
  const table = opts.table ?? readModuleTable(DEFAULT_MODULE_TABLE);
  const cycles = scaled(opts.cycles ?? 4, scale, 1);
  const bpfPerCycle = Math.max(1, opts.bpfSessionsPerCycle ?? 2);
  const tracedAll = Object.keys(data.traced).sort();
  const traced = tracedAll.slice(0, scaled(tracedAll.length, scale, 2));
  const rng = new Rng(seed);
  const b = new TraceBuilder('ftrace-real', seed);
  const order = tableLoadOrder(table, [...traced, ...data.hot.map((h) => h.module)], 'ftrace-real');
  const textId = new Map<string, number>();
  const textBytes = new Map<string, number>();
  b.phase('boot');
  order.forEach((i, k) => {
    const row = table.modules[i];
    const sizes = rowSizes(row);
    const m = emitModuleLoad(b, rng, { ...sizes, textBytes: Math.max(16, sizes.textBytes) }, 100);
    textId.set(row.name, m.text);
    textBytes.set(row.name, Math.max(16, sizes.textBytes));
    if ((k + 1) % 50 === 0) b.exec(10_000);
  });
  b.exec(10_000);
  let dropped = 0;
  const rank = new Map(order.map((i, k) => [table.modules[i].name, k]));
  const site = (module: string, offsetBytes: number): Site | null => {
    if (offsetBytes + MCOUNT_INSN_BYTES > (textBytes.get(module) ?? 0)) {
      dropped++;
      return null;
    }
    const key = (rank.get(module) ?? 0) * 2 ** 31 + offsetBytes;
    return { textId: textId.get(module)!, offsetBytes, key, ops: [], target: null };
  };
  const graphSites: Site[] = [];
  for (const name of traced) {
    let at = 0;
    for (const delta of data.traced[name]) {
      at += delta;
      const s = site(name, at);
      if (s) graphSites.push(s);
    }
  }
  graphSites.sort((x, y) => x.key - y.key);
  const byKey = new Map(graphSites.map((s) => [s.key, s]));
  const hot = data.hot.map((h) => {
    const s = site(h.module, h.offsetBytes);
    return s === null ? null : { ...h, site: byKey.get(s.key) ?? s };
  });

  const totals = { sitePatches: 0, batches: 0, ftrace: 0, bpf: 0 };
  let nextOps = 1;
  /** ftrace_replace_code(): re-point the changed sites, batched, three writes each. */
  const repoint = (sites: readonly Site[]): void => {
    const changed = sites.filter((s) => addrNew(s.ops, CORE) !== s.target);
    for (const batch of splitBatches(changed.map((s) => s.key))) {
      for (const i of batch) b.write(changed[i].textId, changed[i].offsetBytes, 1, 'data');
      for (const i of batch)
        b.write(changed[i].textId, changed[i].offsetBytes + 1, MCOUNT_INSN_BYTES - 1, 'data');
      for (const i of batch) b.write(changed[i].textId, changed[i].offsetBytes, 1, 'data');
      totals.batches++;
    }
    for (const s of changed) s.target = addrNew(s.ops, CORE);
    totals.sitePatches += changed.length;
  };
  const graphBytes = trampolineBytes(false);
  const bpfSession = (): void => {
    const live: { id: number; ops: OpsShape; site: Site }[] = [];
    for (const h of hot) {
      if (h === null) continue;
      const id = b.alloc('bpf', bpfFentryTrampolineBytes(h.nrArgs), { caller: 'bpf_trampoline' });
      b.write(id, 0, bpfFentryTrampolineBytes(h.nrArgs), 'code');
      b.finalize(id);
      totals.bpf++;
      const opsId = nextOps++;
      const ops: OpsShape = { id: opsId, kind: 'direct', saveRegs: true, targetSigned: opsId };
      h.site.ops.push(ops);
      repoint([h.site]);
      live.push({ id, ops, site: h.site });
    }
    b.exec(10_000);
    for (const l of live) {
      l.site.ops.splice(l.site.ops.indexOf(l.ops), 1);
      repoint([l.site]);
      b.free(l.id);
    }
  };
  b.phase('tracing');
  for (let c = 0; c < cycles; c++) {
    const tramp = b.alloc('ftrace', graphBytes);
    b.write(tramp, 0, graphBytes, 'code');
    b.finalize(tramp);
    totals.ftrace++;
    const graphId = nextOps++;
    const graph: OpsShape = { id: graphId, kind: 'trampoline', saveRegs: false, targetSigned: graphId };
    for (const s of graphSites) s.ops.push(graph);
    repoint(graphSites);
    b.exec(10_000);
    for (let k = 0; k < bpfPerCycle; k++) bpfSession();
    for (const s of graphSites) s.ops.splice(s.ops.indexOf(graph), 1);
    repoint(graphSites);
    b.free(tramp);
    b.exec(10_000);
    bpfSession();
    b.exec(10_000);
  }
  const summary: FtraceRealSummary = {
    packageName: data.packageName,
    subsystem: data.subsystem,
    modulesLoaded: order.length,
    packageSites: data.totals.sites,
    packageInitSites: data.totals.initSites,
    graphSites: graphSites.length,
    sitesDropped: dropped,
    ftraceTrampolines: totals.ftrace,
    ftraceTrampolineBytes: graphBytes,
    bpfTrampolines: totals.bpf,
    bpfTrampolineBytes: hot.filter((h) => h !== null).map((h) => bpfFentryTrampolineBytes(h.nrArgs)),
    sitePatches: totals.sitePatches,
    pokes: totals.sitePatches * POKES_PER_SITE,
    batches: totals.batches,
    syncs: totals.batches * SYNCS_PER_BATCH,
  };
  return { trace: b.build(), summary };
}

export function ftraceReal(opts: FtraceRealOptions = {}): Trace {
  return generate(opts).trace;
}

export function ftraceRealSummary(opts: FtraceRealOptions = {}): FtraceRealSummary {
  return generate(opts).summary;
}

let describeCached: string | null = null;

/** The registry's one-line description, with the scale-1 figures (computed once). */
export function ftraceRealDescribe(): string {
  if (describeCached !== null) return describeCached;
  const s = ftraceRealSummary();
  describeCached =
    `ftrace on real call sites of ${s.packageName} (__mcount_loc): a function_graph tracer on ${s.subsystem} ` +
    `(${s.graphSites} sites in ${s.modulesLoaded} loaded modules, a ${s.ftraceTrampolineBytes} B ftrace trampoline) and ` +
    `BPF fentry trampolines on ${s.bpfTrampolineBytes.length} hot functions, attached and detached; per run ` +
    `${s.ftraceTrampolines} ftrace + ${s.bpfTrampolines} BPF trampolines, ${s.sitePatches} site patches ` +
    `(${s.pokes} text_pokes), ${s.batches} text_poke_bp batches (${s.syncs} sync_core IPI rounds, not in the trace)`;
  return describeCached;
}

/** The registry entry (src/workloads/registry.ts): described with the scale-1 figures. */
export const FTRACE_REAL = {
  get describe(): string {
    return ftraceRealDescribe();
  },
  generate: (opts?: WorkloadOptions): Trace => ftraceReal(opts),
};
