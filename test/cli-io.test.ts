/**
 * CliIo: output goes where it should, progress is a bar on an interactive stderr and a line per
 * finished step elsewhere, never with --json or --quiet; JSON is printed one way; an
 * interruption restores the terminal and says what finished; the error classes carry their exit
 * codes.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { CliFailure, createCaptureIo, createConsoleIo, toJson, UsageError } from '../src/cli/io.js';
import { ProgressView, TERMINAL_RESTORE } from '../src/cli/progress.js';

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

test('progress: a bar on an interactive stderr, a line per finished step elsewhere', () => {
  const tty = consoleIo(true);
  assert.equal(tty.io.quiet, false);
  runBar(tty.io);
  assert.match(tty.stderr.text, /work/);
  assert.ok(tty.stderr.text.includes('\x1b[?25l'), 'the bar hides the cursor while it draws');
  assert.ok(tty.stderr.text.includes('\x1b[?25h'), 'and shows it again when done');
  assert.equal(tty.stdout.text, '', 'never on stdout');

  const pipe = consoleIo(false);
  assert.equal(pipe.io.quiet, false, 'a pipe is not quiet: it gets lines');
  runBar(pipe.io);
  assert.match(pipe.stderr.text, /^work: done, 3\/3 in \d+\.\d s\n$/);
  assert.ok(
    !pipe.stderr.text.includes('\x1b') && !pipe.stderr.text.includes('\r'),
    'no control sequences in a log',
  );

  // A task of steps: one line per finished step, then the summary line.
  const steps = consoleIo(false);
  const bar = steps.io.progress('report', 3, { steps: true });
  bar.tick(1, 'mixed/execmem');
  bar.tick(2);
  bar.done();
  assert.deepEqual(steps.stderr.text.trimEnd().split('\n').slice(0, 2), [
    'report: 1/3 mixed/execmem',
    'report: 3/3',
  ]);
  assert.match(steps.stderr.text, /report: done, 3\/3 in /);
});

test('outJson prints every document the same way (2-space indent, final newline, bigints as strings)', () => {
  const { io, stdout } = consoleIo(false);
  io.outJson({ a: 1, b: [true], va: 0xffffffffc0000000n });
  assert.equal(stdout.text, '{\n  "a": 1,\n  "b": [\n    true\n  ],\n  "va": "18446744072635809792"\n}\n');
  assert.equal(toJson(undefined), 'null\n');
  const capture = createCaptureIo();
  capture.outJson([1]);
  assert.deepEqual(capture.stdout, ['[\n  1\n]\n']);
});

test('interrupt: bars stop, the terminal is restored, what finished is listed', () => {
  const sink = new Sink(true);
  let now = 0;
  const view = new ProgressView(sink, true, () => now);
  view.start(1, 'module_alloc (1/2)', 10);
  view.tick(1, 10);
  now = 1500;
  view.done(1);
  view.start(2, 'execmem (2/2)', 10);
  view.tick(2, 4);
  const lines = view.interrupt();
  assert.ok(
    sink.text.endsWith(`\r${TERMINAL_RESTORE}${lines.join('\n')}\n`),
    JSON.stringify(sink.text.slice(-300)),
  );
  assert.deepEqual(lines, [
    'interrupted (Ctrl-C)',
    'finished:',
    '  module_alloc (1/2): done, 10/10 in 1.5 s',
    'not finished: execmem (2/2) at 4/10',
  ]);
  // Off a terminal nothing but the lines.
  const log = new Sink(false);
  const quiet = new ProgressView(log, false);
  assert.deepEqual(quiet.interrupt(), ['interrupted (Ctrl-C)', 'finished: nothing yet']);
  assert.equal(log.text, 'interrupted (Ctrl-C)\nfinished: nothing yet\n');
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
