// A YAML configuration file the agent reads again while it runs (Hubble's dynamic exporter and dynamic metrics, as Cilium's ticker-driven watchers).
import fs from "node:fs";
import type { Logger } from "pino";

export type ConfigParse<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly errors: string[] };

export interface WatchedConfigFileOptions<T> {
  readonly path: string;
  /** The file's text (empty for a missing file) as a configuration, or every error naming its field. */
  readonly parse: (text: string) => ConfigParse<T>;
  /** Called with the configuration whenever the file's text changes and parses (and at the first read). */
  readonly apply: (config: T) => void;
  /** How often the file is read again (Cilium's watchers: every 10 s). */
  readonly reloadMs?: number;
  /** What the file configures, for the logs ("hubble flow logs", "hubble metrics"). */
  readonly what: string;
  readonly log: Logger;
}

/**
 * Reads the file at start and on a timer; a change that parses is applied, one that does not is logged with its errors
 * and the last good configuration stays; a missing file is an empty one.
 */
export class WatchedConfigFile<T> {
  private timer: NodeJS.Timeout | null = null;
  private lastText: string | undefined;

  constructor(private readonly opts: WatchedConfigFileOptions<T>) {}

  start(): void {
    this.reload();
    this.timer = setInterval(() => this.reload(), this.opts.reloadMs ?? 10_000);
    this.timer.unref();
  }

  /** Reads the file again and applies it when its text changed (also called by the timer). */
  reload(): void {
    let text: string;
    try {
      text = fs.readFileSync(this.opts.path, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
        this.opts.log.error({ path: this.opts.path, error: (err as Error).message }, `${this.opts.what}: config not read; keeping the current one`);
        return;
      }
      text = "";
    }
    if (text === this.lastText) return;
    const parsed = this.opts.parse(text);
    if (!parsed.ok) {
      this.opts.log.error({ path: this.opts.path, errors: parsed.errors }, `${this.opts.what}: invalid config; keeping the current one`);
      return;
    }
    this.lastText = text;
    this.opts.apply(parsed.value);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
