// Tests of the replay engine against a tiny in-test ExecAllocator over plain memory: counts match
// the trace, bytes are deterministic and code never holds a trap byte, exec hooks see live code,
// and allocator failures are recorded (or rethrown in strict mode) without stopping the run.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ExecmemType } from '../src/arch/types.js';
import type { ExecAllocator } from '../src/policies/types.js';
import { bpfChurn } from '../src/workloads/bpf.js';
import { bytesFor, CODE_EXCLUDED_BYTES } from '../src/workloads/bytes.js';
import { WORKLOADS } from '../src/workloads/registry.js';
import { type ExecFunction, replay } from '../src/workloads/replay.js';
import { summarizeTrace, TRACE_FORMAT, type Trace, type TraceEvent } from '../src/workloads/trace.js';

class NoSpace extends Error {
  readonly code = 'ENOSPC';
}

/**
 * A bump allocator over one Uint8Array: addresses start at BASE, each allocation is rounded to
 * its alignment, frees fill with 0xcc. It checks every call against its own records, so a replay
 * engine that wrote outside an allocation or freed twice would make it throw an assertion.
 */
class PlainAllocator implements ExecAllocator {
  readonly name = 'plain';
  static readonly BASE = 0x1000_0000;
  readonly mem: Uint8Array;
  private top = 0;
  readonly live = new Map<
    number,
    { sizeBytes: number; type: ExecmemType; finalized: boolean; sealed: boolean }
  >();
  readonly calls = { alloc: 0, write: 0, finalize: 0, seal: 0, free: 0 };
  constructor(readonly capacityBytes: number) {
    this.mem = new Uint8Array(capacityBytes).fill(0xcc);
  }
  alloc(type: ExecmemType, sizeBytes: number, alignBytes = 16): number {
    const off = Math.ceil(this.top / alignBytes) * alignBytes;
    if (off + sizeBytes > this.capacityBytes) throw new NoSpace(`ENOSPC: ${sizeBytes} bytes for ${type}`);
    this.top = off + sizeBytes;
    const va = PlainAllocator.BASE + off;
    this.live.set(va, { sizeBytes, type, finalized: false, sealed: false });
    this.calls.alloc++;
    return va;
  }
  private owner(va: number): [number, { sizeBytes: number; sealed: boolean }] {
    for (const [start, a] of this.live) if (va >= start && va < start + a.sizeBytes) return [start, a];
    throw new assert.AssertionError({ message: `no live allocation at ${va}` });
  }
  write(va: number, bytes: Uint8Array): void {
    const [start, a] = this.owner(va);
    assert.ok(va + bytes.length <= start + a.sizeBytes, 'write crosses the end');
    assert.ok(!a.sealed, 'write to sealed');
    this.mem.set(bytes, va - PlainAllocator.BASE);
    this.calls.write++;
  }
  finalize(va: number): void {
    const a = this.live.get(va);
    assert.ok(a && !a.finalized);
    a.finalized = true;
    this.calls.finalize++;
  }
  seal(va: number): void {
    const a = this.live.get(va);
    assert.ok(a && a.type === 'module_ro_after_init');
    a.sealed = true;
    this.calls.seal++;
  }
  free(va: number): void {
    const a = this.live.get(va);
    assert.ok(a, 'free of a non-live address');
    this.mem.fill(0xcc, va - PlainAllocator.BASE, va - PlainAllocator.BASE + a.sizeBytes);
    this.live.delete(va);
    this.calls.free++;
  }
  shrink(): void {}
  usage(): { liveBytes: number; mappedBytes: number } {
    let liveBytes = 0;
    for (const a of this.live.values()) liveBytes += a.sizeBytes;
    return { liveBytes, mappedBytes: this.top };
  }
}

/** Peak live bytes computed straight from the trace. */
function tracePeakLive(t: Trace): number {
  const size = new Map<number, number>();
  let live = 0;
  let peak = 0;
  for (const ev of t.events) {
    if (ev.op === 'alloc') {
      size.set(ev.id, ev.sizeBytes);
      live += ev.sizeBytes;
      peak = Math.max(peak, live);
    } else if (ev.op === 'free') live -= size.get(ev.id)!;
  }
  return peak;
}

test('replay of every workload against a plain allocator applies every event and counts it', () => {
  for (const [name, spec] of Object.entries(WORKLOADS)) {
    const t = spec.generate({ seed: 4, scale: 0.02 });
    const a = new PlainAllocator(64 * 1024 * 1024);
    const r = replay(t, a, {}, { strict: true });
    const s = summarizeTrace(t);
    assert.deepEqual(r.ops, s.ops, name);
    assert.equal(r.failureCount, 0);
    assert.equal(r.skipped, 0);
    assert.deepEqual(a.calls, {
      alloc: s.ops.alloc,
      write: s.ops.write,
      finalize: s.ops.finalize,
      seal: s.ops.seal,
      free: s.ops.free,
    });
    assert.equal(r.peakLiveBytes, tracePeakLive(t), name);
    assert.equal(r.liveCount, a.live.size);
    assert.equal(r.liveBytes, a.usage().liveBytes);
    assert.equal(r.mappedBytes, a.usage().mappedBytes);
    const written = t.events.reduce((n, e) => n + (e.op === 'write' ? e.sizeBytes : 0), 0);
    assert.equal(r.writtenBytes, written);
  }
});

test('replayed code bytes never hold a trap byte, are deterministic, and data bytes may', () => {
  const t = bpfChurn({ seed: 6, scale: 0.05 });
  const a1 = new PlainAllocator(16 * 1024 * 1024);
  const a2 = new PlainAllocator(16 * 1024 * 1024);
  let fns: readonly ExecFunction[] = [];
  replay(t, a1, { onExec: (f) => (fns = f) }, { strict: true }); // keep the last hint: all live
  replay(t, a2, {}, { strict: true });
  assert.deepEqual(a1.mem, a2.mem, 'same trace, same bytes');
  assert.equal(fns.length, a1.live.size, 'one code range per live program');
  let codeBytes = 0;
  for (const f of fns) {
    const off = f.va - PlainAllocator.BASE;
    for (const b of a1.mem.subarray(off, off + f.sizeBytes))
      assert.ok(!CODE_EXCLUDED_BYTES.includes(b), `code byte ${b}`);
    codeBytes += f.sizeBytes;
  }
  assert.ok(codeBytes > 1000);
  // Data writes are not filtered like code: module .data and .rodata bytes hit 0x00 / 0xcc.
  const mods = WORKLOADS['modules-synthetic'].generate({ seed: 6, scale: 0.05 });
  const a3 = new PlainAllocator(64 * 1024 * 1024);
  replay(mods, a3, {}, { strict: true });
  let dataExcluded = 0;
  for (const [va, x] of a3.live) {
    if (x.type !== 'module_data' && x.type !== 'module_rodata') continue;
    const off = va - PlainAllocator.BASE;
    for (const b of a3.mem.subarray(off, off + x.sizeBytes))
      if (CODE_EXCLUDED_BYTES.includes(b)) dataExcluded++;
  }
  assert.ok(dataExcluded > 0, 'data writes are not filtered like code');
  assert.deepEqual(CODE_EXCLUDED_BYTES, [0x00, 0xcc]);
  // Directly: 64 KiB of data bytes use all 256 values; code bytes use all but the two excluded.
  const data = new Set(bytesFor('data', 65536, 1, 0));
  const code = new Set(bytesFor('code', 65536, 1, 0));
  assert.equal(data.size, 256);
  assert.equal(code.size, 254);
  assert.ok(!code.has(0) && !code.has(0xcc));
  assert.ok(bytesFor('zero', 64, 1, 0).every((b) => b === 0));
  assert.notDeepEqual(bytesFor('code', 64, 1, 0), bytesFor('code', 64, 1, 1), 'bytes depend on the event');
});

test('onExec gets the live code ranges; progress ends at (total, total); onEvent sees each event', () => {
  const t = WORKLOADS['modules-synthetic'].generate({ seed: 3, scale: 0.05 });
  const a = new PlainAllocator(64 * 1024 * 1024);
  let events = 0;
  let execs = 0;
  const progress: Array<[number, number]> = [];
  replay(
    t,
    a,
    {
      onEvent: () => events++,
      onExec: (fns, calls) => {
        execs++;
        assert.ok(calls > 0);
        for (const f of fns) {
          // Every function lies inside a live allocation of the plain allocator.
          const inside = [...a.live].some(
            ([va, x]) => x.finalized && f.va >= va && f.va + f.sizeBytes <= va + x.sizeBytes,
          );
          assert.ok(inside, 'exec function inside a live, finalized allocation');
        }
      },
      progress: (done, total) => progress.push([done, total]),
    },
    { strict: true, progressEveryEvents: 100 },
  );
  assert.equal(events, t.events.length);
  assert.equal(execs, summarizeTrace(t).ops.exec);
  assert.deepEqual(progress.at(-1), [t.events.length, t.events.length]);
  assert.equal(progress.length, Math.ceil(t.events.length / 100));
});

test('exec hints run only finalized code: written but unpublished text is never executed', () => {
  const events: TraceEvent[] = [
    { op: 'alloc', id: 1, type: 'bpf', sizeBytes: 256 },
    { op: 'write', id: 1, offsetBytes: 0, sizeBytes: 256, fill: 'code', functions: [[16, 200]] },
    { op: 'exec', ids: [1], calls: 10 },
    { op: 'finalize', id: 1 },
    { op: 'exec', calls: 10 },
    { op: 'exec', ids: [1], calls: 10 },
  ];
  const t: Trace = { format: TRACE_FORMAT, name: 'finalize-gate', seed: 1, events };
  const seen: number[] = [];
  replay(
    t,
    new PlainAllocator(1 << 20),
    {
      onExec: (fns, _calls, i) => {
        seen.push(i, fns.length);
        assert.deepEqual(
          fns.map((f) => [f.va - PlainAllocator.BASE, f.sizeBytes]),
          [[16, 200]],
          'the named function, not the whole write',
        );
      },
    },
    { strict: true },
  );
  assert.deepEqual(seen, [4, 1, 5, 1], 'no exec before finalize (event 2), one function after (4, 5)');
  // A hint over all live code while a load is in flight is not a valid trace (quiescent points only).
  const midLoad = [...events.slice(0, 2), { op: 'exec', calls: 10 } as TraceEvent, ...events.slice(3)];
  assert.throws(
    () => replay({ ...t, events: midLoad }, new PlainAllocator(1 << 20)),
    /event 2: exec: a hint over all live code while id 1 is allocated but not finalized/,
  );
});

test('allocator failures are recorded per event, later events on the lost id skipped, strict rethrows', () => {
  const t: Trace = {
    format: TRACE_FORMAT,
    name: 'enospc',
    seed: 1,
    events: [
      { op: 'alloc', id: 0, type: 'bpf', sizeBytes: 3000 },
      { op: 'alloc', id: 1, type: 'bpf', sizeBytes: 3000 }, // does not fit in 4096
      { op: 'write', id: 1, offsetBytes: 0, sizeBytes: 10 },
      { op: 'finalize', id: 1 },
      { op: 'write', id: 0, offsetBytes: 0, sizeBytes: 10 },
      { op: 'free', id: 1 },
      { op: 'free', id: 0 },
      { op: 'alloc', id: 2, type: 'bpf', sizeBytes: 1500 }, // bump allocator: still no room
    ],
  };
  const r = replay(t, new PlainAllocator(4096));
  assert.equal(r.failureCount, 2);
  assert.deepEqual(
    r.failures.map((f) => [f.eventIndex, f.op, f.id, f.code]),
    [
      [1, 'alloc', 1, 'ENOSPC'],
      [7, 'alloc', 2, 'ENOSPC'],
    ],
  );
  assert.match(r.failures[0].reason, /3000 bytes for bpf/);
  assert.equal(r.skipped, 3);
  assert.equal(r.ops.alloc, 1);
  assert.equal(r.ops.write, 1);
  assert.equal(r.ops.free, 1);
  assert.equal(r.failed.alloc, 2);
  assert.equal(r.liveBytes, 0);
  assert.equal(r.peakLiveBytes, 3000);
  assert.throws(() => replay(t, new PlainAllocator(4096), {}, { strict: true }), NoSpace);
});

test('replay validates the trace first and names the bad event', () => {
  const bad = {
    format: TRACE_FORMAT,
    name: 'x',
    seed: 1,
    events: [{ op: 'free', id: 3 }],
  } as unknown as Trace;
  const a = new PlainAllocator(4096);
  assert.throws(() => replay(bad, a), /event 0: free: id 3 was never allocated/);
  assert.equal(a.calls.free, 0, 'nothing reached the allocator');
});
