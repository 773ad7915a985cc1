/**
 * examples/ are programs a user could have written (issue 13 item 19): they import only the
 * package's public API, by the package's own name ('execmem', resolved by Node's and
 * TypeScript's self-reference through package.json "exports"), and they run and print what they
 * say. (examples/quickstart.ts is also run by readme-example.test.ts, which checks the README
 * embeds it.)
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const examples = readdirSync(join(root, 'examples')).filter((f) => f.endsWith('.ts'));

test('examples import only the public API, by the package name', () => {
  assert.ok(examples.length >= 2);
  for (const file of examples) {
    const text = readFileSync(join(root, 'examples', file), 'utf8');
    const sources = [...text.matchAll(/^import [^;]*? from '([^']+)';/gms)].map((m) => m[1]);
    assert.ok(sources.length > 0, `${file} imports something`);
    for (const s of sources) assert.ok(s === 'execmem' || s.startsWith('node:'), `${file} imports '${s}'`);
  }
});

test('examples/host-jit runs real JIT code and shows W^X and the trap fill', (t) => {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    t.skip('the host backend needs Linux x86-64');
    return;
  }
  for (const mode of ['dualmap', 'mprotect']) {
    const out = execFileSync(process.execPath, [join(root, 'dist/examples/host-jit.js'), mode], {
      encoding: 'utf8',
    });
    assert.match(out, new RegExp(`^mode: ${mode}$`, 'm'));
    assert.match(out, /^f\(5, 2\) = 24 \(expected 24\)$/m);
    assert.match(out, /^sum\(0\.\.999\) = 499500 \(expected 499500\)$/m);
    assert.match(out, /^mappings both writable and executable: 0$/m);
    assert.match(out, /^after free, the first bytes of f read: cc cc cc cc cc cc cc cc /m);
  }
});
