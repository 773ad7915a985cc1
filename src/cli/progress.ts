/**
 * How progress is shown on stderr, and what an interruption (Ctrl-C) leaves behind.
 *
 * Why a view separate from the commands: the commands only say "a task of N units started",
 * "n more done", "finished"; this file decides what the user sees. On a terminal that is a bar
 * (cli-progress), which hides the cursor and turns off line wrapping while it draws; on anything
 * else (a pipe, a CI log) it is one plain line per finished step, because a bar redrawn with
 * carriage returns is noise in a log file. The view also remembers what finished, so an
 * interrupted run can say how far it got, and `interrupt()` puts the terminal back (cursor
 * shown, wrapping on) whatever state the bar left it in. The view lives on the thread that owns
 * the terminal (main.ts); the commands may run elsewhere (worker.ts) and send it messages.
 *
 * A task created with `steps: true` counts finished steps (policies, runs): each tick is a step
 * and gets its own line off a terminal. Other tasks count fine-grained units (events, modules)
 * and get one line when they finish.
 */
import { SingleBar } from 'cli-progress';

/** Cursor shown (DECTCEM) and auto-wrap on (DECAWM): what a bar may have turned off. */
export const TERMINAL_RESTORE = '\x1b[?25h\x1b[?7h';

export interface TaskOptions {
  /** Each tick is one finished step worth its own line off a terminal (default: no). */
  readonly steps?: boolean;
}

interface Task {
  readonly label: string;
  readonly total: number;
  readonly steps: boolean;
  readonly startedMs: number;
  value: number;
  bar: SingleBar | null;
}

function formatCount(n: number): string {
  return n.toLocaleString('en-US');
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

/** Progress of the tasks of one command run, drawn on `stream`. */
export class ProgressView {
  private readonly tasks = new Map<number, Task>();
  /** One line per finished task or step, in order (what an interruption reports). */
  private readonly finishedLog: string[] = [];

  constructor(
    private readonly stream: NodeJS.WritableStream,
    readonly tty: boolean,
    private readonly now: () => number = Date.now,
  ) {}

  start(id: number, label: string, total: number, options: TaskOptions = {}): void {
    const task: Task = {
      label,
      total,
      steps: options.steps === true,
      startedMs: this.now(),
      value: 0,
      bar: null,
    };
    if (this.tty) {
      task.bar = new SingleBar({
        stream: this.stream as NodeJS.WriteStream,
        format: `${label.padEnd(24).slice(0, 24)} [{bar}] {value}/{total} {duration_formatted}`,
        barCompleteChar: '#',
        barIncompleteChar: '.',
        hideCursor: true,
        clearOnComplete: true,
        // We restore the terminal ourselves on an interruption (interrupt()), and must not race
        // cli-progress's own SIGINT handler for it.
        gracefulExit: false,
      });
      task.bar.start(total, 0);
    }
    this.tasks.set(id, task);
  }

  tick(id: number, n = 1, what?: string): void {
    const task = this.tasks.get(id);
    if (task === undefined) return;
    task.value = Math.min(task.total, task.value + n);
    task.bar?.update(task.value);
    if (task.steps) {
      const line = `${task.label}: ${formatCount(task.value)}/${formatCount(task.total)}${what ? ` ${what}` : ''}`;
      this.finishedLog.push(line);
      if (!this.tty) this.line(line);
    }
  }

  done(id: number): void {
    const task = this.tasks.get(id);
    if (task === undefined) return;
    this.tasks.delete(id);
    task.bar?.stop();
    const line = `${task.label}: done, ${formatCount(task.value)}/${formatCount(task.total)} in ${seconds(this.now() - task.startedMs)}`;
    if (!task.steps) this.finishedLog.push(line);
    if (!this.tty) this.line(line);
  }

  /** What finished so far, one entry per task or step, oldest first. */
  finished(): readonly string[] {
    return this.finishedLog;
  }

  /**
   * Stop drawing, restore the terminal and say how far the run got. Returns the lines written
   * (after the restore sequence), so a caller may log them too.
   */
  interrupt(): string[] {
    const open = [...this.tasks.values()];
    for (const task of open) task.bar?.stop();
    this.tasks.clear();
    const lines = ['interrupted (Ctrl-C)'];
    const finished = this.finishedLog;
    if (finished.length === 0) lines.push('finished: nothing yet');
    else {
      lines.push('finished:');
      for (const f of finished) lines.push(`  ${f}`);
    }
    for (const task of open)
      lines.push(`not finished: ${task.label} at ${formatCount(task.value)}/${formatCount(task.total)}`);
    // Bars clear their line on stop; the restore sequence is written whatever cli-progress did.
    if (this.tty) this.stream.write(`\r${TERMINAL_RESTORE}`);
    for (const l of lines) this.line(l);
    return lines;
  }

  private line(text: string): void {
    this.stream.write(`${text}\n`);
  }
}
