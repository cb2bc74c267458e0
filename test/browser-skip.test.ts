// The browser tests' skip line names the missing Chromium and how to install it.
import { describe, expect, it } from 'vitest';
import { chromiumSkipReason } from './browser-skip';

describe('browser test skips', () => {
  it('name the Chromium path and the package to install', () => {
    const r = chromiumSkipReason('/no/such/bin/chromium');
    expect(r).toContain('no Chromium at /no/such/bin/chromium');
    expect(r).toContain('apt-get install chromium');
    expect(r).toContain('.ci/apt-packages');
    expect(chromiumSkipReason(process.execPath)).toBeNull();
  });
});
