/**
 * `execmem compare` on a real (small) run speaks each arch's language (issue 11 items 11, 12):
 * arm64 says "linear map" and "broadcast TLBIs" and names the machine's own TLB profile; the
 * simulator's speed is in --json only, renamed; a design that equals another on arm64 says so.
 * Small machines, tiny workloads and no fetch model keep it fast.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatCompare } from '../src/cli/commands/compare.js';
import { createMachine } from '../src/machine/machine.js';
import { type CompareOptions, runCompare } from '../src/metrics/compare.js';
import { POLICY_NAMES, policyByName } from '../src/policies/index.js';
import { execmem } from './cli-helpers.js';

const GIB = 1024 ** 3;
const SMALL: CompareOptions = {
  workload: 'trampolines',
  scale: 0.003,
  seed: 3,
  machine: { memoryBytes: GIB, cpus: 2 },
  fetch: false,
};

/** The table's header line (the one starting "policy"). */
function headerLine(text: string): string {
  const line = text.split('\n').find((l) => l.startsWith('policy'));
  assert.ok(line, text);
  return line;
}

describe('compare text output on arm64', () => {
  it('says linear map and broadcast, never DirectMap, direct map or another arch TLB profile', () => {
    const r = runCompare({ ...SMALL, arch: 'arm64' });
    const text = formatCompare(r);
    assert.match(text, /linear map 4K \+/);
    assert.match(text, /linear-map splits/);
    assert.match(headerLine(text), /broadcast TLBIs/);
    assert.match(headerLine(text), /fixmap writes/);
    assert.match(headerLine(text), /all flush events/);
    assert.doesNotMatch(text, /DirectMap|direct map|direct-map|text_poke/i);
    // The TLB profile is read from the machine, whatever the arch's default is.
    const profile = createMachine({ arch: 'arm64', memoryBytes: GIB, cpus: 2 }).tlbs[0].profile.name;
    assert.equal(r.machine.tlb, profile);
    assert.match(text, new RegExp(`, ${profile} TLBs,`));
    if (profile !== 'skylake') assert.doesNotMatch(text, /skylake/i);
  });

  it('names a TLB profile given to the machine, never a hard-coded one', () => {
    const r = runCompare({
      ...SMALL,
      arch: 'arm64',
      policies: ['execmem'],
      machine: { ...SMALL.machine, tlb: 'zen4' },
    });
    assert.equal(r.machine.tlb, 'zen4');
    const text = formatCompare(r);
    assert.match(text, /, zen4 TLBs,/);
    assert.doesNotMatch(text, /skylake/i);
  });

  it('a design that is another on arm64 is labelled "= other on arm64"', () => {
    const same = POLICY_NAMES.filter((n) => policyByName(n).sameAs('arm64') !== null);
    assert.ok(same.length > 0, 'arm64 has no ROX cache: some design equals another there');
    const r = runCompare({ ...SMALL, arch: 'arm64' });
    const lines = formatCompare(r).split('\n');
    for (const name of same) {
      const other = policyByName(name).sameAs('arm64');
      const result = r.policies.find((p) => p.name === name);
      assert.equal(result?.sameAs, other);
      const line = lines.find((l) => l.startsWith(`${name} `));
      assert.ok(line, name);
      assert.ok(line.includes(`= ${other} on arm64`), line);
      assert.ok(line.includes(policyByName(name).kernel), `${name}: kernel version next to the name`);
    }
  });

  it('every Linux design row names its kernel version; ours says ours', () => {
    const r = runCompare({ ...SMALL, arch: 'x86_64', policies: ['execmem-6.10', 'execmem'] });
    const lines = formatCompare(r).split('\n');
    assert.match(headerLine(formatCompare(r)), /^policy +kernel /);
    const linux = lines.find((l) => l.startsWith('execmem-6.10 '));
    assert.ok(linux?.includes(policyByName('execmem-6.10').kernel));
    assert.match(lines.find((l) => l.startsWith('execmem ')) ?? '', /^execmem +ours /);
  });
});

describe('compare text output on x86', () => {
  it('says DirectMap4k, shootdowns and IPIs, and shows no speed column', () => {
    const r = runCompare({ ...SMALL, arch: 'x86_64', policies: ['module_alloc', 'execmem'] });
    const header = headerLine(formatCompare(r));
    for (const h of ['DirectMap4k +', 'DM splits', 'shootdowns', 'IPIs', 'local flushes', 'all flush events'])
      assert.ok(header.includes(h), h);
    assert.ok(header.includes('text_poke writes'));
    assert.doesNotMatch(formatCompare(r), /speed|simulator|ops\/s/i);
    // The figure exists, for --json only.
    for (const p of r.policies) assert.ok(p.metrics.simulatorOpsPerSecond > 0);
    assert.ok(r.simulatorSpeedNote.includes('simulatorOpsPerSecond'));
  });
});

describe('compare --json on arm64 (the built binary)', () => {
  it('carries the renamed speed fields, broadcast invalidations, kernel and sameAs', () => {
    const r = execmem([
      'compare',
      '--workload',
      'trampolines',
      '--scale',
      '0.003',
      '--arch',
      'arm64',
      '--policies',
      'execmem-6.10,execmem-rox',
      '--json',
    ]);
    assert.equal(r.status, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.equal(doc.arch, 'arm64');
    assert.match(doc.simulatorSpeedNote, /say nothing about kernel speed/);
    for (const p of doc.policies) {
      assert.equal(typeof p.metrics.simulatorOpsPerSecond, 'number');
      assert.equal(typeof p.metrics.simulatorOpsPerSecondRatio, 'number');
      assert.equal(p.metrics.opsPerSecondRatio, undefined);
      assert.equal(typeof p.metrics.broadcastFlushes, 'number');
      assert.equal(p.kernel, policyByName(p.name).kernel);
      assert.equal(p.sameAs, policyByName(p.name).sameAs('arm64'));
    }
  });
});

describe('a W^X figure that is Linux behaviour is labelled as such', () => {
  it('5.17 keeps BPF trampoline pages W+X: the table says whose it is and why; ours stays 0', () => {
    const r = runCompare({
      workload: 'trampolines',
      policies: ['module_alloc', 'execmem-6.10', 'execmem'],
      scale: 0.05,
      fetch: false,
    });
    const by = (n: string) => r.policies.find((p) => p.name === n)!;
    assert.ok(by('module_alloc').metrics.wxViolations > 0, 'bpf_jit_alloc_exec_page: W+X pages');
    assert.equal(by('execmem-6.10').metrics.wxViolations, 0);
    assert.equal(by('execmem').metrics.wxViolations, 0);
    const text = formatCompare(r);
    assert.match(text, /W\^X figure of module_alloc \(Linux 5\.17\) is Linux's own: BPF trampoline pages/);
    assert.doesNotMatch(text, /W\^X figure of (execmem|execmem-6\.10) /);
  });
});
