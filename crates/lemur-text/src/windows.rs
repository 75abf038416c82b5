//! Splitting a long token sequence into overlapping model windows, and
//! deciding which window supplies each token's vector.

use std::ops::Range;

/// One model window over content tokens `span`, of which `keep` (a
/// sub-range) supplies the token vectors: every content token is kept by
/// exactly one window, the one where it sits farthest from a cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WindowSpan {
    pub(crate) span: Range<usize>,
    pub(crate) keep: Range<usize>,
}

/// Windows of at most `capacity` content tokens covering `0..n_content`.
/// Consecutive windows overlap by a quarter of a window, so every kept
/// token has at least an eighth of a window of context on each side that
/// is not at a cut; the number of windows, and so the cost, is linear in
/// `n_content`.
pub(crate) fn plan_windows(n_content: usize, capacity: usize) -> Vec<WindowSpan> {
    assert!(capacity > 0, "a window must hold at least one token");
    if n_content <= capacity {
        return vec![WindowSpan {
            span: 0..n_content,
            keep: 0..n_content,
        }];
    }
    let overlap = capacity / 4;
    let stride = (capacity - overlap).max(1);
    let mut spans = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + capacity).min(n_content);
        spans.push(start..end);
        if end == n_content {
            break;
        }
        // The last window is moved back to end exactly at the text's end,
        // so it is full rather than a sliver.
        start = (start + stride).min(n_content - capacity);
    }
    let mut windows = Vec::with_capacity(spans.len());
    let mut keep_start = 0;
    for (i, span) in spans.iter().enumerate() {
        let keep_end = match spans.get(i + 1) {
            // Cut the overlap with the next window in the middle.
            Some(next) => (next.start + span.end) / 2,
            None => n_content,
        };
        windows.push(WindowSpan {
            span: span.clone(),
            keep: keep_start..keep_end,
        });
        keep_start = keep_end;
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_token_is_kept_once_by_a_window_that_holds_it(
            n in 0usize..5000,
            capacity in 1usize..600,
        ) {
            let windows = plan_windows(n, capacity);
            let mut next = 0;
            for w in &windows {
                prop_assert!(w.span.len() <= capacity);
                prop_assert_eq!(w.keep.start, next);
                prop_assert!(w.span.start <= w.keep.start && w.keep.end <= w.span.end);
                next = w.keep.end;
            }
            prop_assert_eq!(next, n);
            // Linear cost: at most ~4/3 of the minimum number of windows, plus one.
            let minimum = n.div_ceil(capacity).max(1);
            prop_assert!(windows.len() <= minimum * 4 / 3 + 2, "{} windows", windows.len());
        }
    }

    #[test]
    fn a_short_text_is_one_window() {
        assert_eq!(
            plan_windows(10, 254),
            vec![WindowSpan {
                span: 0..10,
                keep: 0..10
            }]
        );
        assert_eq!(plan_windows(0, 254).len(), 1);
    }
}
