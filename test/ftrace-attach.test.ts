/**
 * Attaching and detaching ftrace ops on every design: ftrace_module_init()'s NOPs at load,
 * register_ftrace_function()'s trampoline and site patches, unregister's round trip back to the
 * NOP byte for byte with the trampoline freed, and the costs counted on the machine (three
 * text_pokes per site, three text_poke_sync() rounds per text_poke_bp_batch()). A small module
 * written by test/helpers/ftrace-module.ts runs everywhere; the real Debian modules are used when
 * the dataset is in the cache (`execmem dataset fetch`), with the compiler's own `call __fentry__`
 * relocations as the independent count of the sites `__mcount_loc` lists.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  callInsn,
  callTargetOf,
  type FtraceRecord,
  peek,
  pokeBatches,
  X86_NOP5,
} from '../src/consumers/ftrace/index.js';
import {
  parseElf,
  RELA_BYTES,
  SHF_EXECINSTR,
  SHT_RELA,
  stripModuleSignature,
} from '../src/consumers/modules/elf.js';
import { toSigned } from '../src/consumers/modules/image.js';
import { ModuleLoader } from '../src/consumers/modules/loader.js';
import { R_X86_64_PLT32 } from '../src/consumers/modules/reloc.js';
import { createMachine, type Machine } from '../src/machine/machine.js';
import { POLICY_NAMES, policyByName } from '../src/policies/index.js';
import {
  datasetKernelSymbols,
  dependencyOrder,
  findCachedDataset,
  openDataset,
  readModuleFile,
} from '../src/workloads/dataset/dataset.js';
import { execmem } from './cli-helpers.js';
import { FN_BYTES, ftraceModuleElf } from './helpers/ftrace-module.js';
import { kaslr, loadTest, type Rig, rig, testKernel } from './helpers/ftrace-rig.js';

const NOP = [...X86_NOP5];

const textOf = (r: Rig, name: string): Uint8Array => {
  const t = r.loader.get(name)!.mems.text!;
  return peek(r.machine, t.va, t.sizeBytes)!;
};
const bytesAt = (r: Rig, rec: FtraceRecord) => [...r.ft.siteBytes(rec)];

describe('ftrace_module_init(): every call __fentry__ becomes x86_nops[5] before the text is published', () => {
  it('converts core and init sites, keeps init records until init, and costs no poke or flush', () => {
    const r = rig('execmem-6.10', testKernel);
    r.ft.loadModule(r.loader, ftraceModuleElf('a', { functions: 3 }), 'a');
    assert.equal(r.ft.records().length, 4, '3 core + 1 init record (struct dyn_ftrace)');
    for (const rec of r.ft.records()) assert.deepEqual(bytesAt(r, rec), NOP);
    const text = textOf(r, 'a');
    for (let i = 0; i < 3; i++)
      assert.deepEqual([...text.subarray(i * FN_BYTES + 5, i * FN_BYTES + 8)], [0x31, 0xc0, 0xc3]);
    r.ft.initModule(r.loader, 'a');
    assert.equal(r.ft.records().length, 3, 'ftrace_free_mem() drops the init-text records');
    assert.ok(r.ft.records().every((x) => !x.init && x.target === null));
    assert.equal(r.ft.stats().sitesNoppedAtLoad, 4);
    // The same load without ftrace: identical machine costs (text_poke_early is a memcpy).
    const plain = createMachine({ seed: 1 });
    const pa = policyByName('execmem-6.10').create(plain, 1);
    const pk = testKernel(plain);
    const pl = new ModuleLoader({ allocator: pa, kernel: pk });
    pl.load(ftraceModuleElf('a', { functions: 3 }), 'a');
    pl.init('a');
    assert.deepEqual({ ...plain.counters }, { ...r.machine.counters });
  });
});

describe('register / unregister round trip, every design', () => {
  for (const policy of POLICY_NAMES) {
    it(`${policy}: one trampoline, every site calls it, then every site is the NOP again and the trampoline is freed`, () => {
      const r = rig(policy, testKernel);
      loadTest(r, 'm1', 5);
      loadTest(r, 'm2', 3);
      const before = [textOf(r, 'm1'), textOf(r, 'm2')];
      const live0 = r.allocator.usage().liveBytes;
      const c0 = { ...r.machine.counters };
      const a = r.ft.attach({ modules: ['m1', 'm2'], functions: '*' });
      const c1 = { ...r.machine.counters };
      assert.equal(a.ops.records.length, 8);
      assert.equal(a.ops.imageBytes, 207);
      assert.equal(
        r.allocator.usage().liveBytes - live0,
        207,
        'one ftrace trampoline of create_trampoline() size',
      );
      let liveFtrace = 0;
      r.allocator.forEachLive((e) => {
        if (e.type === 'ftrace') liveFtrace++;
      });
      assert.equal(liveFtrace, 1);
      for (const rec of a.ops.records)
        assert.equal(callTargetOf(toSigned(rec.va), r.ft.siteBytes(rec)), a.ops.targetSigned);
      assert.deepEqual([a.sites, a.batches, a.syncs, a.writes], [8, 1, 3, 24]);
      assert.equal(c1.syncCores - c0.syncCores, 3);
      assert.equal(c1.syncCoreIpis - c0.syncCoreIpis, 3 * (r.machine.cpuCount - 1));
      assert.ok(c1.pokes - c0.pokes >= 24, 'every pass of every site is an alias write (text_poke / update)');
      const d = r.ft.detach(a.ops);
      assert.deepEqual([d.sites, d.batches, d.syncs, d.writes], [8, 1, 3, 24]);
      assert.deepEqual([textOf(r, 'm1'), textOf(r, 'm2')], before, 'text restored byte for byte');
      for (const rec of r.ft.records()) assert.deepEqual(bytesAt(r, rec), NOP);
      assert.equal(r.allocator.usage().liveBytes, live0, 'trampoline freed');
      assert.equal(r.machine.wxViolationCount(), 0);
      assert.deepEqual(r.machine.wxFullScan(), []);
      const s = r.ft.stats();
      assert.deepEqual(
        [s.trampolinesAllocated, s.trampolinesFreed, s.opsLive, s.sitePatches, s.syncs],
        [1, 1, 0, 16, 6],
      );
    });
  }
});

describe('several ops on one site (ftrace_get_addr_new)', () => {
  it('two ops share the core caller; a direct call takes the regs caller; the last one left gets its own target', () => {
    const r = rig('execmem', testKernel);
    loadTest(r, 'm', 4);
    const live0 = r.allocator.usage().liveBytes;
    const a = r.ft.attach({ modules: ['m'], functions: 'm_*' });
    const b = r.ft.attach({ modules: ['m'], functions: 'm_1', saveRegs: true });
    assert.equal(b.ops.imageBytes, 340, 'ftrace_regs_caller trampoline');
    assert.equal(b.sites, 1);
    const rec1 = r.ft.records().find((x) => x.fn === 'm_1')!;
    const rec2 = r.ft.records().find((x) => x.fn === 'm_2')!;
    const target = (rec: FtraceRecord) => callTargetOf(toSigned(rec.va), r.ft.siteBytes(rec));
    assert.equal(target(rec1), r.ft.core.ftraceRegsCaller);
    const bpf = r.ft.attachDirect({ module: 'm', function: 'm_2', imageBytes: 105 });
    assert.equal(target(rec2), r.ft.core.ftraceRegsCaller);
    r.ft.detach(a.ops);
    assert.equal(target(rec1), b.ops.targetSigned);
    assert.equal(
      target(rec2),
      bpf.ops.targetSigned,
      'a lone direct ops: the site calls the BPF trampoline image',
    );
    assert.deepEqual(bytesAt(r, r.ft.records().find((x) => x.fn === 'm_0')!), NOP);
    r.ft.detach(bpf.ops);
    r.ft.detach(b.ops);
    for (const rec of r.ft.records()) assert.deepEqual(bytesAt(r, rec), NOP);
    assert.equal(r.allocator.usage().liveBytes, live0, 'both trampolines and the BPF image freed');
  });
});

describe('text_poke_bp_batch() costs (fidelity, module_alloc = Linux 5.17)', () => {
  it('re-pointing one site costs three text_pokes (int3, tail, first byte) and three text_poke_sync() rounds, no shootdown', () => {
    const r = rig('module_alloc', testKernel);
    loadTest(r, 'm', 2);
    const rec = r.ft.records()[0];
    const c0 = { ...r.machine.counters };
    const n = pokeBatches(r.allocator, r.machine, 0, [
      { va: rec.va, bytes: callInsn(toSigned(rec.va), r.ft.core.ftraceCaller) },
    ]);
    const c1 = r.machine.counters;
    assert.deepEqual([n.sites, n.batches, n.syncs, n.writes], [1, 1, 3, 3]);
    assert.equal(c1.pokes - c0.pokes, 3);
    assert.equal(c1.pokeBytes - c0.pokeBytes, 1 + 4 + 1);
    assert.equal(c1.pokeSteps - c0.pokeSteps, 3, 'each text_poke maps at most two pages: one step');
    assert.equal(c1.localFlushes - c0.localFlushes, 3, 'each text_poke flushes its poking address locally');
    assert.equal(c1.shootdowns - c0.shootdowns, 0);
    assert.equal(
      c1.cpaCalls - c0.cpaCalls,
      0,
      'module text is patched through the alias, never set_memory_*',
    );
    assert.equal(c1.syncCores - c0.syncCores, 3);
    assert.equal(c1.syncCoreIpis - c0.syncCoreIpis, 3 * (r.machine.cpuCount - 1));
    assert.equal(callTargetOf(toSigned(rec.va), r.ft.siteBytes(rec)), r.ft.core.ftraceCaller);
  });

  it('a detach frees the trampoline after re-pointing its sites (arch_ftrace_trampoline_free last)', () => {
    const r = rig('module_alloc', testKernel);
    loadTest(r, 'm', 2);
    const a = r.ft.attach({ modules: ['m'], functions: 'm_0' });
    r.ft.attach({ modules: ['m'], functions: 'm_0' });
    const c0 = { ...r.machine.counters };
    const d = r.ft.detach(a.ops); // the site goes from ftrace_caller (two ops) to the other ops' trampoline
    const c1 = r.machine.counters;
    assert.deepEqual([d.sites, d.syncs], [1, 3]);
    assert.equal(c1.pokes - c0.pokes, 3, 'module_alloc frees with vfree: no poke of its own');
    assert.equal(c1.vfrees - c0.vfrees, 1);
  });
});

// ---- the real Debian modules ----

const root = findCachedDataset();
const skipReal = root === null ? 'the Debian dataset is not in the cache (execmem dataset fetch)' : false;

/** The compiler's `call __fentry__` relocations in a module's executable sections. */
function fentryCalls(file: Uint8Array): { core: number; init: number } {
  const elf = parseElf(stripModuleSignature(file).bytes);
  let core = 0;
  let init = 0;
  for (const s of elf.sections) {
    const target = elf.sections[s.info];
    if (s.type !== SHT_RELA || !target || (target.flags & SHF_EXECINSTR) === 0) continue;
    for (let off = s.offset; off < s.offset + s.sizeBytes; off += RELA_BYTES) {
      if (elf.view.getUint32(off + 8, true) !== R_X86_64_PLT32) continue;
      if (elf.symbols[elf.view.getUint32(off + 12, true)]?.name !== '__fentry__') continue;
      if (target.name.startsWith('.init')) init++;
      else if (!target.name.startsWith('.exit')) core++;
    }
  }
  return { core, init };
}

describe('real Debian modules', { skip: skipReal }, () => {
  const index = root === null ? null : openDataset(root);
  const realKernel = (m: Machine) => datasetKernelSymbols(index!).withKaslrOffset(kaslr(m));
  const loadReal = (r: Rig, names: string[]): Map<string, Uint8Array> => {
    const byName = new Map(index!.modules.map((m) => [m.name, m]));
    const files = new Map<string, Uint8Array>();
    for (const n of dependencyOrder(index!, names)) {
      const file = readModuleFile(join(index!.root, byName.get(n)!.path));
      files.set(n, file);
      r.ft.loadModule(r.loader, file, n);
      r.ft.initModule(r.loader, n);
    }
    return files;
  };

  it('__mcount_loc lists exactly the compiler call __fentry__ sites, and each is NOP5 once loaded', () => {
    const r = rig('execmem', realKernel);
    const files = loadReal(r, ['nf_conntrack', 'nf_tables', 'xfs']);
    for (const [name, file] of files) {
      const calls = fentryCalls(file);
      const recs = r.ft.records().filter((x) => x.module === name);
      assert.equal(recs.length, calls.core, `${name}: records vs call __fentry__ relocations`);
      for (const rec of recs) assert.deepEqual(bytesAt(r, rec), NOP, `${name} ${rec.fn}`);
    }
    assert.ok(r.ft.records().length > 3000);
  });

  for (const policy of POLICY_NAMES) {
    it(`${policy}: attach * on nf_conntrack and nf_tables, detach, every byte of their text restored`, () => {
      const r = rig(policy, realKernel);
      loadReal(r, ['nf_conntrack', 'nf_tables']);
      const before = ['nf_conntrack', 'nf_tables'].map((n) => textOf(r, n));
      const live0 = r.allocator.usage().liveBytes;
      const a = r.ft.attach({ modules: ['nf_conntrack', 'nf_tables'], functions: '*' });
      assert.equal(a.sites, a.ops.records.length);
      assert.equal(
        a.batches,
        Math.ceil(a.sites / 256),
        'modules placed at rising addresses: cuts only at TP_VEC_MAX',
      );
      assert.equal(a.syncs, 3 * a.batches);
      for (const rec of a.ops.records)
        assert.equal(callTargetOf(toSigned(rec.va), r.ft.siteBytes(rec)), a.ops.targetSigned);
      r.ft.detach(a.ops);
      assert.deepEqual(
        ['nf_conntrack', 'nf_tables'].map((n) => textOf(r, n)),
        before,
      );
      assert.equal(r.allocator.usage().liveBytes, live0);
      assert.equal(r.machine.wxViolationCount(), 0);
    });
  }

  it('execmem ftrace attach --detach: the round trip, as JSON', () => {
    const run = execmem([
      'ftrace',
      'attach',
      '--modules',
      'nf_conntrack',
      '--functions',
      'nf_conntrack_*',
      '--detach',
      '--json',
    ]);
    assert.equal(run.status, 0, run.stderr);
    const rep = JSON.parse(run.stdout);
    assert.equal(rep.ops.trampolineBytes, 207);
    assert.ok(rep.attach.sites > 10);
    assert.equal(rep.attach.machine.syncCores, rep.attach.syncs);
    assert.equal(rep.detach.sitesRestored, rep.detach.sites);
    assert.equal(rep.detach.trampolineFreed, true);
    assert.equal(rep.wxViolations, 0);
  });

  it('execmem ftrace attach: unknown module exits 2, a glob matching nothing exits 1', () => {
    const bad = execmem(['ftrace', 'attach', '--modules', 'no_such_module', '--functions', '*']);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /unknown module/);
    const none = execmem(['ftrace', 'attach', '--modules', 'nf_conntrack', '--functions', 'zz_no_such_*']);
    assert.equal(none.status, 1);
    assert.match(none.stderr, /ENOMATCH/);
  });
});
