/**
 * One-shot snapshots of a running machine as traces: `bpftool prog show --json` (the loaded BPF
 * programs) and /proc/modules (the loaded modules). Each becomes the loads that built the state,
 * in load order, with nothing freed: replaying it puts each design in the state the machine was
 * in, with every design's own placement.
 *
 * Why these rules:
 * - bpftool (tools/bpf/bpftool/prog.c print_prog_json): one object per program with "id" and,
 *   when the program was JITed, "jited": true and "bytes_jited" (struct bpf_prog_info
 *   jited_prog_len). Each JITed program is one load of the JIT image bpf_jit_binary_pack_alloc
 *   would ask for (../sizes.ts bpfJitImage: round_up(proglen + header + 16, 64)), one write,
 *   a finalize: the same load as the bpf workloads emit. Programs load in id order: ids come
 *   from idr_alloc_cyclic (bpf_prog_alloc_id), so they rise with load time. A program with
 *   subprograms has one image per subprogram in the kernel but one bytes_jited (their sum):
 *   it is imported as one image (bpftool's JSON does not carry the split). Programs with
 *   "jited": false run in the interpreter and take no executable memory: skipped, counted.
 * - /proc/modules (kernel/module/procfs.c m_show): "name size refcount deps state address
 *   [taints]", newest module first (add_unformed_module list_add_rcu()s at the head), so the
 *   file is read bottom-up. `size` is module_total_size(): the sum of mod->mem[type].size over
 *   all types, each PAGE_ALIGNed by module_memory_alloc (6.4+), the init types 0 once init ran.
 *   The file does not say how the size splits into types, so the split is the kernel's layout
 *   of the same module where the shipped Debian table (data/debian-modules.json, measured from
 *   the .ko files) has it, else the table-wide share of each type; either way in whole pages,
 *   every present type at least one page (splitModuleSize). Each module is then one load as
 *   load_module does it (allocs, writes, finalize, ro_after_init sealed after init).
 */
import type { ExecmemType } from '../../arch/types.js';
import { assert } from '../../base/assert.js';
import { Rng } from '../../base/rng.js';
import { emitBpfLoad } from '../bpf.js';
import { TraceBuilder } from '../builder.js';
import type { ModuleTable } from '../dataset/table.js';
import { bpfJitImage, splitFunctions } from '../sizes.js';
import { TRACE_MAX_ALLOC_BYTES, type Trace } from '../trace.js';
import type { ImportOptions } from './bpftrace.js';
import { ImportError, type ImportNote } from './errors.js';

export const PAGE_BYTES = 4096;

export interface SnapshotImport {
  readonly trace: Trace;
  readonly inputRecords: number;
  readonly moduleLoads: number;
  readonly notes: readonly ImportNote[];
}

// ---- bpftool prog show --json ----

/** Parse bpftool's JSON (an array of programs, or one program object). */
export function importBpftool(text: string, opts: ImportOptions): SnapshotImport {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new ImportError('bpftool', lineOfJsonError(text, e as Error), `not JSON: ${(e as Error).message}`);
  }
  const list = Array.isArray(doc) ? doc : [doc];
  const programs: { id: number; jitedBytes: number | null }[] = [];
  list.forEach((p, i) => {
    const where = `program ${i + 1}`;
    if (typeof p !== 'object' || p === null || Array.isArray(p)) {
      throw new ImportError('bpftool', where, 'expected an object as `bpftool prog show --json` prints');
    }
    const rec = p as Record<string, unknown>;
    if (!Number.isSafeInteger(rec.id) || (rec.id as number) < 1) {
      throw new ImportError(
        'bpftool',
        where,
        `"id" must be a positive integer, got ${JSON.stringify(rec.id)}`,
      );
    }
    const at = `${where} (id ${rec.id})`;
    if (typeof rec.jited !== 'boolean') throw new ImportError('bpftool', at, '"jited" must be true or false');
    if (!rec.jited) {
      programs.push({ id: rec.id as number, jitedBytes: null });
      return;
    }
    const n = rec.bytes_jited;
    if (!Number.isSafeInteger(n) || (n as number) < 1 || (n as number) > TRACE_MAX_ALLOC_BYTES / 2) {
      throw new ImportError(
        'bpftool',
        at,
        `"bytes_jited" must be a positive integer, got ${JSON.stringify(n)}`,
      );
    }
    programs.push({ id: rec.id as number, jitedBytes: n as number });
  });
  const ids = new Set<number>();
  for (const p of programs) {
    if (ids.has(p.id)) throw new ImportError('bpftool', `id ${p.id}`, 'program listed twice');
    ids.add(p.id);
  }
  programs.sort((a, b) => a.id - b.id);
  const b = new TraceBuilder(opts.name, opts.seed);
  const rng = new Rng(opts.seed);
  b.phase('snapshot');
  let interpreted = 0;
  for (const p of programs) {
    if (p.jitedBytes === null) interpreted++;
    else emitBpfLoad(b, bpfJitImage(rng, p.jitedBytes));
  }
  if (programs.length === interpreted) {
    throw new ImportError('bpftool', null, `no JITed program among ${programs.length}: nothing to replay`);
  }
  const notes: ImportNote[] =
    interpreted > 0
      ? [
          {
            kind: 'interpreted',
            count: interpreted,
            meaning: 'programs not JITed ("jited": false): they take no executable memory, skipped',
          },
        ]
      : [];
  return { trace: b.build(), inputRecords: list.length, moduleLoads: 0, notes };
}

/** JSON.parse's "(line N" or "at position N" as a line number, when the message has one. */
function lineOfJsonError(text: string, e: Error): string | null {
  const line = /\(line (\d+)/.exec(e.message);
  if (line) return `line ${line[1]}`;
  const m = /position (\d+)/.exec(e.message);
  if (!m) return null;
  return `line ${text.slice(0, Number(m[1])).split('\n').length}`;
}

// ---- /proc/modules ----

export interface ProcModule {
  readonly line: number;
  readonly name: string;
  readonly sizeBytes: number;
}

const STATES = ['Live', 'Loading', 'Unloading'];

/** Parse /proc/modules text (lines in file order). */
export function parseProcModules(text: string): ProcModule[] {
  const out: ProcModule[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].replace(/\r$/, '').trim();
    if (line === '') continue;
    const where = `line ${i + 1}`;
    const f = line.split(/\s+/);
    const fail = (msg: string): never => {
      throw new ImportError('proc-modules', where, `${msg}: '${line.slice(0, 120)}'`);
    };
    if (f.length < 6 || f.length > 7) fail('expected "name size refcount deps state address [taints]"');
    const [name, size, refs, deps, state, address, taints] = f;
    if (!/^[\w-]{1,64}$/.test(name)) fail(`'${name}' is not a module name`);
    if (!/^\d{1,10}$/.test(size) || Number(size) < 1) fail(`size '${size}' is not a positive byte count`);
    if (!/^(\d+|-)$/.test(refs)) fail(`refcount '${refs}' is not a number or -`);
    if (!/^(-|([\w-]+,|\[permanent\],)+)$/.test(deps)) fail(`dependencies '${deps}' are not "-" or "a,b,"`);
    if (!STATES.includes(state)) fail(`state '${state}' is not one of ${STATES.join(', ')}`);
    if (!/^0x[0-9a-fA-F]{1,16}$/.test(address)) fail(`address '${address}' is not 0x hex`);
    if (taints !== undefined && !/^\([A-Z]+\)$/.test(taints)) fail(`taints '${taints}' are not "(FLAGS)"`);
    if (Number(size) > TRACE_MAX_ALLOC_BYTES) fail(`size ${size} is larger than a trace allows`);
    out.push({ line: i + 1, name, sizeBytes: Number(size) });
  }
  return out;
}

/** The core memory types of a loaded module, in enum mod_mem_type order (move_module's order). */
export const CORE_TYPES: readonly ExecmemType[] = [
  'module_text',
  'module_data',
  'module_rodata',
  'module_ro_after_init',
];

/** Page-aligned bytes per core type (text, data, rodata, ro_after_init) of a table row. */
export function rowCoreBytes(bytes: readonly number[]): number[] {
  // data/debian-modules.json memTypes order: text, data, rodata, ro_after_init, init_*.
  return [0, 1, 2, 3].map((i) => Math.ceil(bytes[i] / PAGE_BYTES) * PAGE_BYTES);
}

/**
 * Split a module's total size over the core types in whole pages, in proportion to `weights`
 * (largest remainder), then every type with weight > 0 gets at least one page while pages last,
 * taken from the type with the most (the heavier types first); a remainder below a page (a
 * pre-6.4 or unusual size) goes to text.
 */
export function splitModuleSize(totalBytes: number, weights: readonly number[]): number[] {
  assert(totalBytes > 0 && weights.length === CORE_TYPES.length, 'splitModuleSize arguments');
  const pages = Math.floor(totalBytes / PAGE_BYTES);
  const rest = totalBytes - pages * PAGE_BYTES;
  const w = weights.some((x) => x > 0) ? [...weights] : [1, 0, 0, 0];
  const sum = w.reduce((s, x) => s + x, 0);
  const exact = w.map((x) => (pages * x) / sum);
  const out = exact.map(Math.floor);
  const byRemainder = exact
    .map((x, i) => ({ i, frac: x - Math.floor(x) }))
    .sort((a, b) => b.frac - a.frac || a.i - b.i);
  for (let k = 0, given = out.reduce((s, x) => s + x, 0); given < pages; k++, given++)
    out[byRemainder[k].i]++;
  const needy = w
    .map((x, i) => ({ x, i }))
    .filter(({ x }) => x > 0)
    .sort((a, b) => b.x - a.x || a.i - b.i);
  for (const { i } of needy) {
    if (out[i] > 0) continue;
    const donor = out.indexOf(Math.max(...out));
    if (out[donor] <= 1) break;
    out[donor]--;
    out[i]++;
  }
  const bytes = out.map((p) => p * PAGE_BYTES);
  bytes[0] += rest;
  assert(
    bytes.reduce((s, x) => s + x, 0) === totalBytes,
    `split of ${totalBytes} adds up to ${bytes.reduce((s, x) => s + x, 0)}`,
  );
  return bytes;
}

/** Convert /proc/modules text. `table` gives the per-type split (see the header comment). */
export function importProcModules(text: string, opts: ImportOptions, table: ModuleTable): SnapshotImport {
  const mods = parseProcModules(text);
  if (mods.length === 0) throw new ImportError('proc-modules', null, 'no modules listed');
  const seen = new Set<string>();
  for (const m of mods) {
    if (seen.has(m.name))
      throw new ImportError('proc-modules', `line ${m.line}`, `module ${m.name} listed twice`);
    seen.add(m.name);
  }
  const norm = (n: string) => n.replaceAll('-', '_');
  const rows = new Map(table.modules.map((r) => [norm(r.name), r]));
  const overall = [0, 0, 0, 0];
  for (const r of table.modules) {
    rowCoreBytes(r.bytes).forEach((x, i) => {
      overall[i] += x;
    });
  }
  const b = new TraceBuilder(opts.name, opts.seed);
  const rng = new Rng(opts.seed);
  b.phase('snapshot');
  let matched = 0;
  for (const m of [...mods].reverse()) {
    const row = rows.get(norm(m.name));
    if (row !== undefined) matched++;
    const split = splitModuleSize(m.sizeBytes, row ? rowCoreBytes(row.bytes) : overall);
    emitSnapshotModule(b, rng, split);
  }
  const notes: ImportNote[] = [
    {
      kind: 'splitFromTable',
      count: matched,
      meaning: `modules split into types as the kernel laid out the same module of ${table.packageName ?? table.kernelRelease} (data/debian-modules.json)`,
    },
    {
      kind: 'splitByShare',
      count: mods.length - matched,
      meaning: "modules not in that table: split by the table's overall share of each type",
    },
  ].filter((n) => n.count > 0);
  return { trace: b.build(), inputRecords: mods.length, moduleLoads: mods.length, notes };
}

/** One loaded module: allocs under one module number, one write each, finalize, seal (modules.ts). */
function emitSnapshotModule(b: TraceBuilder, rng: Rng, bytes: readonly number[]): void {
  const module = b.newModule();
  const placed = CORE_TYPES.map((type, i) => ({ type, size: bytes[i] }))
    .filter((r) => r.size > 0)
    .map((r) => ({ ...r, id: b.alloc(r.type, r.size, { module }) }));
  for (const r of placed) {
    if (r.type === 'module_text') b.write(r.id, 0, r.size, 'code', splitFunctions(rng, r.size));
    else b.write(r.id, 0, r.type === 'module_data' ? Math.max(1, r.size >> 1) : r.size, 'data');
  }
  for (const r of placed) b.finalize(r.id);
  const roAfterInit = placed.find((r) => r.type === 'module_ro_after_init');
  if (roAfterInit !== undefined) b.seal(roAfterInit.id);
}
