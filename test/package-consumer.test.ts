/**
 * The published package type-checks in a strict consumer project (issue 13 item 16).
 *
 * As a user gets it: `npm pack` into a temporary directory, installed there from the tarball
 * without the network, and a TypeScript project with the strictest usual settings
 * (`strict`, `noUncheckedIndexedAccess`, `exactOptionalPropertyTypes`, `skipLibCheck: false`)
 * and no @types/node (`types: []`, lib ES2022 only) compiled against it with this repository's
 * `tsc`. The consumer uses the public API the README shows, on both backends. Any error is a
 * failure: the package's `exports["."].types` must lead to the built `.d.ts`, and those must not
 * lean on Node's types or on anything the tarball does not carry.
 *
 * Installing: `npm install --offline` from the tarball needs the package's dependencies in npm's
 * cache (CI's `npm ci` leaves them there). Where they are not cached, the tarball is unpacked
 * into node_modules/execmem and its dependencies are linked from this checkout's node_modules
 * (the versions package-lock.json pins), which is what the install would have put there.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

const CONSUMER = `import {
  createMachine,
  EAX,
  EDI,
  Execmem,
  ExecmemError,
  type ExecmemType,
  formatStats,
  openHost,
  SimBackend,
  X86Asm,
} from 'execmem';

const machine = createMachine({ arch: 'x86_64', memoryBytes: 2 ** 30, cpus: 2, kaslr: true, seed: 1 });
const em = new Execmem(new SimBackend(machine));
const p: bigint = em.alloc('bpf', 64);
em.update(p, Uint8Array.of(0x31, 0xc0, 0xc3));
const size: number = em.sizeOf(p);
const type: ExecmemType = em.typeOf(p);
const sealed: boolean = em.isSealed(p);
const bytes: Uint8Array = em.read(p, 4);
const first: number | undefined = bytes[0];
em.free(p);
let code: string | undefined;
try {
  em.free(p);
} catch (e) {
  if (e instanceof ExecmemError) code = e.code;
}
const text: string = formatStats(em.stats());
const inc = new X86Asm().mov(EAX, EDI).addImm(EAX, 1).ret().bytes();

export function jit(): number {
  const host = openHost({ mode: 'auto' });
  try {
    const hem = new Execmem(host);
    const q = hem.alloc('bpf', inc.length);
    hem.update(q, inc);
    return host.fn(q, 'int (int)')(41) as number;
  } finally {
    host.close();
  }
}

export const facts = { size, type, sealed, first, code, text, wx: machine.wxViolationCount() };
`;

const TSCONFIG = {
  compilerOptions: {
    target: 'ES2022',
    lib: ['ES2022'],
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    strict: true,
    noUncheckedIndexedAccess: true,
    exactOptionalPropertyTypes: true,
    types: [],
    skipLibCheck: false,
    noEmit: true,
  },
  files: ['index.ts'],
};

let scratch = '';

before(() => {
  scratch = mkdtempSync(join(tmpdir(), 'execmem-consumer-'));
});
after(() => rmSync(scratch, { recursive: true, force: true }));

function pack(): string {
  const out = execFileSync(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', scratch], {
    cwd: root,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const [info] = JSON.parse(out) as { filename: string; files: { path: string }[] }[];
  const files = info.files.map((f) => f.path);
  assert.ok(files.includes('dist/src/index.d.ts'), 'the tarball carries the built declarations');
  assert.ok(files.includes('data/debian-modules.json'), 'and the shipped module table');
  assert.ok(!files.some((f) => f.startsWith('test/') || f.startsWith('dist/test/')), 'but no tests');
  return join(scratch, info.filename);
}

/** Install the tarball into `dir` without the network (see the header). */
function install(tarball: string, dir: string): 'npm' | 'unpacked' {
  const r = spawnSync(
    npm,
    [
      'install',
      '--offline',
      '--ignore-scripts',
      '--no-audit',
      '--no-fund',
      '--omit=dev',
      '--no-package-lock',
      tarball,
    ],
    { cwd: dir, encoding: 'utf8', timeout: 120_000 },
  );
  if (r.status === 0) return 'npm';
  const target = join(dir, 'node_modules', 'execmem');
  rmSync(join(dir, 'node_modules'), { recursive: true, force: true });
  mkdirSync(target, { recursive: true });
  execFileSync('tar', ['-xzf', tarball, '-C', target, '--strip-components=1']);
  const pkg = JSON.parse(readFileSync(join(target, 'package.json'), 'utf8')) as {
    dependencies?: Record<string, string>;
  };
  for (const dep of Object.keys(pkg.dependencies ?? {})) {
    symlinkSync(join(root, 'node_modules', dep), join(dir, 'node_modules', dep), 'dir');
  }
  return 'unpacked';
}

test('package.json points types at the built .d.ts, not at the sources', () => {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
    types: string;
    exports: { '.': { types: string; default: string } };
  };
  assert.equal(pkg.exports['.'].types, './dist/src/index.d.ts');
  assert.equal(pkg.types, 'dist/src/index.d.ts');
  assert.equal(pkg.exports['.'].default, './dist/src/index.js');
});

test('a strict consumer without @types/node type-checks against the packed package', (t) => {
  const tarball = pack();
  const dir = join(scratch, 'consumer');
  mkdirSync(dir);
  writeFileSync(
    join(dir, 'package.json'),
    `${JSON.stringify({ name: 'consumer', private: true, type: 'module' })}\n`,
  );
  const how = install(tarball, dir);
  t.diagnostic(`installed by ${how}`);
  writeFileSync(join(dir, 'tsconfig.json'), `${JSON.stringify(TSCONFIG, null, 2)}\n`);
  writeFileSync(join(dir, 'index.ts'), CONSUMER);
  const tsc = join(root, 'node_modules', '.bin', 'tsc');
  const r = spawnSync(tsc, ['-p', dir], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, `tsc found errors:\n${r.stdout}${r.stderr}`);
  // The check is real: a type error in the consumer is reported.
  writeFileSync(join(dir, 'index.ts'), `${CONSUMER}\nexport const wrong: string = em.alloc('bpf', 1);\n`);
  const bad = spawnSync(tsc, ['-p', dir], { encoding: 'utf8', timeout: 120_000 });
  assert.notEqual(bad.status, 0);
  assert.match(
    bad.stdout,
    /index\.ts\(\d+,\d+\): error TS2322: Type 'bigint' is not assignable to type 'string'/,
  );
  assert.doesNotMatch(bad.stdout, /node_modules\/execmem/, 'no error from the package itself');
});
