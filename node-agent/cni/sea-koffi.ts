// koffi inside the CNI plugin's single executable (scripts/bundle.ts): what the plugin uses of it (load().func() and
// errno(), for flock in ipam-store.ts) from koffi's own native module, which travels as an asset of the executable.
//
// A native module is loaded from a file: on first use it is written beside the executable (the node's CNI bin dir,
// root's) under its content hash, once, by rename, so concurrent invocations never load a half-written one. Only the
// executable's build puts this module in place of the koffi package; nothing else imports it.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { getRawAsset } from "node:sea";

/** The asset's key in the executable's configuration (scripts/bundle.ts). */
export const KOFFI_ASSET = "koffi.node";
/** The file name the native module is written under beside the executable; the agent's install removes stale ones. */
export const KOFFI_FILE_PREFIX = ".membrane-cni-koffi-";

interface KoffiNative {
  load(library: string): { func(signature: string): (...args: unknown[]) => unknown };
  errno(): number;
}

let native: KoffiNative | undefined;

function loadNative(): KoffiNative {
  if (native) return native;
  const bytes = new Uint8Array(getRawAsset(KOFFI_ASSET));
  const hash = createHash("sha256").update(bytes).digest("hex").slice(0, 16);
  const file = path.join(path.dirname(process.execPath), `${KOFFI_FILE_PREFIX}${hash}.node`);
  if (!fs.existsSync(file)) {
    const tmp = `${file}.${process.pid}.tmp`;
    try {
      fs.writeFileSync(tmp, bytes, { mode: 0o644 });
      fs.renameSync(tmp, file);
    } catch (err) {
      fs.rmSync(tmp, { force: true });
      throw new Error(`membrane-cni: cannot write koffi's native module to ${file}: ${(err as Error).message}`, { cause: err });
    }
  }
  const mod = { exports: {} as KoffiNative };
  process.dlopen(mod, file);
  native = mod.exports;
  // The executable removed while this invocation ran (an uninstall, `membrane node cleanup`): the module stays mapped,
  // and the file is not left behind in a bin dir its cleanup already emptied.
  if (!fs.existsSync(process.execPath)) fs.rmSync(file, { force: true });
  return native;
}

export default {
  load: (library: string) => loadNative().load(library),
  errno: () => loadNative().errno(),
};
