//! Search spaces: the zoo builders' options as genes, each with its allowed values, scaled
//! to the data's input, or the channel groups of a trained model (`--from`, [`Space::pruned`]).
//! A genome holds one value per gene; [`Space::spec`] turns it into a spec (genes a
//! shallower architecture does not use are ignored).

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::nas::shrink::{Source, PERCENTS};
use crate::nas::NasError;

/// One searchable option: its name and the values it may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gene {
    /// The name, as shown in reports (`width2`, `kernel3`).
    pub name: String,
    /// The allowed values, ascending.
    pub values: Vec<u32>,
}

impl Gene {
    fn new(name: impl Into<String>, values: &[u32]) -> Self {
        Gene {
            name: name.into(),
            values: values.to_vec(),
        }
    }
}

/// The architecture families `whittle nas --space` searches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// zoo `cnn`: blocks, Conv layers per block, channels per block.
    Cnn,
    /// zoo `mobilenetv3-small` with its searchable layout.
    #[serde(rename = "mobilenet-v3")]
    MobilenetV3,
    /// zoo `resnet`: stages, blocks per stage, channels per stage.
    Resnet,
    /// zoo `vit-tiny`: patch, dim, depth, heads, MLP width.
    Vit,
    /// A trained model's channel groups, each losing a share of its channels (`--from`;
    /// not a `--space`).
    Pruned,
}

impl Family {
    /// The names `--space` accepts.
    pub const NAMES: &'static str = "cnn, mobilenet-v3, resnet, vit";
}

impl FromStr for Family {
    type Err = NasError;
    fn from_str(s: &str) -> Result<Self, NasError> {
        Ok(match s {
            "cnn" => Family::Cnn,
            "mobilenet-v3" => Family::MobilenetV3,
            "resnet" => Family::Resnet,
            "vit" => Family::Vit,
            other => {
                return Err(NasError::Refused(format!(
                    "--space '{other}': expected one of {}",
                    Family::NAMES
                )))
            }
        })
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Cnn => "cnn",
            Family::MobilenetV3 => "mobilenet-v3",
            Family::Resnet => "resnet",
            Family::Vit => "vit",
            Family::Pruned => "pruned",
        })
    }
}

/// Channel counts the convolutional spaces choose from.
const CHANNELS: [u32; 8] = [8, 16, 24, 32, 48, 64, 96, 128];
/// Most blocks (cnn) or stages (resnet, mobilenet-v3) a space holds.
const MAX_CNN_BLOCKS: u32 = 4;
const MAX_RESNET_STAGES: u32 = 3;
const MAX_MOBILENET_STAGES: u32 = 4;

/// A family's genes for one input shape and class count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Space {
    /// The family.
    pub family: Family,
    /// The genes, in genome order.
    pub genes: Vec<Gene>,
    /// Input `[C, H, W]`.
    pub input: [usize; 3],
    /// Classes of the logits.
    pub classes: usize,
    /// Seed of the candidates' weight initialisation.
    pub seed: u64,
    /// Hash of the model a [`Family::Pruned`] space shrinks.
    pub source: Option<String>,
}

/// Values of a genome, one per gene of its space.
pub type Genome = Vec<u32>;

impl Space {
    /// The space of `family` for `input` `[C, H, W]` images of `classes` classes: depths
    /// are capped so that every pooling still has a pixel to pool, ViT patches divide the
    /// image.
    pub fn new(
        family: Family,
        input: [usize; 3],
        classes: usize,
        seed: u64,
    ) -> Result<Self, NasError> {
        let side = input[1].min(input[2]);
        // Halvings the image allows before it is one pixel wide.
        let halvings = usize::BITS - 1 - side.max(1).leading_zeros();
        let mut genes = Vec::new();
        match family {
            Family::Cnn => {
                let blocks = (halvings + 1).clamp(1, MAX_CNN_BLOCKS);
                genes.push(Gene::new("blocks", &(1..=blocks).collect::<Vec<_>>()));
                genes.push(Gene::new("convs", &[1, 2]));
                for b in 1..=blocks {
                    genes.push(Gene::new(format!("channels{b}"), &CHANNELS));
                }
            }
            Family::Resnet => {
                let stages = (halvings + 1).clamp(1, MAX_RESNET_STAGES);
                genes.push(Gene::new("stages", &(1..=stages).collect::<Vec<_>>()));
                genes.push(Gene::new("blocks", &[1, 2]));
                for s in 1..=stages {
                    genes.push(Gene::new(format!("width{s}"), &CHANNELS[..6]));
                }
            }
            Family::MobilenetV3 => {
                genes.push(Gene::new("stages", &[3, MAX_MOBILENET_STAGES]));
                for s in 1..=MAX_MOBILENET_STAGES {
                    genes.push(Gene::new(format!("depth{s}"), &[1, 2, 3]));
                    genes.push(Gene::new(format!("kernel{s}"), &[3, 5]));
                    genes.push(Gene::new(format!("expansion{s}"), &[2, 3, 4, 5, 6]));
                    genes.push(Gene::new(format!("se{s}"), &[0, 1]));
                }
                // Width multiplier in hundredths.
                genes.push(Gene::new("width", &[25, 50, 75, 100]));
            }
            Family::Vit => {
                let patches: Vec<u32> = (2..=side as u32 / 2)
                    .filter(|p| {
                        input[1].is_multiple_of(*p as usize) && input[2].is_multiple_of(*p as usize)
                    })
                    .filter(|p| (2..=8).contains(&(side as u32 / p)))
                    .collect();
                if patches.is_empty() {
                    return Err(NasError::Refused(format!(
                        "--space vit: no patch size divides the {}x{} images into \
                         2 to 8 patches a side",
                        input[1], input[2]
                    )));
                }
                genes.push(Gene::new("patch", &patches));
                genes.push(Gene::new("dim", &[32, 48, 64, 96, 128]));
                genes.push(Gene::new("depth", &[1, 2, 3, 4]));
                genes.push(Gene::new("heads", &[1, 2, 4]));
                genes.push(Gene::new("mlp", &[64, 128, 192, 256]));
            }
            Family::Pruned => {
                return Err(NasError::Refused(
                    "the pruned space shrinks a trained model: give --from MODEL".into(),
                ))
            }
        }
        Ok(Space {
            family,
            genes,
            input,
            classes,
            seed,
            source: None,
        })
    }

    /// The [`Family::Pruned`] space of `source`: one gene per prunable channel group (named
    /// by its first layer), the percent of its channels removed.
    pub fn pruned(source: &Source, input: [usize; 3], classes: usize, seed: u64) -> Self {
        Space {
            family: Family::Pruned,
            genes: (source.groups.iter())
                .map(|layer| Gene::new(layer.clone(), &PERCENTS))
                .collect(),
            input,
            classes,
            seed,
            source: Some(source.hash.clone()),
        }
    }

    /// A genome drawn uniformly, gene by gene.
    pub fn sample(&self, rng: &mut impl Rng) -> Genome {
        self.genes
            .iter()
            .map(|g| g.values[rng.random_range(0..g.values.len())])
            .collect()
    }

    /// Whether every value of `genome` is one its gene allows.
    pub fn contains(&self, genome: &[u32]) -> bool {
        genome.len() == self.genes.len()
            && self
                .genes
                .iter()
                .zip(genome)
                .all(|(g, v)| g.values.contains(v))
    }

    /// The value of gene `name` in `genome`.
    fn get(&self, genome: &[u32], name: &str) -> u32 {
        self.genes
            .iter()
            .position(|g| g.name == name)
            .map_or(0, |i| genome[i])
    }

    /// The values of genes `prefix1..=prefixN`, joined by `-`.
    fn joined(&self, genome: &[u32], prefix: &str, n: u32) -> String {
        let values: Vec<String> = (1..=n)
            .map(|i| self.get(genome, &format!("{prefix}{i}")).to_string())
            .collect();
        values.join("-")
    }

    /// The spec of `genome`: a zoo spec with the input, classes and seed of the space, or,
    /// pruned, `pruned:percents=P-P-...,source=HASH,seed=S`.
    pub fn spec(&self, genome: &[u32]) -> String {
        let options = match self.family {
            Family::Pruned => {
                let percents: Vec<String> = genome.iter().map(u32::to_string).collect();
                return format!(
                    "pruned:percents={},source={},seed={}",
                    percents.join("-"),
                    self.source.as_deref().unwrap_or_default(),
                    self.seed
                );
            }
            Family::Cnn => {
                let blocks = self.get(genome, "blocks");
                format!(
                    "cnn:channels={},convs={}",
                    self.joined(genome, "channels", blocks),
                    self.get(genome, "convs")
                )
            }
            Family::Resnet => {
                let stages = self.get(genome, "stages");
                format!(
                    "resnet:widths={},blocks={}",
                    self.joined(genome, "width", stages),
                    self.get(genome, "blocks")
                )
            }
            Family::MobilenetV3 => {
                let stages = self.get(genome, "stages");
                let width = self.get(genome, "width");
                format!(
                    "mobilenetv3-small:depths={},kernels={},expansions={},se={},width={}.{:02}",
                    self.joined(genome, "depth", stages),
                    self.joined(genome, "kernel", stages),
                    self.joined(genome, "expansion", stages),
                    self.joined(genome, "se", stages),
                    width / 100,
                    width % 100
                )
            }
            Family::Vit => {
                let dim = self.get(genome, "dim");
                let heads = self.get(genome, "heads");
                format!(
                    "vit-tiny:patch={},dim={dim},depth={},heads={heads},mlp={}",
                    self.get(genome, "patch"),
                    self.get(genome, "depth"),
                    self.get(genome, "mlp")
                )
            }
        };
        let [c, h, w] = self.input;
        format!(
            "{}{options},input={c}x{h}x{w},classes={},seed={}",
            whittle_zoo::PREFIX,
            self.classes,
            self.seed
        )
    }

    /// `genome` with genes the architecture does not use set to their gene's first value,
    /// so that genomes of the same architecture are equal.
    pub fn canonical(&self, genome: &[u32]) -> Genome {
        let used = |name: &str| -> bool {
            let depth_gene = |key: &str| self.get(genome, key);
            let index = |prefix: &str| {
                name.strip_prefix(prefix)
                    .and_then(|n| n.parse::<u32>().ok())
            };
            match self.family {
                Family::Cnn => index("channels").is_none_or(|i| i <= depth_gene("blocks")),
                Family::Resnet => index("width").is_none_or(|i| i <= depth_gene("stages")),
                Family::MobilenetV3 => ["depth", "kernel", "expansion", "se"]
                    .iter()
                    .filter_map(|p| index(p))
                    .all(|i| i <= depth_gene("stages")),
                Family::Vit | Family::Pruned => true,
            }
        };
        self.genes
            .iter()
            .zip(genome)
            .map(|(g, &v)| if used(&g.name) { v } else { g.values[0] })
            .collect()
    }
}
