/**
 * ELF64 little-endian reader for relocatable objects (.ko files and gcc -c output), with full
 * validation.
 *
 * Why it validates everything up front: a kernel module is untrusted input to the loader, and
 * Linux checks the same things before it touches a byte (kernel/module/main.c
 * elf_validity_cache_sechdrs(), _secstrings(), _index_sym(), _index_str(): "Invalid ELF section
 * header overflow", "ELF Spec violation: section name table isn't null terminated", "module has
 * no symbols (stripped?)"). Here every offset, size, index and string is bounds-checked when the
 * file is parsed, so the layers above (layout, relocation) never see an out-of-range value and a
 * corrupt file ends in one `ElfError` naming the problem, never an exception from deep inside
 * and never a half-loaded module. Relocation entries are checked where they are applied
 * (reloc.ts), against the same limits, before anything is written to an allocation.
 *
 * Cost: parsing is linear in the file. Names are read through names.ts, which caps each symbol
 * name at KSYM_NAME_LEN - 1 characters and all names of a file at a budget proportional to its
 * size, so a string table built to be re-read (one long run named into at many offsets) is
 * refused with ESTRTAB instead of being decoded again and again (issue 16 item 3).
 *
 * Numbers: 64-bit fields that hold file offsets and sizes must be below 2^53 (else ETRUNC: no
 * file is that large). Addresses and symbol values are kept as *signed* 64-bit values in a
 * double (kernel addresses like 0xffffffff81000000 become -0x7f000000), exact while their
 * magnitude is below 2^53; a value outside that (only possible for SHN_ABS symbols) is kept as
 * NaN and a relocation against it fails with a typed error.
 *
 * Module signatures: Debian's modules carry an appended PKCS#7 signature; `stripModuleSignature`
 * removes it exactly as Linux's mod_verify_sig() does before parsing (the signature itself is
 * not verified: that is modelled as out of scope).
 */
import { Buffer } from 'node:buffer';
import { isPow2 } from '../../base/addr.js';
import { NameReader, type ParseStats, SYMBOL_NAME_LIMIT } from './names.js';

export type ElfErrorCode =
  | 'ETRUNC' // an offset/size points past the end of the file
  | 'EMAGIC' // not an ELF file
  | 'ECLASS' // not ELF64 little-endian version 1
  | 'ETYPE' // not the expected e_type (ET_REL)
  | 'EMACHINE' // not the expected machine
  | 'ESHDR' // section header table malformed
  | 'ESTRTAB' // string table malformed or a name offset out of range
  | 'ESYMTAB' // symbol table malformed
  | 'ERELA' // relocation section malformed
  | 'ESIG'; // malformed module signature trailer

export class ElfError extends Error {
  override name = 'ElfError';
  constructor(
    readonly code: ElfErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

export const SHT_NULL = 0;
export const SHT_PROGBITS = 1;
export const SHT_SYMTAB = 2;
export const SHT_STRTAB = 3;
export const SHT_RELA = 4;
export const SHT_NOBITS = 8;
export const SHT_REL = 9;

export const SHF_WRITE = 0x1;
export const SHF_ALLOC = 0x2;
export const SHF_EXECINSTR = 0x4;
/** Linux-private flag (include/linux/elf.h / moduleloader.h), set by the loader, never in files. */
export const SHF_RO_AFTER_INIT = 0x00200000;

export const SHN_UNDEF = 0;
export const SHN_LORESERVE = 0xff00;
export const SHN_LIVEPATCH = 0xff20;
export const SHN_ABS = 0xfff1;
export const SHN_COMMON = 0xfff2;
export const SHN_XINDEX = 0xffff;

export const STB_LOCAL = 0;
export const STB_GLOBAL = 1;
export const STB_WEAK = 2;
export const STT_NOTYPE = 0;
export const STT_OBJECT = 1;
export const STT_FUNC = 2;
export const STT_SECTION = 3;

export const ET_REL = 1;
export const ET_EXEC = 2;
export const EM_X86_64 = 62;

const EHDR_BYTES = 64;
const SHDR_BYTES = 64;
export const SYM_BYTES = 24;
export const RELA_BYTES = 24;
/** Explicit limits (TigerBeetle style): nothing real comes close. */
const MAX_SECTIONS = 65279; // below SHN_LORESERVE: no extended numbering
const MAX_FILE_BYTES = 1 << 30;

export interface ElfSection {
  readonly index: number;
  readonly name: string;
  readonly type: number;
  /** Low 32 bits of sh_flags (no defined flag lives above bit 31). */
  readonly flags: number;
  /** sh_addr as a signed 64-bit value (0 in relocatable files). */
  readonly addr: number;
  readonly offset: number;
  readonly sizeBytes: number;
  readonly link: number;
  readonly info: number;
  /** sh_addralign, 0 or a power of two. */
  readonly alignBytes: number;
  readonly entsize: number;
}

export interface ElfSymbol {
  readonly index: number;
  readonly name: string;
  /** st_value as signed 64-bit; NaN when it cannot be held exactly. */
  readonly value: number;
  readonly sizeBytes: number;
  readonly bind: number;
  readonly type: number;
  readonly shndx: number;
}

export interface ElfFile {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  readonly type: number;
  readonly machine: number;
  readonly sections: readonly ElfSection[];
  /** Index of the one SHT_SYMTAB section, or 0 when there is none (allowed only for ET_EXEC). */
  readonly symtabIndex: number;
  readonly symbols: readonly ElfSymbol[];
  /** The file's name budget (names.ts); later readers of names in this file share it. */
  readonly names: NameReader;
}

export interface ParseOptions {
  /** Accepted e_type values (default: ET_REL only). */
  readonly types?: readonly number[];
  /** Required e_machine (default EM_X86_64). */
  readonly machine?: number;
  /** Parse the symbol table (default true). */
  readonly symbols?: boolean;
  /** Work counters to add this parse's work to (names.ts). */
  readonly stats?: ParseStats;
}

function u64(view: DataView, off: number, what: string): number {
  const lo = view.getUint32(off, true);
  const hi = view.getUint32(off + 4, true);
  if (hi >= 0x200000)
    throw new ElfError(
      'ETRUNC',
      `${what} is 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')}, beyond any file`,
    );
  return hi * 4294967296 + lo;
}

/** A 64-bit field as a signed value in a double; NaN if not exactly representable. */
export function s64(view: DataView, off: number): number {
  const lo = view.getUint32(off, true);
  const hi = view.getInt32(off + 4, true);
  if (hi >= 0x200000 || hi < -0x200000) return Number.NaN;
  return hi * 4294967296 + lo;
}

function readHeader(bytes: Uint8Array, view: DataView, opts: ParseOptions) {
  if (bytes.length < EHDR_BYTES)
    throw new ElfError('ETRUNC', `file is ${bytes.length} bytes, shorter than the 64-byte ELF header`);
  if (bytes.length > MAX_FILE_BYTES)
    throw new ElfError('ETRUNC', `file is ${bytes.length} bytes, above the ${MAX_FILE_BYTES}-byte limit`);
  if (bytes[0] !== 0x7f || bytes[1] !== 0x45 || bytes[2] !== 0x4c || bytes[3] !== 0x46) {
    throw new ElfError('EMAGIC', 'Invalid ELF header magic: != \\177ELF');
  }
  if (bytes[4] !== 2) throw new ElfError('ECLASS', `EI_CLASS is ${bytes[4]}, not ELFCLASS64`);
  if (bytes[5] !== 1) throw new ElfError('ECLASS', `EI_DATA is ${bytes[5]}, not little-endian`);
  if (bytes[6] !== 1) throw new ElfError('ECLASS', `EI_VERSION is ${bytes[6]}, not 1`);
  const type = view.getUint16(16, true);
  const types = opts.types ?? [ET_REL];
  if (!types.includes(type))
    throw new ElfError('ETYPE', `Invalid ELF header type: ${type} != ${types.join('/')}`);
  const machine = view.getUint16(18, true);
  const wantMachine = opts.machine ?? EM_X86_64;
  if (machine !== wantMachine)
    throw new ElfError('EMACHINE', `Invalid architecture in ELF header: ${machine} (want ${wantMachine})`);
  const shoff = u64(view, 40, 'e_shoff');
  const shentsize = view.getUint16(58, true);
  const shnum = view.getUint16(60, true);
  const shstrndx = view.getUint16(62, true);
  if (shentsize !== SHDR_BYTES)
    throw new ElfError('ESHDR', `Invalid ELF section header size ${shentsize} (want ${SHDR_BYTES})`);
  if (shnum === 0 || shnum > MAX_SECTIONS)
    throw new ElfError('ESHDR', `e_shnum is ${shnum} (extended numbering is not supported)`);
  if (shoff >= bytes.length || shnum * SHDR_BYTES > bytes.length - shoff) {
    throw new ElfError(
      'ETRUNC',
      'Invalid ELF section header overflow: the table runs past the end of the file',
    );
  }
  if (shstrndx === SHN_UNDEF || shstrndx >= shnum) {
    throw new ElfError(
      'ESHDR',
      `Invalid ELF section name index: e_shstrndx (${shstrndx}) >= e_shnum (${shnum})`,
    );
  }
  return { type, machine, shoff, shnum, shstrndx };
}

interface RawSection {
  nameOff: number;
  type: number;
  flags: number;
  addr: number;
  offset: number;
  sizeBytes: number;
  link: number;
  info: number;
  alignBytes: number;
  entsize: number;
}

function readRawSection(bytes: Uint8Array, view: DataView, base: number, i: number): RawSection {
  const type = view.getUint32(base + 4, true);
  const flagsHi = view.getUint32(base + 12, true);
  if (flagsHi !== 0)
    throw new ElfError(
      'ESHDR',
      `section ${i}: sh_flags has bits above 31 set (0x${flagsHi.toString(16)}........)`,
    );
  const sizeBytes = u64(view, base + 32, `section ${i} sh_size`);
  const offset = u64(view, base + 24, `section ${i} sh_offset`);
  const alignBytes = u64(view, base + 48, `section ${i} sh_addralign`);
  if (alignBytes !== 0 && !isPow2(alignBytes)) {
    throw new ElfError('ESHDR', `section ${i}: sh_addralign ${alignBytes} is not a power of two`);
  }
  if (alignBytes > 2 ** 32) throw new ElfError('ESHDR', `section ${i}: sh_addralign ${alignBytes} is absurd`);
  if (type !== SHT_NULL && type !== SHT_NOBITS && offset + sizeBytes > bytes.length) {
    throw new ElfError(
      'ETRUNC',
      `Invalid ELF section in module (section ${i} type ${type}): offset ${offset} + size ${sizeBytes} > file ${bytes.length}`,
    );
  }
  if (i === 0 && (type !== SHT_NULL || sizeBytes !== 0)) {
    throw new ElfError('ESHDR', `ELF Spec violation: section 0 type(${type})!=SH_NULL or non-zero len`);
  }
  return {
    nameOff: view.getUint32(base, true),
    type,
    flags: view.getUint32(base + 8, true),
    addr: s64(view, base + 16),
    offset,
    sizeBytes,
    link: view.getUint32(base + 40, true),
    info: view.getUint32(base + 44, true),
    alignBytes,
    entsize: u64(view, base + 56, `section ${i} sh_entsize`),
  };
}

function readSections(
  bytes: Uint8Array,
  view: DataView,
  hdr: { shoff: number; shnum: number; shstrndx: number },
  names: NameReader,
): ElfSection[] {
  const { shoff, shnum, shstrndx } = hdr;
  const raw: RawSection[] = [];
  for (let i = 0; i < shnum; i++) raw.push(readRawSection(bytes, view, shoff + i * SHDR_BYTES, i));
  const strhdr = raw[shstrndx];
  if (strhdr.type !== SHT_STRTAB)
    throw new ElfError(
      'ESTRTAB',
      `section name table (section ${shstrndx}) has type ${strhdr.type}, not SHT_STRTAB`,
    );
  if (strhdr.sizeBytes === 0) throw new ElfError('ESTRTAB', 'empty section name table');
  const strEnd = strhdr.offset + strhdr.sizeBytes;
  if (bytes[strEnd - 1] !== 0)
    throw new ElfError('ESTRTAB', "ELF Spec violation: section name table isn't null terminated");
  return raw.map((r, i) => {
    if (r.type !== SHT_NULL && r.nameOff >= strhdr.sizeBytes) {
      throw new ElfError('ESTRTAB', `Invalid ELF section name in module (section ${i} type ${r.type})`);
    }
    const name =
      r.type === SHT_NULL
        ? ''
        : names.read(
            bytes,
            strhdr.offset + r.nameOff,
            strEnd,
            `section ${i} name in section ${shstrndx} (the section name table)`,
          );
    return {
      index: i,
      name,
      type: r.type,
      flags: r.flags,
      addr: r.addr,
      offset: r.offset,
      sizeBytes: r.sizeBytes,
      link: r.link,
      info: r.info,
      alignBytes: r.alignBytes,
      entsize: r.entsize,
    };
  });
}

function findSymtab(sections: readonly ElfSection[], required: boolean): number {
  let idx = 0;
  let count = 0;
  for (const s of sections) {
    if (s.type === SHT_SYMTAB) {
      idx = s.index;
      count++;
    }
  }
  if (count > 1) throw new ElfError('ESYMTAB', `${count} symbol tables (exactly one expected)`);
  if (count === 0 && required) throw new ElfError('ESYMTAB', 'module has no symbols (stripped?)');
  return idx;
}

function readSymbols(
  bytes: Uint8Array,
  view: DataView,
  sections: readonly ElfSection[],
  symtabIndex: number,
  names: NameReader,
): ElfSymbol[] {
  const symtab = sections[symtabIndex];
  if (symtab.entsize !== SYM_BYTES)
    throw new ElfError('ESYMTAB', `symbol table entry size ${symtab.entsize} != ${SYM_BYTES}`);
  if (symtab.sizeBytes % SYM_BYTES !== 0)
    throw new ElfError('ESYMTAB', `symbol table size ${symtab.sizeBytes} is not a multiple of ${SYM_BYTES}`);
  if (symtab.link === SHN_UNDEF || symtab.link >= sections.length) {
    throw new ElfError(
      'ESYMTAB',
      `Invalid ELF sh_link!=SHN_UNDEF(${symtab.link}) or (sh_link(${symtab.link}) >= hdr->e_shnum(${sections.length})`,
    );
  }
  const strtab = sections[symtab.link];
  if (strtab.type !== SHT_STRTAB)
    throw new ElfError('ESTRTAB', `symbol string table (section ${strtab.index}) is not SHT_STRTAB`);
  const strEnd = strtab.offset + strtab.sizeBytes;
  const count = symtab.sizeBytes / SYM_BYTES;
  if (symtab.info > count)
    throw new ElfError('ESYMTAB', `symbol table sh_info ${symtab.info} > ${count} symbols`);
  const out: ElfSymbol[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const base = symtab.offset + i * SYM_BYTES;
    const nameOff = view.getUint32(base, true);
    if (nameOff >= strtab.sizeBytes && nameOff !== 0)
      throw new ElfError('ESTRTAB', `symbol ${i}: name offset ${nameOff} outside the string table`);
    const name =
      nameOff === 0
        ? ''
        : names.read(
            bytes,
            strtab.offset + nameOff,
            strEnd,
            `symbol ${i} name in section ${strtab.index} (${strtab.name})`,
            SYMBOL_NAME_LIMIT,
          );
    const infoByte = bytes[base + 4];
    const shndx = view.getUint16(base + 6, true);
    if (shndx === SHN_XINDEX)
      throw new ElfError('ESYMTAB', `symbol ${i} '${name}': SHN_XINDEX is not supported`);
    if (shndx !== SHN_UNDEF && shndx < SHN_LORESERVE && shndx >= sections.length) {
      throw new ElfError('ESYMTAB', `symbol ${i} '${name}': section index ${shndx} >= ${sections.length}`);
    }
    const sizeBytes = u64(view, base + 16, `symbol ${i} st_size`);
    out[i] = {
      index: i,
      name,
      value: s64(view, base + 8),
      sizeBytes,
      bind: infoByte >> 4,
      type: infoByte & 0xf,
      shndx,
    };
  }
  return out;
}

/** Parse and validate an ELF64 LE file. Throws `ElfError` on any inconsistency. */
export function parseElf(bytes: Uint8Array, opts: ParseOptions = {}): ElfFile {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const hdr = readHeader(bytes, view, opts);
  const names = new NameReader(bytes.length, (m) => new ElfError('ESTRTAB', m), opts.stats);
  const sections = readSections(bytes, view, hdr, names);
  const wantSymbols = opts.symbols ?? true;
  const symtabIndex = wantSymbols ? findSymtab(sections, hdr.type === ET_REL) : 0;
  const symbols = symtabIndex === 0 ? [] : readSymbols(bytes, view, sections, symtabIndex, names);
  return { bytes, view, type: hdr.type, machine: hdr.machine, sections, symtabIndex, symbols, names };
}

/** The bytes of a section's contents (empty for NOBITS). Bounds were checked at parse time. */
export function sectionBytes(elf: ElfFile, s: ElfSection): Uint8Array {
  if (s.type === SHT_NOBITS || s.type === SHT_NULL) return new Uint8Array(0);
  return elf.bytes.subarray(s.offset, s.offset + s.sizeBytes);
}

/** First SHF_ALLOC section with this name (Linux find_sec()), or undefined. */
export function findSection(elf: ElfFile, name: string, allocOnly = true): ElfSection | undefined {
  for (const s of elf.sections) {
    if (s.index !== 0 && s.name === name && (!allocOnly || (s.flags & SHF_ALLOC) !== 0)) return s;
  }
  return undefined;
}

const SIG_MARKER = '~Module signature appended~\n';
const SIG_INFO_BYTES = 12; // struct module_signature

/**
 * Strip an appended module signature (Linux mod_verify_sig()): the file ends with the marker,
 * preceded by struct module_signature whose big-endian sig_len gives the PKCS#7 blob length.
 * Returns the bytes without the trailer (a view, no copy) and whether one was found.
 */
export function stripModuleSignature(bytes: Uint8Array): { bytes: Uint8Array; signed: boolean } {
  const m = SIG_MARKER.length;
  if (bytes.length < m) return { bytes, signed: false };
  for (let i = 0; i < m; i++) {
    if (bytes[bytes.length - m + i] !== SIG_MARKER.charCodeAt(i)) return { bytes, signed: false };
  }
  const infoEnd = bytes.length - m;
  if (infoEnd < SIG_INFO_BYTES)
    throw new ElfError('ESIG', 'signature marker present but no room for struct module_signature');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const sigLen = view.getUint32(infoEnd - 4, false);
  const idType = bytes[infoEnd - SIG_INFO_BYTES + 2];
  if (idType !== 2) throw new ElfError('ESIG', `module signature id_type ${idType} is not PKEY_ID_PKCS7 (2)`);
  if (sigLen >= infoEnd - SIG_INFO_BYTES)
    throw new ElfError('ESIG', `module signature length ${sigLen} exceeds the file`);
  return { bytes: bytes.subarray(0, infoEnd - SIG_INFO_BYTES - sigLen), signed: true };
}

/** Parse a .modinfo section: NUL-separated key=value strings. Keys may repeat (alias=, import_ns=). */
export function parseModinfo(elf: ElfFile): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const s = elf.sections.find((x) => x.name === '.modinfo' && x.type !== SHT_NOBITS);
  if (!s) return out;
  const raw = sectionBytes(elf, s);
  let start = 0;
  while (start < raw.length) {
    let end = raw.indexOf(0, start);
    if (end < 0) end = raw.length;
    if (end > start) {
      const entry = Buffer.from(raw.buffer, raw.byteOffset + start, end - start).toString('latin1');
      const eq = entry.indexOf('=');
      if (eq > 0) {
        const key = entry.slice(0, eq);
        const list = out.get(key);
        if (list) list.push(entry.slice(eq + 1));
        else out.set(key, [entry.slice(eq + 1)]);
      }
    }
    start = end + 1;
  }
  return out;
}
