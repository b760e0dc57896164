//! Small valid inputs written from scratch, for tests and benchmarks: PDFs
//! with a correct cross-reference table, so no external tool is needed.

/// A PDF with one page per entry of `pages` (Helvetica, lines wrapped at
/// about 90 characters) and an optional `/Title`.
pub fn simple_pdf(pages: &[String], title: Option<&str>) -> Vec<u8> {
    let n = pages.len();
    let font = 3 + 2 * n;
    let kids: Vec<String> = (0..n).map(|i| format!("{} 0 R", 3 + 2 * i)).collect();
    let mut objects = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        format!("<< /Type /Pages /Kids [{}] /Count {n} >>", kids.join(" ")),
    ];
    for (i, text) in pages.iter().enumerate() {
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] \
             /Resources << /Font << /F1 {font} 0 R >> >> /Contents {} 0 R >>",
            4 + 2 * i
        ));
        objects.push(content_stream(text));
    }
    objects.push("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".into());
    let mut trailer = String::new();
    if let Some(title) = title {
        objects.push(format!("<< /Title ({}) >>", escape(title)));
        trailer = format!("/Info {} 0 R", objects.len());
    }
    pdf_from_objects(&objects, &trailer)
}

/// A page content stream drawing `text` line by line.
pub fn content_stream(text: &str) -> String {
    let mut ops = String::from("BT /F1 11 Tf 14 TL 72 740 Td\n");
    for line in wrap(text, 90) {
        ops.push_str(&format!("({}) Tj T*\n", escape(&line)));
    }
    ops.push_str("ET");
    format!("<< /Length {} >>\nstream\n{ops}\nendstream", ops.len())
}

/// Numbers `objects` from 1, writes the cross-reference table with their
/// byte offsets, and a trailer with `/Root 1 0 R` plus `trailer_extra`.
pub fn pdf_from_objects(objects: &[String], trailer_extra: &str) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{object}\nendobj\n", i + 1).bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).bytes());
    for offset in offsets {
        out.extend(format!("{offset:010} 00000 n \n").bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R {trailer_extra} >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .bytes(),
    );
    out
}

/// PDF string escaping; characters outside printable ASCII become `?`.
fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '(' | ')' | '\\' => format!("\\{c}"),
            c if c.is_ascii() && !c.is_ascii_control() => c.to_string(),
            _ => "?".into(),
        })
        .collect()
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}
