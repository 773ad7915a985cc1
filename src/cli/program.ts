/**
 * The `execmem` command line: builds the commander program, loads the subcommand modules, maps
 * every failure to an exit code and one line on stderr.
 *
 * Why built this way:
 * - Exit codes are part of the interface (issue 7): 0 ok, 1 the work failed, 2 bad usage. Commander
 *   normally calls process.exit itself and prints multi-line errors; `exitOverride` turns its
 *   errors into exceptions we classify, and `outputError` folds its message (which may carry a
 *   "Did you mean" second line) into one line. No stack trace reaches a user for a user mistake.
 * - `--json` and `--quiet` are global options (commander recognises them before or after the
 *   subcommand name), copied onto the `CliIo` in a preAction hook, so every subcommand — written
 *   by different engineers — gets the same flags with the same meaning.
 * - Subcommands written by other engineers (compare, modules, dataset) are loaded by dynamic
 *   import. While such a module has not been written, or fails to load, its subcommand still
 *   exists, says plainly that it is not available, and exits 1. Nothing is faked in its place.
 */
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { CliFailure, type CliIo, UsageError } from './io.js';

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

/** A command module: what every file in src/cli/commands/ exports. */
export interface CommandModule {
  register(program: Command, io: CliIo): void;
}

/** Subcommands in the order `execmem --help` lists them, with a one-line summary for placeholders. */
export const SUBCOMMANDS: readonly { name: string; summary: string; owner: string }[] = [
  { name: 'report', summary: 'run every policy on every workload and write report/index.html', owner: 'C' },
  { name: 'compare', summary: 'run the Linux designs and execmem on one workload, side by side', owner: 'P' },
  { name: 'modules', summary: 'load real Linux kernel modules (.ko) through an allocator', owner: 'E' },
  { name: 'ftrace', summary: 'attach ftrace ops to real module functions (x86 live patching)', owner: 'F' },
  {
    name: 'dataset',
    summary: 'fetch and index a Debian kernel package for the modules workload',
    owner: 'E',
  },
  {
    name: 'ptdump',
    summary: 'print the kernel page tables after a workload (Linux ptdump style)',
    owner: 'C',
  },
  { name: 'stats', summary: 'print execmem allocator statistics after a workload', owner: 'C' },
  {
    name: 'diff',
    summary: 'compare two saved runs (compare or report --json): the change per figure',
    owner: 'T',
  },
  {
    name: 'trace',
    summary: "import a real machine's allocations as a trace (bpftrace, bpftool, /proc/modules)",
    owner: 'T',
  },
  {
    name: 'host',
    summary: 'demo: JIT a few functions into real memory of this process and call them',
    owner: 'C',
  },
];

/** Import a command module by name; returns the reason it is unavailable instead of throwing. */
async function loadCommandModule(name: string): Promise<CommandModule | string> {
  const url = new URL(`./commands/${name}.js`, import.meta.url);
  try {
    const mod = (await import(url.href)) as Partial<CommandModule>;
    if (typeof mod.register !== 'function') return `src/cli/commands/${name}.ts exports no register()`;
    return mod as CommandModule;
  } catch (error) {
    const code = (error as { code?: string }).code;
    const message = error instanceof Error ? error.message : String(error);
    if (code === 'ERR_MODULE_NOT_FOUND' && message.includes(`commands/${name}.js`)) {
      return `src/cli/commands/${name}.ts has not been written yet`;
    }
    return `src/cli/commands/${name}.ts failed to load: ${firstLine(message)}`;
  }
}

function registerPlaceholder(program: Command, name: string, summary: string, reason: string): void {
  program
    .command(name)
    .description(
      `${summary} [${reason.endsWith('has not been written yet') ? 'not available yet' : 'broken'}]`,
    )
    .allowUnknownOption()
    .allowExcessArguments()
    .helpOption(false)
    .action(() => {
      // Only a file that does not exist is "not available yet"; a file that exists but does not
      // load is a failure of its own (tests must not mistake it for work in progress).
      const missing = reason.endsWith('has not been written yet');
      throw new CliFailure(`'execmem ${name}' ${missing ? 'is not available yet' : 'is broken'}: ${reason}`);
    });
}

function firstLine(text: string): string {
  const line = text.split('\n').find((l) => l.trim() !== '') ?? text;
  return line.trim();
}

/** Apply our error handling to a command and all its descendants (modules may build their own). */
function configureTree(cmd: Command, io: CliIo): void {
  cmd.exitOverride();
  cmd.configureOutput({
    writeOut: (text) => io.out(text.replace(/\n$/, '')),
    writeErr: (text) => io.err(text.replace(/\n$/, '')),
    outputError: (text, write) => write(`${oneLine(text)}\n`),
  });
  for (const sub of cmd.commands) configureTree(sub, io);
}

function oneLine(text: string): string {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .join(' ');
}

/** Build the whole program. `io.json`/`io.quiet` are filled in after parsing. */
export async function buildProgram(io: CliIo, version: string): Promise<Command> {
  const program = new Command('execmem');
  program
    .description(
      'execmem: a unified allocator for executable memory (after Linux execmem), on a simulated ' +
        'kernel machine (the default; modelled) and on real memory of this process (the host demo; real).',
    )
    .version(version, '-V, --version')
    .option('--json', 'print the result as one JSON document on stdout (2-space indented)')
    .option('-q, --quiet', 'no progress on stderr (a bar on a terminal, else a line per finished step)')
    .showSuggestionAfterError(true)
    // Every command's --help lists --json and --quiet under "Global Options" (inherited by the
    // subcommands registered below).
    .configureHelp({ showGlobalOptions: true })
    .addHelpText(
      'after',
      [
        '',
        'Exit codes: 0 ok, 1 the work failed, 2 bad usage, 130 interrupted (Ctrl-C).',
        '',
        'Examples:',
        '  $ execmem report                      # the main job: report/index.html + report/summary.md',
        '  $ execmem compare --workload mixed    # one workload, every policy, a table',
        '  $ execmem ptdump --workload bpf-churn # page tables of the simulated kernel afterwards',
        '  $ execmem stats --json                # allocator statistics as JSON',
        '  $ execmem host                        # JIT into real memory and call it',
      ].join('\n'),
    );
  program.hook('preAction', (_self, action) => {
    const opts = action.optsWithGlobals() as { json?: boolean; quiet?: boolean };
    io.json = opts.json === true;
    io.quiet = io.quiet || opts.quiet === true || io.json;
  });
  for (const sub of SUBCOMMANDS) {
    const loaded = await loadCommandModule(sub.name);
    if (typeof loaded === 'string') registerPlaceholder(program, sub.name, sub.summary, loaded);
    else loaded.register(program, io);
  }
  configureTree(program, io);
  return program;
}

/** An error from a system call (Node's fs, child_process): it carries an errno code and the call. */
function isSystemError(error: Error): boolean {
  const e = error as NodeJS.ErrnoException;
  return typeof e.code === 'string' && /^E[A-Z0-9]+$/.test(e.code) && typeof e.syscall === 'string';
}

/** Map an error escaping a command to its exit code, printing one line (never a stack for users). */
export function reportError(error: unknown, io: CliIo): number {
  if (error instanceof InvalidArgumentError) {
    // Thrown from inside an action (commander only prints those it caught in a parser).
    io.err(`error: ${oneLine(error.message)}`);
    return EXIT_USAGE;
  }
  if (error instanceof CommanderError) {
    // Help and --version arrive here with exit code 0; commander already printed the message.
    if (
      error.exitCode === 0 ||
      error.code === 'commander.helpDisplayed' ||
      error.code === 'commander.version'
    ) {
      return EXIT_OK;
    }
    return EXIT_USAGE;
  }
  if (error instanceof UsageError) {
    io.err(`error: ${oneLine(error.message)}`);
    return EXIT_USAGE;
  }
  if (error instanceof CliFailure) {
    io.err(`error: ${oneLine(error.message)}`);
    return EXIT_FAILED;
  }
  const err = error instanceof Error ? error : new Error(String(error));
  if (isSystemError(err)) {
    // A file or process the system refused (ENOENT, EACCES, ENOSPC, EROFS...): the message names
    // the call and the path, which is what the user needs; it is not a bug in execmem.
    io.err(`error: ${oneLine(err.message)}`);
    if (process.env.EXECMEM_DEBUG === '1' && err.stack) io.err(err.stack);
    return EXIT_FAILED;
  }
  // Typed errors of the layers below (ExecmemError, MachineError, ElfError...) carry their own
  // clear message; anything else (an AssertionError, a TypeError) is a bug in execmem.
  const typed = err.name !== 'Error' && err.name !== 'AssertionError' && !(err instanceof TypeError);
  if (typed) {
    io.err(`error: ${oneLine(err.message)}`);
  } else {
    io.err(`internal error (${err.name}): ${oneLine(err.message)} [set EXECMEM_DEBUG=1 for the stack]`);
  }
  if (process.env.EXECMEM_DEBUG === '1' && err.stack) io.err(err.stack);
  return EXIT_FAILED;
}

/** Run the command line; returns the exit code instead of exiting (main.ts sets process.exitCode). */
export async function runCli(argv: readonly string[], io: CliIo, version: string): Promise<number> {
  let program: Command;
  try {
    program = await buildProgram(io, version);
  } catch (error) {
    return reportError(error, io);
  }
  if (argv.length === 0) {
    io.err('error: a command is required (see the list below)');
    io.err(program.helpInformation());
    return EXIT_USAGE;
  }
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return EXIT_OK;
  } catch (error) {
    return reportError(error, io);
  }
}
