// Test helper: a throwaway CA with an operator serving certificate (127.0.0.1) and one client certificate per node (CN = node name).
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export interface TestPki {
  readonly dir: string;
  file(name: string): string;
  read(name: string): Buffer;
  remove(): void;
}

export function makePki(clients: readonly string[]): TestPki {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-pki-"));
  const openssl = (args: string[]): void => void execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
  const issue = (name: string, ext: string): void => {
    openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", `${name}.key`]);
    openssl(["req", "-new", "-key", `${name}.key`, "-subj", `/CN=${name}`, "-out", `${name}.csr`]);
    fs.writeFileSync(path.join(dir, `${name}.ext`), ext);
    openssl(["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-extfile", `${name}.ext`, "-out", `${name}.crt`]);
  };
  openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ca.key"]);
  openssl(["req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=test-ca", "-days", "1", "-out", "ca.crt"]);
  issue("operator", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  for (const c of clients) issue(c, "extendedKeyUsage=clientAuth\n");
  return {
    dir,
    file: (name) => path.join(dir, name),
    read: (name) => fs.readFileSync(path.join(dir, name)),
    remove: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}
