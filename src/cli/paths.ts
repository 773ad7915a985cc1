/**
 * Path options checked before any work starts: where a command will write (`--out`,
 * `--cache-dir`) and what it will read (`--dir`, input files).
 *
 * Why up front and by hand: a bad path found after a 60-second run wastes the run, and some are
 * worse than wasted. Node's `mkdirSync(p, { recursive: true })` never returns for a path under
 * /proc (it loops on the EEXIST/ENOENT answers procfs gives), and /sys refuses with EPERM after
 * the work is done. So every path option goes through one of these checks in the action, before
 * the first simulated event: a path under /proc or /sys, a file where a directory is needed (or
 * the reverse), a directory that cannot be written, or an input that does not exist is a
 * UsageError (exit 2) with a plain message naming the option.
 *
 * The checks look at the nearest existing ancestor of a path that does not exist yet (the
 * directory that would receive the first mkdir), resolved through symlinks, so `/tmp/link/x`
 * with `link -> /proc` is caught too. Writability is `access(W_OK | X_OK)`, which also reports a
 * read-only mount (EROFS).
 */
import { accessSync, constants, existsSync, realpathSync, statSync } from 'node:fs';
import { dirname, resolve, sep } from 'node:path';
import { UsageError } from './io.js';

/** Kernel pseudo-filesystems: nothing a command writes belongs there. */
const PSEUDO_FS_ROOTS = ['/proc', '/sys'];

function under(path: string, root: string): boolean {
  return path === root || path.startsWith(`${root}${sep}`);
}

function pseudoRoot(path: string): string | undefined {
  return PSEUDO_FS_ROOTS.find((root) => under(path, root));
}

/** The nearest ancestor of `abs` (or `abs` itself) that exists. */
function nearestExisting(abs: string): string {
  let p = abs;
  while (!existsSync(p)) {
    const parent = dirname(p);
    if (parent === p) break;
    p = parent;
  }
  return p;
}

function realOrSelf(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function writable(dir: string): boolean {
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function refusePseudo(option: string, given: string, abs: string): void {
  const root = pseudoRoot(abs) ?? pseudoRoot(realOrSelf(nearestExisting(abs)));
  if (root !== undefined) {
    throw new UsageError(
      `${option} ${given}: ${root} is a kernel pseudo-filesystem; choose a directory on a real filesystem`,
    );
  }
}

/**
 * A directory the command will create if needed and write into (`report --out`,
 * `--cache-dir`). Returns the absolute path.
 */
export function checkOutputDir(option: string, given: string): string {
  if (given.trim() === '') throw new UsageError(`${option}: the path is empty`);
  const abs = resolve(given);
  refusePseudo(option, given, abs);
  const existing = nearestExisting(abs);
  if (existing === abs) {
    if (!isDirectory(abs)) throw new UsageError(`${option} ${given}: exists and is not a directory`);
    if (!writable(abs)) throw new UsageError(`${option} ${given}: the directory is not writable`);
    return abs;
  }
  if (!isDirectory(existing)) {
    throw new UsageError(`${option} ${given}: ${existing} exists and is not a directory`);
  }
  if (!writable(existing)) {
    throw new UsageError(`${option} ${given}: cannot create it, ${existing} is not writable`);
  }
  return abs;
}

/**
 * A file the command will write (`dataset table --out`); its directory is created if needed.
 * Returns the absolute path.
 */
export function checkOutputFile(option: string, given: string): string {
  if (given.trim() === '') throw new UsageError(`${option}: the path is empty`);
  const abs = resolve(given);
  refusePseudo(option, given, abs);
  if (existsSync(abs)) {
    if (isDirectory(abs)) throw new UsageError(`${option} ${given}: is a directory, not a file`);
    try {
      accessSync(abs, constants.W_OK);
    } catch {
      throw new UsageError(`${option} ${given}: the file is not writable`);
    }
  }
  checkOutputDir(option, dirname(abs));
  return abs;
}

/** A directory the command reads (`--dir` of an extracted package). Returns the absolute path. */
export function checkInputDir(option: string, given: string): string {
  if (given.trim() === '') throw new UsageError(`${option}: the path is empty`);
  const abs = resolve(given);
  if (!existsSync(abs)) throw new UsageError(`${option} ${given}: no such directory`);
  if (!isDirectory(abs)) throw new UsageError(`${option} ${given}: is a file, not a directory`);
  try {
    accessSync(abs, constants.R_OK | constants.X_OK);
  } catch {
    throw new UsageError(`${option} ${given}: the directory is not readable`);
  }
  return abs;
}

/** A file the command reads (a trace, a JSON result). Returns the absolute path. */
export function checkInputFile(option: string, given: string): string {
  if (given.trim() === '') throw new UsageError(`${option}: the path is empty`);
  const abs = resolve(given);
  if (!existsSync(abs)) throw new UsageError(`${option} ${given}: no such file`);
  if (isDirectory(abs)) throw new UsageError(`${option} ${given}: is a directory, not a file`);
  try {
    accessSync(abs, constants.R_OK);
  } catch {
    throw new UsageError(`${option} ${given}: the file is not readable`);
  }
  return abs;
}
