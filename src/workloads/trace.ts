/**
 * The trace format: one workload as a JSON document, and its strict validator.
 *
 * Why a trace at all: the project's claim is comparative ("better than what Linux merged"), so
 * the same work has to run through every design (src/policies) on the same machine. A generator
 * that talked to an allocator directly would make that "same work" an act of faith; a trace is a
 * value that can be saved, diffed, loaded again and replayed event by event against any
 * ExecAllocator. Size figures in the generators come from ../shared/research (Song Liu's BPF
 * size mix, <20221128190245.2337461-1-song@kernel.org>; Aaron Lu's direct-map test,
 * <Y2ioTodn+mBXdIqp@ziqianlu-desk2>), and say so where they are assumed instead.
 *
 * Format `execmem-trace/1`:
 *
 *   { "format": "execmem-trace/1", "name": string, "seed": uint32, "events": Event[] }
 *
 *   { op: 'alloc',    id, type, sizeBytes, alignBytes?, module?, init?, caller? }
 *                     type is an ExecmemType; alignBytes a power of two <= 4096 (default: none);
 *                     module: a module-load number: the allocs of one module load carry the same
 *                     number and stand together (load_module allocates every region before it
 *                     copies anything), which lets designs that lay a module out as one core and
 *                     one init region (Linux before 6.4) see the whole load; init: true for the
 *                     regions freed after init (needs module); caller: the kernel caller where a
 *                     design treats it apart ('bpf_trampoline')
 *   { op: 'write',    id, offsetBytes, sizeBytes, fill?, functions? }
 *                     bytes [offset, offset+size) of the allocation, written in one go (one
 *                     memcpy / text_poke_copy); fill 'code' (default for text types), 'data'
 *                     (default for data types) or 'zero'; functions: for code writes, the
 *                     [offsetBytes, sizeBytes] pairs (relative to the allocation, inside the
 *                     write, in order, not overlapping) the fetch model may call; default: the
 *                     whole write is one function
 *   { op: 'finalize', id }   loading of this allocation is complete (Linux: set_memory_ro/x, or
 *                            bpf_jit_binary_pack_finalize's text_poke_copy)
 *   { op: 'seal',     id }   module_ro_after_init only: made read-only after init
 *   { op: 'free',     id }
 *   { op: 'exec',     ids?, calls }  a hint: here the instruction-fetch model should run `calls`
 *                                    calls over the code written into `ids` (default: every live
 *                                    allocation holding code)
 *   { op: 'phase',    name }         a marker that names the part of the run that follows
 *
 * Rules the validator enforces (each violation is a TraceError naming the event index):
 * - every key is known and of the right type; integers are safe integers in their limits;
 * - an id is allocated once in a trace (ids are never reused, so a trace reads unambiguously);
 * - write/finalize/seal/free name a live id; a write lies inside its allocation;
 * - `code` writes go to text types only; nothing is written after a seal; module_rodata is not
 *   written after its finalize (it is read-only from then on, as module_enable_rodata_ro makes it);
 * - seal names a finalized module_ro_after_init allocation, once;
 * - exec ids are live, distinct, and of text types;
 * - the allocs of one module number are consecutive events and the number is used for one load
 *   only; `init` only with a module number;
 * - an exec hint over all live code (no ids) comes only at a quiescent point: no live allocation
 *   is between its alloc and its finalize. Linux runs nothing from a load in flight, and a
 *   sample taken mid-load would measure a half-written module (its text still RW, its block split).
 * A trace need not free everything: a run ends with what is live, as a machine keeps running.
 *
 * Batches (replay.ts): for a design that batches (ExecAllocator.batch, ours), the consecutive
 * write and finalize events into the regions of one module load (ids allocated with the same
 * `module` number) are one batch, and so are the consecutive frees of one module's regions (its
 * unload, or its init frees after init). Generators emit them consecutively (modules.ts), and
 * `mixed` keeps each together in one segment. Designs that do not batch (the Linux rows, whose
 * kernels write section by section) replay the same events one by one.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { EXECMEM_TYPES, type ExecmemType, typeIsText } from '../arch/types.js';
import { isPow2 } from '../base/addr.js';
import { ALLOC_CALLERS, type AllocCaller } from '../policies/types.js';

export const TRACE_FORMAT = 'execmem-trace/1';

/** Limits: explicit, so a corrupt or hostile file fails with a message instead of exhausting memory. */
export const TRACE_MAX_EVENTS = 20_000_000;
export const TRACE_MAX_ALLOC_BYTES = 256 * 1024 * 1024;
export const TRACE_MAX_ALIGN_BYTES = 4096;
export const TRACE_MAX_ID = 2 ** 31 - 1;
export const TRACE_MAX_EXEC_CALLS = 1_000_000_000;
export const TRACE_MAX_NAME_CHARS = 200;

export type WriteFill = 'code' | 'data' | 'zero';
export const WRITE_FILLS: readonly WriteFill[] = ['code', 'data', 'zero'];

export interface AllocEvent {
  readonly op: 'alloc';
  readonly id: number;
  readonly type: ExecmemType;
  readonly sizeBytes: number;
  readonly alignBytes?: number;
  /** Module-load number shared by the allocs of one load (consecutive events). */
  readonly module?: number;
  /** A region freed after the module's init (needs `module`). */
  readonly init?: boolean;
  readonly caller?: AllocCaller;
}
/** A function inside a code write: [offsetBytes from the allocation start, sizeBytes]. */
export type FunctionRange = readonly [number, number];
export interface WriteEvent {
  readonly op: 'write';
  readonly id: number;
  readonly offsetBytes: number;
  readonly sizeBytes: number;
  readonly fill?: WriteFill;
  readonly functions?: readonly FunctionRange[];
}
export interface FinalizeEvent {
  readonly op: 'finalize';
  readonly id: number;
}
export interface SealEvent {
  readonly op: 'seal';
  readonly id: number;
}
export interface FreeEvent {
  readonly op: 'free';
  readonly id: number;
}
export interface ExecEvent {
  readonly op: 'exec';
  readonly ids?: readonly number[];
  readonly calls: number;
}
export interface PhaseEvent {
  readonly op: 'phase';
  readonly name: string;
}

export type TraceEvent =
  | AllocEvent
  | WriteEvent
  | FinalizeEvent
  | SealEvent
  | FreeEvent
  | ExecEvent
  | PhaseEvent;
export type TraceOp = TraceEvent['op'];
export const TRACE_OPS: readonly TraceOp[] = ['alloc', 'write', 'finalize', 'seal', 'free', 'exec', 'phase'];

export interface Trace {
  readonly format: typeof TRACE_FORMAT;
  readonly name: string;
  readonly seed: number;
  readonly events: readonly TraceEvent[];
}

export type TraceErrorCode =
  /** The document itself is wrong (not JSON, wrong format tag, missing fields). */
  | 'EFORMAT'
  /** One event is wrong; `eventIndex` says which. */
  | 'EEVENT'
  /** The file could not be read or written. */
  | 'EIO';

export class TraceError extends Error {
  override name = 'TraceError';
  constructor(
    readonly code: TraceErrorCode,
    readonly eventIndex: number | null,
    message: string,
  ) {
    super(eventIndex === null ? `${code}: ${message}` : `${code}: event ${eventIndex}: ${message}`);
  }
}

/** The fill a write gets when the event does not say: code for text types, data otherwise. */
export function defaultFill(type: ExecmemType): WriteFill {
  return typeIsText(type) ? 'code' : 'data';
}

const EVENT_KEYS: Readonly<Record<TraceOp, readonly string[]>> = {
  alloc: ['op', 'id', 'type', 'sizeBytes', 'alignBytes', 'module', 'init', 'caller'],
  write: ['op', 'id', 'offsetBytes', 'sizeBytes', 'fill', 'functions'],
  finalize: ['op', 'id'],
  seal: ['op', 'id'],
  free: ['op', 'id'],
  exec: ['op', 'ids', 'calls'],
  phase: ['op', 'name'],
};

/** What the validator tracks per id while it walks the events. */
interface IdState {
  readonly type: ExecmemType;
  readonly sizeBytes: number;
  live: boolean;
  finalized: boolean;
  sealed: boolean;
  /** Event index of the free, for messages about use after free. */
  freedAt: number;
}

/** What the validator tracks across events. */
interface WalkState {
  readonly ids: Map<number, IdState>;
  /** Live ids between alloc and finalize (a load in flight). */
  readonly inFlight: Set<number>;
  /** Module numbers already used, and the one whose allocs are being read. */
  readonly modules: Set<number>;
  openModule: number | null;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isIntIn(v: unknown, lo: number, hi: number): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= lo && v <= hi;
}

/**
 * Check a parsed document and return it typed as a Trace. Throws TraceError (EFORMAT for the
 * envelope, EEVENT with the index for the first bad event). The value is not copied or changed.
 */
export function validateTrace(doc: unknown): Trace {
  if (!isRecord(doc)) throw new TraceError('EFORMAT', null, 'a trace must be a JSON object');
  for (const key of Object.keys(doc)) {
    if (!['format', 'name', 'seed', 'events'].includes(key)) {
      throw new TraceError('EFORMAT', null, `unknown top-level key '${key}'`);
    }
  }
  if (doc.format !== TRACE_FORMAT) {
    throw new TraceError(
      'EFORMAT',
      null,
      `format must be '${TRACE_FORMAT}', got ${JSON.stringify(doc.format)}`,
    );
  }
  if (typeof doc.name !== 'string' || doc.name.length === 0 || doc.name.length > TRACE_MAX_NAME_CHARS) {
    throw new TraceError('EFORMAT', null, `name must be a string of 1..${TRACE_MAX_NAME_CHARS} characters`);
  }
  if (!isIntIn(doc.seed, 0, 0xffffffff))
    throw new TraceError('EFORMAT', null, 'seed must be an integer in [0, 2^32)');
  if (!Array.isArray(doc.events)) throw new TraceError('EFORMAT', null, 'events must be an array');
  if (doc.events.length > TRACE_MAX_EVENTS) {
    throw new TraceError('EFORMAT', null, `too many events: ${doc.events.length} > ${TRACE_MAX_EVENTS}`);
  }
  const st: WalkState = { ids: new Map(), inFlight: new Set(), modules: new Set(), openModule: null };
  // One failure function for the walk (not one closure per event: traces have 100,000 events).
  let at = 0;
  const fail: Fail = (msg) => {
    throw new TraceError('EEVENT', at, msg);
  };
  for (let i = 0; i < doc.events.length; i++) {
    at = i;
    checkEvent(doc.events[i], i, st, fail);
  }
  return doc as unknown as Trace;
}

function checkEvent(ev: unknown, index: number, walk: WalkState, fail: Fail): void {
  const ids = walk.ids;
  if (!isRecord(ev)) fail('an event must be an object');
  const rec = ev as Record<string, unknown>;
  const op = rec.op;
  if (typeof op !== 'string' || !Object.hasOwn(EVENT_KEYS, op)) fail(`unknown op ${JSON.stringify(op)}`);
  const allowed = EVENT_KEYS[op as TraceOp];
  // for-in, not Object.keys: no array per event (a trace has up to TRACE_MAX_EVENTS); an inherited
  // enumerable key is refused like an own one.
  for (const key in rec) {
    if (!allowed.includes(key)) fail(`${op}: unknown key '${key}'`);
  }
  if (op !== 'alloc' || rec.module !== walk.openModule) walk.openModule = null;
  switch (op as TraceOp) {
    case 'alloc':
      checkAlloc(rec, walk, fail);
      break;
    case 'write':
      checkWrite(rec, liveState(rec, 'write', ids, fail), fail);
      break;
    case 'finalize':
      checkFinalize(liveState(rec, 'finalize', ids, fail), fail);
      walk.inFlight.delete(rec.id as number);
      break;
    case 'seal':
      checkSeal(liveState(rec, 'seal', ids, fail), fail);
      break;
    case 'free': {
      const st = liveState(rec, 'free', ids, fail);
      st.live = false;
      st.freedAt = index;
      walk.inFlight.delete(rec.id as number);
      break;
    }
    case 'exec':
      checkExec(rec, walk, fail);
      break;
    case 'phase':
      if (typeof rec.name !== 'string' || rec.name.length === 0 || rec.name.length > TRACE_MAX_NAME_CHARS) {
        fail(`phase: name must be a string of 1..${TRACE_MAX_NAME_CHARS} characters`);
      }
      break;
  }
}

type Fail = (msg: string) => never;

function checkId(v: unknown, op: string, fail: Fail): number {
  if (!isIntIn(v, 0, TRACE_MAX_ID)) fail(`${op}: id must be an integer in [0, ${TRACE_MAX_ID}]`);
  return v as number;
}

function liveState(ev: Record<string, unknown>, op: string, ids: Map<number, IdState>, fail: Fail): IdState {
  const id = checkId(ev.id, op, fail);
  const st = ids.get(id);
  if (!st) return fail(`${op}: id ${id} was never allocated`);
  if (!st.live) return fail(`${op}: id ${id} is not live (freed at event ${st.freedAt})`);
  return st;
}

function checkAlloc(ev: Record<string, unknown>, walk: WalkState, fail: Fail): void {
  const ids = walk.ids;
  const id = checkId(ev.id, 'alloc', fail);
  if (ids.has(id)) fail(`alloc: id ${id} is allocated a second time (ids are never reused)`);
  if (typeof ev.type !== 'string' || !(EXECMEM_TYPES as readonly string[]).includes(ev.type)) {
    fail(`alloc: unknown type ${JSON.stringify(ev.type)} (known: ${EXECMEM_TYPES.join(', ')})`);
  }
  if (!isIntIn(ev.sizeBytes, 1, TRACE_MAX_ALLOC_BYTES)) {
    fail(`alloc: sizeBytes must be an integer in [1, ${TRACE_MAX_ALLOC_BYTES}]`);
  }
  if (
    ev.alignBytes !== undefined &&
    !(isPow2(ev.alignBytes as number) && (ev.alignBytes as number) <= 4096)
  ) {
    fail(`alloc: alignBytes must be a power of two <= ${TRACE_MAX_ALIGN_BYTES}`);
  }
  checkModule(ev, walk, fail);
  if (ev.caller !== undefined && !(ALLOC_CALLERS as readonly unknown[]).includes(ev.caller)) {
    fail(`alloc: caller must be one of ${ALLOC_CALLERS.join(', ')}`);
  }
  walk.inFlight.add(id);
  const type = ev.type as ExecmemType;
  ids.set(id, {
    type,
    sizeBytes: ev.sizeBytes as number,
    live: true,
    finalized: false,
    sealed: false,
    freedAt: -1,
  });
}

/** A module number opens with its first alloc and must not appear again once another event came. */
function checkModule(ev: Record<string, unknown>, walk: WalkState, fail: Fail): void {
  if (ev.init !== undefined && ev.init !== true) fail('alloc: init must be true when given');
  if (ev.module === undefined) {
    if (ev.init !== undefined) fail('alloc: init needs a module number');
    return;
  }
  if (!isIntIn(ev.module, 0, TRACE_MAX_ID)) fail(`alloc: module must be an integer in [0, ${TRACE_MAX_ID}]`);
  const n = ev.module as number;
  if (walk.openModule === n) return;
  if (walk.modules.has(n)) {
    fail(`alloc: module ${n} was already loaded (the allocs of one load are consecutive events)`);
  }
  walk.modules.add(n);
  walk.openModule = n;
}

/** `functions` of a code write: ordered, non-overlapping, inside the write. */
function checkFunctions(ev: Record<string, unknown>, fill: unknown, fail: Fail): void {
  if (ev.functions === undefined) return;
  if (fill !== 'code') fail('write: functions are given only for code writes (fill code)');
  if (!Array.isArray(ev.functions) || ev.functions.length === 0)
    fail('write: functions must be a non-empty array of [offsetBytes, sizeBytes]');
  const start = ev.offsetBytes as number;
  const end = start + (ev.sizeBytes as number);
  let at = start;
  for (const f of ev.functions as unknown[]) {
    if (
      !Array.isArray(f) ||
      f.length !== 2 ||
      !isIntIn(f[0], 0, TRACE_MAX_ALLOC_BYTES) ||
      !isIntIn(f[1], 1, TRACE_MAX_ALLOC_BYTES)
    )
      fail('write: each function must be [offsetBytes, sizeBytes] with sizeBytes >= 1');
    const [off, size] = f as [number, number];
    if (off < at || off + size > end)
      fail(`write: function [${off}, ${off + size}) is out of order or outside the write [${start}, ${end})`);
    at = off + size;
  }
}

function checkWrite(ev: Record<string, unknown>, st: IdState, fail: Fail): void {
  if (!isIntIn(ev.offsetBytes, 0, TRACE_MAX_ALLOC_BYTES))
    fail('write: offsetBytes must be a non-negative integer');
  if (!isIntIn(ev.sizeBytes, 1, TRACE_MAX_ALLOC_BYTES)) fail('write: sizeBytes must be a positive integer');
  const end = (ev.offsetBytes as number) + (ev.sizeBytes as number);
  if (end > st.sizeBytes) {
    fail(
      `write: [${ev.offsetBytes}, ${end}) crosses the end of the ${st.sizeBytes}-byte allocation ${ev.id}`,
    );
  }
  if (ev.fill !== undefined && !(WRITE_FILLS as readonly unknown[]).includes(ev.fill)) {
    fail(`write: fill must be one of ${WRITE_FILLS.join(', ')}`);
  }
  if (ev.fill === 'code' && !typeIsText(st.type))
    fail(`write: code fill into ${st.type}, which holds no code`);
  checkFunctions(ev, ev.fill ?? defaultFill(st.type), fail);
  if (st.sealed) fail(`write: id ${ev.id} is sealed read-only`);
  if (st.finalized && st.type === 'module_rodata')
    fail(`write: id ${ev.id} (module_rodata) is read-only after finalize`);
}

function checkFinalize(st: IdState, fail: Fail): void {
  if (st.finalized) fail('finalize: already finalized');
  st.finalized = true;
}

function checkSeal(st: IdState, fail: Fail): void {
  if (st.type !== 'module_ro_after_init') fail(`seal: only module_ro_after_init is sealed, not ${st.type}`);
  if (!st.finalized) fail('seal: seal before finalize');
  if (st.sealed) fail('seal: already sealed');
  st.sealed = true;
}

function checkExec(ev: Record<string, unknown>, walk: WalkState, fail: Fail): void {
  const ids = walk.ids;
  if (!isIntIn(ev.calls, 1, TRACE_MAX_EXEC_CALLS))
    fail(`exec: calls must be an integer in [1, ${TRACE_MAX_EXEC_CALLS}]`);
  if (ev.ids === undefined) {
    const busy = walk.inFlight.values().next();
    if (!busy.done) {
      fail(
        `exec: a hint over all live code while id ${busy.value} is allocated but not finalized (sample only at quiescent points)`,
      );
    }
    return;
  }
  if (!Array.isArray(ev.ids) || ev.ids.length === 0) fail('exec: ids must be a non-empty array when given');
  const seen = new Set<number>();
  for (const raw of ev.ids as unknown[]) {
    const id = checkId(raw, 'exec', fail);
    if (seen.has(id)) fail(`exec: id ${id} listed twice`);
    seen.add(id);
    const st = ids.get(id);
    if (!st?.live) fail(`exec: id ${id} is not live`);
    else if (!typeIsText(st.type)) fail(`exec: id ${id} is ${st.type}, which holds no code`);
  }
}

/** Counts by op and bytes allocated by type: a quick, JSON-friendly description of a trace. */
export interface TraceSummary {
  readonly events: number;
  readonly ops: Record<TraceOp, number>;
  readonly allocBytesByType: Partial<Record<ExecmemType, number>>;
  readonly allocCountByType: Partial<Record<ExecmemType, number>>;
}

export function summarizeTrace(trace: Trace): TraceSummary {
  const ops = Object.fromEntries(TRACE_OPS.map((op) => [op, 0])) as Record<TraceOp, number>;
  const allocBytesByType: Partial<Record<ExecmemType, number>> = {};
  const allocCountByType: Partial<Record<ExecmemType, number>> = {};
  for (const ev of trace.events) {
    ops[ev.op]++;
    if (ev.op === 'alloc') {
      allocBytesByType[ev.type] = (allocBytesByType[ev.type] ?? 0) + ev.sizeBytes;
      allocCountByType[ev.type] = (allocCountByType[ev.type] ?? 0) + 1;
    }
  }
  return { events: trace.events.length, ops, allocBytesByType, allocCountByType };
}

/** Read and validate a trace file. Errors: TraceError EIO (unreadable), EFORMAT, EEVENT. */
export function loadTrace(path: string): Trace {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new TraceError('EIO', null, `cannot read ${path}: ${(err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new TraceError('EFORMAT', null, `${path} is not JSON: ${(err as Error).message}`);
  }
  return validateTrace(doc);
}

/**
 * Validate and write a trace, one event per line (so traces diff well). Nothing is written when
 * the trace is invalid.
 */
export function saveTrace(path: string, trace: Trace): void {
  validateTrace(trace);
  const head = `{"format":${JSON.stringify(trace.format)},"name":${JSON.stringify(trace.name)},"seed":${trace.seed},"events":[`;
  const body = trace.events.map((ev) => JSON.stringify(ev)).join(',\n');
  try {
    writeFileSync(path, `${head}\n${body}\n]}\n`);
  } catch (err) {
    throw new TraceError('EIO', null, `cannot write ${path}: ${(err as Error).message}`);
  }
}
