/**
 * The `execmem` binary as a user runs it (a spawned process): help for every command with
 * examples, exit codes 0/1/2, one-line errors without stack traces, --version.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { assertUsageError, execmem, execmemAsync } from './cli-helpers.js';

const OWN_COMMANDS = ['report', 'ptdump', 'stats'];
const OTHER_COMMANDS = ['compare', 'modules', 'dataset', 'host'];

test('--help lists every subcommand, the exit codes and examples', () => {
  const r = execmem(['--help']);
  assert.equal(r.status, 0);
  for (const c of [...OWN_COMMANDS, ...OTHER_COMMANDS]) assert.match(r.stdout, new RegExp(`\\n  ${c}\\b`));
  assert.match(r.stdout, /Exit codes: 0 ok, 1 the work failed, 2 bad usage, 130 interrupted \(Ctrl-C\)/);
  assert.match(r.stdout, /Examples:\n {2}\$ execmem report/);
  assert.equal(r.stderr, '');
});

test('each of our commands has --help with examples', () => {
  for (const c of OWN_COMMANDS) {
    const r = execmem([c, '--help']);
    assert.equal(r.status, 0, c);
    assert.match(r.stdout, new RegExp(`^Usage: execmem ${c}`), c);
    assert.match(r.stdout, new RegExp(`Examples:\\n {2}\\$ execmem ${c}`), c);
  }
});

test("other engineers' commands: --help when written, else an honest 'not available' (exit 1)", () => {
  for (const c of OTHER_COMMANDS) {
    const written = existsSync(fileURLToPath(new URL(`../src/cli/commands/${c}.js`, import.meta.url)));
    const r = execmem([c, '--help']);
    if (written) {
      assert.equal(r.status, 0, `${c}: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`^Usage: execmem ${c}`));
    } else {
      assert.equal(r.status, 1, c);
      assert.match(r.stderr, new RegExp(`^error: 'execmem ${c}' is not available yet: .+\\n$`));
    }
  }
});

test("--json and --quiet are listed in every command's --help, subcommands included", async () => {
  const visit = async (path: string[]): Promise<number> => {
    const r = await execmemAsync([...path, '--help']);
    assert.equal(r.status, 0, path.join(' '));
    const where = `execmem ${path.join(' ')} --help`;
    if (path.length > 0) {
      assert.match(
        r.stdout,
        /\nGlobal Options:\n[\s\S]*--json +print the result as one JSON document/,
        where,
      );
      assert.match(r.stdout, /-q, --quiet/, where);
    }
    const section = /\nCommands:\n([\s\S]*?)(\n\n|$)/.exec(r.stdout)?.[1] ?? '';
    const subs = [...section.matchAll(/^ {2}([a-z][\w-]*)/gm)].map((m) => m[1]).filter((c) => c !== 'help');
    const counts = await Promise.all(subs.map((c) => visit([...path, c])));
    return 1 + counts.reduce((n, c) => n + c, 0);
  };
  assert.ok((await visit([])) >= 12, 'every command and subcommand visited');
});

test('--version prints the package version', () => {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  const r = execmem(['--version']);
  assert.equal(r.status, 0);
  assert.equal(r.stdout.trim(), pkg.version);
});

test('bad usage exits 2 with one line and no stack', async () => {
  const cases: [string[], RegExp][] = [
    [['--bogus'], /unknown option '--bogus'/],
    [['nosuch'], /unknown command 'nosuch'/],
    [['ptdump', '--arch', 'sparc'], /unknown arch \(known: x86_64, arm64, generic\)/],
    [['ptdump', '--seed', '-3'], /seed must be an integer/],
    [['stats', '--seed', '1.5'], /seed must be an integer/],
    [['report', '--scale', '0'], /scale must be a number/],
    [['report', '--scale', 'abc'], /scale must be a number/],
    [['report', '--workloads', 'mixed,,bpf-churn'], /empty item/],
    [['report', '--workloads', 'nope'], /unknown workload 'nope' \(known: .*mixed/],
    [['report', '--policies', 'execmem,nope'], /unknown policy 'nope' \(known: .*bpf_prog_pack/],
    [['stats', '--workload', 'nope'], /unknown workload 'nope'/],
    [['ptdump', '--workload', 'nope'], /unknown workload 'nope'/],
    // A suggestion from commander is folded into the same single line.
    [['ptdump', '--worklaod', 'mixed'], /unknown option '--worklaod'.*Did you mean --workload\?/],
    [['ptdump', 'extra'], /too many arguments/],
  ];
  const runs = await Promise.all(cases.map(([args]) => execmemAsync(args)));
  runs.forEach((r, i) => {
    assertUsageError(r, cases[i][1]);
  });
});

test('no command: exit 2 with the help on stderr', () => {
  const r = execmem([]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^error: a command is required/);
  assert.match(r.stderr, /Usage: execmem/);
  assert.equal(r.stdout, '');
});

test('global options work after the subcommand name', () => {
  // --json and --quiet are accepted anywhere (the command may still fail for other reasons,
  // but never as a usage error about these options).
  for (const args of [
    ['ptdump', '--json', '--quiet'],
    ['--json', 'stats', '-q'],
  ]) {
    const r = execmem([...args, '--help']);
    assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
  }
});
