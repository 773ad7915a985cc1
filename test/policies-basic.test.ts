/**
 * Every policy (the six Linux re-implementations and our execmem adapter) on the real simulated
 * machine: the lifecycle does what the design says (bytes land, final protections are right, W^X
 * holds), bad input is refused with a typed error and changes nothing, and random sequences keep
 * the machine's W^X audit at 0, read back what was written, and leak nothing once all is freed.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { type ArchName, EXECMEM_TYPES, type ExecmemType, typeIsText } from '../src/arch/index.js';
import { createMachine, type Machine } from '../src/machine/machine.js';
import { PTE_NX, PTE_RW } from '../src/machine/types.js';
import {
  type InstrumentedAllocator,
  POLICIES,
  POLICY_NAMES,
  type PolicyName,
} from '../src/policies/index.js';
import { JitAlloc2023Policy } from '../src/policies/jit-alloc.js';
import { kprobePagesMappedRox } from '../src/policies/kernel.js';
import { KernelPolicy } from '../src/policies/kernel-policy.js';
import { allocModuleSections } from '../src/policies/types.js';

const GIB = 1024 ** 3;

function fresh(
  name: PolicyName,
  arch: ArchName = 'x86_64',
  seed = 7,
): { m: Machine; p: InstrumentedAllocator } {
  const m = createMachine({ arch, memoryBytes: 2 * GIB, cpus: 2, seed });
  return { m, p: POLICIES[name].create(m, seed) };
}

function code(n: number, salt: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = 0x40 + ((i * 7 + salt) % 0x30); // never 0xcc, never a BRK/zero word
  return b;
}

function isErrorWithCode(e: unknown, code: string): boolean {
  return e instanceof Error && (e as { code?: string }).code === code;
}

/** Everything a failed call must leave unchanged. */
function snapshot(m: Machine, p: InstrumentedAllocator): string {
  const live: unknown[] = [];
  p.forEachLive((e) => live.push([e.va, e.sizeBytes, e.type]));
  return JSON.stringify({
    usage: p.usage(),
    live,
    counters: m.counters,
    frames: m.frameAccounting(),
    wx: m.wxViolationCount(),
  });
}

describe('policies: lifecycle on x86_64', () => {
  for (const name of POLICY_NAMES) {
    it(`${name}: every type gets its bytes and its final protection`, () => {
      const { m, p } = fresh(name);
      for (const type of EXECMEM_TYPES) {
        const bytes = code(300, type.length);
        const va = p.alloc(type, 300, type === 'bpf' ? 64 : 1);
        p.write(va, bytes.subarray(0, 100));
        p.write(va + 100, bytes.subarray(100));
        p.finalize(va);
        if (type === 'module_ro_after_init') p.seal(va);
        assert.deepEqual(m.load(0, va, 300), bytes, `${type}: bytes read back`);
        const t = m.kernelPt.walk(va);
        assert.ok(t !== null, `${type}: mapped`);
        const exec = (t.flags & PTE_NX) === 0;
        const rw = (t.flags & PTE_RW) !== 0;
        assert.equal(exec, typeIsText(type), `${type}: executable iff text`);
        assert.equal(rw, type === 'module_data', `${type}: writable iff module_data (ro_after_init sealed)`);
        if (typeIsText(type))
          assert.deepEqual(m.fetch(1, va, 4), bytes.subarray(0, 4), `${type}: runs on CPU 1`);
        assert.equal(m.wxViolationCount(), 0, `${type}: W^X`);
        p.free(va);
        assert.equal(m.wxViolationCount(), 0, `${type}: W^X after free`);
      }
      p.shrink();
      assert.equal(p.usage().liveBytes, 0);
    });
  }
});

describe('policies: bad input is refused and changes nothing', () => {
  type Case = [string, string, (p: InstrumentedAllocator, va: number, sealed: number) => void];
  const cases: Case[] = [
    ['unknown type', 'EINVAL', (p) => p.alloc('module_bss' as ExecmemType, 64)],
    ['zero size', 'EINVAL', (p) => p.alloc('bpf', 0)],
    ['negative size', 'EINVAL', (p) => p.alloc('bpf', -5)],
    ['fractional size', 'EINVAL', (p) => p.alloc('bpf', 1.5)],
    ['NaN size', 'EINVAL', (p) => p.alloc('bpf', Number.NaN)],
    ['oversized', 'EINVAL', (p) => p.alloc('module_text', 2 ** 40)],
    ['alignment not a power of two', 'EINVAL', (p) => p.alloc('bpf', 64, 48)],
    ['alignment above a page', 'EINVAL', (p) => p.alloc('bpf', 64, 8192)],
    ['unknown caller', 'EINVAL', (p) => p.alloc('bpf', 64, 64, { caller: 'nope' as 'bpf_trampoline' })],
    [
      'trampoline hint on module text',
      'EINVAL',
      (p) => p.alloc('module_text', 64, 1, { caller: 'bpf_trampoline' }),
    ],
    ['free of a wild pointer', 'ENOENT', (p, va) => p.free(va + 64 * 1024 * 1024)],
    ['free inside an allocation', 'EINVAL', (p, va) => p.free(va + 8)],
    ['write crossing the end', 'EINVAL', (p, va) => p.write(va + 100, new Uint8Array(101))],
    ['empty write', 'EINVAL', (p, va) => p.write(va, new Uint8Array(0))],
    ['write outside any allocation', 'ENOENT', (p, va) => p.write(va + 64 * 1024 * 1024, new Uint8Array(1))],
    ['seal of text', 'EINVAL', (p, va) => p.seal(va)],
    ['seal twice', 'EINVAL', (p, _va, sealed) => p.seal(sealed)],
    ['write to sealed ro_after_init', 'EPERM', (p, _va, sealed) => p.write(sealed, new Uint8Array(4))],
  ];
  // The execmem adapter reports execmem's own error codes; the Linux policies share PolicyError.
  for (const name of POLICY_NAMES.filter((n) => n !== 'execmem')) {
    it(`${name}: typed errors, state unchanged`, () => {
      const { m, p } = fresh(name);
      const va = p.alloc('module_text', 200);
      p.write(va, code(200, 1));
      p.finalize(va);
      const sealed = p.alloc('module_ro_after_init', 100);
      p.finalize(sealed);
      p.seal(sealed);
      for (const [what, codeWanted, call] of cases) {
        const before = snapshot(m, p);
        assert.throws(
          () => call(p, va, sealed),
          (e: unknown) => isErrorWithCode(e, codeWanted),
          `${what}: ${codeWanted}`,
        );
        assert.equal(snapshot(m, p), before, `${what}: state unchanged`);
      }
      p.free(va);
      const before = snapshot(m, p);
      assert.throws(
        () => p.free(va),
        (e: unknown) => isErrorWithCode(e, 'ENOENT'),
        'double free',
      );
      assert.equal(snapshot(m, p), before, 'double free: state unchanged');
    });
  }
  it('execmem adapter: bad input throws a typed error and changes nothing', () => {
    const { m, p } = fresh('execmem');
    const va = p.alloc('module_text', 200);
    // execmem bounds writes by the requested size, which sizeOf reports (200 here).
    const usable = (p as unknown as { execmem: { sizeOfVa(va: number): number } }).execmem.sizeOfVa(va);
    assert.equal(usable, 200);
    for (const call of [
      () => p.alloc('bpf', 0),
      () => p.alloc('nope' as ExecmemType, 10),
      () => p.free(va + 8),
      () => p.write(va + 100, new Uint8Array(usable - 99)),
    ]) {
      const before = snapshot(m, p);
      assert.throws(
        call,
        (e: unknown) => e instanceof Error && typeof (e as { code?: unknown }).code === 'string',
      );
      assert.equal(snapshot(m, p), before);
    }
  });
});

interface Op {
  kind: 'alloc' | 'module' | 'write' | 'finalize' | 'seal' | 'free' | 'shrink';
  type: number;
  size: number;
  pick: number;
  offset: number;
  len: number;
}

const opArb: fc.Arbitrary<Op> = fc.record({
  kind: fc.constantFrom<Op['kind']>(
    'alloc',
    'alloc',
    'alloc',
    'module',
    'write',
    'write',
    'finalize',
    'seal',
    'free',
    'free',
    'shrink',
  ),
  type: fc.nat(EXECMEM_TYPES.length - 1),
  size: fc.oneof(fc.integer({ min: 1, max: 600 }), fc.integer({ min: 1, max: 9000 })),
  pick: fc.nat(1000),
  offset: fc.double({ min: 0, max: 1, noNaN: true }),
  len: fc.integer({ min: 1, max: 512 }),
});

interface Shadow {
  va: number;
  type: ExecmemType;
  size: number;
  bytes: Uint8Array;
  written: Uint8Array;
  finalized: boolean;
  sealed: boolean;
  trampoline: boolean;
}

function shadowOf(va: number, type: ExecmemType, size: number, trampoline = false): Shadow {
  return {
    trampoline,
    va,
    type,
    size,
    bytes: new Uint8Array(size),
    written: new Uint8Array(size),
    finalized: false,
    sealed: false,
  };
}

/** Apply one op, mirroring it in the shadow; only legal calls are made. */
function step(p: InstrumentedAllocator, live: Shadow[], op: Op, salt: number): void {
  if (op.kind === 'alloc') {
    const type = EXECMEM_TYPES[op.type];
    // Every third BPF allocation is a trampoline image (the hint Linux designs may treat apart).
    const hint = type === 'bpf' && op.pick % 3 === 0 ? { caller: 'bpf_trampoline' as const } : {};
    const va = p.alloc(type, op.size, type === 'bpf' ? 64 : 1, hint);
    live.push(shadowOf(va, type, op.size, 'caller' in hint));
    return;
  }
  if (op.kind === 'module') {
    const sections = [
      { type: 'module_text' as const, sizeBytes: op.size, init: false },
      { type: 'module_rodata' as const, sizeBytes: op.len, init: false },
      { type: 'module_ro_after_init' as const, sizeBytes: 1 + (op.pick % 300), init: false },
      { type: 'module_data' as const, sizeBytes: op.len + 100, init: false },
      { type: 'module_text' as const, sizeBytes: op.len, init: true },
    ];
    const vas = allocModuleSections(p, sections);
    sections.forEach((s, i) => {
      live.push(shadowOf(vas[i], s.type, s.sizeBytes));
    });
    return;
  }
  if (op.kind === 'shrink') {
    p.shrink();
    return;
  }
  if (live.length === 0) return;
  const i = op.pick % live.length;
  const a = live[i];
  switch (op.kind) {
    case 'write': {
      if (a.sealed) return;
      const off = Math.min(a.size - 1, Math.floor(op.offset * a.size));
      const len = Math.min(op.len, a.size - off);
      const bytes = code(len, salt);
      p.write(a.va + off, bytes);
      a.bytes.set(bytes, off);
      a.written.fill(1, off, off + len);
      return;
    }
    case 'finalize':
      if (!a.finalized) p.finalize(a.va);
      a.finalized = true;
      return;
    case 'seal':
      if (a.type !== 'module_ro_after_init' || !a.finalized || a.sealed) return;
      p.seal(a.va);
      a.sealed = true;
      return;
    case 'free':
      p.free(a.va);
      live.splice(i, 1);
      return;
  }
}

/**
 * Frames that are writable and executable by design, which the W^X audit must see:
 * - Linux 5.17's BPF trampoline pages (bpf_jit_alloc_exec_page: set_memory_x, "Keep image as
 *   writeable");
 * - arm64 kprobe instruction pages: alloc_insn_page() maps them PAGE_KERNEL_ROX in vmalloc space
 *   directly, with no set_memory call, so their linear-map alias stays writable.
 * Every other design, and ours: none.
 */
function expectedWx(m: Machine, p: InstrumentedAllocator, live: readonly Shadow[]): number {
  if (!(p instanceof KernelPolicy) || p instanceof JitAlloc2023Policy) return 0;
  let frames = 0;
  const pages = (a: Shadow) => Math.ceil(a.size / 4096);
  if (p.kernel.bpfTrampoline === 'rwx-page') for (const a of live) if (a.trampoline) frames += pages(a);
  if (kprobePagesMappedRox(m.arch.name)) {
    frames += p.insnPageCount;
    for (const a of live) if (a.type === 'kprobes' && a.size > 16) frames += pages(a);
  }
  return frames;
}

/** Written bytes read back, for allocations whose writes are visible (a pack shows them at finalize). */
function checkBytes(m: Machine, p: InstrumentedAllocator, a: Shadow): void {
  const packed =
    p instanceof KernelPolicy &&
    !(p instanceof JitAlloc2023Policy) &&
    p.kernel.bpfPackArches.includes(m.arch.name);
  if (packed && a.type === 'bpf' && !a.finalized) return;
  const got = m.load(0, a.va, a.size);
  for (let j = 0; j < a.size; j++) {
    if (a.written[j]) assert.equal(got[j], a.bytes[j], `${p.name}: byte ${j} of ${a.type} at ${a.va}`);
  }
}

describe('policies: random sequences keep W^X, contents and accounting', () => {
  for (const arch of ['x86_64', 'arm64', 'generic'] as const) {
    for (const name of POLICY_NAMES) {
      it(`${name} on ${arch}`, () => {
        fc.assert(
          fc.property(fc.array(opArb, { minLength: 5, maxLength: 40 }), (ops) => {
            const { m, p } = fresh(name, arch, 3);
            const base = m.frameAccounting();
            const live: Shadow[] = [];
            ops.forEach((op, k) => {
              step(p, live, op, k);
              assert.equal(m.wxViolationCount(), expectedWx(m, p, live), `W^X after op ${k} (${op.kind})`);
              for (const a of live) checkBytes(m, p, a);
              let sum = 0;
              for (const a of live) sum += a.size;
              assert.equal(p.usage().liveBytes, sum, 'live bytes add up');
            });
            for (const a of [...live]) p.free(a.va);
            p.shrink();
            assert.equal(m.wxViolationCount(), expectedWx(m, p, []));
            assert.equal(p.usage().liveBytes, 0);
            const end = m.frameAccounting();
            assert.equal(
              end.freeFrames + end.tableFrames + end.mappedFrames,
              end.totalFrames,
              'frames add up',
            );
            if (p instanceof KernelPolicy) {
              // kprobe_insn_cache keeps its last page ("so as not to have to set it up again"); in
              // 6.17 that page is a piece of a ROX-cache block, which then stays mapped with it.
              const kept = p.insnPageCount;
              const blocks = p.cacheBlockCount;
              assert.ok(kept <= 1 && blocks <= kept, `kept ${kept} pages, ${blocks} cache blocks`);
              const keptBytes = blocks > 0 ? blocks * 2 * 1024 * 1024 : kept * 4096;
              assert.equal(p.usage().mappedBytes, keptBytes, 'nothing else left mapped');
              assert.equal(
                end.mappedFrames,
                base.mappedFrames + keptBytes / 4096,
                'every other data frame returned',
              );
            }
          }),
          { numRuns: 6, seed: 42 },
        );
      });
    }
  }
});
