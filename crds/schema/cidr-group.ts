// Schema of CiliumCIDRGroup: a named, labelled set of CIDRs outside the cluster that CNP/CCNP CIDR set
// entries name (cidrGroupRef) or select (cidrGroupSelector). cilium.io, cluster-scoped, as in Cilium.
import { AGE_COLUMN, arr, defineCRD, obj, str } from "./common.ts";

export const ciliumCIDRGroupCRD = defineCRD({
  group: "cilium.io",
  version: "v2",
  alsoServed: ["v2alpha1"],
  kind: "CiliumCIDRGroup",
  plural: "ciliumcidrgroups",
  shortNames: ["ccg"],
  categories: ["cilium"],
  scope: "Cluster",
  statusSubresource: false,
  printerColumns: [AGE_COLUMN],
  schema: obj(
    "A group of CIDR blocks outside the cluster, kept in one place and named by many policies: a fromCIDRSet or " +
      "toCIDRSet entry with cidrGroupRef (this object's name) or cidrGroupSelector (its labels) stands for every " +
      "block in externalCIDRs, minus the entry's except. Editing or deleting the group changes what those " +
      "policies allow or deny without touching them.",
    {
      spec: obj(
        "The blocks of the group.",
        {
          externalCIDRs: arr(
            "The group's blocks in CIDR notation (IPv4 or IPv6).",
            str('A block, e.g. "203.0.113.0/24" or "2001:db8::/32".', { format: "cidr" }),
          ),
        },
        { required: ["externalCIDRs"] },
      ),
    },
    { required: ["metadata", "spec"] },
  ),
});
