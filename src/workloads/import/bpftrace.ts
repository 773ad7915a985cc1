/**
 * A recording of a real machine (scripts/record-execmem.bt, parsed by ./record.ts) turned into
 * an `execmem-trace/1` trace that every design can replay.
 *
 * Why each rule (the kernel functions are those of docs/TRACES.md, with their versions):
 * - Time order: bpftrace prints each CPU's buffer in turn, so lines come out of order across CPUs;
 *   `nsecs` is one monotonic clock, so events are sorted by it (stable for equal times).
 * - depth > 0 is skipped: the script counts its enclosing probes per task. execmem_alloc inside
 *   module_memory_alloc (6.10+) is the same region seen twice; execmem_alloc / module_memfree /
 *   execmem_free inside bpf_prog_pack_alloc or _free is a pack's own 2 MiB, which each design
 *   builds (or not) itself from the programs it is given.
 * - Alloc and free are paired by address, as the kernel frees (execmem_free(ptr),
 *   bpf_prog_pack_free(ptr, size)). A free of an address the recording never allocated is
 *   counted and skipped (allocated before the recording began). An alloc over a range still live
 *   means its free was missed (a kretprobe miss, or memory freed by an unprobed path): the old
 *   allocation is freed first, and counted. Addresses are reused freely after a free.
 * - Types: enum execmem_type and enum mod_mem_type map onto the trace's types (typeOf*). Init
 *   regions (MOD_INIT_*) keep the type of their core twin and carry `init`, as Linux allocates
 *   them with the same execmem type.
 * - Writers, as the kernel's: load_module (kernel/module/main.c) allocates every region of a load
 *   (move_module), copies the sections in, then protects them (complete_formation); so the
 *   regions of one load are emitted together under one module number, each with one write (text
 *   named as functions, .data half written as .bss stays zero, see ../modules.ts) and a finalize.
 *   do_init_module seals ro_after_init (module_enable_rodata_ro_after_init) before it queues the
 *   init regions' free, so the seal is emitted at the first recorded init free (or at once for
 *   a module without init regions). A BPF program: bpf_jit_binary_pack_alloc's image (its size
 *   and program offset from ../sizes.ts bpfJitImage, the JIT's own formula), one write of the
 *   whole image (bpf_jit_binary_pack_finalize's text_poke_copy) and a finalize. A bare
 *   bpf_prog_pack_alloc is a trampoline or dispatcher image (arch_alloc_bpf_trampoline,
 *   bpf_dispatcher_change_prog), caller 'bpf_trampoline'. kprobes, ftrace and non-pack BPF memory
 *   from execmem_alloc: one write of the whole allocation and a finalize.
 * - A module load is a group of consecutive allocations of one task: for module_memory_alloc
 *   the mod_mem_type rises through a load (for_each_mod_mem_type) and the module name holds;
 *   for bare execmem_alloc module memory (module_memory_alloc not probeable) a text region after
 *   a data region starts a new load. A load is emitted where its first region was allocated; what
 *   other tasks did while it was being allocated follows it, so a load is never split.
 */
import type { ExecmemType } from '../../arch/types.js';
import { assert } from '../../base/assert.js';
import { Rng } from '../../base/rng.js';
import { TraceBuilder } from '../builder.js';
import { BPF_CHUNK_BYTES, bpfJitImage, splitFunctions } from '../sizes.js';
import { TRACE_MAX_ALLOC_BYTES, type Trace } from '../trace.js';
import { ImportError, type ImportNote } from './errors.js';
import { parseRecord, type RecordEvent } from './record.js';

export interface ImportOptions {
  /** Trace name (1..200 characters). */
  readonly name: string;
  /** Seeds the synthetic parts (BPF program offsets, function splits); stored as the trace's seed. */
  readonly seed: number;
}

/** enum execmem_type (include/linux/execmem.h, 6.10+) to the trace's types. */
export function typeOfExecmem(value: number): ExecmemType {
  const map: readonly ExecmemType[] = ['module_text', 'kprobes', 'ftrace', 'bpf', 'module_data'];
  assert(value >= 0 && value < map.length, `execmem_type ${value}`);
  return map[value];
}

/** enum mod_mem_type (include/linux/module.h, 6.4+) to [type, init]. */
export function typeOfModMem(value: number): { type: ExecmemType; init: boolean } {
  const map: readonly ExecmemType[] = [
    'module_text', // MOD_TEXT
    'module_data', // MOD_DATA
    'module_rodata', // MOD_RODATA
    'module_ro_after_init', // MOD_RO_AFTER_INIT
    'module_text', // MOD_INIT_TEXT
    'module_data', // MOD_INIT_DATA
    'module_rodata', // MOD_INIT_RODATA
  ];
  assert(value >= 0 && value < map.length, `mod_mem_type ${value}`);
  return { type: map[value], init: value >= 4 };
}

/** A live allocation of the recording: its address range and, once emitted, its trace id. */
interface Live {
  readonly start: bigint;
  readonly end: bigint;
  id: number | null;
  readonly group: ModuleGroup | null;
  readonly type: ExecmemType;
  readonly init: boolean;
  readonly sizeBytes: number;
}

interface ModuleGroup {
  readonly tid: number;
  readonly source: 'module_memory_alloc' | 'execmem_alloc';
  readonly mod: string | undefined;
  lastType: number;
  readonly members: Live[];
  /** No more regions will join (the task did something else, or a region was freed). */
  closed: boolean;
  roAfterInit: Live | null;
  sealed: boolean;
}

/** What the importer emits, in order: a builder call, or a load that is emitted once closed. */
type Pending = (() => void) | ModuleGroup;

const NOTE_MEANINGS: Readonly<Record<string, string>> = {
  outOfOrder:
    'lines out of time order (bpftrace prints each CPU buffer in turn): sorted by their nsecs time stamp',
  nested:
    'events inside another probed call of the same task (the same memory seen twice, or a BPF pack of its own): skipped',
  unmatchedFrees:
    'frees of addresses not allocated during the recording (allocated before it began, or by an unprobed caller): skipped',
  implicitFrees:
    'allocations over a range still live in the recording (its free was missed): the older allocation was freed first',
  failedAllocs: 'allocations that returned NULL: skipped, there is nothing to replay',
  execmemModules:
    'module regions seen only through execmem_alloc (module_memory_alloc not probed): typed by enum execmem_type, grouped per task, init regions unknown',
};

class RecordImporter {
  readonly builder: TraceBuilder;
  private readonly rng: Rng;
  /** Live allocations sorted by start address. */
  private readonly live: Live[] = [];
  private readonly openGroups = new Map<number, ModuleGroup>();
  /**
   * Output in event order. A load stands where its first region was allocated and holds back
   * what follows until it is closed, so its allocs stay consecutive (the trace format's rule)
   * without moving it after other tasks' events.
   */
  private readonly queue: Pending[] = [];
  readonly counts: Record<string, number> = {};
  moduleLoads = 0;
  frees = 0;

  constructor(opts: ImportOptions) {
    this.builder = new TraceBuilder(opts.name, opts.seed);
    this.rng = new Rng(opts.seed);
  }

  count(kind: string, n = 1): void {
    this.counts[kind] = (this.counts[kind] ?? 0) + n;
  }

  take(ev: RecordEvent): void {
    if (ev.depth > 0) {
      this.count('nested');
      return;
    }
    const open = this.openGroups.get(ev.tid);
    if (open !== undefined && !this.continues(open, ev)) this.flush(open);
    if (ev.probe === 'execmem_free' || ev.probe === 'module_memfree' || ev.probe === 'bpf_prog_pack_free') {
      this.free(ev);
      return;
    }
    if (ev.addr === 0n) {
      this.count('failedAllocs');
      return;
    }
    this.alloc(ev);
  }

  /** Whether `ev` is the next region of the load `g` (same task, rising type, same module). */
  private continues(g: ModuleGroup, ev: RecordEvent): boolean {
    if (ev.addr === 0n) return false;
    if (g.source === 'module_memory_alloc') {
      return ev.probe === 'module_memory_alloc' && (ev.type as number) > g.lastType && ev.mod === g.mod;
    }
    if (ev.probe !== 'execmem_alloc' && ev.probe !== 'execmem_alloc_rw') return false;
    const t = typeOfExecmem(ev.type as number);
    if (t !== 'module_text' && t !== 'module_data') return false;
    return !(t === 'module_text' && typeOfExecmem(g.lastType) === 'module_data');
  }

  private sizeOf(ev: RecordEvent, bytes: number): number {
    if (!(bytes >= 1 && bytes <= TRACE_MAX_ALLOC_BYTES)) {
      throw new ImportError(
        'bpftrace',
        `line ${ev.line}`,
        `${ev.probe} of ${bytes} bytes at 0x${ev.addr.toString(16)}: a trace allocation is 1..${TRACE_MAX_ALLOC_BYTES} bytes`,
      );
    }
    return bytes;
  }

  private alloc(ev: RecordEvent): void {
    const b = this.builder;
    const emitWhole = (at: Live, fill: 'code' | 'data', extras: Parameters<TraceBuilder['alloc']>[2] = {}) =>
      this.emit(() => {
        at.id = b.alloc(at.type, at.sizeBytes, extras);
        b.write(at.id, 0, at.sizeBytes, fill);
        b.finalize(at.id);
      });
    switch (ev.probe) {
      case 'module_memory_alloc': {
        const { type, init } = typeOfModMem(ev.type as number);
        this.addToGroup(ev, 'module_memory_alloc', type, init, this.sizeOf(ev, ev.sizeBytes as number));
        return;
      }
      case 'execmem_alloc':
      case 'execmem_alloc_rw': {
        const type = typeOfExecmem(ev.type as number);
        const size = this.sizeOf(ev, ev.sizeBytes as number);
        if (type === 'module_text' || type === 'module_data') {
          this.count('execmemModules');
          this.addToGroup(ev, 'execmem_alloc', type, false, size);
          return;
        }
        emitWhole(this.place(ev, size, type), 'code');
        return;
      }
      case 'bpf_jit_binary_pack_alloc': {
        const image = bpfJitImage(this.rng, this.sizeOf(ev, ev.progBytes as number));
        const at = this.place(ev, this.sizeOf(ev, image.imageBytes), 'bpf');
        this.emit(() => {
          at.id = b.alloc('bpf', image.imageBytes, { alignBytes: BPF_CHUNK_BYTES });
          b.write(at.id, 0, image.imageBytes, 'code', [[image.codeOffsetBytes, image.progBytes]]);
          b.finalize(at.id);
        });
        return;
      }
      case 'bpf_prog_pack_alloc': {
        const size = this.sizeOf(ev, ev.sizeBytes as number);
        emitWhole(this.place(ev, size, 'bpf'), 'code', { caller: 'bpf_trampoline' });
        return;
      }
      default:
        assert(false, `alloc of ${ev.probe}`);
    }
  }

  private addToGroup(
    ev: RecordEvent,
    source: ModuleGroup['source'],
    type: ExecmemType,
    init: boolean,
    size: number,
  ): void {
    let g = this.openGroups.get(ev.tid);
    if (g === undefined) {
      g = {
        tid: ev.tid,
        source,
        mod: ev.mod,
        lastType: -1,
        members: [],
        closed: false,
        roAfterInit: null,
        sealed: false,
      };
      this.openGroups.set(ev.tid, g);
      this.queue.push(g);
    }
    g.lastType = ev.type as number;
    const at = this.place(ev, size, type, g, init);
    g.members.push(at);
    if (type === 'module_ro_after_init') g.roAfterInit = at;
  }

  /** Queue a builder call behind any load still open. */
  private emit(fn: () => void): void {
    this.queue.push(fn);
    this.drain();
  }

  private drain(): void {
    while (this.queue.length > 0) {
      const head = this.queue[0];
      if (typeof head !== 'function' && !head.closed) return;
      this.queue.shift();
      if (typeof head === 'function') head();
      else this.emitLoad(head);
    }
  }

  /** No region joins `g` any more: it is emitted as soon as what precedes it is. */
  private flush(g: ModuleGroup): void {
    if (g.closed) return;
    g.closed = true;
    if (this.openGroups.get(g.tid) === g) this.openGroups.delete(g.tid);
    this.drain();
  }

  /** Emit a load: every alloc under one module number, then the writes, the finalizes, a seal. */
  private emitLoad(g: ModuleGroup): void {
    const b = this.builder;
    const module = b.newModule();
    this.moduleLoads++;
    for (const m of g.members)
      m.id = b.alloc(m.type, m.sizeBytes, m.init ? { module, init: true } : { module });
    for (const m of g.members) {
      const id = m.id as number;
      if (m.type === 'module_text')
        b.write(id, 0, m.sizeBytes, 'code', splitFunctions(this.rng, m.sizeBytes));
      else b.write(id, 0, m.type === 'module_data' ? Math.max(1, m.sizeBytes >> 1) : m.sizeBytes, 'data');
    }
    for (const m of g.members) b.finalize(m.id as number);
    if (!g.members.some((m) => m.init)) this.seal(g);
  }

  private seal(g: ModuleGroup): void {
    if (g.sealed || g.roAfterInit === null || g.roAfterInit.id === null) return;
    if (!this.builder.isLive(g.roAfterInit.id)) return;
    g.sealed = true;
    this.builder.seal(g.roAfterInit.id);
  }

  private free(ev: RecordEvent): void {
    if (ev.addr === 0n) return; // execmem_free(NULL) / vfree(NULL) do nothing
    const i = this.indexOf(ev.addr);
    if (i < 0) {
      this.count('unmatchedFrees');
      return;
    }
    const at = this.live[i];
    const g = at.group;
    if (g !== null) {
      this.flush(g);
      if (at.init) this.emit(() => this.seal(g));
    }
    this.live.splice(i, 1);
    this.emit(() => this.builder.free(at.id as number));
    this.frees++;
  }

  /** Register [addr, addr+size) as live, freeing whatever still overlaps it (a missed free). */
  private place(
    ev: RecordEvent,
    size: number,
    type: ExecmemType,
    group: ModuleGroup | null = null,
    init = false,
  ): Live {
    const start = ev.addr;
    const end = start + BigInt(size);
    for (;;) {
      const j = this.overlapping(start, end);
      if (j < 0) break;
      const old = this.live[j];
      if (old.group !== null && old.group !== group) this.flush(old.group);
      if (old.group === group && group !== null) {
        throw new ImportError(
          'bpftrace',
          `line ${ev.line}`,
          `${ev.probe} returned 0x${start.toString(16)}, inside a region of the same module load`,
        );
      }
      this.live.splice(j, 1);
      this.emit(() => this.builder.free(old.id as number));
      this.frees++;
      this.count('implicitFrees');
    }
    const at: Live = { start, end, id: null, group, type, init, sizeBytes: size };
    this.live.splice(this.lowerBound(start), 0, at);
    return at;
  }

  /** First index whose start is >= addr. */
  private lowerBound(addr: bigint): number {
    let lo = 0;
    let hi = this.live.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.live[mid].start < addr) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private indexOf(addr: bigint): number {
    const i = this.lowerBound(addr);
    return i < this.live.length && this.live[i].start === addr ? i : -1;
  }

  /** Index of a live allocation overlapping [start, end), or -1. */
  private overlapping(start: bigint, end: bigint): number {
    const i = this.lowerBound(start);
    if (i < this.live.length && this.live[i].start < end) return i;
    if (i > 0 && this.live[i - 1].end > start) return i - 1;
    return -1;
  }

  finish(): void {
    for (const g of [...this.openGroups.values()]) this.flush(g);
    assert(this.queue.length === 0, 'every queued event emitted');
  }

  get liveCount(): number {
    return this.live.length;
  }

  notes(): ImportNote[] {
    return Object.entries(this.counts)
      .filter(([, n]) => n > 0)
      .map(([kind, count]) => ({ kind, count, meaning: NOTE_MEANINGS[kind] ?? kind }));
  }
}

export interface RecordImport {
  readonly trace: Trace;
  readonly inputRecords: number;
  readonly frees: number;
  readonly moduleLoads: number;
  readonly liveAtEnd: number;
  readonly notes: readonly ImportNote[];
}

/** Parse and convert a recording. Throws ImportError naming the line of the first bad one. */
export function importRecording(text: string, opts: ImportOptions): RecordImport {
  const events = parseRecord(text);
  if (events.length === 0) {
    throw new ImportError(
      'bpftrace',
      null,
      'no events: expected lines "<ns> <tid> <probe> key=value..." as scripts/record-execmem.bt prints them',
    );
  }
  let outOfOrder = 0;
  for (let i = 1; i < events.length; i++) if (events[i].ns < events[i - 1].ns) outOfOrder++;
  // Array.prototype.sort is stable: equal time stamps keep their input order.
  const sorted = [...events].sort((a, b) => (a.ns < b.ns ? -1 : a.ns > b.ns ? 1 : 0));
  const imp = new RecordImporter(opts);
  if (outOfOrder > 0) imp.count('outOfOrder', outOfOrder);
  imp.builder.phase('recording');
  for (const ev of sorted) imp.take(ev);
  imp.finish();
  return {
    trace: imp.builder.build(),
    inputRecords: events.length,
    frees: imp.frees,
    moduleLoads: imp.moduleLoads,
    liveAtEnd: imp.liveCount,
    notes: imp.notes(),
  };
}
