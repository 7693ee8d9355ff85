// A process's container from its cgroup path (kubelet cgroupfs and systemd layouts, v1 and v2 lines), the pod status's
// containers, the image repository Tetragon's containerSelector calls repo, and the selector's admission.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { containerIdFromCgroupPath, containerIdFromProcCgroup, containerSelectorErrors, imageRepo, podContainersFromStatus, tetragonContainer } from "./container.ts";

const ID = "3f1e5c0a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";
const ID2 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

describe("containers", () => {
  it("reads the container ID from the kubelet's cgroupfs and systemd paths, and nothing from other cgroups", () => {
    assert.equal(containerIdFromCgroupPath(`/membrane-realnode-n1/kubepods/besteffort/pod0b5e0c77-1d44-4c52-9d5a-0e8d1b0c7f11/${ID}`), ID);
    assert.equal(containerIdFromCgroupPath(`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b5e.slice/cri-containerd-${ID}.scope`), ID);
    assert.equal(containerIdFromCgroupPath(`/system.slice/docker-${ID}.scope`), ID);
    assert.equal(containerIdFromCgroupPath(`/kubepods/pod1/${ID}/init`), ID, "one level below the container's cgroup");
    assert.equal(containerIdFromCgroupPath("/"), undefined);
    assert.equal(containerIdFromCgroupPath("/membrane-realnode-n1/node"), undefined);
    assert.equal(containerIdFromCgroupPath(`/kubepods/besteffort/pod1/${ID.slice(1)}`), undefined, "63 hex digits are no container ID");
    assert.equal(containerIdFromCgroupPath(`/kubepods/besteffort/pod1/${ID.toUpperCase()}`), undefined);
  });

  it("prefers the unified (v2) line of /proc/PID/cgroup and falls back to a v1 controller's (hybrid hosts)", () => {
    const hybrid = [`12:pids:/kubepods/besteffort/pod1/${ID}`, `4:memory:/kubepods/besteffort/pod1/${ID}`, "1:name=systemd:/init.scope", `0::/kubepods/besteffort/pod1/${ID2}`].join("\n");
    assert.equal(containerIdFromProcCgroup(hybrid), ID2);
    const v1only = [`12:pids:/kubepods/besteffort/pod1/${ID}`, "0::/", ""].join("\n");
    assert.equal(containerIdFromProcCgroup(v1only), ID);
    assert.equal(containerIdFromProcCgroup("0::/user.slice/session-1.scope\n"), undefined, "a host process");
    assert.equal(containerIdFromProcCgroup(`5:cpu,cpuacct:/kubepods/pod1/${ID}\n`), ID, "controller lists with commas");
  });

  it("takes every container status with an ID (init, regular, ephemeral) and strips the runtime's scheme", () => {
    const status = {
      initContainerStatuses: [{ name: "init", containerID: `containerd://${ID2}`, image: "busybox:1.36", imageID: "sha256:aa", state: { terminated: { startedAt: "2026-12-05T03:00:00Z" } } }],
      containerStatuses: [
        { name: "app", containerID: `containerd://${ID}`, image: "docker.io/library/busybox:1.36", imageID: "docker.io/library/busybox@sha256:bb", state: { running: { startedAt: "2026-12-05T03:00:01Z" } } },
        { name: "waiting", image: "x", imageID: "", state: { waiting: { reason: "ContainerCreating" } } },
      ],
    };
    assert.deepEqual(podContainersFromStatus(status), [
      { id: ID2, name: "init", image: "busybox:1.36", imageId: "sha256:aa", startedAt: "2026-12-05T03:00:00Z" },
      { id: ID, name: "app", image: "docker.io/library/busybox:1.36", imageId: "docker.io/library/busybox@sha256:bb", startedAt: "2026-12-05T03:00:01Z" },
    ]);
    assert.deepEqual(podContainersFromStatus(undefined), []);
    assert.deepEqual(tetragonContainer({ id: ID, name: "app", image: "busybox:1.36", imageId: "sha256:bb", startedAt: "2026-12-05T03:00:01Z" }, 7), {
      id: ID, name: "app", image: { id: "sha256:bb", name: "busybox:1.36" }, start_time: "2026-12-05T03:00:01Z", pid: 7, maybe_exec_probe: false,
    });
  });

  it("repo is the image reference without its tag or digest (a registry port is kept)", () => {
    assert.equal(imageRepo("docker.io/library/nginx:1.27"), "docker.io/library/nginx");
    assert.equal(imageRepo("nginx@sha256:abc"), "nginx");
    assert.equal(imageRepo("localhost:5000/team/app:v2@sha256:abc"), "localhost:5000/team/app");
    assert.equal(imageRepo("localhost:5000/team/app"), "localhost:5000/team/app");
  });

  it("admits Tetragon's container fields with label-selector operators and names every other key, operator or value list", () => {
    assert.deepEqual(containerSelectorErrors({ matchExpressions: [{ key: "name", operator: "In", values: ["app"] }, { key: "repo", operator: "Exists" }], matchLabels: { name: "app" } }, "spec.containerSelector"), []);
    const errors = containerSelectorErrors({
      matchLabels: { image: "x", name: 3 },
      matchExpressions: [
        { key: "Name", operator: "In", values: ["a"] },
        { key: "name", operator: "in", values: ["a"] },
        { key: "name", operator: "In" },
        { key: "name", operator: "Exists", values: ["a"] },
        { key: "name", operator: "NotIn", values: ["a"], value: "b" },
      ],
    }, "spec.containerSelector");
    assert.deepEqual(errors.map((e) => e.path), [
      "spec.containerSelector.matchLabels.image",
      "spec.containerSelector.matchLabels.name",
      "spec.containerSelector.matchExpressions[0].key",
      "spec.containerSelector.matchExpressions[1].operator",
      "spec.containerSelector.matchExpressions[2].values",
      "spec.containerSelector.matchExpressions[3].values",
      "spec.containerSelector.matchExpressions[4].value",
    ]);
    assert.match(errors[0]!.message, /not a container field: a containerSelector matches "name" or "repo"/);
    assert.match(errors[3]!.message, /In, NotIn, Exists or DoesNotExist \(case-sensitive\)/);
  });
});
