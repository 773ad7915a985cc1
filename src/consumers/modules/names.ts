/**
 * Bounded reading of NUL-terminated names from an ELF file, so that parsing a hostile module
 * costs time and memory in proportion to the file, never to (names × table size).
 *
 * Why: a string table is only required to end in a NUL. A crafted .ko whose .strtab is one 4 MB
 * run with a single NUL at its end, named into by 20,000 symbols at different offsets, makes a
 * reader that decodes each name up to its NUL read and keep about 75 GB (issue 16 item 3). Two
 * limits stop that, and both are counted as bytes *scanned* (not just kept), so no search can run
 * past them either:
 *
 * - per name: a symbol name (and an exported name, which is a symbol name) may hold at most
 *   KSYM_NAME_LEN - 1 = 511 characters. KSYM_NAME_LEN is 512 since Linux 6.1 (include/linux/
 *   kallsyms.h, "kallsyms: increase maximum kernel symbol length to 512"); the kernel's kallsyms
 *   and livepatch code keep symbol names in KSYM_NAME_LEN buffers (kallsyms_lookup(),
 *   klp_resolve_symbols()) and scripts/kallsyms.c refuses longer ones when the kernel is built.
 *   Linux 6.1's load_module() itself does not check the length (it strlen()s every core symbol
 *   name in layout_symtab()), so refusing a longer name here is a deliberate departure that only
 *   a crafted file can notice: the longest name in the 1,121 modules of Debian's 6.1 cloud
 *   kernel has 74 characters.
 * - per file: all names read from one file (section names, symbol names, export names and
 *   namespaces) may scan at most NAME_BYTES_PER_FILE_BYTE × the file's size + NAME_SLACK_BYTES.
 *   Distinct names live in distinct bytes of the file, so a well-formed file needs well under
 *   one byte of names per byte of file: the largest ratio over the Debian 6.1 modules is 0.175
 *   (virtio_pci_legacy_dev). Section names have no kernel limit of their own, so this budget is
 *   what bounds them (65,279 sections all named into one 4 MB run would otherwise scan 260 GB).
 *
 * Every refusal is an ElfError ESTRTAB naming what was read (which symbol or section, in which
 * section, at which offset) and which limit it hit.
 */
import { Buffer } from 'node:buffer';

/** include/linux/kallsyms.h (Linux 6.1 and later): a symbol name with its NUL fits in this. */
export const KSYM_NAME_LEN = 512;
/** Names may scan this many bytes per byte of file (measured need: at most 0.175, see above). */
export const NAME_BYTES_PER_FILE_BYTE = 1;
/** ...plus this much, so that tiny files (a hand-made test ELF) are not held to a few bytes. */
export const NAME_SLACK_BYTES = 64 << 10;

/**
 * Work counters a caller may pass in to see what parsing cost (tests and the fuzz target bound
 * them: work, not wall time). Counts accumulate over every file parsed with the same object.
 */
export interface ParseStats {
  /** Bytes scanned while looking for the NUL of a name, NULs included. */
  nameBytesScanned: number;
  /** Relocation entries decoded (checked before allocating, then applied). */
  relocEntries: number;
}

export function newParseStats(): ParseStats {
  return { nameBytesScanned: 0, relocEntries: 0 };
}

/** The error a limit raises; elf.ts wraps it in its own ElfError type (no import cycle). */
export type NameErrorFactory = (message: string) => Error;

export interface NameLimit {
  /** Largest number of characters (NUL excluded), and the name of the rule for the message. */
  readonly maxChars: number;
  readonly rule: string;
}

/** Symbol names, export names: KSYM_NAME_LEN - 1 characters. */
export const SYMBOL_NAME_LIMIT: NameLimit = {
  maxChars: KSYM_NAME_LEN - 1,
  rule: `KSYM_NAME_LEN - 1 = ${KSYM_NAME_LEN - 1} characters`,
};

/** Reads names against one file's budget. One instance per parsed file. */
export class NameReader {
  /** Bytes this file may still scan. */
  private remainingBytes: number;
  readonly budgetBytes: number;

  constructor(
    fileBytes: number,
    private readonly fail: NameErrorFactory,
    private readonly stats?: ParseStats,
  ) {
    this.budgetBytes = fileBytes * NAME_BYTES_PER_FILE_BYTE + NAME_SLACK_BYTES;
    this.remainingBytes = this.budgetBytes;
  }

  /** Bytes scanned so far for this file. */
  get scannedBytes(): number {
    return this.budgetBytes - this.remainingBytes;
  }

  /**
   * The NUL-terminated string at `buf[start]`, which must end before `buf[end]`. `what` names
   * the string and its table for messages ("symbol 5 name in section 29 (.strtab)").
   */
  read(buf: Uint8Array, start: number, end: number, what: string, limit?: NameLimit): string {
    const byLimit = limit ? start + limit.maxChars + 1 : Number.POSITIVE_INFINITY;
    const byBudget = start + this.remainingBytes;
    const stop = Math.min(end, byLimit, byBudget);
    const nulAt = stop > start ? buf.subarray(start, stop).indexOf(0) : -1;
    const scanned = nulAt >= 0 ? nulAt + 1 : Math.max(0, stop - start);
    this.remainingBytes -= scanned;
    if (this.stats) this.stats.nameBytesScanned += scanned;
    if (nulAt >= 0) return Buffer.from(buf.buffer, buf.byteOffset + start, nulAt).toString('latin1');
    if (stop === end && end <= byLimit && end <= byBudget)
      throw this.fail(`${what}: string at offset ${start} is not NUL-terminated inside its table`);
    if (limit && stop === byLimit)
      throw this.fail(`${what}: string at offset ${start} is longer than ${limit.rule}`);
    throw this.fail(
      `${what}: names in this file need more than the ${this.budgetBytes}-byte parse budget ` +
        `(${NAME_BYTES_PER_FILE_BYTE} byte per file byte + ${NAME_SLACK_BYTES}): string tables overlap or repeat`,
    );
  }
}
