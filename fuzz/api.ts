/**
 * Fuzz target `api`: random execmem API sequences with hostile arguments (issue 16: "API
 * sequences with hostile argument objects (getters, subclasses, proxies, detached buffers) on
 * every backend").
 *
 * Each case is one fresh world, the fake test backend or the simulated machine (x86_64, arm64 or
 * generic), and a short random sequence of calls on every public method with arguments drawn
 * from valid ones and hostile ones: numbers that are NaN, negative, fractional, huge, bigints,
 * strings, objects whose valueOf/toString throw, Proxies whose traps throw, Uint8Array
 * subclasses and lying lengths, other typed arrays, detached buffers, getters that call back into
 * the allocator, batch callbacks that throw, and a physical-memory (sim) or backend (fake) fault
 * armed before a call. The oracle, per call:
 * - it succeeds, or throws an ExecmemError with a known code (any other exception is a finding;
 *   a batch callback's own exception must come back unchanged);
 * - a hostile argument gets EINVAL and a callback into the allocator EBUSY; a double free gets
 *   EFREE, an update past the requested size ERANGE; a success the model says is impossible
 *   (freeing a non-start, writing past the end, sealing twice) is a finding;
 * - a failed call leaves the state the contract covers unchanged (stats without the cost
 *   counters for a growth that failed after mapping, everything else with them; the backend's
 *   blocks, protections, contents, frames);
 * - after every call the cheap invariants hold (heap audit, W^X, frame accounting, every live
 *   object's size, type and seal), and at the end of a case all of DESIGN.md section 5 (contents,
 *   trap-filled free space, accounting, and no leak after freeing everything and shrinking).
 * The worlds are in api-worlds.ts (fake, sim and host backends),
 * the hostile arguments in api-args.ts.
 */
import { archToVa, EXECMEM_TYPES, type ExecmemType } from '../src/arch/index.js';
import { realBytes } from '../src/base/bytes.js';
import { Rng } from '../src/base/rng.js';
import { EXECMEM_ERROR_CODES, ExecmemError } from '../src/execmem/errors.js';
import type { Execmem } from '../src/execmem/execmem.js';
import type { LiveObject } from '../test/helpers/execmem-model.js';
import { type Arg, hostile, reentrant } from './api-args.js';
import { fakeWorld, hostWorld, simWorld, type World } from './api-worlds.js';
import type { FuzzFinding, FuzzTarget } from './target.js';

const OPS_PER_CASE = 14;
const KNOWN_CODES: ReadonlySet<string> = new Set(EXECMEM_ERROR_CODES);
const TYPES: readonly ExecmemType[] = EXECMEM_TYPES;

/** The fixed content a live object holds after allocation (traps for text, else zeros). */
function initialContent(em: Execmem, type: ExecmemType, sizeBytes: number): Uint8Array {
  const out = new Uint8Array(sizeBytes);
  if (em.ranges[type].cls === 'text') {
    const trap = em.backend.arch.trapPattern;
    out.set(trap.subarray(0, Math.min(trap.length, sizeBytes)));
    for (let n = trap.length; n < sizeBytes; n *= 2) out.copyWithin(n, 0, Math.min(n, sizeBytes - n));
  }
  return out;
}

/** One call: what it does, what it may end in, and what the model learns if it succeeds. */
interface Call {
  readonly label: string;
  readonly run: () => unknown;
  /** Codes it must fail with (null: any known code, or success). */
  readonly expect: ReadonlySet<string> | null;
  /** May it map a block (its failure is then judged without the cost counters)? */
  readonly grows: boolean;
  /** Judge a success and update the model; throws a finding. */
  readonly ok?: (result: unknown) => void;
}

const EINVAL = new Set(['EINVAL']);
const EBUSY = new Set(['EBUSY']);

class Case {
  readonly log: string[] = [];
  private readonly freed: number[] = [];
  private readonly types: ExecmemType[];

  constructor(
    readonly w: World,
    readonly rng: Rng,
  ) {
    // A few types per case keep the worlds small (the end-of-case check reads every block).
    this.types = [rng.pick(TYPES), rng.pick(TYPES), rng.pick(['bpf', 'module_ro_after_init'] as const)];
  }

  step(depth: number): void {
    const call = this.nextCall(depth);
    const armed = depth === 0 && this.rng.next() < 0.15 ? this.w.arm(this.rng) : '';
    this.log.push(`${call.label}${armed ? ` [${armed}]` : ''}`);
    if (this.log.length > 12) this.log.shift();
    const before = this.w.snapshot(true);
    const beforeState = call.grows ? this.w.snapshot(false) : before;
    let result: unknown;
    let error: unknown;
    let failed = false;
    try {
      result = call.run();
    } catch (e) {
      failed = true;
      error = e;
    } finally {
      if (armed) this.w.disarm();
    }
    if (!failed) {
      if (call.expect !== null)
        throw new Finding(`${call.label}: succeeded, expected ${[...call.expect].join('/')}`);
      call.ok?.(result);
      return;
    }
    if (error instanceof Finding) throw error;
    if (!(error instanceof ExecmemError)) throw new Finding(`${call.label}: threw ${String(error)}`);
    if (!KNOWN_CODES.has(error.code)) throw new Finding(`${call.label}: unknown code ${error.code}`);
    if (call.expect !== null && !call.expect.has(error.code))
      throw new Finding(
        `${call.label}: ${error.code}, expected ${[...call.expect].join('/')}: ${error.message}`,
      );
    const growthFailed = call.grows && (error.code === 'ENOMEM' || error.code === 'ENOSPC');
    const after = this.w.snapshot(!growthFailed);
    if (after !== (growthFailed ? beforeState : before))
      throw new Finding(`${call.label}: failed (${error.code}) and changed state`);
  }

  /** Cheap invariants after every call. */
  quickCheck(): void {
    const { em, model } = this.w;
    em.audit();
    model.probe.check();
    let live = 0;
    for (const t of Object.values(em.stats().types)) live += t.liveObjects;
    if (live !== model.live.size) throw new Finding(`${live} live objects, the model has ${model.live.size}`);
    for (const [va, o] of model.live) {
      if (em.sizeOfVa(va) !== o.sizeBytes || em.typeOfVa(va) !== o.type || em.isSealedVa(va) !== o.sealed)
        throw new Finding(`live object at 0x${va.toString(16)} changed size, type or seal`);
    }
  }

  // ---------------------------------------------------------------- call generation

  private nextCall(depth: number): Call {
    const r = this.rng.next();
    if (r < 0.25) return this.allocCall();
    if (r < 0.45) return this.updateCall();
    if (r < 0.62) return this.freeCall();
    if (r < 0.7) return this.sealCall();
    if (r < 0.8) return this.queryCall();
    if (r < 0.87) return this.shrinkCall(depth);
    if (r < 0.93 && depth < 2) return this.batchCall(depth);
    return this.reentrantCall();
  }

  private liveVa(): number | undefined {
    const vas = [...this.w.model.live.keys()];
    return vas.length === 0 ? undefined : this.rng.pick(vas);
  }

  /** A well-typed address: live start, interior, end, freed, never mapped. */
  private address(): { va: number; label: string } {
    const va = this.liveVa();
    const r = this.rng.next();
    if (va !== undefined && r < 0.5) return { va, label: 'live' };
    if (va !== undefined && r < 0.7) {
      const size = this.w.model.live.get(va)!.sizeBytes;
      const off = this.rng.pick([1, 63, 64, size - 1, size, size + 1]);
      return { va: va + off, label: `live+${off}` };
    }
    if (this.freed.length > 0 && r < 0.85) return { va: this.rng.pick(this.freed), label: 'freed' };
    return { va: this.rng.pick([0, 0x1000, 2 ** 47 - 4096]), label: 'never mapped' };
  }

  private bigOf(va: number): bigint {
    return this.w.em.backend.kind === 'host' ? BigInt(va) : this.w.em.toBig(va);
  }

  private allocCall(): Call {
    const em = this.w.em;
    const big = this.rng.next() < 0.3;
    if (this.rng.next() < 0.25) {
      const t = this.rng.pick(this.types);
      const [label, arg, args] = this.rng.pick([
        ['type', hostile.type(this.rng), (v: unknown) => [v, 64, undefined]],
        ['size', hostile.size(this.rng), (v: unknown) => [t, v, undefined]],
        ['ctx', hostile.ctx(this.rng), (v: unknown) => [t, 64, v]],
      ] as const);
      const [type, size, ctx] = args(arg.value) as [ExecmemType, number, undefined];
      return {
        label: `alloc(hostile ${label}: ${arg.label})${big ? ' bigint' : ''}`,
        run: () => (big ? em.alloc(type, size, ctx) : em.allocVa(type, size, ctx)),
        expect: EINVAL,
        grows: false,
      };
    }
    const type = this.rng.pick(this.types);
    const sizeBytes = this.rng.pick([
      this.rng.int(1, 600),
      this.rng.int(600, 9000),
      this.rng.int(1, 300_000),
      this.rng.int(2 * 2 ** 20 - 64, 3 * 2 ** 20),
    ]);
    const alignBytes = this.rng.pick([undefined, 1, 64, 4096]);
    const atomic = this.rng.next() < 0.15;
    const ctx = alignBytes === undefined && !atomic ? undefined : { atomic, alignBytes };
    return {
      label: `alloc(${type}, ${sizeBytes}${ctx ? `, ${JSON.stringify(ctx)}` : ''})${big ? ' bigint' : ''}`,
      run: () => (big ? em.alloc(type, sizeBytes, ctx) : em.allocVa(type, sizeBytes, ctx)),
      expect: null,
      grows: true,
      ok: (result) => {
        const va = typeof result === 'bigint' ? this.toVa(result) : (result as number);
        if (this.w.model.live.has(va))
          throw new Finding(`alloc returned the live address 0x${va.toString(16)}`);
        this.w.model.live.set(va, {
          type,
          sizeBytes,
          alignBytes: alignBytes ?? 1,
          content: initialContent(em, type, sizeBytes),
          sealed: false,
        });
        const i = this.freed.indexOf(va);
        if (i >= 0) this.freed.splice(i, 1);
      },
    };
  }

  private updateCall(): Call {
    const em = this.w.em;
    const target = this.address();
    const r = this.rng.next();
    if (r < 0.3) {
      const bytes = hostile.bytes(this.rng);
      return {
        label: `update(${target.label}, ${bytes.label})`,
        run: () => em.updateVa(target.va, bytes.value as Uint8Array),
        expect: EINVAL,
        grows: false,
      };
    }
    if (r < 0.4) {
      const { label, value } = hostile.address(this.rng);
      return {
        label: `update(${label})`,
        run: () => em.updateVa(value as number, Uint8Array.of(1)),
        expect: EINVAL,
        grows: false,
      };
    }
    const n = this.rng.pick([1, 4, 64, 300, this.rng.int(1, 5000)]);
    const bytes = realBytes(this.plainBytes(n))!;
    const fill = this.rng.int(0, 255);
    bytes.fill(fill);
    const owner = this.ownerOf(target.va);
    const past = owner !== undefined && target.va + n > owner.start + owner.o.sizeBytes;
    return {
      label: `update(${target.label}, ${n} bytes)`,
      run: () =>
        this.rng.next() < 0.3 ? em.update(this.bigOf(target.va), bytes) : em.updateVa(target.va, bytes),
      expect: past ? new Set(['ERANGE']) : null,
      grows: false,
      ok: () => {
        if (owner === undefined || past || (owner.o.sealed && owner.o.type === 'module_ro_after_init'))
          throw new Finding(`update at ${target.label} of ${n} bytes succeeded`);
        owner.o.content.set(bytes, target.va - owner.start);
      },
    };
  }

  /** A Uint8Array of n bytes, in one of the shapes a caller may legitimately pass. */
  private plainBytes(n: number): Uint8Array {
    switch (this.rng.int(0, 3)) {
      case 0:
        return Buffer.alloc(n);
      case 1:
        return new Uint8Array(n + 8).subarray(4, 4 + n);
      case 2:
        return new Uint8Array(new SharedArrayBuffer(n));
      default:
        return new Uint8Array(n);
    }
  }

  private ownerOf(va: number): { start: number; o: LiveObject } | undefined {
    for (const [start, o] of this.w.model.live) {
      if (va >= start && va < start + o.sizeBytes) return { start, o };
    }
    return undefined;
  }

  private freeCall(): Call {
    const em = this.w.em;
    if (this.rng.next() < 0.15) {
      const big = this.rng.next() < 0.5;
      const { label, value } = big ? hostile.bigAddress(this.rng) : hostile.address(this.rng);
      return {
        label: `free(${label})`,
        run: () => (big ? em.free(value as bigint) : em.freeVa(value as number)),
        expect: EINVAL,
        grows: false,
      };
    }
    const target = this.address();
    const live = this.w.model.live.has(target.va);
    const doubleFree = target.label === 'freed' && this.ownerOf(target.va) === undefined;
    return {
      label: `free(${target.label})`,
      run: () => (this.rng.next() < 0.3 ? em.free(this.bigOf(target.va)) : em.freeVa(target.va)),
      expect: doubleFree ? new Set(['EFREE']) : null,
      grows: false,
      ok: () => {
        if (!live) throw new Finding(`free of ${target.label} succeeded`);
        this.w.model.live.delete(target.va);
        this.freed.push(target.va);
      },
    };
  }

  private sealCall(): Call {
    const em = this.w.em;
    const target = this.address();
    const o = this.w.model.live.get(target.va);
    return {
      label: `seal(${target.label})`,
      run: () => em.sealVa(target.va),
      expect: o !== undefined && (o.type !== 'module_ro_after_init' || o.sealed) ? new Set(['EPERM']) : null,
      grows: false,
      ok: () => {
        if (o === undefined || o.type !== 'module_ro_after_init' || o.sealed)
          throw new Finding(`seal of ${target.label} succeeded`);
        o.sealed = true;
      },
    };
  }

  private queryCall(): Call {
    const em = this.w.em;
    const hostileArg = this.rng.next() < 0.4;
    const { label, value } = hostileArg
      ? hostile.address(this.rng)
      : (() => {
          const a = this.address();
          return { label: a.label, value: a.va as unknown };
        })();
    const [name, run] = this.rng.pick([
      ['sizeOf', () => em.sizeOfVa(value as number)],
      ['typeOf', () => em.typeOfVa(value as number)],
      ['isSealed', () => em.isSealedVa(value as number)],
      ['readVa', () => em.readVa(value as number, this.rng.pick([1, 64, 5000]))],
      ['toBig', () => em.toBig(value as number)],
      ['stats', () => em.stats()],
    ] as const);
    return {
      label: `${name}(${label})`,
      run,
      expect: hostileArg && name !== 'stats' ? EINVAL : null,
      grows: false,
    };
  }

  private shrinkCall(depth: number): Call {
    const em = this.w.em;
    const hostileArg = this.rng.next() < 0.3;
    const options = hostileArg
      ? hostile.options(this.rng)
      : { label: '', value: { keepSpare: this.rng.next() < 0.5 } };
    return {
      label: `shrink(${options.label})`,
      run: () => em.shrink(options.value as { keepSpare: boolean }),
      expect: hostileArg ? EINVAL : depth > 0 ? EBUSY : null,
      grows: false,
    };
  }

  private batchCall(depth: number): Call {
    const em = this.w.em;
    if (this.rng.next() < 0.15) {
      return {
        label: 'batch(not a function)',
        run: () => em.batch(42 as never),
        expect: EINVAL,
        grows: false,
      };
    }
    const inner = this.rng.int(1, 3);
    const throws = this.rng.next() < 0.3;
    const marker = new UserError('the batch callback threw');
    return {
      label: `batch(${inner} calls${throws ? ', then throws' : ''})`,
      run: () => {
        try {
          em.batch(() => {
            for (let i = 0; i < inner; i++) {
              this.step(depth + 1);
              this.quickCheck();
            }
            if (throws) throw marker;
          });
        } catch (e) {
          if (e !== marker) throw e;
        }
      },
      expect: null,
      grows: false,
    };
  }

  /** An argument whose getter calls back into the allocator: EBUSY, nothing changes. */
  private reentrantCall(): Call {
    const em = this.w.em;
    const va = this.liveVa() ?? 0x1000;
    if (this.rng.next() < 0.4) {
      const bytes: Arg = reentrant(this.rng, em, va, 'bytes');
      return {
        label: `update(${bytes.label})`,
        run: () => em.updateVa(va, bytes.value as Uint8Array),
        expect: EBUSY,
        grows: false,
      };
    }
    const arg: Arg = reentrant(this.rng, em, va, 'options');
    const [name, run] = this.rng.pick([
      ['alloc', () => em.allocVa('bpf', 64, arg.value as never)],
      ['shrink', () => em.shrink(arg.value as never)],
    ] as const);
    return { label: `${name}(${arg.label})`, run, expect: EBUSY, grows: false };
  }

  private toVa(big: bigint): number {
    return this.w.em.backend.kind === 'host' ? Number(big) : archToVa(this.w.em.backend.arch, big);
  }
}

/** A check that failed: becomes a FuzzFinding. */
class Finding extends Error {}
/** A batch callback's own, deliberate exception. */
class UserError extends Error {}

function runCase(seed: number, index: number): void {
  const rng = new Rng((seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0);
  // Most cases on the fake backend (cheap), a third on the machine (every arch), one in ten on
  // real memory of this process (the host backend).
  const u = rng.next();
  const world = u < 0.6 ? fakeWorld(rng) : u < 0.9 ? simWorld(rng) : hostWorld(rng);
  const c = new Case(world, rng);
  try {
    for (let i = 0; i < OPS_PER_CASE; i++) {
      c.step(0);
      c.quickCheck();
    }
    world.disarm();
    world.model.check();
    world.model.drain();
    world.deepCheck();
  } catch (e) {
    const what =
      e instanceof Finding ? e.message : `${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`;
    throw new Finding(`${world.name}: ${what}\n    calls: ${c.log.join('; ')}`);
  } finally {
    world.close();
  }
}

export const apiTarget: FuzzTarget = {
  name: 'api',
  describe:
    'random execmem API sequences with hostile arguments on the fake, sim and host backends: typed errors, ' +
    'failed calls change nothing, the DESIGN.md section 5 invariants after every call',
  run(seed, iterations) {
    const findings: FuzzFinding[] = [];
    for (let i = 0; i < iterations; i++) {
      try {
        runCase(seed, i);
      } catch (e) {
        findings.push({ caseIndex: i, message: e instanceof Error ? e.message : String(e) });
      }
    }
    return { target: 'api', seed, cases: iterations, findings };
  },
};
