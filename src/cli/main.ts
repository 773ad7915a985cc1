#!/usr/bin/env node
/**
 * Entry point of the `execmem` command (package.json "bin").
 *
 * Why it runs the command on a worker thread (worker.ts) and keeps only the terminal here: the
 * commands compute synchronously, and a SIGINT handler on a busy thread would run only after the
 * run. This thread stays idle: it replays the worker's output and progress in order, and on
 * Ctrl-C it stops the bars, restores the terminal (cursor, line wrapping), prints what finished
 * and exits 130 (128 + SIGINT, what a shell reports for a command Ctrl-C stopped). Everything
 * testable lives in program.ts (build, parse, error -> exit code). process.exitCode is set rather
 * than process.exit called, so pending stdout writes (a large --json document into a pipe) are
 * not cut off.
 */
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { streamSink } from './io.js';
import type { WorkerInput, WorkerMessage } from './worker.js';

/** The exit code of a run stopped by SIGINT (128 + signal 2). */
export const EXIT_INTERRUPTED = 130;

function packageVersion(): string {
  // dist/src/cli/main.js -> ../../../package.json; the source tree has the same depth.
  try {
    const url = new URL('../../../package.json', import.meta.url);
    const pkg = JSON.parse(readFileSync(url, 'utf8')) as { version?: string };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

// `execmem ... | head` closes the pipe early: that is the reader's choice, not an error.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw error;
  });
}

const sink = streamSink(process.stdout, process.stderr);
const input: WorkerInput = { argv: process.argv.slice(2), version: packageVersion() };
const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: input });
let exitCode: number | null = null;

process.on('SIGINT', () => {
  sink.view.interrupt();
  process.exit(EXIT_INTERRUPTED);
});

worker.on('message', (m: WorkerMessage) => {
  switch (m.kind) {
    case 'out':
      sink.out(m.text);
      break;
    case 'err':
      sink.err(m.text);
      break;
    case 'start':
      sink.start(m.id, m.label, m.total, m.options);
      break;
    case 'tick':
      sink.tick(m.id, m.n, m.what);
      break;
    case 'done':
      sink.done(m.id);
      break;
    case 'exit':
      exitCode = m.code;
      process.exitCode = m.code;
      break;
  }
});
worker.on('error', (error) => {
  // program.ts catches every error of a command; reaching here is a bug in execmem itself.
  process.stderr.write(`internal error (${error.name}): ${error.message.split('\n')[0]}\n`);
  if (process.env.EXECMEM_DEBUG === '1' && error.stack) process.stderr.write(`${error.stack}\n`);
  process.exitCode = 1;
});
worker.on('exit', () => {
  if (exitCode === null && process.exitCode === undefined) process.exitCode = 1;
});
