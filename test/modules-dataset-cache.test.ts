/**
 * Corrupt dataset cache files are refused with the file and the field named (issue 16 item 9).
 *
 * Every JSON file the dataset layer reads back is checked against its schema (validate.ts):
 * index.json, kernel-exports.json and the derived module table. Each corrupt variant must give
 * a DatasetError (ModuleTableError for the table) whose message and `file` / `field` name the
 * problem, through the API and through the CLI, where `dataset fetch --dir` and `modules load`
 * both exit 1 with one "error:" line, never "internal error". The tree is built from the module
 * elf-build.ts assembles, so this runs without gcc and without the Debian download.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  SAMPLE_KERNEL_EXPORTS,
  SAMPLE_PERCPU_END_BYTES,
  sampleModuleElf,
} from '../src/consumers/modules/elf-build.js';
import {
  buildIndex,
  DatasetError,
  datasetKernelSymbols,
  openDataset,
} from '../src/workloads/dataset/dataset.js';
import {
  buildModuleTable,
  ModuleTableError,
  readModuleTable,
  writeModuleTable,
} from '../src/workloads/dataset/table.js';
import { execmemAsync, type Run } from './cli-helpers.js';

const RELEASE = '6.1.0-cache-test';

let tree = '';
let goodIndex = '';
let goodExports = '';

function indexFile(): string {
  return join(tree, 'index.json');
}
function exportsFile(): string {
  return join(tree, 'kernel-exports.json');
}

/** Replace a cache file with `edit` applied to its parsed good version (or raw text). */
function corrupt(file: string, good: string, edit: ((j: Record<string, unknown>) => void) | string): void {
  if (typeof edit === 'string') {
    writeFileSync(file, edit);
    return;
  }
  const j = JSON.parse(good);
  edit(j);
  writeFileSync(file, JSON.stringify(j));
}

function restore(): void {
  writeFileSync(indexFile(), goodIndex);
  writeFileSync(exportsFile(), goodExports);
}

function expectDatasetError(
  fn: () => unknown,
  file: string,
  field: string | null,
  pattern: RegExp,
  what = String(field),
): void {
  assert.throws(
    fn,
    (e: unknown) => {
      assert.ok(e instanceof Error, `${what}: an Error`);
      assert.ok(e instanceof DatasetError, `a DatasetError, got ${String(e)}`);
      assert.equal(e.file, file);
      assert.equal(e.field, field);
      assert.ok(e.message.startsWith(`${file}: `), `names the file: ${e.message}`);
      if (field !== null) assert.ok(e.message.includes(`field '${field}'`), `names the field: ${e.message}`);
      assert.match(e.message, pattern, what);
      return true;
    },
    what,
  );
}

/** exit 1, one "error:" line naming the file (and field), no stack, no "internal error". */
function assertNamedFailure(r: Run, file: string, field: string | null): void {
  assert.equal(r.status, 1, `exit 1 expected, got ${r.status}: ${r.stderr}`);
  const lines = r.stderr.split('\n').filter((l) => l.startsWith('error') || l.startsWith('internal'));
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /^error: /);
  assert.ok(lines[0].includes(file), `names ${file}: ${lines[0]}`);
  if (field !== null) assert.ok(lines[0].includes(`'${field}'`), `names ${field}: ${lines[0]}`);
  assert.doesNotMatch(r.stderr, /internal error|\n\s+at /);
}

describe('corrupt dataset cache files', () => {
  before(() => {
    tree = mkdtempSync(join(tmpdir(), 'execmem-cache-'));
    const kdir = join(tree, 'lib', 'modules', RELEASE, 'kernel', 'test');
    mkdirSync(kdir, { recursive: true });
    writeFileSync(join(kdir, 'alpha.ko'), sampleModuleElf('alpha'));
    buildIndex(tree, 'test-package');
    goodIndex = readFileSync(indexFile(), 'utf8');
    // No System.map and no vmlinuz: the exports come from the cache file alone.
    goodExports = JSON.stringify({
      version: 1,
      source: 'test',
      perCpuEndBytes: SAMPLE_PERCPU_END_BYTES,
      exports: SAMPLE_KERNEL_EXPORTS,
    });
    writeFileSync(exportsFile(), goodExports);
  });
  after(() => rmSync(tree, { recursive: true, force: true }));

  it('the good files open and load (the baseline every variant departs from)', () => {
    restore();
    const index = openDataset(tree);
    assert.equal(index.modules.length, 1);
    assert.equal(datasetKernelSymbols(index).count, 2);
  });

  it('index.json: each corrupt variant names the file and the field', () => {
    const f = indexFile();
    // biome-ignore format: one case per line
    const cases: [string, ((j: Record<string, unknown>) => void) | string, string | null, RegExp][] = [
      ['invalid JSON', '{"version": 1, "root": ', null, /invalid JSON/],
      ['no modules', (j) => delete j.modules, 'modules', /expected an array, found nothing \(missing\)/],
      ['modules not an array', (j) => (j.modules = {}), 'modules', /found an object/],
      ['negative size', (j) => ((j.modules as { fileBytes: number }[])[0].fileBytes = -1), 'modules[0].fileBytes', /-1/],
      ['path escaping the tree', (j) => ((j.modules as { path: string }[])[0].path = '../../etc/x.ko'), 'modules[0].path', /relative \.ko path/],
      ['depends not names', (j) => ((j.modules as { depends: unknown }[])[0].depends = [7]), 'modules[0].depends[0]', /module name/],
      ['duplicate module', (j) => (j.modules = [...(j.modules as unknown[]), ...(j.modules as unknown[])]), 'modules[1]', /appears twice/],
      ['version of the wrong type', (j) => (j.version = '1'), 'version', /integer/],
      ['kernelRelease missing', (j) => delete j.kernelRelease, 'kernelRelease', /kernel release/],
      ['vmlinuz a number', (j) => (j.vmlinuz = 5), 'vmlinuz', /string/],
      ['top level an array', '[]', '(top level)', /an object/],
    ];
    for (const [what, edit, field, pattern] of cases) {
      restore();
      corrupt(f, goodIndex, edit);
      expectDatasetError(() => openDataset(tree), f, field, pattern, what);
    }
    // Another version, or another root (the tree moved), is rebuilt, not refused.
    for (const edit of [
      (j: Record<string, unknown>) => (j.version = 0),
      (j: Record<string, unknown>) => (j.root = '/elsewhere'),
    ]) {
      restore();
      corrupt(f, goodIndex, edit);
      assert.equal(openDataset(tree).modules.length, 1);
      const rebuilt = JSON.parse(readFileSync(f, 'utf8'));
      assert.deepEqual([rebuilt.root, rebuilt.modules], [tree, JSON.parse(goodIndex).modules], 'rewritten');
    }
    restore();
  });

  it('kernel-exports.json: each corrupt variant names the file and the field', () => {
    const f = exportsFile();
    // biome-ignore format: one case per line
    const cases: [((j: Record<string, unknown>) => void) | string, string | null, RegExp][] = [
      ['not json at all', null, /invalid JSON/],
      [(j) => (j.perCpuEndBytes = -5), 'perCpuEndBytes', /integer in \[0, 2147483647\], found -5/],
      [(j) => (j.perCpuEndBytes = 1.5), 'perCpuEndBytes', /1\.5/],
      [(j) => delete j.exports, 'exports', /array/],
      [(j) => (j.exports = []), 'exports', /at least 1/],
      [(j) => ((j.exports as { crc: number }[])[0].crc = 2 ** 32), 'exports[0].crc', /integer/],
      [(j) => ((j.exports as { value: unknown }[])[1].value = 'x'), 'exports[1].value', /integer/],
      [(j) => ((j.exports as { name: string }[])[1].name = 'kernel_func'), 'exports[1]', /appears twice/],
      [(j) => ((j.exports as { gplOnly: unknown }[])[0].gplOnly = 1), 'exports[0].gplOnly', /true or false/],
      [(j) => (j.version = null), 'version', /integer/],
    ];
    for (const [edit, field, pattern] of cases) {
      restore();
      corrupt(f, goodExports, edit);
      const index = openDataset(tree);
      expectDatasetError(() => datasetKernelSymbols(index), f, field, pattern);
    }
    restore();
  });

  it('the module table: version, memory types, byte counts, JSON', () => {
    const f = join(tree, 'table.json');
    writeModuleTable(f, buildModuleTable(openDataset(tree)));
    const good = readFileSync(f, 'utf8');
    assert.equal(readModuleTable(f).modules.length, 1);
    // biome-ignore format: one case per line
    const cases: [((j: Record<string, unknown>) => void) | string, string | null, RegExp][] = [
      ['{', null, /invalid JSON/],
      [(j) => (j.version = 2), 'version', /table version 2, want 1/],
      [(j) => delete j.memTypes, 'memTypes', /array/],
      [(j) => (j.memTypes = ['text', 'data', 'rodata', 'ro_after_init', 'init_text', 'init_rodata', 'init_data']), 'memTypes', /exactly text,data/],
      [(j) => ((j.modules as { bytes: number[] }[])[0].bytes = [1, 2]), 'modules[0].bytes', /7 byte counts/],
      [(j) => ((j.modules as { bytes: number[] }[])[0].bytes[3] = -4), 'modules[0].bytes[3]', /-4/],
      [(j) => (j.modules = []), 'modules', /at least 1/],
    ];
    for (const [edit, field, pattern] of cases) {
      corrupt(f, good, edit);
      assert.throws(
        () => readModuleTable(f),
        (e: unknown) =>
          e instanceof ModuleTableError && e.file === f && e.field === field && pattern.test(e.message),
        String(field),
      );
    }
  });

  it('CLI: dataset fetch --dir and modules load exit 1 naming the file and field', async () => {
    const variants: [string, string, string, string | null][] = [
      [indexFile(), goodIndex, JSON.stringify({ ...JSON.parse(goodIndex), modules: undefined }), 'modules'],
      [
        exportsFile(),
        goodExports,
        JSON.stringify({ ...JSON.parse(goodExports), perCpuEndBytes: -5 }),
        'perCpuEndBytes',
      ],
      [indexFile(), goodIndex, '{ not json', null],
    ];
    for (const [file, , content, field] of variants) {
      restore();
      writeFileSync(file, content);
      // --cache-dir tree: the tree is a cache root, so its own index.json is the one used (a tree
      // outside the cache is only read; its index is kept in the cache, treeIndexDir).
      const [fetch, load] = await Promise.all([
        execmemAsync(['dataset', 'fetch', '--dir', tree, '--cache-dir', tree]),
        execmemAsync(['modules', 'load', '--all', '--dir', tree, '--cache-dir', tree]),
      ]);
      assertNamedFailure(fetch, file, field);
      assertNamedFailure(load, file, field);
    }
    restore();
    // A module file the index lists but the tree lost: named, exit 1.
    const ko = join(tree, JSON.parse(goodIndex).modules[0].path);
    const bytes = readFileSync(ko);
    unlinkSync(ko);
    try {
      assertNamedFailure(
        await execmemAsync(['modules', 'load', '--all', '--dir', tree, '--cache-dir', tree]),
        ko,
        null,
      );
    } finally {
      writeFileSync(ko, bytes);
    }
    const ok = await execmemAsync(['--json', 'modules', 'load', '--all', '--dir', tree, '--cache-dir', tree]);
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(JSON.parse(ok.stdout).loaded, 1);
  });
});
