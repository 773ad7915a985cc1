/**
 * CliIo: output goes where it should, progress bars only on an interactive stderr and never with
 * --json or --quiet, and the error classes carry their exit codes.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { CliFailure, createCaptureIo, createConsoleIo, UsageError } from '../src/cli/io.js';

class Sink extends Writable {
  text = '';
  isTTY: boolean;
  columns = 100;
  constructor(tty: boolean) {
    super();
    this.isTTY = tty;
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
  // cli-progress moves the cursor on TTYs.
  cursorTo(): boolean {
    return true;
  }
  clearLine(): boolean {
    return true;
  }
  moveCursor(): boolean {
    return true;
  }
}

function consoleIo(tty: boolean, opts: { json?: boolean; quiet?: boolean } = {}) {
  const stdout = new Sink(false);
  const stderr = new Sink(tty);
  const io = createConsoleIo({ json: opts.json ?? false, quiet: opts.quiet ?? false, stdout, stderr });
  return { io, stdout, stderr };
}

function runBar(io: ReturnType<typeof createConsoleIo>): void {
  const bar = io.progress('work', 3);
  bar.tick();
  bar.tick(2);
  bar.done();
  bar.done(); // idempotent
}

test('out and err add a newline and go to their own streams', () => {
  const { io, stdout, stderr } = consoleIo(false);
  io.out('a');
  io.out('b\n');
  io.err('c');
  assert.equal(stdout.text, 'a\nb\n');
  assert.equal(stderr.text, 'c\n');
});

test('progress is drawn on an interactive stderr only', () => {
  const tty = consoleIo(true);
  assert.equal(tty.io.quiet, false);
  runBar(tty.io);
  assert.match(tty.stderr.text, /work/);
  assert.equal(tty.stdout.text, '', 'never on stdout');

  const pipe = consoleIo(false);
  assert.equal(pipe.io.quiet, true);
  runBar(pipe.io);
  assert.equal(pipe.stderr.text, '');
});

test('--json and --quiet silence progress even on a terminal', () => {
  for (const opts of [{ json: true }, { quiet: true }]) {
    const { io, stderr } = consoleIo(true, opts);
    runBar(io);
    assert.equal(stderr.text, '', JSON.stringify(opts));
  }
  // Flags set after parsing (as main.ts does) take effect too.
  const late = consoleIo(true);
  late.io.json = true;
  runBar(late.io);
  assert.equal(late.stderr.text, '');
});

test('capture io keeps what was written', () => {
  const io = createCaptureIo({ json: true });
  io.out('x');
  io.err('y');
  io.progress('p', 5).tick();
  assert.deepEqual(io.stdout, ['x\n']);
  assert.deepEqual(io.stderr, ['y\n']);
  assert.deepEqual(io.progressLabels, ['p']);
  assert.equal(io.json, true);
});

test('error classes carry their exit codes', () => {
  assert.equal(new UsageError('u').exitCode, 2);
  assert.equal(new CliFailure('f').exitCode, 1);
  assert.equal(new UsageError('u').name, 'UsageError');
});
