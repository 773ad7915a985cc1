// Fidelity of `jit_alloc-2023` = Kent Overstreet's "mm: jit/text allocator" (May 2023,
// <ZHEy5SkFwI+dZjOC@moria.home.lan>) on Linux 6.4. Each test pins one operation of the proposal
// (jit_alloc, jit_update, jit_free and its slab) or of the 6.4 kernel under it, on a fresh x86_64
// machine unless it says otherwise. Exact: CPA calls, text_poke calls, vmalloc/vfree calls.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { JitAlloc2023Policy } from '../src/policies/jit-alloc.js';
import { fresh, load, MODULE, measure, PAGE, protOf } from './fidelity-helpers.js';

describe('jit_alloc-2023 (proposal on Linux 6.4)', () => {
  it('jit_slab_alloc: 256 16-byte objects share one page: module_alloc + one set_memory_rox, a text_poke each', () => {
    const { m, p } = fresh('jit_alloc-2023');
    const c = measure(m, () => {
      for (let i = 0; i < 256; i++) load(p, 'kprobes', 16);
    });
    assert.deepEqual([c.vmallocs, c.cpaCalls, c.pokes], [1, 1, 256], 'x86 set_memory_rox is one call (6.2+)');
    assert.equal((p as JitAlloc2023Policy).slabs, 1);
  });

  it('jit_alloc: classes are powers of two from 16 B; 17 bytes take a 32-byte object of a new slab', () => {
    const { m, p } = fresh('jit_alloc-2023');
    const a = p.alloc('module_text', 17);
    const b = p.alloc('module_text', 20);
    assert.equal(b - a, 32);
    const c = measure(m, () => p.alloc('module_text', 16));
    assert.equal(c.vmallocs, 1, 'class 0 has no slab yet');
  });

  it('jit_alloc above 2 KiB: module_alloc(len) + set_memory_rox, written with jit_update', () => {
    const { m, p } = fresh('jit_alloc-2023');
    const c = measure(m, () => load(p, 'module_text', 2049));
    assert.deepEqual([c.vmallocs, c.cpaCalls, c.pokes], [1, 1, 1]);
    assert.equal(p.usage().mappedBytes, PAGE);
  });

  it('jit_update: every write is a text_poke_copy; finalize publishes nothing (objects are ROX from the start)', () => {
    const { m, p } = fresh('jit_alloc-2023');
    const va = p.alloc('ftrace', 300);
    assert.deepEqual(protOf(m, va), { w: false, x: true });
    const w = measure(m, () => {
      p.write(va, new Uint8Array(100).fill(0x90));
      p.write(va + 100, new Uint8Array(200).fill(0x90));
    });
    assert.deepEqual([w.pokes, w.cpaCalls, w.shootdowns], [2, 0, 0]);
    assert.deepEqual(measure(m, () => p.finalize(va)).cpaCalls, 0);
  });

  it('one allocator for all text: BPF trampolines and kprobes take the slab too', () => {
    const { m, p } = fresh('jit_alloc-2023');
    const a = p.alloc('bpf', 100, 64, { caller: 'bpf_trampoline' });
    const c = measure(m, () => p.alloc('kprobes', 16));
    assert.deepEqual([c.vmallocs, c.cpaCalls], [1, 1], 'a 16-byte slab');
    const b = p.alloc('bpf', 100, 64);
    assert.equal(b - a, 128, 'trampolines and programs share the 128-byte class');
  });

  it('jit_free: the last object of a slab vfrees it; no invalidation', () => {
    const { m, p } = fresh('jit_alloc-2023');
    const a = load(p, 'bpf', 16);
    const b = load(p, 'bpf', 16);
    const first = measure(m, () => p.free(a));
    assert.deepEqual(
      [first.vfrees, first.pokes, first.cpaCalls],
      [0, 0, 0],
      'the posted code neither fills nor invalidates',
    );
    assert.equal(measure(m, () => p.free(b)).vfrees, 1);
  });

  it('Linux 6.4 module data: module_memory_alloc per section, rodata set_memory_ro + set_memory_nx', () => {
    const { m, p } = fresh('jit_alloc-2023');
    const data = MODULE.filter((s) => s.type !== 'module_text');
    let vas: number[] = [];
    const c = measure(m, () => {
      vas = p.allocModule!(data);
    });
    assert.deepEqual([c.vmallocs, c.cpaCalls], [data.length, 0]);
    assert.equal(
      measure(m, () => p.finalize(vas[0])).cpaCalls,
      2,
      'rodata: module_enable_ro + module_enable_nx',
    );
    assert.equal(measure(m, () => p.finalize(vas[2])).cpaCalls, 1, 'data: module_enable_nx');
  });

  it('arm64: set_memory_rox falls back to set_memory_ro + set_memory_x, two calls per slab', () => {
    const { m, p } = fresh('jit_alloc-2023', 'arm64');
    const c = measure(m, () => load(p, 'bpf', 16));
    assert.deepEqual([c.vmallocs, c.cpaCalls, c.pokes], [1, 2, 1]);
  });
});
