// Debian's Chromium driven by playwright-core (no browser download): a fresh profile in a
// temporary directory per launch, removed on close.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const VIEWPORT = { width: 1280, height: 800 };

const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * Launches Chromium with a fresh `--user-data-dir` (Playwright passes the directory given to
 * launchPersistentContext as that flag). Returns the context; `close()` also removes the
 * profile directory.
 */
export async function launch({ timeout = 30_000 } = {}) {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`);
  const profile = mkdtempSync(join(tmpdir(), 'switchboard-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: VIEWPORT,
    timeout,
  });
  context.setDefaultTimeout(10_000);
  const close = context.close.bind(context);
  context.close = async () => {
    let timer;
    try {
      await Promise.race([close(), new Promise((r) => { timer = setTimeout(r, 10_000); })]);
    } finally {
      clearTimeout(timer);
      rmSync(profile, { recursive: true, force: true });
    }
  };
  // Surface page errors in the test output: an uncaught exception in a page is a bug.
  context.pageErrors = [];
  context.on('page', (page) => page.on('pageerror', (e) => context.pageErrors.push(`${page.url()}: ${e.message}`)));
  return context;
}

/** Opens the chat demo as `name` in `room`. */
export async function openChat(context, server, { name, room = 'lobby' }) {
  const page = await context.newPage();
  await page.goto(`${server.httpUrl}/?name=${encodeURIComponent(name)}&room=${encodeURIComponent(room)}`);
  await page.locator('#status.connected').waitFor();
  await page.locator(`#members li .name`, { hasText: name }).first().waitFor();
  return page;
}

/** The chat page's messages as `name: text`, in the order shown. */
export async function chatLines(page) {
  return page.locator('#log .msg').evaluateAll((els) => els.map((el) => `${el.querySelector('.who').textContent}: ${el.querySelector('.text').textContent}`));
}
