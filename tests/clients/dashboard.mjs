// Drives Herald's operator dashboard in headless Chromium (Debian's `chromium`, through
// playwright-core with executablePath; no browser download). Used by tests/it/dashboard.rs.
//
// Usage: node dashboard.mjs <origin> <subscription id> <screenshot path>
// Opens <origin>/admin/, checks the throughput, status and subscription panels, opens the
// subscription, checks its dead letter and delivery log, presses "Replay dead letters", waits
// until the dead letters are gone, and saves a screenshot. Prints one JSON line per step and
// exits non-zero on any failure.
import { chromium } from "playwright-core";

const [origin, sub, shot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const step = (name, data) => console.log(JSON.stringify({ step: name, ...data }));

const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const started = Date.now();
  await page.goto(origin + "/admin/");
  const row = page.locator(`tr.sub[data-id="${sub}"]`);
  await row.waitFor({ timeout: 15000 });
  step("loaded", { ms: Date.now() - started });

  const activeCount = await page.locator('[data-status="active"] b').textContent();
  const topics = await page.locator('[data-testid="topics"] tbody tr').count();
  step("panels", { active: Number(activeCount), topics });

  await row.click();
  await page.locator('[data-testid="dead"] tbody tr').first().waitFor({ timeout: 15000 });
  const dead = await page.locator('[data-testid="dead"] tbody tr').count();
  const deliveries = await page.locator('[data-testid="deliveries"] tbody tr').count();
  const failedShown = await page.locator('[data-testid="deliveries"] tbody tr', { hasText: "failed" }).count();
  step("detail", { dead, deliveries, failedShown });

  await page.click('[data-testid="replay"]');
  await page.locator('[data-testid="replay-result"]', { hasText: "will be sent again" }).waitFor({ timeout: 15000 });
  step("replay", { text: await page.locator('[data-testid="replay-result"]').textContent() });

  await page.waitForFunction(() => document.querySelectorAll('[data-testid="dead"] tbody tr').length === 0, null, { timeout: 20000 });
  step("replayed", {});
  await page.screenshot({ path: shot, fullPage: true });
  step("screenshot", { path: shot, pageErrors: errors });
  if (errors.length) process.exitCode = 2;
} finally {
  await browser.close();
}
