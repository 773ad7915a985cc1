#!/usr/bin/env node
// Regenerates data/bpf-real.json, the real BPF programs of the bpf-real workload:
// - every systemd service unit on this machine with seccomp sandboxing (/lib/systemd/system),
//   its filters built by libseccomp (scripts/seccomp-export.c, gcc -lseccomp) from the rules
//   systemd's seccomp-util.c makes (src/consumers/bpf/systemd.ts), with systemd's own syscall
//   groups (`systemd-analyze syscall-filter`);
// - a few tcpdump sessions' programs (`tcpdump -ddd EXPR`);
// - the XDP programs Debian's libxdp1 ships (/usr/lib/x86_64-linux-gnu/bpf/*.o), as per-function
//   instruction counts and the image sizes our JIT computes (the objects are not copied).
// Needs: npm run build, gcc, libseccomp-dev, systemd (systemd-analyze), tcpdump, libxdp1.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

const root = join(import.meta.dirname, '..');
const dist = (p) => join(root, 'dist', 'src', 'consumers', 'bpf', p);
const { systemdFilterSpecs } = await import(dist('systemd.js'));
const { readBpfObject, functionForJit } = await import(dist('elf-bpf.js'));
const { jitX86 } = await import(dist('jit-x86.js'));

const exporter = join(tmpdir(), `seccomp-export-${process.pid}`);
execFileSync('gcc', ['-O2', '-o', exporter, join(root, 'scripts', 'seccomp-export.c'), '-lseccomp']);

// systemd's syscall groups, nested groups resolved.
const groups = {};
let cur = null;
for (const line of execFileSync('systemd-analyze', ['syscall-filter']).toString().split('\n')) {
  if (/^@\S+/.test(line)) {
    cur = line.trim();
    groups[cur] = [];
  } else if (cur && line.trim() && !line.trim().startsWith('#')) groups[cur].push(line.trim());
}
const resolve = (names, seen = new Set()) =>
  names.flatMap((n) =>
    n.startsWith('@') ? (seen.has(n) ? [] : (seen.add(n), resolve(groups[n] ?? [], seen))) : [n],
  );

const AF = { AF_UNIX: 1, AF_INET: 2, AF_INET6: 10, AF_NETLINK: 16, AF_PACKET: 17 };
const yes = (v) => v !== undefined && /^(yes|true|1|on)$/i.test(v.at(-1));
const unitDir = '/lib/systemd/system';
const seen = new Set();
const services = [];
for (const f of readdirSync(unitDir).sort()) {
  if (!f.endsWith('.service')) continue;
  const real = realpathSync(join(unitDir, f));
  if (seen.has(real)) continue;
  const d = {};
  for (const line of readFileSync(real, 'utf8').split('\n')) {
    const m = /^(\w+)=(.*)$/.exec(line.trim());
    if (m) {
      d[m[1]] ??= [];
      d[m[1]].push(m[2].trim());
    }
  }
  if (!d.SystemCallFilter) continue;
  seen.add(real);
  const allowLines = d.SystemCallFilter.filter((v) => !v.startsWith('~')).flatMap((v) => v.split(/\s+/));
  const denyLines = d.SystemCallFilter.filter((v) => v.startsWith('~')).flatMap((v) =>
    v.slice(1).split(/\s+/),
  );
  const deny = new Set(resolve(denyLines));
  const allow = [...new Set(resolve(allowLines))].filter((n) => !deny.has(n)).sort();
  const denySets = [];
  if (yes(d.ProtectKernelModules))
    denySets.push({ label: 'ProtectKernelModules', syscalls: resolve(['@module']) });
  if (yes(d.ProtectClock)) denySets.push({ label: 'ProtectClock', syscalls: resolve(['@clock']) });
  if (yes(d.PrivateDevices)) denySets.push({ label: 'PrivateDevices', syscalls: resolve(['@raw-io']) });
  services.push({
    name: basename(real, '.service'),
    allow,
    errno: 1, // SystemCallErrorNumber=EPERM in every unit that sets it
    nativeOnly: d.SystemCallArchitectures?.at(-1) === 'native',
    memoryDenyWriteExecute: yes(d.MemoryDenyWriteExecute),
    restrictNamespaces: yes(d.RestrictNamespaces),
    lockPersonality: yes(d.LockPersonality),
    restrictRealtime: yes(d.RestrictRealtime),
    restrictSuidSgid: yes(d.RestrictSUIDSGID),
    addressFamilies: d.RestrictAddressFamilies
      ? d.RestrictAddressFamilies.at(-1)
          .split(/\s+/)
          .map((a) => AF[a])
          .filter((x) => x)
      : undefined,
    protectHostname: yes(d.ProtectHostname),
    protectKernelLogs: yes(d.ProtectKernelLogs),
    protectKernelTunables: yes(d.ProtectKernelTunables),
    denySets,
  });
}

const seccomp = [];
for (const s of services) {
  const specs = systemdFilterSpecs(s);
  const text = execFileSync(exporter, {
    input: specs.map((x) => x.spec).join(''),
    stdio: ['pipe', 'pipe', 'ignore'],
  }).toString();
  const progs = text
    .split(/\n(?=\d+\n)/)
    .map((t) => t.trim())
    .filter(Boolean);
  if (progs.length !== specs.length)
    throw new Error(`${s.name}: ${specs.length} specs, ${progs.length} programs`);
  specs.forEach((x, i) => {
    seccomp.push({ service: s.name, label: x.label, program: `${progs[i]}\n` });
  });
}

const TCPDUMP = [
  'tcp port 22',
  'port 53',
  'icmp or icmp6',
  'host 10.0.0.1 and tcp',
  'not port 22',
  'vlan and udp port 4789',
];
const tcpdump = TCPDUMP.map((expr) => ({
  expr,
  program: execFileSync('tcpdump', ['-ddd', expr], { stdio: ['ignore', 'pipe', 'ignore'] }).toString(),
}));

const xdpDir = '/usr/lib/x86_64-linux-gnu/bpf';
const xdp = [];
for (const f of existsSync(xdpDir) ? readdirSync(xdpDir).sort() : []) {
  for (const p of readBpfObject(readFileSync(join(xdpDir, f)))) {
    xdp.push({
      object: f,
      program: p.name,
      section: p.section,
      functions: p.functions.map((fn, i) => ({
        name: fn.name,
        insns: fn.insns.length,
        proglenBytes: jitX86(functionForJit(fn, i)).proglenBytes,
      })),
    });
  }
}

const version = (cmd, args) =>
  execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    .toString()
    .split('\n')[0]
    .trim();
const out = {
  format: 'execmem-bpf-real/1',
  sources: {
    systemd: version('systemctl', ['--version']),
    libseccomp: execFileSync('dpkg-query', ['-W', '-f=${Version}', 'libseccomp2']).toString(),
    tcpdump: execFileSync('dpkg-query', ['-W', '-f=${Version}', 'tcpdump']).toString(),
    libpcap: execFileSync('dpkg-query', ['-W', '-f=${Version}', 'libpcap0.8']).toString(),
    libxdp: existsSync(xdpDir)
      ? execFileSync('dpkg-query', ['-W', '-f=${Version}', 'libxdp1']).toString()
      : null,
  },
  services: services.map((s) => s.name),
  seccomp,
  tcpdump,
  xdp,
};
writeFileSync(join(root, 'data', 'bpf-real.json'), `${JSON.stringify(out, null, 1)}\n`);
console.log(
  `data/bpf-real.json: ${services.length} services, ${seccomp.length} seccomp filters, ${tcpdump.length} tcpdump programs, ${xdp.length} XDP programs`,
);
