// Why the headless-Chromium tests (test/edge.page.test.ts, test/edge.browser.test.ts) skip, so that a
// skip says so in the run's output instead of passing silently.
import { existsSync } from 'node:fs';

/** null when Chromium is at `path`; otherwise the reason the browser tests skip and how to install it. */
export function chromiumSkipReason(path: string): string | null {
  if (existsSync(path)) return null;
  return `skipped: no Chromium at ${path}; install it from the system package manager ` +
    '(Debian: apt-get install chromium; the CI script .ci/run installs it from .ci/apt-packages)';
}
