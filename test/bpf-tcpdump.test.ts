/**
 * The socket-filter oracle: for every filter expression of a list, the number of packets of a
 * generated pcap that our JIT'd code accepts, run for real on the host backend, equals libpcap's
 * own verdict (`tcpdump -r FILE EXPR | wc -l`, cross-checked with the record count of
 * `tcpdump -r FILE -w - EXPR`). The classic program is libpcap's (`tcpdump -ddd EXPR`), converted
 * by bpf_convert_filter()'s rules and JIT'd by bpf_jit_comp.c's (src/consumers/bpf). Per packet,
 * the JIT'd verdict must also equal the independent classic interpreter's (interp.ts).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseClassicText } from '../src/consumers/bpf/classic.js';
import { HostBpfRunner } from '../src/consumers/bpf/host-run.js';
import { runClassic } from '../src/consumers/bpf/interp.js';
import { Execmem } from '../src/execmem/execmem.js';
import { type HostBackend, openHost } from '../src/host/index.js';
import { assertNoWxInArena } from './helpers/bpf-host.js';
import { genPackets, pcapRecordCount, writePcap } from './helpers/bpf-packets.js';
import { withTempDir } from './helpers/tempdir.js';
import { hasTool } from './helpers/toolchain.js';

const MiB = 1024 * 1024;
const PACKETS = 1200;

/** Ports, hosts, nets, protocols, offsets, byte masks, lengths, VLAN. */
export const EXPRESSIONS: readonly string[] = [
  'tcp',
  'udp',
  'icmp',
  'icmp6',
  'arp',
  'ip',
  'ip6',
  'tcp port 80',
  'udp port 53',
  'port 443',
  'tcp dst port 22',
  'src port 8080',
  'portrange 1000-2000',
  'udp portrange 5000-6000',
  'host 10.0.0.1',
  'src host 192.168.1.5',
  'dst net 10.0.0.0/24',
  'net 172.16.0.0/16',
  'ip6 host 2001:db8::1',
  'ip6 dst net fe80::/64',
  'ether host 02:00:00:00:00:01',
  'ether broadcast',
  'ether multicast',
  'ether proto 0x88cc',
  'ip multicast',
  'tcp[tcpflags] & tcp-syn != 0',
  'tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn',
  'tcp[13] & 8 != 0',
  'ip[6:2] & 0x1fff = 0',
  'ip[6] & 0x20 != 0',
  'ip[0] & 0xf > 5',
  'ip[2:2] > 576',
  'udp[4:2] > 100',
  'icmp[icmptype] = icmp-echo',
  'arp[6:2] = 1',
  'tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420',
  'greater 500',
  'less 100',
  'len >= 1000',
  'vlan',
  'vlan 10',
  'vlan and tcp',
  'vlan 20 and udp port 53',
  'vlan and ip6 and icmp6',
  'ip proto 17',
  'ip6 proto 6',
  'tcp and (port 80 or port 443)',
  'udp and not port 53',
  'not arp and not ip6',
];

const haveTcpdump = hasTool('tcpdump') || spawnOk();
function spawnOk(): boolean {
  try {
    execFileSync('tcpdump', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
// In CI the tool is installed by .ci/run; a missing tool there is a failure, not a skip.
const skip = haveTcpdump || process.env.CI ? false : 'tcpdump not installed';

function tcpdumpCount(file: string, expr: string): number {
  const lines = execFileSync('sh', [
    '-c',
    'tcpdump -r "$0" -n "$1" 2>/dev/null | wc -l',
    file,
    expr,
  ]).toString();
  const written = execFileSync('tcpdump', ['-r', file, '-w', '-', expr], {
    stdio: ['ignore', 'pipe', 'ignore'],
    maxBuffer: 64 * MiB,
  });
  const n = Number(lines.trim());
  assert.equal(pcapRecordCount(written), n, `tcpdump line count and -w record count agree for '${expr}'`);
  return n;
}

describe('socket filters: our JIT on the host agrees with libpcap (tcpdump)', { skip }, () => {
  let h: HostBackend;
  let em: Execmem;
  let runner: HostBpfRunner;
  before(() => {
    h = openHost({ textReserveBytes: 64 * MiB, dataReserveBytes: 16 * MiB });
    em = new Execmem(h);
    runner = new HostBpfRunner(em, h, 5);
  });
  after(() => {
    runner.close();
    em.shrink({ keepSpare: false });
    h.close();
  });

  test(`${EXPRESSIONS.length} expressions over ${PACKETS} generated packets`, () => {
    assert.ok(EXPRESSIONS.length >= 30);
    const packets = genPackets(11, PACKETS);
    withTempDir('bpf-pcap-', (dir) => {
      const file = join(dir, 'traffic.pcap');
      writePcap(file, packets);
      const filters = EXPRESSIONS.map((expr) => {
        const prog = parseClassicText(
          execFileSync('tcpdump', ['-ddd', expr], { stdio: ['ignore', 'pipe', 'ignore'] }).toString(),
        );
        return { expr, prog, f: runner.load(prog, 'socket'), accepted: 0, want: tcpdumpCount(file, expr) };
      });
      for (const [i, pkt] of packets.entries()) {
        const ctx = runner.setPacket(pkt);
        for (const x of filters) {
          const got = x.f.call(ctx);
          const oracle = runClassic(x.prog, { kind: 'packet', bytes: pkt });
          assert.equal(got, oracle, `packet ${i}, '${x.expr}': JIT returned ${got}, interpreter ${oracle}`);
          if (got !== 0) x.accepted++;
        }
      }
      const summary = filters.map((x) => `${x.expr}: ${x.accepted}/${x.want}`);
      for (const x of filters) assert.equal(x.accepted, x.want, `'${x.expr}' (${summary.join('; ')})`);
      // The expressions must discriminate: not all trivially 0 or all.
      assert.ok(
        filters.every((x) => x.want > 0 && x.want < PACKETS),
        summary.join('; '),
      );
      for (const x of filters) runner.unload(x.f);
    });
    assertNoWxInArena(h);
  });
});
