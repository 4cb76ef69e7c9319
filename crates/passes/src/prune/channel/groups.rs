//! Coupled channel groups: a union-find over channel spaces, and the tensor slices that
//! follow each group's channels.

/// What a sliced tensor axis does for its group (decides which tensors count towards
/// importance).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Output side of a Conv/Gemm/MatMul weight, or its bias.
    Producer,
    /// A per-channel parameter: BN/InstanceNorm shift, depthwise weight, elementwise constant.
    PerChannel,
    /// A BatchNormalization (or InstanceNormalization) scale γ.
    Scale,
    /// BN running mean and variance: sliced, never scored.
    Statistic,
    /// Input side of a consuming Conv/Gemm/MatMul weight.
    Consumer,
    /// Input side (axis 1) of a grouped Conv weight `[C_out, columns, kh, kw]` with
    /// `groups` groups: input channel `i` is column `i % columns` of the rows of group
    /// `i / columns` only.
    GroupedConsumer {
        /// The Conv's `group` attribute.
        groups: usize,
        /// Input channels per group (the weight's axis-1 extent).
        columns: usize,
    },
}

/// One axis of one initializer whose indices follow a group's channels: channel `k` owns
/// indices `offset + k·expand .. offset + (k+1)·expand`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice {
    /// Initializer name.
    pub tensor: String,
    /// Axis of the initializer.
    pub axis: usize,
    /// Index of channel 0 on that axis.
    pub offset: usize,
    /// Consecutive indices per channel (H·W after a Flatten, else 1).
    pub expand: usize,
    /// What the axis is.
    pub role: Role,
}

impl Slice {
    /// Row blocks of the tensor's leading axes that the slice treats separately (the
    /// groups of a grouped Conv weight, else 1).
    pub fn blocks(&self) -> usize {
        match self.role {
            Role::GroupedConsumer { groups, .. } => groups,
            _ => 1,
        }
    }

    /// `(row block, index on the axis)` of every element position of channel `k`.
    pub fn positions(&self, k: usize) -> Vec<(usize, usize)> {
        let first = self.offset + k * self.expand;
        (first..first + self.expand)
            .map(|i| match self.role {
                Role::GroupedConsumer { columns, .. } => (i / columns, i % columns),
                _ => (0, i),
            })
            .collect()
    }
}

/// A set of channels that must be pruned together.
#[derive(Clone, Debug, Default)]
pub struct Group {
    /// Number of channels.
    pub width: usize,
    /// Nodes touching the group (its first producer first), without repeats.
    pub layers: Vec<String>,
    /// Nodes creating the group's channels (Conv/Gemm/MatMul outputs coupled together).
    pub producers: Vec<String>,
    /// Tensor axes to slice.
    pub slices: Vec<Slice>,
    /// The channels form this many equal consecutive segments that must keep the same
    /// number of channels each (the groups of grouped Convs reading or writing them).
    pub segments: usize,
    /// Why the group cannot be pruned (first reason found).
    pub blocked: Option<String>,
}

/// Union-find over groups; ids stay valid, data lives at the root.
#[derive(Debug, Default)]
pub struct Groups {
    parent: Vec<usize>,
    data: Vec<Group>,
}

impl Groups {
    /// A new group of `width` channels created by `layer`.
    pub fn create(&mut self, width: usize, layer: &str) -> usize {
        let id = self.parent.len();
        self.parent.push(id);
        self.data.push(Group {
            width,
            layers: vec![layer.to_string()],
            producers: vec![layer.to_string()],
            segments: 1,
            ..Group::default()
        });
        id
    }

    /// Root id of `g`.
    pub fn find(&self, mut g: usize) -> usize {
        while self.parent[g] != g {
            g = self.parent[g];
        }
        g
    }

    /// The group `g` belongs to.
    pub fn get(&self, g: usize) -> &Group {
        &self.data[self.find(g)]
    }

    /// Width of `g`.
    pub fn width(&self, g: usize) -> usize {
        self.get(g).width
    }

    /// Marks `g` unprunable (keeps the first reason).
    pub fn block(&mut self, g: usize, reason: impl Into<String>) {
        let root = self.find(g);
        let group = &mut self.data[root];
        if group.blocked.is_none() {
            group.blocked = Some(reason.into());
        }
    }

    /// Requires `g` to keep its channels balanced over `segments` equal segments (on top
    /// of any segmentation it already has).
    pub fn require_segments(&mut self, g: usize, segments: usize) {
        let root = self.find(g);
        let group = &mut self.data[root];
        group.segments = lcm(group.segments, segments);
    }

    /// Records that `layer` slices `slice` along `g`'s channels.
    pub fn add_slice(&mut self, g: usize, layer: &str, slice: Slice) {
        let root = self.find(g);
        let group = &mut self.data[root];
        if !group.layers.iter().any(|l| l == layer) {
            group.layers.push(layer.to_string());
        }
        if !group.slices.contains(&slice) {
            group.slices.push(slice);
        }
    }

    /// Couples `a` and `b` channel by channel (`why` names the coupling node).
    pub fn union(&mut self, a: usize, b: usize, why: &str) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return;
        }
        let widths = (self.data[ra].width, self.data[rb].width);
        self.parent[rb] = ra;
        let moved = std::mem::take(&mut self.data[rb]);
        let root = &mut self.data[ra];
        for layer in moved.layers {
            if !root.layers.contains(&layer) {
                root.layers.push(layer);
            }
        }
        root.slices.extend(moved.slices);
        root.producers.extend(moved.producers);
        root.segments = lcm(root.segments, moved.segments);
        if root.blocked.is_none() {
            root.blocked = moved.blocked;
        }
        if widths.0 != widths.1 {
            let reason = format!("{why} couples {} and {} channels", widths.0, widths.1);
            self.block(ra, reason);
        }
    }

    /// Root ids with their groups.
    pub fn roots(&self) -> impl Iterator<Item = (usize, &Group)> {
        (0..self.parent.len())
            .filter(|&g| self.parent[g] == g)
            .map(|g| (g, &self.data[g]))
    }
}

/// Least common multiple (`a` and `b` at least 1).
pub(super) fn lcm(a: usize, b: usize) -> usize {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x.max(1) * b
}
