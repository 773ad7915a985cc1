/**
 * ftrace_module_init() for modules loaded by our loader: every `call __fentry__` becomes the
 * 5-byte NOP before the module's text is published.
 *
 * Linux (kernel/module/main.c load_module(), 6.1): after the sections are copied in and
 * relocated (post_relocation), and before complete_formation() makes text read-only and
 * executable, ftrace_module_init(mod) -> ftrace_process_locs() -> ftrace_update_code() ->
 * ftrace_nop_initialize() -> ftrace_init_nop() -> ftrace_make_nop(mod, rec, MCOUNT_ADDR), which on
 * x86 (arch/x86/kernel/ftrace.c) checks that the site holds ftrace_call_replace(ip, __fentry__)
 * (ftrace_verify_code) and writes x86_nops[5] with ftrace_modify_code_direct() ->
 * text_poke_early(): a plain memcpy, because the text is still the loader's writable copy
 * ("before the code will ever be executed (module load) ... just modify the code directly").
 * 6.13-6.16 wrote it with text_poke() onto ROX text (Rostedt's 32 ms boot regression); 6.17 is
 * back to writable text at this point, as are all the kernels modelled here.
 *
 * Our loader (src/consumers/modules, not modified) builds each memory type's image privately,
 * relocates it and writes it with ONE allocator.write() before finalize(). So the faithful place
 * for the conversion is that write: this allocator wrapper, handed to the loader, rewrites the
 * sites of the text image it is given and forwards one write of the converted image. The cost on
 * every design is what Linux pays (nothing beyond the copy the loader makes anyway); the bytes
 * that land are the kernel's.
 *
 * A site that is not `call __fentry__` is an ftrace_bug(): ftrace_update_code() stops there and
 * ftrace is disabled (ftrace_kill); the module still loads. The wrapper reports that through
 * `onBug`, leaves the remaining sites as they are, and stops converting.
 */
import type { ExecmemType } from '../../arch/types.js';
import type { AllocHint, ExecAllocator, ModuleSection } from '../../policies/types.js';
import { allocModuleSections } from '../../policies/types.js';
import { toSigned } from '../modules/image.js';
import type { McountSite } from './mcount.js';
import { callInsn, MCOUNT_INSN_BYTES, sameBytes, X86_NOP5 } from './x86.js';

/** What the wrapper must know about the module being loaded (set just before loader.load()). */
export interface PendingModule {
  readonly name: string;
  readonly sites: readonly McountSite[];
  /** Filled in by the wrapper as the loader allocates: the VA of text and init_text. */
  textVa: number | null;
  initTextVa: number | null;
  /** Sites converted to the NOP, in `sites` order (the ones after a bug stay false). */
  readonly nopped: boolean[];
}

export class ModuleInitAllocator implements ExecAllocator {
  pending: PendingModule | null = null;
  /** Sites converted over all loads. */
  noppedSites = 0;

  constructor(
    private readonly inner: ExecAllocator,
    /** The runtime (KASLR-shifted) signed address of __fentry__ (MCOUNT_ADDR). */
    private readonly fentrySigned: number,
    /** Whether ftrace still converts (false after a bug). */
    private readonly enabled: () => boolean,
    private readonly onBug: (module: string, va: number, found: Uint8Array) => void,
  ) {}

  get name(): string {
    return this.inner.name;
  }

  alloc(type: ExecmemType, sizeBytes: number, alignBytes?: number, hint?: AllocHint): number {
    return this.inner.alloc(type, sizeBytes, alignBytes, hint);
  }

  /** move_module()'s batch: remember where text and init text went. */
  allocModule(sections: readonly ModuleSection[]): number[] {
    const vas = allocModuleSections(this.inner, sections);
    const p = this.pending;
    if (p !== null) {
      sections.forEach((s, i) => {
        if (s.type !== 'module_text') return;
        if (s.init) p.initTextVa = vas[i];
        else p.textVa = vas[i];
      });
    }
    return vas;
  }

  write(va: number, bytes: Uint8Array): void {
    const p = this.pending;
    const memType = p === null ? null : va === p.textVa ? 'text' : va === p.initTextVa ? 'init_text' : null;
    if (p === null || memType === null || !this.enabled()) {
      this.inner.write(va, bytes);
      return;
    }
    const image = bytes.slice();
    const nop = X86_NOP5 as Uint8Array;
    for (let i = 0; i < p.sites.length; i++) {
      const s = p.sites[i];
      if (s.memType !== memType || s.offsetBytes + MCOUNT_INSN_BYTES > image.length) continue;
      const ip = va + s.offsetBytes;
      const found = image.subarray(s.offsetBytes, s.offsetBytes + MCOUNT_INSN_BYTES);
      if (!sameBytes(found, callInsn(toSigned(ip), this.fentrySigned))) {
        this.onBug(p.name, ip, found.slice());
        break; // ftrace_update_code(): ftrace_bug(), no more records are converted
      }
      image.set(nop, s.offsetBytes);
      p.nopped[i] = true;
      this.noppedSites++;
    }
    this.inner.write(va, image);
  }

  finalize(va: number): void {
    this.inner.finalize(va);
  }

  seal(va: number): void {
    this.inner.seal(va);
  }

  free(va: number): void {
    this.inner.free(va);
  }

  shrink(): void {
    this.inner.shrink();
  }

  usage(): { liveBytes: number; mappedBytes: number } {
    return this.inner.usage();
  }
}
