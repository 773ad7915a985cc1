/**
 * The Debian kernel-module dataset: fetch a linux-image package, extract it, index its modules.
 *
 * Why this way: the brief asks for real modules ("numbers on real workloads"), reproducibly and
 * without hard-coded versions. The default package is whatever the meta-package
 * `linux-image-cloud-amd64` depends on today (resolved with `apt-cache depends`), downloaded with
 * `apt-get download` and unpacked with `dpkg-deb -x` into a cache directory
 * ($EXECMEM_CACHE_DIR, else $XDG_CACHE_HOME/execmem, else ~/.cache/execmem). Every step is
 * idempotent: a finished extraction is recorded in index.json and reused. Any other extracted
 * package tree works too (`openDataset(dir)`), so other kernels can be used.
 *
 * The index lists every .ko (plain, or .ko.xz / .ko.zst, decompressed on read with the xz /
 * zstd commands), with its module name (.modinfo name=, else the file name with '-' as '_')
 * and depends=. Kernel exports come from a real System.map when the tree has one, else from the
 * __ksymtab of the vmlinuz (kernel-image.ts; Debian's System.map is a stub) and are cached as
 * kernel-exports.json next to the index.
 *
 * Where the index lives: in the tree for a package fetched into the cache (the tree is ours);
 * for any other tree (`--dir`) in the cache, under trees/ (treeIndexDir), because a directory the
 * user passed is an input and is never written to. The functions take that directory as an
 * optional last argument (default: the tree itself).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { homedir } from 'node:os';
import { basename, join, relative, resolve, sep } from 'node:path';
import { parseElf, parseModinfo, stripModuleSignature } from '../../consumers/modules/elf.js';
import { KSYM_NAME_LEN } from '../../consumers/modules/names.js';
import { type KernelExport, KernelSymbols } from '../../consumers/modules/symbols.js';
import { arm64KernelSymbols, vmlinuzArch } from './arm64-image.js';
import { extractVmlinux } from './kernel-image.js';
import {
  arrayOf,
  bool,
  type Check,
  checkFile,
  DatasetError,
  int,
  nullable,
  object,
  readJson,
  str,
  text,
  uniqueBy,
} from './validate.js';

export { DatasetError } from './validate.js';

export const DEFAULT_META_PACKAGE = 'linux-image-cloud-amd64';
const INDEX_VERSION = 1;
const EXPORTS_VERSION = 1;

export interface DatasetModule {
  readonly name: string;
  /** Path relative to the dataset root. */
  readonly path: string;
  readonly fileBytes: number;
  readonly depends: readonly string[];
}

export interface DatasetIndex {
  readonly version: number;
  readonly root: string;
  readonly packageName: string | null;
  readonly kernelRelease: string;
  readonly modules: readonly DatasetModule[];
  readonly systemMap: string | null;
  readonly vmlinuz: string | null;
  readonly config: string | null;
}

export type DatasetProgress = (stage: string, done: number, total: number) => void;

/**
 * A module name: at most MODULE_NAME_LEN - 1 = 55 characters (include/linux/module.h:
 * MODULE_NAME_LEN is 64 - sizeof(unsigned long), the size of struct module's name), no
 * whitespace, '/' or NUL.
 */
const moduleName = text(55, /^[^\s/\0]+$/, 'a module name');
/** A .ko path relative to the dataset root that stays inside it (no '..', not absolute). */
const modulePath = text(4096, /^(?!\/)(?!(.*\/)?\.\.(\/|$))[^\0]+\.ko(\.xz|\.zst)?$/, 'a relative .ko path');
const datasetModule: Check<DatasetModule> = object<DatasetModule>({
  name: moduleName,
  path: modulePath,
  fileBytes: int(0, Number.MAX_SAFE_INTEGER),
  depends: arrayOf(moduleName),
});
const indexHead = object<{ version: number; root: string }>({ version: int(0, 1_000_000), root: str });
const datasetIndex: Check<DatasetIndex> = object<DatasetIndex>({
  version: int(INDEX_VERSION, INDEX_VERSION),
  root: str,
  packageName: nullable(text(256)),
  kernelRelease: text(256, /^[^/\0]+$/, 'a kernel release'),
  modules: arrayOf(datasetModule),
  systemMap: nullable(text(4096)),
  vmlinuz: nullable(text(4096)),
  config: nullable(text(4096)),
});

/** The index as checked (throws DatasetError naming the file and field). */
function checkIndex(file: string, raw: unknown, remedy: string): DatasetIndex {
  return checkFile(file, remedy, () => {
    const index = datasetIndex(raw, '');
    uniqueBy(index.modules, (m) => m.name, 'modules');
    return index;
  });
}

/** $EXECMEM_CACHE_DIR, else $XDG_CACHE_HOME/execmem, else ~/.cache/execmem. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.EXECMEM_CACHE_DIR) return env.EXECMEM_CACHE_DIR;
  if (env.XDG_CACHE_HOME) return join(env.XDG_CACHE_HOME, 'execmem');
  return join(homedir(), '.cache', 'execmem');
}

function have(cmd: string): boolean {
  return spawnSync('/bin/sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** The concrete linux-image package the meta-package points to (apt-cache depends). */
export function resolvePackage(metaPackage = DEFAULT_META_PACKAGE): string {
  if (!have('apt-cache'))
    throw new DatasetError(
      'apt-cache is not available: this needs a Debian/Ubuntu system (or use --dir with an extracted package)',
    );
  const r = spawnSync('apt-cache', ['depends', metaPackage], { encoding: 'utf8' });
  if (r.status !== 0)
    throw new DatasetError(
      `apt-cache depends ${metaPackage} failed: ${r.stderr.trim()} (try 'apt-get update')`,
    );
  const dep = r.stdout
    .split('\n')
    .map((l) => l.trim())
    .find((l) => l.startsWith('Depends: linux-image-'));
  if (!dep) {
    // Already a concrete package (no linux-image dependency): use it as given.
    if (/^linux-image-\d/.test(metaPackage)) return metaPackage;
    throw new DatasetError(
      `${metaPackage} depends on no linux-image-* package (apt-cache output: ${r.stdout.trim().slice(0, 200)})`,
    );
  }
  // A foreign-architecture dependency reads "linux-image-...:arm64": the package name is before ':'.
  return dep
    .slice('Depends: '.length)
    .trim()
    .replace(/:[a-z0-9]+$/, '');
}

function packageDir(cacheDir: string, pkg: string): string {
  return join(cacheDir, 'debian', pkg);
}

/**
 * Download and extract a package into the cache (idempotent). Returns the dataset root.
 * `log` receives one line per step, so the user sees what is done.
 */
export function fetchPackage(
  cacheDir: string,
  pkg: string,
  log: (line: string) => void,
  /** Debian architecture to download for, when it is not the host's (apt-get download PKG:ARCH). */
  foreignArch: string | null = null,
): string {
  const root = packageDir(cacheDir, pkg);
  if (existsSync(join(root, 'index.json'))) {
    log(`${pkg}: already fetched and indexed in ${root}`);
    return root;
  }
  for (const tool of ['apt-get', 'dpkg-deb']) {
    if (!have(tool))
      throw new DatasetError(
        `${tool} is not available: fetching needs a Debian/Ubuntu system (or use --dir with an extracted package)`,
      );
  }
  const dl = join(cacheDir, 'downloads');
  mkdirSync(dl, { recursive: true });
  let deb = readdirSync(dl).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
  if (!deb) {
    const target = foreignArch ? `${pkg}:${foreignArch}` : pkg;
    log(`${target}: apt-get download into ${dl}`);
    const r = spawnSync('apt-get', ['download', target], { cwd: dl, encoding: 'utf8' });
    if (r.status !== 0)
      throw new DatasetError(
        `apt-get download ${pkg} failed: ${r.stderr.trim().split('\n').pop()} (try 'apt-get update')`,
      );
    deb = readdirSync(dl).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
    if (!deb) throw new DatasetError(`apt-get download ${pkg} produced no .deb in ${dl}`);
  } else {
    log(`${pkg}: using downloaded ${deb}`);
  }
  const tmp = `${root}.partial`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  log(`${pkg}: dpkg-deb -x ${deb}`);
  execFileSync('dpkg-deb', ['-x', join(dl, deb), tmp], { stdio: 'ignore' });
  rmSync(root, { recursive: true, force: true });
  renameSync(tmp, root);
  return root;
}

function walk(dir: string, out: string[]): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) walk(p, out);
    else if (/\.ko(\.xz|\.zst)?$/.test(e.name)) out.push(p);
  }
}

/** Read a module file, decompressing .ko.xz / .ko.zst. */
export function readModuleFile(path: string): Uint8Array {
  let raw: Buffer;
  try {
    raw = readFileSync(path);
  } catch (e) {
    throw new DatasetError(`${path}: cannot read module file: ${e instanceof Error ? e.message : e}`, path);
  }
  const tool = path.endsWith('.xz') ? 'xz' : path.endsWith('.zst') ? 'zstd' : null;
  if (!tool) return new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength);
  const r = spawnSync(tool, ['-dc'], { input: raw, maxBuffer: 256 << 20 });
  if (r.status !== 0) throw new DatasetError(`${tool} -dc ${path} failed (is ${tool} installed?)`);
  return new Uint8Array(r.stdout.buffer, r.stdout.byteOffset, r.stdout.byteLength);
}

function firstFile(dir: string, prefix: string): string | null {
  if (!existsSync(dir)) return null;
  const f = readdirSync(dir).find((n) => n.startsWith(prefix));
  return f ? join(dir, f) : null;
}

/**
 * Where the index (and the kernel-exports cache) of the tree at `root` is kept: the tree itself
 * when it lies inside `cacheDir` (a fetched package), else cacheDir/trees/<name>-<hash of the
 * absolute path>, so a tree the user passed with --dir is never written to.
 */
export function treeIndexDir(root: string, cacheDir: string): string {
  const abs = resolve(root);
  const cache = resolve(cacheDir);
  if (abs === cache || abs.startsWith(`${cache}${sep}`)) return abs;
  const key = createHash('sha256').update(abs).digest('hex').slice(0, 16);
  return join(cache, 'trees', `${basename(abs) || 'root'}-${key}`);
}

/** Scan an extracted package tree and write index.json into `indexDir` (and return it). */
export function buildIndex(
  root: string,
  packageName: string | null,
  progress?: DatasetProgress,
  indexDir = root,
): DatasetIndex {
  const modRoot = join(root, 'lib', 'modules');
  if (!existsSync(modRoot))
    throw new DatasetError(`${root} has no lib/modules: not an extracted linux-image package`);
  const releases = readdirSync(modRoot).filter((d) => statSync(join(modRoot, d)).isDirectory());
  if (releases.length !== 1)
    throw new DatasetError(`${modRoot} holds ${releases.length} kernel releases (want exactly one)`);
  const release = releases[0];
  const files: string[] = [];
  walk(join(modRoot, release), files);
  files.sort();
  const modules: DatasetModule[] = [];
  files.forEach((f, i) => {
    const bytes = readModuleFile(f);
    let name = basename(f)
      .replace(/\.ko(\.xz|\.zst)?$/, '')
      .replaceAll('-', '_');
    let depends: string[] = [];
    try {
      // Either architecture's modules: the machine is the file's own (the loader checks it).
      const machine = bytes.length >= 20 ? bytes[18] | (bytes[19] << 8) : undefined;
      const info = parseModinfo(parseElf(stripModuleSignature(bytes).bytes, { machine }));
      const infoName = info.get('name')?.[0] ?? name;
      const infoDepends = (info.get('depends')?.[0] ?? '')
        .split(',')
        .filter((d) => d !== '')
        .map((d) => d.replaceAll('-', '_'));
      moduleName(infoName, 'name');
      arrayOf(moduleName)(infoDepends, 'depends');
      name = infoName;
      depends = infoDepends;
    } catch {
      // A corrupt file (or .modinfo) is still indexed by its file name; loading it will report
      // the problem.
    }
    modules.push({ name, path: relative(root, f), fileBytes: statSync(f).size, depends });
    progress?.('index', i + 1, files.length);
  });
  const boot = join(root, 'boot');
  const index: DatasetIndex = {
    version: INDEX_VERSION,
    root,
    packageName,
    kernelRelease: release,
    modules,
    systemMap: firstFile(boot, 'System.map'),
    vmlinuz: firstFile(boot, 'vmlinuz'),
    config: firstFile(boot, 'config'),
  };
  const file = join(indexDir, 'index.json');
  // What is written must read back: a module name that is no module name is refused here.
  checkIndex(file, index, 'from the files of the tree: see the module named in the field');
  mkdirSync(indexDir, { recursive: true });
  writeFileSync(file, `${JSON.stringify(index, null, 1)}\n`);
  return index;
}

/**
 * Open a dataset root (cached index, or build one). An index of another version, or written for
 * another root (the tree was moved), is rebuilt; a corrupt one is refused with a DatasetError
 * naming the file and field, since rebuilding silently would hide what damaged it.
 */
export function openDataset(root: string, progress?: DatasetProgress, indexDir = root): DatasetIndex {
  const p = join(indexDir, 'index.json');
  if (existsSync(p)) {
    const remedy = `remove it and run 'execmem dataset fetch --dir ${root}' to rebuild it`;
    const raw = readJson(p, remedy);
    const head = checkFile(p, remedy, () => indexHead(raw, ''));
    if (head.version === INDEX_VERSION && head.root === root) return checkIndex(p, raw, remedy);
  }
  return buildIndex(root, null, progress, indexDir);
}

/**
 * A fetched dataset's root in the cache, or null when none has been fetched. `flavour` picks
 * the package by its name's ending ("cloud-arm64"; "amd64" is the full flavour: the ABI number
 * right before it). Without `flavour`: the default package's kind (cloud-amd64) when one is
 * fetched, else any package (a tree fetched with --package). Of several versions the
 * highest-sorting one is taken.
 */
export function findCachedDataset(cacheDir = defaultCacheDir(), flavour?: string): string | null {
  const dir = join(cacheDir, 'debian');
  if (!existsSync(dir)) return null;
  const all = readdirSync(dir)
    .filter(
      (d) =>
        d.startsWith('linux-image-') && !d.endsWith('.partial') && existsSync(join(dir, d, 'index.json')),
    )
    .sort();
  // linux-image-<version>-<abi>-<flavour>: the version part is digits and dots only.
  const of = (f: string) => {
    const pattern = new RegExp(`^linux-image-[0-9][0-9.]*-[0-9]+-${f.replace(/[^a-z0-9-]/g, '')}$`);
    return all.filter((d) => pattern.test(d));
  };
  const roots = flavour !== undefined ? of(flavour) : of('cloud-amd64').length > 0 ? of('cloud-amd64') : all;
  return roots.length > 0 ? join(dir, roots[roots.length - 1]) : null;
}

interface ExportsFile {
  version: number;
  source: string;
  perCpuEndBytes: number;
  exports: KernelExport[];
}

const kernelExport: Check<KernelExport> = object<KernelExport>({
  name: text(KSYM_NAME_LEN - 1, /^[^\0]+$/, 'a symbol name'),
  // Signed 64-bit link addresses held exactly (elf.ts): |value| < 2^53.
  value: int(-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER),
  gplOnly: bool,
  namespace: nullable(str),
  crc: nullable(int(0, 2 ** 32 - 1)),
  percpu: bool,
});
const exportsHead = object<{ version: number }>({ version: int(0, 1_000_000) });
const exportsFile: Check<ExportsFile> = object<ExportsFile>({
  version: int(EXPORTS_VERSION, EXPORTS_VERSION),
  source: text(4096),
  // x86-64 reaches per-CPU data with 32-bit %gs displacements: the area ends below 2^31.
  perCpuEndBytes: int(0, 2 ** 31 - 1),
  exports: arrayOf(kernelExport, 1),
});

/** Read a file of the tree that the index names, as a DatasetError naming it on failure. */
function fromTreeFile<T>(file: string, what: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof DatasetError) throw e;
    if (!(e instanceof Error) || e instanceof TypeError || e.name === 'AssertionError') throw e;
    throw new DatasetError(`${file}: ${what}: ${e.message}`, file);
  }
}

/**
 * Kernel exports of a dataset: a real System.map if present, else the vmlinuz __ksymtab
 * (cached in kernel-exports.json in `indexDir`, where the index is kept). KASLR offset 0; use
 * withKaslrOffset() to place the kernel.
 */
export function datasetKernelSymbols(index: DatasetIndex, indexDir = index.root): KernelSymbols {
  const systemMap = index.systemMap;
  if (systemMap) {
    // Debian's is a one-line stub; a real one lists __ksymtab_* entries.
    const map = fromTreeFile(systemMap, 'cannot read System.map', () => readFileSync(systemMap, 'utf8'));
    if (map.includes(' __ksymtab_'))
      return fromTreeFile(systemMap, 'not a usable System.map', () =>
        KernelSymbols.fromSystemMap(map, basename(systemMap)),
      );
  }
  const cache = join(indexDir, 'kernel-exports.json');
  if (existsSync(cache)) {
    const remedy = 'remove it: it is rebuilt from the vmlinuz on the next run';
    const raw = readJson(cache, remedy);
    const head = checkFile(cache, remedy, () => exportsHead(raw, ''));
    if (head.version === EXPORTS_VERSION) {
      const f = checkFile(cache, remedy, () => {
        const checked = exportsFile(raw, '');
        uniqueBy(checked.exports, (e) => e.name, 'exports');
        return checked;
      });
      return new KernelSymbols(f.exports, f.perCpuEndBytes, f.source);
    }
  }
  const vmlinuz = index.vmlinuz;
  if (!vmlinuz)
    throw new DatasetError(`${index.root}: no usable System.map and no vmlinuz to read exports from`);
  const ks = fromTreeFile(vmlinuz, 'cannot read the kernel exports', () => {
    const bytes = readModuleFile(vmlinuz);
    return vmlinuzArch(bytes) === 'arm64'
      ? arm64KernelSymbols(bytes, `${basename(vmlinuz)} __ksymtab`)
      : KernelSymbols.fromVmlinux(extractVmlinux(bytes), `${basename(vmlinuz)} __ksymtab`);
  });
  const out: ExportsFile = {
    version: EXPORTS_VERSION,
    source: ks.source,
    perCpuEndBytes: ks.perCpuEndBytes,
    exports: [...ks.exports()],
  };
  mkdirSync(indexDir, { recursive: true });
  writeFileSync(cache, JSON.stringify(out));
  return ks;
}

/** Module names in dependency order (depends= first), restricted to `names` and their deps. */
export function dependencyOrder(index: DatasetIndex, names?: readonly string[]): string[] {
  const byName = new Map(index.modules.map((m) => [m.name, m]));
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = (n: string): void => {
    if (seen.has(n)) return;
    seen.add(n);
    const m = byName.get(n);
    if (!m) return;
    for (const d of m.depends) visit(d);
    order.push(n);
  };
  const roots = names ?? [...byName.keys()].sort();
  for (const n of roots) {
    if (!byName.has(n)) throw new DatasetError(`no module named '${n}' in ${index.root}`);
    visit(n);
  }
  return order;
}
