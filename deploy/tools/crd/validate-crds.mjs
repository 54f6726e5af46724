// Validate prometheus-operator objects (ServiceMonitor, PrometheusRule), Argo
// Rollouts objects (Rollout, AnalysisTemplate) and Istio's VirtualService
// against the CRD schemas compiled by @kubernetes-models/prometheus-operator,
// .../argo-rollouts and .../istio.
// Input: a JSON array of Kubernetes objects on stdin. Objects of other API
// groups are ignored. Exit code 1 when any object fails or has a kind of those
// groups with no schema here.
import { AnalysisTemplate } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/AnalysisTemplate";
import { Rollout } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/Rollout";
import { VirtualService } from "@kubernetes-models/istio/networking.istio.io/v1/VirtualService";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const MODELS = { ServiceMonitor, PrometheusRule, Rollout, AnalysisTemplate, VirtualService };
const GROUPS = ["monitoring.coreos.com/", "argoproj.io/", "networking.istio.io/"];

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
const ours = objects.filter((o) => GROUPS.some((g) => (o.apiVersion ?? "").startsWith(g)));
const failures = ours.map(check).filter(Boolean);
for (const object of ours) console.log(`checked ${object.kind}/${object.metadata?.name}`);
for (const failure of failures) console.error(`FAIL ${failure}`);
process.exit(failures.length ? 1 : 0);
