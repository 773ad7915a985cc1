// Fidelity of `bpf_prog_pack` = Linux 6.1, the first LTS with packs (Aaron Lu's "after" kernel was
// v6.1-rc3). Each test pins one operation to the Linux function named in its title, on a fresh
// x86_64 machine unless it says otherwise. Exact: set_memory (CPA) calls, text_poke calls,
// vmalloc/vfree calls; shootdowns exact where no CPA call and no vfree happen, else bounded below.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BPF_PROG_PACK_BYTES } from '../src/policies/bpf-prog-pack.js';
import type { KernelPolicy } from '../src/policies/kernel-policy.js';
import { fresh, load, MODULE, measure, PAGE, protOf } from './fidelity-helpers.js';

/** sockex1: three images per instance, "64 * 2 + 192 bytes" (<Y2ioTodn+mBXdIqp@ziqianlu-desk2>). */
const AARONLU_IMAGES = [64, 64, 192];

describe('bpf_prog_pack (Linux 6.1): BPF programs (kernel/bpf/core.c)', () => {
  it('alloc_new_pack: the first program maps a 2 MiB pack on 4 KiB pages, set_memory_ro + set_memory_x', () => {
    const { m, p } = fresh('bpf_prog_pack');
    let va = 0;
    const c = measure(m, () => {
      va = p.alloc('bpf', 300, 64);
    });
    assert.deepEqual([c.vmallocs, c.cpaCalls], [1, 2], 'set_memory_rox arrived in 6.2: two calls in 6.1');
    assert.ok(c.shootdowns >= 2);
    assert.equal(p.usage().mappedBytes, BPF_PROG_PACK_BYTES);
    assert.equal(m.findArea(va)?.leafBytes, PAGE, 'module_alloc maps 4 KiB pages');
    assert.deepEqual(m.load(0, va, 64), new Uint8Array(64).fill(0xcc), 'bpf_fill_ill_insns over the pack');
  });

  it('bpf_prog_pack_alloc: a 300 B program into an existing pack costs 0 CPA calls, 0 shootdowns and one text_poke_copy', () => {
    const { m, p } = fresh('bpf_prog_pack');
    load(p, 'bpf', 300);
    const c = measure(m, () => load(p, 'bpf', 300));
    assert.deepEqual(
      [c.cpaCalls, c.shootdowns, c.vmallocs, c.pokes],
      [0, 0, 0, 1],
      'JIT writes the RW buffer; bpf_jit_binary_pack_finalize copies it in with one text_poke_copy',
    );
  });

  it('bpf_prog_pack_alloc: 64-byte chunks, first fit: a 300 B image takes 5 chunks, the next starts 320 bytes on', () => {
    const { p } = fresh('bpf_prog_pack');
    const a = load(p, 'bpf', 300);
    const b = load(p, 'bpf', 64);
    assert.equal(b - a, 320);
  });

  it('bpf_prog_pack_free: text_poke_set over the chunks, no CPA call, no shootdown', () => {
    const { m, p } = fresh('bpf_prog_pack');
    load(p, 'bpf', 64); // keeps the pack alive
    const va = load(p, 'bpf', 300);
    const c = measure(m, () => p.free(va));
    assert.deepEqual([c.cpaCalls, c.shootdowns, c.pokes, c.vfrees], [0, 0, 1, 0]);
    assert.deepEqual(m.load(0, va, 320), new Uint8Array(320).fill(0xcc), 'bpf_arch_text_invalidate');
  });

  it('bpf_prog_pack_free: the pack is vfreed as soon as its bitmap is empty', () => {
    const { m, p } = fresh('bpf_prog_pack');
    const va = load(p, 'bpf', 300);
    const c = measure(m, () => p.free(va));
    assert.deepEqual([c.vfrees, c.cpaCalls], [1, 0]);
    assert.equal(p.usage().mappedBytes, 0);
  });

  it('bpf_prog_pack_alloc: 6144 Aaron-Lu-size instances (64 + 64 + 192 bytes) fit one 2 MiB pack', () => {
    const { m, p } = fresh('bpf_prog_pack');
    const c = measure(m, () => {
      for (let i = 0; i < 6144; i++) for (const size of AARONLU_IMAGES) load(p, 'bpf', size);
    });
    assert.equal((p as KernelPolicy).packCount, 1, '5 chunks per instance: 30,720 of 32,768');
    assert.deepEqual([c.vmallocs, c.cpaCalls], [1, 2], 'one pack, made RO then X once');
    assert.equal(c.pokes, 6144 * 3);
    assert.equal(m.counters.splitsDirectMap1G, 0, 'no 1 GiB direct-map split');
  });

  it('bpf_prog_pack_alloc: an image above the pack size gets a page-rounded allocation of its own', () => {
    const { m, p } = fresh('bpf_prog_pack');
    const c = measure(m, () => load(p, 'bpf', BPF_PROG_PACK_BYTES + 1));
    assert.deepEqual([c.vmallocs, c.cpaCalls, c.pokes], [1, 2, 1]);
    assert.equal(p.usage().mappedBytes, BPF_PROG_PACK_BYTES + PAGE);
    assert.equal((p as KernelPolicy).packCount, 0);
  });

  it('arm64 has no packs before 6.9: a program is bpf_jit_binary_alloc, a page of its own', () => {
    const { m, p } = fresh('bpf_prog_pack', 'arm64');
    const c = measure(m, () => load(p, 'bpf', 300));
    assert.deepEqual([c.vmallocs, c.cpaCalls, c.pokes], [1, 2, 0]);
    assert.equal(p.usage().mappedBytes, PAGE);
  });
});

describe('bpf_prog_pack (Linux 6.1): trampolines, modules, kprobes, ftrace', () => {
  it('bpf_tramp_image_alloc + bpf_trampoline_update: a page, written directly, then set_memory_ro + set_memory_x', () => {
    const { m, p } = fresh('bpf_prog_pack');
    let va = 0;
    const a = measure(m, () => {
      va = p.alloc('bpf', 1000, 64, { caller: 'bpf_trampoline' });
      p.write(va, new Uint8Array(1000).fill(0x90));
    });
    assert.deepEqual([a.vmallocs, a.cpaCalls, a.pokes], [1, 0, 0]);
    const f = measure(m, () => p.finalize(va));
    assert.equal(f.cpaCalls, 2, '"bpf: Enforce W^X for bpf trampoline"');
    assert.deepEqual(protOf(m, va), { w: false, x: true });
    assert.equal(m.wxViolationCount(), 0, 'never writable and executable');
  });

  it('move_module: still one core and one init allocation per module (per-section memory came in 6.4)', () => {
    const { m, p } = fresh('bpf_prog_pack');
    const c = measure(m, () => p.allocModule!(MODULE));
    assert.equal(c.vmallocs, 2);
  });

  it('alloc_insn_page and create_trampoline: set_memory_ro + set_memory_x, as in 5.17', () => {
    const { m, p } = fresh('bpf_prog_pack');
    assert.equal(measure(m, () => load(p, 'kprobes', 16)).cpaCalls, 2);
    assert.equal(measure(m, () => load(p, 'ftrace', 300)).cpaCalls, 2);
  });
});
