/**
 * The compact derived table of a module dataset, and a size sampler built on it.
 *
 * Why: the full package is a 26 MB download and 106 MB extracted; the sizes the allocator sees
 * (bytes per memory type per module, as layout.ts computes them exactly like the kernel) fit in
 * a small JSON file that can be shipped (data/debian-modules.json) so the default
 * `debian-modules` workload is measured, not assumed, even without the download. The table also
 * records symbol and relocation counts and dependencies, so the shipped numbers can be checked
 * against the files by anyone who fetches them (`execmem dataset table` regenerates it;
 * scripts/gen-module-table.sh is the one-line recipe).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Rng } from '../../base/rng.js';
import {
  findSection,
  parseElf,
  RELA_BYTES,
  SHN_UNDEF,
  SHT_RELA,
  stripModuleSignature,
} from '../../consumers/modules/elf.js';
import { layoutModule, MOD_MEM_TYPES, type ModMemType } from '../../consumers/modules/layout.js';
import { frobArm64Sections } from '../../consumers/modules/plt-arm64.js';
import { anyRelocTypeName as relocTypeName } from '../../consumers/modules/reloc-arm64.js';
import type { ModuleSizes } from '../sizes.js';
import { type DatasetIndex, readModuleFile } from './dataset.js';
import {
  arrayOf,
  checkFile,
  DatasetError,
  fieldError,
  int,
  nullable,
  object,
  oneOf,
  readJson,
  recordOf,
  text,
  uniqueBy,
} from './validate.js';

export const MODULE_TABLE_VERSION = 1;
const EM_AARCH64 = 183;

export interface ModuleTableRow {
  readonly name: string;
  /** Bytes per memory type (text, data, rodata, ro_after_init, init_text, init_data, init_rodata). */
  readonly bytes: readonly number[];
  readonly percpuBytes: number;
  readonly symbols: number;
  readonly undefinedSymbols: number;
  readonly functions: number;
  readonly relocs: Readonly<Record<string, number>>;
  readonly depends: readonly string[];
}

export interface ModuleTable {
  readonly version: number;
  readonly kernelRelease: string;
  readonly packageName: string | null;
  readonly memTypes: readonly ModMemType[];
  readonly modules: readonly ModuleTableRow[];
}

function rowOf(name: string, bytes: Uint8Array, depends: readonly string[]): ModuleTableRow {
  const raw = stripModuleSignature(bytes).bytes;
  // Either architecture: an arm64 module's sizes include the PLT room module_frob_arch_sections()
  // reserves before layout (plt-arm64.ts), as Linux allocates them.
  const machine = raw.length >= 20 ? raw[18] | (raw[19] << 8) : undefined;
  const parsed = parseElf(raw, { machine });
  const elf = machine === EM_AARCH64 ? frobArm64Sections(parsed, name).elf : parsed;
  const layout = layoutModule(elf, name);
  const relocs: Record<string, number> = {};
  for (const s of elf.sections) {
    if (s.type !== SHT_RELA || s.info >= elf.sections.length || !layout.placement[s.info]) continue;
    for (let off = s.offset; off < s.offset + s.sizeBytes; off += RELA_BYTES) {
      const t = relocTypeName(elf.view.getUint32(off + 8, true));
      relocs[t] = (relocs[t] ?? 0) + 1;
    }
  }
  const pcpu = findSection(elf, '.data..percpu');
  return {
    name,
    bytes: MOD_MEM_TYPES.map((t) => layout.sizeBytes[t]),
    percpuBytes: pcpu?.sizeBytes ?? 0,
    symbols: elf.symbols.length,
    undefinedSymbols: elf.symbols.filter((s) => s.index > 0 && s.shndx === SHN_UNDEF && s.name !== '').length,
    functions: elf.symbols.filter((s) => s.type === 2 && s.sizeBytes > 0).length,
    relocs,
    depends,
  };
}

export function buildModuleTable(index: DatasetIndex): ModuleTable {
  const modules: ModuleTableRow[] = [];
  for (const m of index.modules) {
    modules.push(rowOf(m.name, readModuleFile(join(index.root, m.path)), m.depends));
  }
  return {
    version: MODULE_TABLE_VERSION,
    kernelRelease: index.kernelRelease,
    packageName: index.packageName,
    memTypes: MOD_MEM_TYPES,
    modules,
  };
}

export function writeModuleTable(path: string, table: ModuleTable): void {
  // One row per line: small diffs when the package changes.
  const head = JSON.stringify({ ...table, modules: [] }).slice(0, -3); // drop '[]}'
  const rows = table.modules.map((r) => JSON.stringify(r)).join(',\n');
  writeFileSync(path, `${head}[\n${rows}\n]}\n`);
}

/** A table file that is not a valid table (names the file and the field). */
export class ModuleTableError extends DatasetError {
  override name = 'ModuleTableError';
}

const count = int(0, Number.MAX_SAFE_INTEGER);
const tableRow = object<ModuleTableRow>({
  name: text(55, /^[^\s/\0]+$/, 'a module name'),
  bytes: arrayOf(count),
  percpuBytes: count,
  symbols: count,
  undefinedSymbols: count,
  functions: count,
  relocs: recordOf(count),
  depends: arrayOf(text(55, /^[^\s/\0]+$/, 'a module name')),
});
const tableHead = object<{ version: number }>({ version: int(0, 1_000_000) });
const tableFile = object<ModuleTable>({
  version: int(MODULE_TABLE_VERSION, MODULE_TABLE_VERSION),
  kernelRelease: text(256),
  packageName: nullable(text(256)),
  memTypes: arrayOf(oneOf(MOD_MEM_TYPES), MOD_MEM_TYPES.length),
  modules: arrayOf(tableRow, 1),
});

/** Read and check a table file (ModuleTableError naming the file and field when it is not one). */
export function readModuleTable(path: string): ModuleTable {
  const remedy = "regenerate it with 'execmem dataset table' (scripts/gen-module-table.sh)";
  const raw = readJson(path, remedy, ModuleTableError);
  const { version } = checkFile(path, remedy, () => tableHead(raw, ''), ModuleTableError);
  if (version !== MODULE_TABLE_VERSION)
    throw new ModuleTableError(
      `${path}: table version ${version}, want ${MODULE_TABLE_VERSION}`,
      path,
      'version',
    );
  return checkFile(
    path,
    remedy,
    () => {
      const t = tableFile(raw, '');
      if (t.memTypes.join() !== MOD_MEM_TYPES.join())
        throw fieldError('memTypes', `exactly ${MOD_MEM_TYPES.join(',')}`, t.memTypes);
      t.modules.forEach((r, i) => {
        if (r.bytes.length !== MOD_MEM_TYPES.length)
          throw fieldError(`modules[${i}].bytes`, `${MOD_MEM_TYPES.length} byte counts`, r.bytes);
      });
      uniqueBy(t.modules, (r) => r.name, 'modules');
      return t;
    },
    ModuleTableError,
  );
}

/** The row's sizes in the workloads' ModuleSizes shape. */
/**
 * Rows of the named modules plus their depends= closure, dependencies first (the order modprobe
 * loads them in), roots taken in name order. A root not in the table is a RangeError naming `what`.
 */
export function tableLoadOrder(table: ModuleTable, roots: readonly string[], what: string): number[] {
  const byName = new Map(table.modules.map((r, i) => [r.name, i]));
  const order: number[] = [];
  const seen = new Set<number>();
  const visit = (i: number): void => {
    if (seen.has(i)) return;
    seen.add(i);
    for (const d of table.modules[i].depends) {
      const j = byName.get(d);
      if (j !== undefined) visit(j);
    }
    order.push(i);
  };
  for (const n of [...roots].sort()) {
    const i = byName.get(n);
    if (i === undefined) throw new RangeError(`${what}: module ${n} is not in the module table`);
    visit(i);
  }
  return order;
}

export function rowSizes(r: ModuleTableRow): ModuleSizes {
  const b = (t: ModMemType) => r.bytes[MOD_MEM_TYPES.indexOf(t)];
  return {
    textBytes: b('text'),
    rodataBytes: b('rodata'),
    roAfterInitBytes: b('ro_after_init'),
    dataBytes: b('data'),
    initTextBytes: b('init_text'),
    initRodataBytes: b('init_rodata'),
    initDataBytes: b('init_data'),
  };
}

/** A sampler for modules-synthetic: a uniformly chosen real module's measured sizes. */
export function tableSampler(table: ModuleTable): (rng: Rng) => ModuleSizes {
  const sizes = table.modules.map(rowSizes);
  return (rng) => sizes[Math.floor(rng.next() * sizes.length)];
}
