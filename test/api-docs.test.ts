/**
 * `npm run docs` (issue 13 item 19): the API reference generated from the doc comments of the
 * built declarations covers every export of the package, follows the re-exports to the real
 * declaration, shows public members with their comments and signatures, and the command itself
 * succeeds (it takes well under a second after the build `npm test` has already done).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { collectApi, renderHtml, renderMarkdown } from '../scripts/api-docs.js';
import * as api from '../src/index.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

test('every runtime export of the package is in the reference, resolved to its declaration', () => {
  const docs = collectApi();
  assert.deepEqual(docs.missing, [], 'every exported name is found in the declarations');
  const names = new Set(docs.items.map((i) => i.name));
  for (const name of Object.keys(api)) assert.ok(names.has(name), `${name} is documented`);
  const execmem = docs.items.find((i) => i.name === 'Execmem');
  assert.equal(execmem?.kind, 'class');
  assert.equal(execmem?.file, 'execmem/execmem.d.ts');
  const read = execmem?.members.find((m) => m.name === 'read');
  assert.equal(read?.signature, 'read(ptr: bigint, sizeBytes: number): Uint8Array;');
  assert.match(read?.doc ?? '', /^An inspection of mapped memory/);
  assert.ok(
    !execmem?.members.some((m) => m.name === 'store' || m.name === 'lock'),
    'private members left out',
  );
  assert.ok(docs.items.find((i) => i.name === 'openHost')?.doc, 'openHost has its doc comment');
  assert.match(docs.overview, /Addresses: every method of `Execmem` that takes an address/);
});

test('the reference renders as Markdown and HTML, and npm run docs writes both', () => {
  const docs = collectApi();
  const md = renderMarkdown(docs);
  assert.match(md, /^# execmem API reference\n/);
  assert.match(md, /\n#### Execmem\.sizeOf\n\n```ts\nsizeOf\(ptr: bigint\): number;\n```/);
  const html = renderHtml(docs);
  assert.match(html, /<section id="Execmem"><h3>Execmem<\/h3>/);
  assert.doesNotMatch(html, /<script/);
  const out = mkdtempSync(join(tmpdir(), 'execmem-api-'));
  try {
    const said = execFileSync(process.execPath, [join(root, 'dist/scripts/api-docs.js'), '--out', out], {
      encoding: 'utf8',
    });
    assert.match(said, /^wrote .*index\.html and API\.md: \d+ exports, \d+ without a doc comment\n$/);
    assert.equal(readFileSync(join(out, 'API.md'), 'utf8'), md);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
