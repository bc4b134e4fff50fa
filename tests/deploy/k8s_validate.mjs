// k8s_validate.mjs - deploy/k8s offline: every object against the Kubernetes OpenAPI schemas
// (kubernetes-models), then the cross-checks no schema makes: the StatefulSet's replicas are the
// job file's servers (named ps-server-<i>.<service>:<port>), the indexed Job's completions and
// parallelism are its workers, the ports agree, probes and resource requests are there, and every
// ConfigMap / PVC a pod mounts exists.
//   node k8s_validate.mjs DIR [RENDERED.yaml]
// RENDERED: `kubectl kustomize DIR` output; without it the kustomization is read here (resources
// plus configMapGenerator files). Exits 0 when all holds, 1 listing every failure.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments, parse } from "yaml";

const [dir, rendered] = process.argv.slice(2);
if (!dir) {
  console.error("usage: node k8s_validate.mjs DIR [RENDERED.yaml]");
  process.exit(2);
}
const failures = [];
const fail = (where, msg) => failures.push(`${where}: ${msg}`);

function docs(text, file) {
  return parseAllDocuments(text).map((d) => {
    if (d.errors.length) throw new Error(`${file}: ${d.errors[0].message}`);
    return d.toJS();
  }).filter((o) => o != null);
}

// The objects kustomize would emit (names of generated ConfigMaps without the hash suffix).
function load() {
  const kfile = join(dir, "kustomization.yaml");
  const k = parse(readFileSync(kfile, "utf8"));
  const generated = new Set((k.configMapGenerator || []).map((g) => g.name));
  if (rendered) return { objs: docs(readFileSync(rendered, "utf8"), rendered), generated };
  const objs = [];
  for (const r of k.resources || []) objs.push(...docs(readFileSync(join(dir, r), "utf8"), r));
  for (const g of k.configMapGenerator || []) {
    const data = {};
    for (const f of g.files || []) data[f.split("/").pop()] = readFileSync(join(dir, f), "utf8");
    objs.push({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: g.name }, data });
  }
  return { objs, generated };
}

async function validateSchema(o, where) {
  const [group, version] = o.apiVersion.includes("/") ? o.apiVersion.split("/") : [null, o.apiVersion];
  const mod = `kubernetes-models/${group ? group + "/" : ""}${version}/${o.kind}`;
  let Model;
  try {
    Model = (await import(mod))[o.kind];
  } catch (e) {
    return fail(where, `no schema for ${o.apiVersion} ${o.kind}`);
  }
  try {
    new Model(o).validate();
  } catch (e) {
    fail(where, `schema: ${e.message.split("\n").slice(0, 4).join(" ")}`);
  }
}

// Generated names carry a "-<hash>" suffix once rendered.
const sameName = (ref, name, generated) =>
  ref === name || (generated.has(name) && new RegExp(`^${name}-[a-z0-9]{10}$`).test(ref));

const { objs, generated } = load();
const where = (o) => `${o.kind}/${o.metadata?.name}`;
for (const o of objs) await validateSchema(o, where(o));

const of = (kind) => objs.filter((o) => o.kind === kind);
const sts = of("StatefulSet"), jobs = of("Job"), svcs = of("Service"), cms = of("ConfigMap");
const pvcs = of("PersistentVolumeClaim");
if (sts.length !== 1) fail("manifests", `want 1 StatefulSet (the servers), got ${sts.length}`);
if (jobs.length !== 1) fail("manifests", `want 1 Job (the workers), got ${jobs.length}`);
const jobCm = cms.find((c) => c.data && c.data["job.json"]);
if (!jobCm) fail("manifests", "no ConfigMap holds job.json");

if (sts.length === 1 && jobs.length === 1 && jobCm) {
  const s = sts[0], w = jobs[0];
  let job;
  try {
    job = JSON.parse(jobCm.data["job.json"]);
  } catch (e) {
    fail(where(jobCm), `job.json: ${e.message}`);
  }
  const servers = job?.cluster?.servers, workers = job?.cluster?.workers ?? 1;
  const svc = svcs.find((v) => v.metadata.name === s.spec.serviceName);
  if (!svc) fail(where(s), `serviceName "${s.spec.serviceName}": no such Service`);
  else {
    if (svc.spec.clusterIP !== "None") fail(where(svc), "must be headless (clusterIP: None)");
    const labels = s.spec.template.metadata?.labels || {};
    for (const [k, v] of Object.entries(svc.spec.selector || {}))
      if (labels[k] !== v) fail(where(svc), `selector ${k}=${v} does not match the server pods`);
  }
  if (!Array.isArray(servers)) fail("job.json", "cluster.servers must list the servers' DNS names");
  else {
    if (s.spec.replicas !== servers.length)
      fail(where(s), `replicas ${s.spec.replicas}, but job.json cluster.servers has ${servers.length}`);
    const svcPort = svc?.spec.ports?.[0];
    const c = s.spec.template.spec.containers[0];
    const cport = (c.ports || []).find((p) => p.name === svcPort?.targetPort || p.containerPort === svcPort?.targetPort);
    if (!cport) fail(where(s), `no container port for the Service's targetPort ${svcPort?.targetPort}`);
    servers.forEach((a, i) => {
      const want = `${s.metadata.name}-${i}.${s.spec.serviceName}`;
      const m = /^([^:]+):(\d+)$/.exec(a);
      if (!m || (m[1] !== want && !m[1].startsWith(want + ".")))
        fail("job.json", `cluster.servers[${i}] = "${a}", want "${want}:PORT" (pod ordinal ${i})`);
      else if (svcPort && Number(m[2]) !== svcPort.port)
        fail("job.json", `cluster.servers[${i}] port ${m[2]}, but Service ${svc.metadata.name} port ${svcPort.port}`);
      else if (cport && Number(m[2]) !== cport.containerPort)
        fail("job.json", `cluster.servers[${i}] port ${m[2]}, but the server's containerPort ${cport.containerPort}`);
    });
    const cmd = [...(c.command || []), ...(c.args || [])].join(" ");
    if (!/--shard\s+"?\$\{HOSTNAME##\*-\}"?/.test(cmd))
      fail(where(s), "the server's --shard must come from its pod ordinal (${HOSTNAME##*-})");
    for (const probe of ["readinessProbe", "livenessProbe"])
      if (!c[probe]) fail(where(s), `server container has no ${probe}`);
    if (!/--serve-after-job\b/.test(cmd))
      fail(where(s), "the server needs --serve-after-job (a StatefulSet restarts a container that exits when the job ends)");
  }
  if (w.spec.completionMode !== "Indexed") fail(where(w), "completionMode must be Indexed (rank = JOB_COMPLETION_INDEX)");
  if (w.spec.completions !== workers)
    fail(where(w), `completions ${w.spec.completions}, but job.json cluster.workers is ${workers}`);
  if (w.spec.parallelism !== workers)
    fail(where(w), `parallelism ${w.spec.parallelism}, but job.json cluster.workers is ${workers} (a sync job needs every rank at once)`);
  const wc = w.spec.template.spec.containers[0];
  if (!/--rank\s+"?\$\{?JOB_COMPLETION_INDEX\}?"?/.test([...(wc.command || []), ...(wc.args || [])].join(" ")))
    fail(where(w), "the worker's --rank must be $JOB_COMPLETION_INDEX");
  // A directory the job file names must be on a volume of that pod: persistent for the servers'
  // checkpoints (a claim), and for a worker's position one that outlives a restart in the pod.
  const mountFor = (o, path) => {
    const c = o.spec.template.spec.containers[0];
    const m = (c.volumeMounts || []).filter((v) => path === v.mountPath || path.startsWith(v.mountPath.replace(/\/$/, "") + "/"));
    return m.sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
  };
  const ckpt = job?.server?.checkpoint_dir, state = job?.fit?.state_dir;
  if (ckpt) {
    const m = mountFor(s, ckpt);
    const claims = new Set([...(s.spec.volumeClaimTemplates || []).map((t) => t.metadata.name),
      ...(s.spec.template.spec.volumes || []).filter((v) => v.persistentVolumeClaim).map((v) => v.name)]);
    if (!m) fail(where(s), `job.json server.checkpoint_dir ${ckpt} is on no volume of the server`);
    else if (!claims.has(m.name))
      fail(where(s), `job.json server.checkpoint_dir ${ckpt} is on volume ${m.name}, which is not a PersistentVolumeClaim: a restarted pod would lose it`);
  }
  if (state) {
    if (!mountFor(w, state)) fail(where(w), `job.json fit.state_dir ${state} is on no volume of the worker`);
    if (w.spec.template.spec.restartPolicy !== "OnFailure")
      fail(where(w), `restartPolicy ${w.spec.template.spec.restartPolicy}: a worker restarted in a new pod loses fit.state_dir (use OnFailure)`);
  }
  for (const o of [s, w]) {
    const spec = o.spec.template.spec;
    const vols = new Set([...(spec.volumes || []).map((v) => v.name),
      ...(o.spec.volumeClaimTemplates || []).map((t) => t.metadata.name)]);
    for (const c of spec.containers)
      for (const m of c.volumeMounts || [])
        if (!vols.has(m.name)) fail(where(o), `container ${c.name} mounts ${m.name}, which is no volume`);
    for (const c of spec.containers)
      if (!c.resources?.requests?.cpu || !c.resources?.requests?.memory)
        fail(where(o), `container ${c.name} has no cpu and memory requests`);
    for (const v of spec.volumes || []) {
      if (v.configMap && !cms.some((m) => sameName(v.configMap.name, m.metadata.name, generated) ||
                                          sameName(m.metadata.name, v.configMap.name, generated)))
        fail(where(o), `volume ${v.name}: no ConfigMap ${v.configMap.name}`);
      if (v.persistentVolumeClaim && !pvcs.some((p) => p.metadata.name === v.persistentVolumeClaim.claimName))
        fail(where(o), `volume ${v.name}: no PersistentVolumeClaim ${v.persistentVolumeClaim.claimName}`);
    }
  }
}

if (failures.length) {
  for (const f of failures) console.error(`k8s_validate: ${f}`);
  process.exit(1);
}
console.log(`k8s_validate: ${objs.length} objects valid; servers, workers and ports agree`);
