/**
 * Generated network traffic for the socket-filter oracle: Ethernet frames of many kinds, written
 * as a classic pcap file that tcpdump (libpcap) reads.
 *
 * Why generated and varied: the oracle compares our JIT's verdict with libpcap's on every packet,
 * so the traffic must reach every branch the test filters take: IPv4 with and without options
 * (LDX MSH with IHL > 5), fragments (the `ip[6:2] & 0x1fff` checks), TCP/UDP/ICMP, IPv6 with
 * TCP/UDP/ICMPv6, ARP, 802.1Q VLAN tags around IPv4 and IPv6, other ethertypes, broadcast and
 * multicast MACs, HTTP "GET " payloads for the indirect-load expressions, and lengths from
 * 42 to 1514 bytes. Deterministic for a seed. pcap format: the libpcap savefile header (magic
 * 0xa1b2c3d4, version 2.4, snaplen 65535, LINKTYPE_ETHERNET) and one record per packet, captured
 * length = wire length (no truncation, so libpcap and the skb see the same bytes).
 */
import { writeFileSync } from 'node:fs';
import { Rng } from '../../src/base/rng.js';

export const MACS = [
  '02:00:00:00:00:01',
  '02:00:00:00:00:02',
  '02:00:00:00:00:03',
  'ff:ff:ff:ff:ff:ff',
  '01:00:5e:00:00:fb',
  '33:33:00:00:00:01',
];
export const V4_HOSTS = [
  '10.0.0.1',
  '10.0.0.2',
  '10.0.0.77',
  '192.168.1.5',
  '192.168.1.200',
  '172.16.3.4',
  '172.16.250.9',
  '8.8.8.8',
  '224.0.0.251',
  '239.1.2.3',
];
export const V6_HOSTS = [
  '2001:db8::1',
  '2001:db8::2',
  '2001:db8:0:1::99',
  'fe80::1',
  'fe80::abcd',
  'ff02::1',
];
export const PORTS = [22, 53, 67, 68, 80, 123, 443, 1234, 1500, 2000, 5353, 8080, 40000, 55555];
export const VLANS = [10, 20, 100];

const mac = (s: string) => s.split(':').map((h) => Number.parseInt(h, 16));
const v4 = (s: string) => s.split('.').map(Number);
function v6(s: string): number[] {
  const [head, tail] = s.includes('::') ? s.split('::') : [s, ''];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...new Array(8 - h.length - t.length).fill('0'), ...t];
  return groups.flatMap((g) => {
    const v = Number.parseInt(g, 16);
    return [v >> 8, v & 0xff];
  });
}
const be16 = (v: number) => [(v >> 8) & 0xff, v & 0xff];
const bytes = (rng: Rng, n: number) => Array.from({ length: n }, () => rng.int(0, 255));

function l4(rng: Rng, proto: number, payloadBytes: number, v6net: boolean): number[] {
  const sport = rng.pick(PORTS);
  const dport = rng.pick(PORTS);
  const payload =
    rng.next() < 0.15
      ? [...Buffer.from('GET / HTTP/1.1\r\n'), ...bytes(rng, payloadBytes)]
      : bytes(rng, payloadBytes);
  if (proto === 6) {
    const flags = rng.pick([0x02, 0x12, 0x10, 0x18, 0x11, 0x04, 0x29]);
    const dataOff = rng.next() < 0.3 ? 8 : 5; // with 12 bytes of options
    const opts = dataOff === 8 ? [2, 4, 5, 0xb4, 1, 1, 4, 2, 1, 1, 1, 1] : [];
    return [
      ...be16(sport),
      ...be16(dport),
      ...bytes(rng, 8),
      dataOff << 4,
      flags,
      ...be16(rng.int(0, 65535)),
      0,
      0,
      0,
      0,
      ...opts,
      ...payload,
    ];
  }
  if (proto === 17) return [...be16(sport), ...be16(dport), ...be16(8 + payload.length), 0, 0, ...payload];
  const type = v6net ? rng.pick([128, 129, 135, 136, 1]) : rng.pick([0, 8, 3, 11]);
  return [type, rng.int(0, 3), 0, 0, ...bytes(rng, 4), ...payload];
}

function ipv4(rng: Rng, payloadBytes: number): number[] {
  const proto = rng.pick([6, 6, 17, 17, 1, 47]);
  const ihl = rng.next() < 0.2 ? rng.pick([6, 7]) : 5;
  const body = l4(rng, proto === 47 ? 17 : proto, payloadBytes, false);
  const frag = rng.next() < 0.1 ? rng.pick([0x2000, 0x00b9, 0x20b9]) : rng.next() < 0.5 ? 0x4000 : 0;
  const total = ihl * 4 + body.length;
  const hdr = [
    0x40 | ihl,
    rng.pick([0, 0x10, 0xb8]),
    ...be16(total),
    ...be16(rng.int(0, 65535)),
    ...be16(frag),
    rng.int(1, 255),
    proto,
    0,
    0,
    ...v4(rng.pick(V4_HOSTS)),
    ...v4(rng.pick(V4_HOSTS)),
  ];
  const opts = new Array((ihl - 5) * 4).fill(1); // NOP options
  return [...hdr, ...opts, ...body];
}

function ipv6(rng: Rng, payloadBytes: number): number[] {
  const proto = rng.pick([6, 17, 58]);
  const body = l4(rng, proto, payloadBytes, true);
  return [
    0x60,
    0,
    0,
    0,
    ...be16(body.length),
    proto,
    64,
    ...v6(rng.pick(V6_HOSTS)),
    ...v6(rng.pick(V6_HOSTS)),
    ...body,
  ];
}

function arp(rng: Rng): number[] {
  const op = rng.pick([1, 2]);
  return [
    0,
    1,
    8,
    0,
    6,
    4,
    ...be16(op),
    ...mac(rng.pick(MACS.slice(0, 3))),
    ...v4(rng.pick(V4_HOSTS)),
    0,
    0,
    0,
    0,
    0,
    0,
    ...v4(rng.pick(V4_HOSTS)),
  ];
}

/** One Ethernet frame. */
export function genPacket(rng: Rng): Uint8Array {
  const payloadBytes = rng.pick([0, 0, 4, 20, 64, 200, 512, 1000, rng.int(0, 1400)]);
  const kind = rng.int(0, 99);
  let ethertype: number;
  let l3: number[];
  if (kind < 40) [ethertype, l3] = [0x0800, ipv4(rng, payloadBytes)];
  else if (kind < 62) [ethertype, l3] = [0x86dd, ipv6(rng, payloadBytes)];
  else if (kind < 72) [ethertype, l3] = [0x0806, arp(rng)];
  else if (kind < 92) {
    const inner =
      rng.next() < 0.7
        ? ([0x0800, ipv4(rng, payloadBytes)] as const)
        : ([0x86dd, ipv6(rng, payloadBytes)] as const);
    [ethertype, l3] = [
      0x8100,
      [...be16((rng.pick([0, 3, 5]) << 13) | rng.pick(VLANS)), ...be16(inner[0]), ...inner[1]],
    ];
  } else [ethertype, l3] = [rng.pick([0x88cc, 0x9000]), bytes(rng, 46)];
  const frame = [...mac(rng.pick(MACS)), ...mac(rng.pick(MACS.slice(0, 3))), ...be16(ethertype), ...l3];
  while (frame.length < 60) frame.push(0); // Ethernet minimum (without FCS)
  return Uint8Array.from(frame.slice(0, 1514));
}

export function genPackets(seed: number, count: number): Uint8Array[] {
  const rng = new Rng(seed);
  return Array.from({ length: count }, () => genPacket(rng));
}

/** The pcap savefile bytes of `packets` (see the header). */
export function pcapBytes(packets: readonly Uint8Array[]): Uint8Array {
  const total = 24 + packets.reduce((n, p) => n + 16 + p.length, 0);
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, 0xa1b2c3d4, true);
  dv.setUint16(4, 2, true);
  dv.setUint16(6, 4, true);
  dv.setUint32(16, 65535, true);
  dv.setUint32(20, 1, true); // LINKTYPE_ETHERNET
  let at = 24;
  packets.forEach((p, i) => {
    dv.setUint32(at, 1_700_000_000 + i, true);
    dv.setUint32(at + 4, i % 1_000_000, true);
    dv.setUint32(at + 8, p.length, true);
    dv.setUint32(at + 12, p.length, true);
    out.set(p, at + 16);
    at += 16 + p.length;
  });
  return out;
}

export function writePcap(path: string, packets: readonly Uint8Array[]): void {
  writeFileSync(path, pcapBytes(packets));
}

/** Number of records in a pcap savefile (what `tcpdump -w -` wrote). */
export function pcapRecordCount(buf: Uint8Array): number {
  if (buf.length < 24) return 0;
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let n = 0;
  for (let at = 24; at + 16 <= buf.length; n++) at += 16 + dv.getUint32(at + 8, true);
  return n;
}
