/**
 * From a bzImage (vmlinuz) to the kernel's ELF image, for its export table.
 *
 * Why: Debian's linux-image package ships a stub System.map ("The real System.map is in the
 * linux-image-<version>-dbg package", a 280 MB download), but its vmlinuz carries the whole
 * kernel ELF (arch/x86/boot/compressed/vmlinux.bin = `objcopy -R .comment -S vmlinux`: no
 * symbol table, but every section header, including __ksymtab, __ksymtab_gpl, __kcrctab and
 * __ksymtab_strings). That is exactly the table module loading uses, so it is the better source.
 *
 * Format facts (Documentation/arch/x86/boot.rst): setup_sects at 0x1f1 (0 means 4), the
 * protected-mode part starts at (setup_sects + 1) * 512; payload_offset (0x248) and
 * payload_length (0x24c) locate the compressed vmlinux relative to it. Debian 6.1 cloud kernels
 * use CONFIG_KERNEL_LZ4, the LZ4 *legacy* frame (magic 0x184c2102, then blocks of a 32-bit LE
 * compressed length and raw LZ4 block data, each decoding to at most 8 MiB), decoded below in
 * plain TypeScript so no lz4 tool is needed. gzip uses node:zlib; xz, zstd, bzip2 and lzma
 * payloads are piped through the `xz` / `zstd` / `bzip2` commands when present.
 *
 * The size trailer: arch/x86/boot/compressed/Makefile (6.1) builds every payload but gzip with a
 * `*_with_size` rule (scripts/Makefile.lib size_append: the uncompressed size as 4 little-endian
 * bytes after the compressed stream; xzkern_with_size, lz4_with_size, zstd22_with_size,
 * bzip2_with_size, lzma_with_size). To `xz -dc` those 4 bytes are a truncated second stream
 * ("Unexpected end of input"), which is how the full Debian flavour (CONFIG_KERNEL_XZ) failed.
 * So the trailer is read, checked against the decompressed size, and kept away from the tool
 * (xz --single-stream; the others get the payload without it). gzip's own ISIZE ends its stream.
 *
 * arm64 has no bzImage: Debian's arm64 vmlinuz is the raw `Image` (arch/arm64/kernel/head.S
 * header, magic "ARM\x64" at offset 56), or a gzip of it on other distributions; that image is
 * read by arm64-image.ts, not here.
 */
import { Buffer } from 'node:buffer';
import { spawnSync } from 'node:child_process';
import { gunzipSync } from 'node:zlib';

export class KernelImageError extends Error {
  override name = 'KernelImageError';
}

const LZ4_LEGACY_MAGIC = 0x184c2102;
const LZ4_LEGACY_BLOCK_BYTES = 8 << 20;
const MAX_OUTPUT_BYTES = 512 << 20;

/** Decode one raw LZ4 block into `out` at `outPos`; returns the new output position. */
function lz4Block(src: Uint8Array, start: number, end: number, out: Uint8Array, outPos: number): number {
  let i = start;
  let o = outPos;
  while (i < end) {
    const token = src[i++];
    let lit = token >>> 4;
    if (lit === 15) {
      let b = 255;
      while (b === 255) {
        if (i >= end) throw new KernelImageError('lz4: truncated literal length');
        b = src[i++];
        lit += b;
      }
    }
    if (i + lit > end || o + lit > out.length) throw new KernelImageError('lz4: literal run out of bounds');
    out.set(src.subarray(i, i + lit), o);
    i += lit;
    o += lit;
    if (i >= end) break; // the last sequence has literals only
    if (i + 2 > end) throw new KernelImageError('lz4: truncated match offset');
    const dist = src[i] | (src[i + 1] << 8);
    i += 2;
    if (dist === 0 || dist > o - outPos) throw new KernelImageError('lz4: bad match offset');
    let len = (token & 15) + 4;
    if ((token & 15) === 15) {
      let b = 255;
      while (b === 255) {
        if (i >= end) throw new KernelImageError('lz4: truncated match length');
        b = src[i++];
        len += b;
      }
    }
    if (o + len > out.length) throw new KernelImageError('lz4: match runs past the output');
    let from = o - dist;
    if (dist >= len) {
      out.copyWithin(o, from, from + len);
      o += len;
    } else {
      for (let k = 0; k < len; k++) out[o++] = out[from++];
    }
  }
  return o;
}

/** Decode an LZ4 legacy frame (what the kernel's lz4 compressor writes). */
export function lz4LegacyDecode(src: Uint8Array): Uint8Array {
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  if (src.length < 4 || view.getUint32(0, true) !== LZ4_LEGACY_MAGIC)
    throw new KernelImageError('not an LZ4 legacy frame');
  const chunks: Uint8Array[] = [];
  let total = 0;
  let i = 4;
  const block = new Uint8Array(LZ4_LEGACY_BLOCK_BYTES);
  while (i + 4 <= src.length) {
    const len = view.getUint32(i, true);
    if (len === LZ4_LEGACY_MAGIC) {
      i += 4; // concatenated frame
      continue;
    }
    i += 4;
    if (len === 0 || i + len > src.length) break; // trailing size field / padding ends the stream
    const n = lz4Block(src, i, i + len, block, 0);
    chunks.push(block.slice(0, n));
    total += n;
    if (total > MAX_OUTPUT_BYTES) throw new KernelImageError('lz4: output above the 512 MiB limit');
    i += len;
  }
  const out = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

function viaTool(tool: string, args: readonly string[], payload: Uint8Array): Uint8Array {
  const r = spawnSync(tool, [...args], { input: payload, maxBuffer: MAX_OUTPUT_BYTES });
  if (r.error || r.status !== 0) {
    throw new KernelImageError(
      `the payload is ${tool}-compressed and '${tool} ${args.join(' ')}' failed: ${r.error?.message ?? r.stderr.toString().trim()}`,
    );
  }
  return new Uint8Array(r.stdout.buffer, r.stdout.byteOffset, r.stdout.byteLength);
}

/** The compression of a kernel payload, by its magic (null when unknown). */
export type PayloadCompression = 'lz4' | 'gzip' | 'xz' | 'zstd' | 'bzip2' | 'lzma';

export function payloadCompression(p: Uint8Array): PayloadCompression | null {
  if (p.length < 4) return null;
  if (p[0] === 0x02 && p[1] === 0x21 && p[2] === 0x4c && p[3] === 0x18) return 'lz4';
  if (p[0] === 0x1f && p[1] === 0x8b) return 'gzip';
  if (p[0] === 0xfd && p[1] === 0x37 && p[2] === 0x7a && p[3] === 0x58) return 'xz';
  if (p[0] === 0x28 && p[1] === 0xb5 && p[2] === 0x2f && p[3] === 0xfd) return 'zstd';
  if (p[0] === 0x42 && p[1] === 0x5a && p[2] === 0x68) return 'bzip2';
  // lzma_alone: properties byte 0x5d (lc=3, lp=0, pb=2), then a little-endian dictionary size.
  if (p[0] === 0x5d && p[1] === 0x00 && p[2] === 0x00) return 'lzma';
  return null;
}

/**
 * Decompress a kernel payload of any compression the x86 boot code supports. `sizeTrailer`:
 * the payload ends with the 4-byte uncompressed size (the *_with_size rules; see the header),
 * which is checked against what came out.
 */
export function decompressPayload(p: Uint8Array, sizeTrailer: boolean): Uint8Array {
  const kind = payloadCompression(p);
  if (kind === null)
    throw new KernelImageError(
      `unsupported kernel compression (magic ${Buffer.from(p.subarray(0, 4)).toString('hex')})`,
    );
  const trailer = sizeTrailer && kind !== 'gzip' && p.length > 8;
  const body = trailer ? p.subarray(0, p.length - 4) : p;
  let out: Uint8Array;
  switch (kind) {
    case 'lz4':
      out = lz4LegacyDecode(body);
      break;
    case 'gzip':
      out = new Uint8Array(gunzipSync(p));
      break;
    case 'xz':
      out = viaTool('xz', ['-dc', '--single-stream'], body);
      break;
    case 'zstd':
      out = viaTool('zstd', ['-dc'], body);
      break;
    case 'bzip2':
      out = viaTool('bzip2', ['-dc'], body);
      break;
    case 'lzma':
      out = viaTool('xz', ['-dc', '--format=lzma', '--single-stream'], body);
      break;
  }
  if (trailer) {
    const want = new DataView(p.buffer, p.byteOffset, p.byteLength).getUint32(p.length - 4, true);
    if (want !== out.length % 2 ** 32)
      throw new KernelImageError(
        `${kind} payload: decompressed ${out.length} bytes, but its size trailer says ${want}`,
      );
  }
  return out;
}

/** The compressed payload of a bzImage. */
export function bzImagePayload(bz: Uint8Array): Uint8Array {
  if (
    bz.length < 0x260 ||
    bz[0x202] !== 0x48 ||
    bz[0x203] !== 0x64 ||
    bz[0x204] !== 0x72 ||
    bz[0x205] !== 0x53
  ) {
    throw new KernelImageError('not a bzImage (no "HdrS" boot header)');
  }
  const view = new DataView(bz.buffer, bz.byteOffset, bz.byteLength);
  const setupSects = bz[0x1f1] || 4;
  const base = (setupSects + 1) * 512;
  const off = view.getUint32(0x248, true);
  const len = view.getUint32(0x24c, true);
  if (base + off + len > bz.length || len === 0)
    throw new KernelImageError('bzImage payload offset/length out of range');
  return bz.subarray(base + off, base + off + len);
}

/** Decompress the bzImage payload to the kernel ELF. */
export function extractVmlinux(bz: Uint8Array): Uint8Array {
  const elf = decompressPayload(bzImagePayload(bz), true);
  if (elf[0] !== 0x7f || elf[1] !== 0x45)
    throw new KernelImageError('decompressed payload is not an ELF file');
  return elf;
}
