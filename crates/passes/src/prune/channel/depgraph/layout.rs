//! Where a value's channels are: its channel axis as runs of channels of groups.

/// A run of channels of one group inside a value's channel axis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Segment {
    pub(super) group: usize,
    pub(super) len: usize,
    pub(super) expand: usize,
}

/// The channel axis of a value and the groups along it.
#[derive(Clone, Debug)]
pub(super) struct Layout {
    pub(super) axis: usize,
    pub(super) segments: Vec<Segment>,
}

impl Layout {
    pub(super) fn single(group: usize, len: usize, axis: usize) -> Self {
        Layout {
            axis,
            segments: vec![Segment {
                group,
                len,
                expand: 1,
            }],
        }
    }

    /// Segments with their start offsets on the axis.
    pub(super) fn placed(&self) -> Vec<(usize, &Segment)> {
        let mut offset = 0;
        (self.segments.iter())
            .map(|s| {
                let at = offset;
                offset += s.len * s.expand;
                (at, s)
            })
            .collect()
    }

    /// Elements along the axis.
    pub(super) fn extent(&self) -> usize {
        self.segments.iter().map(|s| s.len * s.expand).sum()
    }
}
