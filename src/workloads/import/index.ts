/**
 * Importers: a real machine's allocations as an `execmem-trace/1` trace (`execmem trace import`).
 *
 * Why a single entry point: the CLI, the tests and library users pick a format (or let the text
 * say which it is) and get a valid trace plus a report of what was inferred or left out; the
 * format modules stay independent (./bpftrace.ts for recordings of scripts/record-execmem.bt,
 * ./snapshots.ts for `bpftool prog show --json` and /proc/modules). docs/TRACES.md documents
 * every format and the kernel versions behind it.
 */
import { type ModuleTable, readModuleTable } from '../dataset/table.js';
import { DEFAULT_MODULE_TABLE } from '../dataset/workload.js';
import { summarizeTrace, type Trace } from '../trace.js';
import { type ImportOptions, importRecording } from './bpftrace.js';
import type { ImportFormat, ImportReport } from './errors.js';
import { importBpftool, importProcModules } from './snapshots.js';

export { type ImportOptions, importRecording, typeOfExecmem, typeOfModMem } from './bpftrace.js';
export {
  IMPORT_FORMATS,
  ImportError,
  type ImportFormat,
  type ImportNote,
  type ImportReport,
} from './errors.js';
export {
  formatRecordLine,
  PROBE_NAMES,
  type ProbeName,
  parseRecord,
  RECORD_FORMAT,
  type RecordEvent,
} from './record.js';
export { importBpftool, importProcModules, parseProcModules, splitModuleSize } from './snapshots.js';

export interface ImportResult {
  readonly trace: Trace;
  readonly report: ImportReport;
}

/**
 * Guess the format from the text: JSON is bpftool's; a first data line of 6-7 fields with a
 * state word and a 0x address is /proc/modules; "<ns> <tid> <probe> ..." (or the script's
 * header) is a bpftrace recording. null when nothing fits (the user must say --format).
 */
export function detectFormat(text: string): ImportFormat | null {
  const trimmed = text.trimStart();
  if (trimmed.startsWith('[') || trimmed.startsWith('{')) return 'bpftool';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    if (/^#\s*execmem-record\//.test(line)) return 'bpftrace';
    if (line.startsWith('#') || /^Attaching \d+ probes?/.test(line)) continue;
    if (/^\S+ \d+ (\d+|-) \S+ (Live|Loading|Unloading) 0x[0-9a-fA-F]+( \(\w+\))?$/.test(line))
      return 'proc-modules';
    if (/^\d+ \d+ [a-z_]+( |$)/.test(line)) return 'bpftrace';
    return null;
  }
  return null;
}

export interface ImportTextOptions extends ImportOptions {
  /** The module table for /proc/modules splits; default the shipped data/debian-modules.json. */
  readonly table?: ModuleTable;
}

/** Convert `text` in `format` to a trace. Throws ImportError (bad input) naming the place. */
export function importText(text: string, format: ImportFormat, opts: ImportTextOptions): ImportResult {
  const r =
    format === 'bpftrace'
      ? importRecording(text, opts)
      : format === 'bpftool'
        ? { ...importBpftool(text, opts), frees: 0, liveAtEnd: -1 }
        : {
            ...importProcModules(text, opts, opts.table ?? readModuleTable(DEFAULT_MODULE_TABLE)),
            frees: 0,
            liveAtEnd: -1,
          };
  const summary = summarizeTrace(r.trace);
  const report: ImportReport = {
    format,
    inputRecords: r.inputRecords,
    allocsByType: summary.allocCountByType,
    allocBytesByType: summary.allocBytesByType,
    frees: r.frees,
    moduleLoads: r.moduleLoads,
    liveAtEnd: r.liveAtEnd < 0 ? summary.ops.alloc : r.liveAtEnd,
    notes: r.notes,
  };
  return { trace: r.trace, report };
}
