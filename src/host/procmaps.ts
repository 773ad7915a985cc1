/**
 * Reading the kernel's own view of this process: /proc/self/maps, /proc/self/smaps and the
 * transparent-huge-page policy in /sys/kernel/mm/transparent_hugepage.
 *
 * Why: on real memory the MMU and the kernel are the oracle. Huge pages are never assumed
 * (research/userspace-jit-alloc.md section 6: memfds are shmem and follow `shmem_enabled`, whose
 * default is "never", torvalds/linux 5a6e75f8110c; anonymous memory follows `enabled`, where
 * "madvise" needs MADV_HUGEPAGE, as FEX-Emu does for its JIT buffers, FEX#5347). Whether a block
 * really got a 2 MiB page is read back from smaps (AnonHugePages for anonymous memory,
 * ShmemPmdMapped for shmem), and tests check W^X from the permissions column of maps.
 */
import { readFileSync } from 'node:fs';

export interface MapsEntry {
  readonly start: number;
  readonly end: number;
  /** The permission column, e.g. "r-xs". */
  readonly perms: string;
  readonly name: string;
}

const MAPS_LINE = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$/;

export function parseMaps(text: string): MapsEntry[] {
  const out: MapsEntry[] = [];
  for (const line of text.split('\n')) {
    const m = MAPS_LINE.exec(line);
    if (!m) continue;
    out.push({ start: Number.parseInt(m[1], 16), end: Number.parseInt(m[2], 16), perms: m[3], name: m[4] });
  }
  return out;
}

export function readMaps(): MapsEntry[] {
  return parseMaps(readFileSync('/proc/self/maps', 'utf8'));
}

export type HugeField = 'AnonHugePages' | 'ShmemPmdMapped';

/** Sum of `field` (bytes) over the smaps entries that overlap [start, end). */
export function hugeBytesIn(start: number, end: number, field: HugeField): number {
  const text = readFileSync('/proc/self/smaps', 'utf8');
  let total = 0;
  let inside = false;
  for (const line of text.split('\n')) {
    const m = MAPS_LINE.exec(line);
    if (m) {
      const s = Number.parseInt(m[1], 16);
      const e = Number.parseInt(m[2], 16);
      inside = s < end && e > start;
      continue;
    }
    if (inside && line.startsWith(`${field}:`)) {
      total += Number.parseInt(line.slice(field.length + 1), 10) * 1024;
    }
  }
  return total;
}

export interface ThpPolicy {
  /** /sys/kernel/mm/transparent_hugepage/enabled: always | madvise | never | unavailable. */
  readonly anon: string;
  /** .../shmem_enabled: always | within_size | advise | never | deny | force | unavailable. */
  readonly shmem: string;
  /** .../hpage_pmd_size, or 2 MiB when the file is missing. */
  readonly pmdBytes: number;
}

const THP_DIR = '/sys/kernel/mm/transparent_hugepage';

function bracketed(path: string): string {
  try {
    const m = /\[([a-z_]+)\]/.exec(readFileSync(path, 'utf8'));
    return m ? m[1] : 'unavailable';
  } catch {
    return 'unavailable';
  }
}

export function readThpPolicy(): ThpPolicy {
  let pmdBytes = 2 * 1024 * 1024;
  try {
    pmdBytes = Number.parseInt(readFileSync(`${THP_DIR}/hpage_pmd_size`, 'utf8'), 10);
  } catch {
    // keep the x86-64 PMD size
  }
  return { anon: bracketed(`${THP_DIR}/enabled`), shmem: bracketed(`${THP_DIR}/shmem_enabled`), pmdBytes };
}

export interface ThpUse {
  readonly usable: boolean;
  /** MADV_HUGEPAGE is required for this memory kind under the current policy. */
  readonly needsMadvise: boolean;
  readonly why: string;
}

export function thpUse(policy: ThpPolicy, kind: 'anon' | 'shmem'): ThpUse {
  const v = kind === 'anon' ? policy.anon : policy.shmem;
  const file = kind === 'anon' ? 'enabled' : 'shmem_enabled';
  if (v === 'always' || v === 'within_size' || v === 'force') {
    return { usable: true, needsMadvise: false, why: `${file}=${v}` };
  }
  if (v === 'madvise' || v === 'advise')
    return { usable: true, needsMadvise: true, why: `${file}=${v} (MADV_HUGEPAGE)` };
  return {
    usable: false,
    needsMadvise: false,
    why: `${file}=${v}: no transparent huge pages for ${kind} memory`,
  };
}
