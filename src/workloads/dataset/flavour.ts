/**
 * Which kernel a dataset is: its architecture (from the modules' e_machine) and, for fetching,
 * the Debian meta-package of a flavour on an architecture, and whether apt knows that
 * architecture.
 *
 * Why apart from dataset.ts: Debian's kernel flavours (cloud, rt, the full "generic"
 * linux-image-ARCH) and architectures are naming rules on top of the fetch/index mechanics; the
 * rules are Debian's (linux-image-FLAVOUR-ARCH meta-packages, PKG:ARCH for a foreign
 * architecture after `dpkg --add-architecture`), never hard-coded versions.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { vmlinuzArch } from './arm64-image.js';
import { DatasetError, type DatasetIndex, readModuleFile } from './dataset.js';

/** The architectures a dataset can hold (a Debian amd64 or arm64 linux-image package). */
export type DatasetArch = 'x86_64' | 'arm64';

/** ELF e_machine values of the module files: EM_X86_64 and EM_AARCH64. */
const EM_ARCH: Readonly<Record<number, DatasetArch>> = { 62: 'x86_64', 183: 'arm64' };

/**
 * The architecture of a dataset: the e_machine of its first module file (every module of a
 * package is built for one machine), else the kind of its vmlinuz.
 */
export function datasetArch(index: DatasetIndex): DatasetArch {
  const first = index.modules[0];
  if (first) {
    const bytes = readModuleFile(join(index.root, first.path));
    if (bytes.length >= 20 && bytes[0] === 0x7f) {
      const arch = EM_ARCH[bytes[18] | (bytes[19] << 8)];
      if (arch) return arch;
    }
  }
  if (index.vmlinuz) return vmlinuzArch(readModuleFile(index.vmlinuz));
  return 'x86_64';
}

/** Debian's architecture names for the two dataset architectures. */
export const DEBIAN_ARCH: Readonly<Record<DatasetArch, string>> = { x86_64: 'amd64', arm64: 'arm64' };

/**
 * The meta-package of a Debian kernel flavour: `generic` is linux-image-ARCH (the full
 * flavour), any other (cloud, rt) linux-image-FLAVOUR-ARCH; a foreign architecture is asked for
 * as PKG:ARCH, which apt knows once `dpkg --add-architecture ARCH && apt-get update` ran.
 */
export function flavourMetaPackage(arch: DatasetArch, flavour: string, hostDebArch: string): string {
  if (!/^[a-z0-9][a-z0-9-]*$/.test(flavour))
    throw new DatasetError(`'${flavour}' is not a kernel flavour name`);
  const deb = DEBIAN_ARCH[arch];
  const name = flavour === 'generic' ? `linux-image-${deb}` : `linux-image-${flavour}-${deb}`;
  return deb === hostDebArch ? name : `${name}:${deb}`;
}

/** dpkg --print-architecture, and whether ARCH is the host's or one of its foreign ones. */
export function dpkgKnowsArch(deb: string): { host: string; known: boolean } {
  const host = spawnSync('dpkg', ['--print-architecture'], { encoding: 'utf8' }).stdout?.trim() ?? '';
  if (deb === host) return { host, known: true };
  const foreign = spawnSync('dpkg', ['--print-foreign-architectures'], { encoding: 'utf8' }).stdout ?? '';
  return { host, known: foreign.split('\n').some((l) => l.trim() === deb) };
}
