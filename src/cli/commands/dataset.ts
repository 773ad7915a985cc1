/**
 * `execmem dataset`: fetch, index, describe and remove a Debian kernel package for the modules
 * workload.
 *
 * Why subcommands: `fetch` does the network/apt work once (idempotent, cached), `info` shows
 * what a dataset holds without loading anything, `table` writes the compact derived table
 * (data/debian-modules.json) that lets the default workload run without the download, and
 * `clean` removes what fetch kept. Every size printed is measured on disk at that moment, the
 * version read from the kept .deb (../dataset-cache.ts). A tree passed with --dir is only read:
 * its index goes to the cache (treeIndexDir). Logic lives in src/workloads/dataset/; this file
 * parses options and prints.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import {
  buildIndex,
  type DatasetIndex,
  datasetKernelSymbols,
  fetchPackage,
  openDataset,
  resolvePackage,
} from '../../workloads/dataset/dataset.js';
import {
  type DatasetArch,
  DEBIAN_ARCH,
  dpkgKnowsArch,
  flavourMetaPackage,
} from '../../workloads/dataset/flavour.js';
import { buildModuleTable, writeModuleTable } from '../../workloads/dataset/table.js';
import {
  aptSizes,
  CACHE_PARTS,
  cleanCache,
  type DatasetLocation,
  datasetLocation,
  formatBytes,
  type PackageFacts,
  packageFacts,
  packageLabel,
} from '../dataset-cache.js';
import { CliFailure, type CliIo, UsageError } from '../io.js';
import { checkOutputFile } from '../paths.js';

interface FetchOptions {
  package?: string;
  dir?: string;
  cacheDir?: string;
  arch?: string;
  flavour?: string;
}

/** --arch: Debian's or the kernel's name of an architecture. */
export function parseArch(v: string | undefined): DatasetArch {
  if (v === undefined || v === 'amd64' || v === 'x86_64') return 'x86_64';
  if (v === 'arm64' || v === 'aarch64') return 'arm64';
  throw new UsageError(`--arch must be amd64 or arm64, got '${v}'`);
}

/** The cached dataset a --arch/--flavour pair names (findCachedDataset's flavour suffix). */
export function flavourSuffix(arch: string | undefined, flavour: string | undefined): string | undefined {
  if (arch === undefined && flavour === undefined) return undefined;
  const deb = DEBIAN_ARCH[parseArch(arch)];
  const f = flavour ?? 'cloud';
  return f === 'generic' ? deb : `${f}-${deb}`;
}

const CACHE_DIR_HELP =
  'cache directory (default $EXECMEM_CACHE_DIR, else $XDG_CACHE_HOME/execmem, else ~/.cache/execmem)';

/** A located dataset that must exist: the fetched one, or --dir. */
export function requireRoot(loc: DatasetLocation): { root: string; indexDir: string } {
  if (loc.root === null || loc.indexDir === null) {
    throw new CliFailure(
      `no dataset in ${loc.cacheDir}: run 'execmem dataset fetch' first (or pass --dir PATH to an extracted package)`,
    );
  }
  return { root: loc.root, indexDir: loc.indexDir };
}

/** Open the index of a located tree (built into indexDir, with a progress bar, when missing). */
export function openLocated(
  loc: { root: string; indexDir: string },
  io: CliIo,
  packageName: string | null = null,
): DatasetIndex {
  let bar: ReturnType<CliIo['progress']> | null = null;
  const progress = (_stage: string, done: number, total: number): void => {
    bar ??= io.progress('indexing modules', total);
    bar.tick();
    if (done === total) bar.done();
  };
  try {
    return existsSync(join(loc.indexDir, 'index.json'))
      ? openDataset(loc.root, progress, loc.indexDir)
      : buildIndex(loc.root, packageName, progress, loc.indexDir);
  } finally {
    (bar as ReturnType<CliIo['progress']> | null)?.done();
  }
}

export interface FetchReport extends PackageFacts {
  readonly cacheDir: string;
  readonly modules: number;
  readonly moduleBytes: number;
  readonly kernelExports: number;
  readonly symbolsSource: string;
}

export function runFetch(opts: FetchOptions, io: CliIo): FetchReport {
  const loc = datasetLocation({ dir: opts.dir, cacheDir: opts.cacheDir });
  let root: string;
  let pkg: string | null = null;
  if (opts.dir !== undefined) {
    root = requireRoot(loc).root;
    io.err(`indexing the extracted package tree ${root} (read only; the index goes to ${loc.cacheDir})`);
  } else {
    const arch = parseArch(opts.arch);
    const deb = DEBIAN_ARCH[arch];
    const apt = dpkgKnowsArch(deb);
    if (!apt.known)
      throw new CliFailure(
        `apt does not know the ${deb} architecture on this ${apt.host} system: run 'dpkg --add-architecture ${deb} && apt-get update' (as root) first`,
      );
    const meta = opts.package ?? flavourMetaPackage(arch, opts.flavour ?? 'cloud', apt.host);
    pkg = resolvePackage(meta);
    io.err(`package: ${pkg}${opts.package ? '' : ` (what ${meta} depends on)`}; cache: ${loc.cacheDir}`);
    if (!existsSync(join(loc.cacheDir, 'debian', pkg, 'index.json'))) {
      const sizes = aptSizes(pkg);
      if (sizes !== null) {
        io.err(
          `apt-cache show ${pkg}: ${formatBytes(sizes.debBytes)} to download, ${formatBytes(sizes.installedBytes)} extracted`,
        );
      }
    }
    root = fetchPackage(loc.cacheDir, pkg, (line) => io.err(line), deb === apt.host ? null : deb);
  }
  const located = { root, indexDir: datasetLocation({ dir: root, cacheDir: loc.cacheDir }).indexDir! };
  const index = openLocated(located, io, pkg);
  io.err(
    `kernel exports: reading ${index.systemMap ? 'System.map or ' : ''}vmlinuz __ksymtab (cached after the first time)`,
  );
  const ks = datasetKernelSymbols(index, located.indexDir);
  return {
    ...packageFacts(index, { cacheDir: loc.cacheDir, indexDir: located.indexDir }),
    cacheDir: loc.cacheDir,
    modules: index.modules.length,
    moduleBytes: index.modules.reduce((n, m) => n + m.fileBytes, 0),
    kernelExports: ks.count,
    symbolsSource: ks.source,
  };
}

/** The kept files, one line each, as fetch and info print them. */
function keptLines(f: PackageFacts): string[] {
  const lines: string[] = [];
  if (f.deb !== null) lines.push(`download: ${formatBytes(f.deb.bytes)}, kept as ${f.deb.path}`);
  lines.push(`extracted tree: ${formatBytes(f.treeBytes)} in ${f.root}`);
  lines.push(`index: ${join(f.indexDir, 'index.json')} (and kernel-exports.json beside it)`);
  return lines;
}

export function register(program: Command, io: CliIo): void {
  const ds = program
    .command('dataset')
    .description('fetch, index, describe and remove a Debian kernel package for the modules workload');
  ds.command('fetch')
    .description('download (apt-get download) and extract (dpkg-deb -x) a linux-image package, then index it')
    .option('--package <name>', 'package or meta-package (default: what linux-image-cloud-amd64 depends on)')
    .option(
      '--arch <arch>',
      'amd64 (default) or arm64 (needs dpkg --add-architecture arm64 && apt-get update)',
    )
    .option('--flavour <name>', 'cloud (default), generic (the full linux-image-ARCH), rt, ...')
    .option('--dir <path>', 'index an already extracted package tree instead of downloading (read only)')
    .option('--cache-dir <path>', CACHE_DIR_HELP)
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        '  $ execmem dataset fetch                        # the current cloud kernel, into the cache',
        '  $ execmem dataset fetch --json | jq .version   # the Debian version of the package',
        '',
        '  $ execmem dataset fetch --arch arm64 --flavour cloud   # linux-image-cloud-arm64:arm64',
        '',
        'Another flavour: --flavour generic (linux-image-amd64, about three times the download), or',
        '--package NAME for any package or meta-package.',
        'Prints the measured sizes of the download and of the extracted tree and where they are kept;',
        "'execmem dataset clean' removes them. Needs apt-get and dpkg-deb (Debian or Ubuntu).",
      ].join('\n'),
    )
    .action((opts: FetchOptions) => {
      const r = runFetch(opts, io);
      if (io.json) {
        io.outJson(r);
        return;
      }
      io.out(
        [
          `${packageLabel(r)} (kernel ${r.kernelRelease}): ${r.modules} modules (${(r.moduleBytes / 1048576).toFixed(1)} MiB of .ko files), ${r.kernelExports} kernel exports from ${r.symbolsSource}`,
          ...keptLines(r),
          "'execmem dataset clean' removes what is kept in the cache.",
        ].join('\n'),
      );
    });
  ds.command('info')
    .description('what a dataset holds: package, version, sizes, where its files are')
    .option('--dir <path>', 'dataset root (default: the fetched one in the cache)')
    .option('--cache-dir <path>', CACHE_DIR_HELP)
    .addHelpText(
      'after',
      ['', 'Examples:', '  $ execmem dataset info', '  $ execmem dataset info --json | jq .modules'].join(
        '\n',
      ),
    )
    .action((opts: { dir?: string; cacheDir?: string }) => {
      const loc = datasetLocation(opts);
      const index = openLocated(requireRoot(loc), io);
      const facts = packageFacts(index, { cacheDir: loc.cacheDir, indexDir: loc.indexDir! });
      const r = {
        ...facts,
        modules: index.modules.length,
        systemMap: index.systemMap,
        vmlinuz: index.vmlinuz,
      };
      if (io.json) {
        io.outJson(r);
        return;
      }
      io.out(
        [
          `${packageLabel(r)} (kernel ${r.kernelRelease}): ${r.modules} modules`,
          ...keptLines(facts),
          `System.map: ${r.systemMap ?? 'none'}; vmlinuz: ${r.vmlinuz ?? 'none'}`,
        ].join('\n'),
      );
    });
  ds.command('table')
    .description(
      'write the compact derived per-module table (sizes by memory type, symbols, relocations, depends)',
    )
    .option('--dir <path>', 'dataset root (default: the fetched one in the cache)')
    .option('--cache-dir <path>', CACHE_DIR_HELP)
    .option('--arch <arch>', 'which fetched package: amd64 (default) or arm64')
    .option('--flavour <name>', 'which fetched package: cloud (default), generic, rt')
    .option('--out <file>', 'output file', 'data/debian-modules.json')
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        '  $ execmem dataset table --out /tmp/modules.json   # the table of the fetched package',
      ].join('\n'),
    )
    .action((opts: { dir?: string; cacheDir?: string; out: string; arch?: string; flavour?: string }) => {
      const out = checkOutputFile('--out', opts.out);
      const loc = datasetLocation({ ...opts, flavour: flavourSuffix(opts.arch, opts.flavour) });
      const index = openLocated(requireRoot(loc), io);
      const table = buildModuleTable(index);
      writeModuleTable(out, table);
      if (io.json) io.outJson({ out, modules: table.modules.length, kernelRelease: table.kernelRelease });
      else io.out(`wrote ${out}: ${table.modules.length} modules of ${table.kernelRelease}`);
    });
  ds.command('clean')
    .description('remove what fetch kept in the cache (downloads, extracted packages, indexes)')
    .option('--cache-dir <path>', CACHE_DIR_HELP)
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        '  $ execmem dataset clean',
        '',
        `Removes only ${CACHE_PARTS.map((p) => `${p.dir}/`).join(', ')} of the cache directory; a tree passed`,
        'with --dir is never touched. The debian-modules workload keeps working: it uses the shipped table.',
      ].join('\n'),
    )
    .action((opts: { cacheDir?: string }) => {
      const { cacheDir } = datasetLocation({ cacheDir: opts.cacheDir });
      const r = cleanCache(cacheDir);
      if (io.json) {
        io.outJson(r);
        return;
      }
      if (r.removed.length === 0) {
        io.out(`nothing to remove in ${cacheDir}`);
        return;
      }
      for (const x of r.removed) io.out(`removed ${x.path}: ${formatBytes(x.bytes)} (${x.what})`);
      io.out(`freed ${formatBytes(r.freedBytes)}`);
    });
}
