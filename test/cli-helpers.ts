/**
 * Helpers for the CLI tests: run the built `execmem` binary as a user would (a child process)
 * and check the "bad usage" contract (exit 2, one line on stderr, no stack, nothing on stdout).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

export interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function execmem(args: readonly string[], timeoutMs = 60_000): Run {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The same, without blocking: lets a test run many invocations in parallel (in `cwd`, with `env`). */
export function execmemAsync(
  args: readonly string[],
  timeoutMs = 60_000,
  where: { readonly cwd?: string; readonly env?: NodeJS.ProcessEnv } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { timeout: timeoutMs, ...where });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** A user mistake: exit 2, exactly one line on stderr, nothing on stdout, no stack frames. */
export function assertUsageError(r: Run, pattern: RegExp): void {
  assert.equal(r.status, 2, `exit code 2 expected, got ${r.status}; stderr: ${r.stderr}`);
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, `one line on stderr expected, got:\n${r.stderr}`);
  assert.match(lines[0], /^error: /);
  assert.match(lines[0], pattern);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
  assert.equal(r.stdout, '');
}
