/**
 * The README's library example must run as written: the README embeds examples/quickstart.ts
 * verbatim, and this test runs the compiled example as a user would and checks its output.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

test('examples/quickstart runs and shows the W^X and trap-fill behaviour it promises', () => {
  const out = execFileSync(process.execPath, [join(root, 'dist/examples/quickstart.js')], {
    encoding: 'utf8',
  });
  assert.match(out, /^bpf program at 0xffffffffc[0-9a-f]{7}: 31c0c3cc$/m, 'code written, then trap fill');
  assert.match(out, /^after free: cccccccc$/m, 'freed range re-filled with int3');
  assert.match(out, /^W\^X violations: 0$/m);
});

test('README embeds the quickstart example verbatim', () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const example = readFileSync(join(root, 'examples/quickstart.ts'), 'utf8');
  const body = example.slice(example.indexOf('import '));
  assert.ok(
    readme.includes(body.trim()),
    'README.md must contain examples/quickstart.ts from its import line on',
  );
});
