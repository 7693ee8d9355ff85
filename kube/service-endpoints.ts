// Services and their EndpointSlices (as the API lists them) → the addresses behind each Service, what toServices selects through (read by the operator and `policy trace`).
import type { ServiceEndpoints } from "../core/compiler.ts";
import { SERVICE_NAME_LABEL, type EndpointSliceObject, type ServiceObject } from "./objects.ts";

/**
 * Every Service with the addresses its EndpointSlices list (those labelled `kubernetes.io/service-name`
 * with its name, in its namespace). IPv4 and IPv6 slices count; FQDN slices name no address a packet
 * carries and are skipped. A slice whose Service does not exist selects nothing (there is no Service
 * for a toServices entry to name); a Service without slices has no backends.
 */
export function serviceEndpoints(services: readonly ServiceObject[], slices: readonly EndpointSliceObject[]): ServiceEndpoints[] {
  const addresses = new Map<string, Set<string>>();
  for (const slice of slices) {
    const service = slice.metadata.labels?.[SERVICE_NAME_LABEL];
    if (!service || (slice.addressType !== "IPv4" && slice.addressType !== "IPv6")) continue;
    const key = `${slice.metadata.namespace ?? ""}/${service}`;
    let set = addresses.get(key);
    if (!set) addresses.set(key, (set = new Set()));
    for (const ep of slice.endpoints ?? []) for (const a of ep.addresses ?? []) set.add(a);
  }
  const out: ServiceEndpoints[] = [];
  for (const svc of services) {
    const namespace = svc.metadata.namespace ?? "";
    const name = svc.metadata.name;
    out.push({
      namespace,
      name,
      labels: svc.metadata.labels ?? {},
      selectsPods: Object.keys(svc.spec?.selector ?? {}).length > 0,
      addresses: [...(addresses.get(`${namespace}/${name}`) ?? [])].sort(),
    });
  }
  return out.sort((a, b) => (a.namespace === b.namespace ? (a.name < b.name ? -1 : 1) : a.namespace < b.namespace ? -1 : 1));
}
