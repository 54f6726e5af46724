// Validate prometheus-operator objects (ServiceMonitor, PrometheusRule)
// against the CRD schemas compiled by @kubernetes-models/prometheus-operator.
// Input: a JSON array of Kubernetes objects on stdin. Objects of other API
// groups are ignored. Exit code 1 when any object fails, 2 on unknown kinds.
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const MODELS = { ServiceMonitor, PrometheusRule };
const GROUP = "monitoring.coreos.com/";

function check(object) {
  const Model = MODELS[object.kind];
  if (!Model) return `${object.kind}: no schema known for this kind`;
  try {
    new Model(object).validate();
    return null;
  } catch (error) {
    return `${object.kind}/${object.metadata?.name}: ${error.message}`;
  }
}

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const objects = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const ours = objects.filter((o) => (o.apiVersion ?? "").startsWith(GROUP));
const failures = ours.map(check).filter(Boolean);
for (const object of ours) console.log(`checked ${object.kind}/${object.metadata?.name}`);
for (const failure of failures) console.error(`FAIL ${failure}`);
process.exit(failures.length ? 1 : 0);
