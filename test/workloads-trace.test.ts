// Tests of the trace format: the validator rejects each kind of bad event with a typed error that
// names the event, files round-trip, and corrupt files fail cleanly.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  loadTrace,
  saveTrace,
  summarizeTrace,
  TRACE_FORMAT,
  type Trace,
  TraceError,
  type TraceEvent,
  validateTrace,
} from '../src/workloads/trace.js';
import { trampolines } from '../src/workloads/trampolines.js';
import { withTempDir } from './helpers/tempdir.js';

function traceOf(events: unknown[]): unknown {
  return { format: TRACE_FORMAT, name: 't', seed: 7, events };
}

const base: TraceEvent[] = [
  { op: 'phase', name: 'load' },
  { op: 'alloc', id: 1, type: 'module_text', sizeBytes: 100 },
  { op: 'write', id: 1, offsetBytes: 0, sizeBytes: 100 },
  { op: 'alloc', id: 2, type: 'module_ro_after_init', sizeBytes: 64, alignBytes: 64 },
  { op: 'write', id: 2, offsetBytes: 10, sizeBytes: 54, fill: 'data' },
  { op: 'finalize', id: 1 },
  { op: 'finalize', id: 2 },
  { op: 'exec', ids: [1], calls: 5 },
  { op: 'seal', id: 2 },
  { op: 'free', id: 2 },
  { op: 'exec', calls: 3 },
];

function expectEventError(events: unknown[], index: number, pattern: RegExp): void {
  assert.throws(
    () => validateTrace(traceOf(events)),
    (err: unknown) => {
      assert.ok(err instanceof TraceError, `expected TraceError, got ${err}`);
      assert.equal(err.code, 'EEVENT');
      assert.equal(err.eventIndex, index);
      assert.match(err.message, new RegExp(`event ${index}:`));
      assert.match(err.message, pattern);
      return true;
    },
  );
}

test('a well-formed trace validates and summarizes', () => {
  const t = validateTrace(traceOf(base));
  const s = summarizeTrace(t);
  assert.equal(s.events, base.length);
  assert.deepEqual(s.ops, { alloc: 2, write: 2, finalize: 2, seal: 1, free: 1, exec: 2, phase: 1 });
  assert.deepEqual(s.allocBytesByType, { module_text: 100, module_ro_after_init: 64 });
});

test('each broken rule is a TraceError naming the event index and the problem', () => {
  const cases: Array<[TraceEvent | Record<string, unknown>, RegExp]> = [
    [{ op: 'jump', id: 1 }, /unknown op/],
    [{ op: 'constructor', id: 1 }, /unknown op/],
    [{ op: 'toString' }, /unknown op/],
    [{ op: 'free', id: 1, extra: true }, /unknown key 'extra'/],
    [{ op: 'free', id: 99 }, /never allocated/],
    [{ op: 'alloc', id: 1, type: 'bpf', sizeBytes: 8 }, /allocated a second time/],
    [{ op: 'alloc', id: 5, type: 'heap', sizeBytes: 8 }, /unknown type/],
    [{ op: 'alloc', id: 5, type: 'bpf', sizeBytes: 0 }, /sizeBytes/],
    [{ op: 'alloc', id: 5, type: 'bpf', sizeBytes: 1.5 }, /sizeBytes/],
    [{ op: 'alloc', id: 5, type: 'bpf', sizeBytes: 8, alignBytes: 48 }, /alignBytes/],
    [{ op: 'alloc', id: 5, type: 'bpf', sizeBytes: 8, alignBytes: 8192 }, /alignBytes/],
    [{ op: 'alloc', id: -1, type: 'bpf', sizeBytes: 8 }, /id must be/],
    [{ op: 'write', id: 1, offsetBytes: 90, sizeBytes: 11 }, /crosses the end/],
    [{ op: 'write', id: 1, offsetBytes: -1, sizeBytes: 1 }, /offsetBytes/],
    [{ op: 'write', id: 1, offsetBytes: 0, sizeBytes: 1, fill: 'junk' }, /fill must be/],
    [{ op: 'seal', id: 1 }, /only module_ro_after_init/],
    [{ op: 'finalize', id: 1 }, /already finalized/],
    [{ op: 'free', id: 2 }, /not live \(freed at event 9\)/],
    [{ op: 'exec', ids: [2], calls: 1 }, /not live/],
    [{ op: 'exec', ids: [1, 1], calls: 1 }, /listed twice/],
    [{ op: 'exec', ids: [], calls: 1 }, /non-empty/],
    [{ op: 'exec', calls: 0 }, /calls/],
    [{ op: 'phase', name: '' }, /name/],
  ];
  for (const [bad, pattern] of cases) expectEventError([...base, bad], base.length, pattern);
});

test('lifecycle rules: seal before finalize, write after seal, rodata after finalize, code into data', () => {
  const a = (id: number, type: string) => ({ op: 'alloc', id, type, sizeBytes: 64 });
  expectEventError([a(1, 'module_ro_after_init'), { op: 'seal', id: 1 }], 1, /seal before finalize/);
  expectEventError(
    [
      a(1, 'module_ro_after_init'),
      { op: 'finalize', id: 1 },
      { op: 'seal', id: 1 },
      { op: 'write', id: 1, offsetBytes: 0, sizeBytes: 1 },
    ],
    3,
    /sealed/,
  );
  expectEventError(
    [a(1, 'module_rodata'), { op: 'finalize', id: 1 }, { op: 'write', id: 1, offsetBytes: 0, sizeBytes: 1 }],
    2,
    /read-only after finalize/,
  );
  expectEventError(
    [a(1, 'module_data'), { op: 'write', id: 1, offsetBytes: 0, sizeBytes: 1, fill: 'code' }],
    1,
    /holds no code/,
  );
  expectEventError([a(1, 'module_data'), { op: 'exec', ids: [1], calls: 1 }], 1, /holds no code/);
  // Text may be written after finalize (ftrace patching, text_poke): not an error.
  validateTrace(
    traceOf([
      a(1, 'module_text'),
      { op: 'finalize', id: 1 },
      { op: 'write', id: 1, offsetBytes: 0, sizeBytes: 4 },
    ]),
  );
});

test('module loads: one number per load, consecutive allocs, init only with a module', () => {
  const load = (id: number, module: number, init = false): TraceEvent => ({
    op: 'alloc',
    id,
    type: 'module_text',
    sizeBytes: 64,
    module,
    ...(init ? { init: true } : {}),
  });
  validateTrace(traceOf([load(1, 0), load(2, 0, true), load(3, 1)]));
  expectEventError([load(1, 0), { op: 'phase', name: 'x' }, load(2, 0)], 2, /module 0 was already loaded/);
  expectEventError([load(1, 0), load(2, 1), load(3, 0)], 2, /module 0 was already loaded/);
  expectEventError(
    [{ op: 'alloc', id: 1, type: 'bpf', sizeBytes: 64, init: true }],
    0,
    /init needs a module/,
  );
  expectEventError([{ ...load(1, 0), init: false }], 0, /init must be true/);
  expectEventError([{ ...load(1, -1) }], 0, /module must be an integer/);
  expectEventError(
    [{ op: 'alloc', id: 1, type: 'bpf', sizeBytes: 64, caller: 'x' }],
    0,
    /caller must be one of/,
  );
  validateTrace(traceOf([{ op: 'alloc', id: 1, type: 'bpf', sizeBytes: 64, caller: 'bpf_trampoline' }]));
});

test('code writes name their functions inside the write, in order; exec-all only when quiescent', () => {
  const alloc: TraceEvent = { op: 'alloc', id: 1, type: 'bpf', sizeBytes: 256 };
  const write = (functions: unknown, fill = 'code'): unknown => ({
    op: 'write',
    id: 1,
    offsetBytes: 0,
    sizeBytes: 128,
    fill,
    functions,
  });
  validateTrace(
    traceOf([
      alloc,
      write([
        [8, 40],
        [48, 80],
      ]),
    ]),
  );
  expectEventError(
    [
      alloc,
      write([
        [48, 10],
        [8, 10],
      ]),
    ],
    1,
    /out of order or outside the write/,
  );
  expectEventError([alloc, write([[100, 40]])], 1, /outside the write \[0, 128\)/);
  expectEventError([alloc, write([[0, 0]])], 1, /sizeBytes >= 1/);
  expectEventError([alloc, write([])], 1, /non-empty array/);
  expectEventError([alloc, write([[0, 8]], 'data')], 1, /only for code writes/);
  expectEventError([alloc, { op: 'exec', calls: 1 }], 1, /while id 1 is allocated but not finalized/);
  validateTrace(traceOf([alloc, { op: 'finalize', id: 1 }, { op: 'exec', calls: 1 }]));
  validateTrace(traceOf([alloc, { op: 'free', id: 1 }, { op: 'exec', calls: 1 }]));
});

test('envelope errors are EFORMAT with no event index', () => {
  const bad: unknown[] = [
    null,
    [],
    { format: 'execmem-trace/2', name: 't', seed: 1, events: [] },
    { format: TRACE_FORMAT, name: '', seed: 1, events: [] },
    { format: TRACE_FORMAT, name: 't', seed: -1, events: [] },
    { format: TRACE_FORMAT, name: 't', seed: 1 },
    { format: TRACE_FORMAT, name: 't', seed: 1, events: [], more: 1 },
  ];
  for (const doc of bad) {
    assert.throws(
      () => validateTrace(doc),
      (err: unknown) => err instanceof TraceError && err.code === 'EFORMAT' && err.eventIndex === null,
    );
  }
});

test('save then load round-trips a generated trace', () => {
  withTempDir('execmem-trace-', (dir) => {
    const t = trampolines({ seed: 3, scale: 0.02 });
    const path = join(dir, 't.json');
    saveTrace(path, t);
    assert.deepEqual(loadTrace(path), t);
  });
});

test('a corrupt trace file gives a typed error naming the bad event; bad files give EFORMAT/EIO', () => {
  withTempDir('execmem-trace-', (dir) => {
    const t = trampolines({ seed: 4, scale: 0.02 });
    const path = join(dir, 't.json');
    saveTrace(path, t);
    // saveTrace writes one event per line after the header line: corrupt the first free event.
    const lines = readFileSync(path, 'utf8').split('\n');
    const firstFree = t.events.findIndex((e) => e.op === 'free');
    assert.ok(firstFree > 0, 'the generated trace frees something');
    const line = 1 + firstFree;
    assert.match(lines[line], /"op":"free"/);
    lines[line] = lines[line].replace(/"id":\d+/, '"id":999999');
    writeFileSync(path, lines.join('\n'));
    assert.throws(
      () => loadTrace(path),
      (err: unknown) => err instanceof TraceError && err.code === 'EEVENT' && err.eventIndex === firstFree,
    );
    writeFileSync(path, '{"format": "execmem-trace/1", ');
    assert.throws(
      () => loadTrace(path),
      (err: unknown) => err instanceof TraceError && err.code === 'EFORMAT',
    );
    assert.throws(
      () => loadTrace(join(dir, 'missing.json')),
      (err: unknown) => err instanceof TraceError && err.code === 'EIO',
    );
  });
});

test('saveTrace refuses an invalid trace and writes nothing', () => {
  withTempDir('execmem-trace-', (dir) => {
    const path = join(dir, 'bad.json');
    const bad = traceOf([{ op: 'free', id: 1 }]) as Trace;
    assert.throws(() => saveTrace(path, bad), TraceError);
    assert.equal(existsSync(path), false);
  });
});

test('property: any single-field mutation of a valid trace validates or fails as TraceError, never otherwise', () => {
  const t = trampolines({ seed: 5, scale: 0.01 });
  const keys = [
    'op',
    'id',
    'type',
    'sizeBytes',
    'alignBytes',
    'offsetBytes',
    'fill',
    'ids',
    'calls',
    'name',
    'module',
    'init',
    'caller',
    'functions',
  ];
  fc.assert(
    fc.property(
      fc.nat({ max: t.events.length - 1 }),
      fc.constantFrom(...keys),
      fc.oneof(
        fc.integer(),
        fc.double(),
        fc.string(),
        fc.constant(null),
        fc.array(fc.integer(), { maxLength: 3 }),
      ),
      (index, key, value) => {
        const events = t.events.map((e) => ({ ...e })) as Record<string, unknown>[];
        events[index][key] = value;
        try {
          validateTrace(traceOf(events));
        } catch (err) {
          assert.ok(err instanceof TraceError, `unexpected ${err}`);
          assert.ok(err.eventIndex === null || err.eventIndex <= t.events.length);
        }
      },
    ),
    { numRuns: 300 },
  );
});
