/**
 * The seccomp filters systemd installs for a service, as libseccomp rule sets (the input of
 * scripts/seccomp-export.c), so the bpf-real corpus holds the real programs a Debian machine runs.
 *
 * Why per feature and per architecture: systemd does not build one filter per service. Each
 * sandboxing directive is its own seccomp_load(), and most loop over SECCOMP_FOREACH_LOCAL_ARCH
 * (x86, x32, x86-64 on an x86-64 build, native last), loading one filter per architecture, each
 * made by seccomp_init_for_arch() (default action, SCMP_FLTATR_ACT_BADARCH = allow, no NNP):
 * seccomp_load_syscall_filter_set_raw() (SystemCallFilter=, and the deny sets behind
 * ProtectKernelModules= @module, ProtectClock= @clock, PrivateDevices= @raw-io),
 * seccomp_restrict_address_families() (x86-64 and x32 only: x86 multiplexes socketcall()),
 * seccomp_memory_deny_write_execute(), seccomp_restrict_namespaces(), seccomp_lock_personality(),
 * seccomp_restrict_realtime(), seccomp_restrict_suid_sgid(), seccomp_protect_hostname(),
 * seccomp_protect_syslog(), seccomp_protect_sysctl() (not x32), and one seccomp_restrict_archs()
 * filter for SystemCallArchitectures=native (src/shared/seccomp-util.c; the stored copy read is an
 * older systemd than Debian 12's 252, ASSUMED to load the same filters; clone3 -> ENOSYS under
 * RestrictNamespaces= is 252's behaviour, also ASSUMED). The syscall groups are systemd 252's own
 * (`systemd-analyze syscall-filter`), resolved by scripts/gen-bpf-real.mjs.
 */

export interface ServiceSandbox {
  readonly name: string;
  /** SystemCallFilter= allow list (syscall names, groups already resolved). */
  readonly allow?: readonly string[];
  readonly errno?: number;
  readonly nativeOnly?: boolean;
  readonly memoryDenyWriteExecute?: boolean;
  readonly restrictNamespaces?: boolean;
  readonly lockPersonality?: boolean;
  readonly restrictRealtime?: boolean;
  readonly restrictSuidSgid?: boolean;
  /** RestrictAddressFamilies= allow list, as AF_ numbers. */
  readonly addressFamilies?: readonly number[];
  readonly protectHostname?: boolean;
  readonly protectKernelLogs?: boolean;
  readonly protectKernelTunables?: boolean;
  /** Resolved deny sets: ProtectKernelModules (@module), ProtectClock (@clock), PrivateDevices (@raw-io). */
  readonly denySets?: readonly { readonly label: string; readonly syscalls: readonly string[] }[];
}

export interface FilterSpec {
  readonly label: string;
  /** seccomp-export input for this one filter. */
  readonly spec: string;
}

/** seccomp_local_archs[] on x86-64: native (x86-64) last. */
export const LOCAL_ARCHS = ['x86', 'x32', 'x86_64'] as const;
const EPERM = 1;
const ENOSYS = 38;
const EAFNOSUPPORT = 97;
/** AF_MAX of the kernel headers systemd 252 was built with (af_max()). */
export const AF_MAX = 46;
const NAMESPACE_FLAGS = [
  0x02000000, 0x08000000, 0x40000000, 0x00020000, 0x20000000, 0x10000000, 0x04000000, 0x00000080,
];

function one(label: string, arch: string, dflt: string, rules: readonly string[]): FilterSpec {
  return { label, spec: [`filter ${arch} ${dflt}`, 'badarch allow', ...rules, 'end', ''].join('\n') };
}

/** The filters systemd loads for `s`, in the order exec_child() applies them. */
export function systemdFilterSpecs(s: ServiceSandbox): FilterSpec[] {
  const out: FilterSpec[] = [];
  const perArch = (
    feature: string,
    dflt: string,
    rules: (arch: string) => string[],
    skip: readonly string[] = [],
  ) => {
    for (const arch of LOCAL_ARCHS)
      if (!skip.includes(arch)) out.push(one(`${s.name}: ${feature} (${arch})`, arch, dflt, rules(arch)));
  };
  const eperm = `errno:${EPERM}`;
  if (s.addressFamilies) {
    const set = [...s.addressFamilies].sort((a, b) => a - b);
    const first = set[0];
    const last = set[set.length - 1];
    const between: string[] = [];
    for (let af = 1; af < AF_MAX; af++)
      if (!set.includes(af) && af > first && af < last)
        between.push(`rule errno:${EAFNOSUPPORT} socket 0 eq ${af}`);
    perArch(
      'RestrictAddressFamilies',
      'allow',
      () => [
        `rule errno:${EAFNOSUPPORT} socket 0 lt ${first}`,
        `rule errno:${EAFNOSUPPORT} socket 0 gt ${last}`,
        ...between,
      ],
      ['x86'],
    );
  }
  if (s.restrictNamespaces) {
    perArch('RestrictNamespaces', 'allow', () => [
      `rule ${eperm} setns`,
      `rule errno:${ENOSYS} clone3`,
      ...NAMESPACE_FLAGS.flatMap((f) => [
        `rule ${eperm} unshare 0 masked_eq ${f} ${f}`,
        `rule ${eperm} clone 0 masked_eq ${f} ${f}`,
      ]),
    ]);
  }
  if (s.protectKernelTunables)
    perArch('ProtectKernelTunables', 'allow', () => [`rule ${eperm} _sysctl`], ['x32']);
  for (const d of s.denySets ?? [])
    perArch(d.label, 'allow', () => d.syscalls.map((n) => `rule ${eperm} ${n}`));
  if (s.protectKernelLogs) perArch('ProtectKernelLogs', 'allow', () => [`rule ${eperm} syslog`]);
  if (s.protectHostname)
    perArch('ProtectHostname', 'allow', () => [`rule ${eperm} sethostname`, `rule ${eperm} setdomainname`]);
  if (s.memoryDenyWriteExecute) {
    perArch('MemoryDenyWriteExecute', 'allow', (arch) =>
      arch === 'x86'
        ? [
            `rule ${eperm} mmap2 2 masked_eq 6 6`,
            `rule ${eperm} mmap`,
            `rule ${eperm} mprotect 2 masked_eq 4 4`,
            `rule ${eperm} pkey_mprotect 2 masked_eq 4 4`,
          ]
        : [
            `rule ${eperm} mmap 2 masked_eq 6 6`,
            `rule ${eperm} mprotect 2 masked_eq 4 4`,
            `rule ${eperm} pkey_mprotect 2 masked_eq 4 4`,
            `rule ${eperm} shmat 2 masked_eq 32768 32768`,
          ],
    );
  }
  if (s.restrictRealtime) {
    perArch('RestrictRealtime', 'allow', () => [
      ...[1, 2, 4].map((p) => `rule ${eperm} sched_setscheduler 1 eq ${p}`),
      `rule ${eperm} sched_setscheduler 1 gt 5`,
    ]);
  }
  if (s.restrictSuidSgid) {
    perArch('RestrictSUIDSGID', 'allow', () =>
      [0o4000, 0o2000].flatMap((m) => [
        `rule ${eperm} chmod 1 masked_eq ${m} ${m}`,
        `rule ${eperm} fchmod 1 masked_eq ${m} ${m}`,
        `rule ${eperm} fchmodat 2 masked_eq ${m} ${m}`,
        `rule ${eperm} mkdir 1 masked_eq ${m} ${m}`,
        `rule ${eperm} mkdirat 2 masked_eq ${m} ${m}`,
        `rule ${eperm} mknod 1 masked_eq ${m} ${m}`,
        `rule ${eperm} mknodat 2 masked_eq ${m} ${m}`,
        `rule ${eperm} open 1 masked_eq 64 64 2 masked_eq ${m} ${m}`,
        `rule ${eperm} openat 2 masked_eq 64 64 3 masked_eq ${m} ${m}`,
        `rule ${eperm} creat 1 masked_eq ${m} ${m}`,
      ]),
    );
  }
  if (s.lockPersonality) perArch('LockPersonality', 'allow', () => [`rule ${eperm} personality 0 ne 0`]);
  if (s.allow)
    perArch('SystemCallFilter', `errno:${s.errno ?? EPERM}`, () => s.allow!.map((n) => `rule allow ${n}`));
  if (s.nativeOnly)
    out.push({ label: `${s.name}: SystemCallArchitectures=native`, spec: 'filter native allow\nend\n' });
  return out;
}
