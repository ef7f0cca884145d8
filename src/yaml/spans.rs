//! Span helpers for expressions parsed from YAML strings (whose spans are first computed in
//! the unescaped string and then mapped back into the YAML text).

use crate::diag::Span;

/// Moves a span into `bounds` (start and end clamped).
pub(crate) fn clamp(s: &mut Span, bounds: Span) {
    s.start = s.start.clamp(bounds.start, bounds.end);
    s.end = s.end.clamp(s.start, bounds.end);
}
