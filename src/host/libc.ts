/**
 * The libc calls the host backend needs, bound through koffi, with Linux x86-64 constants.
 *
 * Why this shape: the backend must reach mmap/mprotect/memfd_create without a native addon of
 * our own, and koffi 3 binds libc at run time (koffi.load('libc.so.6')). Addresses cross the
 * boundary as `uintptr_t`/`intptr_t` so they stay plain JS numbers (user-space pointers are below
 * 2^47, exact in a double; see base/addr.ts) instead of koffi 3's default BigInt pointers, which
 * would allocate on every call. `mmap` returns `intptr_t` so MAP_FAILED reads as -1.
 * Nothing here keeps module-level state: `loadLibc()` returns a fresh table that its owner holds.
 *
 * Constants are the Linux uapi values for x86-64 (include/uapi/asm-generic/mman-common.h,
 * include/uapi/linux/memfd.h, include/uapi/asm-generic/resource.h, unistd.h _SC_PAGESIZE = 30 in
 * glibc's bits/confname.h). MFD_EXEC (0x10) exists since Linux 6.3; older kernels reject it with
 * EINVAL, so callers retry without it (research/userspace-jit-alloc.md section 6, item 4).
 */
import koffi from 'koffi';

export const PROT_NONE = 0;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const PROT_EXEC = 4;

export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;

export const MADV_DONTNEED = 4;
export const MADV_REMOVE = 9;
export const MADV_DONTFORK = 10;
export const MADV_HUGEPAGE = 14;

export const MFD_CLOEXEC = 0x1;
export const MFD_EXEC = 0x10;

export const RLIMIT_FSIZE = 1;
export const RLIMIT_AS = 9;
export const SC_PAGESIZE = 30;

export const EINVAL = 22;

/** An rlimit value; `Infinity` stands for RLIM_INFINITY. */
export interface Rlimit {
  readonly cur: number;
  readonly max: number;
}

export interface Libc {
  /** Returns the address, or -1 (MAP_FAILED) with errno set. */
  mmap(
    addr: number,
    lengthBytes: number,
    prot: number,
    flags: number,
    fd: number,
    offsetBytes: number,
  ): number;
  munmap(addr: number, lengthBytes: number): number;
  mprotect(addr: number, lengthBytes: number, prot: number): number;
  madvise(addr: number, lengthBytes: number, advice: number): number;
  memfdCreate(name: string, flags: number): number;
  ftruncate(fd: number, lengthBytes: number): number;
  close(fd: number): number;
  sysconf(name: number): number;
  getrlimit(resource: number): Rlimit;
  /** errno of the last failed call on this thread. */
  errno(): number;
}

const RLIM_INFINITY = 0xffff_ffff_ffff_ffffn;

function rlimToNumber(v: bigint | number): number {
  const b = BigInt(v);
  if (b === RLIM_INFINITY || b >= 2n ** 53n) return Number.POSITIVE_INFINITY;
  return Number(b);
}

/** Binds the calls. Throws if libc cannot be loaded (not Linux/glibc). */
export function loadLibc(): Libc {
  const lib = koffi.load('libc.so.6');
  const mmap = lib.func(
    'intptr_t mmap(uintptr_t addr, size_t len, int prot, int flags, int fd, int64_t off)',
  );
  const munmap = lib.func('int munmap(uintptr_t addr, size_t len)');
  const mprotect = lib.func('int mprotect(uintptr_t addr, size_t len, int prot)');
  const madvise = lib.func('int madvise(uintptr_t addr, size_t len, int advice)');
  const memfdCreate = lib.func('int memfd_create(const char *name, unsigned int flags)');
  const ftruncate = lib.func('int ftruncate(int fd, int64_t len)');
  const close = lib.func('int close(int fd)');
  const sysconf = lib.func('long sysconf(int name)');
  const rlimitType = koffi.struct({ cur: 'uint64_t', max: 'uint64_t' });
  const getrlimit = lib.func('getrlimit', 'int', ['int', koffi.out(koffi.pointer(rlimitType))]);
  return {
    mmap: (addr, len, prot, flags, fd, off) => Number(mmap(addr, len, prot, flags, fd, off)),
    munmap: (addr, len) => munmap(addr, len),
    mprotect: (addr, len, prot) => mprotect(addr, len, prot),
    madvise: (addr, len, advice) => madvise(addr, len, advice),
    memfdCreate: (name, flags) => memfdCreate(name, flags),
    ftruncate: (fd, len) => ftruncate(fd, len),
    close: (fd) => close(fd),
    sysconf: (name) => Number(sysconf(name)),
    getrlimit(resource: number): Rlimit {
      const out: { cur?: bigint; max?: bigint } = {};
      if (getrlimit(resource, out) !== 0)
        throw new Error(`getrlimit(${resource}) failed: errno ${koffi.errno()}`);
      return { cur: rlimToNumber(out.cur ?? RLIM_INFINITY), max: rlimToNumber(out.max ?? RLIM_INFINITY) };
    },
    errno: () => koffi.errno(),
  };
}

/** A Uint8Array over process memory [addr, addr+lengthBytes) without copying (koffi.view). */
export function memoryView(addr: number, lengthBytes: number): Uint8Array {
  return new Uint8Array(koffi.view(addr, lengthBytes));
}
