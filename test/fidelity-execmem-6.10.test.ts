// Fidelity of `execmem-6.10` = Linux 6.10: execmem without the ROX cache, bpf_prog_pack for BPF
// programs (x86 since 5.18, arm64 since 6.9) and x86 BPF trampolines (since 6.8). Each test pins
// one operation to the Linux function named in its title, on a fresh x86_64 machine unless it says
// otherwise. Exact: CPA calls, text_poke calls, vmalloc/vfree calls; shootdowns exact where no CPA
// call and no vfree happen, else bounded below.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BPF_PROG_PACK_BYTES } from '../src/policies/bpf-prog-pack.js';
import type { KernelPolicy } from '../src/policies/kernel-policy.js';
import { fresh, load, loadModule, MODULE, measure, PAGE, protOf } from './fidelity-helpers.js';

describe('execmem-6.10 (Linux 6.10): modules (kernel/module/main.c, strict_rwx.c)', () => {
  it('module_memory_alloc: a module load is one execmem_alloc per section', () => {
    const { m, p } = fresh('execmem-6.10');
    const c = measure(m, () => p.allocModule!(MODULE));
    assert.deepEqual([c.vmallocs, c.cpaCalls], [MODULE.length, 0]);
  });

  it('module_enable_text_rox: text is finalized with one set_memory_rox', () => {
    const { m, p } = fresh('execmem-6.10');
    const [text] = p.allocModule!(MODULE.slice(0, 1));
    p.write(text, new Uint8Array(64).fill(0x90));
    const c = measure(m, () => p.finalize(text));
    assert.equal(c.cpaCalls, 1);
    assert.ok(c.shootdowns >= 1);
    assert.deepEqual(protOf(m, text), { w: false, x: true });
  });

  it('module_enable_rodata_ro + module_enable_data_nx: rodata 2 CPA calls, data 1 that changes nothing', () => {
    const { m, p } = fresh('execmem-6.10');
    const vas = p.allocModule!(MODULE);
    assert.equal(measure(m, () => p.finalize(vas[1])).cpaCalls, 2);
    const d = measure(m, () => p.finalize(vas[3]));
    assert.deepEqual([d.cpaCalls, d.shootdowns], [1, 0]);
  });

  it("free_module: every section is execmem_free'd (vfree) on its own", () => {
    const { m, p } = fresh('execmem-6.10');
    const vas = loadModule(p);
    for (const va of vas) assert.equal(measure(m, () => p.free(va)).vfrees, 1);
  });
});

describe('execmem-6.10 (Linux 6.10): BPF (kernel/bpf/core.c, arch/x86/net/bpf_jit_comp.c)', () => {
  it('alloc_new_pack: bpf_jit_alloc_exec = execmem_alloc(EXECMEM_BPF) on 4 KiB pages, one set_memory_rox', () => {
    const { m, p } = fresh('execmem-6.10');
    let va = 0;
    const c = measure(m, () => {
      va = p.alloc('bpf', 300, 64);
    });
    assert.deepEqual([c.vmallocs, c.cpaCalls], [1, 1]);
    assert.equal(m.findArea(va)?.sizeBytes, BPF_PROG_PACK_BYTES);
    assert.equal(m.findArea(va)?.leafBytes, PAGE);
  });

  it('bpf_prog_pack (6.10): a 300 B program into an existing pack costs 0 CPA calls, 0 shootdowns and one text_poke_copy', () => {
    const { m, p } = fresh('execmem-6.10');
    load(p, 'bpf', 300);
    const c = measure(m, () => load(p, 'bpf', 300));
    assert.deepEqual([c.cpaCalls, c.shootdowns, c.vmallocs, c.pokes], [0, 0, 0, 1]);
    const f = measure(m, () => p.free(p.alloc('bpf', 64, 64)));
    assert.deepEqual([f.cpaCalls, f.shootdowns, f.pokes], [0, 0, 1], 'bpf_prog_pack_free: one text_poke_set');
  });

  it('arch_alloc_bpf_trampoline (x86, 6.8+): a trampoline is a pack allocation like a program', () => {
    const { m, p } = fresh('execmem-6.10');
    const prog = load(p, 'bpf', 300);
    let tramp = 0;
    const c = measure(m, () => {
      tramp = load(p, 'bpf', 1000, { caller: 'bpf_trampoline' });
    });
    assert.deepEqual([c.cpaCalls, c.shootdowns, c.vmallocs, c.pokes], [0, 0, 0, 1]);
    assert.equal(tramp - prog, 320, 'next chunk of the same pack');
    assert.equal((p as KernelPolicy).packCount, 1);
  });

  it('arm64 (packs since 6.9): programs in a pack made ROX by set_memory_ro + set_memory_x (no native set_memory_rox)', () => {
    const { m, p } = fresh('execmem-6.10', 'arm64');
    const first = measure(m, () => load(p, 'bpf', 300));
    assert.deepEqual([first.vmallocs, first.cpaCalls, first.pokes], [1, 2, 1]);
    const next = measure(m, () => load(p, 'bpf', 300));
    assert.deepEqual([next.vmallocs, next.cpaCalls, next.shootdowns, next.pokes], [0, 0, 0, 1]);
  });

  it('arm64: the __weak arch_alloc_bpf_trampoline page, then arch_protect_bpf_trampoline = set_memory_rox (2 calls)', () => {
    const { m, p } = fresh('execmem-6.10', 'arm64');
    const c = measure(m, () => load(p, 'bpf', 1000, { caller: 'bpf_trampoline' }));
    assert.deepEqual([c.vmallocs, c.cpaCalls, c.pokes], [1, 2, 0]);
  });

  it('generic (no text_poke, bpf_arch_text_copy is -ENOTSUPP): bpf_jit_binary_alloc + bpf_jit_binary_lock_ro', () => {
    const { m, p } = fresh('execmem-6.10', 'generic');
    const c = measure(m, () => load(p, 'bpf', 300));
    assert.deepEqual([c.vmallocs, c.cpaCalls, c.pokes], [1, 2, 0]);
    assert.equal(p.usage().mappedBytes, PAGE);
  });
});

describe('execmem-6.10 (Linux 6.10): kprobes and ftrace', () => {
  it('alloc_insn_page: execmem_alloc(EXECMEM_KPROBES, PAGE_SIZE) + one set_memory_rox; 256 slots per page', () => {
    const { m, p } = fresh('execmem-6.10');
    const c = measure(m, () => {
      for (let i = 0; i < 256; i++) load(p, 'kprobes', 16);
    });
    assert.deepEqual([c.vmallocs, c.cpaCalls, c.pokes], [1, 1, 256]);
    assert.equal((p as KernelPolicy).insnPageCount, 1);
  });

  it('collect_one_slot: the last kprobe page is kept when its last slot goes', () => {
    const { m, p } = fresh('execmem-6.10');
    const va = load(p, 'kprobes', 16);
    const c = measure(m, () => p.free(va));
    assert.deepEqual([c.vfrees, c.cpaCalls, c.shootdowns], [0, 0, 0]);
    assert.equal((p as KernelPolicy).insnPageCount, 1);
  });

  it('create_trampoline: execmem_alloc(EXECMEM_FTRACE), written directly, one set_memory_rox', () => {
    const { m, p } = fresh('execmem-6.10');
    const c = measure(m, () => load(p, 'ftrace', 300));
    assert.deepEqual([c.vmallocs, c.cpaCalls, c.pokes], [1, 1, 0]);
  });

  it('arm64 alloc_insn_page: EXECMEM_KPROBES is PAGE_KERNEL_ROX, mapped by vmalloc with no set_memory call', () => {
    const { m, p } = fresh('execmem-6.10', 'arm64');
    const c = measure(m, () => load(p, 'kprobes', 16));
    assert.deepEqual([c.vmallocs, c.cpaCalls, c.pokes], [1, 0, 1]);
  });
});
