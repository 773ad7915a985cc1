#!/usr/bin/env node
/**
 * Entry point of the `execmem` command (package.json "bin").
 *
 * Why so thin: everything testable lives in program.ts (build, parse, error -> exit code); this
 * file only binds it to the real process streams and sets process.exitCode rather than calling
 * process.exit, so pending stdout writes (a large --json document into a pipe) are not cut off.
 */
import { readFileSync } from 'node:fs';
import { createConsoleIo } from './io.js';
import { runCli } from './program.js';

function packageVersion(): string {
  // dist/src/cli/main.js -> ../../../package.json; the source tree has the same depth.
  try {
    const url = new URL('../../../package.json', import.meta.url);
    const pkg = JSON.parse(readFileSync(url, 'utf8')) as { version?: string };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

// `execmem ... | head` closes the pipe early: that is the reader's choice, not an error.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw error;
  });
}

const io = createConsoleIo({ json: false, quiet: false });
process.exitCode = await runCli(process.argv.slice(2), io, packageVersion());
