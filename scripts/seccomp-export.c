/*
 * seccomp-export: build seccomp filters with libseccomp and print the classic BPF program
 * libseccomp generates for each (seccomp_export_bpf()), in `tcpdump -ddd` text form.
 *
 * Why a C program: the filters systemd installs are whatever libseccomp makes of its rules, so
 * the real programs come from libseccomp itself, not from a re-implementation. The tests compile
 * this with gcc against libseccomp-dev; scripts/gen-bpf-real.mjs uses it to build the bpf-real
 * corpus. Input on stdin, one directive per line:
 *
 *   filter ARCH DEFAULT      start a filter: ARCH native|x86_64|x86|x32; DEFAULT an action
 *   arch ARCH                add an architecture to the current filter
 *   badarch ACTION           SCMP_FLTATR_ACT_BADARCH
 *   rule ACTION SYSCALL [ARG OP VALUE [MASK]]...   seccomp_rule_add_exact (ARG 0..5; OP
 *                            eq|ne|lt|le|gt|ge|masked_eq; for masked_eq VALUE is the mask and
 *                            MASK the datum, as SCMP_A*(SCMP_CMP_MASKED_EQ, mask, datum))
 *   end                      export the filter: prints "# NAME", the count, then code jt jf k lines
 *
 * ACTION: allow | kill | kill_process | errno:N | trap | log. A syscall unknown on an arch is
 * skipped (as systemd does), reported on stderr.
 */
#include <errno.h>
#include <seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint32_t parse_action(const char *s) {
	if (!strcmp(s, "allow")) return SCMP_ACT_ALLOW;
	if (!strcmp(s, "kill")) return SCMP_ACT_KILL;
	if (!strcmp(s, "kill_process")) return SCMP_ACT_KILL_PROCESS;
	if (!strcmp(s, "trap")) return SCMP_ACT_TRAP;
	if (!strcmp(s, "log")) return SCMP_ACT_LOG;
	if (!strncmp(s, "errno:", 6)) return SCMP_ACT_ERRNO(atoi(s + 6));
	fprintf(stderr, "bad action %s\n", s);
	exit(2);
}

static uint32_t parse_arch(const char *s) {
	if (!strcmp(s, "native")) return SCMP_ARCH_NATIVE;
	if (!strcmp(s, "x86_64")) return SCMP_ARCH_X86_64;
	if (!strcmp(s, "x86")) return SCMP_ARCH_X86;
	if (!strcmp(s, "x32")) return SCMP_ARCH_X32;
	fprintf(stderr, "bad arch %s\n", s);
	exit(2);
}

static enum scmp_compare parse_op(const char *s) {
	if (!strcmp(s, "eq")) return SCMP_CMP_EQ;
	if (!strcmp(s, "ne")) return SCMP_CMP_NE;
	if (!strcmp(s, "lt")) return SCMP_CMP_LT;
	if (!strcmp(s, "le")) return SCMP_CMP_LE;
	if (!strcmp(s, "gt")) return SCMP_CMP_GT;
	if (!strcmp(s, "ge")) return SCMP_CMP_GE;
	if (!strcmp(s, "masked_eq")) return SCMP_CMP_MASKED_EQ;
	fprintf(stderr, "bad op %s\n", s);
	exit(2);
}

static void export_filter(scmp_filter_ctx ctx) {
	FILE *tmp = tmpfile();
	if (!tmp || seccomp_export_bpf(ctx, fileno(tmp)) < 0) {
		fprintf(stderr, "seccomp_export_bpf failed\n");
		exit(1);
	}
	long n = ftell(tmp) >= 0 ? lseek(fileno(tmp), 0, SEEK_END) : -1;
	if (n < 0 || n % 8) {
		fprintf(stderr, "bad export size %ld\n", n);
		exit(1);
	}
	lseek(fileno(tmp), 0, SEEK_SET);
	printf("%ld\n", n / 8);
	for (long i = 0; i < n / 8; i++) {
		unsigned char b[8];
		if (read(fileno(tmp), b, 8) != 8) exit(1);
		unsigned code = b[0] | (b[1] << 8);
		unsigned k = b[4] | (b[5] << 8) | (b[6] << 16) | ((unsigned)b[7] << 24);
		printf("%u %u %u %u\n", code, b[2], b[3], k);
	}
	fclose(tmp);
}

int main(void) {
	char line[4096];
	scmp_filter_ctx ctx = NULL;
	uint32_t arch = SCMP_ARCH_NATIVE;
	while (fgets(line, sizeof(line), stdin)) {
		char *tok[32];
		int nt = 0;
		for (char *p = strtok(line, " \t\n"); p && nt < 32; p = strtok(NULL, " \t\n")) tok[nt++] = p;
		if (nt == 0 || tok[0][0] == '#') continue;
		if (!strcmp(tok[0], "filter") && nt == 3) {
			ctx = seccomp_init(parse_action(tok[2]));
			arch = parse_arch(tok[1]);
			if (!ctx) exit(1);
			if (arch != SCMP_ARCH_NATIVE && arch != seccomp_arch_native()) {
				seccomp_arch_remove(ctx, seccomp_arch_native());
				seccomp_arch_add(ctx, arch);
			}
			seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
		} else if (!strcmp(tok[0], "arch") && nt == 2 && ctx) {
			int r = seccomp_arch_add(ctx, parse_arch(tok[1]));
			if (r < 0 && r != -EEXIST) exit(1);
		} else if (!strcmp(tok[0], "badarch") && nt == 2 && ctx) {
			seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, parse_action(tok[1]));
		} else if (!strcmp(tok[0], "rule") && nt >= 3 && ctx) {
			struct scmp_arg_cmp cmp[6];
			unsigned nc = 0;
			for (int i = 3; i + 2 < nt && nc < 6;) {
				enum scmp_compare op = parse_op(tok[i + 1]);
				cmp[nc].arg = atoi(tok[i]);
				cmp[nc].op = op;
				cmp[nc].datum_a = strtoull(tok[i + 2], NULL, 0);
				cmp[nc].datum_b = 0;
				i += 3;
				if (op == SCMP_CMP_MASKED_EQ && i < nt) cmp[nc].datum_b = strtoull(tok[i++], NULL, 0);
				nc++;
			}
			int nr = seccomp_syscall_resolve_name_arch(arch == SCMP_ARCH_NATIVE ? seccomp_arch_native() : arch, tok[2]);
			if (nr == __NR_SCMP_ERROR) {
				fprintf(stderr, "unknown syscall %s, skipped\n", tok[2]);
				continue;
			}
			int r = seccomp_rule_add_exact_array(ctx, parse_action(tok[1]), nr, nc, cmp);
			if (r < 0) fprintf(stderr, "rule %s: %s, skipped\n", tok[2], strerror(-r));
		} else if (!strcmp(tok[0], "end") && ctx) {
			export_filter(ctx);
			seccomp_release(ctx);
			ctx = NULL;
		} else {
			fprintf(stderr, "bad line: %s\n", tok[0]);
			return 2;
		}
	}
	return 0;
}
