/**
 * Ctrl-C during a run (issue 13 item 11): the `execmem` process, spawned as a user runs it, gets
 * SIGINT while a command computes; it must exit 130 at once (not after the run), restore the
 * terminal, and say what finished. Off a terminal its progress is one line per finished step.
 *
 * Two ways in: a pipe (SIGINT sent to the process, as `kill -INT` does) and a real terminal
 * (a pseudo-terminal from util-linux `script`, where the Ctrl-C byte typed on it becomes SIGINT
 * for the foreground process group, exactly as at a shell). The second is skipped where `script`
 * is not installed.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { TERMINAL_RESTORE } from '../src/cli/progress.js';
import { CLI } from './cli-helpers.js';

/**
 * A compare long enough to interrupt mid-run: after its first design finishes, the other six still
 * take seconds (at --scale 0.2 they took under one once the simulator got faster, and a Ctrl-C
 * typed when the bar showed 1/7 could arrive after the last of them).
 */
const LONG_RUN = ['compare', '--workload', 'mixed'];

interface Interrupted {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Milliseconds from the signal to the exit. */
  exitAfterMs: number;
}

test('SIGINT off a terminal: exit 130 at once, a line per finished step, what finished listed', async () => {
  const child = spawn(process.execPath, [CLI, ...LONG_RUN], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let signalledAt = 0;
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
  });
  const result = await new Promise<Interrupted>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`no finished step within 120 s; stderr: ${stderr}`));
    }, 120_000);
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      // The first design's run finished (compare counts finished runs as steps): interrupt.
      if (signalledAt === 0 && /: 1\/7 /.test(stderr)) {
        signalledAt = Date.now();
        child.kill('SIGINT');
      }
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, exitAfterMs: Date.now() - signalledAt });
    });
  });
  assert.ok(signalledAt > 0, 'interrupted mid-run');
  assert.equal(result.code, 130, `exit 130 expected; stderr:\n${result.stderr}`);
  assert.ok(result.exitAfterMs < 5000, `exited ${result.exitAfterMs} ms after SIGINT, not at once`);
  assert.equal(result.stdout, '', 'no table for an interrupted run');
  const lines = result.stderr.trimEnd().split('\n');
  assert.match(lines[0], /^mixed: 7 designs: 1\/7 [\w.-]+$/, 'a line per finished step');
  assert.ok(lines.includes('interrupted (Ctrl-C)'), result.stderr);
  assert.ok(lines.includes('finished:'));
  assert.ok(
    lines.some((l) => /^ {2}mixed: 7 designs: 1\/7 [\w.-]+$/.test(l)),
    'the finished step is listed',
  );
  assert.ok(
    lines.some((l) => /^not finished: mixed: 7 designs at [1-6]\/7$/.test(l)),
    'the task in progress is named',
  );
  assert.ok(!result.stderr.includes('\x1b'), 'no terminal control sequences off a terminal');
});

function haveScript(): boolean {
  return spawnSync('script', ['--version'], { stdio: 'ignore' }).status === 0;
}

test('Ctrl-C on a terminal: the bar stops, cursor and line wrapping come back, exit 130', async (t) => {
  if (process.platform !== 'linux' || !haveScript()) {
    t.skip('needs util-linux script(1) for a pseudo-terminal');
    return;
  }
  const command = [process.execPath, CLI, ...LONG_RUN].map((w) => `'${w}'`).join(' ');
  // -e: script exits with the command's status; -f: flush output as it comes.
  const child = spawn('script', ['-qfec', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let sent = false;
  const code = await new Promise<number | null>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`no progress bar within 120 s; output: ${JSON.stringify(out.slice(-500))}`));
    }, 120_000);
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      // The bar shows a finished run and not all (two runs may finish between redraws, so the
      // bar can go from 0/7 to 2/7): type Ctrl-C on the terminal.
      if (!sent && /mixed: 7 designs +\[[#.]+\] [1-6]\/7/.test(out)) {
        sent = true;
        child.stdin.write('\x03');
      }
    });
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve(status);
    });
  });
  assert.ok(sent, 'a bar was drawn');
  assert.equal(code, 130, `exit 130 expected; output tail: ${JSON.stringify(out.slice(-800))}`);
  const hidden = out.indexOf('\x1b[?25l');
  const restored = out.lastIndexOf(TERMINAL_RESTORE);
  assert.ok(hidden >= 0, 'the bar hid the cursor');
  assert.ok(restored > hidden, 'cursor shown and wrapping back on after the interruption');
  const after = out.slice(restored);
  assert.match(after, /interrupted \(Ctrl-C\)/);
  assert.match(after, /mixed: 7 designs: 1\/7 [\w.-]+/);
  assert.match(after, /not finished: mixed: 7 designs at [1-6]\/7/);
});
