/**
 * Start-up probes: can this process make a shared memfd mapping executable (dual mapping), and
 * can it make anonymous memory executable (mprotect toggling)?
 *
 * Why probe instead of assuming: policy, not the API, decides. SELinux checks PROT_EXEC on
 * anonymous memory as `execmem` and on a shared file mapping as `file:execute` on the file's label
 * (security/selinux/hooks.c, research/userspace-jit-alloc.md section 6); sandboxes may filter
 * memfd_create; /proc/sys/vm/memfd_noexec may forbid executable memfds. asmjit and Erlang's BEAM
 * probe the same way at start-up and fall back. The probe does the real thing end to end: it maps a
 * one-page memfd twice, writes `mov eax, 42; ret` through the RW alias and calls it through the RX
 * view, so "dualmap works" means code written through an alias really ran.
 *
 * `fault` forces one step to fail as if the kernel had refused it (the test for the fallback:
 * "a process without memfd_create"); the reason string says that the failure was forced.
 */
import koffi from 'koffi';
import {
  EINVAL,
  type Libc,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  MAP_SHARED,
  MFD_CLOEXEC,
  MFD_EXEC,
  memoryView,
  PROT_EXEC,
  PROT_READ,
  PROT_WRITE,
} from './libc.js';

/**
 * memfd_create: refuse memfd_create entirely (ENOSYS, a process without it);
 * mmap_exec: refuse PROT_EXEC on the shared mapping (EACCES, an SELinux-like policy);
 * mfd_exec: refuse the MFD_EXEC flag with EINVAL, as kernels before 6.3 do (the retry path).
 */
export type ProbeFault = 'memfd_create' | 'mmap_exec' | 'mfd_exec';

export interface ProbeResult {
  readonly ok: boolean;
  readonly reason: string;
}

const ENOSYS = 38;
const EACCES = 13;
const PROBE_BYTES = 4096;
/** mov eax, 42 ; ret */
const PROBE_CODE = Uint8Array.of(0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3);
const PROBE_ANSWER = 42;

export interface Memfd {
  readonly fd: number;
  /** The flags the kernel accepted (MFD_EXEC is dropped on kernels before 6.3). */
  readonly flags: number;
}

/**
 * memfd_create with MFD_CLOEXEC | MFD_EXEC, retried without MFD_EXEC on EINVAL (pre-6.3).
 * Returns the errno on failure.
 */
export function createMemfd(libc: Libc, name: string, fault?: ProbeFault): Memfd | { errno: number } {
  if (fault === 'memfd_create') return { errno: ENOSYS };
  let flags = MFD_CLOEXEC | MFD_EXEC;
  let fd = fault === 'mfd_exec' ? -1 : libc.memfdCreate(name, flags);
  if (fd < 0 && (fault === 'mfd_exec' || libc.errno() === EINVAL)) {
    flags = MFD_CLOEXEC;
    fd = libc.memfdCreate(name, flags);
  }
  if (fd < 0) return { errno: libc.errno() };
  return { fd, flags };
}

export function memfdFlagsName(flags: number): string {
  return flags & MFD_EXEC ? 'MFD_CLOEXEC|MFD_EXEC' : 'MFD_CLOEXEC';
}

function runProbeCode(execVa: number): number {
  const call = koffi.decode(execVa, koffi.proto('int (void)')) as () => number;
  return call();
}

export function probeDualmap(libc: Libc, fault?: ProbeFault): ProbeResult {
  const mfd = createMemfd(libc, 'execmem-probe', fault);
  if ('errno' in mfd) {
    const forced = fault === 'memfd_create' ? ' (forced by probe fault)' : '';
    return { ok: false, reason: `memfd_create failed with errno ${mfd.errno}${forced}` };
  }
  let rw = -1;
  let rx = -1;
  try {
    if (libc.ftruncate(mfd.fd, PROBE_BYTES) !== 0) {
      return { ok: false, reason: `ftruncate of the probe memfd failed with errno ${libc.errno()}` };
    }
    rw = libc.mmap(0, PROBE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, mfd.fd, 0);
    if (rw === -1) return { ok: false, reason: `mmap RW of the memfd failed with errno ${libc.errno()}` };
    if (fault === 'mmap_exec') {
      return {
        ok: false,
        reason: `mmap PROT_EXEC of the memfd refused with errno ${EACCES} (forced by probe fault)`,
      };
    }
    rx = libc.mmap(0, PROBE_BYTES, PROT_READ | PROT_EXEC, MAP_SHARED, mfd.fd, 0);
    if (rx === -1) {
      return { ok: false, reason: `mmap PROT_EXEC of a shared memfd refused with errno ${libc.errno()}` };
    }
    memoryView(rw, PROBE_BYTES).set(PROBE_CODE);
    const got = runProbeCode(rx);
    if (got !== PROBE_ANSWER)
      return { ok: false, reason: `probe code returned ${got}, expected ${PROBE_ANSWER}` };
    return {
      ok: true,
      reason: `memfd (${memfdFlagsName(mfd.flags)}) mapped RW + RX; code written through the alias ran`,
    };
  } finally {
    if (rw !== -1) libc.munmap(rw, PROBE_BYTES);
    if (rx !== -1) libc.munmap(rx, PROBE_BYTES);
    libc.close(mfd.fd);
  }
}

/** Can anonymous memory be written RW+NX, flipped to RX with mprotect, and run? */
export function probeAnonExec(libc: Libc): ProbeResult {
  const va = libc.mmap(0, PROBE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (va === -1) return { ok: false, reason: `anonymous mmap failed with errno ${libc.errno()}` };
  try {
    memoryView(va, PROBE_BYTES).set(PROBE_CODE);
    if (libc.mprotect(va, PROBE_BYTES, PROT_READ | PROT_EXEC) !== 0) {
      return { ok: false, reason: `mprotect to RX of anonymous memory refused with errno ${libc.errno()}` };
    }
    const got = runProbeCode(va);
    if (got !== PROBE_ANSWER)
      return { ok: false, reason: `probe code returned ${got}, expected ${PROBE_ANSWER}` };
    return { ok: true, reason: 'anonymous memory flipped RW+NX -> RX with mprotect; probe code ran' };
  } finally {
    libc.munmap(va, PROBE_BYTES);
  }
}
