// Fidelity of `execmem-rox` = Linux 6.17 (the ROX cache of mm/execmem.c for EXECMEM_MODULE_TEXT,
// EXECMEM_KPROBES and EXECMEM_FTRACE on x86; EXECMEM_BPF stays PAGE_KERNEL, BPF goes through
// bpf_prog_pack as in 6.10) and of `execmem-rox-bpf` = 6.17 plus the unmerged 2026 bpf-next series
// that carves BPF packs from the cache. Each test pins one operation to the Linux function named in
// its title, on a fresh x86_64 machine. Exact: CPA calls, text_poke calls, vmalloc/vfree calls;
// shootdowns exact where no CPA call and no vfree happen, else bounded below.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { KernelPolicy } from '../src/policies/kernel-policy.js';
import { fresh, load, loadModule, MODULE, measure, PAGE, protOf, SZ_2M } from './fidelity-helpers.js';

const cacheBlocks = (p: unknown) => (p as KernelPolicy).cacheBlockCount;

describe('execmem-rox (Linux 6.17): module text (mm/execmem.c, kernel/module/main.c)', () => {
  it('execmem_cache_populate: the first module text maps a 2 MiB block, fills it, one set_memory_rox; execmem_alloc_rw adds set_memory_nx + set_memory_rw', () => {
    const { m, p } = fresh('execmem-rox');
    let text = 0;
    const c = measure(m, () => {
      [text] = p.allocModule!(MODULE.slice(0, 1));
    });
    assert.deepEqual([c.vmallocs, c.cpaCalls], [1, 3]);
    assert.ok(c.shootdowns >= 3);
    assert.equal(m.findArea(text)?.sizeBytes, SZ_2M, 'round_up(size, PMD_SIZE), VM_ALLOW_HUGE_VMAP');
    assert.deepEqual(protOf(m, text), { w: true, x: false }, 'the loader writes directly');
    assert.deepEqual(
      m.load(0, text + 4 * PAGE, 16),
      new Uint8Array(16).fill(0xcc),
      'execmem_fill_trapping_insns',
    );
  });

  it('execmem_alloc_rw from an existing block: 2 CPA calls, no vmalloc; module_enable_text_rox: 1 (execmem_restore_rox)', () => {
    const { m, p } = fresh('execmem-rox');
    loadModule(p, MODULE.slice(0, 1));
    let text = 0;
    const a = measure(m, () => {
      [text] = p.allocModule!(MODULE.slice(0, 1));
    });
    assert.deepEqual([a.vmallocs, a.cpaCalls], [0, 2]);
    p.write(text, new Uint8Array(64).fill(0x90));
    const f = measure(m, () => p.finalize(text));
    assert.equal(f.cpaCalls, 1);
    assert.deepEqual(protOf(m, text), { w: false, x: true });
  });

  it('ROX cache: module text free costs 3 CPA calls (force_rw 2 + restore_rox 1) and leaves the pages trap-filled', () => {
    const { m, p } = fresh('execmem-rox');
    const [keep] = loadModule(p, MODULE.slice(0, 1));
    const [text] = loadModule(p, MODULE.slice(0, 1));
    const c = measure(m, () => p.free(text));
    assert.deepEqual(
      [c.cpaCalls, c.vfrees, c.pokes],
      [3, 0, 0],
      '__execmem_cache_free: a plain memset, no text_poke',
    );
    assert.ok(c.shootdowns >= 2, 'set_memory_nx/_rw change PTEs and flush');
    assert.deepEqual(m.load(0, text, 64), new Uint8Array(64).fill(0xcc));
    assert.equal(cacheBlocks(p), 1, 'the block still holds the other text');
    assert.ok(keep > 0);
  });

  it('execmem_cache_clean: the block is vfreed when its last piece goes', () => {
    const { m, p } = fresh('execmem-rox');
    const [text] = loadModule(p, MODULE.slice(0, 1));
    const c = measure(m, () => p.free(text));
    assert.deepEqual([c.cpaCalls, c.vfrees], [3, 1]);
    assert.equal(p.usage().mappedBytes, 0);
  });

  it('execmem_alloc_rw on module data (PAGE_KERNEL, not cached): force_rw is 2 CPA calls that change nothing', () => {
    const { m, p } = fresh('execmem-rox');
    const c = measure(m, () => p.allocModule!(MODULE.slice(3, 4)));
    assert.deepEqual([c.vmallocs, c.cpaCalls, c.shootdowns], [1, 2, 0]);
    assert.equal(cacheBlocks(p), 0);
  });
});

describe('execmem-rox (Linux 6.17): kprobes, ftrace, BPF', () => {
  it('alloc_insn_page = execmem_alloc(EXECMEM_KPROBES): a ROX cache piece, no set_memory call of its own; 256 slots per page', () => {
    const { m, p } = fresh('execmem-rox');
    loadModule(p, MODULE.slice(0, 1)); // the cache block exists
    const c = measure(m, () => {
      for (let i = 0; i < 256; i++) load(p, 'kprobes', 16);
    });
    assert.deepEqual([c.vmallocs, c.cpaCalls, c.shootdowns, c.pokes], [0, 0, 0, 256]);
    assert.equal((p as KernelPolicy).insnPageCount, 1);
  });

  it('free_insn_page = execmem_free: an emptied kprobe page (not the last) goes back through the cache, 3 CPA calls', () => {
    const { m, p } = fresh('execmem-rox');
    const slots: number[] = [];
    for (let i = 0; i < 257; i++) slots.push(load(p, 'kprobes', 16));
    const c = measure(m, () => p.free(slots[256]));
    assert.deepEqual([c.cpaCalls, c.vfrees], [3, 0]);
    assert.equal((p as KernelPolicy).insnPageCount, 1);
  });

  it('create_trampoline: alloc_tramp = execmem_alloc_rw (2 CPA calls), written directly, set_memory_rox (1)', () => {
    const { m, p } = fresh('execmem-rox');
    load(p, 'kprobes', 16); // the cache block exists
    let va = 0;
    const a = measure(m, () => {
      va = p.alloc('ftrace', 300);
      p.write(va, new Uint8Array(300).fill(0x90));
    });
    assert.deepEqual([a.vmallocs, a.cpaCalls, a.pokes], [0, 2, 0]);
    assert.equal(measure(m, () => p.finalize(va)).cpaCalls, 1);
    assert.equal(measure(m, () => p.free(va)).cpaCalls, 3, 'tramp_free = execmem_free: the cache free');
  });

  it('BPF stays out of the cache: bpf_prog_pack on plain execmem, 4 KiB pages, one set_memory_rox per pack', () => {
    const { m, p } = fresh('execmem-rox');
    let va = 0;
    const c = measure(m, () => {
      va = load(p, 'bpf', 300);
    });
    assert.deepEqual([c.vmallocs, c.cpaCalls, c.pokes], [1, 1, 1]);
    assert.equal(cacheBlocks(p), 0);
    assert.equal(m.findArea(va)?.leafBytes, PAGE);
    const next = measure(m, () => load(p, 'bpf', 300));
    assert.deepEqual([next.cpaCalls, next.shootdowns, next.pokes], [0, 0, 1]);
  });

  it('BPF trampolines: arch_alloc_bpf_trampoline, the same packs as programs', () => {
    const { m, p } = fresh('execmem-rox');
    load(p, 'bpf', 300);
    const c = measure(m, () => load(p, 'bpf', 800, { caller: 'bpf_trampoline' }));
    assert.deepEqual([c.vmallocs, c.cpaCalls, c.shootdowns, c.pokes], [0, 0, 0, 1]);
  });
});

describe('execmem-rox-bpf (Linux 6.17 + 2026 bpf-next): BPF packs from the ROX cache', () => {
  it('alloc_new_pack from the cache: the block is populated (fill + one set_memory_rox), no fill or set_memory for the pack', () => {
    const { m, p } = fresh('execmem-rox-bpf');
    let va = 0;
    const c = measure(m, () => {
      va = load(p, 'bpf', 300);
    });
    assert.deepEqual(
      [c.vmallocs, c.cpaCalls, c.pokes],
      [1, 1, 1],
      'the cache populate is the only set_memory call',
    );
    assert.equal(cacheBlocks(p), 1);
    assert.equal(m.findArea(va)?.sizeBytes, SZ_2M);
  });

  it('bpf_prog_pack_alloc: a program into an existing pack costs 0 CPA calls, 0 shootdowns and one text_poke_copy', () => {
    const { m, p } = fresh('execmem-rox-bpf');
    load(p, 'bpf', 300);
    const c = measure(m, () => load(p, 'bpf', 300));
    assert.deepEqual([c.cpaCalls, c.shootdowns, c.vmallocs, c.pokes], [0, 0, 0, 1]);
  });

  it('bpf_prog_pack_free of the last program: text_poke_set, then execmem_free (force_rw + fill + restore_rox) and the clean vfrees the block', () => {
    const { m, p } = fresh('execmem-rox-bpf');
    const va = load(p, 'bpf', 300);
    const c = measure(m, () => p.free(va));
    assert.deepEqual([c.pokes, c.cpaCalls, c.vfrees], [1, 3, 1]);
    assert.equal(p.usage().mappedBytes, 0);
    assert.equal(cacheBlocks(p), 0);
  });

  it('module text and BPF packs share the one cache (one mutex, within_range per request)', () => {
    const { p } = fresh('execmem-rox-bpf');
    loadModule(p, MODULE.slice(0, 1));
    load(p, 'bpf', 300);
    assert.equal(cacheBlocks(p), 2, 'a 2 MiB pack cannot fit beside the text: a second block');
  });
});
