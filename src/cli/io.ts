/**
 * The contract between the `execmem` command and its subcommand modules: where output goes,
 * how progress is shown, how JSON is printed, and which errors mean "bad usage" (exit 2) versus
 * "failed" (exit 1).
 *
 * Why an interface rather than console/process directly: subcommands are written by several
 * engineers; passing one `CliIo` keeps them from each inventing their own flags for
 * --json/--quiet, keeps progress on stderr only (so `execmem compare --json | jq` is never
 * corrupted), prints every JSON document the same way (`outJson`), and lets tests capture output
 * in memory. The command line itself runs the commands on a worker thread (worker.ts) whose
 * `CliIo` forwards everything to the main thread, which owns the terminal (main.ts): so Ctrl-C
 * is answered at once even while a command computes synchronously.
 * Every command module exports `register(program: Command, io: CliIo): void`.
 *
 * For command authors: `--json` and `--quiet` are global options owned by program.ts (they work
 * before or after the subcommand name). Do not declare them again; read `io.json` / `io.quiet`
 * inside the action (they are set after parsing, so reading them at register time is wrong).
 * Print a JSON document with `io.outJson(value)`, never with JSON.stringify yourself. Throw
 * `UsageError` for bad input and `CliFailure` when the work cannot be done.
 *
 * Exit codes (issue 7): 0 ok, 1 the work failed (`CliFailure` or any other error), 2 the user
 * typed something wrong (`UsageError`, commander's own parse errors), 130 interrupted (SIGINT,
 * main.ts). Errors print one line on stderr, never a stack trace.
 */
import { ProgressView, type TaskOptions } from './progress.js';

export type { TaskOptions } from './progress.js';

export interface CliProgress {
  /** `n` more units done; `what` names the finished step (tasks created with `steps: true`). */
  tick(n?: number, what?: string): void;
  done(): void;
}

export interface CliIo {
  /** Data or human text for the user: stdout. A newline is appended if missing. */
  out(text: string): void;
  /** One JSON document on stdout, formatted like every other (see `toJson`). */
  outJson(value: unknown): void;
  /** Diagnostics and notes: stderr. A newline is appended if missing. */
  err(text: string): void;
  /**
   * Progress of a task of `total` units on stderr: a bar on a terminal, a line per finished step
   * elsewhere (progress.ts); nothing at all with --quiet or --json.
   */
  progress(label: string, total: number, options?: TaskOptions): CliProgress;
  /** --json was given: print exactly one JSON document on stdout. Set by program.ts after parsing. */
  json: boolean;
  /** --quiet (or --json) was given: no progress output. */
  quiet: boolean;
}

/** The user's mistake (unknown workload, bad number...): exit 2, one line on stderr. */
export class UsageError extends Error {
  override name = 'UsageError';
  readonly exitCode = 2;
}

/** The work could not be done (subsystem missing, dataset absent...): exit 1, one line on stderr. */
export class CliFailure extends Error {
  override name = 'CliFailure';
  readonly exitCode = 1;
}

/**
 * The one JSON format of every command: two-space indentation, a final newline, bigints as
 * decimal strings (JSON has no 64-bit integers; kernel addresses are bigints in the library and
 * are printed as hex strings by the commands that show them).
 */
export function toJson(value: unknown): string {
  const text = JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2);
  return `${text ?? 'null'}\n`;
}

const progressSilent: CliProgress = { tick() {}, done() {} };

export interface ConsoleIoOptions {
  json: boolean;
  quiet: boolean;
  /** Defaults to process streams; tests and embedders may pass their own sinks. */
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WriteStream | NodeJS.WritableStream;
}

function withNewline(text: string): string {
  return text.endsWith('\n') ? text : `${text}\n`;
}

/** Whether a stream is an interactive terminal (bars only go to terminals; elsewhere lines). */
export function isTty(stream: NodeJS.WritableStream): boolean {
  return (stream as NodeJS.WriteStream).isTTY === true;
}

/**
 * The sinks a `CliIo` writes to. The console io writes to streams in this thread; the worker io
 * (worker.ts) posts the same calls to the main thread, which replays them on its streams.
 */
export interface IoSink {
  out(text: string): void;
  err(text: string): void;
  start(id: number, label: string, total: number, options: TaskOptions): void;
  tick(id: number, n: number, what?: string): void;
  done(id: number): void;
}

/** A `CliIo` over a sink: the --json/--quiet rules and task numbering live here, once. */
export function createSinkIo(sink: IoSink, options: { json: boolean; quiet: boolean }): CliIo {
  let nextTask = 1;
  const io: CliIo = {
    json: options.json,
    quiet: options.quiet || options.json,
    out(text) {
      sink.out(withNewline(text));
    },
    outJson(value) {
      sink.out(toJson(value));
    },
    err(text) {
      sink.err(withNewline(text));
    },
    progress(label, total, taskOptions = {}) {
      if (io.quiet || io.json || total <= 0) return progressSilent;
      const id = nextTask++;
      sink.start(id, label, total, taskOptions);
      let finished = false;
      return {
        tick(n = 1, what) {
          if (!finished && n > 0) sink.tick(id, n, what);
        },
        done() {
          if (finished) return;
          finished = true;
          sink.done(id);
        },
      };
    },
  };
  return io;
}

/** A sink drawing progress with a ProgressView on `stderr` (the main thread's). */
export function streamSink(
  stdout: NodeJS.WritableStream,
  stderr: NodeJS.WritableStream,
  view = new ProgressView(stderr, isTty(stderr)),
): IoSink & { readonly view: ProgressView } {
  return {
    view,
    out: (text) => {
      stdout.write(text);
    },
    err: (text) => {
      stderr.write(text);
    },
    start: (id, label, total, options) => view.start(id, label, total, options),
    tick: (id, n, what) => view.tick(id, n, what),
    done: (id) => view.done(id),
  };
}

/** Terminal I/O in this thread (tests and embedders; the command line uses worker.ts). */
export function createConsoleIo(options: ConsoleIoOptions): CliIo {
  const sink = streamSink(options.stdout ?? process.stdout, options.stderr ?? process.stderr);
  return createSinkIo(sink, options);
}

/** An in-memory CliIo for tests: everything written is kept in `stdout` / `stderr`. */
export function createCaptureIo(options: { json?: boolean; quiet?: boolean } = {}): CliIo & {
  readonly stdout: string[];
  readonly stderr: string[];
  readonly progressLabels: string[];
} {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const progressLabels: string[] = [];
  return {
    json: options.json ?? false,
    quiet: options.quiet ?? true,
    stdout,
    stderr,
    progressLabels,
    out(text) {
      stdout.push(withNewline(text));
    },
    outJson(value) {
      stdout.push(toJson(value));
    },
    err(text) {
      stderr.push(withNewline(text));
    },
    progress(label) {
      // Every task is recorded, quiet or not: tests look at the labels.
      progressLabels.push(label);
      return progressSilent;
    },
  };
}
