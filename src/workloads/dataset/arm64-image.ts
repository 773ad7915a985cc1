/**
 * The kernel's exports from an arm64 `Image` (Debian's arm64 vmlinuz), for loading arm64 modules.
 *
 * Why this way: an arm64 Image is a raw binary (arch/arm64/kernel/head.S: a 64-byte header with
 * text_offset at 8, image_size at 16, the magic "ARM\x64" at 56; Documentation/arch/arm64/
 * booting.rst), not an ELF, so there are no section headers to find __ksymtab by. Debian ships
 * it uncompressed as /boot/vmlinuz-*-arm64 (other distributions gzip it; both are read), and its
 * System.map is the same one-line stub as on amd64. The export table is in the image all the
 * same, and it can be found without guessing addresses, because every entry is position
 * independent: 6.1's `struct kernel_symbol` with CONFIG_HAVE_ARCH_PREL32_RELOCATIONS (arm64
 * selects it) is three int32 offsets relative to the field itself (value, name, namespace;
 * include/linux/export.h __KSYMTAB_ENTRY), and the name and namespace point into
 * __ksymtab_strings, NUL-terminated C identifiers (the namespace may be "").
 *
 * So: every 4-aligned offset is tested as an entry (value inside the image, name an identifier,
 * namespace a string); the longest run of consecutive 12-byte entries is __ksymtab followed by
 * __ksymtab_gpl (include/asm-generic/vmlinux.lds.h puts them back to back, 4-aligned). Each
 * table is sorted by name (SORT(___ksymtab+*)), so the one place where the order drops is the
 * boundary between them. __kcrctab and __kcrctab_gpl follow immediately (same file), one u32
 * CRC per entry in the same order; the loader checks them against each module's __versions, so
 * a wrong boundary would show as CRC mismatches on load. Per-CPU exports are link addresses in
 * .data..percpu on arm64 (no zero-based per-CPU section: that is x86's
 * CONFIG_KALLSYMS_ABSOLUTE_PERCPU), so every export moves with KASLR.
 *
 * Link address: 6.1 links _text at KIMAGE_VADDR (0xffff800008000000 with 6.1's 128 MiB
 * MODULES_VSIZE; 0xffff800080000000 since 6.5's 2 GiB). Values here are image offsets plus our
 * arm64 layout's kernelImage.textStart (src/arch/arm64.ts), so that module placement, KASLR
 * shifts and branch reach are computed in one consistent address space; the offsets are real.
 */
import { gunzipSync } from 'node:zlib';
import { arm64 } from '../../arch/arm64.js';
import { toSigned } from '../../consumers/modules/image.js';
import { type KernelExport, KernelSymbols } from '../../consumers/modules/symbols.js';
import { KernelImageError } from './kernel-image.js';

const ARM64_IMAGE_MAGIC = 0x644d5241; // "ARM\x64" little-endian, at offset 56
const HEADER_BYTES = 64;
const ENTRY_BYTES = 12;
/** KSYM_NAME_LEN (128 in 6.1) bounds an exported name. */
const NAME_MAX_BYTES = 128;
/** A real export table has thousands of entries; fewer than this is no export table. */
const MIN_ENTRIES = 100;

export interface Arm64ImageInfo {
  readonly textOffsetBytes: number;
  /** image_size: the kernel's in-memory size from _text to _end (BSS included). */
  readonly imageSizeBytes: number;
}

/** Is this an arm64 Image (the header magic at 56)? */
export function isArm64Image(bytes: Uint8Array): boolean {
  if (bytes.length < HEADER_BYTES) return false;
  return (
    new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(56, true) === ARM64_IMAGE_MAGIC
  );
}

/** An arm64 Image (raw, or gzip of one) or else an x86 bzImage. */
export function vmlinuzArch(bytes: Uint8Array): 'x86_64' | 'arm64' {
  if (isArm64Image(bytes)) return 'arm64';
  if (bytes[0] === 0x1f && bytes[1] === 0x8b && bytes.length > 0x206) {
    // Image.gz: no bzImage starts with the gzip magic (its boot sector does).
    return 'arm64';
  }
  return 'x86_64';
}

/** The raw Image of a vmlinuz: as is, or gunzipped (Image.gz). Throws when it is neither. */
export function arm64ImageOf(vmlinuz: Uint8Array): Uint8Array {
  if (isArm64Image(vmlinuz)) return vmlinuz;
  if (vmlinuz[0] === 0x1f && vmlinuz[1] === 0x8b) {
    const raw = new Uint8Array(gunzipSync(vmlinuz));
    if (isArm64Image(raw)) return raw;
  }
  throw new KernelImageError('not an arm64 Image (no "ARM\\x64" magic at offset 56, raw or gzip)');
}

export function arm64ImageInfo(image: Uint8Array): Arm64ImageInfo {
  if (!isArm64Image(image)) throw new KernelImageError('not an arm64 Image');
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const textOffsetBytes = Number(v.getBigUint64(8, true));
  const imageSizeBytes = Number(v.getBigUint64(16, true));
  if (imageSizeBytes < image.length || imageSizeBytes > 1 << 30)
    throw new KernelImageError(
      `arm64 Image: image_size ${imageSizeBytes} is not plausible for a ${image.length}-byte file`,
    );
  return { textOffsetBytes, imageSizeBytes };
}

/** Length of the C identifier (or empty string when `emptyOk`) at q ending in NUL, else -1. */
function cString(b: Uint8Array, q: number, emptyOk: boolean): number {
  if (q < HEADER_BYTES || q >= b.length) return -1;
  const end = Math.min(b.length, q + NAME_MAX_BYTES);
  for (let i = q; i < end; i++) {
    const c = b[i];
    if (c === 0) return i > q || emptyOk ? i - q : -1;
    const alpha = (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || c === 0x5f;
    if (!(alpha || (i > q && c >= 0x30 && c <= 0x39))) return -1;
  }
  return -1;
}

function text(b: Uint8Array, q: number, len: number): string {
  return Buffer.from(b.buffer, b.byteOffset + q, len).toString('latin1');
}

/** [start, count] of the longest run of plausible kernel_symbol entries. */
function findKsymtab(b: Uint8Array, imageSizeBytes: number): [number, number] {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  // run[k]: consecutive valid entries ending at offset 4k (stride 12 = 3 slots).
  const slots = Math.floor((b.length - ENTRY_BYTES) / 4) + 1;
  const run = new Uint32Array(slots);
  let best = 0;
  let bestEnd = 0;
  for (let k = HEADER_BYTES / 4; k < slots; k++) {
    const p = k * 4;
    const value = p + v.getInt32(p, true);
    if (value < 0 || value >= imageSizeBytes) continue;
    if (cString(b, p + 4 + v.getInt32(p + 4, true), false) < 0) continue;
    if (cString(b, p + 8 + v.getInt32(p + 8, true), true) < 0) continue;
    const n = (k >= 3 ? run[k - 3] : 0) + 1;
    run[k] = n;
    if (n > best) {
      best = n;
      bestEnd = p;
    }
  }
  if (best < MIN_ENTRIES)
    throw new KernelImageError(`arm64 Image: no __ksymtab found (longest run of entries: ${best})`);
  return [bestEnd - (best - 1) * ENTRY_BYTES, best];
}

/** The exports of an arm64 Image (raw, or the gzip of one). */
export function arm64KernelSymbols(vmlinuz: Uint8Array, source = 'Image __ksymtab'): KernelSymbols {
  const b = arm64ImageOf(vmlinuz);
  const info = arm64ImageInfo(b);
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const [start, count] = findKsymtab(b, info.imageSizeBytes);
  const names: string[] = [];
  const values: number[] = [];
  const namespaces: string[] = [];
  for (let i = 0; i < count; i++) {
    const p = start + i * ENTRY_BYTES;
    values.push(p + v.getInt32(p, true));
    const q = p + 4 + v.getInt32(p + 4, true);
    names.push(text(b, q, cString(b, q, false)));
    const r = p + 8 + v.getInt32(p + 8, true);
    namespaces.push(text(b, r, cString(b, r, true)));
  }
  // The GPL table starts where the name order drops (each table is sorted on its own).
  let gplStart = count;
  for (let i = 1; i < count; i++) {
    if (names[i] < names[i - 1]) {
      if (gplStart !== count)
        throw new KernelImageError(`arm64 Image: __ksymtab order drops twice (at ${gplStart} and ${i})`);
      gplStart = i;
    }
  }
  const crcAt = start + count * ENTRY_BYTES;
  if (crcAt + count * 4 > b.length) throw new KernelImageError('arm64 Image: __kcrctab runs past the file');
  // Link addresses: image offset + _text (text_offset is 0 since 5.8; kept for older images).
  const base = toSigned(arm64.layout.kernelImage.textStart) - info.textOffsetBytes;
  const out: KernelExport[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < count; i++) {
    if (seen.has(names[i])) throw new KernelImageError(`arm64 Image: ${names[i]} exported twice`);
    seen.add(names[i]);
    out.push({
      name: names[i],
      value: base + values[i],
      gplOnly: i >= gplStart,
      namespace: namespaces[i],
      crc: v.getUint32(crcAt + i * 4, true),
      percpu: false,
    });
  }
  return new KernelSymbols(
    out,
    0,
    `${source} (${gplStart} + ${count - gplStart} GPL-only entries at image offset 0x${start.toString(16)})`,
  );
}
