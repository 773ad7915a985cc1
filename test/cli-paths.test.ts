/**
 * Path options are checked before any work (issue 13 item 10): a path under /proc or /sys (where
 * Node's recursive mkdir never returns, or fails after the run), a file where a directory is
 * needed and the reverse, a directory that cannot be written, an input that does not exist: each
 * is exit 2 with one plain line, at once. And no user mistake ends as "internal error": an error
 * the system gives (ENOENT, EACCES...) is printed as what it is.
 */
import assert from 'node:assert/strict';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createCaptureIo, UsageError } from '../src/cli/io.js';
import { checkInputDir, checkInputFile, checkOutputDir, checkOutputFile } from '../src/cli/paths.js';
import { EXIT_FAILED, reportError } from '../src/cli/program.js';
import { assertUsageError, execmemAsync } from './cli-helpers.js';

let scratch = '';
let file = '';

describe('path checks', () => {
  before(() => {
    scratch = mkdtempSync(join(tmpdir(), 'execmem-paths-'));
    file = join(scratch, 'a-file');
    writeFileSync(file, 'x');
  });
  after(() => rmSync(scratch, { recursive: true, force: true }));

  it('output directories: /proc and /sys refused (also through a symlink), files refused', () => {
    const refuse = (given: string, pattern: RegExp) =>
      assert.throws(
        () => checkOutputDir('--out', given),
        (e: unknown) => e instanceof UsageError && pattern.test(e.message),
        given,
      );
    refuse('/proc/nope', /^--out \/proc\/nope: \/proc is a kernel pseudo-filesystem/);
    refuse('/proc', /\/proc is a kernel pseudo-filesystem/);
    refuse('/sys/kernel/x', /\/sys is a kernel pseudo-filesystem/);
    const link = join(scratch, 'to-proc');
    symlinkSync('/proc', link);
    refuse(join(link, 'x'), /\/proc is a kernel pseudo-filesystem/);
    refuse(file, /exists and is not a directory/);
    refuse(join(file, 'sub'), /a-file exists and is not a directory/);
    refuse('', /the path is empty/);
    assert.equal(checkOutputDir('--out', join(scratch, 'new', 'deeper')), join(scratch, 'new', 'deeper'));
    assert.equal(existsSync(join(scratch, 'new')), false, 'a check creates nothing');
    assert.equal(checkOutputDir('--out', scratch), scratch);
  });

  it('output files, input directories and input files', () => {
    assert.throws(() => checkOutputFile('--out', scratch), /is a directory, not a file/);
    assert.throws(
      () => checkOutputFile('--out', '/proc/self/x.json'),
      /\/proc is a kernel pseudo-filesystem/,
    );
    assert.equal(checkOutputFile('--out', join(scratch, 'd', 't.json')), join(scratch, 'd', 't.json'));
    assert.throws(() => checkInputDir('--dir', join(scratch, 'nosuch')), /no such directory/);
    assert.throws(() => checkInputDir('--dir', file), /is a file, not a directory/);
    assert.equal(checkInputDir('--dir', scratch), scratch);
    assert.throws(() => checkInputFile('--trace', scratch), /is a directory, not a file/);
    assert.throws(() => checkInputFile('--trace', join(scratch, 'nosuch')), /no such file/);
    assert.equal(checkInputFile('--trace', file), file);
  });

  it('a directory that cannot be written is refused (not as root, who may write anywhere)', (t) => {
    if (process.getuid?.() === 0) {
      t.skip('root passes every permission check');
      return;
    }
    const ro = join(scratch, 'read-only');
    mkdirSync(ro, { mode: 0o555 });
    assert.throws(
      () => checkOutputDir('--out', join(ro, 'x')),
      /cannot create it, .*read-only is not writable/,
    );
    assert.throws(() => checkOutputDir('--out', ro), /the directory is not writable/);
  });

  it('the commands refuse bad paths with exit 2 before any work, /proc at once', async () => {
    const started = Date.now();
    const cases: [string[], RegExp][] = [
      [['report', '--out', '/proc/nope'], /--out \/proc\/nope: \/proc is a kernel pseudo-filesystem/],
      [['report', '--out', '/sys/nope'], /\/sys is a kernel pseudo-filesystem/],
      [['report', '--out', file], /exists and is not a directory/],
      [['dataset', 'table', '--out', scratch], /is a directory, not a file/],
      [['dataset', 'table', '--out', '/proc/x/t.json'], /\/proc is a kernel pseudo-filesystem/],
      [['dataset', 'fetch', '--cache-dir', '/proc/x'], /--cache-dir \/proc\/x: \/proc/],
      [['dataset', 'clean', '--cache-dir', file], /exists and is not a directory/],
      [['modules', 'load', '--all', '--dir', file], /--dir .*: is a file, not a directory/],
      [['modules', 'load', '--all', '--cache-dir', '/sys/x'], /\/sys is a kernel pseudo-filesystem/],
    ];
    const runs = await Promise.all(cases.map(([args]) => execmemAsync(args, 30_000)));
    runs.forEach((r, i) => {
      assertUsageError(r, cases[i][1]);
    });
    assert.ok(Date.now() - started < 30_000, 'no check waited for the work');
    assert.ok(!existsSync('/proc/nope'));
  });

  it('an error from the system is printed as such (exit 1), never "internal error"', () => {
    const io = createCaptureIo();
    let error: unknown;
    try {
      readFileSync(join(scratch, 'nosuch.json'));
    } catch (e) {
      error = e;
    }
    assert.equal(reportError(error, io), EXIT_FAILED);
    assert.equal(io.stderr.length, 1);
    assert.match(io.stderr[0], /^error: ENOENT: no such file or directory, open '.*nosuch\.json'\n$/);
    // A bug (a TypeError) is still called one.
    const bug = createCaptureIo();
    reportError(new TypeError('x is undefined'), bug);
    assert.match(bug.stderr[0], /^internal error \(TypeError\)/);
  });
});
