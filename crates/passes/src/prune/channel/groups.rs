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
