// Which part of a cited chunk the answer rests on. Answers cite whole
// chunks, so the page highlights the chunk's sentences that share the most
// content words with the answer.

const STOP_WORDS = new Set(
  ('a an and are as at be been but by can do does for from has have how i if in into is it its ' +
    'of on or our so that the their them then there these they this to was we were what when where ' +
    'which who will with you your not no yes may must also any all each per more most than about')
    .split(' '),
);

/** Lower-case content words of `text` (letters and digits, stop words dropped). */
export function words(text) {
  return (text.toLowerCase().match(/[\p{L}\p{N}]+/gu) || []).filter(
    (w) => !STOP_WORDS.has(w) && (w.length > 1 || /\d/.test(w)),
  );
}

/**
 * Splits `text` into sentences as [start, end) ranges that cover it: a
 * sentence ends after . ! or ? followed by white space, or at a blank line
 * or a line that starts a list item or heading.
 */
export function sentences(text) {
  const ranges = [];
  let start = 0;
  const boundary = /[.!?]["')\]]*\s+|\n\s*\n|\n(?=\s*(?:[-*+]|\d+[.)]|#{1,6})\s)/g;
  let m;
  while ((m = boundary.exec(text)) !== null) {
    const end = m.index + m[0].length;
    if (end > start) ranges.push([start, end]);
    start = end;
  }
  if (start < text.length) ranges.push([start, text.length]);
  return ranges;
}

/**
 * The ranges of `text` to highlight for `answer`: the sentences sharing the
 * most distinct content words with it (ties included). None when no
 * sentence shares a word.
 */
export function highlights(text, answer) {
  const wanted = new Set(words(answer));
  let best = 0;
  const scored = sentences(text).map(([start, end]) => {
    const score = new Set(words(text.slice(start, end)).filter((w) => wanted.has(w))).size;
    best = Math.max(best, score);
    return { start, end, score };
  });
  if (best === 0) return [];
  return scored.filter((s) => s.score === best).map((s) => [s.start, s.end]);
}

/**
 * Joins the lines of each paragraph (a hard-wrapped source reads badly in a
 * narrow panel), keeping blank lines, list items and headings. Each newline
 * becomes one space, so offsets into the text stay valid.
 */
export function unwrap(text) {
  return text.replace(/(?<=[^\n])(?<!^\s*#{1,6}\s[^\n]*)\n(?=[^\n])(?!\s*(?:[-*+>|]|\d+[.)]|#{1,6})\s)/gm, ' ');
}

/**
 * Fills `element` with `text` (paragraphs unwrapped), wrapping the `ranges`
 * in <mark> (leading and trailing white space of a range stays outside).
 */
export function renderHighlighted(element, raw, ranges) {
  const text = unwrap(raw);
  element.replaceChildren();
  let at = 0;
  for (let [start, end] of ranges) {
    while (start < end && /\s/.test(text[start])) start++;
    while (end > start && /\s/.test(text[end - 1])) end--;
    if (start >= end) continue;
    if (start > at) element.append(text.slice(at, start));
    const mark = document.createElement('mark');
    mark.textContent = text.slice(start, end);
    element.append(mark);
    at = end;
  }
  if (at < text.length) element.append(text.slice(at));
}

/**
 * Splits an answer into text and citation markers: `[1]`, `[2, 3]` become
 * {cite: n} parts for each n that `known(n)` accepts; everything else stays text.
 */
export function answerParts(answer, known) {
  const parts = [];
  const marker = /\[(\d+(?:\s*,\s*\d+)*)\]/g;
  let at = 0;
  let m;
  while ((m = marker.exec(answer)) !== null) {
    const ns = m[1].split(',').map((n) => Number.parseInt(n, 10));
    if (!ns.every(known)) continue;
    if (m.index > at) parts.push({ text: answer.slice(at, m.index) });
    for (const n of ns) parts.push({ cite: n });
    at = m.index + m[0].length;
  }
  if (at < answer.length) parts.push({ text: answer.slice(at) });
  return parts;
}
