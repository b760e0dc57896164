//! What pdf-extract must not be handed as it is. Before a document is
//! parsed, its nesting is bounded (lopdf recurses once per level); when its
//! cross-reference table is broken, one is rebuilt from the objects in the
//! file; its page tree is walked once, visiting each node once; and
//! structures that send pdf-extract round in circles (a looping /Parent
//! chain, a form XObject that draws itself) are refused with a reason.

use pdf_extract::{Dictionary, Document, Object, ObjectId};
use std::collections::{BTreeMap, HashSet};

/// Deepest nesting of arrays and dictionaries a parser may be asked to follow.
pub(super) const MAX_NESTING: usize = 256;

/// Deepest form XObject nesting followed; real documents nest a few.
const MAX_FORM_DEPTH: usize = 32;

/// How deeply the objects in `bytes` nest arrays and dictionaries, outside
/// streams, strings and comments; the scan stops past `limit`. (Objects
/// inside compressed object streams are not seen; the worker's isolation
/// covers those.)
pub(super) fn nesting_depth(bytes: &[u8], limit: usize) -> usize {
    let (mut depth, mut max, mut i) = (0usize, 0usize, 0usize);
    let next_is = |i: usize, b: u8| bytes.get(i + 1) == Some(&b);
    while i < bytes.len() && max <= limit {
        match bytes[i] {
            b'%' => {
                i = memchr::memchr2(b'\n', b'\r', &bytes[i..]).map_or(bytes.len(), |e| i + e);
            }
            b'(' => {
                let mut open = 0usize;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => i += 1,
                        b'(' => open += 1,
                        b')' => {
                            open -= 1;
                            if open == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'<' if next_is(i, b'<') => {
                depth += 1;
                i += 1;
            }
            b'<' => i = memchr::memchr(b'>', &bytes[i..]).map_or(bytes.len(), |e| i + e),
            b'>' if next_is(i, b'>') => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'[' => depth += 1,
            b']' => depth = depth.saturating_sub(1),
            b's' if bytes[i..].starts_with(b"stream")
                && i > 0
                && matches!(bytes[i - 1], b'>' | b' ' | b'\n' | b'\r')
                && matches!(bytes.get(i + 6), Some(b'\n' | b'\r')) =>
            {
                i = memchr::memmem::find(&bytes[i + 6..], b"endstream")
                    .map_or(bytes.len(), |e| i + 6 + e + 8);
            }
            _ => {}
        }
        max = max.max(depth);
        i += 1;
    }
    max
}

/// A copy of `bytes` with a cross-reference table rebuilt from the
/// `N G obj` headers in the file (the last definition of an object wins),
/// as readers do when the table is missing or its offsets are wrong.
pub(super) fn recover(bytes: &[u8]) -> Option<Document> {
    // The rebuilt trailer would drop the encryption dictionary.
    if memchr::memmem::find(bytes, b"/Encrypt").is_some() {
        return None;
    }
    let mut offsets: BTreeMap<u32, (u16, usize)> = Default::default();
    for at in memchr::memmem::find_iter(bytes, b" obj") {
        // Walk back over "N G" to the start of the line.
        let head = &bytes[at.saturating_sub(24)..at];
        let line = head
            .iter()
            .rposition(|&b| b == b'\n' || b == b'\r')
            .map_or(at.saturating_sub(24), |p| at.saturating_sub(24) + p + 1);
        let Ok(header) = std::str::from_utf8(&bytes[line..at]) else {
            continue;
        };
        let mut parts = header.split_ascii_whitespace();
        let (Some(number), Some(generation), None) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if let (Ok(n), Ok(g)) = (number.parse::<u32>(), generation.parse::<u16>()) {
            offsets.insert(n, (g, line));
        }
    }
    let root = trailer_root(bytes).or_else(|| {
        // No readable trailer: the catalog object.
        offsets.iter().find_map(|(&n, &(g, at))| {
            let end = memchr::memmem::find(&bytes[at..], b"endobj").map_or(bytes.len(), |e| at + e);
            let body = &bytes[at..end];
            (memchr::memmem::find(body, b"/Catalog").is_some()).then(|| format!("{n} {g} R"))
        })
    })?;
    let size = offsets.keys().next_back().map_or(1, |n| n + 1);
    let mut out = bytes.to_vec();
    out.push(b'\n');
    let xref = out.len();
    // One subsection per object found: a row for every number up to the
    // largest took 20 bytes per number, so a lone `3000000241 0 obj` asked
    // for 60 GB.
    out.extend(b"xref\n0 1\n0000000000 65535 f \n");
    for (n, (g, at)) in offsets.range(1..) {
        out.extend(format!("{n} 1\n{at:010} {g:05} n \n").bytes());
    }
    out.extend(
        format!("trailer\n<< /Size {size} /Root {root} >>\nstartxref\n{xref}\n%%EOF\n").bytes(),
    );
    Document::load_mem(&out).ok()
}

/// The `/Root N G R` of the last trailer dictionary in `bytes`.
fn trailer_root(bytes: &[u8]) -> Option<String> {
    let at = memchr::memmem::rfind(bytes, b"trailer")?;
    let rest = std::str::from_utf8(&bytes[at..bytes.len().min(at + 1024)]).ok()?;
    let after = &rest[rest.find("/Root")? + 5..];
    let mut parts = after.split_ascii_whitespace();
    let (n, g) = (
        parts.next()?.parse::<u32>().ok()?,
        parts.next()?.parse::<u16>().ok()?,
    );
    (parts.next()?.starts_with('R')).then(|| format!("{n} {g} R"))
}

/// The page tree's root node.
pub(super) fn page_root(doc: &Document) -> Option<ObjectId> {
    doc.catalog().ok()?.get(b"Pages").ok()?.as_reference().ok()
}

/// The pages in document order, walking the page tree once and visiting
/// each node once (a tree that lists itself among its kids is read, not
/// followed around).
pub(super) fn page_ids(doc: &Document) -> Vec<ObjectId> {
    let Some(root) = page_root(doc) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let Ok(node) = doc.get_dictionary(id) else {
            continue;
        };
        if node.has_type(b"Page") {
            out.push(id);
        } else if let Ok(kids) = node.get_deref(b"Kids", doc).and_then(Object::as_array) {
            stack.extend(kids.iter().rev().filter_map(|k| k.as_reference().ok()));
        }
    }
    out
}

/// Why a document that loaded has no pages.
pub(super) fn why_no_pages(doc: &Document) -> String {
    if doc.catalog().is_err() {
        return "its document catalog is unreadable (a broken cross-reference table?)".into();
    }
    match page_root(doc).map(|root| doc.get_dictionary(root)) {
        Some(Ok(_)) | None => "a PDF without pages".into(),
        Some(Err(_)) => "its page tree is unreadable (a broken cross-reference table?)".into(),
    }
}

/// Refuses structures that send pdf-extract round in circles: a /Parent
/// chain that loops (its search for inherited attributes never ends) and
/// form XObjects that draw themselves (its recursion overflows the stack).
pub(super) fn check_structure(doc: &Document, pages: &[ObjectId]) -> Result<(), String> {
    let mut acyclic = HashSet::new();
    for (i, &page) in pages.iter().enumerate() {
        let mut chain = HashSet::new();
        let mut at = page;
        while !acyclic.contains(&at) {
            if !chain.insert(at) {
                return Err(format!(
                    "its page tree loops (the /Parent chain of page {} comes back to object {} {})",
                    i + 1,
                    at.0,
                    at.1
                ));
            }
            match doc
                .get_dictionary(at)
                .and_then(|d| d.get(b"Parent"))
                .and_then(|p| p.as_reference())
            {
                Ok(parent) => at = parent,
                Err(_) => break,
            }
        }
        acyclic.extend(chain);
    }
    let mut done = HashSet::new();
    for &page in pages {
        if let Some(resources) = inherited_resources(doc, page) {
            check_forms(doc, resources, None, &mut Vec::new(), &mut done)?;
        }
    }
    Ok(())
}

fn deref_dict<'a>(doc: &'a Document, object: &'a Object) -> Option<&'a Dictionary> {
    doc.dereference(object).ok()?.1.as_dict().ok()
}

/// A page's resources, its own or its nearest ancestor's (the /Parent
/// chain is known not to loop).
fn inherited_resources(doc: &Document, page: ObjectId) -> Option<&Dictionary> {
    let mut node = doc.get_dictionary(page).ok()?;
    loop {
        if let Ok(resources) = node.get(b"Resources") {
            return deref_dict(doc, resources);
        }
        node = doc
            .get_dictionary(node.get(b"Parent").ok()?.as_reference().ok()?)
            .ok()?;
    }
}

/// Follows the form XObjects of `resources` (those named in `invoked`,
/// or all of them), and the forms they draw in turn, refusing a form that
/// draws itself and nesting past [`MAX_FORM_DEPTH`]. A form without
/// resources of its own draws with those of whatever drew it, so a form is
/// checked once per set of resources it can see.
fn check_forms<'a>(
    doc: &'a Document,
    resources: &'a Dictionary,
    invoked: Option<&[Vec<u8>]>,
    path: &mut Vec<ObjectId>,
    done: &mut HashSet<(ObjectId, usize)>,
) -> Result<(), String> {
    let Some(xobjects) = resources
        .get(b"XObject")
        .ok()
        .and_then(|x| deref_dict(doc, x))
    else {
        return Ok(());
    };
    for (name, value) in xobjects.iter() {
        if invoked.is_some_and(|names| !names.contains(name)) {
            continue;
        }
        let Ok(id) = value.as_reference() else {
            continue;
        };
        let Ok(form) = doc.get_object(id).and_then(Object::as_stream) else {
            continue;
        };
        if form.dict.get(b"Subtype").and_then(Object::as_name).ok() != Some(b"Form".as_slice()) {
            continue;
        }
        if path.contains(&id) {
            return Err(format!(
                "form XObject {} {} draws itself (directly or through other forms)",
                id.0, id.1
            ));
        }
        let context = form
            .dict
            .get(b"Resources")
            .ok()
            .and_then(|r| deref_dict(doc, r))
            .unwrap_or(resources);
        if !done.insert((id, std::ptr::from_ref(context) as usize)) {
            continue;
        }
        if path.len() >= MAX_FORM_DEPTH {
            return Err(format!(
                "form XObjects nest more than {MAX_FORM_DEPTH} deep"
            ));
        }
        let content = form
            .decompressed_content()
            .unwrap_or_else(|_| form.content.clone());
        let names: Vec<Vec<u8>> = pdf_extract::content::Content::decode(&content)
            .map(|c| {
                c.operations
                    .into_iter()
                    .filter(|op| op.operator == "Do")
                    .filter_map(|op| Some(op.operands.first()?.as_name().ok()?.to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        path.push(id);
        check_forms(doc, context, Some(&names), path, done)?;
        path.pop();
    }
    Ok(())
}

/// Whether every content stream of a page is present and was read (a
/// stream whose length could not be resolved is read as empty).
pub(super) fn content_readable(doc: &Document, page: ObjectId) -> bool {
    let Ok(dict) = doc.get_dictionary(page) else {
        return false;
    };
    if dict.get(b"Contents").is_err() {
        return true; // a blank page, not a broken one
    }
    let streams = doc.get_page_contents(page);
    !streams.is_empty()
        && streams.iter().all(|&id| {
            doc.get_object(id)
                .and_then(Object::as_stream)
                .is_ok_and(|s| !s.content.is_empty())
        })
}
