/**
 * The importers' error and report types, shared by the three input formats.
 *
 * Why one error class: `execmem trace import` must turn any bad input into one line naming the
 * file and the place (a line of a bpftrace recording or of /proc/modules, a program of bpftool's
 * JSON), with exit code 2, and a library user must be able to tell a bad input from a bug. An
 * ImportError is always about the input; an AssertionError from here would be a bug.
 */
import type { ExecmemType } from '../../arch/types.js';

/** The inputs `execmem trace import` understands (docs/TRACES.md describes each). */
export const IMPORT_FORMATS = ['bpftrace', 'bpftool', 'proc-modules'] as const;
export type ImportFormat = (typeof IMPORT_FORMATS)[number];

export class ImportError extends Error {
  override name = 'ImportError';
  /**
   * @param where the place in the input: 'line 12' (1-based), 'program 3 (id 17)', or null when
   *   the input as a whole is wrong (empty, not JSON).
   */
  constructor(
    readonly format: ImportFormat,
    readonly where: string | null,
    readonly detail: string,
  ) {
    super(where === null ? `${format}: ${detail}` : `${format}: ${where}: ${detail}`);
  }
}

/** What an import did, for the user to judge the trace by (printed by `execmem trace import`). */
export interface ImportReport {
  readonly format: ImportFormat;
  /** Events (bpftrace lines that are events), modules (/proc/modules) or programs (bpftool) read. */
  readonly inputRecords: number;
  /** Allocations in the trace, by execmem type. */
  readonly allocsByType: Partial<Record<ExecmemType, number>>;
  readonly allocBytesByType: Partial<Record<ExecmemType, number>>;
  readonly frees: number;
  /** Module loads (allocs sharing a module number). */
  readonly moduleLoads: number;
  /** Allocations still live at the end of the trace. */
  readonly liveAtEnd: number;
  /** Things the importer left out or inferred, each with a count and what it means. */
  readonly notes: readonly ImportNote[];
}

export interface ImportNote {
  readonly kind: string;
  readonly count: number;
  readonly meaning: string;
}
