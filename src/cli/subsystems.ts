/**
 * Loading the subsystems a subcommand needs, with an honest failure when one does not exist.
 *
 * Why dynamic imports here: the CLI is written while the machine, the allocator, the compare
 * harness and the host backend are being written by other engineers. A static import of a file
 * that does not exist yet would break the build of the whole project; a dynamic one lets the
 * subcommand say "not available yet: src/... has not landed" (exit 1) and start working the
 * moment the file lands. Nothing is ever substituted for a missing subsystem.
 */
import { CliFailure } from './io.js';

/**
 * Import `srcPath` (a path under src/, e.g. 'metrics/compare.js') and return its exports, or throw
 * CliFailure naming what is missing. `what` says in plain words what the subsystem is.
 */
export async function loadSubsystem<T>(
  srcPath: string,
  what: string,
  exportNames: readonly string[],
): Promise<T> {
  const url = new URL(`../${srcPath}`, import.meta.url);
  let mod: Record<string, unknown>;
  try {
    mod = (await import(url.href)) as Record<string, unknown>;
  } catch (error) {
    const code = (error as { code?: string }).code;
    const message = error instanceof Error ? error.message : String(error);
    if (code === 'ERR_MODULE_NOT_FOUND') {
      throw new CliFailure(
        `${what} is not available yet (src/${srcPath.replace(/\.js$/, '.ts')} or a file it needs has not landed)`,
      );
    }
    throw new CliFailure(`${what} failed to load: ${message.split('\n')[0]}`);
  }
  const missing = exportNames.filter((name) => mod[name] === undefined);
  if (missing.length > 0) {
    throw new CliFailure(
      `${what} is not available yet (src/${srcPath} does not export ${missing.join(', ')})`,
    );
  }
  return mod as T;
}
