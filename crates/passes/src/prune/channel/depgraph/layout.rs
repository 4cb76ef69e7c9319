//! Where a value's channels are: its channel axis as runs of channels of groups.

/// A run of channels of one group inside a value's channel axis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Segment {
    /// The group (any id of it).
    pub(super) group: usize,
    /// Channels in the run.
    pub(super) len: usize,
    /// Consecutive elements per channel (H·W after a Flatten, else 1).
    pub(super) expand: usize,
}

/// The channel axis of a value and the groups along it.
#[derive(Clone, Debug)]
pub(super) struct Layout {
    /// The channel axis.
    pub(super) axis: usize,
    /// Runs of channels along it, in order.
    pub(super) segments: Vec<Segment>,
}

impl Layout {
    /// All `len` channels of one group on `axis`.
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
