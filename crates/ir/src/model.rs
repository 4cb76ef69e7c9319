//! Loading and saving whole ONNX models, with external data.

use std::path::{Path, PathBuf};

use prost::bytes::{Buf, Bytes};
use prost::Message;

use crate::error::{IrError, Result};
use crate::files::write_bytes_atomic;
use crate::proto::{
    tensor_proto::DataLocation, GraphProto, ModelProto, StringStringEntryProto, TensorProto,
};
use crate::tensor::{check_relative_location, TensorData};

/// Protobuf cannot serialise a message of 2 GiB or more; above this, data goes to a side file.
pub const PROTOBUF_LIMIT: usize = (1 << 31) - 1;

/// Initializers smaller than this stay inline when external data is written.
pub const EXTERNAL_MIN_BYTES: usize = 1024;

/// An ONNX model in memory. All tensor data is inline once loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// The protobuf message, faithfully as read.
    pub proto: ModelProto,
}

/// Where [`Model::save`] puts initializer data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ExternalData {
    /// Inline, unless the model would exceed protobuf's 2 GiB limit.
    #[default]
    Auto,
    /// Always inline (fails above 2 GiB).
    Never,
    /// Initializers of at least [`EXTERNAL_MIN_BYTES`] go to this file, beside the model.
    File(String),
}

impl Model {
    /// Wraps a protobuf message.
    pub fn new(proto: ModelProto) -> Self {
        Model { proto }
    }

    /// Reads an ONNX file; external data is read from the model's folder and made inline.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::read(path.as_ref()).map(|(model, _)| model)
    }

    /// [`Model::load`] and the model's [`Model::disk_size`] from the same read of the file
    /// (`whittle quantize` of a 90 MB encoder spent 0.2-0.3 s of a 9 s run reading it twice,
    /// in perf under load 4).
    pub fn load_sized(path: impl AsRef<Path>) -> Result<(Self, u64)> {
        let path = path.as_ref();
        let (model, bytes) = Self::read(path)?;
        Ok((model, disk_size_of(path, &bytes)?))
    }

    /// The model at `path` and the bytes of its file, errors naming the file. The tensors'
    /// `raw_data` share the file's buffer (no copy per tensor: decoding MiniLM-L3's 69 MB
    /// copied every weight once more, into fresh pages).
    fn read(path: &Path) -> Result<(Self, Bytes)> {
        let bytes = Bytes::from(read_file(path)?);
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let model = Self::decode(bytes.clone(), Some(&base)).map_err(|e| match e {
            IrError::Decode { source, .. } => IrError::Decode {
                path: path.to_path_buf(),
                source,
            },
            IrError::Invalid(msg) => IrError::Invalid(format!("{}: {msg}", path.display())),
            other => other,
        })?;
        Ok((model, bytes))
    }

    /// Decodes a model from bytes; external data is resolved against `base_dir`.
    pub fn from_bytes(bytes: &[u8], base_dir: Option<&Path>) -> Result<Self> {
        Self::decode(bytes, base_dir)
    }

    fn decode(bytes: impl Buf, base_dir: Option<&Path>) -> Result<Self> {
        let proto = ModelProto::decode(bytes).map_err(|source| IrError::Decode {
            path: PathBuf::from("<bytes>"),
            source,
        })?;
        if proto.graph.is_none() {
            return Err(IrError::invalid("the model has no graph"));
        }
        let mut model = Model { proto };
        model.inline_external_data(base_dir)?;
        Ok(model)
    }

    /// The serialised model (all data inline).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.proto.encode_to_vec()
    }

    /// Bytes of the serialised model (all data inline), without serialising it.
    pub fn encoded_len(&self) -> usize {
        self.proto.encoded_len()
    }

    /// The main graph.
    pub fn graph(&self) -> &GraphProto {
        self.proto
            .graph
            .as_ref()
            .expect("a loaded model has a graph")
    }

    /// The main graph, mutable.
    pub fn graph_mut(&mut self) -> &mut GraphProto {
        self.proto.graph.get_or_insert_with(Default::default)
    }

    /// Opset version imported for `domain` ("" or "ai.onnx" for the default domain).
    pub fn opset(&self, domain: &str) -> Option<i64> {
        let norm = |d: &str| {
            if d == "ai.onnx" {
                String::new()
            } else {
                d.to_string()
            }
        };
        let want = norm(domain);
        self.proto
            .opset_import
            .iter()
            .find(|o| norm(&o.domain) == want)
            .map(|o| o.version)
    }

    /// The operator type of every node of the main graph, in graph order.
    pub fn op_types(&self) -> Vec<&str> {
        (self.graph().node.iter())
            .map(|n| n.op_type.as_str())
            .collect()
    }

    /// How many nodes of the main graph have operator type `op_type` (any domain).
    pub fn count_op(&self, op_type: &str) -> usize {
        (self.graph().node.iter())
            .filter(|n| n.op_type == op_type)
            .count()
    }

    /// Value of a `metadata_props` entry.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.proto
            .metadata_props
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    }

    /// Sets (or replaces) a `metadata_props` entry.
    pub fn set_metadata(&mut self, key: &str, value: &str) {
        match self.proto.metadata_props.iter_mut().find(|e| e.key == key) {
            Some(e) => e.value = value.to_string(),
            None => self.proto.metadata_props.push(StringStringEntryProto {
                key: key.to_string(),
                value: value.to_string(),
            }),
        }
    }

    /// Writes the model to `path`, putting large initializers in a side file when asked
    /// or when the model would not fit in one protobuf message. Each file is written to a
    /// temporary file and renamed into place, so a failure or a signal leaves no partial
    /// model (see [`crate::files`]).
    pub fn save(&self, path: impl AsRef<Path>, external: &ExternalData) -> Result<()> {
        let path = path.as_ref();
        let data_file = match external {
            ExternalData::File(name) => Some(name.clone()),
            ExternalData::Never => None,
            ExternalData::Auto if self.needs_external_data() => {
                let stem = path.file_name().and_then(|n| n.to_str()).unwrap_or("model");
                Some(format!("{stem}.data"))
            }
            ExternalData::Auto => None,
        };
        let bytes = match data_file {
            None => {
                if self.needs_external_data() {
                    return Err(IrError::invalid(
                        "the model exceeds 2 GiB: save it with external data",
                    ));
                }
                self.to_bytes()
            }
            Some(name) => {
                check_relative_location(&name).map_err(IrError::Invalid)?;
                let mut proto = self.proto.clone();
                let mut blob = Vec::new();
                if let Some(g) = proto.graph.as_mut() {
                    for_each_graph_initializer(g, &mut |t| move_to_external(t, &name, &mut blob));
                }
                let dir = path.parent().unwrap_or(Path::new(""));
                write_bytes_atomic(&dir.join(&name), &blob)?;
                proto.encode_to_vec()
            }
        };
        write_bytes_atomic(path, &bytes)
    }

    /// Whether the model is too large for one protobuf file (2 GiB) and must be saved
    /// with external data.
    pub fn needs_external_data(&self) -> bool {
        self.encoded_len() >= PROTOBUF_LIMIT
    }

    /// Bytes on disk of the model at `path`: the file plus every external data file it names.
    pub fn disk_size(path: impl AsRef<Path>) -> Result<u64> {
        let path = path.as_ref();
        disk_size_of(path, &read_file(path)?)
    }

    fn inline_external_data(&mut self, base_dir: Option<&Path>) -> Result<()> {
        let mut result = Ok(());
        if let Some(g) = self.proto.graph.as_mut() {
            for_each_graph_initializer(g, &mut |t| {
                if result.is_ok() && t.data_location == DataLocation::External as i32 {
                    result = TensorData::from_proto(t, base_dir).map(|data| {
                        let name = std::mem::take(&mut t.name);
                        *t = TensorProto {
                            doc_string: std::mem::take(&mut t.doc_string),
                            metadata_props: std::mem::take(&mut t.metadata_props),
                            ..data.to_proto(&name)
                        };
                    });
                }
            });
        }
        result
    }
}

/// The parts of an ONNX file that name external data files, where
/// [`for_each_graph_initializer`] looks: decoding only these skips every tensor's bytes, so
/// sizing a large model does not copy its weights.
/// The bytes of the file at `path`, or an error naming it.
fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| IrError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// [`Model::disk_size`] of the model at `path` whose file holds `bytes`: only the external
/// data locations are decoded (every other field is skipped).
fn disk_size_of(path: &Path, bytes: &[u8]) -> Result<u64> {
    let refs = external_refs::Model::decode(bytes).map_err(|source| IrError::Decode {
        path: path.to_path_buf(),
        source,
    })?;
    let mut locations = std::collections::BTreeSet::new();
    if let Some(g) = &refs.graph {
        g.locations(&mut locations);
    }
    let dir = path.parent().unwrap_or(Path::new(""));
    let external: u64 = locations
        .iter()
        .filter_map(|l| std::fs::metadata(dir.join(l)).ok())
        .map(|m| m.len())
        .sum();
    Ok(bytes.len() as u64 + external)
}

mod external_refs {
    use std::collections::BTreeSet;

    use crate::proto::StringStringEntryProto;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Model {
        #[prost(message, optional, tag = "7")]
        pub graph: Option<Graph>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Graph {
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<Node>,
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<Tensor>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Node {
        #[prost(message, repeated, tag = "5")]
        pub attribute: Vec<Attribute>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Attribute {
        #[prost(message, optional, tag = "5")]
        pub t: Option<Tensor>,
        #[prost(message, optional, tag = "6")]
        pub g: Option<Graph>,
        #[prost(message, repeated, tag = "10")]
        pub tensors: Vec<Tensor>,
        #[prost(message, repeated, tag = "11")]
        pub graphs: Vec<Graph>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tensor {
        #[prost(message, repeated, tag = "13")]
        pub external_data: Vec<StringStringEntryProto>,
    }

    impl Graph {
        /// Adds the external data locations of this graph and its subgraphs to `out`.
        pub fn locations(&self, out: &mut BTreeSet<String>) {
            let mut tensors: Vec<&Tensor> = self.initializer.iter().collect();
            for a in self.node.iter().flat_map(|n| &n.attribute) {
                tensors.extend(a.t.iter().chain(&a.tensors));
                a.g.iter().chain(&a.graphs).for_each(|g| g.locations(out));
            }
            let named = tensors.into_iter().flat_map(|t| &t.external_data);
            out.extend(
                named
                    .filter(|e| e.key == "location")
                    .map(|e| e.value.clone()),
            );
        }
    }
}

/// Calls `f` on every initializer and tensor attribute of `graph` and its subgraphs.
pub fn for_each_graph_initializer(graph: &mut GraphProto, f: &mut dyn FnMut(&mut TensorProto)) {
    graph.initializer.iter_mut().for_each(&mut *f);
    for node in &mut graph.node {
        for attr in &mut node.attribute {
            if let Some(t) = attr.t.as_mut() {
                f(t);
            }
            attr.tensors.iter_mut().for_each(&mut *f);
            if let Some(g) = attr.g.as_mut() {
                for_each_graph_initializer(g, f);
            }
            for g in &mut attr.graphs {
                for_each_graph_initializer(g, f);
            }
        }
    }
}

fn move_to_external(t: &mut TensorProto, location: &str, blob: &mut Vec<u8>) {
    if t.raw_data.len() < EXTERNAL_MIN_BYTES {
        return;
    }
    // Align each tensor to 4 KiB, like the onnx package, so readers can map it.
    blob.resize(blob.len().next_multiple_of(4096), 0);
    let offset = blob.len();
    blob.extend_from_slice(&std::mem::take(&mut t.raw_data));
    let entry = |k: &str, v: String| StringStringEntryProto {
        key: k.into(),
        value: v,
    };
    t.external_data = vec![
        entry("location", location.to_string()),
        entry("offset", offset.to_string()),
        entry("length", (blob.len() - offset).to_string()),
    ];
    t.data_location = DataLocation::External as i32;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{NodeProto, OperatorSetIdProto, ValueInfoProto};
    use whittle_testkit::{scratch, Scratch};

    fn tiny_model(weight: Vec<f32>) -> Model {
        let n = weight.len();
        let w = TensorData::from_slice(vec![n], &weight).unwrap();
        Model::new(ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(GraphProto {
                name: "g".into(),
                node: vec![NodeProto {
                    op_type: "Add".into(),
                    input: vec!["x".into(), "w".into()],
                    output: vec!["y".into()],
                    ..Default::default()
                }],
                initializer: vec![w.to_proto("w")],
                input: vec![ValueInfoProto {
                    name: "x".into(),
                    ..Default::default()
                }],
                output: vec![ValueInfoProto {
                    name: "y".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            metadata_props: vec![StringStringEntryProto {
                key: "author".into(),
                value: "whittle".into(),
            }],
            ..Default::default()
        })
    }

    #[test]
    fn external_data_round_trip() {
        let dir = scratch("ext");
        let weights: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
        let model = tiny_model(weights);
        let path = dir.join("m.onnx");
        model
            .save(&path, &ExternalData::File("m.onnx.data".into()))
            .unwrap();
        let on_disk = ModelProto::decode(&std::fs::read(&path).unwrap()[..]).unwrap();
        let w = &on_disk.graph.as_ref().unwrap().initializer[0];
        assert_eq!(w.data_location, DataLocation::External as i32);
        assert!(w.raw_data.is_empty());
        let back = Model::load(&path).unwrap();
        assert_eq!(back, model);
        let total = std::fs::metadata(&path).unwrap().len()
            + std::fs::metadata(dir.join("m.onnx.data")).unwrap().len();
        assert_eq!(Model::disk_size(&path).unwrap(), total);
        let (sized, size) = Model::load_sized(&path).unwrap();
        assert_eq!((sized, size), (model, total));
        assert_eq!(back.metadata("author"), Some("whittle"));
    }

    #[test]
    fn escaping_external_location_is_refused() {
        let model = tiny_model(vec![0.0; 1000]);
        let dir = scratch("escape");
        let err = model
            .save(
                dir.join("x.onnx"),
                &ExternalData::File("../evil.bin".into()),
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("leaves the model's folder"),
            "{err}"
        );
    }

    /// A model saved with its weights in `m.onnx.data` in a fresh folder (returned; removed
    /// when dropped); the data file is then replaced by what `replace` makes at its path.
    fn model_with_replaced_data(case: &str, replace: impl FnOnce(&Path)) -> (Scratch, PathBuf) {
        let dir = scratch(&format!("ext-{case}"));
        let path = dir.join("m.onnx");
        tiny_model(vec![1.0; 1000])
            .save(&path, &ExternalData::File("m.onnx.data".into()))
            .unwrap();
        let data = dir.join("m.onnx.data");
        std::fs::remove_file(&data).unwrap();
        replace(&data);
        (dir, path)
    }

    #[test]
    fn symlink_out_of_the_folder_is_refused() {
        let secret = scratch("secret");
        let outside = secret.join("secret.bin");
        std::fs::write(&outside, vec![7u8; 4000]).unwrap();
        let (_dir, path) = model_with_replaced_data("symlink", |data| {
            std::os::unix::fs::symlink(&outside, data).unwrap()
        });
        let err = Model::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("tensor 'w'") && err.contains("outside the model's folder"),
            "{err}"
        );
    }

    #[test]
    fn symlink_inside_the_folder_is_followed() {
        let (_dir, path) = model_with_replaced_data("inner-link", |data| {
            let real = data.with_file_name("weights.bin");
            let mut bytes = vec![0u8; 4000];
            for chunk in bytes.chunks_mut(4) {
                chunk.copy_from_slice(&2.5f32.to_le_bytes());
            }
            std::fs::write(&real, bytes).unwrap();
            std::os::unix::fs::symlink("weights.bin", data).unwrap();
        });
        let model = Model::load(&path).unwrap();
        let w = TensorData::from_proto(&model.graph().initializer[0], None).unwrap();
        assert_eq!(w.to_vec::<f32>().unwrap(), vec![2.5; 1000]);
    }

    #[test]
    fn fifo_as_external_data_is_refused_without_blocking() {
        let (_dir, path) = model_with_replaced_data("fifo", |data| {
            let made = std::process::Command::new("mkfifo").arg(data).status();
            assert!(made.unwrap().success(), "mkfifo failed");
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let loading = path.clone();
        std::thread::spawn(move || tx.send(Model::load(&loading).map(|_| ())));
        let result = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("loading a model whose external data is a FIFO blocked");
        let err = result.unwrap_err().to_string();
        assert!(err.contains("is not a regular file"), "{err}");
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(Model::from_bytes(b"\xff\xff\xff\xff not onnx", None).is_err());
    }
}
