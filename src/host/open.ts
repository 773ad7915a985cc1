/**
 * Opening the host arena: check the options, decide the mode (probing dualmap for real), clip the
 * reservations to the process limits, and reserve them. HostBackend (backend.ts) is then built
 * over what this returns; this file holds no backend state of its own.
 *
 * Why these steps, in this order: the mode must be decided by what the kernel actually allows
 * (probe.ts writes through an alias and calls the result), never by guessing from the platform;
 * each memfd is clipped to RLIMIT_FSIZE before it is sized so ftruncate can never raise SIGXFSZ,
 * and the address space to RLIMIT_AS / 4 (research/userspace-jit-alloc.md section 6). A failure
 * after a reservation releases what was reserved, so a refused open leaves nothing behind.
 */
import { BackendError } from '../execmem/backend.js';
import { type FamilyLayout, type FamilyName, releaseLayout, reserveAnon, reserveDual } from './arena.js';
import { HostError } from './errors.js';
import { type Libc, loadLibc, RLIMIT_AS, RLIMIT_FSIZE, SC_PAGESIZE } from './libc.js';
import {
  createMemfd,
  memfdFlagsName,
  type ProbeFault,
  type ProbeResult,
  probeAnonExec,
  probeDualmap,
} from './probe.js';
import { readThpPolicy, type ThpPolicy, type ThpUse, thpUse } from './procmaps.js';
import { DEFAULT_LOCK_TIMEOUT_MS } from './rwlock.js';

export type HostMode = 'auto' | 'dualmap' | 'mprotect';

/**
 * Points inside the backend's critical sections where a test hook runs (to terminate a worker
 * exactly there): after a new block's pages were populated but before the tables say so; after an
 * unmap released the pages but before the journal is closed; after the view's (or the alias's)
 * mprotect but before its table is updated; inside a call's shared hold (mprotect mode).
 */
export type HostFaultPoint =
  | 'map:populated'
  | 'unmap:released'
  | 'protect:view'
  | 'protect:alias'
  | 'call:shared';

/** Options an attached backend may have too (they are per thread, not per arena). */
export interface HostThreadOptions {
  /** Tests only: called at each HostFaultPoint. */
  readonly faultHook?: (point: HostFaultPoint) => void;
}

export interface HostOptions extends HostThreadOptions {
  /** Default 'auto'. */
  readonly mode?: HostMode;
  /** Reservation for text types (module_text, kprobes, ftrace, bpf). Default 512 MiB. */
  readonly textReserveBytes?: number;
  /** Reservation for data types (module_rodata, module_ro_after_init, module_data). Default 256 MiB. */
  readonly dataReserveBytes?: number;
  /** Make a step of the dualmap probe fail as if refused (tests the fallback). */
  readonly probeFault?: ProbeFault;
  /** memfd name shown in /proc/self/maps as /memfd:<name>. Default 'execmem'. */
  readonly memfdName?: string;
  /**
   * Longest wait for the arena lock held by a live thread before ETIMEDOUT, in ms, for every
   * thread attached to the arena. Default 10 000; an integer in [1, 600 000].
   */
  readonly lockTimeoutMs?: number;
}

/** What openHost decided and measured; JSON-friendly. */
export interface HostReport {
  readonly mode: 'dualmap' | 'mprotect';
  readonly requestedMode: HostMode;
  readonly modeReason: string;
  readonly probes: { readonly dualmap: ProbeResult | null; readonly anonExec: ProbeResult | null };
  /** memfd flags accepted by the kernel (dualmap), else null. */
  readonly memfdFlags: string | null;
  readonly thpPolicy: ThpPolicy;
  /** Can blocks get 2 MiB pages in this mode (anon or shmem) under this policy, and why. */
  readonly thpForBlocks: ThpUse;
  /** RLIMIT_FSIZE soft limit; null when unlimited. */
  readonly rlimitFsizeBytes: number | null;
  readonly lockTimeoutMs: number;
  readonly families: readonly {
    readonly name: FamilyName;
    readonly viewBase: string;
    readonly aliasBase: string | null;
    readonly capacityBytes: number;
    readonly mappedBytes: number;
  }[];
}

/** Everything a worker needs to attach to the same arena (structured-cloneable). */
export interface HostShareHandle {
  readonly kind: 'execmem-host';
  readonly mode: 'dualmap' | 'mprotect';
  readonly report: HostReport;
  readonly families: readonly [FamilyLayout, FamilyLayout];
  readonly lock: SharedArrayBuffer;
  /** Address of the call stub (trampoline.ts), 0 if there is none. */
  readonly trampoline: number;
}

export interface PreparedHost {
  readonly libc: Libc;
  readonly report: HostReport;
  readonly layouts: readonly [FamilyLayout, FamilyLayout];
}

const SZ_2M = 2 * 1024 * 1024;
const DEFAULT_TEXT_RESERVE = 512 * 1024 * 1024;
const DEFAULT_DATA_RESERVE = 256 * 1024 * 1024;
/** A family is at most 16 GiB (two views in dualmap: 32 GiB of address space). */
const RESERVE_MAX = 16 * 1024 * 1024 * 1024;
const LOCK_TIMEOUT_MAX_MS = 600_000;

function checkReserve(name: string, bytes: number): void {
  if (!Number.isInteger(bytes) || bytes < SZ_2M || bytes % SZ_2M !== 0 || bytes > RESERVE_MAX) {
    throw new HostError('EINVAL', `${name} must be a multiple of 2 MiB in [2 MiB, 16 GiB], got ${bytes}`);
  }
}

function alignDown2M(bytes: number): number {
  return Math.floor(bytes / SZ_2M) * SZ_2M;
}

/**
 * Decide the mode and reserve both families. Throws HostError EINVAL on bad options, BackendError
 * ENOTSUP when the process cannot have executable memory in the asked mode (with the probe's reason).
 */
export function prepareHost(options: HostOptions): PreparedHost {
  const requested = options.mode ?? 'auto';
  if (requested !== 'auto' && requested !== 'dualmap' && requested !== 'mprotect') {
    throw new HostError('EINVAL', `unknown mode '${String(requested)}' (auto, dualmap, mprotect)`);
  }
  const textBytes = options.textReserveBytes ?? DEFAULT_TEXT_RESERVE;
  const dataBytes = options.dataReserveBytes ?? DEFAULT_DATA_RESERVE;
  checkReserve('textReserveBytes', textBytes);
  checkReserve('dataReserveBytes', dataBytes);
  const lockTimeoutMs = options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
  if (!Number.isInteger(lockTimeoutMs) || lockTimeoutMs < 1 || lockTimeoutMs > LOCK_TIMEOUT_MAX_MS) {
    throw new HostError(
      'EINVAL',
      `lockTimeoutMs must be an integer in [1, ${LOCK_TIMEOUT_MAX_MS}], got ${lockTimeoutMs}`,
    );
  }
  if (options.faultHook !== undefined && typeof options.faultHook !== 'function') {
    throw new HostError('EINVAL', 'faultHook must be a function');
  }
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new BackendError(
      'ENOTSUP',
      `the host backend runs on x86-64 Linux only (this is ${process.platform}/${process.arch}); arm64 would ` +
        'need I-cache maintenance (__clear_cache, membarrier) after every write, which is not faked here',
    );
  }
  const libc = loadLibc();
  const pageBytes = libc.sysconf(SC_PAGESIZE);
  if (pageBytes !== 4096)
    throw new BackendError('ENOTSUP', `page size ${pageBytes} (only 4096 is supported)`);
  const fsize = libc.getrlimit(RLIMIT_FSIZE).cur;
  const as = libc.getrlimit(RLIMIT_AS).cur;
  const thpPolicy = readThpPolicy();

  let dualProbe: ProbeResult | null = null;
  let anonProbe: ProbeResult | null = null;
  let mode: 'dualmap' | 'mprotect';
  let reason: string;
  // Clip each memfd to RLIMIT_FSIZE (no SIGXFSZ) and the address space to RLIMIT_AS / 4.
  const clip = (bytes: number, views: number): number =>
    Math.min(bytes, alignDown2M(fsize), alignDown2M(as / (4 * views)));

  if (requested === 'mprotect') {
    mode = 'mprotect';
    reason = 'mprotect mode requested';
  } else {
    dualProbe = probeDualmap(libc, options.probeFault);
    const room = clip(Math.min(textBytes, dataBytes), 4);
    if (dualProbe.ok && room >= SZ_2M) {
      mode = 'dualmap';
      reason =
        requested === 'dualmap' ? `dualmap requested; ${dualProbe.reason}` : `auto: ${dualProbe.reason}`;
    } else {
      const why = dualProbe.ok
        ? `RLIMIT_FSIZE ${fsize} / RLIMIT_AS ${as} leave no room for a memfd arena`
        : dualProbe.reason;
      if (requested === 'dualmap') throw new BackendError('ENOTSUP', `dualmap unavailable: ${why}`);
      mode = 'mprotect';
      reason = `auto: dualmap unavailable (${why}); falling back to mprotect`;
    }
  }
  if (mode === 'mprotect') {
    anonProbe = probeAnonExec(libc);
    if (!anonProbe.ok)
      throw new BackendError('ENOTSUP', `no executable memory in this process: ${anonProbe.reason}`);
  }

  const thpForBlocks = thpUse(thpPolicy, mode === 'dualmap' ? 'shmem' : 'anon');
  const views = mode === 'dualmap' ? 4 : 2;
  const caps: [number, number] = [clip(textBytes, views), clip(dataBytes, views)];
  const names: [FamilyName, FamilyName] = ['text', 'data'];
  const layouts: FamilyLayout[] = [];
  let memfdFlags: string | null = null;
  try {
    for (let i = 0; i < 2; i++) {
      let res: ReturnType<typeof reserveAnon>;
      if (mode === 'dualmap') {
        const mfd = createMemfd(libc, `${options.memfdName ?? 'execmem'}-${names[i]}`, options.probeFault);
        if ('errno' in mfd) throw new BackendError('ENOTSUP', `memfd_create failed with errno ${mfd.errno}`);
        memfdFlags = memfdFlagsName(mfd.flags);
        res = reserveDual(libc, names[i], mfd.fd, caps[i], thpPolicy.pmdBytes);
        libc.close(mfd.fd);
      } else {
        res = reserveAnon(libc, names[i], caps[i], thpPolicy.pmdBytes);
      }
      if ('error' in res) throw new BackendError('ENOMEM', `${names[i]} reservation: ${res.error}`);
      layouts.push(res.layout);
    }
  } catch (e) {
    for (const l of layouts) releaseLayout(libc, l);
    throw e;
  }
  const report: HostReport = {
    mode,
    requestedMode: requested,
    modeReason: reason,
    probes: { dualmap: dualProbe, anonExec: anonProbe },
    memfdFlags,
    thpPolicy,
    thpForBlocks,
    rlimitFsizeBytes: Number.isFinite(fsize) ? fsize : null,
    lockTimeoutMs,
    families: [],
  };
  return { libc, report, layouts: [layouts[0], layouts[1]] };
}

/** The thread options of an attach call, checked. */
export function checkThreadOptions(options: HostThreadOptions | undefined): HostThreadOptions {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null)
    throw new HostError('EINVAL', 'options must be an object');
  const faultHook = options.faultHook;
  if (faultHook !== undefined && typeof faultHook !== 'function') {
    throw new HostError('EINVAL', 'faultHook must be a function');
  }
  return { faultHook };
}
