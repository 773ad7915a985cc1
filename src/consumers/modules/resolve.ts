/**
 * Resolving a module's undefined symbols against the kernel's and live modules' exports, as
 * Linux's kernel/module/main.c simplify_symbols() / resolve_symbol() do (6.1).
 *
 * Why its own file: these are the linking rules a module must pass before anything is
 * allocated for it here (loader.ts explains the order), and they are the ones a distribution
 * kernel exercises most: exported symbols of the kernel first, then of live modules in load
 * order; GPL-only exports need a GPL-compatible license (license_is_gpl_compatible());
 * namespaced exports need MODULE_IMPORT_NS (verify_namespace_is_imported()); modversions CRCs
 * must match (check_version()); weak undefined symbols resolve to 0; SHN_COMMON is refused
 * ("Please compile with -fno-common"); livepatch symbols are not supported.
 */
import { Buffer } from 'node:buffer';
import {
  ElfError,
  type ElfFile,
  findSection,
  SHN_COMMON,
  SHN_LIVEPATCH,
  SHN_UNDEF,
  SHT_NOBITS,
  STB_WEAK,
  sectionBytes,
} from './elf.js';
import { ModuleLoadError } from './load-errors.js';
import type { KernelExport } from './symbols.js';

/** struct modversion_info: unsigned long crc; char name[MODULE_NAME_LEN = 64 - 8]. */
const MODVERSION_BYTES = 64;
/** include/linux/license.h license_is_gpl_compatible(). */
const GPL_COMPATIBLE = new Set([
  'GPL',
  'GPL v2',
  'GPL and additional rights',
  'Dual BSD/GPL',
  'Dual MIT/GPL',
  'Dual MPL/GPL',
]);

/** An export found by name, with its owner (null: the kernel) and runtime value. */
export interface FoundExport {
  readonly exp: KernelExport;
  readonly owner: string | null;
  readonly value: number;
}

export type ExportLookup = (name: string) => FoundExport | undefined;

export function firstInfo(modinfo: Map<string, string[]>, key: string): string | undefined {
  return modinfo.get(key)?.[0];
}

/** The __versions table (name -> CRC); each name is bounded by its 56-byte field. */
function readVersions(elf: ElfFile): Map<string, number> | null {
  const s = findSection(elf, '__versions');
  if (!s || s.type === SHT_NOBITS) return null;
  if (s.sizeBytes % MODVERSION_BYTES !== 0)
    throw new ElfError('ESHDR', `__versions size ${s.sizeBytes} is not a multiple of ${MODVERSION_BYTES}`);
  const out = new Map<string, number>();
  const raw = sectionBytes(elf, s);
  for (let off = 0; off < raw.length; off += MODVERSION_BYTES) {
    const crc = elf.view.getUint32(s.offset + off, true);
    let end = raw.subarray(off + 8, off + MODVERSION_BYTES).indexOf(0);
    end = end < 0 ? off + MODVERSION_BYTES : off + 8 + end;
    out.set(Buffer.from(raw.buffer, raw.byteOffset + off + 8, end - off - 8).toString('latin1'), crc);
  }
  return out;
}

/**
 * Values of the undefined symbols (index -> runtime value; defined symbols are left 0 for the
 * caller), adding every module linked against to `uses`. Throws ModuleLoadError.
 */
export function resolveSymbols(
  elf: ElfFile,
  name: string,
  modinfo: Map<string, string[]>,
  uses: Set<string>,
  findExport: ExportLookup,
): Float64Array {
  const license = firstInfo(modinfo, 'license') ?? 'unspecified';
  const gplOk = GPL_COMPATIBLE.has(license);
  const imports = new Set(modinfo.get('import_ns') ?? []);
  const versions = readVersions(elf);
  const values = new Float64Array(elf.symbols.length);
  const unresolved: string[] = [];
  const refuse = (code: 'ENOEXEC' | 'EINVAL', text: string): ModuleLoadError =>
    new ModuleLoadError(code, name, `${name}: ${text}`, [], null, 'symbols');
  for (const sym of elf.symbols) {
    if (sym.index === 0) continue;
    if (sym.shndx === SHN_COMMON)
      throw refuse('ENOEXEC', `please compile with -fno-common (common symbol ${sym.name})`);
    if (sym.shndx === SHN_LIVEPATCH) throw refuse('ENOEXEC', `livepatch symbol ${sym.name} is not supported`);
    if (sym.shndx !== SHN_UNDEF || sym.name === '') continue;
    const found = findExport(sym.name);
    if (!found || (found.exp.gplOnly && !gplOk)) {
      if (sym.bind === STB_WEAK) values[sym.index] = 0;
      else unresolved.push(sym.name);
      continue;
    }
    const ns = found.exp.namespace;
    if (ns && !imports.has(ns)) {
      throw refuse(
        'EINVAL',
        `module uses symbol (${sym.name}) from namespace ${ns}, but does not import it.`,
      );
    }
    const want = versions?.get(sym.name);
    if (want !== undefined && found.exp.crc !== null && want !== found.exp.crc)
      throw refuse('EINVAL', `disagrees about version of symbol ${sym.name}`);
    values[sym.index] = found.value;
    if (found.owner) uses.add(found.owner);
  }
  if (unresolved.length > 0) {
    const shown = unresolved.slice(0, 5).map((s) => `Unknown symbol ${s} (err -2)`);
    const more = unresolved.length > 5 ? ` (+${unresolved.length - 5} more)` : '';
    throw new ModuleLoadError(
      'ENOENT',
      name,
      `${name}: ${shown.join('; ')}${more}`,
      unresolved,
      null,
      'symbols',
    );
  }
  return values;
}
