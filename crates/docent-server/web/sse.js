// Server-Sent Events read from a fetch() body. EventSource cannot POST, so
// /v1/ask's stream is parsed here: frames end at a blank line; `event:`
// names the frame, `data:` lines are joined by newlines, `:` lines are
// keep-alive comments.

/**
 * Yields `{event, data}` for each frame of `body` (a ReadableStream of
 * bytes), in order. Ends when the stream ends; a frame left unfinished by
 * a dropped connection is not yielded.
 */
export async function* frames(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let event = '';
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      // Keep a trailing '\r' until we know whether '\n' follows it.
      let cut;
      while ((cut = lineEnd(buffer)) !== null) {
        const [end, next] = cut;
        const line = buffer.slice(0, end);
        buffer = buffer.slice(next);
        if (line === '') {
          if (data.length > 0) yield { event: event || 'message', data: data.join('\n') };
          event = '';
          data = [];
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? '' : line.slice(colon + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (field === 'event') event = value;
        else if (field === 'data') data.push(value);
      }
    }
  } finally {
    // Ends the download when the reader stops early (a stop, an error).
    reader.cancel().catch(() => {});
  }
}

/** [end of the first line, start of the next], or null when no whole line is buffered. */
function lineEnd(buffer) {
  for (let i = 0; i < buffer.length; i++) {
    const c = buffer[i];
    if (c === '\n') return [i, i + 1];
    if (c === '\r') {
      if (i + 1 === buffer.length) return null;
      return [i, buffer[i + 1] === '\n' ? i + 2 : i + 1];
    }
  }
  return null;
}
