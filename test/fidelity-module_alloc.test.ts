// Fidelity of `module_alloc` = Linux 5.17, the last release before bpf_prog_pack (Aaron Lu's
// "before" kernel). Each test pins one operation to the Linux function named in its title, on a
// fresh x86_64 machine unless it says otherwise. Exact: set_memory (CPA) calls, text_poke calls,
// vmalloc/vfree calls. Shootdowns: exact where the operation makes no CPA call and frees nothing,
// else at least one per CPA call that changes a PTE (fidelity-helpers.ts says why).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fresh, load, loadModule, MODULE, measure, PAGE, protOf } from './fidelity-helpers.js';

describe('module_alloc (Linux 5.17): modules (kernel/module.c)', () => {
  it('move_module: a module load is 2 vmallocs (core, init) and no set_memory call', () => {
    const { m, p } = fresh('module_alloc');
    let vas: number[] = [];
    const c = measure(m, () => {
      vas = p.allocModule!(MODULE);
    });
    assert.deepEqual([c.vmallocs, c.cpaCalls, c.shootdowns], [2, 0, 0]);
    // layout_sections: core = text (4 pages) | rodata (2) | ro_after_init (1) | data (2); init = text | data.
    const core = vas[0];
    assert.deepEqual(
      vas.slice(1, 4).map((va) => (va - core) / PAGE),
      [4, 6, 7],
      'core parts page-aligned in the order text, rodata, ro_after_init, data',
    );
    assert.equal(vas[5] - vas[4], PAGE, 'init text then init data in the init allocation');
    assert.equal(m.findArea(core)?.sizeBytes, 9 * PAGE, 'one vmalloc area holds the whole core');
    assert.equal(m.findArea(vas[4])?.sizeBytes, 2 * PAGE, 'one vmalloc area holds the whole init');
  });

  it('complete_formation: module_enable_ro + module_enable_x make text RO then X (2 CPA calls)', () => {
    const { m, p } = fresh('module_alloc');
    const vas = p.allocModule!(MODULE);
    p.write(vas[0], new Uint8Array(100).fill(0x90));
    const c = measure(m, () => p.finalize(vas[0]));
    assert.equal(c.cpaCalls, 2, 'frob_text(set_memory_ro) + frob_text(set_memory_x)');
    assert.ok(c.shootdowns >= 2, `each call flushes: ${c.shootdowns}`);
    assert.deepEqual(protOf(m, vas[0]), { w: false, x: true });
  });

  it('module_enable_ro + module_enable_nx: rodata costs set_memory_ro and a set_memory_nx that changes nothing', () => {
    const { m, p } = fresh('module_alloc');
    const vas = p.allocModule!(MODULE);
    const c = measure(m, () => p.finalize(vas[1]));
    assert.equal(c.cpaCalls, 2);
    assert.ok(c.shootdowns >= 1);
    assert.deepEqual(protOf(m, vas[1]), { w: false, x: false });
  });

  it('module_enable_nx: data and ro_after_init cost one set_memory_nx each, no PTE change, no flush', () => {
    const { m, p } = fresh('module_alloc');
    const vas = p.allocModule!(MODULE);
    for (const i of [2, 3, 5]) {
      const c = measure(m, () => p.finalize(vas[i]));
      assert.deepEqual([c.cpaCalls, c.shootdowns], [1, 0], MODULE[i].type);
      assert.deepEqual(protOf(m, vas[i]), { w: true, x: false });
    }
  });

  it('do_init_module: module_enable_ro(mod, true) seals ro_after_init with one set_memory_ro', () => {
    const { m, p } = fresh('module_alloc');
    const vas = loadModule(p);
    const c = measure(m, () => p.seal(vas[2]));
    assert.equal(c.cpaCalls, 1);
    assert.ok(c.shootdowns >= 1);
    assert.deepEqual(protOf(m, vas[2]), { w: false, x: false });
  });

  it('do_init_module: the init allocation is vfreed once, when its last section goes', () => {
    const { m, p } = fresh('module_alloc');
    const vas = loadModule(p);
    const first = measure(m, () => p.free(vas[4]));
    assert.deepEqual([first.vfrees, first.cpaCalls, first.shootdowns], [0, 0, 0]);
    const last = measure(m, () => p.free(vas[5]));
    assert.deepEqual([last.vfrees, last.cpaCalls], [1, 0], 'module_memfree(init_layout.base), no set_memory');
    assert.ok(last.shootdowns >= 1, 'VM_FLUSH_RESET_PERMS: the vfree flushes');
  });

  it('free_module: the core allocation is vfreed once, after its last section', () => {
    const { m, p } = fresh('module_alloc');
    const vas = loadModule(p);
    const c = measure(m, () => {
      for (const va of vas.slice(0, 3)) p.free(va);
    });
    assert.equal(c.vfrees, 0);
    assert.equal(measure(m, () => p.free(vas[3])).vfrees, 1);
    assert.equal(p.usage().mappedBytes, 2 * PAGE, 'only the init allocation is left');
  });

  it('a module section allocated outside allocModule is a module_alloc of its own', () => {
    const { m, p } = fresh('module_alloc');
    const c = measure(m, () => p.alloc('module_text', 5000));
    assert.deepEqual([c.vmallocs, c.cpaCalls], [1, 0]);
  });
});

describe('module_alloc (Linux 5.17): BPF (kernel/bpf/core.c, kernel/bpf/trampoline.c)', () => {
  it('bpf_jit_binary_alloc: a 300 B program takes a page of its own, trap-filled, written directly', () => {
    const { m, p } = fresh('module_alloc');
    const va = p.alloc('bpf', 300, 64);
    assert.equal(va % PAGE, 0);
    assert.deepEqual(m.load(0, va, 300), new Uint8Array(300).fill(0xcc), 'jit_fill_hole');
    const c = measure(m, () => p.write(va, new Uint8Array(300).fill(0x90)));
    assert.equal(c.pokes, 0, 'the JIT writes the RW image in place');
    assert.equal(p.usage().mappedBytes, PAGE);
  });

  it('bpf_jit_binary_alloc: round_up(proglen + hdr + 128, PAGE_SIZE): 4000 bytes take 2 pages', () => {
    const { p } = fresh('module_alloc');
    p.alloc('bpf', 4000, 64);
    assert.equal(p.usage().mappedBytes, 2 * PAGE);
  });

  it('bpf_jit_binary_lock_ro: set_memory_ro + set_memory_x (2 CPA calls) per program; free is one vfree', () => {
    const { m, p } = fresh('module_alloc');
    const c = measure(m, () => load(p, 'bpf', 300));
    assert.deepEqual([c.vmallocs, c.cpaCalls, c.pokes], [1, 2, 0]);
    assert.ok(c.shootdowns >= 2);
    const va = load(p, 'bpf', 300);
    const f = measure(m, () => p.free(va));
    assert.deepEqual([f.vfrees, f.cpaCalls], [1, 0]);
  });

  it('bpf_jit_alloc_exec_page: a BPF trampoline page is W+X for its life (the audit counts it)', () => {
    const { m, p } = fresh('module_alloc');
    let va = 0;
    const c = measure(m, () => {
      va = p.alloc('bpf', 1000, 64, { caller: 'bpf_trampoline' });
    });
    assert.deepEqual([c.vmallocs, c.cpaCalls], [1, 1], 'set_memory_x only: "Keep image as writeable"');
    assert.deepEqual(protOf(m, va), { w: true, x: true });
    assert.equal(m.wxViolationCount(), 1, 'one frame writable and executable');
    const w = measure(m, () => {
      p.write(va, new Uint8Array(1000).fill(0x90));
      p.finalize(va);
    });
    assert.deepEqual([w.pokes, w.cpaCalls], [0, 0], 'arch_prepare_bpf_trampoline writes the page directly');
    assert.equal(m.wxViolationCount(), 1);
    p.free(va);
    assert.equal(m.wxViolationCount(), 0);
  });
});

describe('module_alloc (Linux 5.17): kprobes and ftrace (arch/x86/kernel)', () => {
  it('alloc_insn_page: module_alloc + set_memory_ro + set_memory_x; a page holds 256 16-byte slots', () => {
    const { m, p } = fresh('module_alloc');
    const c = measure(m, () => {
      for (let i = 0; i < 256; i++) load(p, 'kprobes', 16);
    });
    assert.deepEqual([c.vmallocs, c.cpaCalls, c.pokes], [1, 2, 256], 'one alloc_insn_page for 256 probes');
    const next = measure(m, () => load(p, 'kprobes', 16));
    assert.deepEqual([next.vmallocs, next.cpaCalls], [1, 2], 'the 257th probe needs a second page');
  });

  it('create_trampoline: module_alloc, written directly, then set_memory_ro + set_memory_x', () => {
    const { m, p } = fresh('module_alloc');
    const va = p.alloc('ftrace', 300);
    const w = measure(m, () => p.write(va, new Uint8Array(300).fill(0x90)));
    assert.equal(w.pokes, 0);
    const c = measure(m, () => p.finalize(va));
    assert.equal(c.cpaCalls, 2);
    assert.deepEqual(protOf(m, va), { w: false, x: true });
  });

  it('arm64 alloc_insn_page: vmalloc maps the page PAGE_KERNEL_ROX, no set_memory call', () => {
    const { m, p } = fresh('module_alloc', 'arm64');
    const c = measure(m, () => load(p, 'kprobes', 16));
    assert.deepEqual([c.vmallocs, c.cpaCalls, c.pokes], [1, 0, 1]);
    // The linear-map alias keeps PAGE_KERNEL: the frame is writable there and executable in vmalloc.
    assert.equal(m.wxViolationCount(), 1);
  });
});
