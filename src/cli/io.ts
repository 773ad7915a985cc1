/**
 * The contract between the `execmem` command and its subcommand modules: where output goes,
 * how progress is shown, and which errors mean "bad usage" (exit 2) versus "failed" (exit 1).
 *
 * Why an interface rather than console/process directly: subcommands are written by several
 * engineers (dataset and modules by E, compare by P); passing one `CliIo` keeps them from each
 * inventing their own flags for --json/--quiet, keeps progress bars on stderr only (so
 * `execmem compare --json | jq` is never corrupted), and lets tests capture output in memory.
 * Every command module exports `register(program: Command, io: CliIo): void`.
 *
 * For command authors: `--json` and `--quiet` are global options owned by main.ts (they work
 * before or after the subcommand name). Do not declare them again; read `io.json` / `io.quiet`
 * inside the action (they are set after parsing, so reading them at register time is wrong).
 * Throw `UsageError` for bad input and `CliFailure` when the work cannot be done.
 *
 * Exit codes (issue 7): 0 ok, 1 the work failed (`CliFailure` or any other error), 2 the user
 * typed something wrong (`UsageError`, commander's own parse errors). Both print one line on
 * stderr, never a stack trace.
 */
import { SingleBar } from 'cli-progress';

export interface CliProgress {
  tick(n?: number): void;
  done(): void;
}

export interface CliIo {
  /** Data or human text for the user: stdout. A newline is appended if missing. */
  out(text: string): void;
  /** Diagnostics and notes: stderr. A newline is appended if missing. */
  err(text: string): void;
  /** A progress bar on stderr; silent when quiet, when --json, or when stderr is not a TTY. */
  progress(label: string, total: number): CliProgress;
  /** --json was given: print exactly one JSON document on stdout. Set by main.ts after parsing. */
  json: boolean;
  /** --quiet was given (or stderr is not a TTY): no progress output. */
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

/** The real terminal I/O used by main.ts. */
export function createConsoleIo(options: ConsoleIoOptions): CliIo {
  const stdout = options.stdout ?? process.stdout;
  const stderr = options.stderr ?? process.stderr;
  const stderrIsTty = isTty(stderr);
  const io: CliIo = {
    json: options.json,
    quiet: options.quiet || !stderrIsTty,
    out(text) {
      stdout.write(withNewline(text));
    },
    err(text) {
      stderr.write(withNewline(text));
    },
    progress(label, total) {
      if (io.quiet || io.json || total <= 0) return progressSilent;
      return barProgress(stderr, label, total);
    },
  };
  return io;
}

/** Whether a stream is an interactive terminal (progress bars only go to terminals). */
export function isTty(stream: NodeJS.WritableStream): boolean {
  return (stream as NodeJS.WriteStream).isTTY === true;
}

function barProgress(stream: NodeJS.WritableStream, label: string, total: number): CliProgress {
  const bar = new SingleBar({
    stream: stream as NodeJS.WriteStream,
    format: `${label.padEnd(24).slice(0, 24)} [{bar}] {value}/{total} {duration_formatted}`,
    barCompleteChar: '#',
    barIncompleteChar: '.',
    hideCursor: true,
    clearOnComplete: true,
  });
  bar.start(total, 0);
  let finished = false;
  return {
    tick(n = 1) {
      if (!finished) bar.increment(n);
    },
    done() {
      if (finished) return;
      finished = true;
      bar.stop();
    },
  };
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
    err(text) {
      stderr.push(withNewline(text));
    },
    progress(label) {
      progressLabels.push(label);
      return progressSilent;
    },
  };
}
