/**
 * Load a dataset's modules through one allocator and report what happened.
 *
 * Why a separate runner: `execmem modules load`, the bench and the tests all need the same
 * sequence — modules in dependency order (depends=), each loaded and then "initialised" (init
 * memory freed, ro_after_init sealed) as modprobe at boot would, failures recorded with Linux's
 * reason and never stopping the run — and the same report: loaded, failed with reasons,
 * unresolved symbols, relocation overflows, relocations by type, bytes by memory type, time.
 * Times are wall-clock of this process (performance.now) and are only meaningful as ratios.
 */
import { join } from 'node:path';
import type { ModMemType } from '../../consumers/modules/layout.js';
import { type LoadedModule, ModuleLoadError, ModuleLoader } from '../../consumers/modules/loader.js';
import type { KernelSymbols } from '../../consumers/modules/symbols.js';
import type { ExecAllocator } from '../../policies/types.js';
import { type DatasetIndex, dependencyOrder, readModuleFile } from './dataset.js';

export interface ModuleFailure {
  readonly name: string;
  /** The module file, relative to the dataset root. */
  readonly file: string;
  readonly code: string;
  /** Which step of the load failed (loader load-errors.ts: elf, symbols, relocation, allocator...). */
  readonly source: string;
  readonly reason: string;
  readonly unresolved: readonly string[];
  /** 'overflow' etc. for relocation failures. */
  readonly relocKind: string | null;
}

export interface ModulesLoadReport {
  readonly kernelRelease: string;
  readonly symbolsSource: string;
  readonly kernelExports: number;
  readonly kaslrOffsetBytes: number;
  readonly allocator: string;
  readonly requested: number;
  readonly loaded: number;
  readonly failed: readonly ModuleFailure[];
  readonly unresolvedSymbols: number;
  readonly relocOverflows: number;
  readonly relocsByType: Record<string, number>;
  /** arm64: PLT entries emitted for CALL26/JUMP26 beyond +-128 MiB (placement's cost; 0 on x86). */
  readonly pltEntries: number;
  /** The modules' architecture. */
  readonly arch: 'x86_64' | 'arm64';
  /** Bytes requested per memory type over all loads (init types included, before init frees them). */
  readonly requestedBytesByMemType: Record<ModMemType, number>;
  /** Bytes still allocated per memory type after init. */
  readonly liveBytesByMemType: Record<ModMemType, number>;
  readonly functions: number;
  readonly percpu: { usedBytes: number; reserveBytes: number; slices: number };
  readonly usage: { liveBytes: number; mappedBytes: number };
  readonly loadMs: number;
  readonly modulesPerSecond: number;
}

export interface LoadOptions {
  /** Module names to load (with their dependencies); default all. */
  readonly names?: readonly string[];
  /** Run init after each load (default true). */
  readonly init?: boolean;
  readonly checkPc32?: boolean;
  /** The modules' architecture (default x86_64) and, for arm64, the per-CPU base (loader.ts). */
  readonly arch?: 'x86_64' | 'arm64';
  readonly percpuBaseAddr?: number;
  readonly onModule?: (name: string, ok: boolean) => void;
}

function emptyBytes(): Record<ModMemType, number> {
  return { text: 0, data: 0, rodata: 0, ro_after_init: 0, init_text: 0, init_data: 0, init_rodata: 0 };
}

function addBytes(acc: Record<ModMemType, number>, mod: LoadedModule): void {
  for (const [t, m] of Object.entries(mod.mems)) acc[t as ModMemType] += m?.sizeBytes ?? 0;
}

/** Load modules of `index` through `allocator`; returns the loader (still holding them) and the report. */
export function loadDatasetModules(
  index: DatasetIndex,
  kernel: KernelSymbols,
  allocator: ExecAllocator,
  opts: LoadOptions = {},
): { loader: ModuleLoader; report: ModulesLoadReport } {
  const order = dependencyOrder(index, opts.names);
  const byName = new Map(index.modules.map((m) => [m.name, m]));
  // Read (and decompress) first, so the timed part is the load itself.
  const files = order.map((n) => readModuleFile(join(index.root, byName.get(n)!.path)));
  const loader = new ModuleLoader({
    allocator,
    kernel,
    checkPc32: opts.checkPc32,
    arch: opts.arch,
    percpuBaseAddr: opts.percpuBaseAddr,
  });
  const failed: ModuleFailure[] = [];
  const requested = emptyBytes();
  let unresolvedSymbols = 0;
  let relocOverflows = 0;
  const t0 = performance.now();
  order.forEach((name, i) => {
    try {
      const mod = loader.load(files[i], name);
      addBytes(requested, mod);
      if (opts.init ?? true) loader.init(mod.name);
      opts.onModule?.(name, true);
    } catch (e) {
      if (!(e instanceof ModuleLoadError)) throw e;
      unresolvedSymbols += e.unresolved.length;
      if (e.relocKind === 'overflow') relocOverflows++;
      failed.push({
        name,
        file: byName.get(name)!.path,
        code: e.code,
        source: e.source,
        reason: e.message,
        unresolved: e.unresolved,
        relocKind: e.relocKind,
      });
      opts.onModule?.(name, false);
    }
  });
  const loadMs = performance.now() - t0;
  const stats = loader.stats();
  const functions = loader.list().reduce((n, m) => n + m.functions.length, 0);
  return {
    loader,
    report: {
      kernelRelease: index.kernelRelease,
      symbolsSource: kernel.source,
      kernelExports: kernel.count,
      kaslrOffsetBytes: kernel.kaslrOffsetBytes,
      allocator: allocator.name,
      requested: order.length,
      loaded: order.length - failed.length,
      failed,
      unresolvedSymbols,
      relocOverflows,
      relocsByType: stats.relocsByType,
      pltEntries: stats.pltEntries,
      arch: opts.arch ?? 'x86_64',
      requestedBytesByMemType: requested,
      liveBytesByMemType: stats.liveBytesByMemType,
      functions,
      percpu: stats.percpu,
      usage: allocator.usage(),
      loadMs,
      modulesPerSecond: loadMs > 0 ? (order.length / loadMs) * 1000 : 0,
    },
  };
}
