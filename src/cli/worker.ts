/**
 * The thread the `execmem` commands run on (main.ts starts it). Everything the commands print
 * or report as progress is posted to the main thread, which owns the terminal.
 *
 * Why a worker: the commands compute synchronously for seconds to minutes (a replay, a compare,
 * a package of modules), and a JavaScript SIGINT handler on a busy thread runs only when that
 * thread is idle again: Ctrl-C would wait for the whole run. With the work here, the main thread
 * stays idle, answers Ctrl-C at once (restores the terminal, says what finished, exits 130) and
 * ends this thread. Output keeps its order: every write is one message, replayed in order.
 *
 * Progress ticks of fine-grained tasks (events) are coalesced to at most one message per
 * TICK_FLUSH_MS, so a million-event replay does not pay a million messages; ticks of step tasks
 * (one per finished policy or run) and `done` are posted at once, after any coalesced ticks.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { createSinkIo, type IoSink } from './io.js';
import { runCli } from './program.js';
import type { TaskOptions } from './progress.js';

/** Longest a coalesced tick waits before it is posted. */
const TICK_FLUSH_MS = 50;

/** A message from this thread to main.ts, replayed on its IoSink in order. */
export type WorkerMessage =
  | { readonly kind: 'out' | 'err'; readonly text: string }
  | {
      readonly kind: 'start';
      readonly id: number;
      readonly label: string;
      readonly total: number;
      readonly options: TaskOptions;
    }
  | { readonly kind: 'tick'; readonly id: number; readonly n: number; readonly what?: string }
  | { readonly kind: 'done'; readonly id: number }
  | { readonly kind: 'exit'; readonly code: number };

export interface WorkerInput {
  readonly argv: readonly string[];
  readonly version: string;
}

function postingSink(post: (m: WorkerMessage) => void): IoSink {
  const pending = new Map<number, number>();
  const steps = new Set<number>();
  let lastFlushMs = 0;
  const flush = (id: number): void => {
    const n = pending.get(id);
    if (n !== undefined && n > 0) post({ kind: 'tick', id, n });
    pending.delete(id);
  };
  return {
    out: (text) => post({ kind: 'out', text }),
    err: (text) => post({ kind: 'err', text }),
    start(id, label, total, options) {
      if (options.steps) steps.add(id);
      post({ kind: 'start', id, label, total, options });
    },
    tick(id, n, what) {
      if (steps.has(id)) {
        post({ kind: 'tick', id, n, what });
        return;
      }
      pending.set(id, (pending.get(id) ?? 0) + n);
      const now = Date.now();
      if (now - lastFlushMs >= TICK_FLUSH_MS) {
        lastFlushMs = now;
        for (const key of [...pending.keys()]) flush(key);
      }
    },
    done(id) {
      flush(id);
      steps.delete(id);
      post({ kind: 'done', id });
    },
  };
}

if (parentPort !== null) {
  const port = parentPort;
  const input = workerData as WorkerInput;
  const io = createSinkIo(
    postingSink((m) => port.postMessage(m)),
    { json: false, quiet: false },
  );
  const code = await runCli(input.argv, io, input.version);
  port.postMessage({ kind: 'exit', code } satisfies WorkerMessage);
}
