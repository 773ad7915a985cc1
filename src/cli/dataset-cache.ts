/**
 * What the commands say about the Debian dataset and its cache: where it is, which package and
 * version, how big the download and the extracted tree are, which files are kept, and how it
 * compares with the shipped module table. `dataset fetch`, `dataset info`, `dataset clean`,
 * `modules load` and the report all print from here, so they agree with each other.
 *
 * Why measured, never written down: a size in a message ("about 50 MB") goes stale with the next
 * kernel upload and was already off by half. Every size here is read from the files on disk (the
 * .deb apt-get downloaded, the extracted tree) at the moment it is printed, and the package
 * version is read from the .deb's name as apt-get wrote it (<package>_<version>_<arch>.deb).
 * Before a download nothing is on disk, so nothing is claimed; `dataset fetch` asks apt for the
 * size first (apt-cache show, about a second) and prints both figures afterwards.
 *
 * Paths are checked before anything is read or written (paths.ts): the cache directory may come
 * from --cache-dir or $EXECMEM_CACHE_DIR and is as much user input as an option.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  defaultCacheDir,
  findCachedDataset,
  openDataset,
  treeIndexDir,
} from '../workloads/dataset/dataset.js';
import { checkInputDir, checkOutputDir } from './paths.js';

/** What fetch puts in the cache directory; `dataset clean` removes exactly these. */
export const CACHE_PARTS = [
  { dir: 'downloads', what: 'the downloaded .deb packages' },
  { dir: 'debian', what: 'the extracted packages, with their index.json and kernel-exports.json' },
  { dir: 'trees', what: 'the indexes of trees passed with --dir' },
] as const;

/** Where a dataset command reads and writes. */
export interface DatasetLocation {
  /** The cache directory (checked writable). */
  readonly cacheDir: string;
  /** The extracted package tree, or null when none is fetched and none was passed. */
  readonly root: string | null;
  /** Where the tree's index.json and kernel-exports.json are kept (never a --dir tree). */
  readonly indexDir: string | null;
}

/**
 * Check --dir and the cache directory (--cache-dir, else $EXECMEM_CACHE_DIR, else the default)
 * and find the tree: --dir, else the newest fetched package in the cache.
 */
export function datasetLocation(opts: {
  dir?: string;
  cacheDir?: string;
  flavour?: string;
}): DatasetLocation {
  const cacheDir = checkOutputDir(
    opts.cacheDir !== undefined ? '--cache-dir' : 'the cache directory',
    opts.cacheDir ?? defaultCacheDir(),
  );
  const root =
    opts.dir !== undefined ? checkInputDir('--dir', opts.dir) : findCachedDataset(cacheDir, opts.flavour);
  return { cacheDir, root, indexDir: root === null ? null : treeIndexDir(root, cacheDir) };
}

/** Bytes of the files under `path` (symlinks counted as links, not followed). */
export function treeBytes(path: string): number {
  let total = 0;
  const stack = [path];
  while (stack.length > 0) {
    const p = stack.pop()!;
    let st: ReturnType<typeof lstatSync>;
    try {
      st = lstatSync(p);
    } catch {
      continue;
    }
    if (st.isDirectory()) for (const e of readdirSync(p)) stack.push(join(p, e));
    else total += st.size;
  }
  return total;
}

/** "26.7 MB (26,705,532 bytes)": decimal megabytes, as apt and download tools count. */
export function formatBytes(bytes: number, exact = true): string {
  const mb = `${(bytes / 1e6).toFixed(1)} MB`;
  return exact ? `${mb} (${bytes.toLocaleString('en-US')} bytes)` : mb;
}

/** The .deb apt-get downloaded for `pkg` into the cache, with the version in its name. */
export function downloadedDeb(
  cacheDir: string,
  pkg: string,
): { path: string; version: string; bytes: number } | null {
  const dir = join(cacheDir, 'downloads');
  if (!existsSync(dir)) return null;
  const file = readdirSync(dir).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
  if (file === undefined) return null;
  // apt-get download names it <package>_<version>_<arch>.deb, the epoch's ':' written as %3a.
  const version = decodeURIComponent(file.slice(pkg.length + 1).replace(/_[^_]+\.deb$/, ''));
  const path = join(dir, file);
  return { path, version, bytes: lstatSync(path).size };
}

/** The download and installed sizes apt knows for `pkg` (apt-cache show), or null. */
export function aptSizes(pkg: string): { debBytes: number; installedBytes: number } | null {
  const r = spawnSync('apt-cache', ['show', '--no-all-versions', pkg], { encoding: 'utf8' });
  if (r.status !== 0 || typeof r.stdout !== 'string') return null;
  const size = /^Size: (\d+)$/m.exec(r.stdout);
  const installed = /^Installed-Size: (\d+)$/m.exec(r.stdout);
  if (!size || !installed) return null;
  // Installed-Size is in KiB (deb-control(5)).
  return { debBytes: Number(size[1]), installedBytes: Number(installed[1]) * 1024 };
}

/** A fetched (or --dir) package as the commands describe it. */
export interface PackageFacts {
  readonly packageName: string | null;
  readonly kernelRelease: string;
  /** Debian version from the kept .deb, or null (no .deb kept, or a --dir tree). */
  readonly version: string | null;
  readonly root: string;
  readonly treeBytes: number;
  readonly deb: { readonly path: string; readonly bytes: number } | null;
  readonly indexDir: string;
}

export function packageFacts(
  index: { packageName: string | null; kernelRelease: string; root: string },
  location: { cacheDir: string; indexDir: string },
): PackageFacts {
  const deb = index.packageName === null ? null : downloadedDeb(location.cacheDir, index.packageName);
  return {
    packageName: index.packageName,
    kernelRelease: index.kernelRelease,
    version: deb?.version ?? null,
    root: index.root,
    treeBytes: treeBytes(index.root),
    deb: deb === null ? null : { path: deb.path, bytes: deb.bytes },
    indexDir: location.indexDir,
  };
}

/** "linux-image-6.1.0-57-cloud-amd64 6.1.192-3" (or the kernel release of a bare tree). */
export function packageLabel(p: {
  packageName: string | null;
  kernelRelease: string;
  version?: string | null;
}) {
  const name = p.packageName ?? `kernel ${p.kernelRelease}`;
  return p.version ? `${name} ${p.version}` : name;
}

/**
 * One sentence comparing the package in use with the shipped module table (the debian-modules
 * workload's sizes), or null when they are the same kernel.
 */
export function tableDifference(
  used: { packageName: string | null; kernelRelease: string; version: string | null },
  table: { packageName: string | null; kernelRelease: string },
  subject = `the package loaded here (${packageLabel(used)})`,
): string | null {
  if (used.kernelRelease === table.kernelRelease) return null;
  const shipped = { packageName: table.packageName, kernelRelease: table.kernelRelease, version: null };
  return (
    `${subject} is not the kernel of the shipped table ` +
    `data/debian-modules.json (${packageLabel(shipped)}), whose sizes the debian-modules workload ` +
    "and the report use; 'execmem dataset table' regenerates the table from this package"
  );
}

/** What `dataset clean` removed. */
export interface CleanResult {
  readonly cacheDir: string;
  readonly removed: readonly { readonly path: string; readonly bytes: number; readonly what: string }[];
  readonly freedBytes: number;
}

/** Remove what fetch and indexing put in the cache (CACHE_PARTS), nothing else. */
export function cleanCache(cacheDir: string): CleanResult {
  const removed: { path: string; bytes: number; what: string }[] = [];
  for (const part of CACHE_PARTS) {
    const path = join(cacheDir, part.dir);
    if (!existsSync(path)) continue;
    const bytes = treeBytes(path);
    rmSync(path, { recursive: true, force: true });
    removed.push({ path, bytes, what: part.what });
  }
  return { cacheDir, removed, freedBytes: removed.reduce((n, r) => n + r.bytes, 0) };
}

/**
 * The report's note on the Debian package itself: whether it is fetched, which package and
 * version, its measured sizes, and whether it is the kernel of the shipped table.
 */
export function reportDatasetNote(
  table: { packageName: string | null; kernelRelease: string },
  cacheDir = defaultCacheDir(),
): string {
  const root = findCachedDataset(cacheDir);
  if (root === null) {
    return (
      'The Debian package itself is not fetched. `execmem dataset fetch` downloads it with apt-get (and ' +
      'prints the download and extracted sizes it measured); `execmem modules load --all` then loads every ' +
      'real .ko with its relocations.'
    );
  }
  const index = openDataset(root);
  const facts = packageFacts(index, { cacheDir, indexDir: root });
  const tree = `${formatBytes(facts.treeBytes, false)} extracted`;
  const sizes = facts.deb === null ? tree : `${formatBytes(facts.deb.bytes, false)} download, ${tree}`;
  const differs = tableDifference(facts, table, 'it');
  return (
    `The Debian package ${packageLabel(facts)} is fetched (${sizes}, measured, in ${cacheDir}); ` +
    '`execmem modules load --all` loads every real .ko with its relocations' +
    (differs === null ? '; it is the kernel of the shipped table.' : `; ${differs}.`)
  );
}
