#!/usr/bin/env node
// Regenerates data/ftrace-sites.json, the ftrace call sites the ftrace-real workload patches:
// - for every module of the cached Debian package: the number of `__mcount_loc` sites in its
//   core text and in its init text (src/consumers/ftrace/mcount.ts reads them from the .ko with
//   the loader's own layout);
// - for the traced subsystem (default net/netfilter): each module's site offsets inside its text,
//   delta-encoded (first offset, then differences), so the workload patches the real addresses;
// - for a few hot functions (BPF trampoline targets): module, function, site offset and the
//   number of register arguments from the function's C prototype in Linux 6.1 (cited below).
// Needs: npm run build and the dataset in the cache (scripts/fetch-dataset.sh).
// Usage: node scripts/gen-ftrace-sites.mjs [--subsystem net/netfilter] [--out data/ftrace-sites.json]
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';

const root = join(import.meta.dirname, '..');
const dist = (p) => join(root, 'dist', 'src', p);
const { openDataset, findCachedDataset, readModuleFile } = await import(dist('workloads/dataset/dataset.js'));
const { parseElf, stripModuleSignature } = await import(dist('consumers/modules/elf.js'));
const { layoutModule } = await import(dist('consumers/modules/layout.js'));
const { readMcountSites } = await import(dist('consumers/ftrace/mcount.js'));

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const subsystem = arg('--subsystem', 'net/netfilter');
const out = arg('--out', join(root, 'data', 'ftrace-sites.json'));

// Hot functions of a netfilter / virtio cloud machine, with their register-argument counts from
// the Linux 6.1 prototypes:
//   nf_conntrack_in(struct sk_buff *skb, const struct nf_hook_state *state)   net/netfilter/nf_conntrack_core.c
//   nft_do_chain(struct nft_pktinfo *pkt, void *priv)                          net/netfilter/nf_tables_core.c
//   ipt_do_table(void *priv, struct sk_buff *skb, const struct nf_hook_state *state)  net/ipv4/netfilter/ip_tables.c
//   virtnet_poll(struct napi_struct *napi, int budget)                         drivers/net/virtio_net.c
//   virtio_queue_rq(struct blk_mq_hw_ctx *hctx, const struct blk_mq_queue_data *bd)  drivers/block/virtio_blk.c
const HOT = [
  { module: 'nf_conntrack', function: 'nf_conntrack_in', nrArgs: 2 },
  { module: 'nf_tables', function: 'nft_do_chain', nrArgs: 2 },
  { module: 'ip_tables', function: 'ipt_do_table', nrArgs: 3 },
  { module: 'virtio_net', function: 'virtnet_poll', nrArgs: 2 },
  { module: 'virtio_blk', function: 'virtio_queue_rq', nrArgs: 2 },
];

const index = openDataset(findCachedDataset());
const downloads = join(dirname(dirname(index.root)), 'downloads');
const deb = existsSync(downloads)
  ? readdirSync(downloads).find((f) => index.packageName && f.startsWith(`${index.packageName}_`))
  : undefined;
const version = deb
  ? execFileSync('dpkg-deb', ['-f', join(downloads, deb), 'Version'])
      .toString()
      .trim()
  : null;

const modules = [];
const traced = {};
const hot = [];
let sites = 0;
let initSites = 0;
for (const m of [...index.modules].sort((a, b) => a.name.localeCompare(b.name))) {
  const elf = parseElf(stripModuleSignature(readModuleFile(join(index.root, m.path))).bytes);
  const layout = layoutModule(elf, m.name);
  const all = readMcountSites(elf, layout);
  const core = all.filter((s) => s.memType === 'text');
  const dir = dirname(
    relative(join(index.root, 'lib', 'modules', index.kernelRelease, 'kernel'), join(index.root, m.path)),
  );
  modules.push({
    name: m.name,
    dir,
    textBytes: layout.sizeBytes.text,
    sites: core.length,
    initSites: all.length - core.length,
  });
  sites += core.length;
  initSites += all.length - core.length;
  if (dir === subsystem || dir.startsWith(`${subsystem}/`)) {
    traced[m.name] = core.map((s, i) => (i === 0 ? s.offsetBytes : s.offsetBytes - core[i - 1].offsetBytes));
  }
  for (const h of HOT.filter((x) => x.module === m.name)) {
    const s = core.find((x) => x.fn === h.function);
    if (!s) throw new Error(`${h.module} has no site in ${h.function}`);
    hot.push({ ...h, offsetBytes: s.offsetBytes });
  }
}
if (hot.length !== HOT.length)
  throw new Error(`hot functions found: ${hot.map((h) => h.function).join(', ')}`);

const doc = {
  format: 'execmem-ftrace-sites/1',
  packageName: index.packageName,
  packageVersion: version,
  kernelRelease: index.kernelRelease,
  totals: { modules: modules.length, sites, initSites },
  subsystem,
  modules,
  traced,
  hot,
};
// One module per line, so the file diffs well.
const lines = [
  '{',
  ...Object.entries(doc)
    .filter(([k]) => !['modules', 'traced', 'hot'].includes(k))
    .map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)},`),
  '"modules":[',
  modules.map((r) => JSON.stringify(r)).join(',\n'),
  '],',
  '"traced":{',
  Object.entries(traced)
    .map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`)
    .join(',\n'),
  '},',
  `"hot":${JSON.stringify(hot)}`,
  '}',
];
writeFileSync(out, `${lines.join('\n')}\n`);
console.log(
  `wrote ${out}: ${modules.length} modules, ${sites} core-text sites (+${initSites} init), ${Object.keys(traced).length} modules of ${subsystem} with offsets, ${hot.length} hot functions; ${index.packageName} ${version ?? ''}`,
);
