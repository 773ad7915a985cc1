/**
 * `npm run docs`: the API reference of the package, generated from the doc comments of its built
 * declarations (dist/src/*.d.ts), written as dist/api/index.html and dist/api/API.md.
 *
 * Why our own small generator and not TypeDoc: TypeDoc (0.28) drives the TypeScript compiler's
 * JavaScript API and accepts TypeScript 5.0-6.0 as its peer; this project builds with TypeScript
 * 7, the native compiler, which has no such API, and a second TypeScript next to it would be a
 * second compiler to keep in step. The declaration files tsc writes are regular enough to read
 * directly: what the package exports is the export list of dist/src/index.d.ts; each name is
 * followed through the `export ... from` re-exports to its declaration, whose doc comment,
 * signature and (for classes and interfaces) public members with their doc comments are
 * printed. Exports without a doc comment are listed as such, so they can be written.
 *
 * Usage: node dist/scripts/api-docs.js [--out DIR]   (npm run docs builds first)
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ENTRY = join(ROOT, 'dist', 'src', 'index.d.ts');

/** A documented piece: a declaration or a member of one. */
export interface DocItem {
  readonly name: string;
  readonly kind: string;
  readonly doc: string;
  readonly signature: string;
  readonly members: readonly DocItem[];
  /** The .d.ts it is declared in, relative to dist/src. */
  readonly file: string;
  /** The first paragraph of that file's header comment (context when `doc` is empty). */
  readonly fileSummary: string;
}

interface Line {
  readonly text: string;
  /** Brace depth before the line, outside comments and strings. */
  readonly depth: number;
  /** Is the line inside a block comment at its start? */
  readonly inComment: boolean;
}

const fileCache = new Map<string, Line[]>();

/** The lines of a .d.ts with the brace depth at each, comments and strings skipped. */
function linesOf(file: string): Line[] {
  const cached = fileCache.get(file);
  if (cached) return cached;
  const out: Line[] = [];
  let depth = 0;
  let comment = false;
  for (const text of readFileSync(file, 'utf8').split('\n')) {
    out.push({ text, depth, inComment: comment });
    let quote = '';
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (comment) {
        if (c === '*' && text[i + 1] === '/') {
          comment = false;
          i++;
        }
      } else if (quote !== '') {
        if (c === '\\') i++;
        else if (c === quote) quote = '';
      } else if (c === '/' && text[i + 1] === '*') {
        comment = true;
        i++;
      } else if (c === '/' && text[i + 1] === '/') break;
      else if (c === "'" || c === '"' || c === '`') quote = c;
      else if (c === '{') depth++;
      else if (c === '}') depth--;
    }
  }
  fileCache.set(file, out);
  return out;
}

/** The doc comment ending right above line `at` (its text without the comment markers). */
function docAbove(lines: readonly Line[], at: number): string {
  let end = at - 1;
  if (end < 0 || !lines[end].text.trim().endsWith('*/')) return '';
  let start = end;
  while (start >= 0 && !lines[start].text.trim().startsWith('/**')) start--;
  if (start < 0) return '';
  const body = lines.slice(start, end + 1).map((l) =>
    l.text
      .trim()
      .replace(/^\/\*\*\s?/, '')
      .replace(/\s?\*\/$/, '')
      .replace(/^\*\s?/, ''),
  );
  end = body.length;
  while (end > 0 && body[end - 1].trim() === '') end--;
  return body.slice(0, end).join('\n').trim();
}

/** The statement starting at line `at`: up to its `;` (or closing brace) at the same depth. */
function statement(lines: readonly Line[], at: number): { text: string; end: number } {
  const depth = lines[at].depth;
  let i = at;
  for (; i < lines.length; i++) {
    const next = lines[i + 1];
    const t = lines[i].text.trimEnd();
    if (next === undefined) break;
    if (next.depth === depth && (t.endsWith(';') || t.endsWith('}'))) break;
  }
  return {
    text: lines
      .slice(at, i + 1)
      .map((l) => l.text)
      .join('\n'),
    end: i,
  };
}

const DECL =
  /^(export )?(declare )?(abstract )?(class|interface|function|const|let|type|enum|namespace) ([A-Za-z_$][\w$]*)/;

/** Public members of the class or interface whose body spans (start, end). */
function membersOf(lines: readonly Line[], start: number, end: number, file: string): DocItem[] {
  const bodyDepth = lines[start].depth + 1;
  const out: DocItem[] = [];
  for (let i = start + 1; i < end; i++) {
    const l = lines[i];
    const t = l.text.trim();
    if (l.depth !== bodyDepth || l.inComment || t === '' || t.startsWith('/*') || t.startsWith('*')) continue;
    const st = statement(lines, i);
    if (!/^(private|#private|protected)\b/.test(t)) {
      const name =
        /^(?:(?:static|readonly|get|set|abstract|public|override)\s+)*([A-Za-z_$][\w$]*|\[[^\]]+\])/.exec(
          t,
        )?.[1] ?? t;
      out.push({
        name: name === 'constructor' ? 'constructor' : name,
        kind: /^(?:\w+\s+)*[\w$]+\s*[<(]/.test(t) ? 'method' : 'property',
        doc: docAbove(lines, i),
        signature: st.text.trim().replace(/\s+/g, ' '),
        members: [],
        file,
        fileSummary: '',
      });
    }
    i = st.end;
  }
  return out;
}

/** Find the declaration of `name` in `file`, following re-exports. */
function resolveName(file: string, name: string, seen = new Set<string>()): DocItem | null {
  const key = `${file}#${name}`;
  if (seen.has(key)) return null;
  seen.add(key);
  const lines = linesOf(file);
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i];
    if (l.depth !== 0 || l.inComment) continue;
    const m = DECL.exec(l.text);
    if (m && m[5] === name) {
      const kind = m[4];
      const st = statement(lines, i);
      const isBody = kind === 'class' || kind === 'interface' || kind === 'enum';
      const header = isBody ? l.text.replace(/\{\s*$/, '').trim() : st.text.trim();
      const rel = relative(join(ROOT, 'dist', 'src'), file);
      return {
        name,
        kind,
        doc: docAbove(lines, i),
        signature: header.replace(/^export (declare )?/, ''),
        members: isBody ? membersOf(lines, i, st.end, rel) : [],
        file: rel,
        fileSummary:
          headerOf(file)
            .split(/\n\s*\n/)[0]
            ?.replace(/\s+/g, ' ') ?? '',
      };
    }
  }
  for (const e of reExports(file)) {
    const target = e.names === null ? name : e.names.get(name);
    if (target === undefined) continue;
    const found = resolveName(resolve(dirname(file), e.from.replace(/\.js$/, '.d.ts')), target, seen);
    if (found) return { ...found, name };
  }
  return null;
}

/** The `export {...} from`, `export type {...} from` and `export * from` statements of a file. */
function reExports(file: string): { from: string; names: Map<string, string> | null }[] {
  const text = readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '');
  const out: { from: string; names: Map<string, string> | null }[] = [];
  for (const m of text.matchAll(/export\s+(?:type\s+)?\{([^}]*)\}\s*from\s*'([^']+)'/g)) {
    const names = new Map<string, string>();
    for (const part of m[1].split(',')) {
      const p = part.trim().replace(/^type\s+/, '');
      if (p === '') continue;
      const [local, as] = p.split(/\s+as\s+/);
      names.set((as ?? local).trim(), local.trim());
    }
    out.push({ from: m[2], names });
  }
  for (const m of text.matchAll(/export\s+\*\s+from\s*'([^']+)'/g)) out.push({ from: m[1], names: null });
  return out;
}

/** Every public export of the package, resolved to its declaration, sorted by kind then name. */
export function collectApi(entry = ENTRY): { overview: string; items: DocItem[]; missing: string[] } {
  const names = new Set<string>();
  for (const e of reExports(entry)) for (const n of e.names?.keys() ?? []) names.add(n);
  const items: DocItem[] = [];
  const missing: string[] = [];
  for (const n of [...names].sort()) {
    const item = resolveName(entry, n);
    if (item) items.push(item);
    else missing.push(n);
  }
  const order = ['class', 'function', 'const', 'let', 'enum', 'interface', 'type', 'namespace'];
  items.sort((a, b) => order.indexOf(a.kind) - order.indexOf(b.kind) || a.name.localeCompare(b.name));
  return {
    overview: docAbove([{ text: '', depth: 0, inComment: false }, ...linesOf(entry)], firstDecl(entry) + 1),
    items,
    missing,
  };
}

/** The leading comment of a file (its header), without the comment markers. */
function headerOf(file: string): string {
  const lines = linesOf(file);
  return lines[0]?.text.trim().startsWith('/**') ? docAbove(lines, firstDecl(file)) : '';
}

/** Index of the first line after the file's leading doc comment. */
function firstDecl(file: string): number {
  const lines = linesOf(file);
  let i = 0;
  while (i < lines.length && !lines[i].text.trim().endsWith('*/')) i++;
  return i + 1;
}

const KIND_TITLE: Record<string, string> = {
  class: 'Classes',
  function: 'Functions',
  const: 'Constants',
  let: 'Variables',
  enum: 'Enums',
  interface: 'Interfaces',
  type: 'Types',
  namespace: 'Namespaces',
};

/** Doc comment text to Markdown: @example blocks stay code, other tags become bold labels. */
function docMarkdown(doc: string): string {
  return doc.replace(/^@(\w+)\s*/gm, (_m, tag: string) => `**${tag}** `);
}

export function renderMarkdown(api: ReturnType<typeof collectApi>): string {
  const out = ['# execmem API reference', '', docMarkdown(api.overview), ''];
  out.push('Generated by `npm run docs` from the doc comments of the built declarations.', '');
  for (const kind of Object.keys(KIND_TITLE)) {
    const items = api.items.filter((i) => i.kind === kind);
    if (items.length === 0) continue;
    out.push(`## ${KIND_TITLE[kind]}`, '');
    for (const item of items) {
      out.push(`### ${item.name}`, '', '```ts', item.signature, '```', '');
      const none = item.fileSummary
        ? `_No doc comment._ Its file, \`${item.file}\`: ${item.fileSummary}`
        : '_No doc comment._';
      out.push(item.doc ? docMarkdown(item.doc) : none, '', `Declared in \`${item.file}\`.`, '');
      for (const m of item.members) {
        out.push(`#### ${item.name}.${m.name}`, '', '```ts', m.signature, '```', '');
        if (m.doc) out.push(docMarkdown(m.doc), '');
      }
    }
  }
  const undocumented = api.items.filter((i) => i.doc === '').map((i) => i.name);
  out.push('## Without a doc comment', '', undocumented.length ? undocumented.join(', ') : 'none', '');
  if (api.missing.length) out.push('## Not found in the declarations', '', api.missing.join(', '), '');
  return out.join('\n');
}

function escapeHtml(text: string): string {
  return text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
}

/** Doc text to HTML: paragraphs, ``` code blocks, `code` spans. */
function docHtml(doc: string): string {
  const parts = doc.split(/```(?:ts)?\n?/);
  return parts
    .map((p, i) =>
      i % 2 === 1
        ? `<pre><code>${escapeHtml(p.trimEnd())}</code></pre>`
        : p
            .split(/\n\s*\n/)
            .filter((para) => para.trim() !== '')
            .map(
              (para) =>
                `<p>${escapeHtml(para)
                  .replace(/`([^`]+)`/g, '<code>$1</code>')
                  .replace(/^@(\w+)/gm, '<b>$1</b>')}</p>`,
            )
            .join('\n'),
    )
    .join('\n');
}

export function renderHtml(api: ReturnType<typeof collectApi>): string {
  const toc: string[] = [];
  const body: string[] = [];
  for (const kind of Object.keys(KIND_TITLE)) {
    const items = api.items.filter((i) => i.kind === kind);
    if (items.length === 0) continue;
    toc.push(
      `<h3>${KIND_TITLE[kind]}</h3><p>${items.map((i) => `<a href="#${i.name}">${i.name}</a>`).join(' · ')}</p>`,
    );
    body.push(`<h2>${KIND_TITLE[kind]}</h2>`);
    for (const item of items) {
      body.push(`<section id="${item.name}"><h3>${item.name}</h3>`);
      body.push(`<pre class="sig"><code>${escapeHtml(item.signature)}</code></pre>`);
      const none = `<p><i>No doc comment.</i>${item.fileSummary ? ` Its file: ${escapeHtml(item.fileSummary)}` : ''}</p>`;
      body.push(item.doc ? docHtml(item.doc) : none);
      body.push(`<p class="file">Declared in <code>${escapeHtml(item.file)}</code></p>`);
      for (const m of item.members) {
        body.push(`<div class="member" id="${item.name}.${m.name}"><h4>${item.name}.${m.name}</h4>`);
        body.push(
          `<pre class="sig"><code>${escapeHtml(m.signature)}</code></pre>${m.doc ? docHtml(m.doc) : ''}</div>`,
        );
      }
      body.push('</section>');
    }
  }
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>execmem API reference</title>
<style>
body { font: 15px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
pre { background: #f5f5f5; padding: .6rem; overflow-x: auto; } code { font-size: 13px; }
.sig { border-left: 3px solid #2a6; } .member { margin-left: 1.5rem; } .file { color: #777; font-size: 13px; }
</style></head><body>
<h1>execmem API reference</h1>
${docHtml(api.overview)}
<p>Generated by <code>npm run docs</code> from the doc comments of the built declarations.</p>
<nav>${toc.join('\n')}</nav>
${body.join('\n')}
</body></html>
`;
}

function main(argv: readonly string[]): number {
  const i = argv.indexOf('--out');
  const out = resolve(i >= 0 && argv[i + 1] ? argv[i + 1] : join(ROOT, 'dist', 'api'));
  const api = collectApi();
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'API.md'), renderMarkdown(api));
  writeFileSync(join(out, 'index.html'), renderHtml(api));
  const undocumented = api.items.filter((x) => x.doc === '').length;
  process.stdout.write(
    `wrote ${join(out, 'index.html')} and API.md: ${api.items.length} exports, ${undocumented} without a doc comment` +
      `${api.missing.length ? `, ${api.missing.length} not found (${api.missing.join(', ')})` : ''}\n`,
  );
  return api.missing.length === 0 ? 0 : 1;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = main(process.argv.slice(2));
}
