/**
 * The BPF JIT against independent references, and the typed refusals.
 * - A hand-checked handful: for three classic programs the x86-64 code was written out by hand
 *   from bpf_convert_filter()'s and do_jit()'s rules (net/core/filter.c, arch/x86/net/bpf_jit_comp.c,
 *   Linux 6.1.192), assembled by GNU as, and must equal our JIT's bytes exactly (so the image
 *   length, and the bpf_prog_pack size class, are the ones Linux would allocate).
 * - Encoding choices GNU as would not make by itself (the JIT's fixed-width forms) are pinned
 *   literally, each naming the emitter it comes from.
 * - Bad input is a typed BpfError and nothing is allocated: a malformed classic program, an
 *   unknown opcode, a jump out of range, an eBPF object that is not ELF; a call out of rel32
 *   reach (known only at the final address) frees the image again.
 * - XDP objects (libxdp1): the per-function image sizes shipped in data/bpf-real.json are what our
 *   JIT computes from the installed objects.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { Rng } from '../src/base/rng.js';
import { checkClassic, parseClassicText } from '../src/consumers/bpf/classic.js';
import { functionForJit, readBpfObject } from '../src/consumers/bpf/elf-bpf.js';
import { BpfError } from '../src/consumers/bpf/errors.js';
import { HELPER_ASM, HELPER_CODE } from '../src/consumers/bpf/host-run.js';
import { packImageBytes } from '../src/consumers/bpf/image.js';
import { type ClassicInsn, ebpf } from '../src/consumers/bpf/insn.js';
import { DEBIAN_6_1_JIT, emitX86, jitX86 } from '../src/consumers/bpf/jit-x86.js';
import { jitClassic, loadClassic } from '../src/consumers/bpf/program.js';
import { Execmem } from '../src/execmem/execmem.js';
import { SimBackend } from '../src/execmem/sim-backend.js';
import { createMachine } from '../src/machine/machine.js';
import { BPF_REAL_DATA, bpfRealSizeHistogram } from '../src/workloads/bpf-real.js';
import { withTempDir } from './helpers/tempdir.js';
import { hasTool } from './helpers/toolchain.js';

const IMAGE_VA = 0x10000;
const HELPER_VA = IMAGE_VA + 0x1000;

function gnuAs(asm: string): Uint8Array {
  return withTempDir('bpf-as-', (dir) => {
    writeFileSync(join(dir, 'x.s'), `.text\nstart:\n${asm}\n`);
    execFileSync('as', ['--64', '-o', join(dir, 'x.o'), join(dir, 'x.s')]);
    execFileSync('objcopy', ['-O', 'binary', '-j', '.text', join(dir, 'x.o'), join(dir, 'x.bin')]);
    return new Uint8Array(readFileSync(join(dir, 'x.bin')));
  });
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** Hand-written: what Linux 6.1.192 JITs for each program (comments: the rule that decides it). */
const HANDFUL: readonly { name: string; kind: 'seccomp' | 'socket'; text: string; asm: string }[] = [
  {
    name: 'seccomp: ret allow',
    kind: 'seccomp',
    text: '1\n6 0 0 2147418112\n',
    asm: `
      {disp8} nopl 0x0(%rax,%rax,1)  # emit_prologue: x86_nops[5]; no nop2 for classic programs
      push %rbp
      mov %rsp,%rbp
      push %rbx               # push_callee_regs: R6 (ctx) and R7 (X) are used
      push %r13
      xor %eax,%eax           # bpf_convert_filter: A = 0, X = 0, ctx = arg1
      xor %r13d,%r13d
      mov %rdi,%rbx
      mov $0x7fff0000,%eax    # RET K: mov32 A, K; exit
      pop %r13                # first exit: the epilogue; leave; ret; int3 (CONFIG_SLS)
      pop %rbx
      leave
      ret
      int3`,
  },
  {
    name: 'seccomp: arch check, one syscall denied',
    kind: 'seccomp',
    text: '7\n32 0 0 4\n21 1 0 3221225534\n6 0 0 0\n32 0 0 0\n21 0 1 59\n6 0 0 327681\n6 0 0 2147418112\n',
    asm: `
      {disp8} nopl 0x0(%rax,%rax,1)
      push %rbp
      mov %rsp,%rbp
      push %rbx
      push %r13
      xor %eax,%eax
      xor %r13d,%r13d
      mov %rdi,%rbx
      mov 0x4(%rbx),%eax      # seccomp_check_filter: LD|W|ABS -> LDX|W|ABS -> load from ctx
      mov $0xc000003e,%esi    # K negative as s32: "zero extend immediate into tmp register"
      cmp %rsi,%rax           # BPF_JMP is 64-bit: REX.W cmp
      je c3                   # jf == 0: one jump to jt
      xor %eax,%eax           # RET 0: emit_mov_imm32 uses xor for 0
    epi:
      pop %r13
      pop %rbx
      leave
      ret
      int3
    c3:
      {disp8} mov 0x0(%rbx),%eax  # emit_insn_suffix: a disp8 even for offset 0
      cmp $0x3b,%rax          # cmp imm8 form
      jne c6                  # jt == 0: JEQ becomes JNE to jf
      mov $0x50001,%eax
      jmp epi                 # later exits jump to the epilogue
    c6:
      mov $0x7fff0000,%eax
      jmp epi`,
  },
  {
    name: 'socket: ldb [23]; jeq #6 (tcpdump "ip proto 6" body)',
    kind: 'socket',
    text: '4\n48 0 0 23\n21 0 1 6\n6 0 0 65535\n6 0 0 0\n',
    asm: `
      {disp8} nopl 0x0(%rax,%rax,1)
      push %rbp
      mov %rsp,%rbp
      push %rbx               # R6 ctx, R7 X, R8 skb->data, R9 headlen all used
      push %r13
      push %r14
      push %r15
      xor %eax,%eax
      xor %r13d,%r13d
      mov %rdi,%rbx
      mov 0xc8(%rbx),%r14     # seen_ld_abs: D = skb->data (disp32: offset 200)
      mov 0x70(%rbx),%r15d    # H = skb->len
      mov 0x74(%rbx),%esi     #     - skb->data_len
      sub %esi,%r15d
      mov %r15,%rsi           # convert_bpf_ld_abs fast path: tmp = headlen - 23
      sub $0x17,%rsi
      cmp $0x1,%rsi           # if tmp < 1 (signed) take the helper
      jl slow
      movzbq 0x17(%r14),%rax  # A = *(u8 *)(data + 23)
      jmp c1                  # BPF_JMP_A(8): over the slow path
    slow:
      mov %rbx,%rdi           # bpf_skb_load_helper_8(skb, data, headlen, 23)
      mov %r14,%rsi
      mov %r15,%rdx
      mov $0x17,%ecx          # BPF_MOV64_IMM of a positive value: mov r32, imm32
      call start+0x1000
      test %rax,%rax          # JSGE A, 0 compares with 0: test
      jge c1
      xor %eax,%eax
    epi:
      pop %r15
      pop %r14
      pop %r13
      pop %rbx
      leave
      ret
      int3
    c1:
      cmp $0x6,%rax
      jne c3
      mov $0xffff,%eax
      jmp epi
    c3:
      xor %eax,%eax
      jmp epi`,
  },
];

const haveAs = hasTool('as') && hasTool('objcopy');
const skipAs = haveAs || process.env.CI ? false : 'GNU as/objcopy not installed';

describe('x86 JIT: a hand-checked handful, assembled by GNU as', { skip: skipAs }, () => {
  for (const h of HANDFUL) {
    test(h.name, () => {
      const jit = jitClassic(parseClassicText(h.text), h.kind);
      const ours = emitX86(jit.sized, IMAGE_VA, () => HELPER_VA);
      const want = gnuAs(h.asm);
      assert.equal(hex(ours), hex(want));
      assert.equal(
        jit.imageBytes,
        packImageBytes(want.length),
        'the pack size class of the reference length',
      );
    });
  }
  test('the host helpers (bpf_skb_load_helper_* for a linear skb) are what GNU as makes of HELPER_ASM', () => {
    for (const k of Object.keys(HELPER_ASM) as (keyof typeof HELPER_ASM)[]) {
      assert.equal(hex(HELPER_CODE[k]), hex(gnuAs(HELPER_ASM[k].replaceAll('; ', '\n'))), k);
    }
  });
});

describe('x86 JIT: encoding choices pinned literally', () => {
  const one = (insns: ReturnType<typeof ebpf>[], stackDepthBytes = 0) =>
    emitX86(jitX86({ insns, stackDepthBytes, wasClassic: false }, DEBIAN_6_1_JIT), IMAGE_VA, () => HELPER_VA);
  test('emit_prologue: eBPF gets nop2 after the nop5; a stack gets sub rsp, imm32 even when it fits imm8', () => {
    const code = one([ebpf(0xb7, 0, 0, 0, 0), ebpf(0x95, 0, 0, 0, 0)], 16);
    // nop5; nop2; push rbp; mov rbp, rsp; sub rsp, 16 (48 81 ec imm32); xor eax, eax; leave; ret; int3
    assert.equal(hex(code), '0f1f44000066905548' + '89e5' + '4881ec10000000' + '31c0' + 'c9c3cc');
  });
  test('ALU64 mov of a negative immediate is the sign-extending 7-byte form; LD_IMM64 of a kernel address is movabs', () => {
    const neg = one([ebpf(0xb7, 0, 0, 0, -1), ebpf(0x95, 0, 0, 0, 0)]);
    assert.equal(hex(neg.subarray(11, 18)), '48c7c0ffffffff'); // emit_mov_imm32(sign_propagate)
    const abs = one([
      ebpf(0x18, 1, 0, 0, 0x23456000),
      ebpf(0, 0, 0, 0, 0xffff8881 | 0),
      ebpf(0x95, 0, 0, 0, 0),
    ]);
    assert.equal(hex(abs.subarray(11, 21)), '48bf' + '00604523' + '8188ffff'); // emit_mov_imm64: movabs rdi
    const small = one([ebpf(0x18, 1, 0, 0, 0x1234), ebpf(0, 0, 0, 0, 0), ebpf(0x95, 0, 0, 0, 0)]);
    assert.equal(hex(small.subarray(11, 16)), 'bf34120000'); // is_uimm32: mov edi, imm32
  });
  test('jumps: rel8 up to +123 (is_imm8_jmp_offset), rel32 beyond', () => {
    // 40 x 'r0 += 1' (4 bytes each: 48 83 c0 01) between a conditional jump and its target.
    const body = (n: number) => [
      ebpf(0x15, 0, 0, n, 0),
      ...Array.from({ length: n }, () => ebpf(0x07, 0, 0, 0, 1)),
      ebpf(0x95, 0, 0, 0, 0),
    ];
    const short = one(body(30)); // 120 bytes: rel8
    const long = one(body(31)); // 124 bytes: rel32
    assert.equal(long.length - short.length, 4 + 4, 'one more add (4) and the 6-byte jcc instead of 2');
  });
});

describe('bad input: a typed error, nothing allocated', () => {
  const em = new Execmem(
    new SimBackend(createMachine({ arch: 'x86_64', memoryBytes: 2 ** 30, cpus: 2, seed: 1 })),
    { seed: 1 },
  );
  const rng = new Rng(1);
  const refused = (f: () => unknown, code: string) => {
    const before = em.stats();
    assert.throws(f, (e: unknown) => e instanceof BpfError && e.code === code);
    const now = em.stats();
    assert.equal(now.counters.allocs, before.counters.allocs, 'no allocation was attempted');
    assert.deepEqual(now.types, before.types, 'nothing allocated');
  };
  const load = (prog: ClassicInsn[]) => () => loadClassic(em, prog, 'socket', rng, () => 0);
  test('malformed classic programs', () => {
    refused(() => parseClassicText('3\n6 0 0 0\n'), 'EFORMAT');
    refused(() => parseClassicText('1\n6 0 0\n'), 'EFORMAT');
    refused(() => parseClassicText('1\n65536 0 0 0\n'), 'EFORMAT');
    refused(load([]), 'EFORMAT');
    refused(load([{ code: 0x28, jt: 0, jf: 0, k: 12 }]), 'EFORMAT'); // no RET last
    refused(
      load([
        { code: 0x34, jt: 0, jf: 0, k: 0 },
        { code: 0x16, jt: 0, jf: 0, k: 0 },
      ]),
      'EFORMAT',
    ); // div by 0
    refused(
      load([
        { code: 0x60, jt: 0, jf: 0, k: 3 },
        { code: 0x16, jt: 0, jf: 0, k: 0 },
      ]),
      'EMEM',
    ); // M[3] unwritten
  });
  test('unknown opcodes (classic, seccomp subset, eBPF)', () => {
    refused(
      load([
        { code: 0xff, jt: 0, jf: 0, k: 0 },
        { code: 0x06, jt: 0, jf: 0, k: 0 },
      ]),
      'EOPCODE',
    );
    refused(
      () =>
        loadClassic(
          em,
          [
            { code: 0x30, jt: 0, jf: 0, k: 0 },
            { code: 0x06, jt: 0, jf: 0, k: 0 },
          ],
          'seccomp',
          rng,
          () => 0,
        ),
      'EOPCODE',
    );
    refused(
      () => jitX86({ insns: [ebpf(0xff, 0, 0, 0, 0)], stackDepthBytes: 0, wasClassic: false }),
      'EOPCODE',
    );
  });
  test('jumps out of range', () => {
    refused(
      load([
        { code: 0x15, jt: 5, jf: 0, k: 0 },
        { code: 0x06, jt: 0, jf: 0, k: 0 },
      ]),
      'EJUMP',
    );
    refused(
      load([
        { code: 0x05, jt: 0, jf: 0, k: 1 },
        { code: 0x06, jt: 0, jf: 0, k: 0 },
      ]),
      'EJUMP',
    );
    refused(
      () =>
        jitX86({
          insns: [ebpf(0x05, 0, 0, 7, 0), ebpf(0x95, 0, 0, 0, 0)],
          stackDepthBytes: 0,
          wasClassic: false,
        }),
      'EJUMP',
    );
  });
  test('eBPF objects that are not (valid) eBPF ELF', () => {
    refused(
      () => readBpfObject(new TextEncoder().encode('this is not an ELF file at all, just text '.repeat(3))),
      'ENOTELF',
    );
    const elf = new Uint8Array(64);
    elf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
    refused(() => readBpfObject(elf), 'ENOTELF'); // e_machine 0
    new DataView(elf.buffer).setUint16(16, 1, true);
    new DataView(elf.buffer).setUint16(18, 247, true);
    new DataView(elf.buffer).setBigUint64(40, 1n << 40n, true);
    new DataView(elf.buffer).setUint16(58, 64, true);
    new DataView(elf.buffer).setUint16(60, 3, true);
    refused(() => readBpfObject(elf), 'EELF');
  });
  test('a helper call out of rel32 reach: ERANGE at the final pass, the image freed again', () => {
    const prog = parseClassicText('2\n48 0 0 23\n22 0 0 0\n');
    const before = em.stats();
    assert.throws(
      () => loadClassic(em, prog, 'socket', rng, () => 2 ** 40),
      (e: unknown) => e instanceof BpfError && e.code === 'ERANGE',
    );
    const live = (st: typeof before) => Object.values(st.types).map((t) => [t.liveObjects, t.liveBytes]);
    assert.deepEqual(live(em.stats()), live(before), 'the image was freed again (the block may stay cached)');
    // A helper in kernel text near the image (x86 module space is within 2 GiB of the kernel).
    const ok = loadClassic(em, prog, 'socket', rng, () => 0xffffff810000);
    assert.equal(em.sizeOfVa(ok.va), ok.layout.imageBytes);
    em.freeVa(ok.va);
  });
  test('checkClassic accepts every shipped real program', () => {
    const data = JSON.parse(readFileSync(BPF_REAL_DATA, 'utf8')) as {
      seccomp: { program: string }[];
      tcpdump: { program: string }[];
    };
    for (const p of [...data.seccomp, ...data.tcpdump]) checkClassic(parseClassicText(p.program));
  });
});

const XDP_DIR = '/usr/lib/x86_64-linux-gnu/bpf';
describe('XDP objects (libxdp1)', {
  skip: existsSync(XDP_DIR) || process.env.CI ? false : 'libxdp1 not installed',
}, () => {
  test('per-function image sizes in data/bpf-real.json are what our JIT computes from the installed objects', () => {
    const data = JSON.parse(readFileSync(BPF_REAL_DATA, 'utf8')) as {
      xdp: {
        object: string;
        program: string;
        functions: { name: string; insns: number; proglenBytes: number }[];
      }[];
    };
    const objects = readdirSync(XDP_DIR).filter((f) => f.endsWith('.o'));
    assert.ok(objects.includes('xdp-dispatcher.o'));
    let checked = 0;
    for (const f of objects) {
      for (const p of readBpfObject(new Uint8Array(readFileSync(join(XDP_DIR, f))))) {
        const shipped = data.xdp.find((x) => x.object === f && x.program === p.name);
        assert.ok(shipped, `${f}:${p.name} in data/bpf-real.json`);
        const ours = p.functions.map((fn, i) => ({
          name: fn.name,
          insns: fn.insns.length,
          proglenBytes: jitX86(functionForJit(fn, i)).proglenBytes,
        }));
        assert.deepEqual(ours, shipped.functions);
        checked++;
      }
    }
    assert.ok(checked >= 10);
  });
});

test('bpf-real size histogram: counts every load; real programs are smaller than the published mix', () => {
  const h = bpfRealSizeHistogram({ scale: 0.1 });
  assert.equal(
    h.loads.reduce((a, b) => a + b, 0),
    h.totalLoads,
  );
  assert.ok(h.totalLoads > 200);
  // Song Liu's fleet: 50% < 500 B; systemd's many small per-directive filters put more below it.
  assert.ok(h.under500B > 0.5, `${h.under500B}`);
});
