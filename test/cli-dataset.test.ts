/**
 * The dataset commands tell the truth about the cache (issue 13 item 14): sizes and versions
 * measured from the files, `dataset clean` removes exactly what fetch kept, `modules load` names
 * the package it loaded and says when it is not the shipped table's kernel, options are checked
 * before the dataset is looked at, and a tree passed with --dir is never written to.
 *
 * Runs without the Debian download and without gcc: the package trees are built here from the
 * module elf-build.ts assembles and a System.map naming the two symbols it imports.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { treeBytes } from '../src/cli/dataset-cache.js';
import { sampleModuleElf } from '../src/consumers/modules/elf-build.js';
import { buildIndex } from '../src/workloads/dataset/dataset.js';
import { readModuleTable } from '../src/workloads/dataset/table.js';
import { DEFAULT_MODULE_TABLE } from '../src/workloads/dataset/workload.js';
import { assertUsageError, execmemAsync } from './cli-helpers.js';
import { FAKE_SYSTEM_MAP } from './helpers/toolchain.js';

const RELEASE = '9.9.9-test';
const PACKAGE = `linux-image-${RELEASE}`;
const VERSION = '9.9.9-1';

/** An extracted linux-image tree with a module and a System.map (the sample exports). */
function makeTree(root: string): void {
  const kdir = join(root, 'lib', 'modules', RELEASE, 'kernel', 'test');
  mkdirSync(kdir, { recursive: true });
  writeFileSync(join(kdir, 'alpha.ko'), sampleModuleElf('alpha'));
  mkdirSync(join(root, 'boot'));
  writeFileSync(join(root, 'boot', `System.map-${RELEASE}`), FAKE_SYSTEM_MAP);
}

/** Every file under `dir` with its size and modification time: what "untouched" means. */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else {
        const st = statSync(p);
        out.push(`${relative(dir, p)} ${st.size} ${st.mtimeMs}`);
      }
    }
  };
  walk(dir);
  return out.sort();
}

let scratch = '';
let tree = '';
/** A cache as `dataset fetch` leaves it: the .deb, the extracted package with its index. */
let cache = '';

describe('dataset commands against a built package', () => {
  before(() => {
    scratch = mkdtempSync(join(tmpdir(), 'execmem-cli-dataset-'));
    tree = join(scratch, 'tree');
    makeTree(tree);
    cache = join(scratch, 'cache');
    const root = join(cache, 'debian', PACKAGE);
    makeTree(root);
    buildIndex(root, PACKAGE);
    mkdirSync(join(cache, 'downloads'));
    writeFileSync(join(cache, 'downloads', `${PACKAGE}_${VERSION}_amd64.deb`), Buffer.alloc(12_345));
  });
  after(() => rmSync(scratch, { recursive: true, force: true }));

  it('a --dir tree is only read: its index is kept in the cache', async () => {
    const before = snapshot(tree);
    const own = join(scratch, 'own-cache');
    const runs = await Promise.all([
      execmemAsync(['dataset', 'fetch', '--dir', tree, '--cache-dir', own]),
      execmemAsync(['--json', 'modules', 'load', '--all', '--dir', tree, '--cache-dir', own]),
    ]);
    for (const r of runs) assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(runs[1].stdout).loaded, 1);
    assert.deepEqual(snapshot(tree), before, 'nothing written into the --dir tree');
    const trees = readdirSync(join(own, 'trees'));
    assert.equal(trees.length, 1);
    assert.ok(statSync(join(own, 'trees', trees[0], 'index.json')).size > 0, 'the index is in the cache');
    const info = await execmemAsync(['--json', 'dataset', 'info', '--dir', tree, '--cache-dir', own]);
    assert.equal(info.status, 0, info.stderr);
    assert.equal(JSON.parse(info.stdout).indexDir, join(own, 'trees', trees[0]));
    assert.deepEqual(snapshot(tree), before);
  });

  it('info: package, version from the kept .deb, sizes measured on disk', async () => {
    const r = await execmemAsync(['--json', 'dataset', 'info', '--cache-dir', cache]);
    assert.equal(r.status, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.equal(doc.packageName, PACKAGE);
    assert.equal(doc.version, VERSION);
    assert.equal(doc.modules, 1);
    assert.equal(doc.deb.bytes, 12_345);
    assert.equal(doc.treeBytes, treeBytes(join(cache, 'debian', PACKAGE)));
    const text = await execmemAsync(['dataset', 'info', '--cache-dir', cache]);
    assert.match(text.stdout, new RegExp(`^${PACKAGE} ${VERSION} \\(kernel ${RELEASE}\\): 1 modules\\n`));
    assert.match(text.stdout, /download: 0\.0 MB \(12,345 bytes\), kept as .*\.deb\n/);
  });

  it('modules load names the package and says it is not the shipped table kernel', async () => {
    const table = readModuleTable(DEFAULT_MODULE_TABLE);
    const r = await execmemAsync(['--json', 'modules', 'load', '--all', '--cache-dir', cache]);
    assert.equal(r.status, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.deepEqual(
      { packageName: doc.dataset.packageName, version: doc.dataset.version },
      { packageName: PACKAGE, version: VERSION },
    );
    assert.equal(doc.shippedTable.kernelRelease, table.kernelRelease);
    assert.ok(doc.tableNote.includes(`(${PACKAGE} ${VERSION}) is not the kernel of the shipped table`));
    const text = await execmemAsync(['modules', 'load', 'alpha', '--cache-dir', cache]);
    assert.match(text.stdout, new RegExp(`^package ${PACKAGE} ${VERSION} from `));
    assert.match(text.stdout, /\nnote: the package loaded here .* data\/debian-modules\.json/);
  });

  it('options are checked before the dataset: a bad policy is exit 2 even with no dataset', async () => {
    const empty = join(scratch, 'empty-cache');
    assertUsageError(
      await execmemAsync(['modules', 'load', 'xfs', '--policy', 'nosuch', '--cache-dir', empty]),
      /unknown policy 'nosuch'/,
    );
    const none = await execmemAsync(['modules', 'load', 'xfs', '--cache-dir', empty]);
    assert.equal(none.status, 1);
    assert.match(none.stderr, /^error: no dataset in .*: run 'execmem dataset fetch' first/);
    assertUsageError(
      await execmemAsync(['modules', 'load', '--all', '--dir', join(scratch, 'nosuch')]),
      /--dir .*nosuch: no such directory/,
    );
  });

  it('clean removes what fetch kept, and nothing else', async () => {
    const c = join(scratch, 'clean-cache');
    mkdirSync(join(c, 'downloads'), { recursive: true });
    writeFileSync(join(c, 'downloads', 'x.deb'), Buffer.alloc(1000));
    mkdirSync(join(c, 'debian', 'pkg'), { recursive: true });
    writeFileSync(join(c, 'debian', 'pkg', 'index.json'), Buffer.alloc(200));
    mkdirSync(join(c, 'trees', 't'), { recursive: true });
    writeFileSync(join(c, 'trees', 't', 'index.json'), Buffer.alloc(30));
    writeFileSync(join(c, 'notes.txt'), 'mine');
    const r = await execmemAsync(['--json', 'dataset', 'clean', '--cache-dir', c]);
    assert.equal(r.status, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.equal(doc.freedBytes, 1230);
    assert.deepEqual(
      doc.removed.map((x: { path: string }) => relative(c, x.path)),
      ['downloads', 'debian', 'trees'],
    );
    assert.deepEqual(readdirSync(c), ['notes.txt'], 'only what fetch kept is removed');
    const again = await execmemAsync(['dataset', 'clean', '--cache-dir', c]);
    assert.equal(again.stdout, `nothing to remove in ${c}\n`);
  });
});
