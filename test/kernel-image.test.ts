/**
 * Kernel image payloads of every compression, on images this test builds itself.
 *
 * Why: the full Debian amd64 flavour (CONFIG_KERNEL_XZ) failed with "xz: Unexpected end of
 * input" because arch/x86/boot/compressed/Makefile appends the uncompressed size (size_append)
 * after the xz stream. Each case below compresses a fake kernel ELF with the real tool, appends
 * that 4-byte trailer as the kernel build does (gzip has none), wraps it in a bzImage boot header
 * (Documentation/arch/x86/boot.rst: "HdrS" at 0x202, setup_sects at 0x1f1, payload_offset and
 * payload_length at 0x248 / 0x24c) and checks that extractVmlinux() gives back the exact bytes.
 * A wrong trailer is refused, and the plain `xz -dc` failure is reproduced so the test shows the
 * cause it guards against.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { Rng } from '../src/base/rng.js';
import {
  decompressPayload,
  extractVmlinux,
  KernelImageError,
  payloadCompression,
} from '../src/workloads/dataset/kernel-image.js';
import { withTempDir } from './helpers/tempdir.js';
import { hasTool } from './helpers/toolchain.js';

/** A fake kernel ELF: the magic, then compressible but not trivial bytes. */
function fakeVmlinux(sizeBytes: number, seed: number): Uint8Array {
  const rng = new Rng(seed);
  const out = new Uint8Array(sizeBytes);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  for (let i = 16; i < sizeBytes; i++) out[i] = rng.int(0, 15) < 12 ? i & 0x3f : rng.int(0, 255);
  return out;
}

function sizeTrailer(n: number): Uint8Array {
  const t = new Uint8Array(4);
  new DataView(t.buffer).setUint32(0, n, true);
  return t;
}

/** A bzImage around `payload`: 4 setup sectors after the boot sector, then the payload. */
function bzImage(payload: Uint8Array): Uint8Array {
  const setupSects = 4;
  const base = (setupSects + 1) * 512;
  const payloadOffset = 0x400; // inside the protected-mode part, as the real head is
  const img = new Uint8Array(base + payloadOffset + payload.length + 64);
  const view = new DataView(img.buffer);
  img[0x1f1] = setupSects;
  img.set([0x48, 0x64, 0x72, 0x53], 0x202);
  view.setUint32(0x248, payloadOffset, true);
  view.setUint32(0x24c, payload.length, true);
  img.set(payload, base + payloadOffset);
  return img;
}

/** How the kernel build compresses (scripts/Makefile.lib 6.1), and whether it appends the size. */
const CASES: readonly { name: string; tool: string; args: string[]; trailer: boolean }[] = [
  { name: 'gzip', tool: 'gzip', args: ['-n', '-9', '-c'], trailer: false },
  { name: 'xz', tool: 'xz', args: ['--check=crc32', '--x86', '--lzma2=dict=32MiB', '-c'], trailer: true },
  { name: 'lz4', tool: 'lz4', args: ['-l', '-9', '-c'], trailer: true },
  { name: 'zstd', tool: 'zstd', args: ['-19', '-c'], trailer: true },
  { name: 'bzip2', tool: 'bzip2', args: ['-9', '-c'], trailer: true },
  { name: 'lzma', tool: 'xz', args: ['--format=lzma', '-9', '-c'], trailer: true },
];

describe('kernel image payloads (images built here)', () => {
  for (const c of CASES) {
    it(`${c.name}: the payload with its size trailer decompresses to the exact ELF`, {
      skip: hasTool(c.tool) ? false : `${c.tool} not installed`,
    }, () => {
      withTempDir(`execmem-kimg-${c.name}-`, (d) => {
        const elf = fakeVmlinux(300_000 + c.name.length * 1000, c.name.length);
        const raw = join(d, 'vmlinux.bin');
        writeFileSync(raw, elf);
        const packed = new Uint8Array(execFileSync(c.tool, [...c.args, raw], { maxBuffer: 64 << 20 }));
        assert.equal(payloadCompression(packed), c.name);
        const payload = c.trailer ? Buffer.concat([packed, sizeTrailer(elf.length)]) : packed;
        const out = extractVmlinux(bzImage(new Uint8Array(payload)));
        assert.equal(out.length, elf.length);
        assert.ok(Buffer.from(out).equals(Buffer.from(elf)), 'same bytes');
        if (c.trailer) {
          const wrong = Buffer.concat([packed, sizeTrailer(elf.length + 4096)]);
          assert.throws(
            () => extractVmlinux(bzImage(new Uint8Array(wrong))),
            (e: unknown) => e instanceof KernelImageError && /size trailer says/.test(e.message),
          );
        }
      });
    });
  }

  it('plain `xz -dc` fails on a trailer-carrying payload (the bug this guards against)', {
    skip: hasTool('xz') ? false : 'xz not installed',
  }, () => {
    withTempDir('execmem-kimg-xzbug-', (d) => {
      const elf = fakeVmlinux(100_000, 9);
      writeFileSync(join(d, 'v'), elf);
      const packed = execFileSync('xz', ['--check=crc32', '-c', join(d, 'v')]);
      const payload = Buffer.concat([packed, sizeTrailer(elf.length)]);
      writeFileSync(join(d, 'p.xz'), payload);
      const r = spawnSync('xz', ['-dc', join(d, 'p.xz')]);
      assert.notEqual(r.status, 0, 'xz -dc refuses the trailer');
      const ours = decompressPayload(new Uint8Array(readFileSync(join(d, 'p.xz'))), true);
      assert.ok(Buffer.from(ours).equals(Buffer.from(elf)));
    });
  });

  it('refuses an unknown compression and a payload that is no ELF', () => {
    assert.throws(
      () => extractVmlinux(bzImage(Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8, 9))),
      /unsupported kernel compression/,
    );
    const notElf = new Uint8Array(gzipSync(Buffer.from('not an elf file')));
    assert.throws(() => extractVmlinux(bzImage(notElf)), /not an ELF/);
  });
});
