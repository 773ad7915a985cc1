/**
 * The ftrace consumer's x86 facts and pure rules, each pinned to the Linux function it follows:
 * create_trampoline()'s size and fields, ftrace_call_replace()'s encoding, x86_nops[5],
 * text_poke_queue()'s batch cuts (TP_VEC_MAX, tp_order_fail), text_poke_bp_batch()'s three passes,
 * ftrace_get_addr_new()'s choice of call target, the set_ftrace_filter glob, and the BPF fentry
 * trampoline length of arch_prepare_bpf_trampoline().
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  addrNew,
  batchSteps,
  bpfFentryTrampolineBytes,
  CALL_OPCODE,
  callInsn,
  callTargetOf,
  FTRACE_CALLER,
  FTRACE_REGS_CALLER,
  globMatcher,
  OPS_POINTER_BYTES,
  type OpsShape,
  RET_SIZE_BYTES,
  splitBatches,
  TP_VEC_MAX,
  trampolineBytes,
  trampolineImage,
  X86_NOP5,
} from '../src/consumers/ftrace/index.js';

describe('create_trampoline() (arch/x86/kernel/ftrace.c, Linux 6.1, Debian 6.1.0-57 build)', () => {
  it('asks alloc_tramp() for the template + RET_SIZE + sizeof(void *): 207 B (ftrace_caller), 340 B (ftrace_regs_caller)', () => {
    assert.equal(RET_SIZE_BYTES, 5); // CONFIG_RETPOLINE=y: `jmp __x86_return_thunk`
    assert.equal(OPS_POINTER_BYTES, 8);
    assert.equal(trampolineBytes(false), 194 + 5 + 8);
    assert.equal(trampolineBytes(true), 327 + 5 + 8);
    assert.equal(FTRACE_CALLER.sizeBytes, 0xc2);
    assert.equal(FTRACE_REGS_CALLER.sizeBytes, 0x147);
  });

  it('writes its fields where create_trampoline() writes them', () => {
    const tramp = -0x3f600000; // 0xffffffffc0a00000 (module area)
    const callback = -0x7ef94900;
    const thunk = -0x7e1fe110;
    for (const regs of [false, true]) {
      const t = regs ? FTRACE_REGS_CALLER : FTRACE_CALLER;
      const img = trampolineImage(regs, tramp, callback, thunk, 0xffff888100000200n);
      const view = new DataView(img.buffer);
      assert.equal(img.length, trampolineBytes(regs));
      // movq <ops pointer>(%rip), %rdx: RIP-relative to the pointer stored after the return.
      assert.deepEqual([...img.subarray(t.opPtrOffset, t.opPtrOffset + 3)], [0x48, 0x8b, 0x15]);
      const ptrAt = t.opPtrOffset + 7 + view.getInt32(t.opPtrOffset + 3, true);
      assert.equal(ptrAt, t.sizeBytes + RET_SIZE_BYTES);
      assert.equal(view.getBigUint64(ptrAt, true), 0xffff888100000200n);
      assert.equal(callTargetOf(tramp + t.callOffset, img.subarray(t.callOffset)), callback);
      assert.equal(img[t.sizeBytes], 0xe9, 'RET is jmp __x86_return_thunk (X86_FEATURE_RETHUNK)');
      assert.equal(tramp + t.sizeBytes + 5 + view.getInt32(t.sizeBytes + 1, true), thunk);
      if (regs) assert.deepEqual([...img.subarray(t.jmpOffset!, t.jmpOffset! + 2)], [0x66, 0x90]);
    }
  });
});

describe('call-site encodings', () => {
  it('x86_nops[5] is 0f 1f 44 00 00 (BYTES_NOP5, 64-bit)', () => {
    assert.deepEqual([...X86_NOP5], [0x0f, 0x1f, 0x44, 0x00, 0x00]);
  });

  it('ftrace_call_replace(ip, addr) is e8 + rel32 from ip + 5, and decodes back', () => {
    assert.deepEqual([...callInsn(0x1000, 0x2000)], [CALL_OPCODE, 0xfb, 0x0f, 0, 0]);
    fc.assert(
      fc.property(
        fc.integer({ min: -(2 ** 40), max: 2 ** 40 }),
        fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 6 }),
        (ip, d) => {
          const target = ip + 5 + d;
          assert.equal(callTargetOf(ip, callInsn(ip, target)), target);
        },
      ),
    );
    assert.equal(callTargetOf(0, X86_NOP5 as Uint8Array), null);
  });
});

describe('text_poke_queue() / text_poke_bp_batch() (arch/x86/kernel/alternative.c)', () => {
  it('TP_VEC_MAX is PAGE_SIZE / sizeof(struct text_poke_loc) = 4096 / 16', () => {
    assert.equal(TP_VEC_MAX, 256);
  });

  it('a batch is flushed when full and when an address is lower than the last (tp_order_fail)', () => {
    const rising = Array.from({ length: 600 }, (_, i) => i * 16);
    assert.deepEqual(
      splitBatches(rising).map((b) => b.length),
      [256, 256, 88],
    );
    assert.deepEqual(splitBatches([10, 20, 5, 30, 1]), [[0, 1], [2, 3], [4]]);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 1000 }), { maxLength: 700 }), (addrs) => {
        const batches = splitBatches(addrs);
        assert.deepEqual(
          batches.flat(),
          addrs.map((_, i) => i),
        );
        for (const b of batches) {
          assert.ok(b.length >= 1 && b.length <= TP_VEC_MAX);
          for (let k = 1; k < b.length; k++) assert.ok(addrs[b[k - 1]] <= addrs[b[k]]);
        }
      }),
    );
  });

  it('three passes per batch (int3, tail, first byte), each followed by text_poke_sync()', () => {
    const steps = batchSteps([0, 1]);
    assert.deepEqual(
      steps.map((s) => (s.kind === 'sync' ? 'sync' : `${s.kind}${s.site}`)),
      ['int30', 'int31', 'sync', 'tail0', 'tail1', 'sync', 'first0', 'first1', 'sync'],
    );
  });
});

describe('ftrace_get_addr_new() (kernel/trace/ftrace.c)', () => {
  const core = { ftraceCaller: -100, ftraceRegsCaller: -200 };
  const ops = (id: number, kind: OpsShape['kind'], saveRegs: boolean): OpsShape => ({
    id,
    kind,
    saveRegs,
    targetSigned: id * 1000,
  });
  it('no ops: the NOP; one ops: its trampoline or direct target; several: the core caller (regs if any wants them)', () => {
    assert.equal(addrNew([], core), null);
    assert.equal(addrNew([ops(1, 'trampoline', false)], core), 1000);
    assert.equal(addrNew([ops(2, 'direct', true)], core), 2000);
    assert.equal(addrNew([ops(1, 'trampoline', false), ops(3, 'trampoline', false)], core), -100);
    assert.equal(addrNew([ops(1, 'trampoline', false), ops(2, 'direct', true)], core), -200);
  });
});

describe('set_ftrace_filter globs (filter_parse_regex / glob_match)', () => {
  it('matches *, ? and [...] and nothing else', () => {
    const m = globMatcher('nf_*_in');
    assert.ok(m('nf_conntrack_in'));
    assert.ok(!m('nf_conntrack_in2'));
    assert.ok(globMatcher('a?c')('abc'));
    assert.ok(!globMatcher('a?c')('ac'));
    assert.ok(globMatcher('x[0-9]')('x7'));
    assert.ok(!globMatcher('x[!0-9]')('x7'));
    assert.ok(globMatcher('a.b')('a.b'));
    assert.ok(!globMatcher('a.b')('axb'));
    assert.throws(() => globMatcher(''), { code: 'EINVAL' });
    assert.throws(() => globMatcher('a[b'), { code: 'EINVAL' });
  });
});

describe('arch_prepare_bpf_trampoline() (arch/x86/net/bpf_jit_comp.c, Linux 6.1)', () => {
  it('one fentry program: 89 + 8 bytes per register argument', () => {
    assert.equal(bpfFentryTrampolineBytes(0), 89);
    assert.equal(bpfFentryTrampolineBytes(2), 105);
    assert.equal(bpfFentryTrampolineBytes(6), 137);
    assert.throws(() => bpfFentryTrampolineBytes(7));
  });
});
