/**
 * The kernel's path for one classic program, end to end: what bpf_prepare_filter() does for a
 * socket filter (sk_attach_filter(), SO_ATTACH_FILTER) or a seccomp filter
 * (seccomp_prepare_filter() -> bpf_prog_create_from_user(..., seccomp_check_filter)):
 * bpf_check_classic(), the seccomp transformation, bpf_migrate_filter() -> bpf_convert_filter(),
 * then bpf_prog_select_runtime() -> bpf_int_jit_compile().
 *
 * Why a separate step before allocation: every check and both JIT sizing passes run on values,
 * so a refused program (typed BpfError) never reaches the allocator, and the size the allocator is
 * asked for is known from `jitClassic(...).proglenBytes` alone (packImageBytes()).
 */

import type { Rng } from '../../base/rng.js';
import type { Execmem } from '../../execmem/execmem.js';
import { checkClassic, seccompCheckFilter } from './classic.js';
import { type ConvertedProgram, convertClassic } from './convert.js';
import { type LoadedImage, loadImage, packImageBytes } from './image.js';
import type { ClassicInsn } from './insn.js';
import { type CallTarget, DEBIAN_6_1_JIT, type JitConfig, type JitSized, jitX86 } from './jit-x86.js';

export type ClassicKind = 'socket' | 'seccomp';

/** Check, transform (seccomp) and convert: the eBPF program the JIT will see. */
export function prepareClassic(prog: readonly ClassicInsn[], kind: ClassicKind): ConvertedProgram {
  checkClassic(prog);
  const checked = kind === 'seccomp' ? seccompCheckFilter(prog) : prog;
  return convertClassic(checked);
}

export interface ClassicJit {
  readonly converted: ConvertedProgram;
  readonly sized: JitSized;
  /** What bpf_jit_binary_pack_alloc() asks the pack for. */
  readonly imageBytes: number;
}

/** prepareClassic + the JIT's sizing passes. */
export function jitClassic(
  prog: readonly ClassicInsn[],
  kind: ClassicKind,
  config: JitConfig = DEBIAN_6_1_JIT,
): ClassicJit {
  const converted = prepareClassic(prog, kind);
  const sized = jitX86(
    { insns: converted.insns, stackDepthBytes: converted.stackDepthBytes, wasClassic: true },
    config,
  );
  return { converted, sized, imageBytes: packImageBytes(sized.proglenBytes) };
}

/**
 * The whole kernel path onto an allocator: check, convert, JIT to convergence, then
 * bpf_jit_binary_pack_alloc() (execmem type `bpf`), the final pass at the image address and
 * one write (image.ts). A refused program throws before anything is allocated.
 */
export function loadClassic(
  em: Execmem,
  prog: readonly ClassicInsn[],
  kind: ClassicKind,
  rng: Rng,
  callTarget: CallTarget,
  config: JitConfig = DEBIAN_6_1_JIT,
): LoadedImage & { readonly jit: ClassicJit } {
  const jit = jitClassic(prog, kind, config);
  return { ...loadImage(em, jit.sized, rng, callTarget), jit };
}
