/**
 * A scratch directory for one test body: created under the OS temp dir, removed afterwards
 * whether the body returns or throws.
 *
 * Why a helper: several test files repeated the same mkdtemp / try / finally rmSync lines; a
 * missed finally leaves files behind in /tmp on every failing run.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Runs `body(dir)` in a fresh directory named `<prefix>XXXXXX`, then deletes it; returns body's result. */
export function withTempDir<T>(prefix: string, body: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  try {
    return body(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
