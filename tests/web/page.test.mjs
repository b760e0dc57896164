// Drives docent's web page in headless Chromium against a running
// `docent serve` (started by tests/web.rs, which passes its address).
//
//   DOCENT_URL         the server, e.g. http://127.0.0.1:40123 (required)
//   DOCENT_KEY         the API key the server was started with (required)
//   DOCENT_KEY_OTHER   a read key of the collection `other` only (required)
//   DOCENT_WEB_OUTPUT  folder for screenshots (required)
//   CHROMIUM           browser binary (default /usr/bin/chromium)
//
// The server is expected to serve examples/docs as its default collection, a
// second collection named `other` (served too), generation queue depth 1 and short answers.
// Prints `ok - STEP` per passed step; exits non-zero at the first failure
// after saving a screenshot of the page as it was.

import { chromium } from 'playwright-core';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

const BASE = need('DOCENT_URL');
const KEY = need('DOCENT_KEY');
const KEY_OTHER = need('DOCENT_KEY_OTHER');
const OUT = need('DOCENT_WEB_OUTPUT');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ANSWER_TIMEOUT = 300_000;

function need(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set (run this through \`cargo test --release --test web\`)`);
    process.exit(2);
  }
  return value;
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

if (!existsSync(CHROMIUM)) {
  console.error(`${CHROMIUM} is missing: run .ci/run, or apt-get install chromium chromium-driver`);
  process.exit(2);
}
mkdirSync(OUT, { recursive: true });

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  // playwright adds a fresh --user-data-dir of its own.
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--no-first-run',
    '--disable-quic',
    '--disable-sync',
  ],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(`page error: ${e.message}`));
page.on('console', (m) => {
  if (m.type() === 'error' && !/status of (401|404|429)/.test(m.text())) {
    pageErrors.push(`console error: ${m.text()}`);
  }
});

let failed = false;

async function step(name, body) {
  if (failed) return;
  const started = Date.now();
  try {
    await body();
    check(pageErrors.length === 0, `errors in the page:\n${pageErrors.join('\n')}`);
    console.log(`ok - ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  } catch (e) {
    failed = true;
    const shot = join(OUT, 'failure.png');
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    console.log(`not ok - ${name}\n${e.stack || e}\n(page at the failure: ${shot})`);
  }
}

const api = (path, init = {}) =>
  fetch(BASE + path, {
    ...init,
    headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json', ...(init.headers || {}) },
  });

const answerState = () => page.getAttribute('#answer', 'data-state');

/**
 * Types a question, asks, and waits until the answer leaves the running
 * states. Each question starts a new conversation unless `followUp` is set,
 * so steps do not lean on each other's answers.
 */
async function ask(question, { followUp = false } = {}) {
  if (!followUp) await page.click('#new-conversation');
  await page.fill('#question', question);
  await page.press('#question', 'Enter');
  await page.waitForFunction(
    () => !['searching', 'streaming', 'empty'].includes(document.querySelector('#answer').dataset.state),
    null,
    { timeout: ANSWER_TIMEOUT },
  );
  return answerState();
}

/**
 * Asks `question` through the API for a long streamed answer (up to 1000
 * tokens at temperature 1.5), to keep the one model busy; `signal` ends it.
 */
const longAnswer = (question, signal) =>
  api('/v1/ask', {
    method: 'POST',
    signal,
    body: JSON.stringify({ question, max_tokens: 1000, temperature: 1.5, stream: true }),
  });

async function metric(name) {
  const text = await (await fetch(`${BASE}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : NaN;
}

await step('the page and its assets are served with a strict CSP and revalidation', async () => {
  const index = await fetch(`${BASE}/`);
  check(index.status === 200, `GET / is ${index.status}`);
  check(index.headers.get('content-type').startsWith('text/html'), 'index is HTML');
  const csp = index.headers.get('content-security-policy') || '';
  check(csp.includes("script-src 'self'") && !csp.includes('unsafe-inline'), `CSP: ${csp}`);
  check(index.headers.get('cache-control') === 'no-cache', 'index revalidates');
  const etag = index.headers.get('etag');
  const again = await fetch(`${BASE}/`, { headers: { 'If-None-Match': etag } });
  check(again.status === 304, `a current copy is 304, got ${again.status}`);
  for (const [asset, type] of [
    ['app.js', 'text/javascript'],
    ['sse.js', 'text/javascript'],
    ['app.css', 'text/css'],
  ]) {
    const r = await fetch(`${BASE}/assets/${asset}`);
    check(r.status === 200 && r.headers.get('content-type').startsWith(type), `${asset}: ${r.status}`);
  }
  check((await fetch(`${BASE}/assets/nope.js`)).status === 404, 'unknown asset is 404');
  check((await fetch(`${BASE}/v1/collections`)).status === 401, 'the API still needs the key');
});

await step('the page asks for the API key, refuses a wrong one, and keeps the right one', async () => {
  await page.goto(BASE);
  await page.waitForSelector('#key-dialog[open]');
  await page.fill('#key-input', 'wrong-key');
  await page.press('#key-input', 'Enter');
  await page.waitForFunction(() => /refused/.test(document.querySelector('#key-message').textContent));
  check(await page.isVisible('#key-dialog[open]'), 'the dialog asks again after a refused key');
  await page.fill('#key-input', KEY);
  await page.click('#key-save');
  await page.waitForSelector('#key-dialog[open]', { state: 'detached' });
  await page.waitForSelector('#collection option', { state: 'attached' });
  const stored = await page.evaluate(() => sessionStorage.getItem('docent.apiKey'));
  check(stored === KEY, 'the key is kept in session storage');
  const options = await page.$$eval('#collection option', (os) => os.map((o) => [o.value, o.textContent, o.selected, o.disabled]));
  check(
    options.some(([v, t, s]) => v === 'default' && s && /passages/.test(t)),
    `the default collection is selected: ${JSON.stringify(options)}`,
  );
  check(
    options.some(([v, , , d]) => v === 'other' && !d),
    `the other served collection can be chosen: ${JSON.stringify(options)}`,
  );
  // A reload in the same tab does not ask again.
  await page.reload();
  await page.waitForSelector('#collection option', { state: 'attached' });
  check(!(await page.isVisible('#key-dialog[open]')), 'no second prompt after a reload');
});

await step('choosing another collection switches what the page works on', async () => {
  await page.selectOption('#collection', 'other');
  const chosen = await page.evaluate(() => sessionStorage.getItem('docent.collection'));
  check(chosen === 'other', `the choice is kept for the tab: ${chosen}`);
  await page.click('#nav-documents');
  await page.waitForFunction(() => document.querySelector('#docs-total').textContent === '1 documents' || document.querySelector('#docs-total').textContent === '1 document');
  const sources = await page.$$eval('#docs-body tr', (trs) => trs.map((tr) => tr.cells[0].textContent));
  check(sources.length === 1 && sources[0].includes('faq.md'), `only the other collection's file: ${JSON.stringify(sources)}`);
  await page.click('#nav-ask');
  await page.selectOption('#collection', 'default');
  const back = await page.evaluate(() => sessionStorage.getItem('docent.collection'));
  check(back === 'default', `back to the default collection: ${back}`);
});

await step('a key for one collection sees only that collection', async () => {
  const other = await browser.newContext();
  const p = await other.newPage();
  await p.goto(BASE);
  await p.waitForSelector('#key-dialog[open]');
  await p.fill('#key-input', KEY_OTHER);
  await p.click('#key-save');
  await p.waitForSelector('#collection option', { state: 'attached' });
  const names = await p.$$eval('#collection option', (os) => os.map((o) => o.value));
  check(JSON.stringify(names) === '["other"]', `only its collection is listed: ${JSON.stringify(names)}`);
  const status = await p.evaluate(async (key) => {
    const r = await fetch('/v1/collections/default/documents', { headers: { Authorization: `Bearer ${key}` } });
    return r.status;
  }, KEY_OTHER);
  check(status === 403, `the default collection is refused to it: ${status}`);
  await other.close();
});

let answer = '';
await step('a question streams in token by token and the answer holds the fact', async () => {
  await page.evaluate(() => {
    window.__snapshots = [];
    window.__shift = 0;
    window.__shifts = [];
    new MutationObserver(() => window.__snapshots.push(document.querySelector('#answer-text').textContent)).observe(
      document.querySelector('#answer-text'),
      { childList: true, subtree: true, characterData: true },
    );
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        if (entry.hadRecentInput) continue;
        window.__shift += entry.value;
        // What moved, so that a failure says which element to fix.
        const r = (b) => `${Math.round(b.x)},${Math.round(b.y)} ${Math.round(b.width)}x${Math.round(b.height)}`;
        window.__shifts.push({
          value: entry.value,
          moved: (entry.sources || []).map((s) => {
            const n = s.node;
            const name = !n ? '?' : n.nodeType === 3 ? `text in #${n.parentElement?.id}` : `${n.nodeName}#${n.id}.${n.className}`;
            return `${name}: ${r(s.previousRect)} -> ${r(s.currentRect)}`;
          }),
        });
      }
    }).observe({ type: 'layout-shift' });
  });
  const state = await ask('Where is the EU data center?');
  check(state === 'done', `answer state ${state}: ${await page.textContent('#answer')}`);
  answer = await page.textContent('#answer-text');
  const snapshots = await page.evaluate(() => window.__snapshots.filter((s) => s.length > 0));
  const partial = new Set(snapshots.filter((s) => s.length < answer.length));
  check(partial.size >= 3, `the answer grew in steps (${partial.size} partial states): ${JSON.stringify(snapshots)}`);
  const tokens = Number(await page.getAttribute('#answer', 'data-tokens'));
  check(tokens >= 3, `token events arrived: ${tokens}`);
  check(/Frankfurt/.test(answer), `the answer names Frankfurt: ${answer}`);
  const shift = await page.evaluate(() => window.__shift);
  const shifts = await page.evaluate(() => window.__shifts);
  check(shift < 0.01, `no layout shift while streaming (shift score ${shift}): ${JSON.stringify(shifts)}`);
  check(await page.isVisible('#sources'), 'sources are listed after the answer');
  console.log(`   answer: ${answer}`);
});

await step('citation [1] opens its passage from the right file, highlighted', async () => {
  const inAnswer = await page.$('#answer-text .cite[data-n="1"]');
  await (inAnswer || (await page.$('#source-list .source[data-n="1"]'))).click();
  await page.waitForSelector('#passage.open');
  const source = await page.textContent('#passage-facts [data-fact="source"]');
  check(source === 'faq.md', `passage source: ${source}`);
  check(await page.isVisible('#passage-facts [data-fact="score"]'), 'the score is shown');
  check(await page.isVisible('#passage-facts [data-fact="lines"]'), 'the lines are shown');
  const marks = await page.$$eval('#passage-text mark', (ms) => ms.map((m) => m.textContent));
  check(marks.some((m) => /Frankfurt/.test(m)), `the Frankfurt sentence is highlighted: ${JSON.stringify(marks)}`);
  const shot = join(OUT, 'answered.png');
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`   screenshot: ${shot}`);
});

await step('a follow-up is asked in the same conversation, searched with what it leans on, and kept across a reload', async () => {
  const state = await ask('Where is it?', { followUp: true });
  check(['done', 'unanswerable'].includes(state), `answer state ${state}`);
  const rewritten = await page.textContent('#rewritten');
  check(
    (await page.isVisible('#rewritten')) && /EU data center/.test(rewritten),
    `the search is shown and carries the earlier question: ${rewritten}`,
  );
  const turns = await page.$$eval('#turns .turn-question', (ts) => ts.map((t) => t.textContent));
  check(turns.length === 1 && turns[0] === 'Where is the EU data center?', `the first turn is listed: ${JSON.stringify(turns)}`);
  const id = await page.evaluate(() => sessionStorage.getItem('docent.conversation'));
  check(/^[0-9a-f-]{36}$/.test(id || ''), `the tab keeps a conversation id: ${id}`);
  await page.screenshot({ path: join(OUT, 'follow-up.png'), fullPage: true });
  await page.reload();
  await page.waitForFunction(() => document.querySelectorAll('#turns li').length === 2);
  const kept = await page.$$eval('#turns .turn-question', (ts) => ts.map((t) => t.textContent));
  check(kept[1] === 'Where is it?', `both turns come back from the server after a reload: ${JSON.stringify(kept)}`);
  await page.click('#new-conversation');
  check(!(await page.isVisible('#conversation')), 'New conversation clears the earlier turns');
  check(
    (await page.evaluate(() => sessionStorage.getItem('docent.conversation'))) === null,
    'and forgets the conversation id',
  );
  // The citation steps below use the first answer again.
  await ask('Where is the EU data center?');
});

await step('at phone width the page fits and the passage is a closable sheet', async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `no sideways scrolling at phone width (${overflow}px too wide)`);
  const shot = join(OUT, 'answered-phone.png');
  await page.screenshot({ path: shot });
  console.log(`   screenshot: ${shot}`);
  await page.keyboard.press('Escape');
  check(!(await page.isVisible('#passage')), 'Escape closes the passage');
  // Keyboard: the first source opens with Enter and takes focus.
  await page.focus('#source-list .source[data-n="1"]');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#passage.open');
  check(await page.evaluate(() => document.activeElement.id === 'passage'), 'focus moves to the passage');
  await page.keyboard.press('Escape');
  check(
    await page.evaluate(() => document.activeElement.matches('.source[data-n="1"]')),
    'focus returns to the source after closing',
  );
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.screenshot({ path: join(OUT, 'answered-laptop.png') });
});

await step('an unanswerable question is shown as such', async () => {
  const state = await ask('What is the capital of Mongolia?');
  check(state === 'unanswerable', `answer state ${state}`);
  check(await page.isVisible('#answer-notice'), 'a notice says there is no supported answer');
  const notice = await page.textContent('#answer-notice');
  check(/No supported answer/.test(notice), notice);
  const sources = await page.$$('#source-list .source');
  if (sources.length > 0) {
    check((await page.textContent('#sources-title')) === 'Possibly related', 'passages are offered as possibly related');
  }
});

await step('filters narrow the passages, and Stop cancels the generation', async () => {
  // A document in a folder, with tags, added through the API.
  const seeded = await api('/v1/documents', {
    method: 'POST',
    body: JSON.stringify({
      source: 'policies/parking.md',
      text: '# Parking\n\nStaff park in the north garage. Visitors park on level 2 and get a ticket at reception.\n',
      metadata: { tags: 'facilities' },
    }),
  });
  check(seeded.ok, `seeding a document: ${seeded.status}`);
  // The page's answer must still be running when Stop is clicked. How long the
  // stand-in model's own answer runs, or whether it abstains at once, differs
  // between CPUs (in CI one ended before the click landed), so a long answer
  // asked through the API holds the one model first: the page's question then
  // waits in the queue, with its passages shown, until Stop.
  const cancelledBefore = await metric('docent_generations_cancelled_total');
  // The first of these answerable questions whose answer starts streaming
  // holds it (one that abstains on this CPU ends without a token).
  let holder = null;
  const tried = [];
  for (const question of [
    'Where is the EU data center? Explain in detail.',
    'How many days of paid vacation do new employees get, and how does vacation carry over? Explain in detail.',
  ]) {
    const controller = new AbortController();
    const held = await longAnswer(question, controller.signal);
    if (!held.ok) throw new Error(`the holding answer: ${held.status}`);
    // Its first token means the model is busy with it (not queued).
    const reader = held.body.getReader();
    const decoder = new TextDecoder();
    let seen = '';
    while (!seen.includes('event: token')) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += decoder.decode(value, { stream: true });
    }
    if (seen.includes('event: token')) {
      holder = controller;
      break;
    }
    tried.push(`${question} → ${seen.slice(-300)}`);
  }
  if (!holder) throw new Error(`no answer started streaming to hold the model: ${tried.join(' | ')}`);
  try {
    await page.click('#filters summary');
    check(await page.isVisible('#filter-prefix'), 'the filters open from their summary');
    await page.fill('#filter-prefix', 'policies');
    await page.fill('#filter-tags', 'facilities, other');
    await page.fill('#question', 'Where do staff and visitors park, and how do visitors get a ticket?');
    const sent = page.waitForRequest((r) => r.url().endsWith('/default/ask'));
    await page.press('#question', 'Enter');
    const body = (await sent).postDataJSON();
    check(body.filters.source_prefix === 'policies', JSON.stringify(body));
    check(JSON.stringify(body.filters.tags) === '["facilities","other"]', JSON.stringify(body));
    await page.waitForSelector('#answer[data-state="streaming"]', { timeout: ANSWER_TIMEOUT });
    check(await page.isEnabled('#stop-button'), 'Stop is enabled while answering');
    await page.click('#stop-button');
    await page.waitForSelector('#answer[data-state="stopped"]', { timeout: 10_000 });
    check(await page.isEnabled('#ask-button'), 'asking is possible again');
    const sources = await page.$$eval('#source-list .source-name', (s) => s.map((e) => e.textContent));
    check(sources.length > 0 && sources.every((s) => s.endsWith('policies/parking.md')), `sources: ${sources}`);
  } finally {
    holder.abort();
  }
  // Two generations end without their caller: the holding one, and the page's,
  // which the model drops when it reaches it.
  let cancelled = cancelledBefore;
  for (let i = 0; i < 120 && !(cancelled >= cancelledBefore + 2); i++) {
    await new Promise((r) => setTimeout(r, 500));
    cancelled = await metric('docent_generations_cancelled_total');
  }
  check(
    cancelled >= cancelledBefore + 2,
    `the server cancelled the held and the stopped generation (${cancelledBefore} → ${cancelled})`,
  );
  await page.fill('#filter-prefix', '');
  await page.fill('#filter-tags', '');
});

const PARROT = '# Office pets\n\nThe office parrot is named Captain Biscuit. He lives in the Berlin office kitchen.\n';

await step('the documents view lists the collection', async () => {
  await page.click('#nav-documents');
  await page.waitForSelector('#docs-body tr');
  const rows = await page.$$eval('#docs-body tr', (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
  check(rows.length === 7, `examples/docs and policies/parking.md: ${JSON.stringify(rows)}`);
  for (const [source, status, chunks, size, ingested] of rows) {
    check(status === 'ready', `${source} is ${status}`);
    check(Number(chunks) > 0, `${source} has chunks`);
    check(/\d/.test(size) && /\d/.test(ingested), `${source} shows size and time`);
  }
  check((await page.textContent('#docs-total')) === '7 documents', 'the total is shown');
});

await step('files upload by drag-and-drop and by the picker, with per-file results', async () => {
  await page.fill('#upload-tags', 'pets');
  const drop = await page.evaluateHandle((text) => {
    const data = new DataTransfer();
    data.items.add(new File([text], 'parrot.md', { type: 'text/markdown' }));
    return data;
  }, PARROT);
  await page.dispatchEvent('#drop', 'dragenter', { dataTransfer: drop });
  await page.dispatchEvent('#drop', 'drop', { dataTransfer: drop });
  await page.waitForSelector('#upload-results li[data-source="parrot.md"]', { timeout: 120_000 });
  check(
    (await page.getAttribute('#upload-results li[data-source="parrot.md"]', 'data-status')) === 'added',
    await page.textContent('#upload-results'),
  );
  await page.setInputFiles('#file-input', [
    { name: 'empty.md', mimeType: 'text/markdown', buffer: Buffer.from('   \n') },
    { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('Parking permits are issued by reception.\n') },
  ]);
  await page.waitForSelector('#upload-results li[data-source="notes.txt"]', { timeout: 120_000 });
  const results = await page.$$eval('#upload-results li', (lis) => lis.map((li) => [li.dataset.source, li.dataset.status, li.textContent]));
  check(results.length === 2, JSON.stringify(results));
  check(results.some(([s, st]) => s === 'notes.txt' && st === 'added'), JSON.stringify(results));
  console.log(`   per-file results: ${results.map((r) => r[2]).join(' | ')}`);
  await page.waitForSelector('#docs-body tr[data-id="parrot.md"]');
  await page.waitForSelector('#docs-body tr[data-id="notes.txt"]');
});

await step('a question about the uploaded file is answered from it', async () => {
  await page.click('#nav-ask');
  await page.evaluate(() => (document.querySelector('#filters').open = true));
  await page.fill('#filter-tags', 'pets');
  const state = await ask('What is the name of the office parrot?');
  check(state === 'done' || state === 'unanswerable', `answer state ${state}`);
  const sources = await page.$$eval('#source-list .source-name', (s) => s.map((e) => e.textContent));
  check(sources[0] === '[1] parrot.md', `sources: ${sources}`);
  await page.click('#source-list .source[data-n="1"]');
  check(/Captain Biscuit/.test(await page.textContent('#passage-text')), 'the passage is the uploaded text');
  const text = await page.textContent('#answer-text');
  console.log(`   answer: ${text}`);
  check(/Biscuit/.test(text), `the answer names the parrot: ${text}`);
  await page.fill('#filter-tags', '');
});

await step('a document is deleted after confirmation', async () => {
  await page.click('#nav-documents');
  await page.waitForSelector('#docs-body tr[data-id="parrot.md"]');
  await page.click('#docs-body tr[data-id="parrot.md"] .delete');
  await page.waitForSelector('#delete-dialog[open]');
  check((await page.textContent('#delete-name')) === 'parrot.md', 'the dialog names the document');
  await page.click('#delete-cancel');
  await page.waitForSelector('#delete-dialog[open]', { state: 'detached' });
  check(await page.isVisible('#docs-body tr[data-id="parrot.md"]'), 'cancel keeps it');
  await page.click('#docs-body tr[data-id="parrot.md"] .delete');
  await page.click('#delete-confirm');
  await page.waitForSelector('#docs-body tr[data-id="parrot.md"]', { state: 'detached' });
  check(/Deleted parrot\.md/.test(await page.textContent('#upload-status')), await page.textContent('#upload-status'));
  const gone = await api('/v1/documents/parrot.md');
  check(gone.status === 404, `the server no longer has it (${gone.status})`);
});

await step('a full generation queue (429) shows an error instead of hanging', async () => {
  await page.click('#nav-ask');
  // A held answer at temperature 1.5 can end early (an end token drawn),
  // which frees its place before the page asks: then the page's question
  // is rightly answered. So the check counts only when every held answer
  // was still streaming after the page's question came back, and the
  // queue is filled again (at most three times) when one was not.
  let checked = false;
  for (let attempt = 0; attempt < 3 && !checked; attempt++) {
    // Occupy the one model and its one queue slot with long answers.
    const held = [];
    let refused = false;
    for (let i = 0; i < 4 && !refused; i++) {
      const controller = new AbortController();
      // Answerable, so that no abstention gate keeps it from the model.
      const r = await longAnswer(
        'How many days of paid vacation do new employees get, and how does vacation carry over? Explain in detail.',
        controller.signal,
      );
      if (r.status === 429) {
        refused = true;
        continue;
      }
      const answer = { controller, ended: false };
      // Read the stream to its end, to know whether it ended by itself.
      (async () => {
        try {
          const reader = r.body.getReader();
          while (!(await reader.read()).done) {}
        } catch {}
        answer.ended = true;
      })();
      held.push(answer);
    }
    check(refused, 'the server refuses once its queue is full');
    try {
      const state = await ask('How much does the Enterprise plan cost?');
      if (held.some((a) => a.ended)) {
        console.log(`# attempt ${attempt + 1}: a held answer ended by itself (page: ${state}); filling the queue again`);
        continue;
      }
      check(state === 'error', `answer state ${state}`);
      const error = await page.textContent('#answer-error');
      check(/busy/.test(error) && /Try again/.test(error), `error: ${error}`);
      check(await page.isEnabled('#ask-button'), 'asking is possible again');
      check(!(await page.isEnabled('#stop-button')), 'Stop is off');
      checked = true;
    } finally {
      for (const a of held) a.controller.abort();
    }
  }
  check(checked, 'the queue stayed full while the page asked, in one of three attempts');
});

/** An SSE body: citations, then `tokens`, then `tail` (raw frames). */
function sseBody(tokens, tail) {
  const citation = {
    n: 1,
    document_id: 'pricing.md',
    source: 'pricing.md',
    chunk_id: 'c1',
    start: 0,
    end: 60,
    line_start: 3,
    line_end: 5,
    heading: 'Plans',
    score: 0.5,
    similarity: 0.7,
    cited: false,
    text: 'Acme Sync has three plans. The Enterprise plan costs $45 per user per month.',
  };
  let body = `event: citations\ndata: ${JSON.stringify([citation])}\n\n`;
  for (const t of tokens) body += `event: token\ndata: ${JSON.stringify({ text: t })}\n\n`;
  return body + tail;
}

await step('a stream that fails mid-answer shows the error and keeps the partial answer', async () => {
  await page.route('**/v1/collections/*/ask', (route) =>
    route.fulfill({
      status: 200,
      headers: { 'content-type': 'text/event-stream' },
      body: sseBody(
        ['The Enterprise', ' plan costs', ' $45 [1]', ' per'],
        'event: error\ndata: {"error": {"type": "internal", "message": "generation failed: the model thread stopped"}}\n\n',
      ),
    }),
  );
  try {
    const state = await ask('How much does the Enterprise plan cost?');
    check(state === 'error', `answer state ${state}`);
    check(/model thread stopped/.test(await page.textContent('#answer-error')), await page.textContent('#answer-error'));
    check((await page.textContent('#answer-text')).startsWith('The Enterprise plan costs $45'), 'the partial answer stays');
    // The in-answer marker is a link to the passage.
    await page.click('#answer-text .cite[data-n="1"]');
    await page.waitForSelector('#passage.open');
    const marks = await page.$$eval('#passage-text mark', (ms) => ms.map((m) => m.textContent));
    check(
      marks.length === 1 && marks[0] === 'The Enterprise plan costs $45 per user per month.',
      `the sentence the answer rests on is highlighted: ${JSON.stringify(marks)}`,
    );
  } finally {
    await page.unroute('**/v1/collections/*/ask');
  }
  // A connection that drops without `done` or `error` is an error too.
  await page.route('**/v1/collections/*/ask', (route) =>
    route.fulfill({ status: 200, headers: { 'content-type': 'text/event-stream' }, body: sseBody(['Partial'], '') }),
  );
  try {
    const state = await ask('How much does the Enterprise plan cost?');
    check(state === 'error', `answer state ${state}`);
    check(/closed before the answer finished/.test(await page.textContent('#answer-error')), 'a dropped stream is reported');
  } finally {
    await page.unroute('**/v1/collections/*/ask');
  }
});

await step('a key revoked mid-session is asked for again', async () => {
  await page.evaluate(() => sessionStorage.setItem('docent.apiKey', 'stale-key'));
  await page.click('#nav-documents');
  await page.click('#docs-refresh');
  await page.waitForSelector('#key-dialog[open]');
  check(/refused/.test(await page.textContent('#key-message')), 'the dialog says the key was refused');
  await page.fill('#key-input', KEY);
  await page.press('#key-input', 'Enter');
  await page.waitForSelector('#key-dialog[open]', { state: 'detached' });
  await page.waitForFunction(() => document.querySelectorAll('#docs-body tr').length > 0);
  check(!(await page.isVisible('#docs-error')), 'the list loaded with the new key');
});

await browser.close();
if (failed) process.exit(1);
console.log('all web page checks passed');
