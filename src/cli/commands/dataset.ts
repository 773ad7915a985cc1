/**
 * `execmem dataset`: fetch, index and summarise a Debian kernel package for the modules workload.
 *
 * Why subcommands: `fetch` does the network/apt work once (idempotent, cached), `info` shows
 * what a dataset holds without loading anything, and `table` writes the compact derived table
 * (data/debian-modules.json) that lets the default workload run without the 100 MB download.
 * Logic lives in src/workloads/dataset/; this file only parses options and prints.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import {
  buildIndex,
  DatasetError,
  datasetKernelSymbols,
  defaultCacheDir,
  fetchPackage,
  findCachedDataset,
  openDataset,
  resolvePackage,
} from '../../workloads/dataset/dataset.js';
import { buildModuleTable, writeModuleTable } from '../../workloads/dataset/table.js';
import { CliFailure, type CliIo } from '../io.js';

interface FetchOptions {
  package?: string;
  dir?: string;
  cacheDir?: string;
}

/** Resolve the dataset root from --dir, else the cache (fetched default). Exported for `modules`. */
export function datasetRoot(opts: { dir?: string; cacheDir?: string }): string {
  if (opts.dir) return opts.dir;
  const root = findCachedDataset(opts.cacheDir ?? defaultCacheDir());
  if (!root) {
    throw new CliFailure(
      `no dataset in ${opts.cacheDir ?? defaultCacheDir()}: run 'execmem dataset fetch' first (or pass --dir PATH to an extracted package)`,
    );
  }
  return root;
}

function wrap<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof DatasetError) throw new CliFailure(e.message);
    throw e;
  }
}

export function runFetch(opts: FetchOptions, io: CliIo) {
  return wrap(() => {
    let root: string;
    let pkg: string | null = null;
    if (opts.dir) {
      root = opts.dir;
      io.err(`indexing extracted package tree ${root}`);
    } else {
      const cache = opts.cacheDir ?? defaultCacheDir();
      pkg = resolvePackage(opts.package);
      io.err(
        `package: ${pkg}${opts.package ? '' : ' (what linux-image-cloud-amd64 depends on)'}; cache: ${cache}`,
      );
      root = fetchPackage(cache, pkg, (line) => io.err(line));
    }
    const existing = openDatasetQuiet(root);
    const index = existing ?? indexWithProgress(root, pkg, io);
    io.err(
      `kernel exports: reading ${index.systemMap ? 'System.map or ' : ''}vmlinuz __ksymtab (cached after the first time)`,
    );
    const ks = datasetKernelSymbols(index);
    return {
      root,
      packageName: index.packageName ?? pkg,
      kernelRelease: index.kernelRelease,
      modules: index.modules.length,
      moduleBytes: index.modules.reduce((n, m) => n + m.fileBytes, 0),
      kernelExports: ks.count,
      symbolsSource: ks.source,
    };
  });
}

function openDatasetQuiet(root: string) {
  return existsSync(join(root, 'index.json')) ? openDataset(root) : null;
}

function indexWithProgress(root: string, pkg: string | null, io: CliIo) {
  let bar: ReturnType<CliIo['progress']> | null = null;
  const index = buildIndex(root, pkg, (_stage, done, total) => {
    bar ??= io.progress('indexing modules', total);
    bar.tick();
    if (done === total) bar.done();
  });
  return index;
}

export function register(program: Command, io: CliIo): void {
  const ds = program
    .command('dataset')
    .description('fetch and index a Debian kernel package for the modules workload');
  ds.command('fetch')
    .description('download (apt-get download) and extract (dpkg-deb -x) a linux-image package, then index it')
    .option('--package <name>', 'package or meta-package (default: what linux-image-cloud-amd64 depends on)')
    .option('--dir <path>', 'index an already extracted package tree instead of downloading')
    .option(
      '--cache-dir <path>',
      'cache directory (default $EXECMEM_CACHE_DIR, $XDG_CACHE_HOME/execmem or ~/.cache/execmem)',
    )
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        '  $ execmem dataset fetch',
        '  $ execmem dataset fetch --package linux-image-amd64',
      ].join('\n'),
    )
    .action((opts: FetchOptions) => {
      const r = runFetch(opts, io);
      if (io.json) io.out(JSON.stringify(r));
      else
        io.out(
          `${r.kernelRelease}: ${r.modules} modules (${(r.moduleBytes / 1048576).toFixed(1)} MiB), ${r.kernelExports} kernel exports from ${r.symbolsSource}\n${r.root}`,
        );
    });
  ds.command('info')
    .description('what a dataset holds')
    .option('--dir <path>', 'dataset root (default: the fetched one in the cache)')
    .option('--cache-dir <path>', 'cache directory')
    .action((opts: { dir?: string; cacheDir?: string }) => {
      const index = wrap(() => openDataset(datasetRoot(opts)));
      const r = {
        root: index.root,
        kernelRelease: index.kernelRelease,
        packageName: index.packageName,
        modules: index.modules.length,
        systemMap: index.systemMap,
        vmlinuz: index.vmlinuz,
      };
      io.out(
        io.json
          ? JSON.stringify(r)
          : Object.entries(r)
              .map(([k, v]) => `${k}: ${v}`)
              .join('\n'),
      );
    });
  ds.command('table')
    .description(
      'write the compact derived per-module table (sizes by memory type, symbols, relocations, depends)',
    )
    .option('--dir <path>', 'dataset root (default: the fetched one in the cache)')
    .option('--cache-dir <path>', 'cache directory')
    .option('--out <file>', 'output file', 'data/debian-modules.json')
    .action((opts: { dir?: string; cacheDir?: string; out: string }) => {
      const index = wrap(() => openDataset(datasetRoot(opts)));
      const table = buildModuleTable(index);
      writeModuleTable(opts.out, table);
      io.out(
        io.json
          ? JSON.stringify({ out: opts.out, modules: table.modules.length })
          : `wrote ${opts.out}: ${table.modules.length} modules of ${table.kernelRelease}`,
      );
    });
}
