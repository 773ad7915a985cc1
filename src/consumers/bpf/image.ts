/**
 * A JIT image in executable memory, as bpf_jit_binary_pack_alloc() lays it out and
 * bpf_jit_binary_pack_finalize() writes it (kernel/bpf/core.c, Linux 6.1.192), through execmem
 * type `bpf`.
 *
 * Why this layout: the allocation the kernel asks its pack for is
 *   size = round_up(proglen' + sizeof(struct bpf_binary_header) + 16, BPF_PROG_CHUNK_SIZE)
 * where proglen' = roundup(proglen, alignof(struct exception_table_entry)) + extable bytes
 * (bpf_int_jit_compile(): 4-byte alignment on x86, no extable for these programs), the header is
 * `u32 size` aligned to 8, and "16 bytes for a random section of illegal instructions". The
 * program starts at header + prandom_u32_max(hole) & ~(alignment - 1), hole =
 * min(size - (proglen' + hdr), 64 - hdr); 6.1.192's x86 JIT passes alignment = 4. The whole image
 * (header, 0xCC fill from jit_fill_hole(), code) is built in a RW buffer and copied in ONE write
 * (bpf_arch_text_copy() -> text_poke_copy()): here one Execmem update of the whole allocation.
 *
 * The allocation is made only after the JIT converged (the kernel's order); the final pass runs at
 * the real address (calls are rel32). If that pass fails (a call out of reach) the image is freed
 * again, as bpf_int_jit_compile()'s out_image path does, and the error is rethrown: nothing stays
 * allocated.
 */
import { assert } from '../../base/assert.js';
import type { Rng } from '../../base/rng.js';
import type { Execmem } from '../../execmem/execmem.js';
import { BpfError } from './errors.js';
import { type CallTarget, emitX86, type JitSized } from './jit-x86.js';

export const BPF_PROG_CHUNK_BYTES = 64;
export const BPF_BINARY_HEADER_BYTES = 8;
export const BPF_ILLEGAL_PREFIX_BYTES = 16;
/** alignof(struct exception_table_entry) on x86-64, the JIT's `align`. */
export const X86_JIT_ALIGN_BYTES = 4;
export const X86_TRAP_BYTE = 0xcc;

export interface PackLayout {
  /** The allocation: a multiple of 64 B. */
  readonly imageBytes: number;
  /** Where the code starts, from the allocation's start. */
  readonly codeOffsetBytes: number;
  /** The JIT's converged length. */
  readonly proglenBytes: number;
}

/** The size bpf_jit_binary_pack_alloc() requests for a converged JIT length. */
export function packImageBytes(proglenBytes: number): number {
  assert(Number.isInteger(proglenBytes) && proglenBytes > 0, `proglen ${proglenBytes}`);
  const request = Math.ceil(proglenBytes / X86_JIT_ALIGN_BYTES) * X86_JIT_ALIGN_BYTES;
  const need = request + BPF_BINARY_HEADER_BYTES + BPF_ILLEGAL_PREFIX_BYTES;
  return Math.ceil(need / BPF_PROG_CHUNK_BYTES) * BPF_PROG_CHUNK_BYTES;
}

/** The layout, with the random start bpf_jit_binary_pack_alloc() draws. */
export function packLayout(proglenBytes: number, rng: Rng): PackLayout {
  const request = Math.ceil(proglenBytes / X86_JIT_ALIGN_BYTES) * X86_JIT_ALIGN_BYTES;
  const imageBytes = packImageBytes(proglenBytes);
  const hole = Math.min(
    imageBytes - (request + BPF_BINARY_HEADER_BYTES),
    BPF_PROG_CHUNK_BYTES - BPF_BINARY_HEADER_BYTES,
  );
  const start = rng.int(0, hole - 1) & ~(X86_JIT_ALIGN_BYTES - 1);
  const codeOffsetBytes = BPF_BINARY_HEADER_BYTES + start;
  assert(codeOffsetBytes + proglenBytes <= imageBytes, 'JIT image layout');
  return { imageBytes, codeOffsetBytes, proglenBytes };
}

/** The bytes of the whole allocation: header, trap fill, code. */
export function buildImage(layout: PackLayout, code: Uint8Array): Uint8Array {
  assert(code.length === layout.proglenBytes, 'code length is the converged length');
  const image = new Uint8Array(layout.imageBytes).fill(X86_TRAP_BYTE);
  new DataView(image.buffer).setUint32(0, layout.imageBytes, true); // rw_header->size
  image.set(code, layout.codeOffsetBytes);
  return image;
}

export interface LoadedImage {
  /** The allocation (the header's address, bpf_jit_binary_pack_hdr()). */
  readonly va: number;
  /** prog->bpf_func */
  readonly entryVa: number;
  readonly layout: PackLayout;
}

/**
 * Allocate the image through execmem type `bpf`, run the final JIT pass at its address, and write
 * it in one update. Returns where it lives; `em.freeVa(loaded.va)` unloads it.
 */
export function loadImage(em: Execmem, sized: JitSized, rng: Rng, callTarget: CallTarget): LoadedImage {
  const layout = packLayout(sized.proglenBytes, rng);
  const va = em.allocVa('bpf', layout.imageBytes, { alignBytes: BPF_PROG_CHUNK_BYTES });
  try {
    const code = emitX86(sized, va + layout.codeOffsetBytes, callTarget);
    em.updateVa(va, buildImage(layout, code));
  } catch (err) {
    em.freeVa(va);
    if (err instanceof BpfError) throw err;
    throw err;
  }
  return { va, entryVa: va + layout.codeOffsetBytes, layout };
}
