/**
 * ftrace's bookkeeping as data: one record per call site (struct dyn_ftrace), the ops attached to
 * it (struct ftrace_ops), where a site must call given its ops, the text_poke_bp batches a set of
 * site updates makes, and the filter glob.
 *
 * Why pure functions apart from the machine: the library (ftrace.ts) and the ftrace-real workload
 * (src/workloads/ftrace-real.ts) must make the same decisions: which sites change when an ops
 * comes or goes, and how the updates are cut into batches, each batch costing three
 * text_poke_sync()s. Keeping the rules here, with no memory access, lets both use one copy.
 * Linux functions (kernel/trace/ftrace.c, arch/x86/kernel/alternative.c, Linux 6.1) are named
 * where each rule is.
 */
import { FtraceError } from './errors.js';
import { TP_VEC_MAX } from './x86.js';

/** struct ftrace_ops as far as call sites care. */
export interface OpsShape {
  readonly id: number;
  /** 'trampoline': create_trampoline() made one for it; 'direct': a direct call (BPF trampoline). */
  readonly kind: 'trampoline' | 'direct';
  /** FTRACE_OPS_FL_SAVE_REGS (direct ops always: register_ftrace_direct_multi's MULTI_FLAGS). */
  readonly saveRegs: boolean;
  /** Signed address of its trampoline, or of the direct-call target. */
  readonly targetSigned: number;
}

/** Where the core kernel's shared callers are (FTRACE_ADDR, FTRACE_REGS_ADDR), signed. */
export interface CoreCallers {
  readonly ftraceCaller: number;
  readonly ftraceRegsCaller: number;
}

/**
 * ftrace_get_addr_new(rec): what a site must call, or null for the NOP. One ops: its direct
 * target (FTRACE_FL_DIRECT with ftrace_rec_count == 1) or its trampoline ("Trampolines take
 * precedence over regs", FTRACE_FL_TRAMP is set only when one ops with a trampoline traces the
 * record). Several: the core ftrace_regs_caller when any of them wants regs (FTRACE_FL_REGS),
 * else ftrace_caller; their list function then calls every ops.
 */
export function addrNew(ops: readonly OpsShape[], core: CoreCallers): number | null {
  if (ops.length === 0) return null;
  if (ops.length === 1) return ops[0].targetSigned;
  return ops.some((o) => o.saveRegs) ? core.ftraceRegsCaller : core.ftraceCaller;
}

/**
 * text_poke_queue() / text_poke_flush() (alternative.c): sites are queued in ftrace record order
 * and the vector is flushed as one text_poke_bp_batch() when it holds TP_VEC_MAX entries or when
 * the next address is below the last one queued (tp_order_fail: the int3 handler bsearches the
 * batch). Returns the batches as index lists into `addrs`.
 */
export function splitBatches(addrs: readonly number[], maxPerBatch = TP_VEC_MAX): number[][] {
  const out: number[][] = [];
  let cur: number[] = [];
  for (let i = 0; i < addrs.length; i++) {
    const last = cur.length > 0 ? addrs[cur[cur.length - 1]] : null;
    if (cur.length === maxPerBatch || (last !== null && last > addrs[i])) {
      out.push(cur);
      cur = [];
    }
    cur.push(i);
  }
  if (cur.length > 0) out.push(cur);
  return out;
}

/**
 * The three passes of text_poke_bp_batch() over one batch of 5-byte site updates: an int3 on
 * every site, text_poke_sync(); the 4 tail bytes of every site (written because a 5-byte CALL
 * or NOP5, emulated as JMP32, has len - INT3_INSN_SIZE > 0), text_poke_sync(); the first byte
 * of every site (never INT3 here: e8 or 0f), text_poke_sync(). Three pokes per site, three syncs
 * per batch.
 */
export type PokeStep =
  | { readonly kind: 'int3' | 'tail' | 'first'; readonly site: number }
  | { readonly kind: 'sync' };

export function batchSteps(batch: readonly number[]): PokeStep[] {
  const steps: PokeStep[] = [];
  for (const kind of ['int3', 'tail', 'first'] as const) {
    for (const site of batch) steps.push({ kind, site });
    steps.push({ kind: 'sync' });
  }
  return steps;
}

/** Syncs text_poke_bp_batch() issues per batch of 5-byte updates. */
export const SYNCS_PER_BATCH = 3;
/** text_poke() calls per 5-byte site update (int3, tail, first byte). */
export const POKES_PER_SITE = 3;

/**
 * The filter glob of set_ftrace_filter (kernel/trace/ftrace.c filter_parse_regex / glob_match):
 * `*` any run, `?` one character, `[...]` a class; everything else literal. Returns a matcher.
 */
export function globMatcher(glob: string): (name: string) => boolean {
  if (typeof glob !== 'string' || glob.length === 0 || glob.length > 512)
    throw new FtraceError('EINVAL', `a function glob must be a string of 1..512 characters`);
  let re = '^';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 2);
      if (end < 0) throw new FtraceError('EINVAL', `unterminated [ in glob '${glob}'`);
      const body = glob.slice(i + 1, end).replace(/\\/g, '\\\\');
      re += `[${body.startsWith('!') ? `^${body.slice(1)}` : body}]`;
      i = end;
    } else re += c.replace(/[.+^${}()|\\/]/g, '\\$&');
  }
  const rx = new RegExp(`${re}$`);
  return (name) => rx.test(name);
}
