// docent's page: ask (streamed answers with clickable citations) and
// documents (list, upload, delete). Plain DOM; every server call goes
// through api.js so the API key and errors are handled in one place.

import { ApiError, json, onKeyNeeded, post, request, storeKey, storedKey } from './api.js';
import { frames } from './sse.js';
import { answerParts, highlights, renderHighlighted } from './passage.js';

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- API key

let keyPrompt = null;

/** Opens the key dialog; resolves true when a key was entered. One at a time. */
function promptForKey(message) {
  if (keyPrompt) return keyPrompt;
  const dialog = $('key-dialog');
  $('key-message').textContent = message;
  $('key-input').value = '';
  keyPrompt = new Promise((resolve) => {
    dialog.addEventListener(
      'close',
      () => {
        keyPrompt = null;
        const key = $('key-input').value.trim();
        if (dialog.returnValue === 'save' && key) {
          storeKey(key);
          $('key-button').hidden = false;
          resolve(true);
        } else {
          resolve(false);
        }
      },
      { once: true },
    );
  });
  dialog.returnValue = '';
  $('key-button').hidden = false;
  dialog.showModal();
  $('key-input').focus();
  return keyPrompt;
}

onKeyNeeded(promptForKey);

$('key-form').addEventListener('submit', (e) => {
  e.preventDefault();
  $('key-dialog').close('save');
});
$('key-forget').addEventListener('click', () => {
  storeKey('');
  $('key-input').value = '';
  $('key-dialog').close('forget');
});
$('key-button').addEventListener('click', () => {
  promptForKey(storedKey() ? 'Enter a new API key, or forget the current one.' : 'Enter an API key.');
});
$('key-button').hidden = !storedKey();

// ---------------------------------------------------------------- views

function showView() {
  const view = location.hash === '#documents' ? 'documents' : 'ask';
  for (const name of ['ask', 'documents']) {
    $(`view-${name}`).hidden = name !== view;
    if (name === view) $(`nav-${name}`).setAttribute('aria-current', 'page');
    else $(`nav-${name}`).removeAttribute('aria-current');
  }
  if (view === 'documents' && !documentsLoaded) loadDocuments();
}
window.addEventListener('hashchange', showView);

// ---------------------------------------------------------------- collections

// The collection this tab works on: every call goes to
// /v1/collections/{name}/..., so the key's reach decides what it sees.
const COLLECTION_ITEM = 'docent.collection';
let collection = sessionStorage.getItem(COLLECTION_ITEM) || '';

/** `/v1/route` of the chosen collection (the server's default until one is known). */
function scoped(path) {
  if (!collection) return path;
  return `/v1/collections/${encodeURIComponent(collection)}${path.slice('/v1'.length)}`;
}

async function loadCollections() {
  const select = $('collection');
  try {
    const list = await json('/v1/collections');
    const usable = list.collections.filter((c) => c.served);
    if (!usable.some((c) => c.name === collection)) {
      chooseCollection(list.current || (usable[0] && usable[0].name) || '');
    }
    select.replaceChildren(
      ...list.collections.map((c) => {
        const option = document.createElement('option');
        option.value = c.name;
        option.disabled = !c.served;
        option.textContent = c.served
          ? `${c.name}${c.chunks == null ? '' : ` (${c.chunks} passages)`}`
          : `${c.name} (not served)`;
        option.selected = c.name === collection;
        return option;
      }),
    );
    if (usable.length === 0) showNote('This key may use no collection served here.');
  } catch (e) {
    showNote(`Cannot list collections: ${describe(e)}`);
  }
}

function chooseCollection(name) {
  collection = name;
  if (name) sessionStorage.setItem(COLLECTION_ITEM, name);
  else sessionStorage.removeItem(COLLECTION_ITEM);
}

$('collection').addEventListener('change', () => {
  const chosen = $('collection').value;
  if (chosen === collection) return;
  chooseCollection(chosen);
  $('collection-note').hidden = true;
  // A conversation belongs to one collection: start afresh.
  startNewConversation();
  // The document list is of the old collection: reload it if shown, else on the next visit.
  if (!$('view-documents').hidden) loadDocuments();
  else documentsLoaded = false;
});

function showNote(text) {
  $('collection-note').textContent = text;
  $('collection-note').hidden = false;
}

function describe(e) {
  return e instanceof ApiError ? e.describe() : e.message || String(e);
}

// ---------------------------------------------------------------- ask

let citations = [];
let answerText = '';
let controller = null;

$('question').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $('ask-form').requestSubmit();
  }
});

$('ask-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const question = $('question').value.trim();
  if (question && !controller) ask(question);
});

$('stop-button').addEventListener('click', () => {
  if (controller) controller.abort();
});

// ------------------------------------------------------ conversation
// One conversation per browser tab (sessionStorage), kept by the server:
// follow-up questions are asked with its id, and the server rewrites them
// to stand alone before searching.

const CONVERSATION_ITEM = 'docent.conversation';
let conversationId = sessionStorage.getItem(CONVERSATION_ITEM) || null;
// The answered turn on screen; it joins the list above when the next question is asked.
let lastTurn = null;

function setConversation(id) {
  conversationId = id;
  if (id) sessionStorage.setItem(CONVERSATION_ITEM, id);
  else sessionStorage.removeItem(CONVERSATION_ITEM);
}

/** A conversation id to ask with, starting one if needed (null: the server keeps none). */
async function ensureConversation() {
  if (conversationId) return conversationId;
  try {
    const created = await json(scoped('/v1/conversations'), post({}));
    setConversation(created.id);
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 501) throw e;
  }
  return conversationId;
}

function addTurn(question, answer) {
  const item = document.createElement('li');
  const q = document.createElement('p');
  q.className = 'turn-question';
  q.textContent = question;
  const a = document.createElement('p');
  a.className = 'turn-answer';
  a.textContent = answer.replace(/\s*\[\d+\]/g, '');
  item.append(q, a);
  $('turns').append(item);
  $('conversation').hidden = false;
}

/** Shows the turns of this tab's conversation (after a reload). */
async function loadConversation() {
  $('turns').replaceChildren();
  $('conversation').hidden = true;
  if (!conversationId) return;
  try {
    const c = await json(scoped(`/v1/conversations/${conversationId}`));
    for (const t of c.turns) addTurn(t.question, t.answer);
  } catch (e) {
    if (e instanceof ApiError && (e.status === 404 || e.status === 422)) setConversation(null);
  }
}

function startNewConversation() {
  setConversation(null);
  lastTurn = null;
  $('turns').replaceChildren();
  $('conversation').hidden = true;
  $('rewritten').hidden = true;
}

$('new-conversation').addEventListener('click', () => {
  startNewConversation();
  $('question').focus();
});

function askBody(question) {
  const body = { question, stream: true };
  if (conversationId) body.conversation_id = conversationId;
  const filters = {};
  const prefix = $('filter-prefix').value.trim();
  if (prefix) filters.source_prefix = prefix;
  const tags = $('filter-tags')
    .value.split(',')
    .map((t) => t.trim())
    .filter(Boolean);
  if (tags.length) filters.tags = tags;
  if (Object.keys(filters).length) body.filters = filters;
  const mode = $('filter-mode').value;
  if (mode) body.mode = mode;
  return body;
}

function setAnswerState(state) {
  const answer = $('answer');
  answer.dataset.state = state;
  answer.setAttribute('aria-busy', String(state === 'searching' || state === 'streaming'));
}

function setStatus(text) {
  $('ask-status').textContent = text;
}

async function ask(question) {
  if (lastTurn) addTurn(lastTurn.question, lastTurn.answer);
  lastTurn = null;
  controller = new AbortController();
  const started = performance.now();
  citations = [];
  answerText = '';
  let tokens = 0;
  $('answer').dataset.tokens = '0';
  renderAnswer();
  $('answer-notice').hidden = true;
  $('answer-error').hidden = true;
  $('answer-meta').textContent = '';
  $('sources').hidden = true;
  closePassage(false);
  setAnswerState('searching');
  setStatus('Searching the documents…');
  $('ask-button').disabled = true;
  $('stop-button').disabled = false;
  $('rewritten').hidden = true;
  let finished = false;
  try {
    await ensureConversation();
    const send = () =>
      request(
        scoped('/v1/ask'),
        post(askBody(question), {
          signal: controller.signal,
          headers: { Accept: 'text/event-stream' },
        }),
      );
    let response;
    try {
      response = await send();
    } catch (e) {
      // The conversation expired on the server: start a new one.
      if (!(e instanceof ApiError) || e.status !== 404 || !conversationId) throw e;
      setConversation(null);
      $('turns').replaceChildren();
      $('conversation').hidden = true;
      await ensureConversation();
      response = await send();
    }
    for await (const frame of frames(response.body)) {
      const data = JSON.parse(frame.data);
      if (frame.event === 'rewrite') {
        $('rewritten').textContent = `Searched for: ${data.rewritten_query}`;
        $('rewritten').hidden = false;
      } else if (frame.event === 'citations') {
        citations = data;
        renderSources(false, []);
        setAnswerState('streaming');
        setStatus('Writing the answer…');
      } else if (frame.event === 'token') {
        answerText += data.text;
        tokens += 1;
        $('answer').dataset.tokens = String(tokens);
        renderAnswer();
      } else if (frame.event === 'done') {
        finish(data, performance.now() - started);
        if (data.conversation_id) lastTurn = { question, answer: data.answer };
        finished = true;
        break;
      } else if (frame.event === 'error') {
        const err = data.error || {};
        throw new ApiError(500, err.type || 'error', `The answer failed: ${err.message || 'unknown error'}`);
      }
    }
    if (!finished) {
      throw new ApiError(500, 'disconnected', 'The connection closed before the answer finished.');
    }
  } catch (e) {
    if (e.name === 'AbortError') {
      setAnswerState('stopped');
      setStatus('Stopped.');
      $('answer-meta').textContent = `Stopped after ${tokens} pieces.`;
    } else {
      setAnswerState('error');
      setStatus('Failed.');
      $('answer-error').textContent = describe(e);
      $('answer-error').hidden = false;
    }
    if (citations.length) renderSources(false, []);
  } finally {
    controller = null;
    $('ask-button').disabled = false;
    $('stop-button').disabled = true;
  }
}

function finish(done, ms) {
  answerText = done.answer;
  renderAnswer();
  const unanswerable = done.answerable === false;
  setAnswerState(unanswerable ? 'unanswerable' : 'done');
  setStatus(`Done in ${(ms / 1000).toFixed(1)} s.`);
  if (unanswerable) {
    $('answer-notice').textContent = citations.length
      ? 'No supported answer in the documents. The closest passages are below; they may be related.'
      : 'No supported answer: no passage in the collection is close to this question.';
    $('answer-notice').hidden = false;
  }
  const usage = done.usage || {};
  const parts = [done.model];
  if (usage.completion_tokens) parts.push(`${usage.completion_tokens} tokens`);
  if (done.finish_reason === 'length') parts.push('cut at the length limit');
  $('answer-meta').textContent = parts.filter(Boolean).join(' · ');
  renderSources(unanswerable, done.cited || []);
}

/** Re-renders the answer with [n] markers as buttons, keeping focus on a marker. */
function renderAnswer() {
  const box = $('answer-text');
  const focused = [...box.querySelectorAll('.cite')].indexOf(document.activeElement);
  const parts = answerParts(answerText, (n) => n >= 1 && n <= citations.length);
  box.replaceChildren(
    ...parts.map((part) => {
      if (part.text !== undefined) return document.createTextNode(part.text);
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'cite';
      button.dataset.n = String(part.cite);
      button.textContent = `[${part.cite}]`;
      button.setAttribute('aria-label', `Source ${part.cite}: ${citations[part.cite - 1].source}`);
      return button;
    }),
  );
  if (focused >= 0) box.querySelectorAll('.cite')[focused]?.focus();
}

$('answer-text').addEventListener('click', (e) => {
  const cite = e.target.closest('.cite');
  if (cite) showPassage(Number(cite.dataset.n), cite);
});

function renderSources(possiblyRelated, cited) {
  $('sources-title').textContent = possiblyRelated ? 'Possibly related' : 'Sources';
  $('source-list').replaceChildren(
    ...citations.map((c) => {
      const li = document.createElement('li');
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'source';
      button.dataset.n = String(c.n);
      const name = document.createElement('span');
      name.className = 'source-name';
      name.textContent = `[${c.n}] ${c.source}`;
      const where = document.createElement('span');
      where.className = 'source-where';
      where.textContent = location_(c);
      button.append(name, where);
      if (cited.includes(c.n)) {
        const badge = document.createElement('span');
        badge.className = 'badge';
        badge.textContent = 'cited';
        button.append(badge);
      }
      li.append(button);
      return li;
    }),
  );
  $('sources').hidden = citations.length === 0 || !['done', 'unanswerable', 'stopped', 'error'].includes($('answer').dataset.state);
}

$('source-list').addEventListener('click', (e) => {
  const source = e.target.closest('.source');
  if (source) showPassage(Number(source.dataset.n), source);
});

/** "Pricing › Plans · p. 3 · lines 4–12" */
function location_(c) {
  const parts = [];
  if (c.heading) parts.push(c.heading);
  if (c.page != null) parts.push(`p. ${c.page}`);
  parts.push(c.line_start === c.line_end ? `line ${c.line_start}` : `lines ${c.line_start}–${c.line_end}`);
  return parts.join(' · ');
}

let passageOpener = null;

function showPassage(n, opener) {
  const c = citations[n - 1];
  if (!c) return;
  passageOpener = opener;
  $('passage-title').textContent = `Passage [${c.n}]`;
  const facts = [
    ['Source', c.source],
    ['Page', c.page != null ? String(c.page) : null],
    ['Section', c.heading],
    ['Lines', c.line_start === c.line_end ? `${c.line_start}` : `${c.line_start}–${c.line_end}`],
    ['Score', `${c.score.toFixed(3)} (similarity ${c.similarity.toFixed(2)})`],
  ];
  $('passage-facts').replaceChildren(
    ...facts
      .filter(([, v]) => v)
      .flatMap(([k, v]) => {
        const dt = document.createElement('dt');
        dt.textContent = k;
        const dd = document.createElement('dd');
        dd.textContent = v;
        dd.dataset.fact = k.toLowerCase();
        return [dt, dd];
      }),
  );
  const answer = answerText.replace(/\[\d+(?:\s*,\s*\d+)*\]/g, ' ');
  renderHighlighted($('passage-text'), c.text, highlights(c.text, answer));
  $('passage').dataset.n = String(c.n);
  $('passage').classList.add('open');
  for (const b of document.querySelectorAll('.source')) {
    b.setAttribute('aria-current', String(b.dataset.n === String(c.n)));
  }
  $('passage').focus();
  $('passage-text').querySelector('mark')?.scrollIntoView({ block: 'nearest' });
}

function closePassage(restoreFocus = true) {
  if (!$('passage').classList.contains('open')) return;
  $('passage').classList.remove('open');
  $('passage-title').textContent = 'Passage';
  if (restoreFocus && passageOpener && passageOpener.isConnected) passageOpener.focus();
  passageOpener = null;
}

$('passage-close').addEventListener('click', () => closePassage());
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && !document.querySelector('dialog[open]')) {
    closePassage();
  }
});

// ---------------------------------------------------------------- documents

let documentsLoaded = false;
let nextPage = null;

async function loadDocuments(after = null) {
  documentsLoaded = true;
  $('docs-error').hidden = true;
  try {
    const query = new URLSearchParams({ limit: '100' });
    if (after) query.set('after', after);
    const page = await json(scoped(`/v1/documents?${query}`));
    const rows = page.documents.map(documentRow);
    if (after) $('docs-body').append(...rows);
    else $('docs-body').replaceChildren(...rows);
    nextPage = page.next || null;
    $('docs-more').hidden = !nextPage;
    $('docs-total').textContent = `${page.total} document${page.total === 1 ? '' : 's'}`;
  } catch (e) {
    documentsLoaded = false;
    $('docs-error').textContent = `Cannot list documents: ${describe(e)}`;
    $('docs-error').hidden = false;
  }
}

function cell(text, className) {
  const td = document.createElement('td');
  if (className) td.className = className;
  if (text instanceof Node) td.append(text);
  else td.textContent = text ?? '';
  return td;
}

function documentRow(d) {
  const tr = document.createElement('tr');
  tr.dataset.id = d.id;
  const source = cell(d.source, 'doc-source');
  if (d.title) source.title = d.title;
  const status = document.createElement('span');
  status.className = `badge status-${d.status}`;
  status.textContent = d.status;
  const time = document.createElement('time');
  const when = new Date(d.updated_at * 1000);
  time.dateTime = when.toISOString();
  time.textContent = when.toLocaleString();
  const remove = document.createElement('button');
  remove.type = 'button';
  remove.className = 'quiet delete';
  remove.textContent = 'Delete';
  remove.setAttribute('aria-label', `Delete ${d.source}`);
  remove.addEventListener('click', () => confirmDelete(d, remove));
  tr.append(
    source,
    cell(status),
    cell(String(d.chunk_count), 'num'),
    cell(humanSize(d.size), 'num'),
    cell(time),
    cell(d.last_error || '', 'doc-error'),
    cell(remove),
  );
  return tr;
}

function humanSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KB', 'MB', 'GB'];
  let n = bytes / 1024;
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

function confirmDelete(doc, opener) {
  const dialog = $('delete-dialog');
  $('delete-name').textContent = doc.source;
  dialog.returnValue = '';
  dialog.addEventListener(
    'close',
    async () => {
      if (dialog.returnValue !== 'delete') {
        opener.focus();
        return;
      }
      try {
        const path = doc.id.split('/').map(encodeURIComponent).join('/');
        const result = await json(scoped(`/v1/documents/${path}`), { method: 'DELETE' });
        $('upload-status').textContent = result.deleted
          ? `Deleted ${doc.source} (${result.chunks_removed} passages removed).`
          : `${doc.source} was already gone.`;
        await loadDocuments();
        $('docs-refresh').focus();
      } catch (e) {
        $('docs-error').textContent = `Cannot delete ${doc.source}: ${describe(e)}`;
        $('docs-error').hidden = false;
      }
    },
    { once: true },
  );
  dialog.showModal();
}

$('delete-dialog').addEventListener('submit', (e) => {
  // method="dialog" closes with the button's value; done here so a strict
  // form-action policy cannot get in the way.
  e.preventDefault();
  $('delete-dialog').close(e.submitter?.value || 'cancel');
});

$('docs-refresh').addEventListener('click', () => loadDocuments());
$('docs-more').addEventListener('click', () => loadDocuments(nextPage));

const drop = $('drop');
drop.addEventListener('dragenter', (e) => {
  e.preventDefault();
  drop.classList.add('over');
});
drop.addEventListener('dragover', (e) => {
  e.preventDefault();
  e.dataTransfer.dropEffect = 'copy';
});
drop.addEventListener('dragleave', (e) => {
  if (!drop.contains(e.relatedTarget)) drop.classList.remove('over');
});
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  if (e.dataTransfer.files.length) upload([...e.dataTransfer.files]);
});
$('pick-files').addEventListener('click', () => $('file-input').click());
$('file-input').addEventListener('change', () => {
  const files = [...$('file-input').files];
  $('file-input').value = '';
  if (files.length) upload(files);
});

async function upload(files) {
  const form = new FormData();
  for (const file of files) form.append('file', file, file.name);
  const tags = $('upload-tags').value.trim();
  if (tags) form.append('tags', tags);
  const status = $('upload-status');
  status.textContent = `Uploading ${files.length} file${files.length === 1 ? '' : 's'}…`;
  $('upload-results').replaceChildren();
  try {
    const { results } = await json(scoped('/v1/documents'), { method: 'POST', body: form });
    $('upload-results').replaceChildren(
      ...results.map((r) => {
        const li = document.createElement('li');
        li.dataset.source = r.source;
        li.dataset.status = r.status;
        li.className = `result-${r.status}`;
        li.textContent =
          r.status === 'failed'
            ? `${r.source}: failed — ${r.error || 'unknown error'}`
            : `${r.source}: ${r.status}, ${r.chunks} passage${r.chunks === 1 ? '' : 's'}`;
        return li;
      }),
    );
    const failed = results.filter((r) => r.status === 'failed').length;
    status.textContent = failed
      ? `Uploaded with ${failed} failure${failed === 1 ? '' : 's'}.`
      : 'Uploaded.';
    await loadDocuments();
  } catch (e) {
    status.textContent = `Upload failed: ${describe(e)}`;
  }
}

// ---------------------------------------------------------------- start

showView();
loadCollections().then(loadConversation);
