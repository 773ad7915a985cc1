/**
 * Mutations of ELF relocatable files for the `elf` fuzz target (elf.ts), and the crafted files
 * the hostile-input tests rebuild (issue 16 item 3: one long string table named into at many
 * offsets).
 *
 * Why biased mutations and not random bytes: a random byte almost always lands in code or data
 * that the loader copies without looking. These aim at what the parser, layout, symbol
 * resolution and relocation read: the ELF header, section headers, symbols, relocation entries
 * and string tables, with values that sit on the edges (0, 1, all ones, the file size, sizes
 * near 2^31, 2^32 and 2^53, another section's offset), and at the games a hostile file plays:
 * truncation, string tables without NULs or with one huge run, names pointing outside their
 * table, huge counts and sizes, overlapping and repeated sections, a bogus signature trailer.
 * Offsets come from the unmutated file's shape, so several mutations compose.
 */
import type { Rng } from '../src/base/rng.js';
import {
  type ElfFile,
  parseElf,
  SHN_ABS,
  SHN_COMMON,
  SHN_LIVEPATCH,
  SHN_XINDEX,
  SHT_NOBITS,
  SHT_RELA,
  SHT_STRTAB,
} from '../src/consumers/modules/elf.js';

const SHDR_BYTES = 64;
const SYM_BYTES = 24;
const RELA_BYTES = 24;

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function setU64(b: Uint8Array, off: number, v: number): void {
  if (off + 8 <= b.length) view(b).setBigUint64(off, BigInt.asUintN(64, BigInt(Math.trunc(v))), true);
}
function setU32(b: Uint8Array, off: number, v: number): void {
  if (off + 4 <= b.length) view(b).setUint32(off, v >>> 0, true);
}
function setU16(b: Uint8Array, off: number, v: number): void {
  if (off + 2 <= b.length) view(b).setUint16(off, v & 0xffff, true);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function pad8(b: Uint8Array): Uint8Array {
  return b.length % 8 === 0 ? b : concat(b, new Uint8Array(8 - (b.length % 8)));
}

/** A run of `bytes` - 1 'A's and one NUL: one string table with a single, final terminator. */
function longRun(bytes: number): Uint8Array {
  const run = new Uint8Array(bytes).fill(0x41);
  run[bytes - 1] = 0;
  return run;
}

/**
 * Append a copy of the section header table (changed by `edit`, which may also add entries)
 * and point e_shoff / e_shnum at it. `headers[i]` is section i's 64 bytes.
 */
export function rewriteSectionHeaders(
  base: Uint8Array,
  edit: (headers: Uint8Array[], fileBytes: number) => Uint8Array[],
): Uint8Array {
  const v = view(base);
  const shoff = Number(v.getBigUint64(40, true));
  const shnum = v.getUint16(60, true);
  const headers: Uint8Array[] = [];
  for (let i = 0; i < shnum; i++)
    headers.push(base.slice(shoff + i * SHDR_BYTES, shoff + (i + 1) * SHDR_BYTES));
  const body = pad8(base);
  const edited = edit(headers, body.length);
  const out = concat(body, ...edited);
  setU64(out, 40, body.length);
  setU16(out, 60, edited.length);
  return out;
}

function shdrSet(h: Uint8Array, field: 'offset' | 'size' | 'info' | 'name', v: number): void {
  if (field === 'offset') setU64(h, 24, v);
  else if (field === 'size') setU64(h, 32, v);
  else if (field === 'info') setU32(h, 44, v);
  else setU32(h, 0, v);
}

export interface LongNamesOptions {
  /** Bytes of the run that replaces .strtab (one NUL, at its end). */
  readonly runBytes: number;
  /** Symbols in the new symbol table (the file's own first, then copies). */
  readonly symbols: number;
  /** Name offset of symbol i is 1 + (i * stride) mod (runBytes - 2); default 1. */
  readonly stride?: number;
  /** Instead: name i is the last 1 + (i * stride) mod tailChars characters of the run. */
  readonly tailChars?: number;
}

/**
 * Issue 16 item 3's crafted file, from any module: .strtab replaced by one long run ending in a
 * single NUL, and a symbol table of `symbols` entries (the module's own, then copies of its
 * last one) all named inside the run. Decoding every name costs about symbols × runBytes.
 */
export function craftLongNames(base: Uint8Array, opts: LongNamesOptions): Uint8Array {
  const elf = parseElf(base);
  const symtab = elf.sections[elf.symtabIndex];
  const strtabIndex = symtab.link;
  const run = longRun(opts.runBytes);
  const stride = opts.stride ?? 1;
  const syms = new Uint8Array(opts.symbols * SYM_BYTES);
  const own = base.subarray(symtab.offset, symtab.offset + symtab.sizeBytes);
  for (let i = 0; i < opts.symbols; i++) {
    const src = Math.min(i, own.length / SYM_BYTES - 1);
    syms.set(own.subarray(src * SYM_BYTES, (src + 1) * SYM_BYTES), i * SYM_BYTES);
    const nameOff = opts.tailChars
      ? opts.runBytes - 2 - ((i * stride) % opts.tailChars)
      : 1 + ((i * stride) % (opts.runBytes - 2));
    if (i > 0) setU32(syms, i * SYM_BYTES, nameOff);
  }
  const runAt = pad8(base).length;
  const withRun = concat(pad8(base), run);
  const symsAt = pad8(withRun).length;
  const body = concat(pad8(withRun), syms);
  return rewriteSectionHeaders(body, (h) => {
    shdrSet(h[strtabIndex], 'offset', runAt);
    shdrSet(h[strtabIndex], 'size', run.length);
    shdrSet(h[elf.symtabIndex], 'offset', symsAt);
    shdrSet(h[elf.symtabIndex], 'size', syms.length);
    return h;
  });
}

/**
 * The same game on section names: the section name table replaced by one long run and
 * `extraSections` more (empty, SHT_PROGBITS, non-allocated) sections, every name inside the run.
 */
export function craftLongSectionNames(base: Uint8Array, runBytes: number, extraSections: number): Uint8Array {
  const shstrndx = view(base).getUint16(62, true);
  const runAt = pad8(base).length;
  const body = concat(pad8(base), longRun(runBytes));
  return rewriteSectionHeaders(body, (h) => {
    shdrSet(h[shstrndx], 'offset', runAt);
    shdrSet(h[shstrndx], 'size', runBytes);
    const extra: Uint8Array[] = [];
    for (let i = 0; i < extraSections; i++) {
      const e = new Uint8Array(SHDR_BYTES);
      setU32(e, 4, 1); // SHT_PROGBITS, no flags, empty
      extra.push(e);
    }
    const all = [...h, ...extra];
    all.forEach((x, i) => {
      if (i > 0) shdrSet(x, 'name', 1 + (i % (runBytes - 2)));
    });
    return all.slice(0, 65279);
  });
}

/** Append a module-signature trailer (elf.ts stripModuleSignature) with the given fields. */
function withSignature(base: Uint8Array, sigLen: number, idType: number, blobBytes: number): Uint8Array {
  const info = new Uint8Array(12);
  info[2] = idType;
  view(info).setUint32(8, sigLen >>> 0, false);
  return concat(
    base,
    new Uint8Array(blobBytes).fill(0x30),
    info,
    new TextEncoder().encode('~Module signature appended~\n'),
  );
}

/** Where the interesting bytes of an unmutated file are. */
export interface ElfShape {
  readonly fileBytes: number;
  readonly shoff: number;
  readonly sections: readonly { index: number; type: number; offset: number; sizeBytes: number }[];
  readonly symtab: { offset: number; count: number; strtabIndex: number } | null;
  readonly relas: readonly { index: number; offset: number; count: number }[];
  readonly strtabs: readonly number[];
}

export function shapeOf(elf: ElfFile): ElfShape {
  const symtab = elf.symtabIndex ? elf.sections[elf.symtabIndex] : null;
  return {
    fileBytes: elf.bytes.length,
    shoff: Number(elf.view.getBigUint64(40, true)),
    sections: elf.sections.map((s) => ({
      index: s.index,
      type: s.type,
      offset: s.offset,
      sizeBytes: s.sizeBytes,
    })),
    symtab: symtab
      ? { offset: symtab.offset, count: symtab.sizeBytes / SYM_BYTES, strtabIndex: symtab.link }
      : null,
    relas: elf.sections
      .filter((s) => s.type === SHT_RELA)
      .map((s) => ({ index: s.index, offset: s.offset, count: s.sizeBytes / RELA_BYTES })),
    strtabs: elf.sections.filter((s) => s.type === SHT_STRTAB).map((s) => s.index),
  };
}

/** Edge values for a field of a file of `fileBytes` bytes. */
function edgeValue(rng: Rng, fileBytes: number, other: number): number {
  return rng.pick([
    0,
    1,
    2,
    7,
    0xff,
    0xffff,
    0xfff1,
    0x7fffffff,
    0x80000000,
    0xffffffff,
    2 ** 32,
    2 ** 40,
    2 ** 53 - 1,
    -1,
    fileBytes,
    fileBytes - 1,
    fileBytes + 1,
    other,
    other + rng.int(-8, 8),
    rng.nextU32(),
    rng.int(0, 4096),
  ]);
}

const SHDR_FIELDS: readonly [string, number, 2 | 4 | 8][] = [
  ['sh_name', 0, 4],
  ['sh_type', 4, 4],
  ['sh_flags', 8, 8],
  ['sh_offset', 24, 8],
  ['sh_size', 32, 8],
  ['sh_link', 40, 4],
  ['sh_info', 44, 4],
  ['sh_addralign', 48, 8],
  ['sh_entsize', 56, 8],
];

function setField(b: Uint8Array, at: number, width: 2 | 4 | 8, v: number): void {
  if (width === 2) setU16(b, at, v);
  else if (width === 4) setU32(b, at, v);
  else setU64(b, at, v);
}

/** One mutation: a new file (or the same array changed in place) and what was done. */
type Mutator = (b: Uint8Array, s: ElfShape, rng: Rng) => [Uint8Array, string];

const MUTATORS: readonly [number, string, Mutator][] = [
  [
    3,
    'truncate',
    (b, s, rng) => {
      const sec = rng.pick(s.sections);
      const at = rng.next() < 0.5 ? rng.int(0, b.length) : Math.max(0, sec.offset + rng.int(-2, 2));
      return [b.slice(0, Math.min(at, b.length)), `truncate at ${at}`];
    },
  ],
  [
    2,
    'header',
    (b, s, rng) => {
      const [name, at, w] = rng.pick<[string, number, 2 | 4 | 8]>([
        ['e_ident', rng.int(0, 15), 2],
        ['e_type', 16, 2],
        ['e_machine', 18, 2],
        ['e_shoff', 40, 8],
        ['e_shentsize', 58, 2],
        ['e_shnum', 60, 2],
        ['e_shstrndx', 62, 2],
      ]);
      const v = edgeValue(rng, b.length, s.sections.length);
      setField(b, at, w, v);
      return [b, `${name} = ${v}`];
    },
  ],
  [
    5,
    'section header',
    (b, s, rng) => {
      const sec = rng.pick(s.sections);
      const [name, at, w] = rng.pick(SHDR_FIELDS);
      const other = rng.pick(s.sections);
      const v = edgeValue(rng, b.length, name === 'sh_offset' ? other.offset : other.sizeBytes);
      setField(b, s.shoff + sec.index * SHDR_BYTES + at, w, v);
      return [b, `section ${sec.index} ${name} = ${v}`];
    },
  ],
  [
    4,
    'symbol',
    (b, s, rng) => {
      if (!s.symtab || s.symtab.count < 2) return [b, 'no symbols'];
      const i = rng.int(1, s.symtab.count - 1);
      const base = s.symtab.offset + i * SYM_BYTES;
      const field = rng.int(0, 4);
      if (field === 0) setU32(b, base, edgeValue(rng, b.length, 0));
      else if (field === 1) b[base + 4] = rng.int(0, 255);
      else if (field === 2)
        setU16(
          b,
          base + 6,
          rng.pick([
            0,
            SHN_ABS,
            SHN_COMMON,
            SHN_LIVEPATCH,
            SHN_XINDEX,
            0xff00,
            s.sections.length,
            rng.int(0, 0xffff),
          ]),
        );
      else if (field === 3) setU64(b, base + 8, edgeValue(rng, b.length, 0));
      else setU64(b, base + 16, edgeValue(rng, b.length, 0));
      return [b, `symbol ${i} field ${['st_name', 'st_info', 'st_shndx', 'st_value', 'st_size'][field]}`];
    },
  ],
  [
    4,
    'relocation',
    (b, s, rng) => {
      if (s.relas.length === 0) return [b, 'no relocations'];
      const r = rng.pick(s.relas);
      if (r.count === 0) return [b, 'empty relocation section'];
      const i = rng.int(0, r.count - 1);
      const base = r.offset + i * RELA_BYTES;
      const field = rng.int(0, 3);
      if (field === 0) setU64(b, base, edgeValue(rng, b.length, 0));
      else if (field === 1)
        setU32(b, base + 8, rng.pick([0, 1, 2, 3, 4, 9, 10, 11, 24, 37, 42, rng.nextU32()]));
      else if (field === 2) setU32(b, base + 12, edgeValue(rng, b.length, s.symtab?.count ?? 0));
      else setU64(b, base + 16, edgeValue(rng, b.length, 0));
      return [b, `section ${r.index} rela ${i} field ${['r_offset', 'type', 'symbol', 'r_addend'][field]}`];
    },
  ],
  [
    1,
    'strtab without NUL',
    (b, s, rng) => {
      const sec = s.sections[rng.pick(s.strtabs)];
      if (!sec) return [b, 'no string table'];
      b.fill(0x41, sec.offset, Math.min(b.length, sec.offset + sec.sizeBytes));
      return [b, `section ${sec.index} filled without NUL`];
    },
  ],
  [
    1,
    'long names',
    (b, s, rng) => {
      if (!s.symtab) return [b, 'no symbols'];
      const runBytes = rng.pick([600, 4096, 65536, 1 << 20]);
      const symbols = rng.pick([s.symtab.count, 2000, 20000]);
      const out = craftLongNames(b, { runBytes, symbols, stride: rng.pick([1, 7, 511, 4093]) });
      return [out, `.strtab = one ${runBytes}-byte run, ${symbols} symbols named inside`];
    },
  ],
  [
    1,
    'long section names',
    (b, _s, rng) => {
      const runBytes = rng.pick([4096, 65536, 1 << 20]);
      const extra = rng.pick([0, 100, 5000, 60000]);
      return [
        craftLongSectionNames(b, runBytes, extra),
        `section names in one ${runBytes}-byte run, +${extra} sections`,
      ];
    },
  ],
  [
    2,
    'names outside',
    (b, s, rng) => {
      const sec = rng.pick(s.sections);
      const v = rng.pick([0xffffffff, 0x7fffffff, b.length, sec.sizeBytes, sec.sizeBytes + 1]);
      if (rng.next() < 0.5 || !s.symtab) {
        setU32(b, s.shoff + sec.index * SHDR_BYTES, v);
        return [b, `section ${sec.index} sh_name = ${v}`];
      }
      const i = rng.int(1, Math.max(1, s.symtab.count - 1));
      setU32(b, s.symtab.offset + i * SYM_BYTES, v);
      return [b, `symbol ${i} st_name = ${v}`];
    },
  ],
  [
    2,
    'huge counts and sizes',
    (b, s, rng) => {
      const kind = rng.int(0, 3);
      if (kind === 0) {
        const nobits = s.sections.find((x) => x.type === SHT_NOBITS) ?? rng.pick(s.sections);
        const v = rng.pick([2 ** 24, 2 ** 31, 2 ** 40, 2 ** 53 - 1]);
        setU64(b, s.shoff + nobits.index * SHDR_BYTES + 32, v);
        return [b, `section ${nobits.index} sh_size = ${v}`];
      }
      if (kind === 1) {
        setU16(b, 60, rng.pick([0xff00, 0xffff, s.sections.length * 100]));
        return [b, 'e_shnum huge'];
      }
      if (kind === 2 && s.relas.length > 0) {
        const r = rng.pick(s.relas);
        const copies = rng.pick([10, 1000, 30000]);
        const out = rewriteSectionHeaders(b, (h) => {
          const extra = Array.from({ length: copies }, () => h[r.index].slice());
          return [...h, ...extra].slice(0, 65279);
        });
        return [out, `section ${r.index} (RELA) repeated ${copies} times`];
      }
      if (s.symtab) {
        const symIdx = s.sections.findIndex((x) => x.offset === s.symtab?.offset);
        setU64(
          b,
          s.shoff + symIdx * SHDR_BYTES + 32,
          rng.pick([b.length * 24, 2 ** 40, b.length - s.symtab.offset + 24]),
        );
        return [b, 'symtab sh_size huge'];
      }
      return [b, 'nothing huge to do'];
    },
  ],
  [
    2,
    'overlap',
    (b, s, rng) => {
      const a = rng.pick(s.sections);
      const c = rng.pick(s.sections);
      setU64(b, s.shoff + a.index * SHDR_BYTES + 24, c.offset + rng.pick([0, 0, 1, 8]));
      if (rng.next() < 0.5) setU64(b, s.shoff + a.index * SHDR_BYTES + 32, c.sizeBytes);
      return [b, `section ${a.index} placed over section ${c.index}`];
    },
  ],
  [
    3,
    'bytes',
    (b, s, rng) => {
      const hot = rng.pick([
        [0, 64],
        [s.shoff, s.shoff + s.sections.length * SHDR_BYTES],
        ...s.sections.map((x) => [x.offset, x.offset + Math.min(x.sizeBytes, 4096)]),
      ]);
      const at = rng.int(hot[0], Math.max(hot[0], hot[1] - 1));
      if (rng.next() < 0.5) {
        if (at < b.length) b[at] = rng.int(0, 255);
      } else setU32(b, at, edgeValue(rng, b.length, 0));
      return [b, `bytes at ${at}`];
    },
  ],
  [
    1,
    'signature',
    (b, _s, rng) => {
      const sigLen = rng.pick([0, 16, b.length, 0xffffffff]);
      const idType = rng.pick([2, 2, 0, 1]);
      return [
        withSignature(b, sigLen, idType, rng.pick([0, 16])),
        `signature trailer sig_len ${sigLen} id_type ${idType}`,
      ];
    },
  ],
];

const TOTAL_WEIGHT = MUTATORS.reduce((n, m) => n + m[0], 0);

/** Apply 1-3 mutations to a copy of `bytes`; returns the mutated file and what was done. */
export function mutateElf(
  bytes: Uint8Array,
  shape: ElfShape,
  rng: Rng,
): { bytes: Uint8Array; done: string[] } {
  let b: Uint8Array = bytes.slice();
  const done: string[] = [];
  const n = rng.int(1, 3);
  for (let k = 0; k < n; k++) {
    let pick = rng.int(0, TOTAL_WEIGHT - 1);
    let m = MUTATORS[0];
    for (const candidate of MUTATORS) {
      if (pick < candidate[0]) {
        m = candidate;
        break;
      }
      pick -= candidate[0];
    }
    let out: Uint8Array = b;
    let what: string;
    try {
      [out, what] = m[2](b, shape, rng);
    } catch (e) {
      // A growing mutation re-parses the file; an earlier mutation may have broken it.
      what = `skipped (${e instanceof Error ? e.message : String(e)})`;
    }
    b = out;
    done.push(`${m[1]}: ${what}`);
  }
  return { bytes: b, done };
}
