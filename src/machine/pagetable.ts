/**
 * A 4-level page table (PGD -> PUD -> PMD -> PTE), as x86-64 and arm64 (4 KiB granule, 48-bit VA)
 * both have, with leaves at level 3 (1 GiB), 2 (2 MiB) and 1 (4 KiB).
 *
 * Why a real radix tree and not a map of pages: the costs the execmem thread measured are
 * page-table costs. A 2 MiB mapping is one PMD entry and needs no PTE page; splitting it allocates
 * a PTE page (a frame) and produces 512 entries; a collapse frees that page again
 * (arch/x86/mm/pat/set_memory.c split_large_page / collapse_pmd_page). So each table here takes
 * an order-0 frame from PhysMem and is counted, and a mapping that needs a table frame it cannot
 * get fails with ENOMEM and leaves nothing behind.
 *
 * Each table is 512 slots holding a child table, a leaf (an immutable `Translation`, replaced on
 * every change, so TLBs can cache the very object and staleness is object identity) or nothing.
 * Tables that become empty are freed (Linux keeps empty kernel page-table pages after vunmap and
 * reuses them; we free them so that "a failed call leaves no trace" can be compared exactly; the
 * difference is a few frames). Tables created by `preallocate` (poking_init, fixmap) are pinned.
 *
 * A leaf may be not present (PRESENT cleared, frame kept: x86 set_direct_map_invalid_noflush);
 * `walk` (the hardware view) finds no translation there, `lookup` (CPA's view) finds the leaf.
 *
 * Every leaf change is reported to listeners (W^X audit, direct-map statistics, TLB staleness),
 * so nothing above can change a mapping without them knowing. A split or collapse is 513 changes;
 * listeners that can take it as one event (LeafBulkListener) get one call instead, which is what
 * keeps execmem-rox's split-and-collapse per BPF program cheap. For the same reason, when every
 * listener takes splits in bulk, a split table's 512 leaves are made only when something reads one
 * (`Table.lazy`): most are never looked at before the table collapses again, and a collapse of
 * untouched pieces needs no objects to check.
 */
import { alignDown } from '../base/addr.js';
import { assert } from '../base/assert.js';
import { MachineError } from './errors.js';
import type { PhysMem } from './phys.js';
import type { LeafChange, LeafLevel, LeafListener, MachineCounters, Translation } from './types.js';
import { LEVEL_BYTES, PTE_PRESENT } from './types.js';

const ENTRIES = 512;
/** Bytes one slot of a table at level L covers (4 = PGD ... 1 = PTE table). */
const SPAN: readonly number[] = [0, 2 ** 12, 2 ** 21, 2 ** 30, 2 ** 39];
const VA_END = 2 ** 48;
/** Leaf flags the page table knows about (present/RW/NX/global). */
const FLAG_MASK = 15;

type Slots = (Table | Translation | undefined)[];

/**
 * A listener that takes a split or a collapse as one event instead of 513 leaf changes (the W^X
 * audit, the DirectMap statistics and the fetch micro-cache do; a plain LeafListener still hears
 * every change). Both calls come at the point where the first change of the per-leaf sequence
 * would be reported, so the page table looks the same to the listener as it would then.
 */
export interface LeafBulkListener extends LeafListener {
  /**
   * `old` (a 2 MiB or 1 GiB leaf) is being replaced by 512 leaves one level down with its flags,
   * covering its frames in order. Called before the new leaves are in place (walks find nothing).
   */
  onSplit(old: Translation): void;
  /**
   * 512 leaves one level down with `big`'s flags, covering its frames in order, were replaced by
   * `big` (already in place).
   */
  onCollapse(big: Translation): void;
}

function isBulk(l: LeafListener): l is LeafBulkListener {
  const b = l as Partial<LeafBulkListener>;
  return typeof b.onSplit === 'function' && typeof b.onCollapse === 'function';
}

/** Emptied slot arrays kept for reuse: tables come and go with every 4 KiB vmalloc/vfree. */
const SLOT_POOL_MAX = 64;

class Table {
  used = 0;
  /**
   * Set on a table made by a split while its pieces are implicit: an empty slot i stands for the
   * piece i of this leaf (same flags, frames in order), made on first read. Every slot is then
   * occupied (used === ENTRIES); unmapping any piece makes them all first.
   */
  lazy: Translation | null = null;
  constructor(
    readonly pfn: number,
    readonly level: number,
    readonly pinned: boolean,
    readonly slots: Slots,
  ) {}
}

/** Tables created by one tableFor call, so a failure can remove them again. */
interface Made {
  tables: Table[];
  parent: Table | null;
  index: number;
}

function indexAt(va: number, level: number): number {
  return (va / SPAN[level]) & 511;
}

export class PageTable {
  private readonly root: Table;
  private readonly listeners: LeafListener[] = [];
  /** Per listener: whether it takes splits and collapses in bulk. */
  private readonly bulk: boolean[] = [];
  /** Listeners that need every leaf change of a split or collapse. */
  private plainCount = 0;
  private tables = 0;
  private readonly slotPool: Slots[] = [];

  constructor(
    private readonly phys: PhysMem,
    private readonly counters: MachineCounters,
    readonly name: string,
  ) {
    this.root = new Table(this.allocTableFrame(), 4, true, this.newSlots());
  }

  /** The leaf translating `va`, or null (also for a not-present leaf: hardware finds no translation). */
  walk(va: number): Translation | null {
    const leaf = this.lookup(va);
    return leaf !== null && leaf.flags & PTE_PRESENT ? leaf : null;
  }

  /**
   * The leaf covering `va`, present or not (a not-present leaf is a PTE with its frame kept and
   * PRESENT cleared, as x86 __set_pages_np() leaves it), or null. Pure lookup, counts nothing.
   */
  lookup(va: number): Translation | null {
    let table = this.root;
    for (let level = 4; level >= 1; level--) {
      const slot = this.slotAt(table, indexAt(va, level));
      if (slot === undefined) return null;
      if (!(slot instanceof Table)) return slot;
      table = slot;
    }
    return null;
  }

  /** Install a leaf where nothing is mapped. Throws EBUSY if anything overlaps, ENOMEM if a table frame is missing. */
  mapLeaf(va: number, level: LeafLevel, pfn: number, flags: number): void {
    this.checkLeaf(va, level, pfn, flags);
    const made: Made = { tables: [], parent: null, index: 0 };
    let table: Table;
    try {
      table = this.tableFor(va, level, made, false);
    } catch (e) {
      this.dropTables(made);
      throw e;
    }
    const i = indexAt(va, level);
    if (table.slots[i] !== undefined || table.lazy !== null) {
      this.dropTables(made);
      throw new MachineError(
        'EBUSY',
        `${this.name}: 0x${va.toString(16)} already mapped at or below level ${level}`,
      );
    }
    const leaf: Translation = { va, level, pfn, flags };
    table.slots[i] = leaf;
    table.used++;
    this.emit({ va, level, old: null, next: leaf });
  }

  /** Remove a leaf of exactly this level; returns it. Frees tables left empty. */
  unmapLeaf(va: number, level: LeafLevel): Translation {
    const { table, leaf } = this.findLeaf(va, level);
    if (table.lazy !== null) this.makePieces(table);
    table.slots[indexAt(va, level)] = undefined;
    table.used--;
    this.emit({ va, level, old: leaf, next: null });
    this.pruneUp(va, level);
    return leaf;
  }

  /** New flags for a leaf; PRESENT may be cleared (set_direct_map_invalid_noflush), the frame stays. */
  setLeafFlags(va: number, level: LeafLevel, flags: number): void {
    this.checkFlags(flags, true);
    const { table, leaf } = this.findLeaf(va, level);
    if (leaf.flags === flags) return;
    const next: Translation = { va, level, pfn: leaf.pfn, flags };
    table.slots[indexAt(va, level)] = next;
    this.emit({ va, level, old: leaf, next });
  }

  /**
   * CPA's inner loop over 4 KiB leaves: from the 4 KiB leaf at `va`, give each 4 KiB leaf of the
   * same PTE table below `endVa` the flags `flagsOf(old flags)`, exactly as setLeafFlags would
   * one by one (same events, in address order), and report each change to `changed`. Stops at the
   * table's end, at `endVa` or at a slot without a 4 KiB leaf; returns the address it stopped at.
   * Why: one walk per PTE table instead of one per page (set_memory on 4 KiB-mapped ranges).
   */
  setFlagsRun(
    va: number,
    endVa: number,
    flagsOf: (flags: number) => number,
    changed: (va: number, oldFlags: number) => void,
  ): number {
    const table = this.tableAt(va, 1);
    if (table === null || table.level !== 1) return va;
    const slots = table.slots;
    let a = va;
    for (let i = indexAt(va, 1); i < ENTRIES && a < endVa; i++, a += 4096) {
      const old = this.slotAt(table, i);
      if (old === undefined || old instanceof Table) break;
      const flags = flagsOf(old.flags);
      if (flags === old.flags) continue;
      this.checkFlags(flags, true);
      const next: Translation = { va: a, level: 1, pfn: old.pfn, flags };
      slots[i] = next;
      this.emit({ va: a, level: 1, old, next });
      changed(a, old.flags);
    }
    return a;
  }

  /**
   * Replace one large leaf by 512 leaves one level down with the same flags. Needs one table frame:
   * a new one, or `tablePfn`, a frame the caller already owns (set aside at boot; not counted in
   * ptFramesAllocated again).
   */
  split(va: number, level: 2 | 3, tablePfn?: number): void {
    if (level !== 2 && level !== 3)
      throw new MachineError('EINVAL', `${this.name}: only level 2/3 leaves split`);
    const { table, leaf } = this.findLeaf(va, level);
    const sub = (level - 1) as LeafLevel;
    let pfn: number;
    if (tablePfn === undefined) {
      pfn = this.allocTableFrame();
    } else {
      pfn = tablePfn;
      this.tables++;
    }
    const child = new Table(pfn, sub, false, this.newSlots());
    table.slots[indexAt(va, level)] = child;
    const ls = this.listeners;
    for (let k = 0; k < ls.length; k++) {
      if (this.bulk[k]) (ls[k] as LeafBulkListener).onSplit(leaf);
      else ls[k].onLeafChange({ va, level, old: leaf, next: null });
    }
    child.used = ENTRIES;
    child.lazy = leaf;
    if (this.plainCount === 0) return; // no listener needs the pieces now (see Table.lazy)
    this.makePieces(child);
    for (let i = 0; i < ENTRIES; i++) {
      const small = child.slots[i] as Translation;
      this.emitPlain({ va: small.va, level: sub, old: null, next: small });
    }
  }

  /**
   * If the table below the level-`level` slot of `va` holds 512 present leaves with equal flags
   * and contiguous frames starting at a frame aligned to the large size, replace it by one leaf
   * (collapse_pmd_page / collapse_pud_page) and free the table frame. Returns whether it did.
   */
  tryCollapse(va: number, level: 2 | 3): boolean {
    if (level !== 2 && level !== 3)
      throw new MachineError('EINVAL', `${this.name}: only level 2/3 leaves collapse`);
    const base = alignDown(va, LEVEL_BYTES[level]);
    const table = this.tableAt(base, level);
    if (table === null) return false;
    const slot = indexAt(base, level);
    const child = table.slots[slot];
    if (!(child instanceof Table) || child.used !== ENTRIES) return false;
    const lazy = child.lazy;
    const first = child.slots[0] ?? lazy;
    if (first === undefined || first === null || first instanceof Table) return false;
    const frames = LEVEL_BYTES[level] / 4096;
    const subFrames = LEVEL_BYTES[(level - 1) as LeafLevel] / 4096;
    if (first.pfn % frames !== 0) return false;
    // An implicit piece i has the split leaf's flags and frame lazy.pfn + i * subFrames, and first
    // (piece 0, made or not) has frame lazy.pfn: only the flags can differ.
    const implicitFit = lazy !== null && lazy.flags === first.flags;
    for (let i = 1; i < ENTRIES; i++) {
      const s = child.slots[i];
      if (s === undefined) {
        if (!implicitFit) return false;
      } else if (s instanceof Table || s.flags !== first.flags || s.pfn !== first.pfn + i * subFrames) {
        return false;
      }
    }
    const big: Translation = { va: base, level, pfn: first.pfn, flags: first.flags };
    table.slots[slot] = big;
    const ls = this.listeners;
    for (let k = 0; k < ls.length; k++) if (this.bulk[k]) (ls[k] as LeafBulkListener).onCollapse(big);
    if (this.plainCount > 0) {
      for (let i = 0; i < ENTRIES; i++) {
        const s = this.slotAt(child, i) as Translation;
        this.emitPlain({ va: s.va, level: s.level, old: s, next: null });
      }
      this.emitPlain({ va: base, level, old: null, next: big });
    }
    this.freeTableFrame(child);
    return true;
  }

  /** Visit every leaf overlapping [startVa, endVa) in address order. */
  forEachLeaf(startVa: number, endVa: number, fn: (t: Translation) => void): void {
    if (endVa <= startVa) return;
    this.visit(this.root, 0, startVa, endVa, fn);
  }

  addListener(l: LeafListener): void {
    const bulk = isBulk(l);
    this.listeners.push(l);
    this.bulk.push(bulk);
    if (!bulk) this.plainCount++;
  }

  tableFrameCount(): number {
    return this.tables;
  }

  /** Create (and pin) the tables down to the table holding leaves of `level` for `va` (poking_init, fixmap). */
  preallocate(va: number, level: LeafLevel): void {
    const made: Made = { tables: [], parent: null, index: 0 };
    try {
      this.tableFor(va, level, made, true);
    } catch (e) {
      this.dropTables(made);
      throw e;
    }
  }

  /**
   * Free every table, the root included, of a table that maps nothing (a private mm given up, e.g.
   * a write session mm whose preparation failed half way). The table is unusable afterwards.
   */
  destroy(): void {
    const visit = (t: Table): void => {
      if (t.lazy !== null) assert(false, `${this.name}: destroy with a leaf mapped`);
      for (const s of t.slots) {
        if (!(s === undefined || s instanceof Table))
          assert(false, `${this.name}: destroy with a leaf mapped`);
        if (s instanceof Table) visit(s);
      }
      this.freeTableFrame(t);
    };
    visit(this.root);
  }

  /** Frames of every table, for the no-double-ownership check in tests. */
  tableFrames(): number[] {
    const out: number[] = [];
    const visit = (t: Table): void => {
      out.push(t.pfn);
      for (const s of t.slots) if (s instanceof Table) visit(s);
    };
    visit(this.root);
    return out;
  }

  private visit(
    table: Table,
    base: number,
    startVa: number,
    endVa: number,
    fn: (t: Translation) => void,
  ): void {
    const span = SPAN[table.level];
    const first = Math.max(0, Math.floor((startVa - base) / span));
    const last = Math.min(ENTRIES - 1, Math.floor((endVa - 1 - base) / span));
    for (let i = first; i <= last; i++) {
      const s = this.slotAt(table, i);
      if (s === undefined) continue;
      if (s instanceof Table) this.visit(s, base + i * span, startVa, endVa, fn);
      else fn(s);
    }
  }

  /** The table of `level` (4 = root, 1 = PTE table) covering va, or null. */
  private tableAt(va: number, level: number): Table | null {
    let table = this.root;
    for (let l = 4; l > level; l--) {
      const s = table.slots[indexAt(va, l)];
      if (!(s instanceof Table)) return null;
      table = s;
    }
    return table;
  }

  /** Walk to (creating as needed) the table whose slots hold leaves of `level`. */
  private tableFor(va: number, level: LeafLevel, made: Made, pin: boolean): Table {
    let table = this.root;
    for (let l = 4; l > level; l--) {
      const i = indexAt(va, l);
      const s = this.slotAt(table, i);
      if (s === undefined) {
        const child = new Table(this.allocTableFrame(), l - 1, pin, this.newSlots());
        if (made.parent === null) {
          made.parent = table;
          made.index = i;
        }
        made.tables.push(child);
        table.slots[i] = child;
        table.used++;
        table = child;
      } else if (s instanceof Table) {
        table = s;
      } else {
        throw new MachineError(
          'EBUSY',
          `${this.name}: 0x${va.toString(16)} lies under a level-${s.level} leaf`,
        );
      }
    }
    return table;
  }

  private findLeaf(va: number, level: LeafLevel): { table: Table; leaf: Translation } {
    if (
      !Number.isInteger(va) ||
      va < 0 ||
      va >= VA_END ||
      LEVEL_BYTES[level] === undefined ||
      alignDown(va, LEVEL_BYTES[level]) !== va
    ) {
      throw new MachineError(
        'EINVAL',
        `${this.name}: 0x${va.toString(16)} is not a level-${level} aligned address`,
      );
    }
    const table = this.tableAt(va, level);
    const s = table === null ? undefined : this.slotAt(table, indexAt(va, level));
    if (table === null || s === undefined || s instanceof Table) {
      throw new MachineError('ENOENT', `${this.name}: no level-${level} leaf at 0x${va.toString(16)}`);
    }
    return { table, leaf: s };
  }

  /** Free tables left empty, from the table of `level` upwards (root and pinned tables stay). */
  private pruneUp(va: number, level: number): void {
    for (let l = level; l < 4; l++) {
      const t = this.tableAt(va, l);
      if (t === null || t.used > 0 || t.pinned) return;
      const parent = this.tableAt(va, l + 1) as Table;
      parent.slots[indexAt(va, l + 1)] = undefined;
      parent.used--;
      this.freeTableFrame(t);
    }
  }

  /** Undo the tables a failed mapLeaf created: detach the topmost, free all. */
  private dropTables(made: Made): void {
    if (made.parent === null) return;
    made.parent.slots[made.index] = undefined;
    made.parent.used--;
    for (let k = made.tables.length - 1; k >= 0; k--) this.freeTableFrame(made.tables[k]);
  }

  /** Slot i as a read sees it: a lazy table's implicit piece is made here (see Table.lazy). */
  private slotAt(table: Table, i: number): Table | Translation | undefined {
    const s = table.slots[i];
    return s !== undefined || table.lazy === null ? s : this.piece(table, i);
  }

  /** Piece i of a lazy table's split leaf, made now and kept in its slot (see Table.lazy). */
  private piece(table: Table, i: number): Translation {
    const big = table.lazy as Translation;
    const size = SPAN[table.level];
    const leaf: Translation = {
      va: big.va + i * size,
      level: table.level as LeafLevel,
      pfn: big.pfn + i * (size / 4096),
      flags: big.flags,
    };
    table.slots[i] = leaf;
    return leaf;
  }

  /** Makes every implicit piece of a lazy table; it is an ordinary table afterwards. */
  private makePieces(table: Table): void {
    for (let i = 0; i < ENTRIES; i++) if (table.slots[i] === undefined) this.piece(table, i);
    table.lazy = null;
  }

  private allocTableFrame(): number {
    const pfn = this.phys.allocPages(0);
    this.counters.ptFramesAllocated++;
    this.tables++;
    return pfn;
  }

  private newSlots(): Slots {
    const slots = this.slotPool.pop();
    if (slots === undefined) return new Array(ENTRIES).fill(undefined);
    assert(slots[0] === undefined && slots[ENTRIES - 1] === undefined, 'pooled table slots not empty');
    return slots;
  }

  private freeTableFrame(t: Table): void {
    if (this.slotPool.length < SLOT_POOL_MAX) {
      // `used` counts the occupied slots, so a table pruned for being empty needs no clearing
      // (most frees: a 4 KiB vfree empties its PTE table); collapsed or dropped ones do.
      if (t.used !== 0) t.slots.fill(undefined);
      this.slotPool.push(t.slots);
    }
    t.lazy = null;
    this.phys.freePages(t.pfn, 0);
    this.counters.ptFramesFreed++;
    this.tables--;
  }

  private emit(change: LeafChange): void {
    for (const l of this.listeners) l.onLeafChange(change);
  }

  /** A change of a split or collapse, for the listeners that do not take them in bulk. */
  private emitPlain(change: LeafChange): void {
    const ls = this.listeners;
    for (let k = 0; k < ls.length; k++) if (!this.bulk[k]) ls[k].onLeafChange(change);
  }

  private checkLeaf(va: number, level: LeafLevel, pfn: number, flags: number): void {
    const bytes = LEVEL_BYTES[level];
    if (bytes === undefined) throw new MachineError('EINVAL', `${this.name}: bad leaf level ${level}`);
    if (!Number.isInteger(va) || va < 0 || va + bytes > VA_END || alignDown(va, bytes) !== va) {
      throw new MachineError(
        'EINVAL',
        `${this.name}: 0x${va.toString(16)} not aligned to the level-${level} size`,
      );
    }
    const frames = bytes / 4096;
    if (!Number.isInteger(pfn) || pfn < 0 || pfn + frames > this.phys.totalFrames || pfn % frames !== 0) {
      throw new MachineError(
        'EINVAL',
        `${this.name}: pfn ${pfn} out of range or misaligned for level ${level}`,
      );
    }
    this.checkFlags(flags);
  }

  private checkFlags(flags: number, mayBeNotPresent = false): void {
    // A not-present leaf keeps other bits (x86 __set_pages_np clears only PRESENT and RW); an
    // all-zero entry is pte_none, which is unmapLeaf's business.
    if (
      !Number.isInteger(flags) ||
      (flags & ~FLAG_MASK) !== 0 ||
      flags === 0 ||
      (!mayBeNotPresent && !(flags & PTE_PRESENT))
    ) {
      throw new MachineError(
        'EINVAL',
        `${this.name}: leaf flags ${flags} must be present (or non-zero, where CPA may clear PRESENT) and only P/RW/NX/G`,
      );
    }
  }
}
