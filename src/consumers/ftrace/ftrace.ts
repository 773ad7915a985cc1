/**
 * Dynamic ftrace on x86-64 over real modules: call-site records, ops with their trampolines, and
 * live patching of the sites, through any allocator design on the simulated machine.
 *
 * What it does, after Linux 6.1 (kernel/trace/ftrace.c, arch/x86/kernel/ftrace.c,
 * arch/x86/kernel/alternative.c):
 * - loadModule(): ftrace_module_init() (module-init.ts): the module's `__mcount_loc` sites
 *   (mcount.ts) are turned from `call __fentry__` into x86_nops[5] inside the loader's image and
 *   become records (struct dyn_ftrace) in load order, sorted by address within the module, which
 *   is the order ftrace_replace_code() walks them in (ftrace_pages appended per module).
 *   initModule() drops the init-text records (ftrace_free_mem from do_init_module);
 *   unloadModule() drops the rest (ftrace_release_mod).
 * - attach(): register_ftrace_function() for an ops filtered to functions of the named modules
 *   (set_ftrace_filter ':mod:' with a glob): create_trampoline() sizes and allocates the ops'
 *   trampoline through the allocator as type `ftrace` (alloc_tramp: module_alloc, execmem_alloc
 *   or 6.17's execmem_alloc_rw; each design does its own), writes it and finalizes it
 *   (set_memory_ro + set_memory_x, or set_memory_rox), then ftrace_replace_code() re-points every
 *   changed site (ftrace_get_addr_new, records.ts addrNew) with text_poke_queue/text_poke_finish
 *   (patch.ts: text_poke_bp_batch, three syncs per batch of up to TP_VEC_MAX sites).
 * - attachDirect(): a BPF trampoline on one function: its image is allocated as type `bpf` with
 *   caller `bpf_trampoline` (bpf_tramp_image_alloc / arch_alloc_bpf_trampoline, each design
 *   its own), then register_ftrace_direct_multi(), whose ops carries FTRACE_REGS_ADDR as a preset
 *   trampoline, so arch_ftrace_update_trampoline() creates none; the site calls the image.
 * - detach(): unregister: the sites are re-pointed (NOP when no ops is left), then the trampoline
 *   or image is freed (arch_ftrace_trampoline_free / bpf_tramp_image_put after the RCU grace
 *   periods, which the machine has no notion of).
 *
 * Every refusal (FtraceError, errors.ts) happens before anything changes: requests are checked,
 * and every site the update would touch is read and compared with what ftrace expects
 * (ftrace_verify_code) before the trampoline is allocated. Left out: the core kernel's own
 * patching in ftrace_modify_all_code() (update_ftrace_func on ftrace_call/ftrace_regs_call in
 * kernel text: two text_poke_bp() on core text, the same in every design), the ftrace_ops
 * callbacks themselves (the trampoline's call goes to ftrace_stub), tracing of init functions
 * during init, and arm64 (no per-ops trampolines in Linux): the class refuses other arches.
 */
import { assert } from '../../base/assert.js';
import type { Machine } from '../../machine/machine.js';
import type { ExecAllocator } from '../../policies/types.js';
import { parseElf, stripModuleSignature } from '../modules/elf.js';
import { toSigned } from '../modules/image.js';
import { layoutModule } from '../modules/layout.js';
import type { LoadedModule, ModuleLoader } from '../modules/loader.js';
import type { KernelSymbols } from '../modules/symbols.js';
import { FtraceError } from './errors.js';
import { readMcountSites } from './mcount.js';
import { ModuleInitAllocator, type PendingModule } from './module-init.js';
import { type PatchCounts, peek, pokeBatches, type SiteUpdate } from './patch.js';
import { addrNew, type CoreCallers, globMatcher, type OpsShape } from './records.js';
import {
  callInsn,
  FTRACE_CALLER,
  FTRACE_REGS_CALLER,
  FTRACE_STUB_FROM_FENTRY_BYTES,
  MCOUNT_INSN_BYTES,
  sameBytes,
  trampolineBytes,
  trampolineImage,
  X86_NOP5,
} from './x86.js';

/** struct dyn_ftrace: one call site. */
export interface FtraceRecord {
  readonly module: string;
  readonly fn: string | null;
  /** 48-bit address of the 5-byte site. */
  readonly va: number;
  readonly init: boolean;
  /** Ops whose filter holds this record. */
  readonly ops: FtraceOps[];
  /** Signed address the site calls now, or null for the NOP. */
  target: number | null;
}

/** struct ftrace_ops, with what was allocated for it. */
export interface FtraceOps extends OpsShape {
  readonly name: string;
  readonly records: readonly FtraceRecord[];
  /** The ftrace trampoline (kind 'trampoline') or the BPF trampoline image (kind 'direct'). */
  readonly imageVa: number;
  readonly imageBytes: number;
  live: boolean;
}

export interface AttachRequest {
  /** Loaded modules whose functions the filter covers (set_ftrace_filter ':mod:NAME'). */
  readonly modules: readonly string[];
  /** Function glob (`*`, `?`, `[...]`). */
  readonly functions: string;
  readonly name?: string;
  /** FTRACE_OPS_FL_SAVE_REGS: the trampoline copies ftrace_regs_caller instead of ftrace_caller. */
  readonly saveRegs?: boolean;
}

export interface DirectAttachRequest {
  readonly module: string;
  /** The function (its first record when a module has several static functions of that name). */
  readonly function: string;
  /** The BPF trampoline image's length (at most a page: bpf_tramp_image_alloc's PAGE_SIZE). */
  readonly imageBytes: number;
  readonly name?: string;
}

/** What one attach or detach did. */
export interface FtraceUpdate extends PatchCounts {
  readonly ops: FtraceOps;
}

export interface FtraceStats {
  readonly modules: number;
  readonly records: number;
  readonly sitesNoppedAtLoad: number;
  readonly opsLive: number;
  readonly trampolinesAllocated: number;
  readonly trampolinesFreed: number;
  readonly directImagesAllocated: number;
  readonly directImagesFreed: number;
  /** Site updates through text_poke_bp_batch, their batches, syncs and allocator writes. */
  readonly sitePatches: number;
  readonly batches: number;
  readonly syncs: number;
  readonly writes: number;
  /** Why ftrace is off (an ftrace_bug at module load), or null. */
  readonly disabled: string | null;
}

export interface FtraceOptions {
  readonly allocator: ExecAllocator;
  readonly machine: Machine;
  /** Kernel exports with the machine's KASLR offset applied (KernelSymbols.withKaslrOffset). */
  readonly kernel: KernelSymbols;
  /** The CPU the tracing code runs on; default 0. */
  readonly cpu?: number;
}

const PAGE_BYTES = 4096;
/** Stand-in ftrace_ops addresses (kzalloc'd in the direct map); only stored, never followed. */
const OPS_POINTER_BASE = 0xffff888100000000n;

export class Ftrace {
  readonly allocator: ExecAllocator;
  readonly machine: Machine;
  readonly cpu: number;
  /** The allocator to hand to the module loader (ftrace_module_init on its text writes). */
  readonly loaderAllocator: ModuleInitAllocator;
  readonly core: CoreCallers;
  private readonly fentry: number;
  private readonly returnThunk: number;
  private readonly recs: FtraceRecord[] = [];
  private readonly byModule = new Map<string, FtraceRecord[]>();
  private readonly ops = new Set<FtraceOps>();
  private nextOpsId = 1;
  private disabledWhy: string | null = null;
  private counts = {
    trampolinesAllocated: 0,
    trampolinesFreed: 0,
    directImagesAllocated: 0,
    directImagesFreed: 0,
    sitePatches: 0,
    batches: 0,
    syncs: 0,
    writes: 0,
  };

  constructor(opts: FtraceOptions) {
    if (opts.machine.arch.name !== 'x86_64')
      throw new FtraceError(
        'EINVAL',
        `ftrace trampolines are x86-64 only (arch/x86/kernel/ftrace.c), not ${opts.machine.arch.name}`,
      );
    const fentry = opts.kernel.get('__fentry__');
    const thunk = opts.kernel.get('__x86_return_thunk');
    if (!fentry || !thunk)
      throw new FtraceError('EINVAL', 'the kernel exports lack __fentry__ or __x86_return_thunk');
    this.allocator = opts.allocator;
    this.machine = opts.machine;
    this.cpu = opts.cpu ?? 0;
    this.fentry = opts.kernel.runtimeValue(fentry);
    this.returnThunk = opts.kernel.runtimeValue(thunk);
    this.core = {
      ftraceCaller: this.fentry + FTRACE_CALLER.fromFentryBytes,
      ftraceRegsCaller: this.fentry + FTRACE_REGS_CALLER.fromFentryBytes,
    };
    this.loaderAllocator = new ModuleInitAllocator(
      opts.allocator,
      this.fentry,
      () => this.disabledWhy === null,
      (module, va, found) => {
        this.disabledWhy = `ftrace_bug at module load: ${module} site 0x${va.toString(16)} holds ${hex(found)}, not call __fentry__`;
      },
    );
  }

  // ---- modules ----

  /** load_module() with ftrace_module_init(); `loader` must have been built on `loaderAllocator`. */
  loadModule(loader: ModuleLoader, fileBytes: Uint8Array, nameHint = '(unnamed)'): LoadedModule {
    const pending = this.prepareSites(fileBytes, nameHint);
    this.loaderAllocator.pending = pending;
    let mod: LoadedModule;
    try {
      mod = loader.load(fileBytes, nameHint);
    } finally {
      this.loaderAllocator.pending = null;
    }
    if (pending === null) return mod;
    assert(pending.textVa === (mod.mems.text?.va ?? null), 'text placed where the loader says');
    const recs: FtraceRecord[] = [];
    pending.sites.forEach((s, i) => {
      if (!pending.nopped[i]) return;
      const base = s.memType === 'text' ? pending.textVa : pending.initTextVa;
      assert(base !== null, 'a site in a placed memory type');
      recs.push({
        module: mod.name,
        fn: s.fn,
        va: base + s.offsetBytes,
        init: s.memType === 'init_text',
        ops: [],
        target: null,
      });
    });
    recs.sort((a, b) => a.va - b.va); // ftrace_process_locs() sorts a module's records by ip
    this.recs.push(...recs);
    this.byModule.set(mod.name, recs);
    return mod;
  }

  /** do_init_module(): the loader's init, then ftrace_free_mem() drops the init-text records. */
  initModule(loader: ModuleLoader, name: string): void {
    loader.init(name);
    const recs = this.byModule.get(name);
    if (!recs) return;
    const keep = recs.filter((r) => !r.init);
    this.byModule.set(name, keep);
    this.removeRecords((r) => r.module === name && r.init);
  }

  /** delete_module(): refused while sites are attached; then ftrace_release_mod() drops the records. */
  unloadModule(loader: ModuleLoader, name: string): void {
    const recs = this.byModule.get(name) ?? [];
    if (recs.some((r) => r.ops.length > 0))
      throw new FtraceError('EBUSY', `module ${name} has attached call sites; detach first`);
    loader.unload(name);
    this.byModule.delete(name);
    this.removeRecords((r) => r.module === name);
  }

  // ---- ops ----

  /** register_ftrace_function() for an ops filtered to `req.functions` in `req.modules`. */
  attach(req: AttachRequest): FtraceUpdate {
    this.checkEnabled();
    const saveRegs = req.saveRegs ?? false;
    if (typeof saveRegs !== 'boolean') throw new FtraceError('EINVAL', 'saveRegs must be a boolean');
    const match = globMatcher(req.functions);
    const recs = this.recordsOf(req.modules).filter((r) => !r.init && r.fn !== null && match(r.fn));
    if (recs.length === 0)
      throw new FtraceError(
        'ENOMATCH',
        `no function of ${req.modules.join(', ')} matches '${req.functions}'`,
      );
    this.verifySites(recs);
    const bytes = trampolineBytes(saveRegs);
    const id = this.nextOpsId;
    const va = this.allocImage('ftrace', bytes, undefined, (at) =>
      trampolineImage(
        saveRegs,
        toSigned(at),
        this.fentry + FTRACE_STUB_FROM_FENTRY_BYTES,
        this.returnThunk,
        OPS_POINTER_BASE + BigInt(id) * 0x200n,
      ),
    );
    this.counts.trampolinesAllocated++;
    const ops = this.newOps(id, req.name ?? `ops${id}`, 'trampoline', saveRegs, va, bytes, recs);
    return { ops, ...this.repoint(recs, (r) => r.ops.push(ops)) };
  }

  /** A BPF trampoline on one function: its image, then register_ftrace_direct_multi(). */
  attachDirect(req: DirectAttachRequest): FtraceUpdate {
    this.checkEnabled();
    if (!(Number.isInteger(req.imageBytes) && req.imageBytes > 0 && req.imageBytes <= PAGE_BYTES))
      throw new FtraceError(
        'EINVAL',
        `a BPF trampoline image is 1..${PAGE_BYTES} bytes, not ${req.imageBytes}`,
      );
    if (typeof req.function !== 'string' || req.function === '')
      throw new FtraceError('EINVAL', 'name the function to attach to');
    const rec = this.recordsOf([req.module]).find((r) => !r.init && r.fn === req.function);
    if (rec === undefined)
      throw new FtraceError('ENOMATCH', `${req.module} has no traceable function ${req.function}`);
    if (rec.ops.some((o) => o.kind === 'direct'))
      throw new FtraceError(
        'EBUSY',
        `${req.function} already has a direct call (register_ftrace_direct_multi)`,
      );
    this.verifySites([rec]);
    const id = this.nextOpsId;
    const va = this.allocImage('bpf', req.imageBytes, 'bpf_trampoline', () =>
      bpfImageStandIn(req.imageBytes),
    );
    this.counts.directImagesAllocated++;
    const ops = this.newOps(id, req.name ?? `bpf${id}`, 'direct', true, va, req.imageBytes, [rec]);
    return { ops, ...this.repoint([rec], (r) => r.ops.push(ops)) };
  }

  /** unregister: sites re-pointed (or NOPed), then the trampoline or image freed. */
  detach(ops: FtraceOps): FtraceUpdate {
    if (!this.ops.has(ops) || !ops.live) throw new FtraceError('EINVAL', `ops ${ops?.name} is not attached`);
    this.verifySites(ops.records);
    const counts = this.repoint(ops.records, (r) => r.ops.splice(r.ops.indexOf(ops), 1));
    this.allocator.free(ops.imageVa);
    if (ops.kind === 'trampoline') this.counts.trampolinesFreed++;
    else this.counts.directImagesFreed++;
    ops.live = false;
    this.ops.delete(ops);
    return { ops, ...counts };
  }

  // ---- reading ----

  records(): readonly FtraceRecord[] {
    return this.recs;
  }

  attached(): FtraceOps[] {
    return [...this.ops];
  }

  /** The 5 bytes a site holds now. */
  siteBytes(rec: FtraceRecord): Uint8Array {
    const b = peek(this.machine, rec.va, MCOUNT_INSN_BYTES);
    if (b === null) throw new FtraceError('ENOENT', `site 0x${rec.va.toString(16)} is not mapped`);
    return b;
  }

  /** What a site must hold for its current target (NOP or the call). */
  expectedBytes(rec: FtraceRecord, target: number | null = rec.target): Uint8Array {
    return target === null ? (X86_NOP5 as Uint8Array).slice() : callInsn(toSigned(rec.va), target);
  }

  stats(): FtraceStats {
    return {
      modules: this.byModule.size,
      records: this.recs.length,
      sitesNoppedAtLoad: this.loaderAllocator.noppedSites,
      opsLive: this.ops.size,
      ...this.counts,
      disabled: this.disabledWhy,
    };
  }

  // ---- internals ----

  private checkEnabled(): void {
    if (this.disabledWhy !== null) throw new FtraceError('ENODEV', `ftrace is disabled: ${this.disabledWhy}`);
  }

  /** The module's sites before it loads (null when ftrace is off or the file is not one we can read). */
  private prepareSites(fileBytes: Uint8Array, nameHint: string): PendingModule | null {
    if (this.disabledWhy !== null) return null; // ftrace_module_init(): if (ftrace_disabled) return
    let sites: PendingModule['sites'];
    try {
      const elf = parseElf(stripModuleSignature(fileBytes).bytes);
      sites = readMcountSites(elf, layoutModule(elf, nameHint));
    } catch (e) {
      if (e instanceof FtraceError) throw e;
      return null; // the loader refuses the file itself, with its own typed error
    }
    return { name: nameHint, sites, textVa: null, initTextVa: null, nopped: sites.map(() => false) };
  }

  private recordsOf(modules: readonly string[]): FtraceRecord[] {
    if (!Array.isArray(modules) || modules.length === 0)
      throw new FtraceError('EINVAL', 'name at least one module');
    const want = new Set<string>();
    for (const m of modules) {
      if (typeof m !== 'string' || m === '')
        throw new FtraceError('EINVAL', 'module names must be non-empty strings');
      const name = m.replaceAll('-', '_');
      if (!this.byModule.has(name)) throw new FtraceError('ENOENT', `module ${m} is not loaded`);
      want.add(name);
    }
    return this.recs.filter((r) => want.has(r.module));
  }

  /** ftrace_verify_code() on every site an update will touch: all must hold what ftrace wrote. */
  private verifySites(recs: readonly FtraceRecord[]): void {
    for (const r of recs) {
      const now = this.siteBytes(r);
      const want = this.expectedBytes(r);
      if (!sameBytes(now, want))
        throw new FtraceError(
          'EBADSITE',
          `${r.module}:${r.fn ?? '?'} at 0x${r.va.toString(16)} holds ${hex(now)}, expected ${hex(want)}`,
        );
    }
  }

  /** Allocate, write and finalize an image; all or nothing. */
  private allocImage(
    type: 'ftrace' | 'bpf',
    bytes: number,
    caller: 'bpf_trampoline' | undefined,
    image: (va: number) => Uint8Array,
  ): number {
    const va = this.allocator.alloc(type, bytes, undefined, caller ? { caller } : undefined);
    try {
      this.allocator.write(va, image(va));
      this.allocator.finalize(va);
    } catch (e) {
      this.allocator.free(va);
      throw e;
    }
    return va;
  }

  private newOps(
    id: number,
    name: string,
    kind: FtraceOps['kind'],
    saveRegs: boolean,
    va: number,
    bytes: number,
    recs: FtraceRecord[],
  ): FtraceOps {
    this.nextOpsId++;
    const ops: FtraceOps = {
      id,
      name,
      kind,
      saveRegs,
      targetSigned: toSigned(va),
      imageVa: va,
      imageBytes: bytes,
      records: recs,
      live: true,
    };
    this.ops.add(ops);
    return ops;
  }

  /**
   * Change the ops lists of `recs` with `edit`, then ftrace_replace_code(): every record whose
   * ftrace_get_addr_new() changed is patched, in record order. A failure while patching (the
   * machine refusing a poke) is an ftrace_bug(): ftrace is turned off and the error rethrown.
   */
  private repoint(recs: readonly FtraceRecord[], edit: (r: FtraceRecord) => void): PatchCounts {
    for (const r of recs) edit(r);
    const order = new Set(recs);
    const updates: SiteUpdate[] = [];
    const changed: [FtraceRecord, number | null][] = [];
    for (const r of this.recs) {
      if (!order.has(r)) continue;
      const next = addrNew(r.ops, this.core);
      if (next === r.target) continue;
      updates.push({ va: r.va, bytes: this.expectedBytes(r, next) });
      changed.push([r, next]);
    }
    let counts: PatchCounts;
    try {
      counts = pokeBatches(this.allocator, this.machine, this.cpu, updates);
    } catch (e) {
      this.disabledWhy = `ftrace_bug while patching: ${(e as Error).message}`;
      throw e;
    }
    for (const [r, next] of changed) r.target = next;
    this.counts.sitePatches += counts.sites;
    this.counts.batches += counts.batches;
    this.counts.syncs += counts.syncs;
    this.counts.writes += counts.writes;
    return counts;
  }

  private removeRecords(drop: (r: FtraceRecord) => boolean): void {
    let w = 0;
    for (const r of this.recs) if (!drop(r)) this.recs[w++] = r;
    this.recs.length = w;
  }
}

/** A BPF trampoline image stand-in (arch_prepare_bpf_trampoline is not re-implemented): NOPs, RET. */
function bpfImageStandIn(bytes: number): Uint8Array {
  const img = new Uint8Array(bytes).fill(0x90);
  img[bytes - 1] = 0xc3;
  return img;
}

function hex(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(' ');
}
