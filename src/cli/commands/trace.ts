/**
 * `execmem trace`: bring a real machine's work into the comparison.
 *
 *   execmem trace import FILE [--format bpftrace|bpftool|proc-modules] [--out FILE]
 *   execmem trace check FILE
 *
 * and `loadTraceOption`, which `compare --trace` and `report --trace` use to read a trace file.
 *
 * Why built this way: the importers (src/workloads/import) are a library; this file only reads
 * files, picks the format, writes the trace and says what the importer inferred or left out. A bad
 * input file is the user's mistake: exit 2 with one line naming the file and the line (or event)
 * that is wrong, before any work. The trace goes to stdout when no --out is given, so
 * `execmem trace import rec.txt > my.json` works; the summary then goes to stderr.
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { EXECMEM_TYPES } from '../../arch/types.js';
import { formatBytes } from '../../metrics/report/format.js';
import {
  detectFormat,
  IMPORT_FORMATS,
  ImportError,
  type ImportFormat,
  type ImportReport,
  importText,
} from '../../workloads/import/index.js';
import {
  summarizeTrace,
  TRACE_MAX_NAME_CHARS,
  type Trace,
  TraceError,
  validateTrace,
} from '../../workloads/trace.js';
import { type CliIo, UsageError } from '../io.js';
import { parseSeed } from '../options.js';

/**
 * Read and validate a trace file for --trace: every problem is a UsageError naming the file
 * (and the event, for an invalid one), raised before any work starts.
 */
export function loadTraceOption(path: string): Trace {
  let text: string;
  try {
    if (statSync(path).isDirectory())
      throw new UsageError(`--trace ${path}: is a directory, not a trace file`);
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError(
      `--trace ${path}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new UsageError(
      `--trace ${path}: not JSON (${(e as Error).message}); a recording must first go through 'execmem trace import'`,
    );
  }
  try {
    return validateTrace(doc);
  } catch (e) {
    if (e instanceof TraceError) throw new UsageError(`--trace ${path}: ${e.message}`);
    throw e;
  }
}

/** The text saveTrace writes (one event per line, so traces diff well), for stdout. */
export function traceText(trace: Trace): string {
  validateTrace(trace);
  const head = `{"format":${JSON.stringify(trace.format)},"name":${JSON.stringify(trace.name)},"seed":${trace.seed},"events":[`;
  return `${head}\n${trace.events.map((ev) => JSON.stringify(ev)).join(',\n')}\n]}\n`;
}

interface ImportCliOptions {
  format?: ImportFormat;
  out?: string;
  name?: string;
  seed: number;
}

function parseName(value: string): string {
  if (value.length === 0 || value.length > TRACE_MAX_NAME_CHARS) {
    throw new InvalidArgumentError(`the name must have 1..${TRACE_MAX_NAME_CHARS} characters`);
  }
  return value;
}

export function register(program: Command, io: CliIo): void {
  const trace = program
    .command('trace')
    .description(
      "import a real machine's allocations as a trace for compare/report --trace (docs/TRACES.md)",
    );
  trace
    .command('import')
    .description(
      'turn a recording (scripts/record-execmem.sh), `bpftool prog show --json` or /proc/modules into a trace',
    )
    .argument('<file>', "the input; '-' for stdin")
    .addOption(
      new Option('-f, --format <format>', 'input format (default: recognised from the text)').choices(
        IMPORT_FORMATS,
      ),
    )
    .option('-o, --out <file>', 'write the trace here (default: stdout)')
    .option('--name <name>', 'trace name, shown as the workload (default: the file name)', parseName)
    .option(
      '-s, --seed <n>',
      'seeds the synthetic parts (BPF program offsets, function splits)',
      parseSeed,
      1,
    )
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        '  $ sudo scripts/record-execmem.sh > rec.txt        # on the machine to study; Ctrl-C to stop',
        '  $ execmem trace import rec.txt --out rec.trace.json',
        '  $ execmem compare --trace rec.trace.json',
        '  $ bpftool prog show --json > progs.json && execmem trace import progs.json --out progs.trace.json',
        '  $ execmem trace import /proc/modules --format proc-modules --out modules.trace.json',
        '',
        'Formats, probe points per kernel version and what the importer infers: docs/TRACES.md.',
      ].join('\n'),
    )
    .action((file: string, opts: ImportCliOptions) => {
      runImport(file, opts, io);
    });
  trace
    .command('check')
    .description('validate a trace file and print what it holds (--json: the counts)')
    .argument('<file>', 'an execmem-trace/1 file')
    .addHelpText('after', ['', 'Example:', '  $ execmem trace check rec.trace.json'].join('\n'))
    .action((file: string) => {
      const t = loadTraceOption(file);
      const s = summarizeTrace(t);
      if (io.json) {
        io.out(JSON.stringify({ file, name: t.name, seed: t.seed, ...s }, null, 2));
        return;
      }
      io.out(
        `${file}: valid ${t.format} trace '${t.name}' (seed ${t.seed}), ${s.events.toLocaleString('en-US')} events`,
      );
      io.out(typeTable(s.allocCountByType, s.allocBytesByType));
      io.out(
        `ops: ${Object.entries(s.ops)
          .map(([op, n]) => `${op} ${n.toLocaleString('en-US')}`)
          .join(', ')}`,
      );
    });
}

function readInput(file: string): string {
  try {
    if (file === '-') return readFileSync(0, 'utf8');
    if (statSync(file).isDirectory()) throw new UsageError(`${file}: is a directory`);
    return readFileSync(file, 'utf8');
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError(
      `cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
}

/** Default trace name: the file name without its extensions ("rec.txt" -> "rec"). */
function defaultName(file: string, format: ImportFormat): string {
  if (file === '-') return format;
  const base = basename(file).replace(/\..*$/, '');
  return (base === '' ? format : base).slice(0, TRACE_MAX_NAME_CHARS);
}

function runImport(file: string, opts: ImportCliOptions, io: CliIo): void {
  if (opts.out !== undefined && opts.out !== '-') checkOutPath(opts.out);
  const text = readInput(file);
  const format = opts.format ?? detectFormat(text);
  if (format === null) {
    throw new UsageError(`cannot tell the format of ${file}; give --format (${IMPORT_FORMATS.join(', ')})`);
  }
  let result: ReturnType<typeof importText>;
  try {
    result = importText(text, format, { name: opts.name ?? defaultName(file, format), seed: opts.seed });
  } catch (e) {
    if (e instanceof ImportError) throw new UsageError(`${file}: ${e.message}`);
    throw e;
  }
  const toStdout = opts.out === undefined || opts.out === '-';
  if (toStdout) io.out(traceText(result.trace).replace(/\n$/, ''));
  else {
    try {
      writeFileSync(opts.out as string, traceText(result.trace));
    } catch (e) {
      throw new UsageError(
        `cannot write ${opts.out} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
      );
    }
  }
  if (io.json && !toStdout) {
    io.out(
      JSON.stringify({ input: file, out: opts.out, trace: result.trace.name, ...result.report }, null, 2),
    );
    return;
  }
  const lines = importSummary(file, result.report, result.trace, toStdout ? null : (opts.out as string));
  for (const line of lines) {
    if (toStdout) io.err(line);
    else io.out(line);
  }
}

/** --out must not be a directory or lie under /proc or /sys; writability shows when writing. */
function checkOutPath(path: string): void {
  if (/^\/(proc|sys)(\/|$)/.test(path)) throw new UsageError(`--out ${path}: not under /proc or /sys`);
  try {
    if (statSync(path).isDirectory()) throw new UsageError(`--out ${path}: is a directory; give a file name`);
  } catch (e) {
    if (e instanceof UsageError) throw e;
  }
}

const FORMAT_NAMES: Readonly<Record<ImportFormat, string>> = {
  bpftrace: 'bpftrace recording',
  bpftool: 'bpftool prog show --json snapshot',
  'proc-modules': '/proc/modules snapshot',
};

export function importSummary(file: string, r: ImportReport, trace: Trace, out: string | null): string[] {
  const allocs = Object.values(r.allocsByType).reduce((s, n) => s + (n ?? 0), 0);
  const unit = { bpftrace: 'events', bpftool: 'programs', 'proc-modules': 'modules' }[r.format];
  const lines = [
    `imported ${file} (${FORMAT_NAMES[r.format]}, ${r.inputRecords.toLocaleString('en-US')} ${unit}) as trace '${trace.name}': ` +
      `${allocs.toLocaleString('en-US')} allocations, ${r.frees.toLocaleString('en-US')} frees, ` +
      `${r.moduleLoads.toLocaleString('en-US')} module loads, ${r.liveAtEnd.toLocaleString('en-US')} live at the end`,
    typeTable(r.allocsByType, r.allocBytesByType),
  ];
  for (const n of r.notes) lines.push(`note: ${n.count.toLocaleString('en-US')} ${n.kind}: ${n.meaning}`);
  if (out !== null) lines.push(`trace: ${out}  (replay it: execmem compare --trace ${out})`);
  return lines;
}

function typeTable(counts: Partial<Record<string, number>>, bytes: Partial<Record<string, number>>): string {
  const rows = EXECMEM_TYPES.filter((t) => (counts[t] ?? 0) > 0).map(
    (t) =>
      `  ${t.padEnd(22)} ${(counts[t] ?? 0).toLocaleString('en-US').padStart(9)} allocations ${formatBytes(bytes[t] ?? 0).padStart(11)}`,
  );
  return rows.length > 0 ? rows.join('\n') : '  (no allocations)';
}
