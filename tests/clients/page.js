// Drives herald's status page in headless Chromium for tests/status_page.rs.
//
// Usage: node page.js            (reads one JSON command per line on stdin, answers one JSON
//                                  line per command on stdout: {"ok": true, ...} or
//                                  {"ok": false, "error": "..."})
// Env:   CHROMIUM (default /usr/bin/chromium)
//
// Every request any page makes is recorded (URL), and so is every console message of type
// "error" and every uncaught script error, each tagged with the phase the test set.
'use strict';

const readline = require('readline');
const { chromium } = require('playwright-core');

const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'];

let browser;
const pages = new Map();
const blocks = new Map();
const RS = '\x1e';
const requests = [];
const consoleErrors = [];
const pageErrors = [];
let phase = 'start';

function reply(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function page(name) {
  const p = pages.get(name);
  if (!p) throw new Error(`no page named ${name}`);
  return p;
}

const commands = {
  async open({ name, url, width, height, color_scheme }) {
    const context = await browser.newContext({
      viewport: { width, height },
      colorScheme: color_scheme || 'light',
    });
    const p = await context.newPage();
    p.on('request', (r) => requests.push({ page: name, phase, url: r.url() }));
    p.on('websocket', (ws) => requests.push({ page: name, phase, url: ws.url() }));
    p.on('console', (m) => {
      if (m.type() === 'error') {
        consoleErrors.push({ page: name, phase, text: m.text(), url: m.location().url || '' });
      }
    });
    p.on('pageerror', (e) => pageErrors.push({ page: name, phase, text: String(e && e.stack || e) }));
    pages.set(name, p);
    await p.goto(url, { waitUntil: 'load' });
    return {};
  },

  async phase({ name }) {
    phase = name;
    return {};
  },

  // Wait for the connection state (data-state of #connection).
  async wait_state({ name, state, timeout_ms }) {
    const p = await page(name);
    const started = Date.now();
    await p.waitForSelector(`#connection[data-state="${state}"]`, { timeout: timeout_ms });
    const text = await p.textContent('#connection-text');
    return { elapsed_ms: Date.now() - started, text };
  },

  // Wait for an element matching `selector` whose text contains `text`; answers its
  // data-origin and the time waited.
  async wait_text({ name, selector, text, timeout_ms }) {
    const p = await page(name);
    const started = Date.now();
    const handle = await p.waitForFunction(
      ([sel, want]) => [...document.querySelectorAll(sel)].find((e) => e.textContent.includes(want)) || null,
      [selector, text],
      { timeout: timeout_ms, polling: 50 },
    );
    const origin = await handle.evaluate((e) => e.dataset.origin || null);
    return { elapsed_ms: Date.now() - started, origin };
  },

  // Make requests whose URL contains `pattern` fail, as if the network were down.
  async block({ name, pattern }) {
    const p = await page(name);
    const matcher = (url) => url.href.includes(pattern);
    const handler = (route) => route.abort('connectionrefused');
    blocks.set(name + RS + pattern, { matcher, handler });
    await p.route(matcher, handler);
    return {};
  },

  async unblock({ name, pattern }) {
    const p = await page(name);
    const b = blocks.get(name + RS + pattern);
    if (!b) throw new Error(`${pattern} is not blocked on ${name}`);
    blocks.delete(name + RS + pattern);
    await p.unroute(b.matcher, b.handler);
    return {};
  },

  // Answer requests whose URL contains `pattern` with `body` (JSON), standing in for an
  // endpoint herald does not have yet.
  async fulfill({ name, pattern, body }) {
    const p = await page(name);
    await p.route((url) => url.href.includes(pattern), (route) => route.fulfill({
      status: 200, contentType: 'application/json', body: JSON.stringify(body),
    }));
    return {};
  },

  async eval({ name, js }) {
    const p = await page(name);
    return { value: await p.evaluate(js) };
  },

  async screenshot({ name, path, width, height }) {
    const p = await page(name);
    if (width && height) await p.setViewportSize({ width, height });
    await p.screenshot({ path, fullPage: true, animations: 'disabled' });
    return {};
  },

  async report() {
    return { requests, console_errors: consoleErrors, page_errors: pageErrors };
  },

  async close() {
    await browser.close();
    setImmediate(() => process.exit(0));
    return {};
  },
};

async function main() {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: FLAGS,
  });
  reply({ ok: true, ready: true, version: browser.version() });
  const rl = readline.createInterface({ input: process.stdin });
  // One command at a time, in order.
  let chain = Promise.resolve();
  rl.on('line', (line) => {
    chain = chain.then(async () => {
      let cmd;
      try {
        cmd = JSON.parse(line);
        const run = commands[cmd.cmd];
        if (!run) throw new Error(`unknown command ${cmd.cmd}`);
        reply({ ok: true, ...(await run(cmd)) });
      } catch (e) {
        reply({ ok: false, error: String(e && e.message || e) });
      }
    });
  });
  rl.on('close', () => chain.then(() => browser.close()).then(() => process.exit(0)));
}

main().catch((e) => {
  reply({ ok: false, error: String(e && e.stack || e) });
  process.exit(1);
});
