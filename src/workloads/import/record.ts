/**
 * The recording format of scripts/record-execmem.bt (`execmem-record/1`): one line per kernel
 * event, parsed strictly into typed events.
 *
 *   <ns> <tid> <probe> key=value ...
 *
 * `ns` is bpftrace's `nsecs` (CLOCK_MONOTONIC, comparable across CPUs), `tid` the kernel task,
 * `probe` the kernel function. Keys per probe (PROBES below): `type` (enum execmem_type or enum
 * mod_mem_type, as the function takes it), `size` (bytes asked for), `proglen` (the JITed
 * program's length), `addr` (returned or freed address, 0x hex; 0 = NULL), `depth` (how many of
 * the script's enclosing probes were active in the same task: the importer keeps depth 0 only,
 * because an inner call is the same allocation seen again, e.g. execmem_alloc inside
 * module_memory_alloc, or a pack's own memory inside bpf_prog_pack_alloc), `mod` (module name).
 *
 * Why strict: a recording is the only description of a real machine's work; a line that does
 * not parse is reported with its number (ImportError) rather than skipped, so a truncated or
 * mangled file never becomes a quietly smaller workload. Lines that are not events are allowed
 * only in the shapes bpftrace itself prints around them: blank, `#` comments, "Attaching N
 * probes...", and `@map` dumps at exit.
 */
import { ImportError } from './errors.js';

/** The kernel functions the script probes, and the keys each line carries. */
export const PROBES = {
  execmem_alloc: { kind: 'alloc', keys: ['type', 'size', 'addr', 'depth'] },
  execmem_alloc_rw: { kind: 'alloc', keys: ['type', 'size', 'addr', 'depth'] },
  execmem_free: { kind: 'free', keys: ['addr', 'depth'] },
  module_memory_alloc: { kind: 'alloc', keys: ['type', 'size', 'addr', 'depth'], optional: ['mod'] },
  module_memfree: { kind: 'free', keys: ['addr', 'depth'] },
  bpf_prog_pack_alloc: { kind: 'alloc', keys: ['size', 'addr', 'depth'] },
  bpf_prog_pack_free: { kind: 'free', keys: ['addr', 'depth'] },
  bpf_jit_binary_pack_alloc: { kind: 'alloc', keys: ['proglen', 'addr', 'depth'] },
} as const satisfies Record<
  string,
  { kind: 'alloc' | 'free'; keys: readonly string[]; optional?: readonly string[] }
>;
export type ProbeName = keyof typeof PROBES;
export const PROBE_NAMES = Object.keys(PROBES) as ProbeName[];

/** The header line the script prints first (a comment to the parser; checked if present). */
export const RECORD_FORMAT = 'execmem-record/1';

/**
 * include/linux/execmem.h enum execmem_type (6.10 to 6.18; checked against a 6.18 kernel's BTF):
 * EXECMEM_DEFAULT = EXECMEM_MODULE_TEXT = 0, KPROBES 1, FTRACE 2, BPF 3, MODULE_DATA 4.
 */
export const EXECMEM_TYPE_MAX = 4;
/**
 * include/linux/module.h enum mod_mem_type (since 6.4, same values through 6.18): MOD_TEXT 0,
 * MOD_DATA 1, MOD_RODATA 2, MOD_RO_AFTER_INIT 3, MOD_INIT_TEXT 4, MOD_INIT_DATA 5,
 * MOD_INIT_RODATA 6.
 */
export const MOD_MEM_TYPE_MAX = 6;

export interface RecordEvent {
  /** 1-based line number in the input, for messages. */
  readonly line: number;
  readonly ns: bigint;
  readonly tid: number;
  readonly probe: ProbeName;
  /** Returned (alloc) or freed (free) address; 0n is NULL. */
  readonly addr: bigint;
  readonly depth: number;
  /** enum execmem_type (execmem_alloc*) or enum mod_mem_type (module_memory_alloc). */
  readonly type?: number;
  readonly sizeBytes?: number;
  readonly progBytes?: number;
  readonly mod?: string;
}

/** Largest size a line may carry: the trace format's limit (256 MiB) is checked later. */
const MAX_FIELD_BYTES = 2 ** 40;

const NOISE = [/^#/, /^Attaching \d+ probes?\.\.\.$/, /^@[A-Za-z_]\w*(\[.*\])?:/];

/** Parse a whole recording. Events come back in input order (the importer sorts by time). */
export function parseRecord(text: string): RecordEvent[] {
  const events: RecordEvent[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i].replace(/\r$/, '').trim();
    if (raw === '') continue;
    if (raw.startsWith('#')) {
      checkHeader(raw, i + 1);
      continue;
    }
    if (NOISE.some((re) => re.test(raw))) continue;
    events.push(parseLine(raw, i + 1));
  }
  return events;
}

/** A `# execmem-record/N` header of another version is refused; other comments are free text. */
function checkHeader(line: string, lineNo: number): void {
  const m = /^#\s*execmem-record\/(\S+)/.exec(line);
  if (m && `execmem-record/${m[1]}` !== RECORD_FORMAT) {
    throw new ImportError(
      'bpftrace',
      `line ${lineNo}`,
      `recorded as execmem-record/${m[1]}, this importer reads ${RECORD_FORMAT}`,
    );
  }
}

function parseLine(line: string, lineNo: number): RecordEvent {
  const fail = (msg: string): never => {
    throw new ImportError('bpftrace', `line ${lineNo}`, `${msg}: '${clip(line)}'`);
  };
  const fields = line.split(/\s+/);
  if (fields.length < 3) fail('expected "<ns> <tid> <probe> key=value..."');
  const [nsText, tidText, probeText, ...pairs] = fields;
  if (!/^\d{1,20}$/.test(nsText)) fail(`time '${nsText}' is not a decimal number of nanoseconds`);
  if (!/^\d{1,10}$/.test(tidText) || Number(tidText) > 2 ** 31 - 1) fail(`tid '${tidText}' is not a task id`);
  if (!Object.hasOwn(PROBES, probeText)) {
    fail(`unknown probe '${probeText}' (known: ${PROBE_NAMES.join(', ')})`);
  }
  const probe = probeText as ProbeName;
  const spec: { keys: readonly string[]; optional?: readonly string[] } = PROBES[probe];
  const values = new Map<string, string>();
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) fail(`'${pair}' is not key=value`);
    const key = pair.slice(0, eq);
    if (!spec.keys.includes(key) && !(spec.optional ?? []).includes(key)) {
      fail(`${probe} has no key '${key}' (keys: ${[...spec.keys, ...(spec.optional ?? [])].join(', ')})`);
    }
    if (values.has(key)) fail(`key '${key}' given twice`);
    values.set(key, pair.slice(eq + 1));
  }
  for (const key of spec.keys) if (!values.has(key)) fail(`${probe} needs '${key}='`);
  const num = (key: string, max: number): number => {
    const v = values.get(key) as string;
    if (!/^\d{1,15}$/.test(v) || Number(v) > max) fail(`${key}=${v} is not an integer in [0, ${max}]`);
    return Number(v);
  };
  const addrText = values.get('addr') as string;
  if (!/^0x[0-9a-fA-F]{1,16}$/.test(addrText)) fail(`addr=${addrText} is not a 64-bit 0x hex address`);
  const typeMax = probe === 'module_memory_alloc' ? MOD_MEM_TYPE_MAX : EXECMEM_TYPE_MAX;
  const mod = values.get('mod');
  if (mod !== undefined && !/^[\w.-]{1,64}$/.test(mod)) fail(`mod=${mod} is not a module name`);
  return {
    line: lineNo,
    ns: BigInt(nsText),
    tid: Number(tidText),
    probe,
    addr: BigInt(addrText),
    depth: num('depth', 64),
    ...(values.has('type') ? { type: num('type', typeMax) } : {}),
    ...(values.has('size') ? { sizeBytes: num('size', MAX_FIELD_BYTES) } : {}),
    ...(values.has('proglen') ? { progBytes: num('proglen', MAX_FIELD_BYTES) } : {}),
    ...(mod !== undefined && mod !== '-' ? { mod } : {}),
  };
}

function clip(s: string): string {
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}

/** One event as the script prints it (tests build recordings from this; the round trip is tested). */
export function formatRecordLine(ev: Omit<RecordEvent, 'line'>): string {
  const parts = [String(ev.ns), String(ev.tid), ev.probe];
  if (ev.type !== undefined) parts.push(`type=${ev.type}`);
  if (ev.sizeBytes !== undefined) parts.push(`size=${ev.sizeBytes}`);
  if (ev.progBytes !== undefined) parts.push(`proglen=${ev.progBytes}`);
  parts.push(`addr=0x${ev.addr.toString(16)}`);
  if (ev.probe === 'module_memory_alloc') parts.push(`mod=${ev.mod ?? '-'}`);
  parts.push(`depth=${ev.depth}`);
  return parts.join(' ');
}
