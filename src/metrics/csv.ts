/**
 * CSV (RFC 4180) for every table the CLI prints: writer, reader, and the tables themselves
 * (compare, report, stats; diff's is in ./diff.ts).
 *
 * Why raw numbers and JSON key names: a CSV is for a spreadsheet or a script, so a figure is the
 * number `--json` carries (bytes, nanoseconds, shares as fractions), never the formatted text of
 * the terminal table ("1.5 MiB"), and each column is named by its JSON key, whose name carries
 * the unit (sizeBytes, modelledKernelTimeNs). A test reads the CSV back and compares it with the
 * JSON figures, so the two cannot drift apart.
 *
 * RFC 4180: fields separated by commas, records by CRLF; a field holding a comma, a double quote,
 * CR or LF is enclosed in double quotes, a double quote inside is doubled. Numbers are written
 * with JavaScript's shortest round-trip form (String(x)), so reading them back gives the same
 * double. The reader accepts exactly that grammar (and LF line ends) and rejects anything else.
 */
import type { ExecmemStats } from '../execmem/stats.js';
import { METRIC_KEYS } from './report/types.js';

export type CsvValue = string | number | boolean | null | undefined;

/** One field, quoted when it must be. null/undefined are the empty field. */
export function csvField(v: CsvValue): string {
  if (v === null || v === undefined) return '';
  const s = typeof v === 'number' ? numberText(v) : String(v);
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

function numberText(x: number): string {
  if (!Number.isFinite(x)) throw new RangeError(`CSV: ${x} is not a finite number`);
  return Object.is(x, -0) ? '0' : String(x);
}

/** A whole table: the header record then the rows, each record ended by CRLF. */
export function toCsv(header: readonly string[], rows: readonly (readonly CsvValue[])[]): string {
  for (const r of rows) {
    if (r.length !== header.length)
      throw new RangeError(`CSV: a row of ${r.length} fields under ${header.length} columns`);
  }
  return [header, ...rows].map((r) => `${r.map(csvField).join(',')}\r\n`).join('');
}

export class CsvError extends Error {
  override name = 'CsvError';
}

/** Parse RFC 4180 text into records of strings (CRLF or LF line ends; a final line end optional). */
export function parseCsv(text: string): string[][] {
  const records: string[][] = [];
  let record: string[] = [];
  let i = 0;
  const n = text.length;
  if (n === 0) return records;
  for (;;) {
    let field = '';
    if (text[i] === '"') {
      i++;
      for (;;) {
        if (i >= n) throw new CsvError(`unterminated quoted field in record ${records.length + 1}`);
        if (text[i] === '"') {
          if (text[i + 1] === '"') {
            field += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        field += text[i++];
      }
    } else {
      while (i < n && text[i] !== ',' && text[i] !== '\r' && text[i] !== '\n') {
        if (text[i] === '"')
          throw new CsvError(`a double quote inside an unquoted field in record ${records.length + 1}`);
        field += text[i++];
      }
    }
    record.push(field);
    if (i >= n) {
      records.push(record);
      return records;
    }
    if (text[i] === ',') {
      i++;
      continue;
    }
    if (text[i] === '\r' && text[i + 1] === '\n') i += 2;
    else if (text[i] === '\n') i++;
    else throw new CsvError(`unexpected character after a field in record ${records.length + 1}`);
    records.push(record);
    record = [];
    if (i >= n) return records;
  }
}

/** The rows of a design table as the compare harness and the report carry them. */
export interface CsvRun {
  readonly workload: string;
  readonly arch: string;
  readonly seed: number;
  readonly scale: number;
  readonly policies: readonly {
    readonly name: string;
    readonly kernel: string;
    readonly modelled: boolean;
    readonly sameAs: string | null;
    readonly metrics: object;
  }[];
}

/** Columns of a design table: who, then every figure of the report (METRIC_KEYS), raw. */
export const RUN_CSV_HEADER: readonly string[] = [
  'workload',
  'arch',
  'seed',
  'scale',
  'policy',
  'kernel',
  'modelled',
  'sameAs',
  ...METRIC_KEYS,
];

/** One design table (`compare --csv`, and each workload's file of `report --csv`). */
export function runCsv(run: CsvRun): string {
  return toCsv(
    RUN_CSV_HEADER,
    run.policies.map((p) => [
      run.workload,
      run.arch,
      run.seed,
      run.scale,
      p.name,
      p.kernel,
      p.modelled,
      p.sameAs,
      ...METRIC_KEYS.map((k) => {
        const v = (p.metrics as Record<string, unknown>)[k];
        if (typeof v !== 'number') throw new RangeError(`CSV: ${p.name} has no number for ${k}`);
        return v;
      }),
    ]),
  );
}

/**
 * `stats --csv`: the three tables of `execmem stats` (pools, types, counters) in one long table,
 * one figure per record: table, name, figure (the JSON key), value. One CSV holds them all, and
 * each value sits where `stats --json` has it: .pools[name][figure], .types[name][figure],
 * .counters[figure].
 */
export function statsCsv(stats: ExecmemStats): string {
  const rows: CsvValue[][] = [];
  for (const [name, pool] of Object.entries(stats.pools)) {
    for (const [figure, value] of Object.entries(pool)) {
      rows.push(['pool', name, figure, Array.isArray(value) ? value.join(' ') : (value as CsvValue)]);
    }
  }
  for (const [name, type] of Object.entries(stats.types)) {
    for (const [figure, value] of Object.entries(type)) rows.push(['type', name, figure, value as CsvValue]);
  }
  for (const [figure, value] of Object.entries(stats.counters)) rows.push(['counter', '', figure, value]);
  return toCsv(['table', 'name', 'figure', 'value'], rows);
}

/** A workload name as a file name: letters, digits, '.', '_' and '-' kept, the rest '_'. */
export function csvFileName(workload: string): string {
  const safe = workload.replace(/[^\w.-]/g, '_').replace(/^\.+/, '_');
  return `${safe === '' ? 'workload' : safe}.csv`;
}
