/**
 * Which kernel thread is this, and is another one still alive? The arena lock (rwlock.ts) records
 * its holders by kernel thread id so that a waiter can tell a slow holder from a dead one.
 *
 * Why the kernel's view and not worker_threads events: a worker terminated by `worker.terminate()`
 * stops at its next JS safepoint without running `finally` blocks, and its 'exit' event is only
 * delivered to the parent's event loop, which may be the very thread that now waits synchronously
 * for the lock. The kernel removes /proc/self/task/<tid> when the thread exits, whoever joins it
 * (non-leader threads are reaped at exit: release_task() from exit_notify(), kernel/exit.c), and
 * Node's worker thread does exit once its isolate is torn down, without waiting for the parent.
 * Measured here (Linux 6.18, Node 20): the task directory is gone about 2 ms after terminate().
 *
 * Thread ids are reused only after the pid counter wraps (alloc_pid(), kernel/pid.c), so an
 * identity is the pair (tid, start time in clock ticks, field 22 of /proc/<pid>/task/<tid>/stat,
 * proc_pid_stat() in fs/proc/array.c): a new thread with a recycled tid has a later start time.
 */
import { readFileSync, readlinkSync } from 'node:fs';

export interface ThreadIdentity {
  /** Kernel thread id (gettid()). */
  readonly tid: number;
  /** Start time in clock ticks since boot; 0 when unknown (then only the tid is compared). */
  readonly startTicks: number;
}

/** Start ticks of a live thread of this process; null when it is gone (or a zombie). */
export function threadStartTicks(tid: number): number | null {
  let text: string;
  try {
    text = readFileSync(`/proc/self/task/${tid}/stat`, 'latin1');
  } catch {
    return null;
  }
  // The command name (field 2) may hold spaces and parentheses: fields after it start at the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = rest[0];
  if (state === 'Z' || state === 'X' || state === 'x') return null;
  const ticks = Number(rest[19]);
  return Number.isSafeInteger(ticks) ? ticks : 0;
}

/** The calling thread (main thread or worker), from /proc/thread-self (Linux 3.17+). */
export function currentThread(): ThreadIdentity {
  const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
  if (!Number.isSafeInteger(tid) || tid <= 0) throw new Error('cannot read /proc/thread-self');
  return { tid, startTicks: threadStartTicks(tid) ?? 0 };
}

/** Is the thread with this identity still running? */
export function threadAlive(id: ThreadIdentity): boolean {
  if (id.tid <= 0) return false;
  const ticks = threadStartTicks(id.tid);
  if (ticks === null) return false;
  return id.startTicks === 0 || ticks === 0 || ticks === id.startTicks;
}
