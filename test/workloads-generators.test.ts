// Tests of the workload generators: determinism, validity checked by an independent lifecycle
// walk (not only the trace validator), the published BPF size mix, and each workload's shape.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EXECMEM_TYPES, type ExecmemType, typeIsText } from '../src/arch/types.js';
import { Rng } from '../src/base/rng.js';
import { bpfAaronLu, bpfChurn } from '../src/workloads/bpf.js';
import { modulesSynthetic } from '../src/workloads/modules.js';
import { WORKLOADS, workloadByName } from '../src/workloads/registry.js';
import {
  BPF_CHUNK_BYTES,
  BPF_HEADER_BYTES,
  bpfJitImage,
  bpfProgBytes,
  KPROBE_SLOT_BYTES,
} from '../src/workloads/sizes.js';
import type { Trace, TraceEvent, WriteEvent } from '../src/workloads/trace.js';
import { trampolines } from '../src/workloads/trampolines.js';

const SMALL = 0.03;

/** An independent lifecycle check, written without the validator's code. Returns live ids at the end. */
function walk(trace: Trace): Map<number, { type: ExecmemType; sizeBytes: number }> {
  const live = new Map<number, { type: ExecmemType; sizeBytes: number }>();
  const everAllocated = new Set<number>();
  trace.events.forEach((ev: TraceEvent, i) => {
    const where = `${trace.name} event ${i} (${ev.op})`;
    if (ev.op === 'alloc') {
      assert.ok(!everAllocated.has(ev.id), `${where}: id reused`);
      assert.ok(ev.sizeBytes > 0, where);
      everAllocated.add(ev.id);
      live.set(ev.id, { type: ev.type, sizeBytes: ev.sizeBytes });
    } else if (ev.op === 'write' || ev.op === 'finalize' || ev.op === 'seal' || ev.op === 'free') {
      const a = live.get(ev.id);
      assert.ok(
        a,
        `${where}: id ${ev.id} not live (${everAllocated.has(ev.id) ? 'double free / use after free' : 'never allocated'})`,
      );
      if (ev.op === 'write')
        assert.ok(ev.offsetBytes >= 0 && ev.offsetBytes + ev.sizeBytes <= a.sizeBytes, `${where}: outside`);
      if (ev.op === 'seal') assert.equal(a.type, 'module_ro_after_init', where);
      if (ev.op === 'free') live.delete(ev.id);
    } else if (ev.op === 'exec' && ev.ids) {
      for (const id of ev.ids)
        assert.ok(live.has(id) && typeIsText(live.get(id)!.type), `${where}: exec id ${id}`);
    }
  });
  return live;
}

test('every registered workload is deterministic per seed and differs across seeds', () => {
  for (const [name, spec] of Object.entries(WORKLOADS)) {
    const a = spec.generate({ seed: 11, scale: SMALL });
    const b = spec.generate({ seed: 11, scale: SMALL });
    const c = spec.generate({ seed: 12, scale: SMALL });
    assert.deepEqual(a, b, `${name}: same seed, same trace`);
    assert.notDeepEqual(a.events, c.events, `${name}: different seed, different trace`);
    assert.equal(a.name, name);
    assert.equal(a.seed, 11);
  }
});

test('every registered workload passes the independent lifecycle walk at two seeds', () => {
  for (const [name, spec] of Object.entries(WORKLOADS)) {
    for (const seed of [1, 2]) {
      const t = spec.generate({ seed, scale: SMALL });
      assert.ok(t.events.length > 20, `${name} is not trivially small`);
      walk(t);
    }
  }
});

test('bad generator options are RangeErrors; unknown workload names too', () => {
  assert.throws(() => bpfChurn({ scale: 0 }), RangeError);
  assert.throws(() => bpfChurn({ seed: -1 }), RangeError);
  assert.throws(() => bpfChurn({ seed: 2 ** 32 }), RangeError);
  assert.throws(() => modulesSynthetic({ bootShare: 0 }), RangeError);
  assert.throws(() => workloadByName('nope'), /unknown workload 'nope'/);
});

test('bpf-churn program sizes match the published mix: 50% < 500 B, 75% < 2 KiB', () => {
  const t = bpfChurn({ seed: 9, scale: 0.5 }); // 10000 programs
  // One write per image; its one function is the program.
  const progSizes = t.events
    .filter((e) => e.op === 'write' && e.fill === 'code')
    .map((e) => (e as WriteEvent).functions![0][1]);
  assert.equal(progSizes.length, 10_000);
  const below = (n: number) => progSizes.filter((s) => s < n).length / progSizes.length;
  assert.ok(Math.abs(below(500) - 0.5) < 0.02, `share < 500 B: ${below(500)}`);
  assert.ok(Math.abs(below(2048) - 0.75) < 0.02, `share < 2 KiB: ${below(2048)}`);
  // And the distribution is not degenerate: there are tiny and large programs.
  assert.ok(below(100) > 0.1 && below(16 * 1024) < 0.95);
});

test('BPF JIT images carry the JIT overhead: 64 B multiples, 64 B aligned, header + 16 B prefix', () => {
  const t = bpfChurn({ seed: 3, scale: 0.05 });
  const allocs = new Map<number, { sizeBytes: number; alignBytes?: number }>();
  for (const ev of t.events) {
    if (ev.op === 'alloc') {
      assert.equal(ev.type, 'bpf');
      assert.equal(ev.sizeBytes % BPF_CHUNK_BYTES, 0);
      assert.equal(ev.alignBytes, 64);
      allocs.set(ev.id, ev);
    } else if (ev.op === 'write' && ev.fill === 'code') {
      const image = allocs.get(ev.id)!.sizeBytes;
      // bpf_jit_binary_pack_finalize: ONE text_poke_copy of the whole image.
      assert.deepEqual([ev.offsetBytes, ev.sizeBytes], [0, image], 'the whole image in one write');
      assert.equal(ev.functions?.length, 1);
      const [codeOffset, progBytes] = ev.functions![0];
      assert.ok(codeOffset >= BPF_HEADER_BYTES && codeOffset < 64, `code offset ${codeOffset}`);
      assert.ok(image >= progBytes + BPF_HEADER_BYTES + 16, 'room for header and the illegal prefix');
      assert.ok(image - (progBytes + BPF_HEADER_BYTES + 16) < 64, 'no more than one chunk of rounding');
    }
  }
  // The random start stays inside the slack: exhaustively over small programs.
  const rng = new Rng(1);
  for (let p = 1; p < 400; p++) {
    const img = bpfJitImage(rng, p);
    assert.ok(img.codeOffsetBytes + p <= img.imageBytes);
  }
  assert.ok(bpfProgBytes(new Rng(2)) > 0);
});

test('bpf-aaronlu: 2048 instances of three images (64, 64, 192 B), all live at the end', () => {
  const t = bpfAaronLu({ seed: 1 });
  // Boot: systemd's 8 programs; then the test phase: 2048 x (64, 64, 192 B).
  const test = t.events.findIndex((e) => e.op === 'phase' && e.name === 'test');
  assert.equal(t.events.slice(0, test).filter((e) => e.op === 'alloc').length, 8);
  const sizes = t.events
    .slice(test)
    .filter((e) => e.op === 'alloc')
    .map((e) => (e as { sizeBytes: number }).sizeBytes);
  assert.equal(sizes.length, 3 * 2048);
  for (let i = 0; i < sizes.length; i += 3) assert.deepEqual(sizes.slice(i, i + 3), [64, 64, 192]);
  assert.equal(walk(t).size, 3 * 2048 + 8);
  const unloaded = bpfAaronLu({ seed: 1, scale: 0.01, unload: true, bootPrograms: 0 });
  assert.equal(walk(unloaded).size, 0);
});

test('trampolines: 16 B kprobe slots, ftrace and BPF trampolines near their live targets', () => {
  const t = trampolines({ seed: 5 });
  const live = walk(t);
  const count = (type: ExecmemType) => [...live.values()].filter((a) => a.type === type).length;
  for (const ev of t.events) {
    if (ev.op !== 'alloc') continue;
    if (ev.type === 'kprobes') assert.equal(ev.sizeBytes, KPROBE_SLOT_BYTES);
    if (ev.type === 'ftrace') assert.ok(ev.sizeBytes >= 160 && ev.sizeBytes <= 480);
    if (ev.type === 'bpf') assert.ok(ev.sizeBytes >= 256 && ev.sizeBytes <= 4096);
  }
  // Defaults: targets 400 / 100 / 30; the walk keeps each within a factor of two.
  assert.ok(count('kprobes') > 200 && count('kprobes') < 800, `kprobes live ${count('kprobes')}`);
  assert.ok(count('bpf') > 50 && count('bpf') < 200, `bpf trampolines live ${count('bpf')}`);
  assert.ok(count('ftrace') > 15 && count('ftrace') < 60, `ftrace live ${count('ftrace')}`);
  assert.ok(
    t.events.some((e) => e.op === 'free'),
    'detaches happen',
  );
});

test('modules-synthetic: init freed, ro_after_init sealed after finalize, some modules unloaded', () => {
  const t = modulesSynthetic({ seed: 8, scale: 0.2 });
  const types = new Map<number, ExecmemType>();
  const finalized = new Set<number>();
  let seals = 0;
  let frees = 0;
  for (const ev of t.events) {
    if (ev.op === 'alloc') types.set(ev.id, ev.type);
    if (ev.op === 'finalize') finalized.add(ev.id);
    if (ev.op === 'seal') {
      assert.ok(finalized.has(ev.id));
      seals++;
    }
    if (ev.op === 'free') {
      assert.ok(finalized.has(ev.id), 'every region is protected before it is freed');
      frees++;
    }
  }
  const live = walk(t);
  assert.ok(seals > 0 && frees > 0);
  const liveTypes = new Set([...live.values()].map((a) => a.type));
  for (const ty of ['module_text', 'module_rodata', 'module_data', 'module_ro_after_init'] as const) {
    assert.ok(liveTypes.has(ty), `live ${ty}`);
  }
  // Unloads happened: fewer live text regions than module loads.
  const textAllocs = [...types.values()].filter((ty) => ty === 'module_text').length;
  const liveText = [...live.values()].filter((a) => a.type === 'module_text').length;
  assert.ok(liveText < textAllocs / 2, 'init text and unloaded modules were freed');
});

test('mixed contains every producer type and interleaves them', () => {
  const t = WORKLOADS.mixed.generate({ seed: 2, scale: 0.05 });
  walk(t);
  const types = new Set(
    t.events.filter((e) => e.op === 'alloc').map((e) => (e as { type: ExecmemType }).type),
  );
  for (const ty of EXECMEM_TYPES) assert.ok(types.has(ty), `mixed allocates ${ty}`);
  // Interleaving: after the boot phase, BPF and kprobe allocations alternate many times.
  const steady = t.events.findIndex((e) => e.op === 'phase' && e.name === 'steady');
  assert.ok(steady > 0);
  let switches = 0;
  let last: ExecmemType | null = null;
  for (const ev of t.events.slice(steady)) {
    if (ev.op !== 'alloc') continue;
    if (last !== null && (ev.type === 'bpf') !== (last === 'bpf')) switches++;
    last = ev.type;
  }
  assert.ok(switches > 20, `type switches ${switches}`);
});

test('modules-synthetic takes a measured size source and checks it', () => {
  const fixed = {
    textBytes: 5000,
    rodataBytes: 700,
    roAfterInitBytes: 0,
    dataBytes: 300,
    initTextBytes: 0,
    initRodataBytes: 0,
    initDataBytes: 40,
  };
  const t = modulesSynthetic({ seed: 1, loads: 5, sample: () => fixed, name: 'modules-fixed' });
  assert.equal(t.name, 'modules-fixed');
  const sizes = t.events.filter((e) => e.op === 'alloc').map((e) => (e as { sizeBytes: number }).sizeBytes);
  // Absent sections (0 bytes) are not allocated; each module in enum mod_mem_type order:
  // text, data, rodata, init data, as one batch (one module number).
  assert.equal(sizes.length, 5 * 4);
  for (let i = 0; i < sizes.length; i += 4) assert.deepEqual(sizes.slice(i, i + 4), [5000, 300, 700, 40]);
  const allocs = t.events.filter((e) => e.op === 'alloc');
  for (let i = 0; i < allocs.length; i += 4) {
    const modules = new Set(allocs.slice(i, i + 4).map((e) => (e as { module?: number }).module));
    assert.equal(modules.size, 1, 'one module number per load');
    assert.deepEqual(
      allocs.slice(i, i + 4).map((e) => (e as { init?: boolean }).init === true),
      [false, false, false, true],
    );
  }
  assert.ok(!t.events.some((e) => e.op === 'seal'), 'no ro_after_init, nothing sealed');
  walk(t);
  assert.throws(
    () => modulesSynthetic({ loads: 5, sample: () => ({ ...fixed, dataBytes: -1 }) }),
    /dataBytes/,
  );
  assert.throws(
    () => modulesSynthetic({ loads: 5, sample: () => ({ ...fixed, textBytes: 0 }) }),
    /textBytes/,
  );
});
