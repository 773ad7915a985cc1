/**
 * SimBackend: the execmem Backend on the simulated kernel machine (src/machine).
 *
 * Why each call maps where it does (so every cost the allocator causes is a consequence of a
 * page-table operation the machine performs, never a number this file makes up):
 * - mapBlock -> machine.vmalloc in the type's range (then its fallback, as execmem_vmalloc()
 *   retries once in [fallback_start, fallback_end]), prot RW, VM_ALLOW_HUGE_VMAP with 2 MiB
 *   alignment, exactly like the ROX cache's populate step (mm/execmem.c). The machine falls back
 *   to 4 KiB leaves itself when no 2 MiB frame can be had; we report that as largePages=false.
 *   Blocks whose protections will change (everything but module_data) get VM_FLUSH_RESET_PERMS
 *   so vfree restores the direct-map alias, as set_vm_flush_reset_perms() does in the cache.
 *   No guard page: blocks are 2 MiB aligned, and a trailing guard page would push the next block
 *   a whole 2 MiB further, halving what fits in the 1 GiB x86 module area.
 * - write / fill -> CPU stores through the primary mapping (faults if it is not writable).
 * - protect -> machine.setMemory (set_memory_*: splits, alias changes, shootdowns as the machine
 *   models them); for a whole block on 2 MiB leaves, machine.setMemoryFolded (ours, not Linux: on
 *   arm64 the linear alias of its contiguous frames changes per run and the call's 514 broadcast
 *   TLBIs, one per alias page plus the range's, become one flush_tlb_all; machine/cpa-arm64.ts).
 * - poke / pokeSet -> the machine's write session (machine/write-session.ts; Linux does not do
 *   this: its rows patch with text_poke / fixmap, machine/patch.ts): every page of the
 *   destination mapped at once in a private mm (x86's poking mm; on arm64 a TTBR0 mm with its own
 *   ASID), written, verified, and the alias torn down with ONE local flush (arm64: a local TLBI,
 *   plus one I-cache clean/invalidate per write, broadcast by hardware, no TLB broadcast).
 *   Outside a session each poke/pokeSet is one session; between beginWriteSession() and
 *   endWriteSession() (execmem's batch()) every poke/pokeSet shares one, so a module load's
 *   writes, or an unload's trap fills, cost one flush. The bytes are written and verified before
 *   each call returns; only the alias teardown waits for the session's end. The window's page
 *   tables are allocated when this backend is made (machine.prepareWriteSessions(), as
 *   poking_init does for text_poke), so no write can fail for memory. `generic` has no alias,
 *   so hasAliasWrite is false there and execmem flips instead.
 * - unmapBlock of a block with pages in the open session's window first ends the session's
 *   chunk (unmap + one local flush), so no alias outlives the frames it maps (the machine refuses
 *   such a vfree). If the vfree then fails (ENOMEM), the block, its protections and contents are
 *   unchanged; the early teardown is work done, like a cost counter, and the session goes on.
 * - modulesStart -> the machine's module start, randomised once at boot; execmem builds its
 *   range table from it rather than drawing a second offset of its own.
 * - read -> CPU loads. counters -> the machine's counters (the machine is shared with nothing
 *   else in tests and benchmarks; elsewhere the figures include other users of the machine).
 * Machine errors become BackendErrors (ENOMEM, ENOSPC) so the allocator can report them typed,
 * on every call that can fail for lack of memory: mapBlock (vmalloc), protect (set_memory_*)
 * and unmapBlock (vfree, atomic since issue 16: a reset-perms vfree whose direct-map split gets
 * no page-table frame throws ENOMEM with the area still live).
 * Bytes are taken by their real length (base/bytes.ts), never by an overridable `length`.
 */
import type { ArchSpec, Prot } from '../arch/types.js';
import { SZ_2M, SZ_4K } from '../base/addr.js';
import { assert } from '../base/assert.js';
import { realBytes } from '../base/bytes.js';
import { MachineError } from '../machine/errors.js';
import type { Machine } from '../machine/machine.js';
import type { VmArea } from '../machine/types.js';
import type { WriteSession } from '../machine/write-session.js';
import {
  type Backend,
  type BackendBlock,
  type BackendCounters,
  BackendError,
  type MapBlockRequest,
} from './backend.js';
import { classOfType } from './ranges.js';

interface SimBlock extends BackendBlock {
  readonly area: VmArea;
}

export interface SimBackendOptions {
  /** The CPU that performs the allocator's stores, loads and pokes (default 0). */
  cpu?: number;
}

/** Fill buffers are cached per pattern so block preparation does not allocate 2 MiB each time. */
const FILL_CHUNK_BYTES = SZ_2M;

export class SimBackend implements Backend {
  readonly kind = 'sim' as const;
  readonly arch: ArchSpec;
  readonly pageBytes = SZ_4K;
  readonly largePageBytes = SZ_2M;
  readonly hasAliasWrite: boolean;
  /** The machine's own KASLR-randomised module start (chosen at boot), so execmem agrees with it. */
  readonly modulesStart: number;
  readonly cpu: number;
  private permissionFlips = 0;
  private blocksMapped = 0;
  private blocksUnmapped = 0;
  private hugeFallbacks = 0;
  private readonly fillBuffers = new Map<string, Uint8Array>();
  /** The session beginWriteSession() opened, or null. */
  private session: WriteSession | null = null;

  constructor(
    readonly machine: Machine,
    options: SimBackendOptions = {},
  ) {
    const cpu = options.cpu ?? 0;
    if (!Number.isInteger(cpu) || cpu < 0 || cpu >= machine.cpuCount) {
      throw new RangeError(`SimBackend: cpu ${cpu} not in 0..${machine.cpuCount - 1}`);
    }
    this.cpu = cpu;
    this.arch = machine.arch;
    this.hasAliasWrite = machine.arch.patch !== 'none';
    this.modulesStart = machine.modulesStart;
    if (this.hasAliasWrite) {
      try {
        machine.prepareWriteSessions();
      } catch (e) {
        throw translate(e);
      }
    }
  }

  mapBlock(req: MapBlockRequest): BackendBlock {
    const flushResetPerms = classOfType(req.type) !== 'data';
    let area: VmArea;
    try {
      area = this.vmallocIn(req, req.range, flushResetPerms);
    } catch (e) {
      if (!(e instanceof MachineError && e.code === 'ENOSPC' && req.fallback !== null)) throw translate(e);
      try {
        area = this.vmallocIn(req, req.fallback, flushResetPerms);
      } catch (e2) {
        throw translate(e2);
      }
    }
    const largePages = area.leafBytes === SZ_2M;
    if (req.huge && !largePages) this.hugeFallbacks++;
    this.blocksMapped++;
    const block: SimBlock = { va: area.va, sizeBytes: area.sizeBytes, largePages, area };
    return block;
  }

  unmapBlock(block: BackendBlock): void {
    // The teardown the session would do at its end, done now: the frames are about to go.
    if (this.session?.holds(block.va, block.sizeBytes)) this.session.flush();
    try {
      this.machine.vfree(block.va);
    } catch (e) {
      throw translate(e);
    }
    this.blocksUnmapped++;
  }

  write(va: number, bytes: Uint8Array): void {
    this.machine.store(this.cpu, va, plain(bytes, 'write'));
  }

  fill(va: number, sizeBytes: number, pattern: Uint8Array): void {
    const buf = this.fillBuffer(plain(pattern, 'fill'));
    for (let done = 0; done < sizeBytes; done += FILL_CHUNK_BYTES) {
      const n = Math.min(FILL_CHUNK_BYTES, sizeBytes - done);
      this.machine.store(this.cpu, va + done, buf.subarray(0, n));
    }
  }

  protect(block: BackendBlock, va: number, sizeBytes: number, prot: Prot): void {
    if (va < block.va || va + sizeBytes > block.va + block.sizeBytes || sizeBytes % SZ_4K !== 0) {
      throw new RangeError(`SimBackend.protect: range outside block or not page sized`);
    }
    try {
      // A whole block on 2 MiB leaves has contiguous frames: its flushes fold into one
      // (machine.setMemoryFolded; a change on arm64 only, x86 already flushes once).
      if (block.largePages && sizeBytes >= SZ_2M) this.machine.setMemoryFolded(va, sizeBytes / SZ_4K, prot);
      else this.machine.setMemory(va, sizeBytes / SZ_4K, prot);
    } catch (e) {
      throw translate(e);
    }
    this.permissionFlips++;
  }

  poke(va: number, bytes: Uint8Array): void {
    if (!this.hasAliasWrite) throw new BackendError('ENOTSUP', `${this.arch.name} has no alias write`);
    const data = plain(bytes, 'poke');
    this.inSession((s) => s.write(va, data));
  }

  pokeSet(va: number, sizeBytes: number, pattern: Uint8Array): void {
    if (!this.hasAliasWrite) throw new BackendError('ENOTSUP', `${this.arch.name} has no alias write`);
    const pat = plain(pattern, 'pokeSet');
    this.inSession((s) => s.fill(va, sizeBytes, pat));
  }

  beginWriteSession(): void {
    if (!this.hasAliasWrite) throw new BackendError('ENOTSUP', `${this.arch.name} has no alias write`);
    assert(this.session === null, 'SimBackend: a write session is already open');
    this.session = this.machine.openWriteSession(this.cpu);
  }

  endWriteSession(): void {
    const s = this.session;
    assert(s !== null, 'SimBackend: no write session open');
    this.session = null;
    s.close();
  }

  read(va: number, sizeBytes: number): Uint8Array {
    return this.machine.load(this.cpu, va, sizeBytes);
  }

  counters(): BackendCounters {
    const m = this.machine.counters;
    return {
      permissionFlips: this.permissionFlips,
      pokes: m.pokes,
      pokeBytes: m.pokeBytes,
      shootdowns: m.shootdowns,
      ipis: m.ipis,
      localFlushes: m.localFlushes,
      directMapSplits: m.splitsDirectMap2M + m.splitsDirectMap1G,
      blocksMapped: this.blocksMapped,
      blocksUnmapped: this.blocksUnmapped,
      hugeFallbacks: this.hugeFallbacks,
    };
  }

  /** Run `fn` in the open session, else in a session of its own (one flush for this call). */
  private inSession(fn: (s: WriteSession) => void): void {
    if (this.session !== null) {
      fn(this.session);
      return;
    }
    const s = this.machine.openWriteSession(this.cpu);
    try {
      fn(s);
    } finally {
      s.close();
    }
  }

  private vmallocIn(
    req: MapBlockRequest,
    range: { start: number; end: number },
    flushResetPerms: boolean,
  ): VmArea {
    return this.machine.vmalloc({
      sizeBytes: req.sizeBytes,
      range,
      alignBytes: req.alignBytes,
      prot: 'rw',
      allowHuge: req.huge,
      guardPages: 0,
      flushResetPerms,
    });
  }

  private fillBuffer(pattern: Uint8Array): Uint8Array {
    const key = pattern.join(',');
    let buf = this.fillBuffers.get(key);
    if (buf === undefined) {
      buf = new Uint8Array(FILL_CHUNK_BYTES);
      if (FILL_CHUNK_BYTES % pattern.length === 0) {
        // Doubling copies: the pattern repeats exactly, and a fresh backend builds it fast.
        buf.set(pattern);
        for (let n = pattern.length; n < buf.length; n *= 2)
          buf.copyWithin(n, 0, Math.min(n, buf.length - n));
      } else {
        for (let i = 0; i < buf.length; i++) buf[i] = pattern[i % pattern.length];
      }
      this.fillBuffers.set(key, buf);
    }
    return buf;
  }
}

/** The real bytes of a caller's Uint8Array (base/bytes.ts); EINVAL for anything else. */
function plain(bytes: Uint8Array, what: string): Uint8Array {
  const real = realBytes(bytes);
  if (real === undefined || real.length === 0)
    throw new BackendError('EINVAL', `SimBackend.${what}: bytes must be a non-empty Uint8Array`);
  return real;
}

function translate(e: unknown): unknown {
  if (e instanceof MachineError) {
    if (e.code === 'ENOMEM' || e.code === 'ENOSPC') return new BackendError(e.code, e.message);
    if (e.code === 'ENOTSUP') return new BackendError('ENOTSUP', e.message);
  }
  return e;
}
