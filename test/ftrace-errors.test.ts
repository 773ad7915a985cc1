/**
 * Bad input to the ftrace consumer is a typed FtraceError and changes nothing: not the machine
 * (its counters), not the allocator (live bytes, live allocations), not a byte of module text, not
 * the records. Also the ftrace_bug() path at module load (a site that is not `call __fentry__`:
 * the module loads, ftrace turns itself off, every later attach is ENODEV) and an unreadable
 * __mcount_loc (refused before anything is allocated).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Ftrace as FtraceClass } from '../src/consumers/ftrace/ftrace.js';
import { type Ftrace, FtraceError, peek, X86_NOP5 } from '../src/consumers/ftrace/index.js';
import { ModuleLoader } from '../src/consumers/modules/loader.js';
import { createMachine } from '../src/machine/machine.js';
import { policyByName } from '../src/policies/index.js';
import { ftraceModuleElf, R_X86_64_PC32 } from './helpers/ftrace-module.js';
import { loadTest, type Rig, rig, testKernel } from './helpers/ftrace-rig.js';

/** Everything a refused call must leave as it was. */
function snapshot(r: Rig) {
  const live: string[] = [];
  r.allocator.forEachLive((e) => live.push(`${e.type}@${e.va}+${e.sizeBytes}`));
  const text = r.loader
    .list()
    .map((m) => [...peek(r.machine, m.mems.text!.va, m.mems.text!.sizeBytes)!].join());
  return {
    counters: { ...r.machine.counters },
    usage: r.allocator.usage(),
    live: live.sort(),
    text,
    records: r.ft.records().map((x) => `${x.module}:${x.fn}:${x.target}:${x.ops.length}`),
    stats: r.ft.stats(),
  };
}

function refused(r: Rig, code: FtraceError['code'], fn: (ft: Ftrace) => unknown): void {
  const before = snapshot(r);
  assert.throws(
    () => fn(r.ft),
    (e: unknown) => e instanceof FtraceError && e.code === code,
  );
  assert.deepEqual(snapshot(r), before);
}

describe('refused attaches change nothing', () => {
  const setup = () => {
    const r = rig('execmem-rox', testKernel);
    loadTest(r, 'm1', 4);
    loadTest(r, 'm2', 2);
    return r;
  };

  it('a module that is not loaded: ENOENT', () => {
    const r = setup();
    refused(r, 'ENOENT', (ft) => ft.attach({ modules: ['m1', 'nope'], functions: '*' }));
    refused(r, 'ENOENT', (ft) => ft.attachDirect({ module: 'nope', function: 'm1_0', imageBytes: 105 }));
  });

  it('a glob that matches no function: ENOMATCH (ftrace_set_hash: -EINVAL)', () => {
    const r = setup();
    refused(r, 'ENOMATCH', (ft) => ft.attach({ modules: ['m1'], functions: 'm2_*' }));
    refused(r, 'ENOMATCH', (ft) => ft.attachDirect({ module: 'm1', function: 'm1_9', imageBytes: 105 }));
  });

  it('a site that is not what ftrace wrote: EBADSITE before any trampoline is allocated', () => {
    const r = setup();
    const rec = r.ft.records().find((x) => x.fn === 'm2_1')!;
    r.allocator.write(rec.va, Uint8Array.of(0xcc)); // someone else's int3 on the site
    refused(r, 'EBADSITE', (ft) => ft.attach({ modules: ['m1', 'm2'], functions: '*' }));
    refused(r, 'EBADSITE', (ft) => ft.attachDirect({ module: 'm2', function: 'm2_1', imageBytes: 105 }));
    // The other sites are still fine.
    const ok = r.ft.attach({ modules: ['m1'], functions: '*' });
    assert.equal(ok.sites, 4);
    // And a detach over a site changed behind ftrace's back is refused too.
    const rec0 = ok.ops.records[0];
    const good = r.ft.siteBytes(rec0);
    r.allocator.write(rec0.va, Uint8Array.of(0x90));
    refused(r, 'EBADSITE', (ft) => ft.detach(ok.ops));
    r.allocator.write(rec0.va, good.subarray(0, 1));
    r.ft.detach(ok.ops);
  });

  it('bad arguments: EINVAL', () => {
    const r = setup();
    refused(r, 'EINVAL', (ft) => ft.attach({ modules: [], functions: '*' }));
    refused(r, 'EINVAL', (ft) => ft.attach({ modules: ['m1'], functions: '' }));
    refused(r, 'EINVAL', (ft) => ft.attach({ modules: [''], functions: '*' }));
    refused(r, 'EINVAL', (ft) =>
      ft.attach({ modules: ['m1'], functions: '*', saveRegs: 'yes' as unknown as boolean }),
    );
    for (const imageBytes of [0, -1, 4097, 1.5, Number.NaN])
      refused(r, 'EINVAL', (ft) => ft.attachDirect({ module: 'm1', function: 'm1_0', imageBytes }));
  });

  it('a second direct call on one function: EBUSY (register_ftrace_direct_multi)', () => {
    const r = setup();
    r.ft.attachDirect({ module: 'm1', function: 'm1_0', imageBytes: 105 });
    refused(r, 'EBUSY', (ft) => ft.attachDirect({ module: 'm1', function: 'm1_0', imageBytes: 105 }));
  });

  it('detaching twice: EINVAL; unloading a module with attached sites: EBUSY, then fine once detached', () => {
    const r = setup();
    const a = r.ft.attach({ modules: ['m2'], functions: '*' });
    refused(r, 'EBUSY', (ft) => ft.unloadModule(r.loader, 'm2'));
    r.ft.detach(a.ops);
    refused(r, 'EINVAL', (ft) => ft.detach(a.ops));
    r.ft.unloadModule(r.loader, 'm2');
    assert.equal(r.loader.get('m2'), undefined);
    assert.ok(r.ft.records().every((x) => x.module === 'm1'));
  });

  it('a machine that is not x86-64: EINVAL', () => {
    const machine = createMachine({ arch: 'arm64', seed: 1 });
    const allocator = policyByName('execmem').create(machine, 1);
    assert.throws(
      () => new FtraceClass({ allocator, machine, kernel: testKernel(machine) }),
      (e: unknown) => e instanceof FtraceError && e.code === 'EINVAL',
    );
  });
});

describe('module load', () => {
  it('an unreadable __mcount_loc (a PC32 entry) is ENOEXEC before anything is allocated', () => {
    const r = rig('bpf_prog_pack', testKernel);
    const before = snapshot(r);
    assert.throws(
      () => r.ft.loadModule(r.loader, ftraceModuleElf('bad', { mcountRelocType: R_X86_64_PC32 }), 'bad'),
      (e: unknown) => e instanceof FtraceError && e.code === 'ENOEXEC',
    );
    assert.deepEqual(snapshot(r), before);
    assert.equal(r.loader.get('bad'), undefined);
  });

  it('a site that is not call __fentry__ is an ftrace_bug(): the module loads, ftrace is off (ENODEV)', () => {
    const r = rig('execmem', testKernel);
    loadTest(r, 'ok', 2);
    r.ft.loadModule(r.loader, ftraceModuleElf('bug', { functions: 4, notACallAt: 1 }), 'bug');
    r.ft.initModule(r.loader, 'bug');
    assert.ok(r.loader.get('bug'), 'the module is loaded');
    assert.match(r.ft.stats().disabled ?? '', /ftrace_bug/);
    const text = peek(r.machine, r.loader.get('bug')!.mems.text!.va, 64)!;
    assert.deepEqual([...text.subarray(0, 5)], [...X86_NOP5], 'sites before the bad one were converted');
    assert.deepEqual(
      [...text.subarray(16, 21)],
      [0x66, 0x90, 0x66, 0x90, 0x90],
      'the bad site is left alone',
    );
    assert.equal(text[32], 0xe8, 'ftrace_update_code() stops: later sites keep their call __fentry__');
    refused(r, 'ENODEV', (ft) => ft.attach({ modules: ['ok'], functions: '*' }));
    refused(r, 'ENODEV', (ft) => ft.attachDirect({ module: 'ok', function: 'ok_0', imageBytes: 105 }));
    // Later loads are not converted (ftrace_module_init: if (ftrace_disabled) return).
    r.ft.loadModule(r.loader, ftraceModuleElf('late', { functions: 1 }), 'late');
    assert.equal(peek(r.machine, r.loader.get('late')!.mems.text!.va, 1)![0], 0xe8);
    assert.ok(r.ft.records().every((x) => x.module !== 'late'));
  });

  it('the loader wrapper forwards everything else untouched (a module without __mcount_loc)', () => {
    const machine = createMachine({ seed: 2 });
    const allocator = policyByName('execmem-6.10').create(machine, 2);
    const kernel = testKernel(machine);
    const ft = new FtraceClass({ allocator, machine, kernel });
    const loader = new ModuleLoader({ allocator: ft.loaderAllocator, kernel });
    loader.load(ftraceModuleElf('direct', { functions: 2 }), 'direct'); // not through ft.loadModule
    assert.equal(ft.records().length, 0);
    assert.equal(peek(machine, loader.get('direct')!.mems.text!.va, 1)![0], 0xe8);
    assert.equal(ft.loaderAllocator.name, allocator.name);
  });
});
