/**
 * A refused module load says truly why, and changes nothing.
 *
 * Errors are labelled by the step that failed, with Linux's errno for it (load-errors.ts):
 * the parser ENOEXEC, symbol resolution ENOENT / EINVAL, relocation ENOEXEC (an overflow keeps
 * Linux's -ENOEXEC, marked relocKind 'overflow'), the per-CPU area ENOMEM, the allocator ENOMEM
 * only when the allocator itself threw a typed error (its code kept), and a bug is never
 * disguised as any of these. On the simulated machine with our allocator and Linux 6.1's
 * module_alloc: a file refused before allocating leaves every counter, frame, mapping and
 * allocation as it was; one refused after allocating (an overflow) frees all it took.
 * Runs without gcc and without the dataset (the module is assembled by elf-build.ts).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ExecmemType } from '../src/arch/types.js';
import { parseElf } from '../src/consumers/modules/elf.js';
import {
  SAMPLE_KERNEL_EXPORTS,
  SAMPLE_PERCPU_END_BYTES,
  sampleKernelSymbols,
  sampleModuleElf,
} from '../src/consumers/modules/elf-build.js';
import { ModuleLoadError, ModuleLoader } from '../src/consumers/modules/loader.js';
import { PercpuArea } from '../src/consumers/modules/percpu.js';
import { KernelSymbols } from '../src/consumers/modules/symbols.js';
import { createMachine } from '../src/machine/machine.js';
import type { InstrumentedAllocator } from '../src/policies/common.js';
import { policyByName } from '../src/policies/index.js';
import type { ExecAllocator } from '../src/policies/types.js';

/** An allocator that works, or throws what it is told to, at a chosen call. */
class ScriptedAllocator implements ExecAllocator {
  readonly name = 'scripted';
  readonly live = new Set<number>();
  private next = 0xffffa0000000;
  constructor(
    private readonly failAt: 'alloc' | 'write' | 'finalize' | null = null,
    private readonly error: () => Error = () => new Error('plain'),
    startVa?: number,
  ) {
    if (startVa !== undefined) this.next = startVa;
  }
  alloc(_t: ExecmemType, sizeBytes: number): number {
    if (this.failAt === 'alloc') throw this.error();
    const va = this.next;
    this.next += Math.ceil(sizeBytes / 4096) * 4096 + 4096;
    this.live.add(va);
    return va;
  }
  write(): void {
    if (this.failAt === 'write') throw this.error();
  }
  finalize(): void {
    if (this.failAt === 'finalize') throw this.error();
  }
  seal(): void {}
  free(va: number): void {
    assert.ok(this.live.delete(va));
  }
  shrink(): void {}
  usage() {
    return { liveBytes: this.live.size, mappedBytes: 0 };
  }
}

function typed(code: string, message: string): Error {
  return Object.assign(new Error(message), { name: 'PolicyError', code });
}

function refusal(fn: () => unknown): ModuleLoadError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ModuleLoadError) return e;
    throw e;
  }
  assert.fail('expected a ModuleLoadError');
}

const sample = sampleModuleElf('hostile');

describe('error labels: the real source and Linux errno', () => {
  it('parser: ENOEXEC from elf', () => {
    const a = new ScriptedAllocator();
    const e = refusal(() =>
      new ModuleLoader({ allocator: a, kernel: sampleKernelSymbols() }).load(sample.subarray(0, 200), 'cut'),
    );
    assert.deepEqual([e.code, e.source], ['ENOEXEC', 'elf']);
    assert.match(e.message, /cut: ETRUNC/);
  });

  it('symbols: ENOENT for an unknown symbol, EINVAL for a CRC mismatch', () => {
    const noFunc = new KernelSymbols(SAMPLE_KERNEL_EXPORTS.slice(1), SAMPLE_PERCPU_END_BYTES, 'test');
    const a = new ScriptedAllocator();
    const e = refusal(() => new ModuleLoader({ allocator: a, kernel: noFunc }).load(sample, 'x'));
    assert.deepEqual([e.code, e.source, e.unresolved], ['ENOENT', 'symbols', ['kernel_func']]);
    assert.match(e.message, /Unknown symbol kernel_func \(err -2\)/);
    const skewed = new KernelSymbols(
      SAMPLE_KERNEL_EXPORTS.map((x) => (x.name === 'kernel_func' ? { ...x, crc: 1 } : x)),
      SAMPLE_PERCPU_END_BYTES,
      'test',
    );
    const v = refusal(() => new ModuleLoader({ allocator: a, kernel: skewed }).load(sample, 'x'));
    assert.deepEqual([v.code, v.source], ['EINVAL', 'symbols']);
    assert.match(v.message, /disagrees about version of symbol kernel_func/);
    assert.equal(a.live.size, 0);
  });

  it('relocation overflow: ENOEXEC (Linux __write_relocate_add returns -ENOEXEC), relocKind overflow, all freed', () => {
    const far = new ScriptedAllocator(null, undefined, 0xc90000000000); // vmalloc area: out of rel32 reach
    const e = refusal(() =>
      new ModuleLoader({ allocator: far, kernel: sampleKernelSymbols() }).load(sample, 'x'),
    );
    assert.deepEqual([e.code, e.source, e.relocKind], ['ENOEXEC', 'relocation', 'overflow']);
    assert.match(e.message, /^ENOEXEC: hostile: overflow in relocation type \d+ val [0-9a-f]+/);
    assert.equal(far.live.size, 0);
  });

  it('allocator: ENOMEM only when the allocator threw a typed error; its own code is kept', () => {
    for (const at of ['alloc', 'write', 'finalize'] as const) {
      const a = new ScriptedAllocator(at, () => typed('ENOSPC', 'module area full'));
      const e = refusal(() =>
        new ModuleLoader({ allocator: a, kernel: sampleKernelSymbols() }).load(sample, 'x'),
      );
      assert.deepEqual([e.code, e.source, e.allocatorCode], ['ENOMEM', 'allocator', 'ENOSPC'], at);
      assert.match(e.message, /the allocator refused \(ENOSPC\): module area full/);
      assert.equal(a.live.size, 0, `${at}: everything freed`);
    }
  });

  it('a bug is not a load failure: an untyped Error or a TypeError from the allocator surfaces as itself', () => {
    for (const err of [() => new Error('plain'), () => new TypeError('oops')]) {
      const a = new ScriptedAllocator('write', err);
      assert.throws(
        () => new ModuleLoader({ allocator: a, kernel: sampleKernelSymbols() }).load(sample, 'x'),
        (e: unknown) => !(e instanceof ModuleLoadError) && e instanceof Error && /plain|oops/.test(e.message),
      );
      assert.equal(a.live.size, 0, 'freed all the same');
    }
  });

  it('per-CPU area exhausted: ENOMEM from percpu, before the allocator is asked', () => {
    const a = new ScriptedAllocator('alloc', () => typed('ENOMEM', 'must not be reached'));
    const e = refusal(() =>
      new ModuleLoader({
        allocator: a,
        kernel: sampleKernelSymbols(),
        percpu: new PercpuArea(SAMPLE_PERCPU_END_BYTES, 4),
      }).load(sample, 'x'),
    );
    assert.deepEqual([e.code, e.source], ['ENOMEM', 'percpu']);
    assert.match(e.message, /Could not allocate 8 bytes percpu data/);
  });

  it('state: EEXIST for a second load of the same name', () => {
    const loader = new ModuleLoader({ allocator: new ScriptedAllocator(), kernel: sampleKernelSymbols() });
    loader.load(sample, 'x');
    const e = refusal(() => loader.load(sample, 'x'));
    assert.deepEqual([e.code, e.source], ['EEXIST', 'state']);
  });
});

function machineSnapshot(p: InstrumentedAllocator): string {
  const m = p.machine;
  const live: number[] = [];
  p.forEachLive((x) => live.push(x.va, x.sizeBytes));
  return JSON.stringify({
    live,
    usage: p.usage(),
    policy: p.policyCounters(),
    counters: m.counters,
    frames: m.frameAccounting(),
    areas: m.areas().map((a) => [a.va, a.sizeBytes, a.prot]),
    buddy: m.phys.buddyInfo(),
    wx: m.wxViolationCount(),
  });
}

function liveSnapshot(p: InstrumentedAllocator): string {
  const live: number[] = [];
  p.forEachLive((x) => live.push(x.va, x.sizeBytes));
  return JSON.stringify({ live, liveBytes: p.usage().liveBytes, wx: p.machine.wxViolationCount() });
}

describe('a refused load changes nothing (simulated machine)', () => {
  for (const policy of ['execmem', 'module_alloc']) {
    it(`${policy}: refused before allocating -> machine and allocator exactly as before`, () => {
      const machine = createMachine({ arch: 'x86_64', seed: 4, memoryBytes: 2 ** 30, cpus: 2 });
      const p = policyByName(policy).create(machine, 4);
      const offset = machine.kernelTextStart - machine.arch.layout.kernelImage.textStart;
      const kernel = sampleKernelSymbols().withKaslrOffset(offset);
      const loader = new ModuleLoader({ allocator: p, kernel });
      loader.init(loader.load(sampleModuleElf('resident'), 'resident').name); // something live first
      const noSym = new KernelSymbols(SAMPLE_KERNEL_EXPORTS.slice(1), SAMPLE_PERCPU_END_BYTES, 't');
      const elf = sample.slice();
      new DataView(elf.buffer).setUint32(elf.length - 64 * 3 + 4, 99, true); // a section's type
      // A relocation Linux refuses while applying (after allocating): refused here before.
      const rela = parseElf(sample).sections.find((s) => s.name === '.rela.data')!;
      const badType = sample.slice();
      new DataView(badType.buffer).setUint32(rela.offset + 24 + 8, 37, true);
      for (const [what, run] of [
        ['elf', () => loader.load(sample.subarray(0, sample.length - 100), 'x')],
        ['elf', () => loader.load(elf, 'x')],
        ['symbols', () => new ModuleLoader({ allocator: p, kernel: noSym }).load(sample, 'x')],
        ['relocation', () => loader.load(badType, 'x')],
      ] as const) {
        const before = machineSnapshot(p);
        assert.equal(refusal(run).source, what);
        assert.equal(machineSnapshot(p), before, `${what}: nothing changed`);
      }
      machine.checkConsistency();
    });

    it(`${policy}: refused after allocating (overflow) -> everything allocated is freed`, () => {
      const machine = createMachine({ arch: 'x86_64', seed: 5, memoryBytes: 2 ** 30, cpus: 2 });
      const p = policyByName(policy).create(machine, 5);
      // The kernel 64 GiB away from the module area: every PC32 to it overflows.
      const farKernel = sampleKernelSymbols().withKaslrOffset(-(2 ** 36));
      const loader = new ModuleLoader({ allocator: p, kernel: farKernel });
      const before = liveSnapshot(p);
      const e = refusal(() => loader.load(sample, 'x'));
      assert.equal(e.relocKind, 'overflow');
      assert.equal(liveSnapshot(p), before);
      assert.equal(loader.list().length, 0);
      machine.checkConsistency();
    });
  }
});
