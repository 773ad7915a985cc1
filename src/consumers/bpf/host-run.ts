/**
 * Running JIT'd classic programs for real on the host backend: socket filters over packets,
 * seccomp filters over struct seccomp_data records.
 *
 * Why it can run: the image is the JIT's own output at its final address (image.ts), written into
 * real executable memory through execmem type `bpf` (host backend), and called with the kernel's
 * calling convention for bpf_func: `unsigned int (*)(const void *ctx, const struct bpf_insn *)`,
 * ctx in rdi (__bpf_prog_run() / bpf_dispatcher_nop_func()). What the kernel gives it and we
 * stand in for:
 * - ctx for a socket filter is a struct sk_buff. The converted program reads only skb->data,
 *   skb->len and skb->data_len at the SKB_LAYOUT offsets (convert.ts), so ctx here is a buffer with
 *   those three fields set (a linear skb: data_len 0, so headlen == len) and the packet right
 *   after it; every other field reads as 0 (ancillary loads are not exercised by libpcap's
 *   offline programs).
 * - Packet loads the inline fast path cannot serve (indirect loads, loads past headlen) call
 *   bpf_skb_load_helper_{8,16,32}(skb, data, headlen, offset). Ours are a few hand-assembled
 *   instructions (HELPER_CODE, checked against GNU as in the tests) with the kernel helper's
 *   contract for a linear skb: if offset >= 0 and headlen - offset >= size, return the big-endian
 *   value, else -EFAULT. What differs from the kernel: negative offsets (SKF_NET_OFF /
 *   SKF_LL_OFF, bpf_skb_load_helper_convert_offset()) fail instead of being rebased, and there is
 *   no paged data for skb_copy_bits() to find (our skbs are linear, so it would fail too). The
 *   other helpers a converted program may call (SKF_AD_CPU, _RANDOM, _PAY_OFFSET, _NLATTR*)
 *   return 0 here.
 * - ctx for a seccomp filter is the 64-byte struct seccomp_data itself.
 * Helpers and data live in execmem allocations (the helpers in `bpf` text within rel32 reach of
 * the images; ctx and packet in `module_data`), so everything the JIT'd code touches is memory
 * this project owns, and W^X holds throughout.
 */
import { Rng } from '../../base/rng.js';
import type { Execmem } from '../../execmem/execmem.js';
import type { HostBackend } from '../../host/backend.js';
import { SECCOMP_DATA_BYTES } from './classic.js';
import { BpfHelper, SKB_LAYOUT } from './convert.js';
import { BpfError } from './errors.js';
import { loadImage } from './image.js';
import type { ClassicInsn, EbpfInsn } from './insn.js';
import type { JitConfig } from './jit-x86.js';
import { type ClassicKind, jitClassic } from './program.js';

/**
 * bpf_skb_load_helper_{8,16,32} for a linear skb, System V AMD64: rdi skb, rsi data, edx headlen,
 * ecx offset; result in rax. Each is:
 *   test ecx, ecx; js fail; sub edx, ecx; cmp edx, SIZE; jl fail; movsxd rcx, ecx;
 *   <load [rsi+rcx] into eax, big-endian>; ret; fail: mov rax, -14 (-EFAULT); ret
 */
export const HELPER_ASM: Readonly<Record<'load8' | 'load16' | 'load32' | 'zero', string>> = {
  load8:
    'test %ecx,%ecx; js 1f; sub %ecx,%edx; cmp $1,%edx; jl 1f; movslq %ecx,%rcx; movzbl (%rsi,%rcx),%eax; ret; 1: mov $-14,%rax; ret',
  load16:
    'test %ecx,%ecx; js 1f; sub %ecx,%edx; cmp $2,%edx; jl 1f; movslq %ecx,%rcx; movzwl (%rsi,%rcx),%eax; rol $8,%ax; ret; 1: mov $-14,%rax; ret',
  load32:
    'test %ecx,%ecx; js 1f; sub %ecx,%edx; cmp $4,%edx; jl 1f; movslq %ecx,%rcx; mov (%rsi,%rcx),%eax; bswap %eax; ret; 1: mov $-14,%rax; ret',
  zero: 'xor %eax,%eax; ret',
};

/** test ecx,ecx; js fail; sub edx,ecx; cmp edx,SIZE; jl fail; movsxd rcx,ecx; LOAD; ret; fail: ... */
function loadHelper(size: number, load: readonly number[]): number[] {
  const fail = 11 + 3 + load.length + 1;
  return [
    ...[0x85, 0xc9, 0x78, fail - 4], // test ecx, ecx; js fail
    ...[0x29, 0xca, 0x83, 0xfa, size, 0x7c, fail - 11], // sub edx, ecx; cmp edx, size; jl fail
    ...[0x48, 0x63, 0xc9, ...load, 0xc3], // movsxd rcx, ecx; load; ret
    ...[0x48, 0xc7, 0xc0, 0xf2, 0xff, 0xff, 0xff, 0xc3], // fail: mov rax, -14; ret
  ];
}

/** The machine code of HELPER_ASM, hand-assembled (the tests compare it with GNU as). */
export const HELPER_CODE: Readonly<Record<keyof typeof HELPER_ASM, Uint8Array>> = {
  load8: Uint8Array.from(loadHelper(1, [0x0f, 0xb6, 0x04, 0x0e])),
  load16: Uint8Array.from(loadHelper(2, [0x0f, 0xb7, 0x04, 0x0e, 0x66, 0xc1, 0xc0, 0x08])),
  load32: Uint8Array.from(loadHelper(4, [0x8b, 0x04, 0x0e, 0x0f, 0xc8])),
  zero: Uint8Array.from([0x31, 0xc0, 0xc3]),
};

/** Bytes of the ctx area before the packet (past every SKB_LAYOUT field). */
export const SKB_CTX_BYTES = 1024;
/** Largest packet the runner takes. */
export const MAX_PACKET_BYTES = 64 * 1024;

export interface HostFilter {
  readonly kind: ClassicKind;
  readonly va: number;
  readonly entryVa: number;
  readonly imageBytes: number;
  readonly proglenBytes: number;
  /** The converted program (for diagnostics). */
  readonly insns: readonly EbpfInsn[];
  readonly call: (ctx: number) => number;
}

export class HostBpfRunner {
  private readonly helperVa: Record<keyof typeof HELPER_CODE, number>;
  private readonly dataVa: number;
  private readonly rng: Rng;
  private readonly filters = new Set<HostFilter>();
  private closed = false;

  constructor(
    private readonly em: Execmem,
    private readonly host: HostBackend,
    seed = 1,
    private readonly config?: JitConfig,
  ) {
    this.rng = new Rng(seed);
    const made: number[] = [];
    try {
      const helper = (code: Uint8Array): number => {
        const va = em.allocVa('bpf', code.length);
        made.push(va);
        em.updateVa(va, code);
        return va;
      };
      this.helperVa = {
        load8: helper(HELPER_CODE.load8),
        load16: helper(HELPER_CODE.load16),
        load32: helper(HELPER_CODE.load32),
        zero: helper(HELPER_CODE.zero),
      };
      this.dataVa = em.allocVa('module_data', SKB_CTX_BYTES + MAX_PACKET_BYTES, { alignBytes: 64 });
    } catch (err) {
      for (const va of made) em.freeVa(va);
      throw err;
    }
  }

  /** Check, convert, JIT and load a classic program; it is callable until unload(). */
  load(prog: readonly ClassicInsn[], kind: ClassicKind): HostFilter {
    if (this.closed) throw new BpfError('EFORMAT', 'runner is closed');
    const jit = jitClassic(prog, kind, this.config);
    const loaded = loadImage(this.em, jit.sized, this.rng, (insn) => this.helperTarget(insn));
    const fn = this.host.fn(loaded.entryVa, 'uint32_t (uint64_t, uint64_t)');
    const f: HostFilter = {
      kind,
      va: loaded.va,
      entryVa: loaded.entryVa,
      imageBytes: loaded.layout.imageBytes,
      proglenBytes: jit.sized.proglenBytes,
      insns: jit.converted.insns,
      call: (ctx: number) => fn(ctx, 0) >>> 0,
    };
    this.filters.add(f);
    return f;
  }

  unload(f: HostFilter): void {
    if (!this.filters.delete(f)) throw new BpfError('EFORMAT', 'filter is not loaded by this runner');
    this.em.freeVa(f.va);
  }

  /** Place a packet (socket filters) and return the ctx address to call with. */
  setPacket(packet: Uint8Array): number {
    if (packet.length > MAX_PACKET_BYTES) throw new BpfError('EFORMAT', `packet of ${packet.length} bytes`);
    const buf = new Uint8Array(SKB_CTX_BYTES + packet.length);
    const dv = new DataView(buf.buffer);
    const dataVa = this.dataVa + SKB_CTX_BYTES;
    dv.setBigUint64(SKB_LAYOUT.data, BigInt(dataVa), true);
    dv.setUint32(SKB_LAYOUT.len, packet.length, true);
    dv.setUint32(SKB_LAYOUT.dataLen, 0, true);
    buf.set(packet, SKB_CTX_BYTES);
    this.em.updateVa(this.dataVa, buf);
    return this.dataVa;
  }

  /** Place a struct seccomp_data record and return its address. */
  setSeccompData(record: Uint8Array): number {
    if (record.length !== SECCOMP_DATA_BYTES) throw new BpfError('EFORMAT', 'seccomp_data is 64 bytes');
    this.em.updateVa(this.dataVa, record);
    return this.dataVa;
  }

  /** Unload every filter and free the helpers and the data area. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const f of this.filters) this.em.freeVa(f.va);
    this.filters.clear();
    for (const va of Object.values(this.helperVa)) this.em.freeVa(va);
    this.em.freeVa(this.dataVa);
  }

  private helperTarget(insn: EbpfInsn): number {
    switch (insn.imm) {
      case BpfHelper.SkbLoad8:
        return this.helperVa.load8;
      case BpfHelper.SkbLoad16:
        return this.helperVa.load16;
      case BpfHelper.SkbLoad32:
        return this.helperVa.load32;
      default:
        return this.helperVa.zero;
    }
  }
}
