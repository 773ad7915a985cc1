/**
 * Size distributions of the things that live in executable memory, and the BPF JIT's overhead.
 *
 * Why each number (sources in ../shared/research; anything not published is labelled ASSUMED):
 * - BPF program sizes: "From a random server in our fleet, 50% of the loaded BPF programs are less
 *   than 500 byte in size, and 75% of them are less than 2kB" (Song Liu, execmem_alloc v5 cover,
 *   <20221128190245.2337461-1-song@kernel.org>). We draw from a piecewise log-uniform
 *   distribution with exactly those quantiles. The bounds of the outer pieces are ASSUMED:
 *   32 B (a minimal JIT prologue + epilogue) and 64 KiB (large tracing programs).
 * - BPF JIT image: bpf_jit_binary_pack_alloc() asks the pack for
 *   round_up(proglen + sizeof(struct bpf_binary_header) + 16, BPF_PROG_CHUNK_SIZE) with a 64 B
 *   chunk, the header being `u32 size` aligned to BPF_IMAGE_ALIGNMENT (8 bytes), and "16 bytes for
 *   a random section of illegal instructions"; the program starts at a random offset
 *   get_random_u32_below(min(size - (proglen + hdr), 64 - hdr)) & ~(alignment - 1) after the
 *   header (kernel/bpf/core.c; linux-execmem.md section 3). x86 passes alignment 1, arm64 4.
 * - Aaron Lu's sockex1 case: "The actual space required for this bpf prog that needs special
 *   protection is: 64 * 2 + 192 bytes" and before packing each instance changed "3 pages" to
 *   RO+X (<Y2ioTodn+mBXdIqp@ziqianlu-desk2>): we read that as three JIT images per instance, of
 *   64, 64 and 192 bytes.
 * - kprobe instruction slots: one slot per probe from the kprobe_insn_cache; on x86 a slot is
 *   16 bytes ("kprobes/x86: Use 16 bytes for each instruction slot again", 2015, after the decoder's
 *   MAX_INSN_SIZE became 15). The copied instruction plus its boost jump fill 6..16 bytes (ASSUMED
 *   spread).
 * - ftrace trampolines: x86 create_trampoline() copies the ftrace_caller / ftrace_regs_caller
 *   template plus a return and an ops pointer: a few hundred bytes (ASSUMED 160..480 B).
 * - BPF trampolines: arch_prepare_bpf_trampoline() output is bounded by one page (ASSUMED
 *   log-uniform 256 B..4 KiB).
 * - Module sections: ASSUMED log-normal text size (median 12 KiB, sigma 1.1, clamped to
 *   [512 B, 4 MiB]), other sections as fractions of text. This is a stand-in; the measured
 *   distribution of a Debian kernel package's modules is engineer E's dataset
 *   (src/workloads/dataset/), which should replace it where available.
 */
import { assert } from '../base/assert.js';
import type { Rng } from '../base/rng.js';

export const BPF_PROG_MIN_BYTES = 32; // ASSUMED
export const BPF_PROG_P50_BYTES = 500; // Song Liu
export const BPF_PROG_P75_BYTES = 2048; // Song Liu ("2kB")
export const BPF_PROG_MAX_BYTES = 64 * 1024; // ASSUMED

export const BPF_CHUNK_BYTES = 64;
export const BPF_HEADER_BYTES = 8;
export const BPF_ILLEGAL_PREFIX_BYTES = 16;

/** Aaron Lu's sockex1 instance: three JIT images. */
export const AARONLU_IMAGE_BYTES: readonly number[] = [64, 64, 192];

export const KPROBE_SLOT_BYTES = 16;

/** Log-uniform in [lo, hi). */
export function logUniform(rng: Rng, lo: number, hi: number): number {
  assert(lo > 0 && hi > lo, `logUniform bounds ${lo}..${hi}`);
  return Math.exp(Math.log(lo) + rng.next() * (Math.log(hi) - Math.log(lo)));
}

/** Standard normal by Box-Muller (one draw; the second is dropped to keep state simple). */
export function normal(rng: Rng): number {
  const u = 1 - rng.next(); // (0, 1]
  const v = rng.next();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** A JITed BPF program length with the published quantiles (50% < 500 B, 75% < 2 KiB). */
export function bpfProgBytes(rng: Rng): number {
  const u = rng.next();
  if (u < 0.5) return Math.floor(logUniform(rng, BPF_PROG_MIN_BYTES, BPF_PROG_P50_BYTES));
  if (u < 0.75) return Math.floor(logUniform(rng, BPF_PROG_P50_BYTES, BPF_PROG_P75_BYTES));
  return Math.floor(logUniform(rng, BPF_PROG_P75_BYTES, BPF_PROG_MAX_BYTES));
}

export interface JitImage {
  /** What the JIT asks the allocator for (a multiple of 64 B). */
  readonly imageBytes: number;
  /** Where the program starts: after the header and the random illegal-instruction prefix. */
  readonly codeOffsetBytes: number;
  readonly progBytes: number;
}

/** The image bpf_jit_binary_pack_alloc() would request for a program of `progBytes`. */
export function bpfJitImage(rng: Rng, progBytes: number, insnAlignBytes = 1): JitImage {
  assert(Number.isInteger(progBytes) && progBytes > 0, `progBytes ${progBytes}`);
  const need = progBytes + BPF_HEADER_BYTES + BPF_ILLEGAL_PREFIX_BYTES;
  const imageBytes = Math.ceil(need / BPF_CHUNK_BYTES) * BPF_CHUNK_BYTES;
  const slack = Math.min(imageBytes - (progBytes + BPF_HEADER_BYTES), BPF_CHUNK_BYTES - BPF_HEADER_BYTES);
  const start = Math.floor(rng.int(0, slack - 1) / insnAlignBytes) * insnAlignBytes;
  const codeOffsetBytes = BPF_HEADER_BYTES + start;
  assert(codeOffsetBytes + progBytes <= imageBytes, 'JIT image layout');
  return { imageBytes, codeOffsetBytes, progBytes };
}

/** The image for a program whose packed size is known (Aaron Lu's figures): the largest program that fits. */
export function bpfJitImageOfSize(rng: Rng, imageBytes: number): JitImage {
  assert(
    imageBytes % BPF_CHUNK_BYTES === 0 && imageBytes > BPF_HEADER_BYTES + BPF_ILLEGAL_PREFIX_BYTES,
    'image size',
  );
  const image = bpfJitImage(rng, imageBytes - BPF_HEADER_BYTES - BPF_ILLEGAL_PREFIX_BYTES);
  assert(image.imageBytes === imageBytes, 'image size round trip');
  return image;
}

export function kprobeInsnBytes(rng: Rng): number {
  return rng.int(6, KPROBE_SLOT_BYTES);
}

export function ftraceTrampolineBytes(rng: Rng): number {
  return rng.int(160, 480);
}

export function bpfTrampolineBytes(rng: Rng): number {
  return Math.floor(logUniform(rng, 256, 4096));
}

/** One module's memory types (Linux enum mod_mem_type), in bytes; 0 means the type is absent. */
export interface ModuleSizes {
  readonly textBytes: number;
  readonly rodataBytes: number;
  readonly roAfterInitBytes: number;
  readonly dataBytes: number;
  readonly initTextBytes: number;
  readonly initRodataBytes: number;
  readonly initDataBytes: number;
}

export const MODULE_TEXT_MEDIAN_BYTES = 12 * 1024; // ASSUMED
export const MODULE_TEXT_SIGMA = 1.1; // ASSUMED
export const MODULE_TEXT_MIN_BYTES = 512;
export const MODULE_TEXT_MAX_BYTES = 4 * 1024 * 1024;

/** ASSUMED module section sizes (see the header comment). */
export function moduleSizes(rng: Rng): ModuleSizes {
  const raw = MODULE_TEXT_MEDIAN_BYTES * Math.exp(MODULE_TEXT_SIGMA * normal(rng));
  const textBytes = Math.round(Math.min(MODULE_TEXT_MAX_BYTES, Math.max(MODULE_TEXT_MIN_BYTES, raw)));
  const frac = (lo: number, hi: number) =>
    Math.max(16, Math.round(textBytes * (lo + rng.next() * (hi - lo))));
  return {
    textBytes,
    rodataBytes: frac(0.1, 0.6),
    roAfterInitBytes: rng.next() < 0.35 ? rng.int(8, 1024) : 0,
    dataBytes: frac(0.05, 0.4),
    initTextBytes: rng.next() < 0.85 ? rng.int(64, 4096) : 0,
    initRodataBytes: rng.next() < 0.5 ? rng.int(16, 1024) : 0,
    initDataBytes: rng.next() < 0.6 ? rng.int(16, 2048) : 0,
  };
}

/**
 * Split `textBytes` into function-sized pieces, each starting 16-byte aligned as compilers emit
 * functions (ASSUMED log-uniform 16 B..2 KiB bodies). Returns [offset, size] pairs covering
 * code only; alignment padding between functions stays trap-filled as allocated.
 */
export function splitFunctions(rng: Rng, textBytes: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let offset = 0;
  while (offset < textBytes) {
    const size = Math.min(textBytes - offset, Math.floor(logUniform(rng, 16, 2048)));
    out.push([offset, size]);
    offset = Math.ceil((offset + size) / 16) * 16;
  }
  return out;
}
