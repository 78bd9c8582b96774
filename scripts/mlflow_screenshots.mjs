// Screenshots of the MLflow UI for the docs: the runs table (parent run expanded: stage and evaluation runs, with
// loss and KpsDis columns) and the loss curves of the stage runs. Headless Chromium driven by puppeteer-core.
//
//   apt-get install chromium && npm install --no-save puppeteer-core   # once; no browser download
//   bash infra/mlflow/server.sh sqlite:///$PWD/runs/demo/mlflow.db $PWD/runs/demo/mlartifacts 5000 &
//   node scripts/mlflow_screenshots.mjs http://127.0.0.1:5000 <experiment id> docs/images
//
// Writes <out>/mlflow-runs.png and <out>/mlflow-loss.png. CHROMIUM overrides the browser path; DATASET names the
// evaluation's test set (the metric column `<DATASET>/kpsdis`, default holdout, as the demo names it).
import fs from 'node:fs';
import puppeteer from 'puppeteer-core';

const [base, experimentId, outDir = 'docs/images'] = process.argv.slice(2);
if (!base || !experimentId) {
  console.error('usage: node scripts/mlflow_screenshots.mjs <server url> <experiment id> [out dir]');
  process.exit(2);
}
const dataset = process.env.DATASET || 'holdout';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const EXPAND = '[data-component-id$="runnamecellrenderer.tsx_46"]';  // the +/- beside a parent run's name
const COLUMNS = '[data-component-id$="experimentviewrunscolumnselector.tsx_315"]';

// Tick (or untick) one entry of the "Columns" menu, found through its search box.
async function toggleColumn(page, name) {
  await page.click(COLUMNS);
  const search = await page.waitForSelector('input[placeholder="Search columns"]');
  await search.click({clickCount: 3});
  await search.type(name);
  await sleep(800);
  const box = (await page.evaluateHandle((n) => [...document.querySelectorAll('.du-bois-light-tree-treenode')]
    .find((e) => e.querySelector('.du-bois-light-tree-title')?.textContent.trim() === n)
    ?.querySelector('.du-bois-light-tree-checkbox'), name)).asElement();
  if (box) await box.click(); else console.warn(`column ${name}: not in the Columns menu`);
  await page.keyboard.press('Escape');
  await sleep(800);
}

fs.mkdirSync(outDir, {recursive: true});
const browser = await puppeteer.launch({executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true, args: ['--no-sandbox', '--disable-gpu'], defaultViewport: {width: 1500, height: 760}});
try {
  const page = await browser.newPage();
  // workflowType=machine_learning: MLflow 3 otherwise opens an experiment in its GenAI (traces) view
  await page.goto(`${base}/#/experiments/${experimentId}?workflowType=machine_learning`,
    {waitUntil: 'networkidle0', timeout: 120000});
  await page.waitForSelector(EXPAND, {timeout: 60000});
  const assistant = await page.$('[data-component-id="mlflow.assistant.chat_panel.close"]');
  if (assistant) await assistant.click();
  for (const button of await page.$$(EXPAND)) await button.click();
  for (const name of ['Dataset', 'Models', 'loss', 'loss_mouth', `${dataset}/kpsdis`]) await toggleColumn(page, name);
  await sleep(1500);
  await page.screenshot({path: `${outDir}/mlflow-runs.png`});

  await page.evaluate(() => document.querySelector('input[name="runs-view-mode"][value="CHART"]').click());
  const charts = await page.waitForSelector('input[placeholder="Search metric charts"]', {timeout: 60000});
  await sleep(1500);
  // Only the stage runs in the charts, each in its own colour (the UI picks colours from a hash of the run id)
  await page.evaluate((palette) => {
    const rows = {};
    for (const row of document.querySelectorAll('.ag-row[row-index]')) {
      (rows[row.getAttribute('row-index')] ||= []).push(row);
    }
    const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
    for (const parts of Object.values(rows)) {
      const name = parts.map((r) => r.querySelector('a[href*="/runs/"]')?.textContent.trim()).find(Boolean) || '';
      const stage = /^stage(\d)$/.exec(name);
      const find = (sel) => parts.map((r) => r.querySelector(sel)).find(Boolean);
      if (!stage) {
        find('input.is-visibility-toggle-checkbox')?.click();
        continue;
      }
      const color = find('label[data-testid="experiment-view-table-run-color"] input');
      if (color) {
        setter.call(color, palette[Number(stage[1]) - 1]);
        color.dispatchEvent(new Event('input', {bubbles: true}));
        color.dispatchEvent(new Event('change', {bubbles: true}));
      }
    }
  }, ['#1f77b4', '#ff7f0e', '#2ca02c']);
  await charts.type('loss');
  await page.mouse.click(5, 5);  // blur the search box (no caret in the picture)
  await sleep(3000);
  await page.waitForFunction(() => !document.querySelector('[data-testid="experiment-view-compare-runs-chart-area"] '
    + '.anticon-loading, [data-testid="experiment-view-compare-runs-card"] [role="progressbar"]'), {timeout: 60000});
  await sleep(3000);
  await page.screenshot({path: `${outDir}/mlflow-loss.png`});
  console.log(`wrote ${outDir}/mlflow-runs.png and ${outDir}/mlflow-loss.png`);
} finally {
  await browser.close();
}
