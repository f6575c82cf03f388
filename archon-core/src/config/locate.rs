//! Finds the line of a dotted key in the TOML text, for error messages.

/// The 1-based line of byte `offset` in `text`.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The line of the deepest part of `key` (`server.port`, `peers[2].host`) found in `text`.
pub(super) fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let doc = toml_edit::Document::parse(text).ok()?;
    let segments: Vec<Segment<'_>> = segments(key).collect();
    walk(doc.as_item(), &segments, None).map(|span| line_of(text, span.start))
}

type Span = std::ops::Range<usize>;

/// Follows `segments` down from `item`, remembering the last span seen.
fn walk(item: &toml_edit::Item, segments: &[Segment<'_>], best: Option<Span>) -> Option<Span> {
    let Some((first, rest)) = segments.split_first() else {
        return best;
    };
    match *first {
        Segment::Key(name) => match item.as_table_like().and_then(|t| t.get_key_value(name)) {
            Some((k, v)) => walk(v, rest, k.span().or_else(|| v.span()).or(best)),
            None => best,
        },
        Segment::Index(i) => {
            if let Some(table) = item.as_array_of_tables().and_then(|a| a.get(i)) {
                let span = table.span().or(best);
                walk(&toml_edit::Item::Table(table.clone()), rest, span)
            } else if let Some(value) = item.as_array().and_then(|a| a.get(i)) {
                let span = value.span().or(best);
                walk(&toml_edit::Item::Value(value.clone()), rest, span)
            } else {
                best
            }
        }
    }
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(key: &str) -> impl Iterator<Item = Segment<'_>> {
    key.split(['.', '[']).filter(|s| !s.is_empty()).map(|s| {
        let trimmed = s.trim_end_matches(']');
        match trimmed.parse::<usize>() {
            Ok(i) if s.ends_with(']') || s.bytes().all(|b| b.is_ascii_digit()) => Segment::Index(i),
            _ => Segment::Key(s),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "name = 'x'\n\n[server]\nhost = 'h'\nport = 'eighty'\n";

    #[test]
    fn finds_nested_keys() {
        assert_eq!(line_of_key(TEXT, "name"), Some(1));
        assert_eq!(line_of_key(TEXT, "server"), Some(3));
        assert_eq!(line_of_key(TEXT, "server.port"), Some(5));
        // Unknown child: the deepest known parent.
        assert_eq!(line_of_key(TEXT, "server.nope"), Some(3));
        assert_eq!(line_of_key(TEXT, "nope"), None);
    }

    #[test]
    fn finds_keys_in_arrays_of_tables() {
        let text = "[[peer]]\nhost = 'a'\n[[peer]]\nhost = 'b'\nport = 1\n";
        assert_eq!(line_of_key(text, "peer[1].port"), Some(5));
    }
}
